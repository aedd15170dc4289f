//! CopyObject and UploadPartCopy when either side is an encrypted bucket.
//!
//! Between encrypted buckets a CopyObject changes only names and metadata: the data key is re-wrapped for the
//! destination and the store copies the ciphertext server-side (no data through the proxy), pinned to the ETag the
//! proxy read the envelope from. Everything else (a plaintext source or destination, a legacy plaintext object, any
//! UploadPartCopy, which needs the part's own stream) is a streaming decrypt and re-encrypt through the proxy.

use std::sync::Arc;
use std::time::SystemTime;

use crate::upstream::UpstreamIncoming;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::Proxy;
use super::etag::{Conditions, precondition_failed};
use super::front::{Admitted, RequestCtx};
use super::multipart::{open_upload, unwrap_upload_id};
use super::object::{
    KEPT_ON_REPLACE, ObjectResponse, ReadCtx, SseInfo, envelope_or_policy, get_response, header_value, present_object,
    replace_headers, shown_md5,
};
use super::range::ClientRange;
use super::response::ProxyBody;
use crate::crypto::Protection;
use crate::crypto::attributes::Attributes;
use crate::crypto::envelope::{Envelope, check_client_metadata};
use crate::crypto::format::SINGLE_PUT_PART;
use crate::crypto::keys::{DataKey, ObjectIdentity};
use crate::error::ProxyError;
use crate::s3::error::RequestError;
use crate::s3::headers::{
    X_AMZ_COPY_SOURCE, X_AMZ_COPY_SOURCE_IF_MATCH, X_AMZ_COPY_SOURCE_RANGE, X_AMZ_METADATA_DIRECTIVE, X_AMZ_VERSION_ID,
    header_str,
};
use crate::s3::op::S3Op;
use crate::s3::query::Query;
use crate::s3::sse::{CustomerKey, copy_source_customer};
use crate::s3::xml;
use crate::s3::{CopySource, Target};
use crate::store::{StoreBody, StoreRequest, StoreSse, Xml};
use crate::upstream::UpstreamBody;

const X_AMZ_COPY_SOURCE_VERSION_ID: HeaderName = HeaderName::from_static("x-amz-copy-source-version-id");

/// The store's name for the object a copy reads.
fn source_identity(source: &CopySource) -> ObjectIdentity {
    ObjectIdentity {
        bucket: source.target.bucket.clone().unwrap_or_default(),
        key: source.target.key.clone().unwrap_or_default(),
    }
}

/// The store's CopyObject of a re-wrap: the destination's headers with `new_env`, the source pinned to the ETag
/// its envelope was read from. The client's own If-Match is checked here (some stores ignore If-Match on HEAD);
/// its other conditions go to the store with the copy.
fn rewrap_headers(headers: &HeaderMap, how: &Rewrap<'_>, new_env: &Envelope) -> Result<HeaderMap, ProxyError> {
    let head = how.source_head;
    let mut out = destination_headers(headers, S3Op::CopyObject);
    if how.replace {
        described_by(head, headers, true, &mut out);
        check_client_metadata(headers, new_env.metadata_len())?;
        for (n, v) in new_env.to_headers() {
            out.insert(n, v);
        }
    } else {
        for (n, v) in &replace_headers(head, new_env)? {
            if n.as_str() == "x-amz-storage-class" && out.contains_key(n) {
                continue;
            }
            out.append(n.clone(), v.clone());
        }
    }
    let etag = head
        .get(http::header::ETAG)
        .cloned()
        .ok_or_else(|| ProxyError::UpstreamProtocol("copy source HEAD without ETag".into()))?;
    // The client's copy-source conditions, against every form of the source's ETag; the store copies only the
    // version they were evaluated on (pinned below).
    let store_etag = etag.to_str().unwrap_or("");
    let opaque = super::etag::opaque(store_etag);
    let mut tags = vec![store_etag, opaque.as_str()];
    tags.extend(how.source_md5.as_deref());
    if Conditions::of(&source_conditions(headers)).evaluate(&tags, super::etag::last_modified(head)).is_err() {
        return Err(precondition_failed());
    }
    out.insert(X_AMZ_COPY_SOURCE, header_value(&how.source.upstream_value())?);
    out.insert(X_AMZ_COPY_SOURCE_IF_MATCH, etag);
    out.insert(X_AMZ_METADATA_DIRECTIVE, HeaderValue::from_static("REPLACE"));
    Ok(out)
}

