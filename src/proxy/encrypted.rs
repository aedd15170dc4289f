//! What changes for buckets whose objects s3crypt encrypts: which operations are allowed, the Range mapping
//! (plaintext → covering ciphertext segments, one upstream request), and the responses of GET, HEAD, PUT and
//! listings (plaintext sizes, envelope and ciphertext checksums hidden, SSE headers).

use crate::upstream::UpstreamIncoming;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

use super::ProxyBody;
use std::sync::Arc;

use crate::config::LegacyPolicy;
use crate::crypto::Crypto;
use crate::crypto::body::{DecryptBody, ReadPlan};
use crate::crypto::envelope::{Envelope, strip_reserved};
use crate::crypto::format::{SEGMENT_OVERHEAD, plaintext_len, segment_count, segment_offset};
use crate::crypto::keys::ObjectIdentity;
use crate::error::{BoxError, ProxyError};
use crate::s3::checksum::ChecksumAlgorithm;
use crate::s3::sse::CustomerKey;

use crate::s3::sse::{SSE, SSE_KMS_KEY_ID};
const SSE_PREFIX: &str = "x-amz-server-side-encryption";
pub const X_AMZ_CHECKSUM_MODE: HeaderName = HeaderName::from_static("x-amz-checksum-mode");
const X_AMZ_CHECKSUM_TYPE: HeaderName = HeaderName::from_static("x-amz-checksum-type");

/// A client Range, as S3 reads it: one `bytes=` range; anything else is ignored (whole object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRange {
    Whole,
    /// `bytes=a-b` or `bytes=a-`.
    From(u64, Option<u64>),
    /// `bytes=-n`.
    Suffix(u64),
}

