//! Multipart uploads on encrypted buckets, and reads by part number. Stateless: the upload ID handed to the client
//! carries the data key wrapped under the KEK and bound to the upstream upload (docs/FORMAT.md, "Multipart
//! uploads"), so any replica serves any request of an upload.
//!
//! Complete checks the layout of the parts (every part but the last the same size, a multiple of the segment
//! size), completes upstream, then seals the object: a server-side copy onto itself whose metadata records the
//! layout under the data-key wrap. Until sealed an object is not served. A slow Complete answers 200 at once and
//! keeps the connection alive with spaces until the result, as S3 does.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::encrypted::SseInfo;
use super::{Proxy, ProxyBody, RequestView};
use crate::crypto::body::{DecryptBody, EncryptBody, ReadPlan};
use crate::crypto::envelope::{Envelope, Multipart, USER_METADATA_LIMIT};
use crate::crypto::format::{MAX_PARTS, META_PREFIX, plaintext_len};
use crate::crypto::format::{ciphertext_len, segment_count};
use crate::crypto::keys::{DataKey, ObjectIdentity, random_bytes};
use crate::crypto::stream::Layout;
use crate::crypto::{Crypto, UploadProtection};
use crate::error::{BoxError, ProxyError};
use crate::s3::Target;
use crate::s3::headers::{
    X_AMZ_CHECKSUM_ALGORITHM, X_AMZ_COPY_SOURCE, X_AMZ_COPY_SOURCE_IF_MATCH, X_AMZ_COPY_SOURCE_RANGE,
    X_AMZ_METADATA_DIRECTIVE, X_AMZ_MP_OBJECT_SIZE, X_AMZ_MP_PARTS_COUNT, X_AMZ_VERSION_ID, header_str,
};
use crate::s3::op::S3Op;
use crate::s3::sse::CustomerKey;
use crate::s3::xml;
use crate::sigv4::verify::Authenticated;
use crate::store::{StoreBody, StoreRequest, StoreSse, Xml, result_field};

/// Largest part S3 stores (ciphertext, here).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Part size of a re-encrypted (repacked) upload, unless 10000 parts need larger ones.
const REPACK_PART_SIZE: u64 = 16 * 1024 * 1024;
/// UploadPartCopy requests in flight at once when sealing an object larger than the CopyObject limit.
const COPY_CONCURRENCY: usize = 8;
/// Headers of an object that a copy with `x-amz-metadata-directive: REPLACE` must restate to keep them.
pub(super) const KEPT_ON_REPLACE: [HeaderName; 10] = [
    CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    http::header::CONTENT_DISPOSITION,
    http::header::CONTENT_LANGUAGE,
    http::header::CACHE_CONTROL,
    http::header::EXPIRES,
    HeaderName::from_static("x-amz-website-redirect-location"),
    HeaderName::from_static("x-amz-storage-class"),
    HeaderName::from_static("x-amz-object-lock-mode"),
    HeaderName::from_static("x-amz-object-lock-retain-until-date"),
];

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

fn query_value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn set_query_value(query: &mut [(String, String)], name: &str, value: &str) {
    for (k, v) in query.iter_mut() {
        if k == name {
            *v = value.to_owned();
        }
    }
}

/// Opens the upload ID of an UploadPart / Complete and points the upstream query at the upstream upload.
pub fn open_upload(
    crypto: &Crypto,
    query: &mut [(String, String)],
    id: &ObjectIdentity,
    customer: Option<&Arc<CustomerKey>>,
) -> Result<OpenUpload, ProxyError> {
    let client_id = query_value(query, "uploadId").ok_or(ProxyError::NoSuchUpload)?;
    let opened = crypto.open_upload_id(client_id, id, customer)?;
    set_query_value(query, "uploadId", &opened.upstream_id);
    Ok(OpenUpload {
        upstream_id: opened.upstream_id,
        dek: opened.dek,
        protection: opened.protection,
        customer: customer.cloned(),
    })
}

/// Abort and ListParts need no key: point the upstream query at the upstream upload (raw IDs, as
/// ListMultipartUploads shows them, pass as they are). Returns the client's ID.
pub fn unwrap_upload_id(query: &mut [(String, String)]) -> Option<String> {
    let client_id = query_value(query, "uploadId")?.to_owned();
    set_query_value(query, "uploadId", Crypto::upstream_upload_id(&client_id));
    Some(client_id)
}

/// The part number of an UploadPart, 1..=10000.
pub fn part_number(query: &[(String, String)]) -> Result<u16, ProxyError> {
    query_value(query, "partNumber")
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(ProxyError::InvalidArgument("Part number must be an integer between 1 and 10000, inclusive".into()))
}

/// Bytes of the metadata budget the envelope of a sealed multipart object may take: what CreateMultipartUpload
/// reserves, so the seal always fits.
pub fn sealed_envelope_len(open: &Envelope) -> usize {
    let widest = Multipart::Sealed { parts: MAX_PARTS, part_size: MAX_PART_SIZE };
    Envelope { multipart: Some(widest), ..open.clone() }.metadata_len()
}

/// The upstream CreateMultipartUpload answered: hand the client an s3crypt upload ID.
pub async fn create_response(
    resp: Response<ProxyBody>,
    crypto: &Crypto,
    dek: &DataKey,
    env: &Envelope,
    id: &ObjectIdentity,
    client_checksum_algorithm: Option<HeaderValue>,
    customer: Option<&Arc<CustomerKey>>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    let raw = crate::store::read_xml(body, Xml::Result).await?;
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
    Ok(Response::from_parts(parts, super::full_body(Bytes::from(out))))
}

/// ListParts: plaintext part sizes, the client's upload ID, no ciphertext checksums.
pub async fn list_parts_response(
    resp: Response<ProxyBody>,
    segment: u32,
    client_id: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Ok(Response::from_parts(parts, body));
    }
    let raw = crate::store::read_xml(body, Xml::Result).await?;
    let sized = xml::rewrite_listing(&raw, &|_, c| plaintext_len(c, segment, false).unwrap_or(c))
        .ok_or_else(|| ProxyError::UpstreamProtocol("ListParts result is not XML".into()))?;
    let out = xml::replace_text(&sized, &["ListPartsResult", "UploadId"], client_id)
        .ok_or_else(|| ProxyError::UpstreamProtocol("ListParts result is not XML".into()))?;
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, super::full_body(Bytes::from(out))))
}

