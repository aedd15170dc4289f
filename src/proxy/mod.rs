//! The request path: transport policy → addressing → SigV4 verification (from headers, before the body is
//! touched) → authorisation → operation → body transform → upstream request (re-signed) → response
//! (scrubbed). Errors are rendered once, here, as S3 XML.

mod copy;
mod encrypted;
mod limit;
pub mod maintenance;
mod multipart;
mod response;
mod s3ec;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;

use crate::config::DefaultProtection;
use crate::config::{ClientCredential, PlainHttpPolicy, UploadChecksum};
use crate::crypto::body::EncryptBody;
use crate::crypto::envelope::{Multipart, check_client_metadata};
use crate::crypto::format::{SINGLE_PUT_PART, ciphertext_len};
use crate::crypto::keys::{ObjectIdentity, random_bytes};
use crate::crypto::{Crypto, Protection};
use crate::error::{BoxError, ProxyError, Side};
use crate::s3::checksum::ChecksumAlgorithm;
use crate::s3::headers::{
    X_AMZ_CHECKSUM_ALGORITHM, X_AMZ_CHECKSUM_TYPE, X_AMZ_COPY_SOURCE, X_AMZ_DECODED_CONTENT_LENGTH, X_AMZ_ID_2,
    X_AMZ_MP_PARTS_COUNT, X_AMZ_REQUEST_ID,
};
use crate::s3::op::{S3Op, classify};
use crate::s3::sse::{SseRequest, copy_source_customer};
use crate::s3::{Target, resolve_target};
use crate::sigv4::EMPTY_SHA256;
use crate::sigv4::canonical::percent_decode;
use crate::sigv4::chunked::{AwsChunkedBody, ChunkChain, ChunkedSpec, VerifiedChecksum};
use crate::sigv4::payload::{CheckedBody, Checks};
use crate::sigv4::verify::{Authenticated, ChunkSigningContext, PayloadMode, RequestHead, Verifier};
use crate::store::{Store, StoreBody, StoreRequest, StoreSse};
use crate::upstream::{Upstream, UpstreamBody};
use encrypted::ClientRange;
use encrypted::SseInfo;

/// Response bodies sent to clients.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// How the connection a request arrived on was made.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Arrived over TLS.
    pub secure: bool,
    /// Policy for plain-HTTP requests (ignored when `secure`).
    pub plain_http: PlainHttpPolicy,
    /// Port of the https listener, for redirects.
    pub redirect_port: Option<u16>,
    /// The client's address (its TCP peer).
    pub peer: Option<std::net::IpAddr>,
}

/// The proxy: shared, cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Verifier,
    store: Store,
    settings: ProxySettings,
    crypto: Arc<Crypto>,
    limits: limit::RateLimits,
    auth_failures: limit::FailureLimits,
}

/// What the request path needs from the configuration.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Virtual-hosted-style base domains.
    pub base_domains: Vec<String>,
    /// How upload bodies are framed towards the store.
    pub upload_checksum: UploadChecksum,
    /// A slow CompleteMultipartUpload answers 200 after this and sends spaces until its result.
    pub slow_response_keepalive: std::time::Duration,
    /// The store's CopyObject size limit.
    pub max_copy_size: u64,
    /// An upload body that stalls this long fails with `RequestTimeout`.
    pub body_read_timeout: std::time::Duration,
    /// Requests per second, by access key id, for the clients that have a limit.
    pub client_rates: std::collections::HashMap<String, u32>,
    /// Failed authentications per second one client address may cause (0: no limit).
    pub auth_failures_per_address: u32,
    /// The store's keys are file paths (the embedded store): keys with empty segments alias others and are refused.
    pub strict_keys: bool,
}

/// A client's request body, with its idle deadline.
pub(crate) type ClientBody = crate::util::body::IdleTimeout<Incoming>;