/// A plaintext source's answer, as the copy's input.
fn plain_source(resp: Response<UpstreamIncoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    super::response::scrub_upstream_headers(&mut parts.headers);
    Response::from_parts(parts, body.map_err(|e| -> crate::error::BoxError { Box::new(e) }).boxed_unsync())
}

/// The client's `x-amz-copy-source-if-*` conditions as the conditional headers of a read of the source.
fn source_conditions(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (from, to) in [
        ("x-amz-copy-source-if-match", http::header::IF_MATCH),
        ("x-amz-copy-source-if-none-match", http::header::IF_NONE_MATCH),
        ("x-amz-copy-source-if-modified-since", http::header::IF_MODIFIED_SINCE),
        ("x-amz-copy-source-if-unmodified-since", http::header::IF_UNMODIFIED_SINCE),
    ] {
        if let Some(v) = headers.get(from) {
            out.insert(to, v.clone());
        }
    }
    out
}

/// A failed read of the copy source, as S3 reports it for a copy.
async fn source_error(resp: Response<UpstreamIncoming>, is_head: bool) -> ProxyError {
    let (p, body) = resp.into_parts();
    match p.status {
        StatusCode::NOT_MODIFIED | StatusCode::PRECONDITION_FAILED => precondition_failed(),
        StatusCode::NOT_FOUND if is_head => ProxyError::Upstream {
            status: StatusCode::NOT_FOUND,
            code: "NoSuchKey".into(),
            message: "The specified key does not exist.".into(),
            headers: Vec::new(),
        },
        status => crate::store::reply::error(status, &p.headers, body, is_head).await,
    }
}

/// True for `x-amz-metadata-directive: REPLACE`.
fn replaces_metadata(headers: &HeaderMap) -> Result<bool, ProxyError> {
    match header_str(headers, &X_AMZ_METADATA_DIRECTIVE).map(str::trim) {
        None | Some("COPY") => Ok(false),
        Some("REPLACE") => Ok(true),
        Some(_) => Err(RequestError::InvalidArgument("Unknown metadata directive.".into()).into()),
    }
}

/// The total size a `Content-Range: bytes a-b/total` names.
fn content_range_total(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, &http::header::CONTENT_RANGE)?.rsplit_once('/')?.1.trim().parse().ok()
}

/// A CopyObject of the current version onto itself that changes nothing S3 lets such a copy change: S3 refuses it.
/// (The proxy's own copies change the envelope, so the store would not see it as one.)
fn copies_onto_itself_unchanged(source: &CopySource, target: &Target, headers: &HeaderMap) -> bool {
    let changes = ["x-amz-storage-class", "x-amz-website-redirect-location"].iter().any(|h| headers.contains_key(*h))
        || headers.keys().any(|n| n.as_str().starts_with("x-amz-server-side-encryption"));
    source.version_id.is_none() && source.target.bucket == target.bucket && source.target.key == target.key && !changes
}

/// The client's headers that apply to the destination object of a copy as they are: tagging, ACL, storage class,
/// object lock, conditional writes (not the copy mechanics, metadata and content headers, which the proxy states).
const DESTINATION_HEADERS: [&str; 17] = [
    "x-amz-expected-bucket-owner",
    "x-amz-request-payer",
    "x-amz-acl",
    "x-amz-grant-full-control",
    "x-amz-grant-read",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-storage-class",
    "x-amz-tagging",
    "x-amz-tagging-directive",
    "x-amz-website-redirect-location",
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
    "x-amz-checksum-algorithm",
    "if-match",
    "if-none-match",
];