impl ClientRange {
    pub fn parse(headers: &HeaderMap) -> ClientRange {
        let Some(v) = headers.get(http::header::RANGE).and_then(|v| v.to_str().ok()) else {
            return ClientRange::Whole;
        };
        let Some(spec) = v.trim().strip_prefix("bytes=") else { return ClientRange::Whole };
        if spec.contains(',') {
            return ClientRange::Whole;
        }
        let Some((a, b)) = spec.split_once('-') else { return ClientRange::Whole };
        let (a, b) = (a.trim(), b.trim());
        let num = |s: &str| if s.bytes().all(|c| c.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
        match (a.is_empty(), b.is_empty()) {
            (true, false) => num(b).map_or(ClientRange::Whole, ClientRange::Suffix),
            (false, true) => num(a).map_or(ClientRange::Whole, |a| ClientRange::From(a, None)),
            (false, false) => match (num(a), num(b)) {
                (Some(a), Some(b)) if b >= a => ClientRange::From(a, Some(b)),
                _other => ClientRange::Whole,
            },
            (true, true) => ClientRange::Whole,
        }
    }

    /// The plaintext bytes to return of an object of `total` bytes, inclusive, or `None` for the whole (possibly
    /// empty) object; InvalidRange if it starts past the end.
    pub fn resolve(self, total: u64) -> Result<Option<(u64, u64)>, ProxyError> {
        match self {
            ClientRange::Whole => Ok(None),
            ClientRange::From(a, b) => {
                if a >= total {
                    return Err(ProxyError::InvalidRange { size: total });
                }
                Ok(Some((a, b.unwrap_or(u64::MAX).min(total - 1))))
            }
            ClientRange::Suffix(n) => {
                if n == 0 || total == 0 {
                    return Err(ProxyError::InvalidRange { size: total });
                }
                Ok(Some((total - n.min(total), total - 1)))
            }
        }
    }

    /// An `x-amz-copy-source-range` value: only `bytes=first-last` is allowed.
    pub fn parse_copy_range(v: &str) -> Option<ClientRange> {
        let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
        let num = |s: &str| {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten()
        };
        match (num(a), num(b)) {
            (Some(a), Some(b)) if b >= a => Some(ClientRange::From(a, Some(b))),
            _other => None,
        }
    }

    /// This range as a Range header for a plaintext object (`None` for the whole object).
    pub fn as_header(self) -> Option<String> {
        match self {
            ClientRange::Whole => None,
            ClientRange::From(a, None) => Some(format!("bytes={a}-")),
            ClientRange::From(a, Some(b)) => Some(format!("bytes={a}-{b}")),
            ClientRange::Suffix(n) => Some(format!("bytes=-{n}")),
        }
    }

    /// The upstream Range covering the segments this range needs (without knowing the object's size). The client's
    /// numbers may be anything up to 2^64 − 1, stores take offsets up to 2^63 − 1: a start past that asks for
    /// `bytes=<2^63 − 1>-` (the store answers 416), an end past it reads to the end, a suffix longer than any object
    /// reads it whole.
    pub fn upstream_range(self, segment: u32) -> Option<String> {
        const MAX_OFFSET: u64 = i64::MAX as u64;
        let s = u64::from(segment);
        let full = s + SEGMENT_OVERHEAD;
        let start_of = |a: u64| (a / s).saturating_mul(full).min(MAX_OFFSET);
        match self {
            ClientRange::Whole => None,
            ClientRange::From(a, None) => Some(format!("bytes={}-", start_of(a))),
            ClientRange::From(a, Some(b)) => match (b / s + 1).checked_mul(full).filter(|e| *e <= MAX_OFFSET) {
                Some(end) => Some(format!("bytes={}-{}", start_of(a), end - 1)),
                None => Some(format!("bytes={}-", start_of(a))),
            },
            // The last n plaintext bytes lie within the last ceil(n/S) + 1 segments.
            ClientRange::Suffix(n) => {
                (n.div_ceil(s) + 1).checked_mul(full).filter(|c| *c <= MAX_OFFSET).map(|c| format!("bytes=-{c}"))
            }
        }
    }
}

/// `bytes x-y/total` → (x, total); `bytes */total` → (None, total).
pub(super) fn parse_content_range(v: &str) -> Option<(Option<u64>, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok()?;
    if range.trim() == "*" {
        return Some((None, total));
    }
    let (x, _y) = range.split_once('-')?;
    Some((Some(x.trim().parse().ok()?), total))
}

/// What the SSE response headers say about an object: how the proxy protected it.
#[derive(Debug, Clone)]
pub struct SseInfo {
    pub kek_ref: String,
    pub bucket_key: bool,
    pub context: Option<String>,
    /// SSE-C: the MD5 of the client's key (base64), as S3 returns it.
    pub customer_md5: Option<String>,
}

impl SseInfo {
    pub fn of(env: &Envelope, customer: Option<&Arc<CustomerKey>>) -> SseInfo {
        SseInfo {
            kek_ref: env.kek_ref.clone(),
            bucket_key: env.bucket_key.is_some(),
            context: env.context.clone(),
            customer_md5: customer.map(|k| k.md5_b64().to_owned()),
        }
    }

    /// Only a key reference known (an UploadPart: the upload ID carries no more).
    pub fn from_ref(kek_ref: &str, customer: Option<&Arc<CustomerKey>>) -> SseInfo {
        SseInfo {
            kek_ref: kek_ref.to_owned(),
            bucket_key: false,
            context: None,
            customer_md5: customer.map(|k| k.md5_b64().to_owned()),
        }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        use crate::s3::sse::{SSE_BUCKET_KEY, SSE_C_ALGORITHM, SSE_C_KEY_MD5, SSE_CONTEXT};
        if self.kek_ref == crate::crypto::format::KEK_REF_SSE_C {
            headers.insert(SSE_C_ALGORITHM, HeaderValue::from_static("AES256"));
            if let Some(v) = self.customer_md5.as_deref().and_then(|m| HeaderValue::from_str(m).ok()) {
                headers.insert(SSE_C_KEY_MD5, v);
            }
            return;
        }
        headers.insert(SSE, HeaderValue::from_static("aws:kms"));
        let key_id = self.kek_ref.strip_prefix("kms:").unwrap_or(&self.kek_ref);
        if let Ok(v) = HeaderValue::from_str(key_id) {
            headers.insert(SSE_KMS_KEY_ID, v);
        }
        if self.bucket_key {
            headers.insert(SSE_BUCKET_KEY, HeaderValue::from_static("true"));
        }
        if let Some(v) = self.context.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            headers.insert(SSE_CONTEXT, v);
        }
    }
}