pub(crate) fn full_body(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Everything the error rendering needs to know about the request.
struct RequestView {
    request_id: String,
    resource: String,
    is_head: bool,
    body_unread: bool,
    op: Option<S3Op>,
    /// For the audit log: the authenticated access key id, the object, its version, the body length.
    principal: Option<String>,
    bucket: Option<String>,
    key: Option<String>,
    version: Option<String>,
    bytes_in: Option<u64>,
}

impl Proxy {
    pub fn new(verifier: Verifier, upstream: Arc<Upstream>, settings: ProxySettings, crypto: Arc<Crypto>) -> Proxy {
        let limits = limit::RateLimits::new(&settings.client_rates);
        let auth_failures = limit::FailureLimits::new(settings.auth_failures_per_address);
        let store = Store::new(upstream, settings.upload_checksum);
        Proxy { inner: Arc::new(Inner { verifier, store, settings, crypto, limits, auth_failures }) }
    }

    /// The upstream client (a reload keeps the embedded store's).
    pub fn upstream(&self) -> Arc<Upstream> {
        Arc::clone(self.inner.store.upstream())
    }

    /// The store client: every request to the store is built and sent through it.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether the upstream answers at all (any HTTP status): the readiness probe (a one-bucket ListBuckets, an
    /// operation every store knows).
    pub async fn upstream_reachable(&self) -> bool {
        let root = Target { bucket: None, key: None, virtual_hosted: false };
        let probe = StoreRequest::new(S3Op::ListBuckets, Method::GET, &root).param("max-buckets", "1");
        self.store().send(probe).await.is_ok()
    }

    /// Serves one request. Never fails: errors become S3 error responses.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        let request_id = crate::util::new_request_id();
        let started = Instant::now();
        let method = req.method().clone();
        let mut view = RequestView {
            request_id: request_id.clone(),
            resource: req.uri().path().to_owned(),
            is_head: req.method() == Method::HEAD,
            body_unread: has_body(req.headers()),
            op: None,
            principal: None,
            bucket: None,
            key: None,
            version: None,
            bytes_in: req
                .headers()
                .get(X_AMZ_DECODED_CONTENT_LENGTH)
                .or_else(|| req.headers().get(CONTENT_LENGTH))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        };
        let result = self.process(req, conn, &mut view).await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                log_error(&e, &view, &request_id);
                count_error(&e);
                error_response(&e, &view, &request_id)
            }
        };
        crate::metrics::request_done(
            view.op.map_or("Unknown", S3Op::as_str),
            resp.status().as_u16(),
            started.elapsed(),
        );
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert(X_AMZ_REQUEST_ID, v.clone());
            h.insert(X_AMZ_ID_2, v);
        }
        h.insert(http::header::SERVER, HeaderValue::from_static("s3crypt"));
        audit(&view, &resp, started);
        tracing::debug!(
            request.id = %request_id,
            http.method = %method,
            s3.op = view.op.map_or("-", S3Op::as_str),
            http.status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        resp
    }

    async fn process(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        view: &mut RequestView,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if !conn.secure {
            match conn.plain_http {
                PlainHttpPolicy::Refuse => return Err(ProxyError::InsecureTransport),
                PlainHttpPolicy::Redirect => return redirect_to_https(&req, conn.redirect_port),
                PlainHttpPolicy::Allow => {}
            }
        }
        let host = request_host(&req).ok_or(ProxyError::InvalidArgument("missing Host header".into()))?;
        let target = resolve_target(&host, req.uri().path(), &self.inner.settings.base_domains)?;
        view.resource = target.resource();

        let vhost_bucket = target.virtual_hosted.then_some(target.bucket.as_deref()).flatten();
        let head = RequestHead { method: req.method(), uri: req.uri(), headers: req.headers(), vhost_bucket };
        // An address that keeps failing authentication is answered SlowDown without verifying anything.
        if let Some(ip) = conn.peer
            && self.inner.auth_failures.blocked(ip, Instant::now())
        {
            return Err(ProxyError::SlowDown);
        }
        let mut auth = match self.inner.verifier.verify(&head, SystemTime::now()) {
            Ok(a) => a,
            Err(e) => {
                if let Some(ip) = conn.peer {
                    self.inner.auth_failures.failed(ip, Instant::now());
                }
                return Err(e);
            }
        };
        // A presigned URL's signed header values are headers from here on: every check below (SSE, SSE-C over
        // plain HTTP, copy source, reserved metadata, classification) sees them, and they go upstream only as
        // those checks allow.
        let mut req = req;
        merge_query_headers(req.headers_mut(), std::mem::take(&mut auth.hoisted_headers))?;
        view.principal = Some(auth.client.access_key_id.clone());
        if !self.inner.limits.allow(&auth.client.access_key_id, Instant::now()) {
            return Err(ProxyError::SlowDown);
        }
        view.bucket = target.bucket.clone();
        view.key = target.key.clone();
        view.version = auth.query.iter().find(|(k, _)| k == "versionId").map(|(_, v)| v.clone());
        authorize(&auth.client, &target, req.headers())?;
        let op = classify(req.method(), &target, &auth.query, req.headers())?;
        view.op = Some(op);
        // No key may name something outside its bucket at the store, as the target or as a copy source.
        let strict = self.inner.settings.strict_keys;
        if let Some(key) = &target.key {
            crate::s3::check_key(key, strict)?;
        }
        if matches!(op, S3Op::CopyObject | S3Op::UploadPartCopy)
            && let Some(source) = copy::CopySource::from_headers(req.headers())?
        {
            crate::s3::validate_bucket_name(source.target.bucket.as_deref().unwrap_or(""), true)?;
            crate::s3::check_key(source.target.key.as_deref().unwrap_or(""), strict)?;
        }

        let (parts, body) = req.into_parts();
        let body = ClientBody::new(body, self.inner.settings.body_read_timeout, ProxyError::RequestTimeout);
        view.body_unread = false; // from here on the body is consumed by the upstream request or dropped
        let is_head = parts.method == Method::HEAD;
        let crypto = Arc::clone(&self.inner.crypto);
        let encrypted = target.bucket.as_deref().is_some_and(|b| crypto.encrypts(b));
        if encrypted {
            crate::crypto::envelope::refuse_reserved(&parts.headers)?;
        }
        let identity = ObjectIdentity {
            bucket: target.bucket.clone().unwrap_or_default(),
            key: target.key.clone().unwrap_or_default(),
        };
        // The client's SSE headers ask the proxy for a protection; they never reach the store as such. A customer
        // key is the proxy's to use or to refuse: never the store's, even for a pass-through bucket.
        let sse = if encrypted { SseRequest::from_headers(&parts.headers)? } else { SseRequest::None };
        if !encrypted && crate::s3::sse::has_customer_key(&parts.headers) {
            return Err(sse_c_not_here());
        }
        if let Some(source) = copy_source_bucket(&parts.headers)
            && !crypto.encrypts(&source)
            && copy_source_customer(&parts.headers)?.is_some()
        {
            return Err(sse_c_not_here());
        }
        let customer = sse.customer().cloned();
        if !conn.secure && (customer.is_some() || copy_source_customer(&parts.headers)?.is_some()) {
            return Err(ProxyError::InvalidRequest(
                "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure \
                 connection."
                    .into(),
            ));
        }
        let policy = crypto.policy(&identity.bucket, &identity.key);

        // Multipart uploads: the client's upload ID carries the data key; the upstream sees its own ID.
        let mut open_upload = None;
        let mut client_upload_id = None;
        // An upload created under a plaintext policy has the store's own ID, and passes through.
        let plain_upload = encrypted
            && policy.default == DefaultProtection::Plaintext
            && auth.query.iter().any(|(k, v)| k == "uploadId" && !Crypto::is_proxy_upload_id(v));
        if encrypted && !plain_upload {
            match op {
                S3Op::UploadPart | S3Op::UploadPartCopy | S3Op::CompleteMultipartUpload => {
                    open_upload = Some(multipart::open_upload(&crypto, &mut auth.query, &identity, customer.as_ref())?);
                }
                S3Op::AbortMultipartUpload | S3Op::ListParts => {
                    client_upload_id = multipart::unwrap_upload_id(&mut auth.query);
                }
                _other => {}
            }
        }
        if encrypted
            && op == S3Op::CompleteMultipartUpload
            && let Some(upload) = open_upload.take()
        {
            return self.complete_upload(&parts.headers, body, &target, &auth, &identity, upload, view).await;
        }
        // Copies with an encrypted bucket on either side go through the proxy's own copy.
        if matches!(op, S3Op::CopyObject | S3Op::UploadPartCopy)
            && let Some(source) = copy::CopySource::from_headers(&parts.headers)?
            && (encrypted || source.target.bucket.as_deref().is_some_and(|b| crypto.encrypts(b)))
        {
            if op == S3Op::UploadPartCopy && !encrypted {
                // A plaintext destination upload: its upload ID is the store's own.
                let _ = multipart::unwrap_upload_id(&mut auth.query);
            }
            return self.copy(op, &parts.headers, &target, &auth.query, source, &sse, open_upload.take()).await;
        }
        // GET / HEAD by part number: find the part's plaintext range (a HEAD) and read it as a Range.
        let mut part_read = None;
        if encrypted
            && matches!(op, S3Op::GetObject | S3Op::HeadObject)
            && auth.query.iter().any(|(k, _)| k == "partNumber")
        {
            match self.locate_part(op, &parts.headers, &target, &mut auth, &identity, customer.as_ref()).await? {
                multipart::Located::Done(resp) => return Ok(resp),
                multipart::Located::Read(p) => part_read = Some(p),
            }
        }

        // A new object or part in an encrypted bucket is encrypted under its data key, known before the body is read.
        let mut extra_set: Vec<(HeaderName, HeaderValue)> = Vec::new();
        let mut extra_remove: Vec<HeaderName> = Vec::new();
        let mut create_key = None;
        let mut sse_info = open_upload.as_ref().map(|u| u.sse_info(&crypto));
        let creates = matches!(op, S3Op::PutObject | S3Op::CreateMultipartUpload);
        // The store's own SSE: for an encrypted bucket what the policy asks of it on top (the client's SSE headers
        // asked the proxy); for a pass-through bucket the client's own request, SSE-C excepted (refused above).
        let store_sse = match (encrypted, creates) {
            (_, false) => None,
            (true, true) => policy.upstream_sse.map(StoreSse::Own),
            (false, true) => StoreSse::from_client(&parts.headers),
        };
        let protection = match (encrypted, op) {
            (true, S3Op::PutObject | S3Op::CreateMultipartUpload) => {
                Some(crypto.protection(&identity.bucket, &identity.key, &sse).await?)
            }
            _other => None,
        };
        let encryption = protection.as_ref().filter(|p| !matches!(p, Protection::Plaintext));
        let encrypting = match (op, encryption, &open_upload) {
            (S3Op::PutObject, Some(p), _) => {
                let (dek, env) = crypto.new_object_key(&identity, p, None).await?;
                check_client_metadata(&parts.headers, env.metadata_len())?;
                sse_info = Some(SseInfo::of(&env, customer.as_ref()));
                extra_set.extend(env.to_headers());
                Some(Encrypting { dek: Arc::new(dek), part: SINGLE_PUT_PART, segment_size: crypto.segment_size })
            }
            (S3Op::UploadPart, _, Some(upload)) => {
                let part = multipart::part_number(&auth.query)?;
                Some(Encrypting { dek: Arc::clone(&upload.dek), part, segment_size: crypto.segment_size })
            }
            (S3Op::CreateMultipartUpload, Some(p), _) => {
                let (dek, env) = crypto.new_object_key(&identity, p, Some(Multipart::Open)).await?;
                check_client_metadata(&parts.headers, multipart::sealed_envelope_len(&env))?;
                sse_info = Some(SseInfo::of(&env, customer.as_ref()));
                extra_set.extend(env.to_headers());
                // The client's checksum settings describe plaintext, which the proxy verifies itself. Parts go
                // upstream with a CRC32 trailer of their ciphertext, without declaring an algorithm for the
                // upload: stores then do not require (plaintext or ciphertext) checksums at Complete.
                extra_remove.extend([X_AMZ_CHECKSUM_ALGORITHM, X_AMZ_CHECKSUM_TYPE]);
                create_key = Some((dek, env));
                None
            }
            _other => None,
        };
        let verified: VerifiedChecksum = Arc::default();
        let upload = Upload { encrypting, chunk_signing: auth.chunk_signing.take(), verified: Arc::clone(&verified) };
        let store_body = prepare_body(op, &auth, &parts.headers, body, upload).await?;
        if op == S3Op::DeleteObjects
            && let StoreBody::Bytes(xml) = &store_body
        {
            let keys = crate::s3::xml::delete_keys(xml).ok_or(ProxyError::MalformedXml("Delete body"))?;
            for key in &keys {
                crate::s3::check_key(key, strict)?;
            }
        }
        let range = part_read.as_ref().map_or_else(|| ClientRange::parse(&parts.headers), |p| p.range);
        if encrypted && matches!(op, S3Op::GetObject | S3Op::HeadObject) {
            // The store serves ciphertext: ask for the covering segments, and for no ciphertext checksum.
            extra_remove.extend([http::header::RANGE, encrypted::X_AMZ_CHECKSUM_MODE]);
            if op == S3Op::GetObject
                && let Some(r) = range.upstream_range(crypto.segment_size)
                && let Ok(v) = HeaderValue::from_str(&r)
            {
                extra_set.push((http::header::RANGE, v));
            }
            if let Some(p) = &part_read
                && let Some(etag) = &p.etag
                && !parts.headers.contains_key(http::header::IF_MATCH)
            {
                // The part's range was computed from a HEAD: read the same object.
                extra_set.push((http::header::IF_MATCH, etag.clone()));
            }
        }
        let mut request = StoreRequest::new(op, parts.method.clone(), &target)
            .client_query(&auth.query)
            .client_headers(&parts.headers)
            .sse(store_sse.as_ref());
        for name in &extra_remove {
            request = request.without(name);
        }
        let request = request.pairs(extra_set).body(store_body);
        let mut resp = self.store().send(request).await?;
        if encrypted
            && op == S3Op::GetObject
            && matches!(range, ClientRange::Suffix(_))
            && (resp.status() == StatusCode::RANGE_NOT_SATISFIABLE || resp.status().is_server_error())
        {
            // Some stores (s3s-fs) fail a suffix range longer than the object instead of returning all of it:
            // fetch the whole object; the plan then skips to the segments needed.
            let whole = self
                .client_read(&parts.headers, &target, &auth.query, S3Op::GetObject)
                .without(&http::header::RANGE)
                .without(&encrypted::X_AMZ_CHECKSUM_MODE);
            resp = self.store().send(whole).await?;
        }
        if op.carries_object_data() {
            let mut r = response::map_response(resp, op, &auth.client, is_head).await?;
            if encrypted {
                encrypted::scrub_object_headers(r.headers_mut(), sse_info.as_ref());
            }
            echo_verified_checksum(r.headers_mut(), &parts.headers, &verified);
            return Ok(r);
        }
        if !encrypted {
            return response::map_response(resp, op, &auth.client, is_head).await;
        }
        let ok = resp.status().is_success();
        let read_ctx = encrypted::ReadCtx {
            crypto: &crypto,
            id: &identity,
            customer: customer.as_ref(),
            legacy: policy.legacy_objects,
        };
        if ok && part_read.is_some() && crate::crypto::s3ec::has_content_metadata(resp.headers()) {
            return Err(ProxyError::NotImplemented(
                "Reading a part of an object written by the AWS S3 Encryption Client is not supported; read a range.",
            ));
        }
        let resp = if ok
            && matches!(op, S3Op::GetObject | S3Op::HeadObject)
            && part_read.is_none()
            && s3ec::candidate(&crypto, &identity, resp.headers())
        {
            match self.s3ec_read(resp, op, range, &read_ctx).await? {
                s3ec::S3ecRead::Done(r) => return Ok(r),
                s3ec::S3ecRead::NotS3ec(r) => r,
            }
        } else {
            resp
        };
        match op {
            S3Op::GetObject if ok => match encrypted::get_response(resp, range, &read_ctx).await? {
                encrypted::ObjectResponse::Ready(mut r) => {
                    if let Some(count) = part_read.and_then(|p| p.parts_count) {
                        r.headers_mut().insert(X_AMZ_MP_PARTS_COUNT, HeaderValue::from(count));
                    }
                    Ok(r)
                }
                encrypted::ObjectResponse::RefetchPlain => {
                    // A plaintext object read under legacy_objects = "passthrough": fetch it as the client asked.
                    let again = self.client_read(&parts.headers, &target, &auth.query, S3Op::GetObject);
                    let resp = self.store().send(again).await?;
                    response::map_response(resp, op, &auth.client, is_head).await
                }
            },
            S3Op::GetObject if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                if let Some(e) = encrypted::range_not_satisfiable(resp.headers(), crypto.segment_size) {
                    return Err(e);
                }
                // The store did not say how large the object is (s3s-fs): ask it.
                let probe = self
                    .client_read(&parts.headers, &target, &auth.query, S3Op::HeadObject)
                    .without(&http::header::RANGE)
                    .without(&encrypted::X_AMZ_CHECKSUM_MODE);
                let head = self.store().send(probe).await?;
                let size = head
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .and_then(|c| crate::crypto::format::plaintext_len(c, crypto.segment_size, true))
                    .unwrap_or(0);
                Err(ProxyError::InvalidRange { size })
            }
            S3Op::HeadObject if ok => encrypted::head_response(resp, &read_ctx).await,
            S3Op::CreateMultipartUpload if ok && create_key.is_some() => {
                let r = response::map_response(resp, op, &auth.client, is_head).await?;
                let (dek, env) = create_key.ok_or_else(|| ProxyError::Internal("no key for the new upload".into()))?;
                let client_alg = parts.headers.get(X_AMZ_CHECKSUM_ALGORITHM).cloned();
                let mut r =
                    multipart::create_response(r, &crypto, &dek, &env, &identity, client_alg, customer.as_ref())
                        .await?;
                encrypted::scrub_object_headers(r.headers_mut(), sse_info.as_ref());
                Ok(r)
            }
            S3Op::GetObjectAttributes if ok => {
                let r = response::map_response(resp, op, &auth.client, is_head).await?;
                encrypted::object_attributes_response(r, crypto.segment_size).await
            }
            S3Op::ListParts if ok => {
                let r = response::map_response(resp, op, &auth.client, is_head).await?;
                let id = client_upload_id.unwrap_or_default();
                multipart::list_parts_response(r, crypto.segment_size, &id).await
            }
            S3Op::ListObjects | S3Op::ListObjectsV2
                if crypto.s3ec().enabled && crypto.s3ec().list_buckets.contains(&identity.bucket) =>
            {
                let r = response::map_response(resp, op, &auth.client, is_head).await?;
                self.s3ec_listing(r, &identity.bucket, &crypto.plaintext_prefixes(&identity.bucket)).await
            }
            S3Op::ListObjects | S3Op::ListObjectsV2 | S3Op::ListObjectVersions => {
                let r = response::map_response(resp, op, &auth.client, is_head).await?;
                encrypted::listing_response(r, crypto.segment_size, &crypto.plaintext_prefixes(&identity.bucket)).await
            }
            _other => {
                let mut r = response::map_response(resp, op, &auth.client, is_head).await?;
                crate::crypto::envelope::strip_reserved(r.headers_mut());
                Ok(r)
            }
        }
    }

    /// A read of the client's object (`op`: GetObject or HeadObject) with the client's query and the headers it
    /// may forward: the proxy's follow-up requests (a refetch, a size probe, a read by part number).
    pub(super) fn client_read(
        &self,
        headers: &HeaderMap,
        target: &Target,
        query: &[(String, String)],
        op: S3Op,
    ) -> StoreRequest {
        let method = if op == S3Op::HeadObject { Method::HEAD } else { Method::GET };
        StoreRequest::new(op, method, target).client_query(query).client_headers(headers)
    }
}

