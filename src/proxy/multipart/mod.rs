//! Multipart uploads on encrypted buckets, and reads by part number. Stateless: the upload ID handed to the client
//! carries the data key wrapped under the KEK and bound to the upstream upload and its protection (docs/FORMAT.md
//! §7), so any replica serves any request of an upload.
//!
//! - this file: upload IDs, CreateMultipartUpload, UploadPart, Abort and ListParts;
//! - `part_read`: GET / HEAD by part number;
//! - `complete`: CompleteMultipartUpload, the seal (a metadata-only self-copy recording the layout), the keepalive
//!   of a slow Complete;
//! - `repack`: re-encrypting an upload whose parts are not aligned;
//! - `own`: uploads and copies of the proxy's own at the store (re-encryption, copies by parts).

mod complete;
mod own;
mod part_read;
mod repack;

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Response, StatusCode};

use super::Proxy;
use super::body::{Encrypting, Upload, echo_verified_checksum, prepare_body};
use super::front::{Admitted, RequestCtx};
use super::object::{SseInfo, present_object};
use super::response::ProxyBody;
use crate::crypto::envelope::{Envelope, Multipart, check_client_metadata};
use crate::crypto::format::{MAX_PARTS, plaintext_len};
use crate::crypto::keys::{DataKey, ObjectIdentity};
use crate::crypto::{Crypto, Protection, UploadProtection};
use crate::error::ProxyError;
use crate::s3::headers::{X_AMZ_CHECKSUM_ALGORITHM, X_AMZ_CHECKSUM_TYPE};
use crate::s3::op::S3Op;
use crate::s3::query::Query;
use crate::s3::sse::CustomerKey;
use crate::s3::xml;
use crate::sigv4::chunked::VerifiedChecksum;
use crate::store::{StoreRequest, Xml, read_xml};

pub(super) use super::body::MAX_PART_SIZE;
pub(super) use part_read::{Located, PartRead};

/// An upload the client named by an s3crypt upload ID.
pub struct OpenUpload {
    pub upstream_id: String,
    pub dek: Arc<DataKey>,
    /// The protection the upload ID binds (never what the store says).
    pub protection: UploadProtection,
    /// The client's SSE-C key (SSE-C uploads: every part and the Complete bring it).
    pub customer: Option<Arc<CustomerKey>>,
}

impl OpenUpload {
    /// The SSE response headers of a part of this upload.
    pub fn sse_info(&self, crypto: &Crypto) -> SseInfo {
        let bucket_key = matches!(self.protection, UploadProtection::Kms { bucket_key: true, .. });
        SseInfo { bucket_key, ..SseInfo::from_ref(&self.protection.kek_ref(crypto.keyring()), self.customer.as_ref()) }
    }
}

/// Opens the upload ID of an UploadPart, UploadPartCopy or Complete and points the store's query at the store's
/// upload.
pub(super) fn open_upload(
    crypto: &Crypto,
    query: &mut Query,
    id: &ObjectIdentity,
    customer: Option<&Arc<CustomerKey>>,
) -> Result<OpenUpload, ProxyError> {
    let client_id = query.upload_id().ok_or(ProxyError::NoSuchUpload)?;
    let opened = crypto.open_upload_id(client_id, id, customer)?;
    query.set_upload_id(&opened.upstream_id);
    Ok(OpenUpload {
        upstream_id: opened.upstream_id,
        dek: opened.dek,
        protection: opened.protection,
        customer: customer.cloned(),
    })
}

/// Abort, ListParts and copies into a plaintext upload need no key: points the store's query at the store's upload
/// (raw IDs, as ListMultipartUploads shows them, pass as they are). Returns the client's ID.
pub(super) fn unwrap_upload_id(query: &mut Query) -> Option<String> {
    let client_id = query.upload_id()?.to_owned();
    query.set_upload_id(Crypto::upstream_upload_id(&client_id));
    Some(client_id)
}