/// What reading an object of an encrypted bucket needs besides the response.
pub struct ReadCtx<'a> {
    pub crypto: &'a Crypto,
    pub id: &'a ObjectIdentity,
    pub customer: Option<&'a Arc<CustomerKey>>,
    pub legacy: LegacyPolicy,
}

/// Drops what describes the stored ciphertext or the store's own encryption, and adds the gateway's SSE headers.
pub fn scrub_object_headers(headers: &mut HeaderMap, sse: Option<&SseInfo>) {
    super::response::scrub_upstream_headers(headers);
    strip_reserved(headers);
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            ChecksumAlgorithm::from_header_name(n.as_str()).is_some()
                || **n == X_AMZ_CHECKSUM_TYPE
                || n.as_str().starts_with(SSE_PREFIX)
                || *n == crate::s3::headers::CONTENT_MD5
        })
        .cloned()
        .collect();
    for n in drop {
        headers.remove(n);
    }
    if let Some(s) = sse {
        s.apply(headers);
    }
}

/// What a GET / HEAD of an encrypted bucket's object turned into.
pub enum ObjectResponse {
    Ready(Response<ProxyBody>),
    /// A plaintext object under `legacy_objects = "passthrough"` whose upstream request was altered for
    /// decryption (its Range): it must be fetched again as the client asked.
    RefetchPlain,
}

fn not_applicable() -> ProxyError {
    ProxyError::InvalidRequest("The encryption parameters are not applicable to this object.".into())
}

fn plain_response(resp: Response<UpstreamIncoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    super::response::scrub_upstream_headers(&mut parts.headers);
    Response::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
}

/// The envelope, or what the legacy policy says about an object without one.
pub fn envelope_or_policy(headers: &HeaderMap, legacy: LegacyPolicy) -> Result<Option<Envelope>, ProxyError> {
    match Envelope::from_headers(headers) {
        Ok(Some(e)) => Ok(Some(e)),
        Ok(None) => match legacy {
            LegacyPolicy::Reject => Err(ProxyError::PlaintextObject),
            LegacyPolicy::Passthrough => Ok(None),
        },
        Err(e) => Err(ProxyError::ObjectIntegrity(e.0)),
    }
}

