//! CompleteMultipartUpload on an encrypted bucket: the parts checked (every part but the last the same size, a
//! multiple of the segment size), the upload completed at the store, the store's envelope of the result
//! authenticated, then the object sealed (a server-side copy onto itself whose metadata records the layout under the
//! data-key wrap) or, for parts that do not align, re-encrypted (`repack`). Until sealed an object is not served. A
//! slow Complete answers 200 at once and keeps the connection alive with spaces until its result, as S3 does.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{MAX_PART_SIZE, OpenUpload, open_upload};
use crate::crypto::envelope::{Envelope, Multipart};
use crate::crypto::error::CryptoError;
use crate::crypto::format::{MAX_PARTS, plaintext_len};
use crate::crypto::keys::ObjectIdentity;
use crate::error::{BoxError, ProxyError};
use crate::proxy::Proxy;
use crate::proxy::front::{Admitted, RequestCtx};
use crate::proxy::object::{SseInfo, scrub_object_headers};
use crate::proxy::object::{etag_eq, header_value, replace_headers};
use crate::proxy::response::ProxyBody;
use crate::s3::Target;
use crate::s3::error::RequestError;
use crate::s3::headers::{X_AMZ_MP_OBJECT_SIZE, X_AMZ_VERSION_ID, header_str};
use crate::s3::op::S3Op;
use crate::s3::query::UPLOAD_ID;
use crate::s3::xml;
use crate::store::{StoreBody, StoreRequest, Xml};

/// A part as the upstream lists it.
#[derive(Debug, Clone)]
pub(super) struct StoredPart {
    pub number: u32,
    pub etag: Option<String>,
    pub cipher_size: u64,
    /// When the store received it (stores that keep every upload of a part: the latest is the part).
    pub last_modified: Option<String>,
}

/// The parts a CompleteMultipartUpload names, in order: (part number, ETag).
fn parse_complete_request(body: &[u8]) -> Result<Vec<(u32, String)>, ProxyError> {
    let (records, _) = xml::records(body, &["CompleteMultipartUpload", "Part"])
        .ok_or(RequestError::MalformedXml("CompleteMultipartUpload body"))?;
    let mut parts = Vec::with_capacity(records.len());
    for r in &records {
        let n = xml::field(r, "PartNumber")
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| (1..=MAX_PARTS).contains(n))
            .ok_or(RequestError::MalformedXml("PartNumber"))?;
        let etag = xml::field(r, "ETag").ok_or(RequestError::MalformedXml("ETag"))?;
        parts.push((n, etag.to_owned()));
    }
    if parts.is_empty() {
        return Err(RequestError::MalformedXml("no parts").into());
    }
    if parts.windows(2).any(|w| w[0].0 > w[1].0) {
        return Err(ProxyError::InvalidPartOrder);
    }
    // A part number named twice (a part sent again while the first send was still running): its last entry
    // stands, as at S3.
    let mut deduped: Vec<(u32, String)> = Vec::with_capacity(parts.len());
    for part in parts {
        match deduped.last_mut() {
            Some(last) if last.0 == part.0 => *last = part,
            _ => deduped.push(part),
        }
    }
    Ok(deduped)
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

/// A completed upload on its way to its seal: where it is, its upload (data key, protection, SSE-C key), the parts
/// it was completed from, and their layout.
pub(super) struct Completing {
    pub target: Target,
    pub identity: ObjectIdentity,
    pub upload: OpenUpload,
    pub parts: Vec<StoredPart>,
    pub layout: PartsLayout,
    pub plain_total: u64,
}

/// The object the store's Complete made: its ETag, and its version in a versioned bucket.
pub(super) struct CompletedAt {
    pub etag: String,
    pub version: Option<String>,
}

/// A just-completed object as a HEAD showed it: the ETag every read of it is pinned to, its headers and (open,
/// not yet authenticated) envelope.
pub(super) struct Completed {
    pub pin: HeaderValue,
    pub head_headers: HeaderMap,
    pub open: Envelope,
}

/// What the sealed object ended as.
pub(super) struct Sealed {
    pub etag: String,
    pub version_id: Option<String>,
    /// The SSE headers of the sealed object.
    pub sse: Option<SseInfo>,
}

