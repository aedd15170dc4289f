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

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Response, StatusCode};

use super::Proxy;
use super::body::{Encrypting, Upload, declared_attributes, echo_verified_checksum, prepare_body, verified_checksum};
use super::front::{Admitted, RequestCtx};
use super::object::{SseInfo, present_object};
use super::response::ProxyBody;
use crate::crypto::attributes::Attributes;
use crate::crypto::envelope::{Envelope, Multipart, check_client_metadata};
use crate::crypto::format::{MAX_PARTS, plaintext_len};
use crate::crypto::keys::{DataKey, ObjectIdentity};
use crate::crypto::{Crypto, Protection, UploadProtection};
use crate::error::ProxyError;
use crate::s3::checksum::MultipartChecksum;
use crate::s3::headers::{X_AMZ_CHECKSUM_ALGORITHM, X_AMZ_CHECKSUM_TYPE, header_str};
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
    /// The checksum the upload declared at Create (bound in its ID).
    pub checksum: Option<MultipartChecksum>,
}

impl OpenUpload {
    /// An upload ID the keyring opened, with the request's SSE-C key if any.
    fn of(opened: crate::crypto::OpenedUpload, customer: Option<&Arc<CustomerKey>>) -> OpenUpload {
        OpenUpload {
            upstream_id: opened.upstream_id,
            dek: opened.dek,
            protection: opened.protection,
            checksum: opened.checksum,
            customer: customer.cloned(),
        }
    }

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
    Ok(OpenUpload::of(opened, customer))
}

/// Abort, ListParts and copies into a plaintext upload need no key: points the store's query at the store's upload
/// (raw IDs, as ListMultipartUploads shows them, pass as they are). Returns the client's ID.
pub(super) fn unwrap_upload_id(query: &mut Query) -> Option<String> {
    let client_id = query.upload_id()?.to_owned();
    query.set_upload_id(Crypto::upstream_upload_id(&client_id));
    Some(client_id)
}

/// An ETag without its quotes (how part records and their AAD name the store's ETag of a part).
pub(super) fn bare_etag(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// Bytes of the metadata budget the envelope of a sealed multipart object may take: what CreateMultipartUpload
/// reserves, so the seal always fits.
pub fn sealed_envelope_len(open: &Envelope) -> usize {
    let widest = Multipart::Sealed { parts: MAX_PARTS, part_size: MAX_PART_SIZE };
    // The largest attributes a Complete may seal: a multipart ETag and a SHA-256 composite checksum.
    let largest = Attributes {
        multipart_md5: Some((MAX_PARTS, [0; 16])),
        composite: Some((MAX_PARTS, crate::s3::checksum::ChecksumAlgorithm::Sha256, vec![0; 32])),
        ..Attributes::default()
    };
    let sealed_len = crate::crypto::keys::sealed_wrap_len(largest.encode().len());
    Envelope { multipart: Some(widest), attributes: Some(vec![0; sealed_len]), ..open.clone() }.metadata_len()
}

/// The upstream CreateMultipartUpload's answer: the store's upload ID, and the document to rewrite.
async fn created_upload(resp: Response<ProxyBody>) -> Result<(http::response::Parts, Bytes, String), ProxyError> {
    let (parts, body) = resp.into_parts();
    let raw = read_xml(body, Xml::Result).await?;
    let (_, top) = xml::records(&raw, &["InitiateMultipartUploadResult", "Upload"])
        .ok_or_else(|| ProxyError::UpstreamProtocol("CreateMultipartUpload result is not XML".into()))?;
    let upstream_id = xml::field(&top, "UploadId")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ProxyError::UpstreamProtocol("CreateMultipartUpload result without UploadId".into()))?
        .to_owned();
    Ok((parts, raw, upstream_id))
}

/// The client's answer to a Create: its s3crypt upload ID in the store's document, its SSE headers, and the
/// checksum it declared.
fn create_response(
    mut parts: http::response::Parts,
    raw: &[u8],
    upload_id: &str,
    sse: &SseInfo,
    checksum: Option<MultipartChecksum>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let out = xml::replace_text(raw, &["InitiateMultipartUploadResult", "UploadId"], upload_id)
        .ok_or_else(|| ProxyError::UpstreamProtocol("CreateMultipartUpload result is not XML".into()))?;
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    let mut r = Response::from_parts(parts, super::response::full_body(Bytes::from(out)));
    present_object(&mut r, Some(sse));
    if let Some(c) = checksum {
        let h = r.headers_mut();
        h.insert(X_AMZ_CHECKSUM_ALGORITHM, HeaderValue::from_static(c.algorithm.display_name()));
        let kind = if c.full_object { "FULL_OBJECT" } else { "COMPOSITE" };
        h.insert(X_AMZ_CHECKSUM_TYPE, HeaderValue::from_static(kind));
    }
    Ok(r)
}

