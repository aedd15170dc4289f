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

use std::collections::HashMap;

use super::{MAX_PART_SIZE, OpenUpload, bare_etag, open_upload};
use crate::crypto::attributes::Attributes;
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
use crate::s3::checksum::{ChecksumAlgorithm, MultipartChecksum};
use crate::s3::error::BodyError;
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

/// A part a CompleteMultipartUpload names: its number, the client's ETag of it, and the checksum it states.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestedPart {
    number: u32,
    etag: String,
    checksum: Option<(ChecksumAlgorithm, String)>,
}

/// The parts a CompleteMultipartUpload names, in order.
fn parse_complete_request(body: &[u8]) -> Result<Vec<RequestedPart>, ProxyError> {
    let (records, _) = xml::records(body, &["CompleteMultipartUpload", "Part"])
        .ok_or(RequestError::MalformedXml("CompleteMultipartUpload body"))?;
    let mut parts: Vec<RequestedPart> = Vec::with_capacity(records.len());
    for r in &records {
        let number = xml::field(r, "PartNumber")
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| (1..=MAX_PARTS).contains(n))
            .ok_or(RequestError::MalformedXml("PartNumber"))?;
        let etag = xml::field(r, "ETag").ok_or(RequestError::MalformedXml("ETag"))?.to_owned();
        let checksum = crate::s3::checksum::ALL.into_iter().find_map(|alg| {
            let v = xml::field(r, &format!("Checksum{}", alg.display_name()))?;
            Some((alg, v.trim().to_owned()))
        });
        parts.push(RequestedPart { number, etag, checksum });
    }
    if parts.is_empty() {
        return Err(RequestError::MalformedXml("no parts").into());
    }
    if parts.windows(2).any(|w| w[0].number > w[1].number) {
        return Err(ProxyError::InvalidPartOrder);
    }
    // A part number named twice (a part sent again while the first send was still running): its last entry
    // stands, as at S3.
    let mut deduped: Vec<RequestedPart> = Vec::with_capacity(parts.len());
    for part in parts {
        match deduped.last_mut() {
            Some(last) if last.number == part.number => *last = part,
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
    /// What the object records of its plaintext (sealed into its envelope).
    pub attributes: Attributes,
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

/// The opened records of an upload's parts: attributes by (part number, store ETag).
type PartAttributes = HashMap<(u32, String), Attributes>;

fn invalid_part(n: u32) -> ProxyError {
    ProxyError::InvalidPart(
        format!("Part {n} could not be found. It may not have been uploaded, or its ETag is wrong.").into(),
    )
}

/// The stored upload of each requested part, with its recorded attributes: the listed upload of part n with the
/// client's ETag in its opaque form (stores that list no ETags: the last one listed). The parts of an SSE-S3 upload
/// answered with their plaintext MD5 (`md5_parts`), which the store cannot know: such an ETag names the upload of
/// the part whose authenticated record holds that MD5 (the latest, if the part was sent more than once with the
/// same bytes). A checksum the client states for a part must be the recorded one.
fn choose_parts(
    requested: &[RequestedPart],
    stored: &BTreeMap<u32, Vec<StoredPart>>,
    records: &PartAttributes,
    md5_parts: bool,
) -> Result<Vec<(StoredPart, Option<Attributes>)>, ProxyError> {
    requested
        .iter()
        .map(|r| {
            let n = r.number;
            let uploads = stored.get(&n).ok_or_else(|| invalid_part(n))?;
            let wanted = crate::proxy::etag::store_form(&r.etag);
            let md5 = crate::proxy::etag::as_md5(&r.etag).filter(|_| md5_parts);
            let attrs = |p: &StoredPart| match p.etag.as_deref() {
                Some(e) => records.get(&(n, bare_etag(e).to_owned())).cloned(),
                // Stores that list no ETags keep only the last upload of a part: the record the client names.
                None => records
                    .iter()
                    .find(|((rn, e), a)| *rn == n && (etag_eq(e, &wanted) || (md5.is_some() && a.md5 == md5)))
                    .map(|(_, a)| a.clone()),
            };
            let named = uploads.iter().rev().find(|p| p.etag.as_deref().is_none_or(|s| etag_eq(s, &wanted)));
            let by_md5 = || {
                md5?;
                uploads
                    .iter()
                    .filter(|p| attrs(p).is_some_and(|a| a.md5 == md5))
                    .max_by(|a, b| a.last_modified.cmp(&b.last_modified))
            };
            let part = named.or_else(by_md5).ok_or_else(|| invalid_part(n))?;
            let recorded = attrs(part);
            if let (Some((alg, stated)), Some((rec_alg, digest))) =
                (&r.checksum, recorded.as_ref().and_then(|a| a.checksum.as_ref()))
                && alg == rec_alg
                && *stated != crate::s3::checksum::encode_value(digest)
            {
                return Err(invalid_part(n));
            }
            Ok((part.clone(), recorded))
        })
        .collect()
}

/// What a completed object records of its plaintext: S3's multipart ETag (the MD5 of the parts' MD5s) for SSE-S3
/// uploads whose parts all have one, and the object checksum the upload declared, combined from its parts'.
fn completed_attributes(
    chosen: &[(StoredPart, Option<Attributes>)],
    md5_parts: bool,
    declared: Option<MultipartChecksum>,
    segment: u32,
) -> Attributes {
    let count = u32::try_from(chosen.len()).unwrap_or(u32::MAX);
    let mut out = Attributes::default();
    if md5_parts {
        let md5s: Option<Vec<[u8; 16]>> = chosen.iter().map(|(_, a)| a.as_ref()?.md5).collect();
        if let Some(md5s) = md5s {
            use md5::Digest as _;
            let mut h = md5::Md5::new();
            for m in &md5s {
                h.update(m);
            }
            out.multipart_md5 = Some((count, h.finalize().into()));
        }
    }
    if let Some(spec) = declared {
        let digests: Option<Vec<(&[u8], u64)>> = chosen
            .iter()
            .map(|(p, a)| {
                let (alg, digest) = a.as_ref()?.checksum.as_ref()?;
                let plain = plaintext_len(p.cipher_size, segment, false)?;
                (*alg == spec.algorithm).then_some((digest.as_slice(), plain))
            })
            .collect();
        if let Some(value) = digests.and_then(|d| spec.combine(&d)) {
            if spec.full_object {
                out.checksum = Some((spec.algorithm, value));
            } else {
                out.composite = Some((count, spec.algorithm, value));
            }
        }
    }
    out
}

/// A Complete's `x-amz-checksum-*` header states the object's checksum: it must be the one its parts give.
fn check_object_checksum(headers: &HeaderMap, attrs: &Attributes) -> Result<(), ProxyError> {
    let digest = |v: &str| v.trim().split('-').next().unwrap_or("").to_owned();
    for (name, value) in headers {
        let Some(alg) = ChecksumAlgorithm::from_header_name(name.as_str()) else { continue };
        match attrs.shown_checksum() {
            Some(shown) if shown.algorithm == alg => {
                if digest(value.to_str().unwrap_or("")) != digest(&shown.value) {
                    return Err(BodyError::BadDigest { algorithm: alg.display_name() }.into());
                }
            }
            _ => {
                return Err(RequestError::InvalidRequest(
                    format!(
                        "The upload did not declare {} checksums for its parts, so the object's cannot be checked.",
                        alg.display_name()
                    )
                    .into(),
                )
                .into());
            }
        }
    }
    Ok(())
}

/// The ETag a completed object shows: S3's multipart ETag when it is recorded, else the opaque form of the store's.
fn shown_etag(store: &str, attrs: &Attributes) -> String {
    match &attrs.multipart_md5 {
        Some((n, md5)) => crate::proxy::etag::multipart_etag(*n, md5),
        None => crate::proxy::etag::opaque(store),
    }
}

/// The store no longer has the upload (completed or aborted).
fn is_no_such_upload(e: &ProxyError) -> bool {
    matches!(e, ProxyError::Upstream { code, .. } if code == "NoSuchUpload")
}

/// The client's CompleteMultipartUploadResult for the sealed object: its ETag and checksum as reads show them.
fn complete_result(
    sealed: Sealed,
    attrs: &Attributes,
    host: &str,
    target: &Target,
    identity: &ObjectIdentity,
) -> (HeaderMap, Bytes) {
    let location = format!("https://{host}{}", target.upstream_path(false));
    let mut fields = vec![
        ("Location", location),
        ("Bucket", identity.bucket.clone()),
        ("Key", identity.key.clone()),
        ("ETag", shown_etag(&sealed.etag, attrs)),
    ];
    let checksum = attrs.shown_checksum();
    let name = checksum.as_ref().map(|c| format!("Checksum{}", c.algorithm.display_name()));
    if let (Some(c), Some(name)) = (&checksum, &name) {
        fields.push((name.as_str(), c.value.clone()));
        fields.push(("ChecksumType", c.kind.to_owned()));
    }
    let body = xml::document("CompleteMultipartUploadResult", &fields, &[]);
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
        let records = self.part_records(&ctx.identity, &upload).await?;
        let crypto = &self.inner.crypto;
        let md5_parts = upload.sse_info(crypto).shows_md5() && crypto.md5_etags();
        let chosen = match choose_parts(&requested, &stored, &records, md5_parts) {
            Ok(parts) => parts,
            // Stores that list a completed or aborted upload as having no parts (parts the client names were
            // uploaded: the upload is gone).
            Err(_) if stored.is_empty() => {
                return self.completed_before(ctx, &head.headers, &upload, ProxyError::NoSuchUpload).await;
            }
            Err(e) => return Err(e),
        };
        let attributes = completed_attributes(&chosen, md5_parts, upload.checksum, crypto.segment_size);
        check_object_checksum(&head.headers, &attributes)?;
        let parts: Vec<StoredPart> = chosen.into_iter().map(|(p, _)| p).collect();
        let sizes: Vec<(u32, u64)> = parts.iter().map(|p| (p.number, p.cipher_size)).collect();
        let (layout, plain_total) = plan_layout(&sizes, crypto.segment_size)?;
        if let Some(declared) = header_str(&head.headers, &X_AMZ_MP_OBJECT_SIZE)
            && declared.trim().parse::<u64>().ok() != Some(plain_total)
        {
            return Err(RequestError::InvalidRequest(
                format!("x-amz-mp-object-size {declared} does not match the parts' total size {plain_total}").into(),
            )
            .into());
        }
        // If-Match / If-None-Match name the ETags clients were shown: evaluated here, and the store gets a pin to
        // the object evaluated (or If-None-Match: *).
        let mut conditions = HeaderMap::new();
        match self.write_conditions(&ctx.target, &ctx.identity, &head.headers).await? {
            Some((name, value)) => {
                conditions.insert(name, value);
            }
            None => {
                if let Some(v) = head.headers.get(http::header::IF_NONE_MATCH) {
                    conditions.insert(http::header::IF_NONE_MATCH, v.clone());
                }
            }
        }
        // The store's own ETags of the chosen parts (the client holds opaque forms or plaintext MD5s).
        let store_etags: Vec<(u32, String)> = requested
            .iter()
            .zip(&parts)
            .map(|(r, p)| (r.number, p.etag.clone().unwrap_or_else(|| crate::proxy::etag::store_form(&r.etag))))
            .collect();
        let request_xml = complete_xml(&store_etags);
        let (target, identity) = (ctx.target.clone(), ctx.identity.clone());
        let (into, of) = (ctx.target.clone(), ctx.identity.clone());
        let shown = attributes.clone();
        let completing = Completing { target: into, identity: of, upload, parts, layout, plain_total, attributes };
        let this = self.clone();
        let work = async move {
            let sealed = this.complete_and_seal(&completing, conditions, request_xml).await?;
            // The upload is done: its ID record goes before the answer, the part records after it.
            let (bucket, upstream_id) = (completing.identity.bucket.clone(), completing.upload.upstream_id.clone());
            this.records().forget_id(&bucket, &upstream_id).await;
            tokio::spawn(async move { this.records().forget(&bucket, &upstream_id).await });
            Ok(sealed)
        };
        let host = header_str(&head.headers, &http::header::HOST).unwrap_or("").to_owned();
        let render = move |sealed: Sealed| complete_result(sealed, &shown, &host, &target, &identity);
        self.slow_response(work, render, &ctx.record.resource, &ctx.record.request_id).await
    }

    /// The records of an upload's parts that open under its key for exactly their part and stored ETag; the
    /// others (altered, or of another upload) are left out.
    async fn part_records(&self, id: &ObjectIdentity, upload: &OpenUpload) -> Result<PartAttributes, ProxyError> {
        let up = &upload.upstream_id;
        let records = self.records().parts(&id.bucket, up).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let a = Attributes::open_part(&r.sealed, &upload.dek, id, up, r.part, &r.store_etag);
                if a.is_none() {
                    tracing::warn!(part = r.part, "a part record does not open for its part: ignored");
                }
                Some(((r.part, r.store_etag), a?))
            })
            .collect())
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
        let attrs = match &env.attributes {
            Some(sealed) => Attributes::open(sealed, &dek, &ctx.identity)?,
            None => Attributes::default(),
        };
        let sealed = Sealed {
            etag,
            version_id: header_str(&h, &X_AMZ_VERSION_ID).filter(|v| *v != "null").map(str::to_owned),
            sse: Some(SseInfo::of(&env, customer)),
        };
        let host = header_str(headers, &http::header::HOST).unwrap_or("");
        let audit = sealed.sse.as_ref().map(SseInfo::audit);
        let (mut out, body) = complete_result(sealed, &attrs, host, &ctx.target, &ctx.identity);
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
        let mut sealed_env = crypto.wrap_for(&upload.dek, identity, &protection, Some(state)).await?;
        if !c.attributes.is_empty() {
            sealed_env.attributes = Some(c.attributes.seal(&upload.dek, identity)?);
        }
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
        let pairs = |parts: Vec<RequestedPart>| -> Vec<(u32, String)> {
            parts.into_iter().map(|p| (p.number, p.etag)).collect()
        };
        let parsed = parse_complete_request(ok).unwrap();
        assert_eq!(parsed[0].checksum, Some((ChecksumAlgorithm::Crc32, "xx".to_owned())));
        assert_eq!(pairs(parsed), vec![(1, "\"a\"".into()), (2, "\"b\"".into())]);
        let reversed = br#"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>b</ETag></Part><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>"#;
        assert_eq!(parse_complete_request(reversed).unwrap_err().code(), "InvalidPartOrder");
        let resent = br#"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>b</ETag></Part><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part><Part><PartNumber>2</PartNumber><ETag>c</ETag></Part></CompleteMultipartUpload>"#;
        assert_eq!(
            pairs(parse_complete_request(resent).unwrap()),
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
