//! SigV4 canonicalisation with S3's rules: URI-encode once, never normalise paths, sort query pairs by
//! encoded name then value, trim and collapse header values, join repeated headers with `,`.

use crate::util::uri::{is_unreserved, percent_decode, uri_encode};

/// How a raw `+` in a query string is read. Clients disagree, so verification tries both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlusMode {
    Literal,
    Space,
}

/// Splits a raw query into decoded `(name, value)` pairs, in order. Empty segments are skipped; a name
/// without `=` has an empty value.
pub fn parse_query(raw: &str, plus: PlusMode) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = percent_decode(s.as_bytes());
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if plus == PlusMode::Space && s.contains('+') {
            // Only raw pluses become spaces; an encoded %2B stays a plus.
            let mut rebuilt = Vec::with_capacity(s.len());
            for part in s.split('+') {
                if !rebuilt.is_empty() {
                    rebuilt.push(b' ');
                }
                rebuilt.extend_from_slice(&percent_decode(part.as_bytes()));
            }
            text = String::from_utf8_lossy(&rebuilt).into_owned();
        }
        text
    };
    raw.split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(seg), String::new()),
        })
        .collect()
}

/// The canonical query string of decoded pairs, leaving out `exclude` (the presigned signature).
pub fn canonical_query(pairs: &[(String, String)], exclude: Option<&str>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != exclude)
        .map(|(k, v)| {
            let (mut ek, mut ev) = (String::with_capacity(k.len()), String::with_capacity(v.len()));
            uri_encode(k.as_bytes(), true, &mut ek);
            uri_encode(v.as_bytes(), true, &mut ev);
            (ek, ev)
        })
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// A canonical header value: each occurrence trimmed, runs of spaces collapsed, occurrences joined by `,`.
pub fn canonical_header_value<'a>(values: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let trimmed = v.trim_ascii();
        let mut prev_space = false;
        for &b in trimmed {
            if b == b' ' {
                if !prev_space {
                    out.push(b' ');
                }
                prev_space = true;
            } else {
                out.push(b);
                prev_space = false;
            }
        }
    }
}

/// Whether the raw path has bytes a client could have signed differently from their decoded form, which
/// makes a retry with the raw wire path worth it.
pub fn raw_path_is_ambiguous(raw: &str) -> bool {
    raw.bytes().any(|b| !(is_unreserved(b) || b == b'/' || b == b'%'))
}

/// The canonical request: method, canonical URI, canonical query, the `name:value\n` block, the signed header
/// names and the payload line.
pub fn build_canonical_request(
    method: &http::Method,
    path: &str,
    query: &str,
    headers_block: &[u8],
    signed: &[&str],
    payload_line: &str,
) -> String {
    let mut s = String::with_capacity(256 + headers_block.len());
    s.push_str(method.as_str());
    s.push('\n');
    s.push_str(path);
    s.push('\n');
    s.push_str(query);
    s.push('\n');
    s.push_str(&String::from_utf8_lossy(headers_block));
    s.push('\n');
    s.push_str(&signed.join(";"));
    s.push('\n');
    s.push_str(payload_line);
    s
}

/// `AWS4-HMAC-SHA256\n<date>\n<scope>\n<hex SHA-256 of the canonical request>`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(canonical_request.as_bytes());
    let mut hex = [0u8; 64];
    let _ = hex::encode_to_slice(digest, &mut hex);
    let mut s = String::with_capacity(super::ALGORITHM.len() + amz_date.len() + scope.len() + 67);
    for part in [super::ALGORITHM, "\n", amz_date, "\n", scope, "\n"] {
        s.push_str(part);
    }
    // Hex digits are ASCII.
    s.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_sorted_by_encoded_name_then_value() {
        let pairs = parse_query("b=2&a=1&uploads&a-b=3&a=0", PlusMode::Literal);
        assert_eq!(canonical_query(&pairs, None), "a=0&a=1&a-b=3&b=2&uploads=");
        let pairs = parse_query("prefix=a+b%2Bc", PlusMode::Space);
        assert_eq!(pairs[0].1, "a b+c");
        let pairs = parse_query("prefix=a+b", PlusMode::Literal);
        assert_eq!(canonical_query(&pairs, None), "prefix=a%2Bb");
    }

    #[test]
    fn header_values_are_trimmed_collapsed_and_joined() {
        let mut out = Vec::new();
        canonical_header_value([&b"  a   b  "[..], b"c"].into_iter(), &mut out);
        assert_eq!(out, b"a b,c");
    }
}