/// The client's [`DESTINATION_HEADERS`] that `op` (CopyObject, or the PutObject of a copy through the proxy) takes.
fn destination_headers(client: &HeaderMap, op: S3Op) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in client {
        if DESTINATION_HEADERS.contains(&name.as_str()) && crate::store::allow::client_header(op, name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Content headers and user metadata for the destination: the source's (COPY) or the client's (REPLACE).
fn described_by(source: &HeaderMap, client: &HeaderMap, replace: bool, out: &mut HeaderMap) {
    let from = if replace { client } else { source };
    for name in KEPT_ON_REPLACE {
        if name.as_str() == "x-amz-storage-class" && client.contains_key(&name) {
            continue; // the client's storage class applies either way (set by destination_headers)
        }
        if let Some(v) = from.get(&name) {
            out.insert(name, v.clone());
        }
    }
    crate::store::strip_aws_chunked_encoding(out);
    for (name, value) in from {
        let n = name.as_str();
        if n.starts_with("x-amz-meta-") && !n.starts_with(crate::crypto::format::META_PREFIX) {
            out.append(name.clone(), value.clone());
        }
    }
}

/// How a metadata-only copy re-wraps: the destination's protection; the source, its head and its envelope; the
/// source's SSE-C key; the metadata directive.
struct Rewrap<'a> {
    protection: &'a Protection,
    source: &'a CopySource,
    source_head: &'a HeaderMap,
    source_env: &'a Envelope,
    source_key: Option<&'a Arc<CustomerKey>>,
    replace: bool,
    /// The source's plaintext MD5 (from its sealed attributes), as an ETag.
    source_md5: Option<String>,
}

/// Where a streamed copy writes: the destination (an object, or a part of the upload `part_of` names), the
/// headers of the new object, the store's own SSE.
pub(super) struct Into<'a> {
    pub target: &'a Target,
    pub part_of: Option<&'a Query>,
    pub headers: HeaderMap,
    pub sse: Option<&'a StoreSse>,
}

/// How a streamed copy writes: encrypted under `dek` as stream `part`, or as plaintext.
pub(super) struct Sink {
    pub(super) dek: Option<Arc<DataKey>>,
    pub(super) part: u16,
}