/// ListParts: plaintext part sizes, the client's upload ID, no ciphertext checksums. `md5s`: the plaintext MD5 of
/// SSE-S3 parts by the store's ETag of them (from their authenticated records).
async fn list_parts_response(
    resp: Response<ProxyBody>,
    segment: u32,
    client_id: &str,
    md5s: &HashMap<String, [u8; 16]>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Ok(Response::from_parts(parts, body));
    }
    let raw = read_xml(body, Xml::Result).await?;
    // Part ETags as UploadPart answered them: an SSE-S3 part's plaintext MD5, else the opaque form (which a
    // Complete maps back to the store's).
    let opaque = |_: &str, e: &str| match md5s.get(bare_etag(e)) {
        Some(m) => crate::proxy::etag::md5_etag(m),
        None => crate::proxy::etag::opaque(e),
    };
    let sized = xml::rewrite_listing(&raw, &|_, c| plaintext_len(c, segment, false).unwrap_or(c), &opaque)
        .ok_or_else(|| ProxyError::UpstreamProtocol("ListParts result is not XML".into()))?;
    let out = xml::replace_text(&sized, &["ListPartsResult", "UploadId"], client_id)
        .ok_or_else(|| ProxyError::UpstreamProtocol("ListParts result is not XML".into()))?;
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, super::response::full_body(Bytes::from(out))))
}

/// `encoding-type=url`: keys in the result are percent-encoded.
fn query_says_url(query: &Query) -> bool {
    query.get("encoding-type").is_some_and(|v| v.eq_ignore_ascii_case("url"))
}

/// At most this many records of open uploads are read at once for one ListMultipartUploads page.
const UPLOAD_RECORD_READS: usize = 16;

