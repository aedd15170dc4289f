//! S3 protocol knowledge that is not signing: addressing (path / virtual-hosted style), bucket names,
//! operation classification, and the header names the proxy reads or strips.

pub mod bucket_encryption;
pub mod checksum;
pub mod error;
pub mod headers;
pub mod op;
pub mod policy;
pub mod query;
pub mod sse;
pub mod xml;

use crate::util::uri::{percent_decode, uri_encode_path};
use error::RequestError;

/// Where a request points, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub bucket: Option<String>,
    /// Object key, decoded (may contain any bytes S3 allows, including `/` and `//`).
    pub key: Option<String>,
    pub virtual_hosted: bool,
}

impl Target {
    /// The `Resource` element of an error: `/bucket/key` as the client named it.
    pub fn resource(&self) -> String {
        match (&self.bucket, &self.key) {
            (None, _) => "/".to_owned(),
            (Some(b), None) => format!("/{b}"),
            (Some(b), Some(k)) => format!("/{b}/{k}"),
        }
    }

    /// The canonically encoded path for upstream: `/bucket/key` (path style) or `/key` (virtual style).
    pub fn upstream_path(&self, virtual_style: bool) -> String {
        let mut out = String::from("/");
        match (&self.bucket, &self.key) {
            (None, _) => {}
            (Some(b), key) => {
                if !virtual_style {
                    uri_encode_path(b.as_bytes(), &mut out);
                    if key.is_some() {
                        out.push('/');
                    }
                }
                if let Some(k) = key {
                    uri_encode_path(k.as_bytes(), &mut out);
                }
            }
        }
        out
    }
}

/// The object `x-amz-copy-source` names.
#[derive(Debug, Clone)]
pub struct CopySource {
    pub target: Target,
    pub version_id: Option<String>,
}

impl CopySource {
    /// Parses `[/]bucket/key[?versionId=…]` (bucket and key URL-encoded).
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<CopySource>, RequestError> {
        let Some(v) = headers::header_str(headers, &headers::X_AMZ_COPY_SOURCE) else { return Ok(None) };
        let bad = || RequestError::InvalidArgument("Invalid copy source: expected bucket/key[?versionId=id]".into());
        let (path, version) = match v.split_once('?') {
            Some((p, q)) => {
                let version = q.strip_prefix("versionId=").ok_or_else(bad)?;
                let version = String::from_utf8(percent_decode(version.as_bytes())).map_err(|_| bad())?;
                (p, Some(version).filter(|v| !v.is_empty()))
            }
            None => (v, None),
        };
        let decoded = String::from_utf8(percent_decode(path.as_bytes())).map_err(|_| bad())?;
        let (bucket, key) = decoded.trim_start_matches('/').split_once('/').ok_or_else(bad)?;
        if bucket.is_empty() || key.is_empty() {
            return Err(bad());
        }
        Ok(Some(CopySource {
            target: Target { bucket: Some(bucket.to_owned()), key: Some(key.to_owned()), virtual_hosted: false },
            version_id: version,
        }))
    }

    /// The `x-amz-copy-source` value for the upstream: `/bucket/key[?versionId=…]`, encoded.
    pub fn upstream_value(&self) -> String {
        let mut s = self.target.upstream_path(false);
        if let Some(v) = &self.version_id {
            s.push_str("?versionId=");
            crate::util::uri::uri_encode(v.as_bytes(), true, &mut s);
        }
        s
    }
}

/// Splits `host[:port]` and lowercases the host.
pub fn host_without_port(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host })
    };
    h.to_ascii_lowercase()
}

/// Resolves the bucket and key from the Host header and the raw (still encoded) request path.
pub fn resolve_target(host: &str, raw_path: &str, base_domains: &[String]) -> Result<Target, RequestError> {
    let host = host_without_port(host);
    let vhost_bucket = base_domains.iter().find_map(|base| {
        host.strip_suffix(base.as_str())
            .and_then(|prefix| prefix.strip_suffix('.'))
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
    });
    let path = raw_path.strip_prefix('/').ok_or(RequestError::InvalidUri)?;
    if let Some(bucket) = vhost_bucket {
        validate_bucket_name(&bucket, false)?;
        let key = decode_utf8(path)?;
        return Ok(Target { bucket: Some(bucket), key: (!key.is_empty()).then_some(key), virtual_hosted: true });
    }
    if path.is_empty() {
        return Ok(Target { bucket: None, key: None, virtual_hosted: false });
    }
    let (bucket_raw, key_raw) = match path.split_once('/') {
        Some((b, k)) => (b, Some(k)),
        None => (path, None),
    };
    let bucket = decode_utf8(bucket_raw)?;
    validate_bucket_name(&bucket, true)?;
    let key = match key_raw {
        Some(k) if !k.is_empty() => Some(decode_utf8(k)?),
        _other => None,
    };
    Ok(Target { bucket: Some(bucket), key, virtual_hosted: false })
}

/// Refuses object keys a store could resolve outside their bucket: a `.` or `..` segment (any store; S3 itself
/// takes them as plain names, a file-system store resolves them). With `strict` (the embedded store, whose keys are
/// file paths), also empty segments (`a//b`, a leading `/`), which name the same file as another key. A trailing `/`
/// (a "folder" key) stays allowed.
pub fn check_key(key: &str, strict: bool) -> Result<(), RequestError> {
    let segments: Vec<&str> = key.split('/').collect();
    let last = segments.len() - 1;
    for (i, s) in segments.iter().enumerate() {
        if *s == "." || *s == ".." {
            return Err(RequestError::InvalidArgument(
                "Object keys with \".\" or \"..\" path segments are not supported by the gateway.".into(),
            ));
        }
        if strict && s.is_empty() && i != last {
            return Err(RequestError::InvalidArgument(
                "Object keys with empty path segments (\"//\" or a leading \"/\") are not supported by this store."
                    .into(),
            ));
        }
    }
    Ok(())
}