/// A successful upstream GET (200 / 206) of an encrypted bucket's object → the client's plaintext response.
pub async fn get_response(
    resp: Response<UpstreamIncoming>,
    range: ClientRange,
    ctx: &ReadCtx<'_>,
) -> Result<ObjectResponse, ProxyError> {
    let Some(env) = envelope_or_policy(resp.headers(), ctx.legacy)? else {
        if ctx.customer.is_some() {
            return Err(not_applicable());
        }
        return Ok(if range == ClientRange::Whole {
            ObjectResponse::Ready(plain_response(resp))
        } else {
            ObjectResponse::RefetchPlain
        });
    };
    let layout = env.layout().map_err(|_| ProxyError::UnsealedObject)?;
    let dek = ctx.crypto.open_envelope(&env, ctx.id, ctx.customer).await?;
    let (mut parts, body) = resp.into_parts();
    let seg = env.segment_size;
    let s = u64::from(seg);
    let (start, cipher_total) = match parts.status {
        StatusCode::PARTIAL_CONTENT => parts
            .headers
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range)
            .and_then(|(x, t)| x.map(|x| (x, t)))
            .ok_or_else(|| ProxyError::UpstreamProtocol("206 without a usable Content-Range".into()))?,
        _ => (
            0,
            parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ProxyError::UpstreamProtocol("object without Content-Length".into()))?,
        ),
    };
    if !layout.admits(cipher_total, seg) {
        return Err(ProxyError::ObjectIntegrity("the stored object has an impossible length"));
    }
    let plain_total = plaintext_len(cipher_total, seg, true).unwrap_or(0);
    let wanted = range.resolve(plain_total)?;
    let plan = match wanted {
        None => ReadPlan {
            segment_size: seg,
            cipher_total,
            first_segment: 0,
            end_segment: segment_count(plain_total, seg),
            discard: segment_offset(0, seg).saturating_sub(start),
            skip: 0,
            take: plain_total,
        },
        Some((a, b)) => {
            let first = a / s;
            let seg_start = segment_offset(first, seg);
            if start > seg_start {
                return Err(ProxyError::UpstreamProtocol("upstream range starts after the needed segment".into()));
            }
            ReadPlan {
                segment_size: seg,
                cipher_total,
                first_segment: first,
                end_segment: b / s + 1,
                discard: seg_start - start,
                skip: a - first * s,
                take: b - a + 1,
            }
        }
    };
    let mut decrypted = DecryptBody::new(body, dek, layout, plan).metered("GetObject");
    decrypted.prime().await?;
    scrub_object_headers(&mut parts.headers, Some(&SseInfo::of(&env, ctx.customer)));
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(plan.take));
    match wanted {
        None => {
            parts.status = StatusCode::OK;
            parts.headers.remove(http::header::CONTENT_RANGE);
        }
        Some((a, b)) => {
            parts.status = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{plain_total}")) {
                parts.headers.insert(http::header::CONTENT_RANGE, v);
            }
        }
    }
    let body: ProxyBody = decrypted.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    Ok(ObjectResponse::Ready(Response::from_parts(parts, body)))
}

/// An upstream 416 for a ciphertext range → the client's 416 with the plaintext size.
pub fn range_not_satisfiable(headers: &HeaderMap, segment: u32) -> Option<ProxyError> {
    let (_, total) =
        headers.get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range)?;
    Some(ProxyError::InvalidRange { size: plaintext_len(total, segment, true).unwrap_or(0) })
}

/// A successful upstream HEAD of an encrypted bucket's object → plaintext length, envelope hidden. Only SSE-C
/// objects are unwrapped (to check the client's key, as S3 does); others are not (no KMS call on HEAD).
pub async fn head_response(
    resp: Response<UpstreamIncoming>,
    ctx: &ReadCtx<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(env) = envelope_or_policy(resp.headers(), ctx.legacy)? else {
        if ctx.customer.is_some() {
            return Err(not_applicable());
        }
        return Ok(plain_response(resp));
    };
    if env.kek_ref == crate::crypto::format::KEK_REF_SSE_C || ctx.customer.is_some() {
        ctx.crypto.open_envelope(&env, ctx.id, ctx.customer).await?;
    }
    let (mut parts, _body) = resp.into_parts();
    let cipher_total: u64 = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ProxyError::UpstreamProtocol("HEAD without Content-Length".into()))?;
    let layout = env.layout().map_err(|_| ProxyError::UnsealedObject)?;
    if !layout.admits(cipher_total, env.segment_size) {
        return Err(ProxyError::ObjectIntegrity("the stored object has an impossible length"));
    }
    let plain = plaintext_len(cipher_total, env.segment_size, true).unwrap_or(0);
    scrub_object_headers(&mut parts.headers, Some(&SseInfo::of(&env, ctx.customer)));
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(plain));
    parts.headers.remove(http::header::CONTENT_RANGE);
    parts.status = StatusCode::OK;
    Ok(Response::from_parts(parts, super::empty_body()))
}

/// GetObjectAttributes of an encrypted bucket's object: plaintext sizes, no ciphertext checksums.
pub async fn object_attributes_response(
    resp: Response<ProxyBody>,
    segment: u32,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Ok(Response::from_parts(parts, body));
    }
    let raw = crate::store::read_xml(body, crate::store::Xml::Result).await?;
    let out =
        crate::s3::xml::rewrite_object_attributes(&raw, &|c| plaintext_len(c, segment, true).unwrap_or(c), &|c| {
            plaintext_len(c, segment, false).unwrap_or(c)
        })
        .ok_or_else(|| ProxyError::UpstreamProtocol("GetObjectAttributes result is not XML".into()))?;
    let drop: Vec<HeaderName> =
        parts.headers.keys().filter(|n| ChecksumAlgorithm::from_header_name(n.as_str()).is_some()).cloned().collect();
    for n in drop {
        parts.headers.remove(n);
    }
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, super::full_body(Bytes::from(out))))
}