/// What an object upload carries besides its body.
struct Upload {
    /// Encryption of the body (PutObject, UploadPart on an encrypted bucket).
    encrypting: Option<Encrypting>,
    /// Signed chunks: the chain's seed.
    chunk_signing: Option<ChunkSigningContext>,
    /// Receives the trailer checksum once verified, to echo it.
    verified: VerifiedChecksum,
}

/// How an upload body is encrypted: the data key and the stream's part number (0 for PutObject).
struct Encrypting {
    dek: Arc<crate::crypto::keys::DataKey>,
    part: u16,
    segment_size: u32,
}

/// Largest non-object body (XML: CompleteMultipartUpload, DeleteObjects, bucket configuration) buffered.
const MAX_SMALL_BODY: usize = 8 * 1024 * 1024;
/// Largest object body taken (S3's largest object, 5 TiB): anything the client declares beyond it is
/// `EntityTooLarge` before any size arithmetic.
const MAX_OBJECT_BODY: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// A declared object-body length, bounded by [`MAX_OBJECT_BODY`].
fn bounded(len: u64) -> Result<u64, ProxyError> {
    if len > MAX_OBJECT_BODY { Err(ProxyError::EntityTooLarge) } else { Ok(len) }
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(ProxyError::InvalidArgument("Content-Length is not a number".into())),
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || declared_length(headers).ok().flatten().is_some_and(|n| n > 0)
}