impl Proxy {
    /// CopyObject or UploadPartCopy with an encrypted bucket on either side.
    pub(super) async fn copy(&self, ctx: &mut RequestCtx, r: Admitted) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, body: _ } = r;
        let source = ctx.copy_source.take().ok_or_else(|| ProxyError::Internal("a copy without a source".into()))?;
        if ctx.op == S3Op::UploadPartCopy {
            return self.copy_part(ctx, &head.headers, source).await;
        }
        self.copy_object(ctx, &head.headers, source).await
    }

    /// UploadPartCopy: the source's plaintext (a range of it) written as a part, encrypted under the destination
    /// upload's data key when it has one.
    async fn copy_part(
        &self,
        ctx: &mut RequestCtx,
        headers: &HeaderMap,
        source: CopySource,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let crypto = Arc::clone(&self.inner.crypto);
        // An encrypted bucket's upload ID carries the upload's data key; a plaintext upload's is the store's own.
        let upload = if ctx.encrypted && !ctx.plain_upload() {
            Some(open_upload(&crypto, &mut ctx.query, &ctx.identity, ctx.sse.customer())?)
        } else {
            unwrap_upload_id(&mut ctx.query);
            None
        };
        let part = ctx.query.required_part_number()?;
        let range = match header_str(headers, &X_AMZ_COPY_SOURCE_RANGE) {
            None => ClientRange::Whole,
            Some(r) => ClientRange::parse_copy_range(r).ok_or_else(|| {
                RequestError::InvalidArgument(
                    "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are \
                     the zero-based offsets of the first and last bytes to copy"
                        .into(),
                )
            })?,
        };
        let source_encrypted = source.target.bucket.as_deref().is_some_and(|b| crypto.encrypts(b));
        let source_key = copy_source_customer(headers)?;
        let sink = Sink { dek: upload.as_ref().map(|u| Arc::clone(&u.dek)), part };
        let sse_info = upload.as_ref().map(|u| u.sse_info(&crypto));
        let plain = self.read_source(&source, source_encrypted, range, headers, source_key.as_ref()).await?;
        if let ClientRange::From(a, Some(b)) = range {
            // The range must lie within the source (S3: InvalidRange), not be clipped to it.
            let got: Option<u64> = header_str(plain.headers(), &CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
            if got.is_none() || got != b.checked_sub(a).and_then(|d| d.checked_add(1)) {
                let size = content_range_total(plain.headers()).unwrap_or(0);
                return Err(ProxyError::InvalidRange { size });
            }
        }
        let into = Into { target: &ctx.target, part_of: Some(&ctx.query), headers: HeaderMap::new(), sse: None };
        let (etag, version) = self.write_streamed(into, plain, sink).await?;
        let etag = if upload.is_some() { super::etag::opaque(&etag) } else { etag };
        let body = xml::document(
            "CopyPartResult",
            &[("ETag", etag), ("LastModified", crate::util::time::iso8601(SystemTime::now()))],
            &[],
        );
        Ok(copy_response(body, version, sse_info.as_ref()))
    }

    /// CopyObject: a metadata-only re-wrap between encrypted objects, or the source's plaintext written anew.
    async fn copy_object(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        source: CopySource,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let crypto = Arc::clone(&self.inner.crypto);
        let source_key = copy_source_customer(headers)?;
        let source_encrypted = source.target.bucket.as_deref().is_some_and(|b| crypto.encrypts(b));
        let replace = replaces_metadata(headers)?;
        if !replace && copies_onto_itself_unchanged(&source, &ctx.target, headers) {
            return Err(RequestError::InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without changing the \
                 object's metadata, storage class, website redirect location or encryption attributes."
                    .into(),
            )
            .into());
        }
        let protection = if ctx.encrypted {
            crypto.protection(&ctx.identity.bucket, &ctx.identity.key, &ctx.sse).await?
        } else {
            Protection::Plaintext
        };
        if source_encrypted && !matches!(protection, Protection::Plaintext) {
            let how = (&protection, source_key.as_ref(), replace);
            if let Some(done) = self.try_rewrap(ctx, headers, &source, how).await? {
                return Ok(done);
            }
            // A legacy plaintext source (legacy_objects = "passthrough") or an S3 Encryption Client object: encrypt
            // its plaintext on the way.
        }
        let plain =
            self.read_source(&source, source_encrypted, ClientRange::Whole, headers, source_key.as_ref()).await?;
        let mut out = destination_headers(headers, S3Op::PutObject);
        described_by(plain.headers(), headers, replace, &mut out);
        // An encrypted source read whole shows its plaintext MD5 as its ETag when it is known.
        let shown = header_str(plain.headers(), &http::header::ETAG).and_then(super::etag::as_md5);
        let source_md5 = shown.filter(|_| source_encrypted);
        let (sink, sse_info, store_sse) = self.object_sink(ctx, headers, &protection, source_md5, &mut out).await?;
        let source_version = plain.headers().get(X_AMZ_VERSION_ID).cloned();
        let into = Into { target: &ctx.target, part_of: None, headers: out, sse: store_sse.as_ref() };
        let (etag, version) = self.write_streamed(into, plain, sink).await?;
        let etag = match (&sse_info, source_md5) {
            (Some(sse), Some(m)) if sse.shows_md5() => super::etag::md5_etag(&m),
            (Some(_), _) => super::etag::opaque(&etag),
            (None, _) => etag,
        };
        let body = xml::document(
            "CopyObjectResult",
            &[("ETag", etag), ("LastModified", crate::util::time::iso8601(SystemTime::now()))],
            &[],
        );
        let mut resp = copy_response(body, version, sse_info.as_ref());
        if let Some(v) = source_version {
            resp.headers_mut().insert(X_AMZ_COPY_SOURCE_VERSION_ID, v);
        }
        Ok(resp)
    }

    /// Between encrypted buckets, a copy of an s3crypt object is a re-wrap (`how`: the destination's protection,
    /// the source's SSE-C key, the metadata directive); `None` when the source is not one (it is then streamed).
    async fn try_rewrap(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        source: &CopySource,
        (protection, source_key, replace): (&Protection, Option<&Arc<CustomerKey>>, bool),
    ) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let crypto = &self.inner.crypto;
        // The source's conditions are evaluated here, against every form of its ETag (rewrap_headers).
        let read = StoreRequest::read_source(source, S3Op::HeadObject);
        let head = self.store().send(read).await?;
        if !head.status().is_success() {
            return Err(source_error(head, true).await);
        }
        let id = source_identity(source);
        let legacy = crypto.policy(&id.bucket, &id.key).legacy_objects;
        if super::s3ec::candidate(crypto, &id, head.headers()) {
            return Ok(None);
        }
        let Some(env) = envelope_or_policy(head.headers(), legacy)? else { return Ok(None) };
        let rewrap = Rewrap {
            protection,
            source,
            source_head: head.headers(),
            source_env: &env,
            source_key,
            replace,
            source_md5: None,
        };
        self.copy_by_rewrap(ctx, headers, rewrap).await.map(Some)
    }

    /// What a streamed CopyObject writes with: a fresh data key and envelope (added to `out`) under `protection`,
    /// or, to a pass-through destination, the store's own SSE as the client asked it.
    async fn object_sink(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        protection: &Protection,
        source_md5: Option<[u8; 16]>,
        out: &mut HeaderMap,
    ) -> Result<(Sink, Option<SseInfo>, Option<StoreSse>), ProxyError> {
        if matches!(protection, Protection::Plaintext) {
            return Ok((Sink { dek: None, part: SINGLE_PUT_PART }, None, StoreSse::from_client(headers)));
        }
        let (dek, mut env) = self.inner.crypto.new_object_key(&ctx.identity, protection, None).await?;
        if SseInfo::of(&env, ctx.sse.customer()).shows_md5()
            && let Some(m) = source_md5
        {
            env.attributes = Some(Attributes { md5: Some(m), ..Attributes::default() }.seal(&dek, &ctx.identity)?);
        }
        check_client_metadata(out, env.metadata_len())?;
        for (n, v) in env.to_headers() {
            out.insert(n, v);
        }
        let sink = Sink { dek: Some(Arc::new(dek)), part: SINGLE_PUT_PART };
        Ok((sink, Some(SseInfo::of(&env, ctx.sse.customer())), self.upstream_sse(&ctx.target)))
    }

    /// Encrypted to encrypted: the data key re-wrapped for the destination, the ciphertext copied by the store.
    async fn copy_by_rewrap(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        how: Rewrap<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let crypto = &self.inner.crypto;
        how.source_env.layout().map_err(|_| ProxyError::UnsealedObject)?;
        let source_id = source_identity(how.source);
        let dek = crypto.open_envelope(how.source_env, &source_id, how.source_key).await?;
        let mut new_env = crypto.wrap_for(&dek, &ctx.identity, how.protection, how.source_env.multipart).await?;
        let dest_customer = match how.protection {
            Protection::Customer(k) => Some(k),
            Protection::Keyring | Protection::Kms { .. } | Protection::Plaintext => None,
        };
        let sse = SseInfo::of(&new_env, dest_customer);
        // The source's sealed attributes, sealed again for the destination (the plaintext is the same).
        let attrs = match &how.source_env.attributes {
            Some(sealed) => Some(Attributes::open(sealed, &dek, &source_id)?),
            None => None,
        };
        let source_md5 = attrs.as_ref().and_then(|a| shown_md5(how.source_env, a));
        let how = Rewrap { source_md5: source_md5.as_ref().map(super::etag::md5_etag), ..how };
        if let Some(mut a) = attrs {
            if !sse.shows_md5() {
                a.md5 = None;
            }
            if !a.is_empty() {
                new_env.attributes = Some(a.seal(&dek, &ctx.identity)?);
            }
        }
        let shown_md5 = source_md5.filter(|_| sse.shows_md5());
        let out = rewrap_headers(headers, &how, &new_env)?;
        let copy = StoreRequest::new(S3Op::CopyObject, Method::PUT, &ctx.target)
            .headers(out)
            .sse(self.upstream_sse(&ctx.target).as_ref());
        let (h, body) = self.store().xml(copy, Xml::SlowResult).await?;
        let (_, top) = xml::records(&body, &["CopyObjectResult", "Part"])
            .ok_or_else(|| ProxyError::UpstreamProtocol("CopyObject result is not XML".into()))?;
        let field = |n: &str| xml::field(&top, n).unwrap_or_default().to_owned();
        let etag = shown_md5.as_ref().map_or_else(|| super::etag::opaque(&field("ETag")), super::etag::md5_etag);
        let doc = xml::document("CopyObjectResult", &[("ETag", etag), ("LastModified", field("LastModified"))], &[]);
        let version = header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned);
        let mut resp = copy_response(doc, version, Some(&sse));
        if let Some(v) = h.get(&X_AMZ_COPY_SOURCE_VERSION_ID) {
            resp.headers_mut().insert(X_AMZ_COPY_SOURCE_VERSION_ID, v.clone());
        }
        Ok(resp)
    }

    /// The copy source's plaintext (all of it, or `range`), decrypted and verified if it is encrypted.
    async fn read_source(
        &self,
        source: &CopySource,
        encrypted: bool,
        range: ClientRange,
        client: &HeaderMap,
        source_key: Option<&Arc<CustomerKey>>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // The client's copy-source conditions are evaluated here (the store knows only its own ETags).
        let conditions = Conditions::of(&source_conditions(client));
        let mut h = HeaderMap::new();
        let upstream_range =
            if encrypted { range.upstream_range(self.inner.crypto.segment_size) } else { range.as_header() };
        if let Some(r) = &upstream_range {
            h.insert(http::header::RANGE, header_value(r)?);
        }
        let resp = self.store().send(StoreRequest::read_source(source, S3Op::GetObject).headers(h.clone())).await?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            return Err(ProxyError::InvalidRange { size: 0 });
        }
        if !resp.status().is_success() {
            return Err(source_error(resp, false).await);
        }
        if !encrypted {
            let etag = header_str(resp.headers(), &http::header::ETAG).unwrap_or("");
            if conditions.evaluate(&[etag], super::etag::last_modified(resp.headers())).is_err() {
                return Err(precondition_failed());
            }
            return Ok(plain_source(resp));
        }
        match self.decrypt_source(resp, source, range, source_key, conditions).await? {
            ObjectResponse::Ready(r) => Ok(r),
            ObjectResponse::RefetchPlain => {
                // A legacy plaintext object: fetch the range as asked.
                if let Some(r) = range.as_header() {
                    h.insert(http::header::RANGE, header_value(&r)?);
                } else {
                    h.remove(http::header::RANGE);
                }
                let resp = self.store().send(StoreRequest::read_source(source, S3Op::GetObject).headers(h)).await?;
                if !resp.status().is_success() {
                    return Err(source_error(resp, false).await);
                }
                Ok(plain_source(resp))
            }
        }
    }

    /// An encrypted source's answer, decrypted and verified; a source written by the AWS S3 Encryption Client is
    /// read whole and verified (a copy migrates it).
    async fn decrypt_source(
        &self,
        resp: Response<UpstreamIncoming>,
        source: &CopySource,
        range: ClientRange,
        source_key: Option<&Arc<CustomerKey>>,
        conditions: Conditions,
    ) -> Result<ObjectResponse, ProxyError> {
        let crypto = &self.inner.crypto;
        let id = source_identity(source);
        let legacy = crypto.policy(&id.bucket, &id.key).legacy_objects;
        let ctx = ReadCtx::copy_source(crypto, &id, source_key, legacy, conditions);
        let resp = if super::s3ec::candidate(crypto, &id, resp.headers()) {
            match self.s3ec_read(resp, S3Op::GetObject, range, &ctx).await? {
                super::s3ec::S3ecRead::Done(r) => return Ok(ObjectResponse::Ready(r)),
                super::s3ec::S3ecRead::NotS3ec(r) => r,
            }
        } else {
            resp
        };
        get_response(resp, range, &ctx).await
    }

    /// PUTs `plain` (a decrypted source) to `into`, encrypted if `sink` has a key. Returns the ETag and version ID.
    pub(super) async fn write_streamed(
        &self,
        into: Into<'_>,
        plain: Response<ProxyBody>,
        sink: Sink,
    ) -> Result<(String, Option<String>), ProxyError> {
        let len: u64 = header_str(plain.headers(), &CONTENT_LENGTH)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ProxyError::UpstreamProtocol("copy source without Content-Length".into()))?;
        let body: UpstreamBody = plain
            .into_body()
            .map_err(|e| {
                ProxyError::find_in(&*e)
                    .cloned()
                    .unwrap_or_else(|| ProxyError::UpstreamProtocol(format!("reading the copy source: {e}")))
            })
            .boxed_unsync();
        let segment = self.inner.crypto.segment_size;
        let body = match &sink.dek {
            Some(dek) => super::body::encrypted_upload(body, len, dek, sink.part, segment, None)?,
            None => StoreBody::Object { body, len },
        };
        let put = match into.part_of {
            Some(query) => StoreRequest::new(S3Op::UploadPart, Method::PUT, into.target).client_query(query),
            None => StoreRequest::new(S3Op::PutObject, Method::PUT, into.target),
        };
        let put = put.headers(into.headers).sse(into.sse).body(body);
        let h = self.store().expect_ok(put).await?;
        let etag = header_str(&h, &http::header::ETAG)
            .map(str::to_owned)
            .ok_or_else(|| ProxyError::UpstreamProtocol("PUT without ETag".into()))?;
        Ok((etag, header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned)))
    }
}

