//! The envelope: what s3crypt stores in an object's user metadata (format version, segment size, which KEK
//! wrapped the data key, the wrapped data key), under the reserved `x-amz-meta-s3crypt-` prefix.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::error::CryptoError;
use super::format::{
    FORMAT_VERSION, MAX_PARTS, META_ATTRIBUTES, META_BUCKET_KEY, META_CONTEXT, META_DEK, META_KEK, META_MULTIPART,
    META_PREFIX, META_SEGMENT_SIZE, META_VERSION, MULTIPART_OPEN,
};
use super::keys::{ObjectIdentity, wrap_aad};
use super::stream::Layout;
use crate::s3::error::RequestError;

/// S3's limit on user metadata: the sum of the UTF-8 lengths of names (after `x-amz-meta-`) and values.
pub const USER_METADATA_LIMIT: usize = 2048;

/// The envelope of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub segment_size: u32,
    /// `keyring:<id>` (later `kms:<arn>`, `sse-c`).
    pub kek_ref: String,
    pub wrapped_dek: Vec<u8>,
    /// `None` for an object written by one PutObject.
    pub multipart: Option<Multipart>,
    /// KMS bucket-key mode: the KMS blob of the bucket key that wrapped `wrapped_dek`.
    pub bucket_key: Option<Vec<u8>>,
    /// The client's SSE-KMS encryption context (base64 JSON, as sent).
    pub context: Option<String>,
    /// Sealed plaintext attributes (`crate::crypto::attributes`), opened only with the data key.
    pub attributes: Option<Vec<u8>>,
}

/// The multipart state of an object, authenticated by the data-key wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multipart {
    /// Created by CreateMultipartUpload; the layout is not known yet. Never read: Complete seals it first.
    Open,
    /// Sealed at Complete: `parts` parts of `part_size` plaintext bytes each (a multiple of the segment size),
    /// but the last, which has 0..=`part_size`.
    Sealed { parts: u32, part_size: u64 },
}

impl Multipart {
    /// The metadata value.
    pub fn encode(&self) -> String {
        match self {
            Multipart::Open => MULTIPART_OPEN.to_owned(),
            Multipart::Sealed { parts, part_size } => format!("{parts}x{part_size}"),
        }
    }