fn empty_upstream_body() -> UpstreamBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The plaintext object data of a PutObject / UploadPart, decoded and checked, and its length.
fn object_data(
    auth: &Authenticated,
    chunk_signing: Option<ChunkSigningContext>,
    verified: VerifiedChecksum,
    headers: &HeaderMap,
    body: ClientBody,
) -> Result<(UpstreamBody, u64), ProxyError> {
    let length = declared_length(headers)?;
    let body_present = headers.contains_key(http::header::TRANSFER_ENCODING) || length.is_some_and(|n| n > 0);
    match &auth.payload {
        PayloadMode::Sha256(expected) => {
            if !body_present {
                if *expected != EMPTY_SHA256 {
                    return Err(ProxyError::ContentSha256Mismatch {
                        client: hex::encode(expected),
                        computed: hex::encode(EMPTY_SHA256),
                    });
                }
                Checks::new().from_headers(headers)?.finish()?;
                return Ok((empty_upstream_body(), 0));
            }
            let len = bounded(length.ok_or(ProxyError::MissingContentLength)?)?;
            let checks = Checks::new().sha256(*expected).from_headers(headers)?;
            Ok((CheckedBody::new(body, checks).boxed_unsync(), len))
        }
        PayloadMode::Unsigned => {
            if !body_present {
                Checks::new().from_headers(headers)?.finish()?;
                return Ok((empty_upstream_body(), 0));
            }
            let len = bounded(length.ok_or(ProxyError::MissingContentLength)?)?;
            Ok((CheckedBody::new(body, Checks::new().from_headers(headers)?).boxed_unsync(), len))
        }
        PayloadMode::StreamingUnsignedTrailer | PayloadMode::StreamingSigned | PayloadMode::StreamingSignedTrailer => {
            let mut spec = ChunkedSpec::from_headers(headers)?;
            spec.verified = Some(verified);
            let signed_trailer = auth.payload == PayloadMode::StreamingSignedTrailer;
            if auth.payload != PayloadMode::StreamingUnsignedTrailer {
                let ctx = chunk_signing.ok_or(ProxyError::InvalidRequest(
                    "Signed aws-chunked payloads need Authorization-header SigV4".into(),
                ))?;
                spec.signed = Some(ChunkChain { ctx, signed_trailer });
            }
            if auth.payload == PayloadMode::StreamingSigned && spec.trailer.is_some() {
                return Err(ProxyError::InvalidRequest(
                    "x-amz-trailer needs STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER".into(),
                ));
            }
            let checks = Checks::new().from_headers(headers)?;
            if spec.trailer.is_some()
                && headers.keys().any(|n| ChecksumAlgorithm::from_header_name(n.as_str()).is_some())
            {
                return Err(ProxyError::InvalidRequest(
                    "x-amz-trailer and an x-amz-checksum- header cannot both be given".into(),
                ));
            }
            let len = bounded(spec.decoded_length)?;
            let decoded = AwsChunkedBody::new(body, spec);
            if checks.is_empty() {
                Ok((decoded.boxed_unsync(), len))
            } else {
                Ok((CheckedBody::new(decoded, checks).boxed_unsync(), len))
            }
        }
    }
}

