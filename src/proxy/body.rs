//! Request bodies on their way to the store. Object data (PutObject, UploadPart) is decoded (aws-chunked), checked
//! (signed hash, Content-MD5, checksums, trailers) and, for an encrypted object, encrypted as it streams; the store
//! client frames it. Small bodies (XML) are read whole and verified before anything is sent. One constructor makes
//! the encrypted upload of a stream, for uploads, copies and re-encryption alike.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Empty, Limited};

use crate::crypto::attributes::Attributes;
use crate::crypto::body::EncryptBody;
use crate::crypto::format::{SINGLE_PUT_PART, ciphertext_len};
use crate::crypto::keys::{DataKey, random_bytes};
use crate::error::ProxyError;
use crate::s3::checksum::ChecksumAlgorithm;
use crate::s3::error::BodyError;
use crate::s3::error::RequestError;
use crate::s3::op::S3Op;
use crate::sigv4::EMPTY_SHA256;
use crate::sigv4::chunked::{AwsChunkedBody, ChunkChain, ChunkedSpec, VerifiedChecksum};
use crate::sigv4::payload::{BodyMd5, CheckedBody, Checks};
use crate::sigv4::verify::{ChunkSigningContext, PayloadMode};
use crate::store::StoreBody;
use crate::upstream::UpstreamBody;

/// A client's request body, with its idle deadline.
pub(crate) type ClientBody = crate::util::body::IdleTimeout<ClientIncoming, ProxyError>;

/// A client's request body: what hyper gives, or the file field of a POST Object form; read to its end if dropped
/// unread while small.
pub(crate) type ClientIncoming = crate::util::body::DrainOnDrop<ClientStream>;

/// The bytes of a client's request body, whatever carried them.
pub(crate) type ClientStream = http_body_util::combinators::UnsyncBoxBody<Bytes, ProxyError>;

/// hyper's request body as a [`ClientStream`].
pub(crate) fn client_stream(body: hyper::body::Incoming) -> ClientStream {
    body.map_err(ProxyError::from).boxed_unsync()
}

/// Largest part S3 stores (ciphertext, here).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The encrypted upload of `len` plaintext bytes of `plain` under `dek` as stream `part` (0 for a single PUT), for
/// the store client to frame; a part whose ciphertext would pass S3's part limit is `EntityTooLarge`. `metered`
/// names the operation whose encryption time is reported.
pub(super) fn encrypted_upload(
    plain: UpstreamBody,
    len: u64,
    dek: &DataKey,
    part: u16,
    segment: u32,
    metered: Option<&'static str>,
) -> Result<StoreBody, ProxyError> {
    let cipher_len = ciphertext_len(len, segment);
    if part != SINGLE_PUT_PART && cipher_len > MAX_PART_SIZE {
        return Err(RequestError::EntityTooLarge.into());
    }
    let body = EncryptBody::new(plain, dek, part, random_bytes()?, segment, len);
    let body = match metered {
        Some(op) => body.metered(op).boxed_unsync(),
        None => body.boxed_unsync(),
    };
    Ok(StoreBody::Object { body, len: cipher_len })
}

/// What an object upload carries besides its body.
pub(super) struct Upload {
    /// Encryption of the body (PutObject, UploadPart on an encrypted bucket).
    pub encrypting: Option<Encrypting>,
    /// Signed chunks: the chain's seed.
    pub chunk_signing: Option<ChunkSigningContext>,
    /// Receives the trailer checksum once verified, to echo it.
    pub verified: VerifiedChecksum,
    /// Receives the plaintext's MD5 (SSE-S3 ETags), if asked for.
    pub md5: Option<BodyMd5>,
    /// An encrypted body of at most one segment is read whole before anything is sent (PutObject), so that its MD5
    /// and a trailer checksum are known in time to be sealed in the envelope.
    pub buffer_small: bool,
}

impl Upload {
    /// A body sent as it is (nothing to encrypt), its checksum verified into `verified`.
    pub fn plain(chunk_signing: Option<ChunkSigningContext>, verified: VerifiedChecksum) -> Upload {
        Upload { encrypting: None, chunk_signing, verified, md5: None, buffer_small: false }
    }
}

/// How an upload body is encrypted: the data key and the stream's part number (0 for PutObject).
pub(super) struct Encrypting {
    pub dek: Arc<DataKey>,
    pub part: u16,
    pub segment_size: u32,
}

/// Largest non-object body (XML: CompleteMultipartUpload, DeleteObjects, bucket configuration) buffered.
const MAX_SMALL_BODY: usize = 8 * 1024 * 1024;
/// Largest object body taken (S3's largest object, 5 TiB): anything the client declares beyond it is
/// `EntityTooLarge` before any size arithmetic.
const MAX_OBJECT_BODY: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// A declared object-body length, bounded by [`MAX_OBJECT_BODY`].
fn bounded(len: u64) -> Result<u64, ProxyError> {
    if len > MAX_OBJECT_BODY { Err(RequestError::EntityTooLarge.into()) } else { Ok(len) }
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(RequestError::InvalidArgument("Content-Length is not a number".into()).into()),
    }
}