// === reads by part number ========================================================================================

/// A GET by part number, turned into a plaintext range.
pub struct PartRead {
    pub range: super::encrypted::ClientRange,
    /// `x-amz-mp-parts-count` (multipart objects only).
    pub parts_count: Option<u32>,
    /// The ETag the range was computed for: the GET is pinned to it.
    pub etag: Option<HeaderValue>,
}

/// What a request by part number needs next.
pub enum Located {
    /// Answered already (a HEAD, an error status, a plaintext object).
    Done(Response<ProxyBody>),
    /// A GET: read this range.
    Read(PartRead),
}

impl Proxy {
    /// GET / HEAD `?partNumber=N` on an encrypted bucket: a HEAD upstream gives the layout, from which part N's
    /// plaintext range follows. `partNumber` is taken out of the upstream query.
    pub(super) async fn locate_part(
        &self,
        op: crate::s3::op::S3Op,
        headers: &HeaderMap,
        target: &Target,
        auth: &mut Authenticated,
        identity: &ObjectIdentity,
        customer: Option<&Arc<CustomerKey>>,
    ) -> Result<Located, ProxyError> {
        use super::encrypted::ClientRange;
        let n = part_number(&auth.query)?;
        if headers.contains_key(http::header::RANGE) {
            return Err(ProxyError::InvalidRequest(
                "Cannot specify both Range header and partNumber query parameter".into(),
            ));
        }
        let original_query = auth.query.clone();
        auth.query.retain(|(k, _)| k != "partNumber");
        let probe = self
            .client_read(headers, target, &auth.query, S3Op::HeadObject)
            .without(&http::header::RANGE)
            .without(&super::encrypted::X_AMZ_CHECKSUM_MODE);
        let head = self.store().send(probe).await?;
        if !head.status().is_success() {
            return Ok(Located::Done(super::response::map_response(head, op, &auth.client, true).await?));
        }
        let crypto = &self.inner.crypto;
        let ctx = super::encrypted::ReadCtx {
            crypto,
            id: identity,
            customer,
            legacy: crypto.policy(&identity.bucket, &identity.key).legacy_objects,
        };
        let Some(env) = super::encrypted::envelope_or_policy(head.headers(), ctx.legacy)? else {
            // A plaintext object (legacy_objects = "passthrough"): the store answers as asked.
            auth.query = original_query;
            let read = if op == S3Op::HeadObject { S3Op::HeadObject } else { S3Op::GetObject };
            let resp = self.store().send(self.client_read(headers, target, &auth.query, read)).await?;
            return Ok(Located::Done(
                super::response::map_response(resp, op, &auth.client, read == S3Op::HeadObject).await?,
            ));
        };
        let layout = env.layout().map_err(|_| ProxyError::UnsealedObject)?;
        let cipher_total: u64 = header_str(head.headers(), &CONTENT_LENGTH)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ProxyError::UpstreamProtocol("HEAD without Content-Length".into()))?;
        if !layout.admits(cipher_total, env.segment_size) {
            return Err(ProxyError::ObjectIntegrity("the stored object has an impossible length"));
        }
        let total = plaintext_len(cipher_total, env.segment_size, true).unwrap_or(0);
        let (first, last, parts_count) = match layout {
            crate::crypto::stream::Layout::Multipart { parts, per_part } => {
                if u32::from(n) > parts {
                    return Err(ProxyError::InvalidPartNumber);
                }
                let size = per_part * u64::from(env.segment_size);
                let first = u64::from(n - 1) * size;
                (first, (first + size).min(total), Some(parts))
            }
            crate::crypto::stream::Layout::Single
            | crate::crypto::stream::Layout::Part(_)
            | crate::crypto::stream::Layout::Unsealed => {
                if n != 1 {
                    return Err(ProxyError::InvalidPartNumber);
                }
                (0, total, None)
            }
        };
        let etag = head.headers().get(http::header::ETAG).cloned();
        let empty = last == first && total > 0;
        if empty && op == S3Op::GetObject {
            // An empty (last) part: nothing to read, but the layout that says so is authenticated first.
            crypto.open_envelope(&env, identity, customer).await?;
        }
        if op == S3Op::HeadObject || empty {
            let mut r = super::encrypted::head_response(head, &ctx).await?;
            let h = r.headers_mut();
            h.insert(CONTENT_LENGTH, HeaderValue::from(last - first));
            if last > first {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                let cr = format!("bytes {first}-{}/{total}", last - 1);
                r.headers_mut().insert(http::header::CONTENT_RANGE, header_value(&cr)?);
            }
            if let Some(c) = parts_count {
                r.headers_mut().insert(X_AMZ_MP_PARTS_COUNT, HeaderValue::from(c));
            }
            return Ok(Located::Done(r));
        }
        let range = if last > first { ClientRange::From(first, Some(last - 1)) } else { ClientRange::Whole };
        Ok(Located::Read(PartRead { range, parts_count, etag }))
    }
}

// === Complete ====================================================================================================

/// A part as the upstream lists it.
#[derive(Debug, Clone)]
struct StoredPart {
    number: u32,
    etag: Option<String>,
    cipher_size: u64,
}

/// The parts a CompleteMultipartUpload names, in order: (part number, ETag).
fn parse_complete_request(body: &[u8]) -> Result<Vec<(u32, String)>, ProxyError> {
    let (records, _) = xml::records(body, &["CompleteMultipartUpload", "Part"])
        .ok_or(ProxyError::MalformedXml("CompleteMultipartUpload body"))?;
    let mut parts = Vec::with_capacity(records.len());
    for r in &records {
        let n = xml::field(r, "PartNumber")
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| (1..=MAX_PARTS).contains(n))
            .ok_or(ProxyError::MalformedXml("PartNumber"))?;
        let etag = xml::field(r, "ETag").ok_or(ProxyError::MalformedXml("ETag"))?;
        parts.push((n, etag.to_owned()));
    }
    if parts.is_empty() {
        return Err(ProxyError::MalformedXml("no parts"));
    }
    if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(ProxyError::InvalidPartOrder);
    }
    Ok(parts)
}