fn decode_utf8(raw: &str) -> Result<String, RequestError> {
    String::from_utf8(percent_decode(raw.as_bytes())).map_err(|_| RequestError::InvalidUri)
}

/// Bucket name rules. `legacy` (path style) also allows the old uppercase / underscore names. A name never starts
/// with `.` (so never `.` or `..`, which a file-system store resolves as a path).
pub fn validate_bucket_name(name: &str, legacy: bool) -> Result<(), RequestError> {
    if name.starts_with('.') {
        return Err(RequestError::InvalidBucketName);
    }
    let len_ok = (3..=63).contains(&name.len()) || (legacy && (1..=255).contains(&name.len()));
    let chars_ok = name.bytes().all(|c| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == b'.'
            || c == b'-'
            || (legacy && (c.is_ascii_uppercase() || c == b'_'))
    });
    if len_ok && chars_ok { Ok(()) } else { Err(RequestError::InvalidBucketName) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::AtBoundary;

    fn src(v: &'static str) -> Result<Option<CopySource>, RequestError> {
        let mut h = http::HeaderMap::new();
        h.insert(headers::X_AMZ_COPY_SOURCE, http::HeaderValue::from_static(v));
        CopySource::from_headers(&h)
    }

    #[test]
    fn copy_sources_parse_with_encoded_keys_and_version_ids() {
        let s = src("/b/dir/a%20b%3Fc.txt?versionId=v%2B1").unwrap().unwrap();
        assert_eq!(s.target.bucket.as_deref(), Some("b"));
        assert_eq!(s.target.key.as_deref(), Some("dir/a b?c.txt"));
        assert_eq!(s.version_id.as_deref(), Some("v+1"));
        assert_eq!(s.upstream_value(), "/b/dir/a%20b%3Fc.txt?versionId=v%2B1");
        let s = src("b/k").unwrap().unwrap();
        assert_eq!((s.target.key.as_deref(), s.version_id), (Some("k"), None));
        for bad in ["/b", "b/", "/b/k?other=1", "//k"] {
            assert!(src(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_style_requests_name_bucket_then_key() {
        let t = resolve_target("127.0.0.1:8443", "/bkt/a/b%20c", &[]).unwrap();
        assert_eq!(t.bucket.as_deref(), Some("bkt"));
        assert_eq!(t.key.as_deref(), Some("a/b c"));
        assert_eq!(t.upstream_path(false), "/bkt/a/b%20c");
        assert_eq!(t.upstream_path(true), "/a/b%20c");
    }

    #[test]
    fn virtual_hosted_requests_take_the_bucket_from_the_host() {
        let base = vec!["s3.example.com".to_owned()];
        let t = resolve_target("my.bucket.s3.example.com:443", "/k", &base).unwrap();
        assert_eq!(t.bucket.as_deref(), Some("my.bucket"));
        assert_eq!(t.key.as_deref(), Some("k"));
        let t = resolve_target("s3.example.com", "/bkt/k", &base).unwrap();
        assert_eq!(t.bucket.as_deref(), Some("bkt"));
    }

    #[test]
    fn keys_keep_double_slashes_and_are_never_normalised() {
        let t = resolve_target("h", "/b//x/../y", &[]).unwrap();
        assert_eq!(t.key.as_deref(), Some("/x/../y"));
        assert_eq!(t.upstream_path(false), "/b//x/../y");
    }

    #[test]
    fn the_root_is_list_buckets_and_a_bare_bucket_has_no_key() {
        assert_eq!(resolve_target("h", "/", &[]).unwrap().bucket, None);
        let t = resolve_target("h", "/bkt/", &[]).unwrap();
        assert_eq!((t.bucket.as_deref(), t.key), (Some("bkt"), None));
    }

    #[test]
    fn keys_with_dot_segments_are_refused_and_empty_segments_only_where_the_store_is_a_file_system() {
        for bad in ["..", ".", "../bbb/secret.txt", "a/../b", "a/./b", "a/..", "./x", "a/b/."] {
            assert_eq!(check_key(bad, false).unwrap_err().code(), "InvalidArgument", "{bad}");
        }
        for ok in ["a", "a.b", "..a", "a..", "a/.b/c", "dir/", "a/b...c", ".hidden", "a/...", "x/.../y"] {
            assert!(check_key(ok, true).is_ok(), "{ok}");
        }
        for aliasing in ["/x", "a//b", "//", "a/b//c/"] {
            assert!(check_key(aliasing, false).is_ok(), "{aliasing}");
            assert!(check_key(aliasing, true).is_err(), "{aliasing}");
        }
    }

    #[test]
    fn invalid_bucket_names_are_refused() {
        for dots in [".", "..", ".bucket", "..."] {
            assert!(validate_bucket_name(dots, true).is_err(), "{dots}");
        }
        assert!(resolve_target("h", "/../k", &[]).is_err());
        assert!(resolve_target("h", "/a%2Fb/k", &[]).is_err());
        assert!(validate_bucket_name("ab", false).is_err());
        assert!(validate_bucket_name("Upper", false).is_err());
        assert!(validate_bucket_name("Upper_ok", true).is_ok());
    }
}