impl Proxy {
    /// ListMultipartUploads on an encrypted bucket: the store's page, with each upload's ID as its client was given
    /// it (from the upload's record, shown only once this keyring is seen to have made it for that key and store
    /// upload; otherwise the store's ID, which Abort and ListParts accept too). An `upload-id-marker` may be
    /// either.
    pub(super) async fn list_uploads(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, .. } = r;
        ctx.query.map_upload_ids(crate::s3::query::UPLOAD_ID_MARKER, |m| Crypto::upstream_upload_id(m).to_owned());
        let request = StoreRequest::new(ctx.op, head.method.clone(), &ctx.target)
            .client_query(&ctx.query)
            .client_headers(&head.headers);
        let resp = self.store().send(request).await?;
        let r = super::response::map_response(resp, ctx.op, &ctx.client, false).await?;
        if r.status() != StatusCode::OK {
            return Ok(r);
        }
        let (mut parts, body) = r.into_parts();
        let raw = read_xml(body, Xml::Result).await?;
        let path = ["ListMultipartUploadsResult", "Upload"];
        let (uploads, _) =
            xml::records(&raw, &path).ok_or_else(|| ProxyError::UpstreamProtocol("ListMultipartUploads".into()))?;
        let listed: Vec<(String, String)> = uploads
            .iter()
            .map(|u| {
                let listed_key = xml::field(u, "Key").unwrap_or("");
                let key = if query_says_url(&ctx.query) {
                    String::from_utf8_lossy(&crate::util::uri::percent_decode(listed_key.as_bytes())).into_owned()
                } else {
                    listed_key.to_owned()
                };
                (key, xml::field(u, "UploadId").unwrap_or("").to_owned())
            })
            .collect();
        let client_ids = self.client_upload_ids(&ctx.identity.bucket, &listed).await;
        let out = xml::replace_in_records(&raw, &path, "UploadId", &|i| client_ids.get(i).cloned().flatten())
            .ok_or_else(|| ProxyError::UpstreamProtocol("ListMultipartUploads result is not XML".into()))?;
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
        Ok(Response::from_parts(parts, super::response::full_body(Bytes::from(out))))
    }

    /// The client's IDs of listed uploads `(key, store upload ID)`, where recorded and made by this keyring for
    /// exactly that upload.
    async fn client_upload_ids(&self, bucket: &str, listed: &[(String, String)]) -> Vec<Option<String>> {
        let mut out = vec![None; listed.len()];
        for (chunk_no, chunk) in listed.chunks(UPLOAD_RECORD_READS).enumerate() {
            let mut reads = tokio::task::JoinSet::new();
            for (i, (key, upstream_id)) in chunk.iter().enumerate() {
                let (this, bucket, key, upstream_id) =
                    (self.clone(), bucket.to_owned(), key.clone(), upstream_id.clone());
                reads.spawn(async move {
                    let recorded = this.records().upload_id(&bucket, &upstream_id).await.ok().flatten()?;
                    let id = ObjectIdentity { bucket, key };
                    let made = this.inner.crypto.made_upload_id(&recorded, &id, &upstream_id);
                    made.then_some((i, recorded))
                });
            }
            while let Some(done) = reads.join_next().await {
                if let Ok(Some((i, id))) = done {
                    out[chunk_no * UPLOAD_RECORD_READS + i] = Some(id);
                }
            }
        }
        out
    }

    /// The plaintext MD5s of an SSE-S3 upload's parts, by the store's ETag of each, from their records (those that
    /// open under the upload's key for their part). Empty for other uploads, and for IDs that do not open without
    /// an SSE-C key.
    async fn part_md5s(&self, id: &ObjectIdentity, client_id: &str) -> HashMap<String, [u8; 16]> {
        let crypto = &self.inner.crypto;
        let Ok(opened) = crypto.open_upload_id(client_id, id, None) else { return HashMap::new() };
        let upload = OpenUpload::of(opened, None);
        if !(upload.sse_info(crypto).shows_md5() && crypto.md5_etags()) {
            return HashMap::new();
        }
        let Ok(records) = self.records().parts(&id.bucket, &upload.upstream_id).await else { return HashMap::new() };
        records
            .iter()
            .filter_map(|r| {
                let a = Attributes::open_part(&r.sealed, &upload.dek, id, &upload.upstream_id, r.part, &r.store_etag)?;
                Some((r.store_etag.clone(), a.md5?))
            })
            .collect()
    }

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
        let checksum = MultipartChecksum::from_headers(
            header_str(&head.headers, &X_AMZ_CHECKSUM_ALGORITHM),
            header_str(&head.headers, &X_AMZ_CHECKSUM_TYPE),
        )?;
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
        if !r.status().is_success() {
            return Ok(r);
        }
        let (parts, raw, upstream_id) = created_upload(r).await?;
        let customer = ctx.customer();
        let upload_id = crypto.upload_id(&dek, &ctx.identity, &upstream_id, &env, customer, checksum)?;
        // The client's ID, for ListMultipartUploads. Without it the upload is not handed out (and not left behind).
        if let Err(e) = self.records().put_upload_id(&ctx.identity.bucket, &upstream_id, &upload_id).await {
            let abort = StoreRequest::new(S3Op::AbortMultipartUpload, Method::DELETE, &ctx.target)
                .param(crate::s3::query::UPLOAD_ID, &upstream_id);
            if let Err(a) = self.store().expect_ok(abort).await {
                tracing::warn!(error = %a, "could not abort an upload whose record could not be written");
            }
            return Err(e);
        }
        create_response(parts, &raw, &upload_id, &SseInfo::of(&env, customer), checksum)
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
        let store_etag = header_str(resp.headers(), &http::header::ETAG).map(str::to_owned);
        let stored = resp.status().is_success();
        let mut r = super::response::map_response(resp, ctx.op, &ctx.client, false).await?;
        let md5 = md5.as_ref().and_then(|m| m.get()).copied();
        if stored && let Some(store_etag) = store_etag {
            // The part's plaintext MD5 and checksum, sealed, for the Complete (which maps the client's ETags and
            // checksums with them). Without the record the part is not acknowledged: the client sends it again.
            let mut attrs = declared_attributes(&head.headers, sse.shows_md5());
            attrs.md5 = md5.or(attrs.md5).filter(|_| sse.shows_md5());
            attrs.checksum = attrs.checksum.or_else(|| verified_checksum(&verified));
            if !attrs.is_empty() {
                let (bucket, up) = (&ctx.identity.bucket, &upload.upstream_id);
                let sealed = attrs.seal_part(&upload.dek, &ctx.identity, up, part.into(), bare_etag(&store_etag))?;
                self.records().put_part(bucket, up, part.into(), &store_etag, &sealed).await?;
            }
        }
        present_object(&mut r, Some(&sse));
        crate::proxy::etag::present(&mut r, md5.as_ref());
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
            let md5s = self.part_md5s(&ctx.identity, &client_id).await;
            return list_parts_response(r, self.inner.crypto.segment_size, &client_id, &md5s).await;
        }
        if ctx.op == S3Op::AbortMultipartUpload && ok {
            let upstream_id = Crypto::upstream_upload_id(&client_id);
            self.records().forget(&ctx.identity.bucket, upstream_id).await;
        }
        crate::crypto::envelope::strip_reserved(r.headers_mut());
        Ok(r)
    }
}