/// Bytes of the metadata budget the envelope of a sealed multipart object may take: what CreateMultipartUpload
/// reserves, so the seal always fits.
pub fn sealed_envelope_len(open: &Envelope) -> usize {
    let widest = Multipart::Sealed { parts: MAX_PARTS, part_size: MAX_PART_SIZE };
    Envelope { multipart: Some(widest), ..open.clone() }.metadata_len()
}

/// The upstream CreateMultipartUpload answered: hand the client an s3crypt upload ID.
async fn create_response(
    resp: Response<ProxyBody>,
    crypto: &Crypto,
    dek: &DataKey,
    env: &Envelope,
    id: &ObjectIdentity,
    client_checksum_algorithm: Option<HeaderValue>,
    customer: Option<&Arc<CustomerKey>>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    let raw = read_xml(body, Xml::Result).await?;
    let (_, top) = xml::records(&raw, &["InitiateMultipartUploadResult", "Upload"])
        .ok_or_else(|| ProxyError::UpstreamProtocol("CreateMultipartUpload result is not XML".into()))?;
    let upstream_id = xml::field(&top, "UploadId")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ProxyError::UpstreamProtocol("CreateMultipartUpload result without UploadId".into()))?;
    let upload_id = crypto.upload_id(dek, id, upstream_id, env, customer)?;
    let out = xml::replace_text(&raw, &["InitiateMultipartUploadResult", "UploadId"], &upload_id)
        .ok_or_else(|| ProxyError::UpstreamProtocol("CreateMultipartUpload result is not XML".into()))?;
    parts.headers.remove(X_AMZ_CHECKSUM_ALGORITHM);
    if let Some(alg) = client_checksum_algorithm {
        parts.headers.insert(X_AMZ_CHECKSUM_ALGORITHM, alg);
    }
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, super::response::full_body(Bytes::from(out))))
}

/// ListParts: plaintext part sizes, the client's upload ID, no ciphertext checksums.
async fn list_parts_response(
    resp: Response<ProxyBody>,
    segment: u32,
    client_id: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Ok(Response::from_parts(parts, body));
    }
    let raw = read_xml(body, Xml::Result).await?;
    // Part ETags in their opaque form (which a Complete maps back to the store's).
    let opaque = |_: &str, e: &str| crate::proxy::etag::opaque(e);
    let sized = xml::rewrite_listing(&raw, &|_, c| plaintext_len(c, segment, false).unwrap_or(c), &opaque)
        .ok_or_else(|| ProxyError::UpstreamProtocol("ListParts result is not XML".into()))?;
    let out = xml::replace_text(&sized, &["ListPartsResult", "UploadId"], client_id)
        .ok_or_else(|| ProxyError::UpstreamProtocol("ListParts result is not XML".into()))?;
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, super::response::full_body(Bytes::from(out))))
}

