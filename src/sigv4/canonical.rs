//! SigV4 canonicalisation with S3's rules: URI-encode once, never normalise paths, sort query pairs by
//! encoded name then value, trim and collapse header values, join repeated headers with `,`.

/// Bytes SigV4 leaves unencoded (RFC 3986 unreserved).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// SigV4 `UriEncode`: every byte but the unreserved ones as `%XX` (uppercase); `/` kept unless
/// `encode_slash`.
pub fn uri_encode(input: &[u8], encode_slash: bool, out: &mut String) {
    for &b in input {
        if is_unreserved(b) || (b == b'/' && !encode_slash) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 15)]));
        }
    }
}

/// `UriEncode` for paths (slashes kept).
pub fn uri_encode_path(input: &[u8], out: &mut String) {
    uri_encode(input, false, out);
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays literal.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && i + 2 < input.len()
            && let (Some(h), Some(l)) = (hex_val(input[i + 1]), hex_val(input[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

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
    format!("{}\n{amz_date}\n{scope}\n{}", super::ALGORITHM, hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str, slash: bool) -> String {
        let mut o = String::new();
        uri_encode(s.as_bytes(), slash, &mut o);
        o
    }

    #[test]
    fn uri_encoding_follows_sigv4_rules() {
        assert_eq!(enc("a b+c/d~e", false), "a%20b%2Bc/d~e");
        assert_eq!(enc("a/b", true), "a%2Fb");
        assert_eq!(enc("é", false), "%C3%A9");
        assert_eq!(enc("=@:!()^", false), "%3D%40%3A%21%28%29%5E");
    }

    #[test]
    fn percent_decoding_keeps_stray_percent_signs() {
        assert_eq!(percent_decode(b"a%20b%2"), b"a b%2");
        assert_eq!(percent_decode(b"%zz%41"), b"%zzA");
        assert_eq!(percent_decode(b"%"), b"%");
    }

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