/// Chooses the body transform from the operation and the signed payload mode: object data decoded, checked and
/// (on an encrypted bucket) encrypted, for the store client to frame; a small body read whole and verified.
async fn prepare_body(
    op: S3Op,
    auth: &Authenticated,
    headers: &HeaderMap,
    body: ClientBody,
    upload: Upload,
) -> Result<StoreBody, ProxyError> {
    if op.carries_object_data() {
        let (mut data, mut len) = object_data(auth, upload.chunk_signing, upload.verified, headers, body)?;
        if let Some(enc) = upload.encrypting {
            let salt = random_bytes()?;
            let cipher_len = ciphertext_len(len, enc.segment_size);
            if enc.part != SINGLE_PUT_PART && cipher_len > multipart::MAX_PART_SIZE {
                return Err(ProxyError::EntityTooLarge);
            }
            data = EncryptBody::new(data, &enc.dek, enc.part, salt, enc.segment_size, len)
                .metered(op.as_str())
                .boxed_unsync();
            len = cipher_len;
        }
        return Ok(StoreBody::Object { body: data, len });
    }
    if auth.payload.is_aws_chunked() {
        return Err(ProxyError::InvalidRequest(
            "aws-chunked payloads are only allowed on PutObject and UploadPart".into(),
        ));
    }
    if !has_body(headers) {
        if let PayloadMode::Sha256(expected) = &auth.payload
            && *expected != EMPTY_SHA256
        {
            return Err(ProxyError::ContentSha256Mismatch {
                client: hex::encode(expected),
                computed: hex::encode(EMPTY_SHA256),
            });
        }
        return Ok(StoreBody::Empty);
    }
    // A small non-object body (XML): read it whole, check it, forward it with its own hash. Nothing reaches the
    // upstream before the body is complete and verified.
    Ok(StoreBody::Bytes(read_small_body(auth, headers, body).await?))
}

