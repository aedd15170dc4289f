//! The envelope: what s3crypt stores in an object's user metadata (format version, segment size, which KEK
//! wrapped the data key, the wrapped data key), under the reserved `x-amz-meta-s3crypt-` prefix.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::format::{FORMAT_VERSION, META_DEK, META_KEK, META_PREFIX, META_SEGMENT_SIZE, META_VERSION};
use crate::error::ProxyError;

/// S3's limit on user metadata: the sum of the UTF-8 lengths of names (after `x-amz-meta-`) and values.
pub const USER_METADATA_LIMIT: usize = 2048;

/// The envelope of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub segment_size: u32,
    /// `keyring:<id>` (later `kms:<arn>`, `sse-c`).
    pub kek_ref: String,
    pub wrapped_dek: Vec<u8>,
}

/// Reading an envelope found s3crypt metadata that is not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError(pub &'static str);

fn valid_segment_size(s: u32) -> bool {
    s.is_power_of_two() && (4096..=16 * 1024 * 1024).contains(&s)
}

impl Envelope {
    /// The metadata headers to store.
    pub fn to_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut v = Vec::with_capacity(4);
        let mut push = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                v.push((HeaderName::from_static(name), value));
            }
        };
        push(META_VERSION, FORMAT_VERSION.to_string());
        push(META_SEGMENT_SIZE, self.segment_size.to_string());
        push(META_KEK, self.kek_ref.clone());
        push(META_DEK, B64.encode(&self.wrapped_dek));
        v
    }

    /// Bytes the envelope takes from the 2 KB user-metadata budget.
    pub fn metadata_len(&self) -> usize {
        self.to_headers().iter().map(|(n, v)| n.as_str().len() - "x-amz-meta-".len() + v.len()).sum()
    }

    /// Reads an envelope from `(name, value)` pairs (header names, lowercase). `Ok(None)` when the object carries
    /// no s3crypt metadata at all (a plaintext object).
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Result<Option<Envelope>, EnvelopeError> {
        let (mut version, mut seg, mut kek, mut dek) = (None, None, None, None);
        let mut any = false;
        for (name, value) in pairs {
            let slot = match name {
                META_VERSION => &mut version,
                META_SEGMENT_SIZE => &mut seg,
                META_KEK => &mut kek,
                META_DEK => &mut dek,
                n if n.starts_with(META_PREFIX) => {
                    any = true;
                    continue;
                }
                _ => continue,
            };
            any = true;
            *slot = Some(value.trim());
        }
        if !any {
            return Ok(None);
        }
        let version = version.ok_or(EnvelopeError("format version missing"))?;
        if version != FORMAT_VERSION.to_string() {
            return Err(EnvelopeError("unknown format version"));
        }
        let segment_size: u32 =
            seg.ok_or(EnvelopeError("segment size missing"))?.parse().map_err(|_| EnvelopeError("segment size"))?;
        if !valid_segment_size(segment_size) {
            return Err(EnvelopeError("segment size out of range"));
        }
        let kek_ref = kek.ok_or(EnvelopeError("key reference missing"))?.to_owned();
        let wrapped_dek = B64
            .decode(dek.ok_or(EnvelopeError("wrapped data key missing"))?)
            .map_err(|_| EnvelopeError("wrapped data key is not base64"))?;
        Ok(Some(Envelope { segment_size, kek_ref, wrapped_dek }))
    }

    /// Reads an envelope from response headers.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Envelope>, EnvelopeError> {
        Envelope::from_pairs(headers.iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))))
    }
}

/// Removes every reserved header from a response.
pub fn strip_reserved(headers: &mut HeaderMap) {
    let reserved: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().starts_with(META_PREFIX)).cloned().collect();
    for n in reserved {
        headers.remove(n);
    }
}

/// Refuses client metadata under the reserved prefix, and metadata that would not fit beside the envelope.
pub fn check_client_metadata(headers: &HeaderMap, envelope_len: usize) -> Result<(), ProxyError> {
    let mut used = 0usize;
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with(META_PREFIX) {
            return Err(ProxyError::InvalidArgument(
                format!("User metadata under x-amz-meta-s3crypt- is reserved by the gateway: {n}").into(),
            ));
        }
        if let Some(short) = n.strip_prefix("x-amz-meta-") {
            used += short.len() + value.len();
        }
    }
    if used + envelope_len > USER_METADATA_LIMIT {
        return Err(ProxyError::MetadataTooLarge { limit: USER_METADATA_LIMIT - envelope_len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope { segment_size: 65536, kek_ref: "keyring:k1".into(), wrapped_dek: vec![7u8; 60] }
    }

    #[test]
    fn an_envelope_round_trips_through_headers_and_stays_compact() {
        let e = sample();
        let mut h = HeaderMap::new();
        for (n, v) in e.to_headers() {
            h.insert(n, v);
        }
        assert_eq!(Envelope::from_headers(&h).unwrap(), Some(e.clone()));
        assert!(e.metadata_len() < 160, "{}", e.metadata_len());
        strip_reserved(&mut h);
        assert!(h.is_empty());
        assert_eq!(Envelope::from_headers(&h).unwrap(), None);
    }

    #[test]
    fn partial_or_unknown_envelopes_are_errors_not_plaintext() {
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static(META_KEK), HeaderValue::from_static("keyring:k1"));
        assert!(Envelope::from_headers(&h).is_err());
        let mut h = HeaderMap::new();
        for (n, v) in sample().to_headers() {
            h.insert(n, v);
        }
        h.insert(HeaderName::from_static(META_VERSION), HeaderValue::from_static("2"));
        assert!(Envelope::from_headers(&h).is_err());
    }

    #[test]
    fn client_metadata_under_the_reserved_prefix_or_over_budget_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-meta-color", HeaderValue::from_static("blue"));
        assert!(check_client_metadata(&h, 200).is_ok());
        h.insert("x-amz-meta-s3crypt-dek", HeaderValue::from_static("forged"));
        assert_eq!(check_client_metadata(&h, 200).unwrap_err().code(), "InvalidArgument");
        let mut big = HeaderMap::new();
        big.insert("x-amz-meta-big", HeaderValue::from_str(&"x".repeat(1900)).unwrap());
        assert_eq!(check_client_metadata(&big, 200).unwrap_err().code(), "MetadataTooLarge");
    }
}