pub(super) fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || declared_length(headers).ok().flatten().is_some_and(|n| n > 0)
}

fn empty_upstream_body() -> UpstreamBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The plaintext object data of a PutObject / UploadPart, decoded and checked, and its length.
fn object_data(
    payload: &PayloadMode,
    chunk_signing: Option<ChunkSigningContext>,
    verified: VerifiedChecksum,
    md5: Option<BodyMd5>,
    headers: &HeaderMap,
    body: ClientBody,
) -> Result<(UpstreamBody, u64), ProxyError> {
    let checks = Checks::new().from_headers(headers)?;
    let checks = match md5 {
        Some(out) => checks.md5_into(out),
        None => checks,
    };
    match payload {
        PayloadMode::Sha256(expected) => raw_data(Some(expected), checks, headers, body),
        PayloadMode::Unsigned => raw_data(None, checks, headers, body),
        PayloadMode::StreamingUnsignedTrailer | PayloadMode::StreamingSigned | PayloadMode::StreamingSignedTrailer => {
            chunked_data(payload, chunk_signing, verified, checks, headers, body)
        }
    }
}

/// A body sent as is, checked against the signed SHA-256 (`expected`) and `checks` (the checksum headers).
fn raw_data(
    expected: Option<&[u8; 32]>,
    checks: Checks,
    headers: &HeaderMap,
    body: ClientBody,
) -> Result<(UpstreamBody, u64), ProxyError> {
    let length = declared_length(headers)?;
    let body_present = headers.contains_key(http::header::TRANSFER_ENCODING) || length.is_some_and(|n| n > 0);
    if !body_present {
        if let Some(expected) = expected
            && *expected != EMPTY_SHA256
        {
            let (client, computed) = (hex::encode(expected), hex::encode(EMPTY_SHA256));
            return Err(BodyError::ContentSha256Mismatch { client, computed }.into());
        }
        let mut checks = checks;
        checks.finish()?;
        return Ok((empty_upstream_body(), 0));
    }
    let len = bounded(length.ok_or(RequestError::MissingContentLength)?)?;
    let checks = match expected {
        Some(e) => checks.sha256(*e),
        None => checks,
    };
    Ok((CheckedBody::new(body, checks).boxed_unsync(), len))
}

/// An aws-chunked body, decoded (its chunk signatures verified when signed) and checked.
fn chunked_data(
    payload: &PayloadMode,
    chunk_signing: Option<ChunkSigningContext>,
    verified: VerifiedChecksum,
    checks: Checks,
    headers: &HeaderMap,
    body: ClientBody,
) -> Result<(UpstreamBody, u64), ProxyError> {
    // The declared length is checked as a number, as for any body.
    declared_length(headers)?;
    let mut spec = ChunkedSpec::from_headers(headers)?;
    spec.verified = Some(verified);
    let signed_trailer = *payload == PayloadMode::StreamingSignedTrailer;
    if *payload != PayloadMode::StreamingUnsignedTrailer {
        let ctx = chunk_signing.ok_or(RequestError::InvalidRequest(
            "Signed aws-chunked payloads need Authorization-header SigV4".into(),
        ))?;
        spec.signed = Some(ChunkChain { ctx, signed_trailer });
    }
    if *payload == PayloadMode::StreamingSigned && spec.trailer.is_some() {
        let e = RequestError::InvalidRequest("x-amz-trailer needs STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER".into());
        return Err(e.into());
    }
    if spec.trailer.is_some() && headers.keys().any(|n| ChecksumAlgorithm::from_header_name(n.as_str()).is_some()) {
        let e = RequestError::InvalidRequest("x-amz-trailer and an x-amz-checksum- header cannot both be given".into());
        return Err(e.into());
    }
    let len = bounded(spec.decoded_length)?;
    let decoded = AwsChunkedBody::new(body, spec);
    if checks.is_empty() {
        Ok((decoded.boxed_unsync(), len))
    } else {
        Ok((CheckedBody::new(decoded, checks).boxed_unsync(), len))
    }
}