pub(super) fn etag_eq(a: &str, b: &str) -> bool {
    a.trim().trim_matches('"') == b.trim().trim_matches('"')
}

/// How a completed upload is laid out in segments, decided from its parts' sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartsLayout {
    /// Every part but the last has `part_size` plaintext bytes, a multiple of the segment size; part numbers are
    /// 1..=`parts`.
    Aligned { parts: u32, part_size: u64 },
    /// Anything else.
    Misaligned,
}

/// The layout of parts of these ciphertext sizes (part numbers in order).
pub fn plan_layout(parts: &[(u32, u64)], segment: u32) -> Result<(PartsLayout, u64), ProxyError> {
    let mut plain = Vec::with_capacity(parts.len());
    for (n, c) in parts {
        if *c > MAX_PART_SIZE {
            return Err(ProxyError::InvalidPart(format!("Part {n} is larger than a part can be.").into()));
        }
        let p = plaintext_len(*c, segment, false)
            .ok_or_else(|| ProxyError::InvalidPart(format!("Part {n} was not uploaded through the gateway.").into()))?;
        plain.push(p);
    }
    // Part sizes come from the store's listing: their sum must not overflow.
    let total = plain
        .iter()
        .try_fold(0u64, |t, p| t.checked_add(*p))
        .ok_or_else(|| ProxyError::UpstreamProtocol("ListParts sizes overflow".into()))?;
    let contiguous = parts.iter().enumerate().all(|(i, (n, _))| *n as usize == i + 1);
    let first = plain[0];
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    let uniform = plain[..plain.len() - 1].iter().all(|p| *p == first) && *plain.last().unwrap_or(&0) <= first;
    let aligned = first > 0 && first % u64::from(segment) == 0;
    let layout = if parts.len() == 1 {
        // One part: a single stream of part 1; any size is "aligned" (its one part is the last).
        let size = plain[0].max(1).div_ceil(u64::from(segment)) * u64::from(segment);
        if contiguous { PartsLayout::Aligned { parts: 1, part_size: size } } else { PartsLayout::Misaligned }
    } else if contiguous && uniform && aligned {
        PartsLayout::Aligned { parts: count, part_size: first }
    } else {
        PartsLayout::Misaligned
    };
    Ok((layout, total))
}

/// A just-completed object as a HEAD showed it: how to address and pin it, its headers and (open) envelope.
struct Completed {
    /// The ETag every read of it is pinned to.
    pin: HeaderValue,
    head_headers: HeaderMap,
    open: Envelope,
}

/// What the sealed object ended as.
struct Sealed {
    etag: String,
    version_id: Option<String>,
    /// The SSE headers of the sealed object.
    sse: Option<SseInfo>,
}

impl Proxy {
    /// Starts an upload of the proxy's own at the store (re-encryption, copies by parts); returns its ID.
    async fn create_upstream_upload(&self, target: &Target, headers: HeaderMap) -> Result<String, ProxyError> {
        let create = StoreRequest::new(S3Op::CreateMultipartUpload, Method::POST, target)
            .param("uploads", "")
            .headers(headers)
            .sse(self.upstream_sse(target).as_ref());
        let (_, body) = self.store().xml(create, Xml::Result).await?;
        result_field(&body, "InitiateMultipartUploadResult", "UploadId")
    }

    /// Aborts an upload of the proxy's own (after a failure; best effort).
    async fn abort_upstream_upload(&self, target: &Target, upload_id: &str) {
        let abort = StoreRequest::new(S3Op::AbortMultipartUpload, Method::DELETE, target).param("uploadId", upload_id);
        let _ = self.store().send(abort).await;
    }

    /// Completes an upload of the proxy's own with these parts' ETags (part numbers from 1); returns the result's
    /// headers and ETag.
    async fn complete_upstream_upload(
        &self,
        target: &Target,
        upload_id: &str,
        etags: impl Iterator<Item = (u32, String)>,
    ) -> Result<(HeaderMap, String), ProxyError> {
        let parts: Vec<(u32, String)> = etags.collect();
        let complete = StoreRequest::new(S3Op::CompleteMultipartUpload, Method::POST, target)
            .param("uploadId", upload_id)
            .body(StoreBody::Bytes(complete_xml(&parts)));
        let (h, body) = self.store().xml(complete, Xml::SlowResult).await?;
        let etag = result_field(&body, "CompleteMultipartUploadResult", "ETag")?;
        Ok((h, etag))
    }

    /// Every part of an upstream upload (ListParts, all pages).
    async fn list_all_parts(
        &self,
        target: &Target,
        upstream_id: &str,
    ) -> Result<BTreeMap<u32, Vec<StoredPart>>, ProxyError> {
        let mut out: BTreeMap<u32, Vec<StoredPart>> = BTreeMap::new();
        let mut marker: Option<String> = None;
        for _page in 0..=MAX_PARTS {
            let mut list = StoreRequest::new(S3Op::ListParts, Method::GET, target).param("uploadId", upstream_id);
            if let Some(m) = &marker {
                list = list.param("part-number-marker", m);
            }
            let (_, body) = self.store().xml(list, Xml::Result).await?;
            let (records, top) = xml::records(&body, &["ListPartsResult", "Part"])
                .ok_or_else(|| ProxyError::UpstreamProtocol("ListParts result is not XML".into()))?;
            for r in &records {
                let number = xml::field(r, "PartNumber").and_then(|v| v.parse::<u32>().ok());
                let size = xml::field(r, "Size").and_then(|v| v.parse::<u64>().ok());
                let (Some(number), Some(cipher_size)) = (number, size) else {
                    return Err(ProxyError::UpstreamProtocol("ListParts part without number or size".into()));
                };
                let etag = xml::field(r, "ETag").filter(|e| !e.is_empty()).map(str::to_owned);
                // SeaweedFS lists every upload of a retried part: keep them all, Complete picks by ETag.
                out.entry(number).or_default().push(StoredPart { number, etag, cipher_size });
            }
            let truncated = xml::field(&top, "IsTruncated").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let next = xml::field(&top, "NextPartNumberMarker").filter(|v| !v.is_empty()).map(str::to_owned);
            match (truncated, next) {
                (true, Some(n)) if Some(&n) != marker.as_ref() => marker = Some(n),
                _other => return Ok(out),
            }
        }
        Ok(out)
    }