impl Proxy {
    /// CreateMultipartUpload on an encrypted bucket: the upload's data key, its envelope (state `open`) on the
    /// store's upload, and an s3crypt upload ID for the client.
    pub(super) async fn create_upload(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let crypto = Arc::clone(&self.inner.crypto);
        let protection = crypto.protection(&ctx.identity.bucket, &ctx.identity.key, &ctx.sse).await?;
        if matches!(protection, Protection::Plaintext) {
            return self.forward(ctx, r).await;
        }
        let Admitted { head, body } = r;
        let (dek, env) = crypto.new_object_key(&ctx.identity, &protection, Some(Multipart::Open)).await?;
        check_client_metadata(&head.headers, sealed_envelope_len(&env))?;
        let upload = Upload::plain(ctx.chunk_signing.take(), Default::default());
        let store_body = prepare_body(ctx.op, &ctx.payload, &head.headers, body, upload).await?;
        // The client's checksum settings describe plaintext, which the proxy verifies itself. Parts go upstream with
        // a CRC32 trailer of their ciphertext, without declaring an algorithm for the upload: stores then do not
        // require (plaintext or ciphertext) checksums at Complete.
        let request = StoreRequest::new(ctx.op, head.method.clone(), &ctx.target)
            .client_query(&ctx.query)
            .client_headers(&head.headers)
            .without(&X_AMZ_CHECKSUM_ALGORITHM)
            .without(&X_AMZ_CHECKSUM_TYPE)
            .sse(ctx.store_sse(&head.headers).as_ref())
            .pairs(env.to_headers())
            .body(store_body);
        let resp = self.store().send(request).await?;
        let r = super::response::map_response(resp, ctx.op, &ctx.client, false).await?;
        let client_alg = head.headers.get(X_AMZ_CHECKSUM_ALGORITHM).cloned();
        let customer = ctx.customer();
        let mut r = create_response(r, &crypto, &dek, &env, &ctx.identity, client_alg, customer).await?;
        present_object(&mut r, Some(&SseInfo::of(&env, customer)));
        Ok(r)
    }

    /// UploadPart on an encrypted bucket: the part encrypted under the upload's data key, as stream `partNumber`.
    pub(super) async fn upload_part(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let crypto = Arc::clone(&self.inner.crypto);
        let Admitted { head, body } = r;
        let upload = open_upload(&crypto, &mut ctx.query, &ctx.identity, ctx.sse.customer())?;
        let part = ctx.query.required_part_number()?;
        let verified = VerifiedChecksum::default();
        let encrypting = Encrypting { dek: Arc::clone(&upload.dek), part, segment_size: crypto.segment_size };
        let sse = upload.sse_info(&crypto);
        // SSE-S3 parts answer with their plaintext MD5, as S3's do (SDKs compare it with what they sent).
        let md5 = (sse.shows_md5() && crypto.md5_etags()).then(crate::sigv4::payload::BodyMd5::default);
        let body_of = Upload {
            encrypting: Some(encrypting),
            chunk_signing: ctx.chunk_signing.take(),
            verified: verified.clone(),
            md5: md5.clone(),
            buffer_small: false,
        };
        let store_body = prepare_body(ctx.op, &ctx.payload, &head.headers, body, body_of).await?;
        let request = StoreRequest::new(ctx.op, head.method.clone(), &ctx.target)
            .client_query(&ctx.query)
            .client_headers(&head.headers)
            .body(store_body);
        let resp = self.store().send(request).await?;
        let mut r = super::response::map_response(resp, ctx.op, &ctx.client, false).await?;
        present_object(&mut r, Some(&sse));
        crate::proxy::etag::present(&mut r, md5.as_ref().and_then(|m| m.get()));
        echo_verified_checksum(r.headers_mut(), &head.headers, &verified);
        Ok(r)
    }

    /// AbortMultipartUpload and ListParts on an encrypted bucket: the store's upload behind the client's ID; ListParts
    /// answers with plaintext part sizes and the client's ID.
    pub(super) async fn upload_by_id(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, body } = r;
        let client_id = unwrap_upload_id(&mut ctx.query).unwrap_or_default();
        let upload = Upload::plain(ctx.chunk_signing.take(), Default::default());
        let store_body = prepare_body(ctx.op, &ctx.payload, &head.headers, body, upload).await?;
        let request = StoreRequest::new(ctx.op, head.method.clone(), &ctx.target)
            .client_query(&ctx.query)
            .client_headers(&head.headers)
            .body(store_body);
        let resp = self.store().send(request).await?;
        let ok = resp.status().is_success();
        let mut r = super::response::map_response(resp, ctx.op, &ctx.client, false).await?;
        if ctx.op == S3Op::ListParts && ok {
            return list_parts_response(r, self.inner.crypto.segment_size, &client_id).await;
        }
        crate::crypto::envelope::strip_reserved(r.headers_mut());
        Ok(r)
    }
}