/// The stored upload of each requested part: the listed upload of part n with the client's ETag in its opaque form
/// (stores that list no ETags: the last one listed). The parts of an SSE-S3 upload answered with their plaintext
/// MD5, which the store cannot know: a 32-hex ETag the store does not list names the last upload of the part
/// (`md5_parts`; docs/ENCRYPTION.md "ETags").
fn choose_parts(
    requested: &[(u32, String)],
    stored: &BTreeMap<u32, Vec<StoredPart>>,
    md5_parts: bool,
) -> Result<Vec<StoredPart>, ProxyError> {
    requested
        .iter()
        .map(|(n, etag)| {
            let wanted = crate::proxy::etag::store_form(etag);
            let found = stored.get(n).and_then(|uploads| {
                let named =
                    uploads.iter().rev().find(|p| p.etag.as_deref().is_none_or(|stored| etag_eq(stored, &wanted)));
                // An SSE-S3 part's MD5: the most recent upload of the part (ISO 8601 times of one store compare as
                // text). Uploads the store lists with the same time cannot be told apart: refused (S3 would know;
                // assembling the wrong one would hand the client another part's bytes).
                let latest = || {
                    let newest = uploads.iter().map(|p| &p.last_modified).max()?;
                    let mut at: Vec<&StoredPart> = uploads.iter().filter(|p| &p.last_modified == newest).collect();
                    at.dedup_by(|a, b| a.etag == b.etag);
                    if at.len() == 1 { at.pop() } else { None }
                };
                named.or_else(|| if md5_parts && crate::proxy::etag::as_md5(etag).is_some() { latest() } else { None })
            });
            found.cloned().ok_or_else(|| {
                ProxyError::InvalidPart(
                    format!("Part {n} could not be found. It may not have been uploaded, or its ETag is wrong.").into(),
                )
            })
        })
        .collect()
}

/// An ETag as S3 writes it, in double quotes (some stores leave them out of XML results).
fn quoted(etag: &str) -> String {
    let bare = etag.trim().trim_matches('"');
    format!("\"{bare}\"")
}

/// The store no longer has the upload (completed or aborted).
fn is_no_such_upload(e: &ProxyError) -> bool {
    matches!(e, ProxyError::Upstream { code, .. } if code == "NoSuchUpload")
}

/// The client's CompleteMultipartUploadResult for the sealed object.
fn complete_result(sealed: Sealed, host: &str, target: &Target, identity: &ObjectIdentity) -> (HeaderMap, Bytes) {
    let location = format!("https://{host}{}", target.upstream_path(false));
    let body = xml::document(
        "CompleteMultipartUploadResult",
        &[
            ("Location", location),
            ("Bucket", identity.bucket.clone()),
            ("Key", identity.key.clone()),
            ("ETag", quoted(&sealed.etag)),
        ],
        &[],
    );
    let mut h = HeaderMap::new();
    if let Some(v) = sealed.version_id.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert(X_AMZ_VERSION_ID, v);
    }
    scrub_object_headers(&mut h, sealed.sse.as_ref());
    (h, body)
}