    /// CompleteMultipartUpload on an encrypted bucket: check the parts, complete upstream, seal.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn complete_upload(
        &self,
        headers: &HeaderMap,
        body: super::ClientBody,
        target: &Target,
        auth: &Authenticated,
        identity: &ObjectIdentity,
        upload: OpenUpload,
        view: &RequestView,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let xml_body = super::read_small_body(auth, headers, body).await?;
        let requested = parse_complete_request(&xml_body)?;
        let stored = self.list_all_parts(target, &upload.upstream_id).await?;
        let mut chosen = Vec::with_capacity(requested.len());
        for (n, etag) in &requested {
            // The listed upload of part n with this ETag (stores that list no ETags: the last one listed).
            let found = stored.get(n).and_then(|uploads| {
                uploads.iter().rev().find(|p| p.etag.as_deref().is_none_or(|stored_etag| etag_eq(stored_etag, etag)))
            });
            let part = found.ok_or_else(|| {
                ProxyError::InvalidPart(
                    format!("Part {n} could not be found. It may not have been uploaded, or its ETag is wrong.").into(),
                )
            })?;
            chosen.push(part.clone());
        }
        let segment = self.inner.crypto.segment_size;
        let sizes: Vec<(u32, u64)> = chosen.iter().map(|p| (p.number, p.cipher_size)).collect();
        let (layout, plain_total) = plan_layout(&sizes, segment)?;
        if let Some(declared) = header_str(headers, &X_AMZ_MP_OBJECT_SIZE)
            && declared.trim().parse::<u64>().ok() != Some(plain_total)
        {
            return Err(ProxyError::InvalidRequest(
                format!("x-amz-mp-object-size {declared} does not match the parts' total size {plain_total}").into(),
            ));
        }
        let mut complete_headers = HeaderMap::new();
        for name in [http::header::IF_MATCH, http::header::IF_NONE_MATCH] {
            if let Some(v) = headers.get(&name) {
                complete_headers.insert(name, v.clone());
            }
        }
        let request_xml = complete_xml(&requested);