/// A listing of an encrypted bucket → plaintext sizes (from ciphertext sizes alone), ciphertext checksums dropped.
/// Keys under `plaintext_prefixes` (policies that store plaintext) keep their listed size.
pub async fn listing_response(
    resp: Response<ProxyBody>,
    segment: u32,
    plaintext_prefixes: &[String],
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Ok(Response::from_parts(parts, body));
    }
    let collected = crate::store::read_xml(body, crate::store::Xml::Result).await?;
    let size = |key: &str, c: u64| {
        if plaintext_prefixes.iter().any(|p| key.starts_with(p.as_str())) {
            c
        } else {
            plaintext_len(c, segment, true).unwrap_or(c)
        }
    };
    let rewritten = crate::s3::xml::rewrite_listing(&collected, &size)
        .ok_or_else(|| ProxyError::UpstreamProtocol("listing is not XML".into()))?;
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
    Ok(Response::from_parts(parts, super::full_body(Bytes::from(rewritten))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str) -> ClientRange {
        let mut h = HeaderMap::new();
        h.insert(http::header::RANGE, v.parse().unwrap());
        ClientRange::parse(&h)
    }

    #[test]
    fn ranges_are_read_as_s3_reads_them() {
        assert_eq!(range("bytes=0-9"), ClientRange::From(0, Some(9)));
        assert_eq!(range("bytes=10-"), ClientRange::From(10, None));
        assert_eq!(range("bytes=-5"), ClientRange::Suffix(5));
        for ignored in ["bytes=5-1", "bytes=0-1,4-5", "items=0-1", "bytes=a-b", "bytes=-", "bytes=+1-2"] {
            assert_eq!(range(ignored), ClientRange::Whole, "{ignored}");
        }
    }

    #[test]
    fn upstream_ranges_cover_exactly_the_needed_segments() {
        let s = 65_536u32;
        let full = 65_536 + 32;
        assert_eq!(ClientRange::From(0, Some(9)).upstream_range(s).unwrap(), format!("bytes=0-{}", full - 1));
        assert_eq!(
            ClientRange::From(65_536, Some(65_536 * 2)).upstream_range(s).unwrap(),
            format!("bytes={full}-{}", 3 * full - 1)
        );
        assert_eq!(ClientRange::From(70_000, None).upstream_range(s).unwrap(), format!("bytes={full}-"));
        assert_eq!(ClientRange::Suffix(10).upstream_range(s).unwrap(), format!("bytes=-{}", 2 * full));
        // Client numbers up to 2^64 - 1 never overflow.
        assert_eq!(ClientRange::From(0, Some(u64::MAX)).upstream_range(s).unwrap(), "bytes=0-");
        assert_eq!(ClientRange::From(u64::MAX, None).upstream_range(s).unwrap(), format!("bytes={}-", i64::MAX));
        assert_eq!(
            ClientRange::From(u64::MAX - 1, Some(u64::MAX)).upstream_range(s).unwrap(),
            format!("bytes={}-", i64::MAX)
        );
        assert_eq!(ClientRange::Suffix(u64::MAX).upstream_range(s), None);
        assert_eq!(ClientRange::Suffix(u64::MAX).resolve(100).unwrap(), Some((0, 99)));
        assert_eq!(ClientRange::From(0, Some(u64::MAX)).resolve(100).unwrap(), Some((0, 99)));
        assert!(ClientRange::From(u64::MAX, None).resolve(100).is_err());
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((Some(10), 100)));
        assert_eq!(parse_content_range("bytes */100"), Some((None, 100)));
        assert_eq!(parse_content_range("junk"), None);
    }
}