/// A copy's 200 response: its XML document, version ID and the destination's SSE headers.
fn copy_response(body: Bytes, version: Option<String>, sse: Option<&SseInfo>) -> Response<ProxyBody> {
    let len = body.len();
    let mut resp = Response::new(super::response::full_body(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert(X_AMZ_VERSION_ID, v);
    }
    present_object(&mut resp, sse);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_conditions_and_destination_headers_are_split_correctly() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-copy-source-if-match", HeaderValue::from_static("\"e\""));
        h.insert("x-amz-copy-source", HeaderValue::from_static("/b/k"));
        h.insert("x-amz-tagging-directive", HeaderValue::from_static("REPLACE"));
        h.insert("x-amz-tagging", HeaderValue::from_static("a=b"));
        h.insert("x-amz-meta-x", HeaderValue::from_static("1"));
        h.insert("x-amz-metadata-directive", HeaderValue::from_static("REPLACE"));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(source_conditions(&h)[http::header::IF_MATCH], "\"e\"");
        let d = destination_headers(&h, S3Op::CopyObject);
        assert!(d.contains_key("x-amz-tagging") && d.contains_key("x-amz-tagging-directive"));
        assert!(
            !d.contains_key("x-amz-meta-x") && !d.contains_key(CONTENT_TYPE) && !d.contains_key("x-amz-copy-source")
        );
        let mut out = HeaderMap::new();
        described_by(&HeaderMap::new(), &h, true, &mut out);
        assert_eq!(out[CONTENT_TYPE], "text/plain");
        assert_eq!(out["x-amz-meta-x"], "1");
        assert!(replaces_metadata(&h).unwrap());
    }
}