/// Reads a small non-object body (XML, at most `MAX_SMALL_BODY`) whole, verifying its signed hash and any
/// Content-MD5 / checksum header.
async fn read_small_body(auth: &Authenticated, headers: &HeaderMap, body: ClientBody) -> Result<Bytes, ProxyError> {
    if declared_length(headers)?.is_none() {
        return Err(ProxyError::MissingContentLength);
    }
    let mut checks = Checks::new().from_headers(headers)?;
    if let PayloadMode::Sha256(expected) = &auth.payload {
        checks = checks.sha256(*expected);
    }
    let limited = Limited::new(CheckedBody::new(body, checks), MAX_SMALL_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(match e.downcast::<ProxyError>() {
            Ok(pe) => *pe,
            Err(_too_large) => ProxyError::EntityTooLarge,
        }),
    }
}

/// The Host header, or the HTTP/2 `:authority`.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

/// Echoes the plaintext checksum the proxy verified (a header or a trailer), as S3 does on PutObject and
/// UploadPart; the store's own checksum (of ciphertext, or of what the proxy sent) was removed before.
fn echo_verified_checksum(out: &mut HeaderMap, request: &HeaderMap, verified: &VerifiedChecksum) {
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

/// The bucket named by `x-amz-copy-source` (`[/]bucket/key[?versionId=…]`, URL-encoded).
fn copy_source_bucket(headers: &HeaderMap) -> Option<String> {
    let src = headers.get(X_AMZ_COPY_SOURCE)?;
    let decoded = percent_decode(src.as_bytes());
    let text = String::from_utf8_lossy(&decoded);
    text.trim_start_matches('/').split('/').next().map(str::to_owned)
}

/// A client limited to some buckets may only touch those (also as a copy source).
fn authorize(client: &ClientCredential, target: &Target, headers: &HeaderMap) -> Result<(), ProxyError> {
    let Some(allowed) = &client.buckets else {
        return Ok(());
    };
    if let Some(b) = &target.bucket
        && !allowed.contains(b)
    {
        return Err(ProxyError::AccessDenied("Access Denied"));
    }
    if let Some(bucket) = copy_source_bucket(headers)
        && !allowed.contains(&bucket)
    {
        return Err(ProxyError::AccessDenied("Access Denied"));
    }
    Ok(())
}

/// 308 to the same host, path and query over https.
fn redirect_to_https<B>(req: &Request<B>, port: Option<u16>) -> Result<Response<ProxyBody>, ProxyError> {
    let host = request_host(req).ok_or(ProxyError::InvalidArgument("missing Host header".into()))?;
    let name = crate::s3::host_without_port(&host);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')) {
        return Err(ProxyError::InvalidArgument("invalid Host header".into()));
    }
    let name = if name.contains(':') { format!("[{name}]") } else { name };
    let authority = match port {
        Some(443) | None => name,
        Some(p) => format!("{name}:{p}"),
    };
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{authority}{pq}");
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(http::header::LOCATION, location)
        .body(empty_body())
        .map_err(|e| ProxyError::Internal(e.to_string()))
}