        let this = self.clone();
        let (work_target, work_identity) = (target.clone(), identity.clone());
        let (target, identity) = (target.clone(), identity.clone());
        let host = header_str(headers, &http::header::HOST).unwrap_or("").to_owned();
        let work = async move {
            let sealed = this
                .complete_and_seal(
                    &work_target,
                    &work_identity,
                    &upload,
                    complete_headers,
                    request_xml,
                    &chosen,
                    layout,
                    plain_total,
                )
                .await?;
            Ok::<_, ProxyError>(sealed)
        };
        let render = move |sealed: Sealed| -> (HeaderMap, Bytes) {
            let location = format!("https://{host}{}", target.upstream_path(false));
            let body = xml::document(
                "CompleteMultipartUploadResult",
                &[
                    ("Location", location),
                    ("Bucket", identity.bucket.clone()),
                    ("Key", identity.key.clone()),
                    ("ETag", sealed.etag.clone()),
                ],
                &[],
            );
            let mut h = HeaderMap::new();
            if let Some(v) = sealed.version_id.and_then(|v| HeaderValue::from_str(&v).ok()) {
                h.insert(X_AMZ_VERSION_ID, v);
            }
            super::encrypted::scrub_object_headers(&mut h, sealed.sse.as_ref());
            (h, body)
        };
        self.slow_response(work, render, view).await
    }

    /// Completes the upstream upload, then seals the object in place (aligned layouts) or re-encrypts it into an
    /// aligned layout (anything else).
    #[allow(clippy::too_many_arguments)]
    async fn complete_and_seal(
        &self,
        target: &Target,
        identity: &ObjectIdentity,
        upload: &OpenUpload,
        complete_headers: HeaderMap,
        request_xml: Bytes,
        parts_list: &[StoredPart],
        layout: PartsLayout,
        plain_total: u64,
    ) -> Result<Sealed, ProxyError> {
        let complete = StoreRequest::new(S3Op::CompleteMultipartUpload, Method::POST, target)
            .param("uploadId", &upload.upstream_id)
            .headers(complete_headers)
            .body(StoreBody::Bytes(request_xml));
        let (h, body) = self.store().xml(complete, Xml::SlowResult).await?;
        let (_, top) = xml::records(&body, &["CompleteMultipartUploadResult", "Part"])
            .ok_or_else(|| ProxyError::UpstreamProtocol("CompleteMultipartUpload result is not XML".into()))?;
        let etag = xml::field(&top, "ETag")
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .or_else(|| header_str(&h, &http::header::ETAG).map(str::to_owned))
            .ok_or_else(|| ProxyError::UpstreamProtocol("CompleteMultipartUpload result without ETag".into()))?;
        let version = header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned);
        match layout {
            PartsLayout::Aligned { parts, part_size } => {
                let state = Multipart::Sealed { parts, part_size };
                self.seal(target, identity, upload, &etag, version, parts_list, state).await
            }
            PartsLayout::Misaligned => {
                self.repack(target, identity, upload, &etag, version, parts_list, plain_total).await
            }
        }
    }

    /// Re-encrypts a completed object whose parts are not aligned into a new object of aligned parts, under a new
    /// data key, sealed from the start (the layout is known before writing). The source is read part by part
    /// (each part is one stream), pinned to `etag`, and verified as it is read.
    #[allow(clippy::too_many_arguments)]
    async fn repack(
        &self,
        target: &Target,
        identity: &ObjectIdentity,
        upload: &OpenUpload,
        etag: &str,
        version: Option<String>,
        parts_list: &[StoredPart],
        plain_total: u64,
    ) -> Result<Sealed, ProxyError> {
        let crypto = &self.inner.crypto;
        let segment = crypto.segment_size;
        let s = u64::from(segment);
        let version = version.filter(|v| v != "null");
        let Completed { pin, head_headers, open } = self.head_completed(target, &version, etag).await?;
        let protection = crypto
            .sealing_protection(&open, identity, &upload.dek, &upload.protection, upload.customer.as_ref())
            .await?;
        let dek = &upload.dek;

        // The new layout: parts of REPACK_PART_SIZE (more if 10000 would not hold the object).
        let part_size = REPACK_PART_SIZE.max(plain_total.div_ceil(u64::from(MAX_PARTS)).div_ceil(s) * s);
        let parts_out = u32::try_from(plain_total.div_ceil(part_size).max(1)).unwrap_or(MAX_PARTS);
        let state = Multipart::Sealed { parts: parts_out, part_size };
        let (new_dek, env) = crypto.new_object_key(identity, &protection, Some(state)).await?;
        let new_dek = Arc::new(new_dek);
        let headers = replace_headers(&head_headers, &env)?;
        let upload_id = self.create_upstream_upload(target, headers).await?;

        let pumped = self
            .pump_parts(target, version.as_deref(), &pin, dek, parts_list, &new_dek, &upload_id, part_size, plain_total)
            .await;
        let etags = match pumped {
            Ok(e) => e,
            Err(e) => {
                self.abort_upstream_upload(target, &upload_id).await;
                return Err(e);
            }
        };
        let numbered = etags.into_iter().enumerate().map(|(i, e)| (i as u32 + 1, e));
        let (h, new_etag) = self.complete_upstream_upload(target, &upload_id, numbered).await?;
        let sealed = Sealed {
            etag: new_etag.to_owned(),
            version_id: header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned),
            sse: Some(SseInfo::of(&env, upload.customer.as_ref())),
        };
        self.drop_version(target, version.as_deref(), &sealed).await;
        Ok(sealed)
    }

    /// Reads the source parts in order (decrypting each as its own stream) and writes their plaintext, cut into
    /// parts of `part_size` and encrypted under `new_dek`, to the upload `upload_id`. Returns the new parts' ETags.
    #[allow(clippy::too_many_arguments)]
    async fn pump_parts(
        &self,
        target: &Target,
        version: Option<&str>,
        pin: &HeaderValue,
        dek: &Arc<DataKey>,
        parts_list: &[StoredPart],
        new_dek: &Arc<DataKey>,
        upload_id: &str,
        part_size: u64,
        plain_total: u64,
    ) -> Result<Vec<String>, ProxyError> {
        let segment = self.inner.crypto.segment_size;
        let mut etags = Vec::new();
        let mut writer: Option<PartWriter> = None;
        let mut written = 0u64;
        let mut offset = 0u64;
        for p in parts_list {
            let plain = plaintext_len(p.cipher_size, segment, false)
                .ok_or(ProxyError::ObjectIntegrity("a part has an impossible length"))?;
            let range = format!("bytes={offset}-{}", offset + p.cipher_size - 1);
            offset += p.cipher_size;
            let read = StoreRequest::get(target)
                .version(version)
                .header(http::header::IF_MATCH, pin.clone())
                .header(http::header::RANGE, header_value(&range)?);
            let resp = self.store().send(read).await?;
            if !resp.status().is_success() {
                let (rp, b) = resp.into_parts();
                return Err(crate::store::reply::error(rp.status, &rp.headers, b, false).await);
            }
            let part = u16::try_from(p.number).map_err(|_| ProxyError::ObjectIntegrity("part number"))?;
            let plan = ReadPlan {
                segment_size: segment,
                cipher_total: p.cipher_size,
                first_segment: 0,
                end_segment: segment_count(plain, segment),
                discard: 0,
                skip: 0,
                take: plain,
            };
            let mut source = DecryptBody::new(resp.into_body(), Arc::clone(dek), Layout::Part(part), plan);
            while let Some(frame) = source.frame().await {
                let Ok(mut data) = frame?.into_data() else { continue };
                while !data.is_empty() {
                    if writer.is_none() {
                        let n = etags.len() as u32 + 1;
                        let len = part_size.min(plain_total - written);
                        writer = Some(self.start_part(target, upload_id, n, new_dek, len)?);
                    }
                    let Some(w) = writer.as_mut() else { break };
                    let take = usize::try_from(w.remaining.min(data.len() as u64)).unwrap_or(data.len());
                    w.send(data.split_to(take)).await?;
                    if w.remaining == 0
                        && let Some(done) = writer.take()
                    {
                        written += done.len;
                        etags.push(done.finish().await?);
                    }
                }
            }
        }
        if plain_total == 0 {
            let w = self.start_part(target, upload_id, 1, new_dek, 0)?;
            etags.push(w.finish().await?);
        }
        if writer.is_some() || written != plain_total {
            return Err(ProxyError::ObjectIntegrity("the parts are shorter than listed"));
        }
        Ok(etags)
    }

    /// Starts uploading part `n` of `len` plaintext bytes, fed through the returned writer.
    fn start_part(
        &self,
        target: &Target,
        upload_id: &str,
        n: u32,
        dek: &Arc<DataKey>,
        len: u64,
    ) -> Result<PartWriter, ProxyError> {
        let segment = self.inner.crypto.segment_size;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let part = u16::try_from(n).map_err(|_| ProxyError::Internal("part number".into()))?;
        let salt = random_bytes()?;
        let cipher_len = ciphertext_len(len, segment);
        let plain = ChannelBody { rx, remaining: len };
        let encrypted = EncryptBody::new(plain, dek, part, salt, segment, len).boxed_unsync();
        let put = StoreRequest::new(S3Op::UploadPart, Method::PUT, target)
            .param("partNumber", &n.to_string())
            .param("uploadId", upload_id)
            .body(StoreBody::Object { body: encrypted, len: cipher_len });
        let store = self.store().clone();
        let task = tokio::spawn(async move {
            let h = store.expect_ok(put).await?;
            header_str(&h, &http::header::ETAG)
                .map(str::to_owned)
                .ok_or_else(|| ProxyError::UpstreamProtocol("UploadPart without ETag".into()))
        });
        Ok(PartWriter { tx: Some(tx), task, remaining: len, len })
    }

    /// HEADs the object a Complete just made, pinned to its ETag (and version).
    async fn head_completed(
        &self,
        target: &Target,
        version: &Option<String>,
        etag: &str,
    ) -> Result<Completed, ProxyError> {
        let pin = header_value(etag)?;
        let head = StoreRequest::head(target).version(version.as_deref()).header(http::header::IF_MATCH, pin.clone());
        let head_headers = self.store().expect_ok(head).await?;
        let open = Envelope::from_headers(&head_headers)
            .map_err(|e| ProxyError::ObjectIntegrity(e.0))?
            .ok_or(ProxyError::ObjectIntegrity("the completed object has no envelope"))?;
        Ok(Completed { pin, head_headers, open })
    }

    /// The store's own SSE on top, when the policy of the object `target` asks for it.
    pub(super) fn upstream_sse(&self, target: &Target) -> Option<StoreSse> {
        let (bucket, key) = (target.bucket.as_deref().unwrap_or(""), target.key.as_deref().unwrap_or(""));
        self.inner.crypto.policy(bucket, key).upstream_sse.map(StoreSse::Own)
    }

    /// Deletes the version `old` of the target once `sealed` replaced it (versioned buckets only).
    async fn drop_version(&self, target: &Target, old: Option<&str>, sealed: &Sealed) {
        let Some(old) = old else { return };
        if sealed.version_id.as_deref() == Some(old) {
            return;
        }
        let delete = StoreRequest::new(S3Op::DeleteObject, Method::DELETE, target).param("versionId", old);
        match self.store().send(delete).await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "could not delete the unsealed object version"),
            Err(e) => tracing::warn!(error = %e, "could not delete the unsealed object version"),
        }
    }

    /// Rewrites the metadata of the just-completed object (pinned by `etag` and `version`) so that its envelope
    /// records `state`, by a server-side copy onto itself; removes the unsealed version if the bucket keeps
    /// versions.
    #[allow(clippy::too_many_arguments)]
    async fn seal(
        &self,
        target: &Target,
        identity: &ObjectIdentity,
        upload: &OpenUpload,
        etag: &str,
        version: Option<String>,
        parts_list: &[StoredPart],
        state: Multipart,
    ) -> Result<Sealed, ProxyError> {
        let version = version.filter(|v| v != "null");
        let Completed { head_headers, open, .. } = self.head_completed(target, &version, etag).await?;
        let crypto = &self.inner.crypto;
        let protection = crypto
            .sealing_protection(&open, identity, &upload.dek, &upload.protection, upload.customer.as_ref())
            .await?;
        let sealed_env = crypto.wrap_for(&upload.dek, identity, &protection, Some(state)).await?;
        let cipher_total: u64 = parts_list.iter().map(|p| p.cipher_size).sum();

        let headers = replace_headers(&head_headers, &sealed_env)?;
        let mut source = target.upstream_path(false);
        if let Some(v) = &version {
            source.push_str("?versionId=");
            crate::sigv4::canonical::uri_encode(v.as_bytes(), true, &mut source);
        }
        let sealed = if cipher_total <= self.inner.settings.max_copy_size {
            let (h, etag) = self.self_copy_request(target, headers, &source, etag).await?;
            Sealed { etag, version_id: header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned), sse: None }
        } else {
            self.copy_by_parts(target, headers, &source, etag, parts_list).await?
        };
        let sealed = Sealed { sse: Some(SseInfo::of(&sealed_env, upload.customer.as_ref())), ..sealed };
        self.drop_version(target, version.as_deref(), &sealed).await;
        Ok(sealed)
    }

    /// A metadata-replacing server-side copy of `source` (the target itself, maybe a version of it) onto the target,
    /// pinned to `etag`, with the new metadata `headers`: returns the result's headers and the new ETag.
    pub(super) async fn self_copy_request(
        &self,
        target: &Target,
        headers: HeaderMap,
        source: &str,
        etag: &str,
    ) -> Result<(HeaderMap, String), ProxyError> {
        let copy = StoreRequest::new(S3Op::CopyObject, Method::PUT, target)
            .headers(headers)
            .sse(self.upstream_sse(target).as_ref())
            .header(X_AMZ_COPY_SOURCE, header_value(source)?)
            .header(X_AMZ_COPY_SOURCE_IF_MATCH, header_value(etag)?)
            .header(X_AMZ_METADATA_DIRECTIVE, HeaderValue::from_static("REPLACE"));
        let (h, body) = self.store().xml(copy, Xml::SlowResult).await?;
        let etag = result_field(&body, "CopyObjectResult", "ETag")?;
        Ok((h, etag))
    }

    /// Copies an object of `len` stored bytes onto itself (or `target`) part by part, in 1 GiB ranges, with new
    /// metadata in `headers`: for objects over the CopyObject limit. Returns the new ETag.
    pub(super) async fn copy_in_ranges(
        &self,
        target: &Target,
        headers: HeaderMap,
        source: &str,
        etag: &str,
        len: u64,
    ) -> Result<String, ProxyError> {
        const RANGE: u64 = 1024 * 1024 * 1024;
        let parts: Vec<StoredPart> = (0..len.div_ceil(RANGE))
            .map(|i| StoredPart {
                number: u32::try_from(i + 1).unwrap_or(MAX_PARTS),
                etag: None,
                cipher_size: RANGE.min(len - i * RANGE),
            })
            .collect();
        Ok(self.copy_by_parts(target, headers, source, etag, &parts).await?.etag)
    }

    /// Copies `source` onto the target part by part (one UploadPartCopy per original part): for objects over the
    /// CopyObject limit. `headers` carry the new metadata.
    async fn copy_by_parts(
        &self,
        target: &Target,
        headers: HeaderMap,
        source: &str,
        etag: &str,
        parts_list: &[StoredPart],
    ) -> Result<Sealed, ProxyError> {
        let upload_id = self.create_upstream_upload(target, headers).await?;
        let result = self.copy_parts(target, source, etag, parts_list, &upload_id).await;
        match result {
            Ok(sealed) => Ok(sealed),
            Err(e) => {
                self.abort_upstream_upload(target, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn copy_parts(
        &self,
        target: &Target,
        source: &str,
        etag: &str,
        parts_list: &[StoredPart],
        upload_id: &str,
    ) -> Result<Sealed, ProxyError> {
        let mut offset = 0u64;
        let mut jobs = Vec::with_capacity(parts_list.len());
        for (i, p) in parts_list.iter().enumerate() {
            jobs.push((i as u32 + 1, offset, p.cipher_size));
            offset += p.cipher_size;
        }
        let mut etags: BTreeMap<u32, String> = BTreeMap::new();
        let mut set = tokio::task::JoinSet::new();
        let mut pending = jobs.into_iter();
        loop {
            while set.len() < COPY_CONCURRENCY {
                let Some((n, start, len)) = pending.next() else { break };
                let store = self.store().clone();
                let range = format!("bytes={start}-{}", start + len.max(1) - 1);
                let copy = StoreRequest::new(S3Op::UploadPartCopy, Method::PUT, target)
                    .param("partNumber", &n.to_string())
                    .param("uploadId", upload_id)
                    .header(X_AMZ_COPY_SOURCE, header_value(source)?)
                    .header(X_AMZ_COPY_SOURCE_IF_MATCH, header_value(etag)?)
                    .header(X_AMZ_COPY_SOURCE_RANGE, header_value(&range)?);
                set.spawn(async move {
                    let (_, body) = store.xml(copy, Xml::SlowResult).await?;
                    let etag = result_field(&body, "CopyPartResult", "ETag")?;
                    Ok::<_, ProxyError>((n, etag))
                });
            }
            match set.join_next().await {
                None => break,
                Some(Ok(Ok((n, e)))) => {
                    etags.insert(n, e);
                }
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(join)) => return Err(ProxyError::Internal(format!("part copy task: {join}"))),
            }
        }
        let (h, etag) = self.complete_upstream_upload(target, upload_id, etags.into_iter()).await?;
        Ok(Sealed {
            etag: etag.to_owned(),
            version_id: header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned),
            sse: None,
        })
    }

    /// Runs `work`; if it takes longer than the keepalive setting, answers 200 at once and sends a space every
    /// interval until the result: its document, or an `<Error>` document (S3 clients look for both in a 200).
    async fn slow_response<F, R>(
        &self,
        work: F,
        render: R,
        view: &RequestView,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        F: Future<Output = Result<Sealed, ProxyError>> + Send + 'static,
        R: FnOnce(Sealed) -> (HeaderMap, Bytes) + Send + 'static,
    {
        let interval = self.inner.settings.slow_response_keepalive;
        let mut task = tokio::spawn(work);
        let finished = tokio::time::timeout(interval, &mut task).await;
        if let Ok(joined) = finished {
            let sealed = joined.map_err(|e| ProxyError::Internal(format!("complete task: {e}")))??;
            let (headers, body) = render(sealed);
            let mut resp = Response::new(super::full_body(body.clone()));
            *resp.headers_mut() = headers;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
            resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            return Ok(resp);
        }
        let resource = view.resource.clone();
        let request_id = view.request_id.clone();
        let finish = Box::pin(async move {
            match task.await {
                Ok(Ok(sealed)) => render(sealed).1,
                Ok(Err(e)) => e.to_xml(&resource, &request_id),
                Err(join) => ProxyError::Internal(format!("complete task: {join}")).to_xml(&resource, &request_id),
            }
        });
        let body = KeepaliveBody {
            started: false,
            finish: Some(finish),
            ticker: tokio::time::interval(interval.max(Duration::from_millis(100))),
        };
        let mut resp = Response::new(body.boxed_unsync());
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        Ok(resp)
    }
}

/// The headers a REPLACE copy needs to keep the object as it is, but with `envelope`.
pub(super) fn replace_headers(head: &HeaderMap, envelope: &Envelope) -> Result<HeaderMap, ProxyError> {
    let mut out = HeaderMap::new();
    for name in KEPT_ON_REPLACE {
        if let Some(v) = head.get(&name) {
            out.insert(name, v.clone());
        }
    }
    crate::store::strip_aws_chunked_encoding(&mut out);
    if let Some(v) = head.get("x-amz-object-lock-legal-hold") {
        out.insert(HeaderName::from_static("x-amz-object-lock-legal-hold"), v.clone());
    }
    let mut used = 0;
    for (name, value) in head {
        let n = name.as_str();
        if n.starts_with("x-amz-meta-") && !n.starts_with(META_PREFIX) {
            used += n.len() - "x-amz-meta-".len() + value.len();
            out.append(name.clone(), value.clone());
        }
    }
    if used + envelope.metadata_len() > USER_METADATA_LIMIT {
        return Err(ProxyError::Internal("sealed envelope does not fit the metadata budget".into()));
    }
    for (n, v) in envelope.to_headers() {
        out.insert(n, v);
    }
    Ok(out)
}

pub(super) fn header_value(s: &str) -> Result<HeaderValue, ProxyError> {
    HeaderValue::from_str(s).map_err(|_| ProxyError::Internal("value not usable in a header".into()))
}

/// The upstream CompleteMultipartUpload body: part numbers and the client's ETags, no checksums (the client's
/// describe plaintext; the upload declares no algorithm upstream).
fn complete_xml(requested: &[(u32, String)]) -> Bytes {
    let groups: Vec<(&str, Vec<(&str, String)>)> = requested
        .iter()
        .map(|(n, etag)| ("Part", vec![("PartNumber", n.to_string()), ("ETag", etag.clone())]))
        .collect();
    xml::document("CompleteMultipartUpload", &[], &groups)
}

/// Feeds one part being written during a repack.
struct PartWriter {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: tokio::task::JoinHandle<Result<String, ProxyError>>,
    /// Plaintext bytes still to send.
    remaining: u64,
    len: u64,
}

impl PartWriter {
    async fn send(&mut self, b: Bytes) -> Result<(), ProxyError> {
        self.remaining -= b.len() as u64;
        let tx = self.tx.as_ref().ok_or_else(|| ProxyError::Internal("part writer closed".into()))?;
        if tx.send(b).await.is_err() {
            // The upload ended early: its own error says why.
            self.tx = None;
            return match (&mut self.task).await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => Err(ProxyError::Internal("part upload ended before its body".into())),
                Err(e) => Err(ProxyError::Internal(format!("part upload task: {e}"))),
            };
        }
        Ok(())
    }

    /// Closes the body and waits for the part's ETag.
    async fn finish(mut self) -> Result<String, ProxyError> {
        self.tx = None;
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ProxyError::Internal(format!("part upload task: {e}"))),
        }
    }
}

