//! Percent-encoding as S3 and SigV4 use it: `UriEncode` (RFC 3986 unreserved bytes kept, the rest `%XX`
//! uppercase) and a lenient decoder. One implementation for signing, addressing and listings.

/// Bytes SigV4 leaves unencoded (RFC 3986 unreserved).
pub fn is_unreserved(b: u8) -> bool {
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
}