/// Chooses the body transform from the operation and the signed payload mode: object data decoded, checked and
/// (on an encrypted bucket) encrypted, for the store client to frame; a small body read whole and verified.
pub(super) async fn prepare_body(
    op: S3Op,
    payload: &PayloadMode,
    headers: &HeaderMap,
    body: ClientBody,
    upload: Upload,
) -> Result<StoreBody, ProxyError> {
    if op.carries_object_data() {
        let buffer = upload.buffer_small;
        let (data, len) = object_data(payload, upload.chunk_signing, upload.verified, upload.md5, headers, body)?;
        return match upload.encrypting {
            Some(enc) if buffer && len <= u64::from(enc.segment_size) => {
                // At most one segment (64 KiB by default): read and checked whole, its MD5 now known.
                let whole = data.collect().await?.to_bytes();
                let len = whole.len() as u64;
                let data = http_body_util::Full::new(whole).map_err(|never| match never {}).boxed_unsync();
                encrypted_upload(data, len, &enc.dek, enc.part, enc.segment_size, Some(op.as_str()))
            }
            Some(enc) => encrypted_upload(data, len, &enc.dek, enc.part, enc.segment_size, Some(op.as_str())),
            None => Ok(StoreBody::Object { body: data, len }),
        };
    }
    if payload.is_aws_chunked() {
        return Err(RequestError::InvalidRequest(
            "aws-chunked payloads are only allowed on PutObject and UploadPart".into(),
        )
        .into());
    }
    if !has_body(headers) {
        if let PayloadMode::Sha256(expected) = payload
            && *expected != EMPTY_SHA256
        {
            return Err(BodyError::ContentSha256Mismatch {
                client: hex::encode(expected),
                computed: hex::encode(EMPTY_SHA256),
            }
            .into());
        }
        return Ok(StoreBody::Empty);
    }
    // A small non-object body (XML): read it whole, check it, forward it with its own hash. Nothing reaches the
    // upstream before the body is complete and verified.
    Ok(StoreBody::Bytes(read_small_body(payload, headers, body).await?))
}

/// Reads a small non-object body (XML, at most `MAX_SMALL_BODY`) whole, verifying its signed hash and any
/// Content-MD5 / checksum header.
pub(super) async fn read_small_body(
    payload: &PayloadMode,
    headers: &HeaderMap,
    body: ClientBody,
) -> Result<Bytes, ProxyError> {
    if declared_length(headers)?.is_none() {
        return Err(RequestError::MissingContentLength.into());
    }
    let mut checks = Checks::new().from_headers(headers)?;
    if let PayloadMode::Sha256(expected) = payload {
        checks = checks.sha256(*expected);
    }
    let limited = Limited::new(CheckedBody::new(body, checks), MAX_SMALL_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(match e.downcast::<ProxyError>() {
            Ok(pe) => *pe,
            Err(_too_large) => RequestError::EntityTooLarge.into(),
        }),
    }
}

/// Echoes the plaintext checksum the proxy verified (a header or a trailer), as S3 does on PutObject and
/// UploadPart; the store's own checksum (of ciphertext, or of what the proxy sent) was removed before.
pub(super) fn echo_verified_checksum(out: &mut HeaderMap, request: &HeaderMap, verified: &VerifiedChecksum) {
    let from_header =
        request.iter().find_map(|(n, v)| ChecksumAlgorithm::from_header_name(n.as_str()).map(|alg| (alg, v.clone())));
    let found = from_header.or_else(|| {
        let g = verified.lock().ok()?;
        let (alg, value) = g.as_ref()?;
        HeaderValue::from_str(value).ok().map(|v| (*alg, v))
    });
    let stale: Vec<HeaderName> =
        out.keys().filter(|n| ChecksumAlgorithm::from_header_name(n.as_str()).is_some()).cloned().collect();
    for n in stale {
        out.remove(n);
    }
    if let Some((alg, value)) = found {
        out.insert(HeaderName::from_static(alg.header_name()), value);
        out.insert(HeaderName::from_static("x-amz-checksum-type"), HeaderValue::from_static("FULL_OBJECT"));
    }
}

/// A trailer checksum the body check verified (and recorded), as an attribute.
pub(super) fn verified_checksum(verified: &VerifiedChecksum) -> Option<(ChecksumAlgorithm, Vec<u8>)> {
    let g = verified.lock().ok()?;
    let (alg, value) = g.as_ref()?;
    Some((*alg, alg.decode_value(value).ok()?))
}

/// The attributes a client declared in its headers: the Content-MD5 (kept for SSE-S3 objects, whose ETag it is)
/// and the full-object checksum header. Both are verified against the body before the upload completes.
pub(super) fn declared_attributes(headers: &http::HeaderMap, keep_md5: bool) -> Attributes {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let md5 = headers
        .get(crate::s3::headers::CONTENT_MD5)
        .filter(|_| keep_md5)
        .and_then(|v| b64.decode(v.as_bytes()).ok())
        .and_then(|d| <[u8; 16]>::try_from(d.as_slice()).ok());
    let checksum = headers.iter().find_map(|(n, v)| {
        let alg = ChecksumAlgorithm::from_header_name(n.as_str())?;
        Some((alg, alg.decode_value(v.to_str().ok()?).ok()?))
    });
    Attributes { md5, checksum, ..Attributes::default() }
}