    fn decode(v: &str, segment_size: u32) -> Option<Multipart> {
        if v == MULTIPART_OPEN {
            return Some(Multipart::Open);
        }
        let (parts, size) = v.split_once('x')?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(parts) || !digits(size) {
            return None;
        }
        let (parts, part_size): (u32, u64) = (parts.parse().ok()?, size.parse().ok()?);
        let aligned = part_size > 0 && part_size % u64::from(segment_size) == 0;
        ((1..=MAX_PARTS).contains(&parts) && aligned).then_some(Multipart::Sealed { parts, part_size })
    }
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
        if let Some(mp) = &self.multipart {
            push(META_MULTIPART, mp.encode());
        }
        if let Some(bk) = &self.bucket_key {
            push(META_BUCKET_KEY, B64.encode(bk));
        }
        if let Some(c) = &self.context {
            push(META_CONTEXT, c.clone());
        }
        if let Some(a) = &self.attributes {
            push(META_ATTRIBUTES, B64.encode(a));
        }
        v
    }

    /// The AAD the data key is wrapped with for the object `id`.
    pub fn wrap_aad(&self, id: &ObjectIdentity) -> Vec<u8> {
        let mp = self.multipart.map(|m| m.encode());
        wrap_aad(&self.kek_ref, id, self.segment_size, mp.as_deref(), self.context.as_deref())
    }

    /// How the object's segments are laid out; an error for a multipart object that was never sealed.
    pub fn layout(&self) -> Result<Layout, EnvelopeError> {
        match self.multipart {
            None => Ok(Layout::Single),
            Some(Multipart::Open) => Err(EnvelopeError(
                "multipart object completed but not sealed (its completion was interrupted); upload it again",
            )),
            Some(Multipart::Sealed { parts, part_size }) => {
                Ok(Layout::Multipart { parts, per_part: part_size / u64::from(self.segment_size) })
            }
        }
    }

    /// Bytes the envelope takes from the 2 KB user-metadata budget.
    pub fn metadata_len(&self) -> usize {
        self.to_headers().iter().map(|(n, v)| n.as_str().len() - "x-amz-meta-".len() + v.len()).sum()
    }

    /// Reads an envelope from `(name, value)` pairs (header names, lowercase). `Ok(None)` when the object carries
    /// no s3crypt metadata at all (a plaintext object).
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Result<Option<Envelope>, EnvelopeError> {
        let (mut version, mut seg, mut kek, mut dek, mut mp) = (None, None, None, None, None);
        let (mut bk, mut ctx, mut at) = (None, None, None);
        let mut any = false;
        for (name, value) in pairs {
            let slot = match name {
                META_VERSION => &mut version,
                META_SEGMENT_SIZE => &mut seg,
                META_KEK => &mut kek,
                META_DEK => &mut dek,
                META_MULTIPART => &mut mp,
                META_BUCKET_KEY => &mut bk,
                META_CONTEXT => &mut ctx,
                META_ATTRIBUTES => &mut at,
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
        let multipart = match mp {
            None => None,
            Some(v) => Some(Multipart::decode(v, segment_size).ok_or(EnvelopeError("multipart state"))?),
        };
        let bucket_key = match bk {
            None => None,
            Some(v) => Some(B64.decode(v).map_err(|_| EnvelopeError("bucket key is not base64"))?),
        };
        let context = ctx.map(str::to_owned);
        let attributes = match at {
            None => None,
            Some(v) => Some(B64.decode(v).map_err(|_| EnvelopeError("attributes are not base64"))?),
        };
        Ok(Some(Envelope { segment_size, kek_ref, wrapped_dek, multipart, bucket_key, context, attributes }))
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

/// Refuses client metadata under the reserved prefix (on any request to an encrypted bucket, whatever its policy:
/// the gateway reads that prefix as its envelope).
pub fn refuse_reserved(headers: &HeaderMap) -> Result<(), CryptoError> {
    match headers.keys().find(|n| n.as_str().starts_with(META_PREFIX)) {
        Some(n) => Err(RequestError::InvalidArgument(
            format!("User metadata under x-amz-meta-s3crypt- is reserved by the gateway: {n}").into(),
        )
        .into()),
        None => Ok(()),
    }
}

/// Refuses client metadata under the reserved prefix, and metadata that would not fit beside the envelope.
pub fn check_client_metadata(headers: &HeaderMap, envelope_len: usize) -> Result<(), CryptoError> {
    refuse_reserved(headers)?;
    let mut used = 0usize;
    for (name, value) in headers {
        let n = name.as_str();
        if let Some(short) = n.strip_prefix("x-amz-meta-") {
            used += short.len() + value.len();
        }
    }
    if used + envelope_len > USER_METADATA_LIMIT {
        return Err(RequestError::MetadataTooLarge { limit: USER_METADATA_LIMIT - envelope_len }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::AtBoundary;

    fn sample() -> Envelope {
        Envelope {
            segment_size: 65536,
            kek_ref: "keyring:k1".into(),
            wrapped_dek: vec![7u8; 60],
            multipart: None,
            bucket_key: None,
            context: None,
            attributes: None,
        }
    }

    #[test]
    fn multipart_states_round_trip_and_only_aligned_layouts_are_accepted() {
        for mp in [Multipart::Open, Multipart::Sealed { parts: 3, part_size: 8 * 1024 * 1024 }] {
            let e = Envelope { multipart: Some(mp), ..sample() };
            let mut h = HeaderMap::new();
            for (n, v) in e.to_headers() {
                h.insert(n, v);
            }
            assert_eq!(Envelope::from_headers(&h).unwrap(), Some(e));
        }
        let kms = Envelope { bucket_key: Some(vec![9; 96]), context: Some("e30=".into()), ..sample() };
        let mut h = HeaderMap::new();
        for (n, v) in kms.to_headers() {
            h.insert(n, v);
        }
        assert_eq!(Envelope::from_headers(&h).unwrap(), Some(kms));
        let sealed = Envelope { multipart: Some(Multipart::Sealed { parts: 3, part_size: 131072 }), ..sample() };
        assert_eq!(sealed.layout().unwrap(), Layout::Multipart { parts: 3, per_part: 2 });
        assert!(Envelope { multipart: Some(Multipart::Open), ..sample() }.layout().is_err());
        for bad in ["3x100", "0x65536", "10001x65536", "x65536", "3x", "+3x65536", "3x0", "OPEN"] {
            let mut h = HeaderMap::new();
            for (n, v) in sample().to_headers() {
                h.insert(n, v);
            }
            h.insert(HeaderName::from_static(META_MULTIPART), HeaderValue::from_static(bad));
            assert!(Envelope::from_headers(&h).is_err(), "{bad}");
        }
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