impl Proxy {
    /// CompleteMultipartUpload on an encrypted bucket: check the parts, complete upstream, seal.
    pub(in crate::proxy) async fn complete_upload(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, body } = r;
        let upload = open_upload(&self.inner.crypto, &mut ctx.query, &ctx.identity, ctx.sse.customer())?;
        // A Complete's x-amz-checksum-* headers give the object's checksum, not its XML body's.
        let mut body_headers = head.headers.clone();
        let object_checksums: Vec<http::HeaderName> = body_headers
            .keys()
            .filter(|n| crate::s3::checksum::ChecksumAlgorithm::from_header_name(n.as_str()).is_some())
            .cloned()
            .collect();
        for n in object_checksums {
            body_headers.remove(n);
        }
        let xml_body = crate::proxy::body::read_small_body(&ctx.payload, &body_headers, body).await?;
        let requested = parse_complete_request(&xml_body)?;
        let stored = match self.list_all_parts(&ctx.target, &upload.upstream_id).await {
            Ok(stored) => stored,
            // A retry of a Complete that succeeded (its answer lost): S3 answers it again.
            Err(e) if is_no_such_upload(&e) => return self.completed_before(ctx, &head.headers, &upload, e).await,
            Err(e) => return Err(e),
        };
        let md5_parts = upload.sse_info(&self.inner.crypto).shows_md5() && self.inner.crypto.md5_etags();
        let parts = match choose_parts(&requested, &stored, md5_parts) {
            Ok(parts) => parts,
            // Stores that list a completed or aborted upload as having no parts (parts the client names were
            // uploaded: the upload is gone).
            Err(_) if stored.is_empty() => {
                return self.completed_before(ctx, &head.headers, &upload, ProxyError::NoSuchUpload).await;
            }
            Err(e) => return Err(e),
        };
        let sizes: Vec<(u32, u64)> = parts.iter().map(|p| (p.number, p.cipher_size)).collect();
        let (layout, plain_total) = plan_layout(&sizes, self.inner.crypto.segment_size)?;
        if let Some(declared) = header_str(&head.headers, &X_AMZ_MP_OBJECT_SIZE)
            && declared.trim().parse::<u64>().ok() != Some(plain_total)
        {
            return Err(RequestError::InvalidRequest(
                format!("x-amz-mp-object-size {declared} does not match the parts' total size {plain_total}").into(),
            )
            .into());
        }
        let mut conditions = HeaderMap::new();
        for name in [http::header::IF_MATCH, http::header::IF_NONE_MATCH] {
            if let Some(v) = head.headers.get(&name) {
                conditions.insert(name, v.clone());
            }
        }
        // The store's own ETags of the chosen parts (the client holds opaque forms or plaintext MD5s).
        let store_etags: Vec<(u32, String)> = requested
            .iter()
            .zip(&parts)
            .map(|((n, etag), p)| (*n, p.etag.clone().unwrap_or_else(|| crate::proxy::etag::store_form(etag))))
            .collect();
        let request_xml = complete_xml(&store_etags);
        let (target, identity) = (ctx.target.clone(), ctx.identity.clone());
        let (into, of) = (ctx.target.clone(), ctx.identity.clone());
        let completing = Completing { target: into, identity: of, upload, parts, layout, plain_total };
        let this = self.clone();
        let work = async move { this.complete_and_seal(&completing, conditions, request_xml).await };
        let host = header_str(&head.headers, &http::header::HOST).unwrap_or("").to_owned();
        let render = move |sealed: Sealed| complete_result(sealed, &host, &target, &identity);
        self.slow_response(work, render, &ctx.record.resource, &ctx.record.request_id).await
    }

    /// The answer to a Complete of an upload the store no longer has: the object at the key, if this upload made
    /// it, as the first Complete answered; else `gone`. The object's envelope is authenticated first, and it was
    /// made by this upload iff its data key is the upload's (fresh for every upload, kept by the seal and by the
    /// re-encryption), compared in constant time.
    async fn completed_before(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        upload: &OpenUpload,
        gone: ProxyError,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Ok(h) = self.store().expect_ok(StoreRequest::head(&ctx.target)).await else { return Err(gone) };
        let Ok(Some(env)) = Envelope::from_headers(&h) else { return Err(gone) };
        if !matches!(env.multipart, Some(Multipart::Sealed { .. })) {
            return Err(gone);
        }
        let customer = upload.customer.as_ref();
        let Ok(dek) = self.inner.crypto.open_envelope(&env, &ctx.identity, customer).await else { return Err(gone) };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&dek.expose()[..], &upload.dek.expose()[..])) {
            return Err(gone);
        }
        let Some(etag) = header_str(&h, &http::header::ETAG).map(str::to_owned) else { return Err(gone) };
        let sealed = Sealed {
            etag,
            version_id: header_str(&h, &X_AMZ_VERSION_ID).filter(|v| *v != "null").map(str::to_owned),
            sse: Some(SseInfo::of(&env, customer)),
        };
        let host = header_str(headers, &http::header::HOST).unwrap_or("");
        let audit = sealed.sse.as_ref().map(SseInfo::audit);
        let (mut out, body) = complete_result(sealed, host, &ctx.target, &ctx.identity);
        out.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        out.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut resp = Response::new(crate::proxy::response::full_body(body));
        *resp.headers_mut() = out;
        if let Some(a) = audit {
            resp.extensions_mut().insert(a);
        }
        Ok(resp)
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
            let mut list = StoreRequest::new(S3Op::ListParts, Method::GET, target).param(UPLOAD_ID, upstream_id);
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
                let last_modified = xml::field(r, "LastModified").map(str::to_owned);
                out.entry(number).or_default().push(StoredPart { number, etag, cipher_size, last_modified });
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

    /// Completes the upstream upload, then seals the object in place (aligned layouts) or re-encrypts it into an
    /// aligned layout (anything else).
    async fn complete_and_seal(
        &self,
        c: &Completing,
        conditions: HeaderMap,
        request_xml: Bytes,
    ) -> Result<Sealed, ProxyError> {
        let complete = StoreRequest::new(S3Op::CompleteMultipartUpload, Method::POST, &c.target)
            .param(UPLOAD_ID, &c.upload.upstream_id)
            .headers(conditions)
            .body(StoreBody::Bytes(request_xml));
        let (h, body) = self.store().xml(complete, Xml::SlowResult).await?;
        let (_, top) = xml::records(&body, &["CompleteMultipartUploadResult", "Part"])
            .ok_or_else(|| ProxyError::UpstreamProtocol("CompleteMultipartUpload result is not XML".into()))?;
        let etag = xml::field(&top, "ETag")
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .or_else(|| header_str(&h, &http::header::ETAG).map(str::to_owned))
            .ok_or_else(|| ProxyError::UpstreamProtocol("CompleteMultipartUpload result without ETag".into()))?;
        let version = header_str(&h, &X_AMZ_VERSION_ID).filter(|v| *v != "null").map(str::to_owned);
        let at = CompletedAt { etag, version };
        match c.layout {
            PartsLayout::Aligned { parts, part_size } => {
                self.seal(c, &at, Multipart::Sealed { parts, part_size }).await
            }
            PartsLayout::Misaligned => self.repack(c, &at).await,
        }
    }

    /// HEADs the object a Complete just made, pinned to its ETag (and version).
    pub(super) async fn head_completed(&self, c: &Completing, at: &CompletedAt) -> Result<Completed, ProxyError> {
        let pin = header_value(&at.etag)?;
        let head =
            StoreRequest::head(&c.target).version(at.version.as_deref()).header(http::header::IF_MATCH, pin.clone());
        let head_headers = self.store().expect_ok(head).await?;
        let open = Envelope::from_headers(&head_headers)
            .map_err(|e| CryptoError::Integrity(e.0))?
            .ok_or(CryptoError::Integrity("the completed object has no envelope"))?;
        Ok(Completed { pin, head_headers, open })
    }

    /// Rewrites the metadata of the just-completed object so that its envelope records `state`, wrapped under the
    /// protection its upload ID binds (once the store's envelope of it is authenticated), by a server-side copy onto
    /// itself; removes the unsealed version if the bucket keeps versions.
    async fn seal(&self, c: &Completing, at: &CompletedAt, state: Multipart) -> Result<Sealed, ProxyError> {
        let Completed { head_headers, open, .. } = self.head_completed(c, at).await?;
        let crypto = &self.inner.crypto;
        let (upload, identity) = (&c.upload, &c.identity);
        let customer = upload.customer.as_ref();
        let protection = crypto.sealing_protection(&open, identity, &upload.dek, &upload.protection, customer).await?;
        let sealed_env = crypto.wrap_for(&upload.dek, identity, &protection, Some(state)).await?;
        let cipher_total: u64 = c.parts.iter().map(|p| p.cipher_size).sum();
        let headers = replace_headers(&head_headers, &sealed_env)?;
        let mut source = c.target.upstream_path(false);
        if let Some(v) = &at.version {
            source.push_str("?versionId=");
            crate::util::uri::uri_encode(v.as_bytes(), true, &mut source);
        }
        let sealed = if cipher_total <= self.inner.settings.max_copy_size {
            let (h, etag) = self.self_copy_request(&c.target, headers, &source, &at.etag).await?;
            Sealed { etag, version_id: header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned), sse: None }
        } else {
            self.copy_by_parts(&c.target, headers, &source, &at.etag, &c.parts).await?
        };
        let sealed = Sealed { sse: Some(SseInfo::of(&sealed_env, customer)), ..sealed };
        self.drop_version(&c.target, at.version.as_deref(), &sealed).await;
        Ok(sealed)
    }

    /// Deletes the version `old` of the target once `sealed` replaced it (versioned buckets only).
    pub(super) async fn drop_version(&self, target: &Target, old: Option<&str>, sealed: &Sealed) {
        let Some(old) = old else { return };
        if sealed.version_id.as_deref() == Some(old) {
            return;
        }
        let delete = StoreRequest::new(S3Op::DeleteObject, Method::DELETE, target).version(Some(old));
        match self.store().send(delete).await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "could not delete the unsealed object version"),
            Err(e) => tracing::warn!(error = %e, "could not delete the unsealed object version"),
        }
    }

    /// Runs `work`; if it takes longer than the keepalive setting, answers 200 at once and sends a space every
    /// interval until the result: its document, or an `<Error>` document (S3 clients look for both in a 200).
    async fn slow_response<F, R>(
        &self,
        work: F,
        render: R,
        resource: &str,
        request_id: &str,
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
            let audit = sealed.sse.as_ref().map(SseInfo::audit);
            let (headers, body) = render(sealed);
            let mut resp = Response::new(crate::proxy::response::full_body(body.clone()));
            *resp.headers_mut() = headers;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
            resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            if let Some(a) = audit {
                resp.extensions_mut().insert(a);
            }
            return Ok(resp);
        }
        let (resource, request_id) = (resource.to_owned(), request_id.to_owned());
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

/// The upstream CompleteMultipartUpload body: part numbers and the client's ETags, no checksums (the client's
/// describe plaintext; the upload declares no algorithm upstream).
pub(super) fn complete_xml(requested: &[(u32, String)]) -> Bytes {
    let groups: Vec<(&str, Vec<(&str, String)>)> = requested
        .iter()
        .map(|(n, etag)| ("Part", vec![("PartNumber", n.to_string()), ("ETag", etag.clone())]))
        .collect();
    xml::document("CompleteMultipartUpload", &[], &groups)
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
        let resent = br#"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>b</ETag></Part><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part><Part><PartNumber>2</PartNumber><ETag>c</ETag></Part></CompleteMultipartUpload>"#;
        assert_eq!(
            parse_complete_request(resent).unwrap(),
            vec![(1, "a".into()), (2, "c".into())],
            "the last entry of a part stands"
        );
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
}