/// Adds the header values a presigned URL carries in its query to the request's headers. A name given twice,
/// or given as a header with another value, is refused: what goes upstream must be what was signed.
fn merge_query_headers(headers: &mut HeaderMap, from_query: Vec<(HeaderName, HeaderValue)>) -> Result<(), ProxyError> {
    for (i, (name, value)) in from_query.iter().enumerate() {
        if from_query[..i].iter().any(|(n, _)| n == name) {
            return Err(ProxyError::InvalidArgument(format!("query parameter {name} is given more than once").into()));
        }
        if let Some(existing) = headers.get(name)
            && existing != value
        {
            return Err(ProxyError::InvalidArgument(
                format!("{name} is given as a header and a query parameter with different values").into(),
            ));
        }
    }
    for (name, value) in from_query {
        headers.insert(name, value);
    }
    Ok(())
}

/// SSE-C on a bucket the proxy does not encrypt: the key would have to go to the store, which it never does.
fn sse_c_not_here() -> ProxyError {
    ProxyError::InvalidRequest(
        "Server-side encryption with customer-provided keys is not available for this bucket (the gateway stores it \
         as plaintext and never sends a customer key to the storage service)."
            .into(),
    )
}

/// One audit line per request (`crate::util::audit`): who did what to which object, under which key, with
/// what outcome. Never a secret, a signature, an SSE-C key or object data: the key used is named by its
/// reference (`keyring:<id>`, a KMS key ARN, or `sse-c`).
fn audit(view: &RequestView, resp: &Response<ProxyBody>, started: Instant) {
    if !crate::util::audit::enabled() {
        return;
    }
    let h = resp.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let (sse, key_id) =
        match (get("x-amz-server-side-encryption"), get("x-amz-server-side-encryption-customer-algorithm")) {
            (_, Some(_)) => ("sse-c", None),
            (Some(mode), None) => (mode, get("x-amz-server-side-encryption-aws-kms-key-id")),
            (None, None) => ("none", None),
        };
    let version = view.version.as_deref().or_else(|| get("x-amz-version-id"));
    crate::util::audit::write(&crate::util::audit::Record {
        request_id: &view.request_id,
        principal: view.principal.as_deref().unwrap_or("-"),
        op: view.op.map_or("-", S3Op::as_str),
        bucket: view.bucket.as_deref().unwrap_or("-"),
        key: view.key.as_deref().unwrap_or("-"),
        version: version.unwrap_or("-"),
        sse,
        key_id: key_id.unwrap_or("-"),
        status: resp.status().as_u16(),
        bytes_in: view.bytes_in.unwrap_or(0),
        bytes_out: get("content-length").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        latency_ms: started.elapsed().as_millis() as u64,
    });
}

