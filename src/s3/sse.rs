//! The server-side-encryption request headers a client sends (SSE-S3, SSE-KMS, SSE-C, and SSE-C for a copy
//! source), parsed and checked the way S3 checks them. The customer key is a secret type: zeroized on drop,
//! redacted in `Debug`, never forwarded.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderName};
use zeroize::Zeroizing;

use super::headers::header_str;
use crate::s3::error::RequestError;

pub const SSE: HeaderName = HeaderName::from_static("x-amz-server-side-encryption");
pub const SSE_KMS_KEY_ID: HeaderName = HeaderName::from_static("x-amz-server-side-encryption-aws-kms-key-id");
pub const SSE_CONTEXT: HeaderName = HeaderName::from_static("x-amz-server-side-encryption-context");
pub const SSE_BUCKET_KEY: HeaderName = HeaderName::from_static("x-amz-server-side-encryption-bucket-key-enabled");
pub const SSE_C_ALGORITHM: HeaderName = HeaderName::from_static("x-amz-server-side-encryption-customer-algorithm");
pub const SSE_C_KEY: HeaderName = HeaderName::from_static("x-amz-server-side-encryption-customer-key");
pub const SSE_C_KEY_MD5: HeaderName = HeaderName::from_static("x-amz-server-side-encryption-customer-key-md5");
const COPY_SSE_C: [&str; 3] = [
    "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5",
];

/// A customer-provided key (SSE-C).
pub struct CustomerKey {
    key: Zeroizing<[u8; 32]>,
    md5_b64: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey([REDACTED])")
    }
}

impl CustomerKey {
    pub fn expose(&self) -> &[u8; 32] {
        &self.key
    }

    /// Base64 of the key's MD5, as the client sent it (S3 returns it on every response about the object).
    pub fn md5_b64(&self) -> &str {
        &self.md5_b64
    }

    /// The key's MD5 (16 bytes).
    pub fn md5(&self) -> [u8; 16] {
        <md5::Md5 as md5::Digest>::digest(self.key.as_slice()).into()
    }

    /// From the three headers' values: algorithm, base64 key, base64 MD5 of the key.
    fn parse(algorithm: Option<&str>, key: Option<&str>, md5: Option<&str>) -> Result<CustomerKey, RequestError> {
        let (Some(algorithm), Some(key), Some(md5)) = (algorithm, key, md5) else {
            return Err(RequestError::InvalidArgument(
                "Requests specifying Server Side Encryption with Customer provided keys must provide the algorithm, \
                 the key and the key's MD5."
                    .into(),
            ));
        };
        if algorithm.trim() != "AES256" {
            return Err(RequestError::InvalidEncryptionAlgorithm);
        }
        let raw = Zeroizing::new(B64.decode(key.trim()).unwrap_or_default());
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            RequestError::InvalidArgument("The secret key was invalid for the specified algorithm.".into())
        })?;
        let computed = B64.encode(<md5::Md5 as md5::Digest>::digest(bytes));
        if computed != md5.trim() {
            return Err(RequestError::InvalidArgument(
                "The calculated MD5 hash of the key did not match the hash that was provided.".into(),
            ));
        }
        Ok(CustomerKey { key: Zeroizing::new(bytes), md5_b64: computed })
    }
}

/// What a request asks for.
#[derive(Debug, Clone)]
pub enum SseRequest {
    /// No SSE header: the bucket's default applies.
    None,
    /// `x-amz-server-side-encryption: AES256`.
    S3,
    /// `aws:kms`, with an optional key, encryption context (base64 JSON as sent) and bucket-key choice.
    Kms { key_id: Option<String>, context: Option<String>, bucket_key: Option<bool> },
    /// SSE-C.
    Customer(Arc<CustomerKey>),
}