/// A request body fed by a channel: exactly `remaining` bytes, or an error if the sender goes away early.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(None) => {
                Poll::Ready(Some(Err(ProxyError::Internal("the repacked part's source ended early".into()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Strips the XML declaration a document starts with (the keepalive body already sent one).
fn without_declaration(doc: &Bytes) -> Bytes {
    match doc.iter().position(|b| *b == b'>') {
        Some(end) if doc.starts_with(b"<?xml") => doc.slice(end + 1..),
        _other => doc.clone(),
    }
}

type Finish = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// A 200 body: the XML declaration, a space every tick while the work runs, then its result document.
struct KeepaliveBody {
    started: bool,
    finish: Option<Finish>,
    ticker: tokio::time::Interval,
}

impl Body for KeepaliveBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.started {
            self.started = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            )))));
        }
        let Some(finish) = self.finish.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(doc) = finish.as_mut().poll(cx) {
            self.finish = None;
            return Poll::Ready(Some(Ok(Frame::data(without_declaration(&doc)))));
        }
        match self.ticker.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b" "))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.started && self.finish.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u32 = 65_536;
    const MIB: u64 = 1024 * 1024;

    fn c(p: u64) -> u64 {
        crate::crypto::format::ciphertext_len(p, S)
    }

    #[test]
    fn aligned_uniform_parts_get_a_sealable_layout_and_anything_else_does_not() {
        let l = |parts: &[(u32, u64)]| plan_layout(parts, S).unwrap();
        assert_eq!(
            l(&[(1, c(8 * MIB)), (2, c(8 * MIB)), (3, c(3))]),
            (PartsLayout::Aligned { parts: 3, part_size: 8 * MIB }, 16 * MIB + 3)
        );
        assert_eq!(l(&[(1, c(5 * MIB)), (2, c(5 * MIB))]).0, PartsLayout::Aligned { parts: 2, part_size: 5 * MIB });
        assert_eq!(l(&[(1, c(8 * MIB)), (2, c(0))]).0, PartsLayout::Aligned { parts: 2, part_size: 8 * MIB });
        assert_eq!(l(&[(1, c(100))]).0, PartsLayout::Aligned { parts: 1, part_size: 65_536 });
        assert_eq!(l(&[(1, c(0))]).0, PartsLayout::Aligned { parts: 1, part_size: 65_536 });
        for misaligned in [
            vec![(1, c(5 * MIB + 1)), (2, c(5 * MIB + 1)), (3, c(10))],
            vec![(1, c(5_000_000)), (2, c(5_000_000))],
            vec![(1, c(8 * MIB)), (2, c(16 * MIB)), (3, c(1))],
            vec![(1, c(8 * MIB)), (2, c(8 * MIB + 65_536))],
            vec![(1, c(8 * MIB)), (3, c(8 * MIB))],
            vec![(2, c(1))],
        ] {
            assert_eq!(l(&misaligned).0, PartsLayout::Misaligned, "{misaligned:?}");
        }
        assert_eq!(plan_layout(&[(1, 31)], S).unwrap_err().code(), "InvalidPart");
    }

    #[test]
    fn complete_requests_are_read_in_order_and_out_of_order_lists_refused() {
        let ok = br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"a"</ETag><PartNumber>1</PartNumber><ChecksumCRC32>xx</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber><ETag>&quot;b&quot;</ETag></Part></CompleteMultipartUpload>"#;
        assert_eq!(parse_complete_request(ok).unwrap(), vec![(1, "\"a\"".into()), (2, "\"b\"".into())]);
        let reversed = br#"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>b</ETag></Part><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>"#;
        assert_eq!(parse_complete_request(reversed).unwrap_err().code(), "InvalidPartOrder");
        for bad in [
            &b"<CompleteMultipartUpload/>"[..],
            b"<Other/>",
            b"nonsense",
            b"<CompleteMultipartUpload><Part><PartNumber>0</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
        ] {
            assert_eq!(parse_complete_request(bad).unwrap_err().code(), "MalformedXML");
        }
        assert!(etag_eq("\"abc\"", "abc"));
    }

    #[tokio::test]
    async fn a_keepalive_body_sends_the_declaration_then_spaces_then_the_result_document() {
        let finish: Finish = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            xml::document("CompleteMultipartUploadResult", &[("ETag", "\"e\"".into())], &[])
        });
        let body = KeepaliveBody {
            started: false,
            finish: Some(finish),
            ticker: tokio::time::interval(Duration::from_millis(10)),
        };
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        let rest = text.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").expect("declaration first");
        let doc = rest.trim_start();
        assert!(rest.len() - doc.len() >= 2, "spaces while waiting: {text:?}");
        assert!(doc.starts_with("<CompleteMultipartUploadResult"), "{text:?}");
        assert_eq!(text.matches("<?xml").count(), 1);
    }

    #[test]
    fn a_replace_copy_keeps_content_headers_and_user_metadata_but_not_the_old_envelope() {
        let mut head = HeaderMap::new();
        head.insert(CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        head.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("aws-chunked,gzip"));
        head.insert("x-amz-meta-color", HeaderValue::from_static("blue"));
        head.insert("x-amz-meta-s3crypt-mp", HeaderValue::from_static("open"));
        head.insert(http::header::ETAG, HeaderValue::from_static("\"e\""));
        let env = Envelope {
            segment_size: S,
            kek_ref: "keyring:k".into(),
            wrapped_dek: vec![1; 60],
            multipart: Some(Multipart::Sealed { parts: 2, part_size: 8 * MIB }),
            bucket_key: None,
            context: None,
        };
        let out = replace_headers(&head, &env).unwrap();
        assert_eq!(out[CONTENT_TYPE], "text/csv");
        assert_eq!(out[http::header::CONTENT_ENCODING], "gzip");
        assert_eq!(out["x-amz-meta-color"], "blue");
        assert_eq!(out["x-amz-meta-s3crypt-mp"], "2x8388608");
        assert!(out.get(http::header::ETAG).is_none());
    }
}