/// The error metrics: refused authentication by reason, stored objects that failed authentication.
fn count_error(e: &ProxyError) {
    let reason = match e {
        ProxyError::AccessDenied(_) => "AccessDenied",
        ProxyError::HeadersNotSigned(_) => "HeadersNotSigned",
        ProxyError::RequestExpired { .. } => "RequestExpired",
        ProxyError::InsecureTransport => "InsecureTransport",
        ProxyError::InvalidAccessKeyId { .. } => "InvalidAccessKeyId",
        ProxyError::SignatureDoesNotMatch(_) => "SignatureDoesNotMatch",
        ProxyError::RequestTimeTooSkewed { .. } => "RequestTimeTooSkewed",
        ProxyError::AuthorizationHeaderMalformed { .. } => "AuthorizationHeaderMalformed",
        ProxyError::AuthorizationQueryParametersError(_) => "AuthorizationQueryParametersError",
        ProxyError::InvalidToken => "InvalidToken",
        ProxyError::ObjectIntegrity(_) => {
            crate::metrics::integrity_failure("refused");
            return;
        }
        _other => return,
    };
    crate::metrics::auth_failure(reason);
}

fn log_error(e: &ProxyError, view: &RequestView, request_id: &str) {
    let op = view.op.map_or("-", S3Op::as_str);
    match e.side() {
        Side::Client => {
            tracing::info!(request.id = %request_id, s3.op = op, s3.code = e.code(), error = %e, "client error")
        }
        Side::Upstream => {
            tracing::warn!(request.id = %request_id, s3.op = op, s3.code = e.code(), error = %e, "upstream error")
        }
        Side::Internal => {
            tracing::error!(request.id = %request_id, s3.op = op, s3.code = e.code(), error = %e, "internal error")
        }
    }
}

fn error_response(e: &ProxyError, view: &RequestView, request_id: &str) -> Response<ProxyBody> {
    let body = if view.is_head { empty_body() } else { full_body(e.to_xml(&view.resource, request_id)) };
    let mut resp = Response::new(body);
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    if !view.is_head {
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    }
    for (k, v) in e.extra_headers() {
        h.insert(k, v);
    }
    if view.body_unread {
        // The request body was never read: do not try to reuse the connection.
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_redirects_keep_host_path_and_query() {
        let req = Request::builder().uri("/b/k?x=1").header(HOST, "gw.example:8080").body(()).unwrap();
        let r = redirect_to_https(&req, Some(8443)).unwrap();
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[http::header::LOCATION], "https://gw.example:8443/b/k?x=1");
        let r = redirect_to_https(&req, Some(443)).unwrap();
        assert_eq!(r.headers()[http::header::LOCATION], "https://gw.example/b/k?x=1");
    }

    #[test]
    fn limited_clients_reach_only_their_buckets_also_as_copy_source() {
        let client = ClientCredential {
            access_key_id: "a".into(),
            secret_access_key: crate::util::secret::SecretString::new("s".into()),
            buckets: Some(["mine".to_owned()].into_iter().collect()),
        };
        let t = |b: &str| Target { bucket: Some(b.into()), key: Some("k".into()), virtual_hosted: false };
        assert!(authorize(&client, &t("mine"), &HeaderMap::new()).is_ok());
        assert!(authorize(&client, &t("other"), &HeaderMap::new()).is_err());
        let mut h = HeaderMap::new();
        h.insert(X_AMZ_COPY_SOURCE, HeaderValue::from_static("/other/k"));
        assert!(authorize(&client, &t("mine"), &h).is_err());
        h.insert(X_AMZ_COPY_SOURCE, HeaderValue::from_static("mine/k%20x"));
        assert!(authorize(&client, &t("mine"), &h).is_ok());
    }
}