impl SseRequest {
    /// Parses the SSE headers of a request.
    pub fn from_headers(headers: &HeaderMap) -> Result<SseRequest, RequestError> {
        let customer = [&SSE_C_ALGORITHM, &SSE_C_KEY, &SSE_C_KEY_MD5].iter().any(|n| headers.contains_key(*n));
        let sse = header_str(headers, &SSE).map(str::trim);
        let kms_extras = [&SSE_KMS_KEY_ID, &SSE_CONTEXT].iter().any(|n| headers.contains_key(*n));
        if customer {
            if sse.is_some() || kms_extras {
                return Err(RequestError::InvalidArgument(
                    "Server Side Encryption with Customer provided key is incompatible with the encryption method \
                     specified"
                        .into(),
                ));
            }
            let key = CustomerKey::parse(
                header_str(headers, &SSE_C_ALGORITHM),
                header_str(headers, &SSE_C_KEY),
                header_str(headers, &SSE_C_KEY_MD5),
            )?;
            return Ok(SseRequest::Customer(Arc::new(key)));
        }
        match sse {
            None if kms_extras => Err(RequestError::InvalidArgument(
                "x-amz-server-side-encryption-aws-kms-key-id and -context need x-amz-server-side-encryption: aws:kms"
                    .into(),
            )),
            None => Ok(SseRequest::None),
            Some("AES256") if !kms_extras => Ok(SseRequest::S3),
            Some("aws:kms") => {
                let context = header_str(headers, &SSE_CONTEXT).map(|c| c.trim().to_owned());
                if let Some(c) = &context {
                    parse_context(c)?;
                }
                let bucket_key = match header_str(headers, &SSE_BUCKET_KEY).map(str::trim) {
                    None => None,
                    Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
                    Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
                    Some(_) => {
                        return Err(RequestError::InvalidArgument(
                            "x-amz-server-side-encryption-bucket-key-enabled must be true or false".into(),
                        ));
                    }
                };
                let key_id =
                    header_str(headers, &SSE_KMS_KEY_ID).map(|k| k.trim().to_owned()).filter(|k| !k.is_empty());
                Ok(SseRequest::Kms { key_id, context, bucket_key })
            }
            Some("aws:kms:dsse") => {
                Err(RequestError::NotImplemented("Dual-layer SSE-KMS (aws:kms:dsse) is not supported by the gateway."))
            }
            Some(_) => Err(RequestError::InvalidArgument(
                "The server-side encryption must be AES256 or aws:kms (x-amz-server-side-encryption).".into(),
            )),
        }
    }

    pub fn customer(&self) -> Option<&Arc<CustomerKey>> {
        match self {
            SseRequest::Customer(k) => Some(k),
            SseRequest::None | SseRequest::S3 | SseRequest::Kms { .. } => None,
        }
    }
}

/// The SSE-C key of a copy source (`x-amz-copy-source-server-side-encryption-customer-*`), if given.
pub fn copy_source_customer(headers: &HeaderMap) -> Result<Option<Arc<CustomerKey>>, RequestError> {
    let [algorithm, key, md5] = COPY_SSE_C.map(|n| headers.get(n).and_then(|v| v.to_str().ok()));
    if algorithm.is_none() && key.is_none() && md5.is_none() {
        return Ok(None);
    }
    CustomerKey::parse(algorithm, key, md5).map(|k| Some(Arc::new(k)))
}

/// Whether the request carries any SSE-C header (for the object itself).
pub fn has_customer_key(headers: &HeaderMap) -> bool {
    [&SSE_C_ALGORITHM, &SSE_C_KEY, &SSE_C_KEY_MD5].iter().any(|n| headers.contains_key(*n))
}

/// An SSE-KMS encryption context: base64 of a JSON object of strings. Keys under `aws:` and `s3crypt:` are
/// reserved.
pub fn parse_context(b64: &str) -> Result<std::collections::BTreeMap<String, String>, RequestError> {
    let bad = || RequestError::InvalidArgument("The encryption context is not base64-encoded JSON of strings.".into());
    let json = B64.decode(b64.trim()).map_err(|_| bad())?;
    let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(&json).map_err(|_| bad())?;
    if map.keys().any(|k| k.starts_with("aws:") || k.starts_with("s3crypt:")) {
        return Err(RequestError::InvalidArgument(
            "Encryption context keys under aws: and s3crypt: are reserved.".into(),
        ));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::AtBoundary;
    use http::HeaderValue;

    fn customer_headers(key: &[u8], md5_of: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SSE_C_ALGORITHM, HeaderValue::from_static("AES256"));
        h.insert(SSE_C_KEY, B64.encode(key).parse().unwrap());
        h.insert(SSE_C_KEY_MD5, B64.encode(<md5::Md5 as md5::Digest>::digest(md5_of)).parse().unwrap());
        h
    }

    #[test]
    fn customer_keys_are_checked_like_s3_checks_them_and_never_printed() {
        let k = [7u8; 32];
        let r = SseRequest::from_headers(&customer_headers(&k, &k)).unwrap();
        let ck = r.customer().unwrap();
        assert_eq!(ck.expose(), &k);
        assert!(!format!("{r:?}").contains("7, 7"));
        assert_eq!(SseRequest::from_headers(&customer_headers(&k, b"other")).unwrap_err().code(), "InvalidArgument");
        assert_eq!(
            SseRequest::from_headers(&customer_headers(&[1; 16], &[1; 16])).unwrap_err().code(),
            "InvalidArgument"
        );
        let mut bad_alg = customer_headers(&k, &k);
        bad_alg.insert(SSE_C_ALGORITHM, HeaderValue::from_static("AES128"));
        assert_eq!(SseRequest::from_headers(&bad_alg).unwrap_err().code(), "InvalidEncryptionAlgorithmError");
        let mut both = customer_headers(&k, &k);
        both.insert(SSE, HeaderValue::from_static("AES256"));
        assert_eq!(SseRequest::from_headers(&both).unwrap_err().code(), "InvalidArgument");
        let mut partial = HeaderMap::new();
        partial.insert(SSE_C_KEY, HeaderValue::from_static("AAAA"));
        assert_eq!(SseRequest::from_headers(&partial).unwrap_err().code(), "InvalidArgument");
    }

    #[test]
    fn sse_s3_and_sse_kms_headers_are_read_with_their_options() {
        let mut h = HeaderMap::new();
        assert!(matches!(SseRequest::from_headers(&h).unwrap(), SseRequest::None));
        h.insert(SSE, HeaderValue::from_static("AES256"));
        assert!(matches!(SseRequest::from_headers(&h).unwrap(), SseRequest::S3));
        h.insert(SSE, HeaderValue::from_static("aws:kms"));
        h.insert(SSE_KMS_KEY_ID, HeaderValue::from_static("alias/app"));
        h.insert(SSE_BUCKET_KEY, HeaderValue::from_static("true"));
        let ctx = B64.encode(br#"{"team":"a"}"#);
        h.insert(SSE_CONTEXT, ctx.parse().unwrap());
        match SseRequest::from_headers(&h).unwrap() {
            SseRequest::Kms { key_id, context, bucket_key } => {
                assert_eq!(key_id.as_deref(), Some("alias/app"));
                assert_eq!(context.as_deref(), Some(ctx.as_str()));
                assert_eq!(bucket_key, Some(true));
            }
            other => panic!("{other:?}"),
        }
        h.insert(SSE_CONTEXT, B64.encode(br#"{"aws:x":"a"}"#).parse().unwrap());
        assert_eq!(SseRequest::from_headers(&h).unwrap_err().code(), "InvalidArgument");
        h.insert(SSE, HeaderValue::from_static("aws:kms:dsse"));
        assert_eq!(SseRequest::from_headers(&h).unwrap_err().code(), "NotImplemented");
        let mut stray = HeaderMap::new();
        stray.insert(SSE_KMS_KEY_ID, HeaderValue::from_static("k"));
        assert_eq!(SseRequest::from_headers(&stray).unwrap_err().code(), "InvalidArgument");
    }
}
