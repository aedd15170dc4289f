//! The request path (ARCHITECTURE.md). The front door (`front`) admits a request into one context — transport policy,
//! addressing, SigV4 from the head, rate limits, authorisation, classification, the keys it names, SSE — then
//! `dispatch` hands it to the handler of its operation family. Handlers build every request to the store through the
//! store client (`crate::store`). Errors are rendered once, here, as S3 XML.
//!
//! Handler rooms: `forward` (passthrough, and what needs no encryption), `write` (PutObject), `read` (GET / HEAD),
//! `multipart/` (uploads, reads by part, Complete and its seal), `copy`, `listing`, `s3ec` (objects of the AWS S3
//! Encryption Client), `maintenance` (rewrap, migrate). Beside them: `body` (request bodies), `object` and `range`
//! (what an encrypted object looks like to the client), `response` (store responses for the client), `limit`.

mod body;
mod buckets;
mod copy;
mod etag;
mod forward;
mod front;
mod limit;
mod listing;
pub mod maintenance;
mod multipart;
mod object;
mod post;
mod range;
mod read;
mod records;
mod response;
mod s3ec;
mod settings;
mod write;

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use tracing::Instrument;

use crate::config::UploadChecksum;
use crate::crypto::Crypto;
use crate::crypto::error::CryptoError;
use crate::error::{ProxyError, Side};
use crate::s3::Target;
use crate::s3::headers::{X_AMZ_ID_2, X_AMZ_REQUEST_ID};
use crate::s3::op::S3Op;
use crate::sigv4::error::AuthError;
use crate::sigv4::verify::Verifier;
use crate::store::{Store, StoreRequest};
use crate::upstream::Upstream;
use body::ClientIncoming;
use front::{Admitted, RequestCtx, RequestRecord};
use response::{empty_body, full_body};

pub use front::ConnInfo;
pub use response::ProxyBody;

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
    /// The system bucket exists (checked, or created, before the first record is written).
    records_ready: tokio::sync::OnceCell<()>,
    /// Buckets' settings made through the API, as last read.
    settings_cache: settings::SettingsCache,
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
    /// The bucket of the proxy's own records at the store (`upstream.system_bucket`): clients never reach it.
    pub system_bucket: String,
    /// How long bucket settings are used before they are read again.
    pub bucket_settings_refresh: std::time::Duration,
    /// The store's keys are file paths (the embedded store): keys with empty segments alias others and are refused.
    pub strict_keys: bool,
}

/// Whether the server had room for a request under `server.max_inflight_requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Yes,
    /// Answered 503 `SlowDown` with `Retry-After`.
    Full,
}

impl Proxy {
    pub fn new(verifier: Verifier, upstream: Arc<Upstream>, settings: ProxySettings, crypto: Arc<Crypto>) -> Proxy {
        let limits = limit::RateLimits::new(&settings.client_rates);
        let auth_failures = limit::FailureLimits::new(settings.auth_failures_per_address);
        let store = Store::new(upstream, settings.upload_checksum);
        let records_ready = tokio::sync::OnceCell::new();
        let settings_cache = settings::SettingsCache::new(settings.bucket_settings_refresh);
        Proxy {
            inner: Arc::new(Inner {
                verifier,
                store,
                settings,
                crypto,
                limits,
                auth_failures,
                records_ready,
                settings_cache,
            }),
        }
    }

    /// The upstream client (a reload keeps the embedded store's).
    pub fn upstream(&self) -> Arc<Upstream> {
        Arc::clone(self.inner.store.upstream())
    }

    /// The store client: every request to the store is built and sent through it.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The proxy's own records at the store (the system bucket).
    pub(crate) fn records(&self) -> records::Records<'_> {
        records::Records {
            store: self.store(),
            bucket: &self.inner.settings.system_bucket,
            ready: &self.inner.records_ready,
        }
    }

    /// Whether this configuration's keys are loaded and usable (`/readyz`).
    pub fn keys_ready(&self) -> bool {
        self.inner.crypto.keys_work()
    }

    /// Whether the upstream answers, with anything but a server error (a 403 of a credential without
    /// ListBuckets permission counts; a 503 does not): the readiness probe (a one-bucket ListBuckets, an operation
    /// every store knows).
    pub async fn upstream_reachable(&self) -> bool {
        let root = Target { bucket: None, key: None, virtual_hosted: false };
        let probe = StoreRequest::new(S3Op::ListBuckets, Method::GET, &root).param("max-buckets", "1");
        self.store().send(probe).await.is_ok_and(|r| !r.status().is_server_error())
    }

    /// Serves one request. Never fails: errors become S3 error responses. Every log line inside carries the request
    /// span (request id, and once known the principal, operation and bucket).
    pub async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        conn: &ConnInfo,
        room: Room,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let req = req.map(|b| crate::util::body::DrainOnDrop::new(body::client_stream(b)));
        let mut record = RequestRecord::of(&req);
        let method = req.method().clone();
        let span = tracing::info_span!(
            "request",
            request.id = %record.request_id,
            http.method = %method,
            principal = tracing::field::Empty,
            s3.op = tracing::field::Empty,
            s3.bucket = tracing::field::Empty,
        );
        let result = match room {
            Room::Yes => self.process(req, conn, &mut record).instrument(span.clone()).await,
            // Refused before any work: no verification, no store request, the body not read.
            Room::Full => Err(ProxyError::Overloaded),
        };
        let _entered = span.enter();
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                log_error(&e);
                count_error(&e);
                error_response(&e, &record)
            }
        };
        crate::metrics::request_done(
            record.op.map_or("Unknown", S3Op::as_str),
            resp.status().as_u16(),
            started.elapsed(),
        );
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&record.request_id) {
            h.insert(X_AMZ_REQUEST_ID, v.clone());
            h.insert(X_AMZ_ID_2, v);
        }
        h.insert(http::header::SERVER, HeaderValue::from_static("s3crypt"));
        audit(&record, &resp, started);
        tracing::debug!(
            http.status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        resp
    }

    /// The front door, then the handler of the request's operation family.
    async fn process(
        &self,
        req: Request<ClientIncoming>,
        conn: &ConnInfo,
        record: &mut RequestRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if let Some(location) = front::plain_http(&req, conn)? {
            return redirect(location);
        }
        if post::is_form_post(&req) {
            return self.post_object(req, conn, record).await;
        }
        let (mut ctx, admitted) = self.front_door(req, conn, record).await?;
        let span = tracing::Span::current();
        span.record("principal", ctx.client.access_key_id.as_str());
        span.record("s3.op", ctx.op.as_str());
        if let Some(b) = &ctx.target.bucket {
            span.record("s3.bucket", b.as_str());
        }
        let result = self.dispatch(&mut ctx, admitted).await;
        // The error document and the audit line are rendered from the context's record.
        *record = ctx.record;
        result
    }

    /// One handler per operation family (ARCHITECTURE.md says where a new operation goes).
    async fn dispatch(&self, ctx: &mut RequestCtx, r: Admitted) -> Result<Response<ProxyBody>, ProxyError> {
        if matches!(ctx.op, S3Op::CopyObject | S3Op::UploadPartCopy) && ctx.copies_encrypted(&self.inner.crypto) {
            return self.copy(ctx, r).await;
        }
        match ctx.op {
            S3Op::BucketPolicy => return self.bucket_policy(ctx, r).await,
            S3Op::DeleteBucket => return self.delete_bucket(ctx, r).await,
            _ => {}
        }
        if !ctx.encrypted || ctx.plain_upload() {
            return self.forward(ctx, r).await;
        }
        match ctx.op {
            S3Op::PutObject => self.put_object(ctx, r).await,
            S3Op::GetObject | S3Op::HeadObject => self.read_object(ctx, r).await,
            S3Op::CreateMultipartUpload => self.create_upload(ctx, r).await,
            S3Op::UploadPart => self.upload_part(ctx, r).await,
            S3Op::CompleteMultipartUpload => self.complete_upload(ctx, r).await,
            S3Op::AbortMultipartUpload | S3Op::ListParts => self.upload_by_id(ctx, r).await,
            S3Op::ListMultipartUploads => self.list_uploads(ctx, r).await,
            S3Op::BucketEncryption => self.bucket_encryption(ctx, r).await,
            S3Op::ListObjects | S3Op::ListObjectsV2 | S3Op::ListObjectVersions | S3Op::GetObjectAttributes => {
                self.listing(ctx, r).await
            }
            S3Op::ListBuckets
            | S3Op::CreateBucket
            | S3Op::DeleteBucket
            | S3Op::HeadBucket
            | S3Op::DeleteObjects
            | S3Op::BucketPolicy
            | S3Op::BucketConfig
            | S3Op::CopyObject
            | S3Op::DeleteObject
            | S3Op::UploadPartCopy
            | S3Op::ObjectConfig => self.forward(ctx, r).await,
        }
    }
}

/// 308 to the same host, path and query over https.
fn redirect(location: String) -> Result<Response<ProxyBody>, ProxyError> {
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(http::header::LOCATION, location)
        .body(empty_body())
        .map_err(|e| ProxyError::Internal(e.to_string()))
}

/// One audit line per request (`crate::util::audit`): who did what to which object, under which key, with
/// what outcome. Never a secret, a signature, an SSE-C key or object data: the key used is named by its
/// reference (`keyring:<id>`, a KMS key ARN, or `sse-c`).
fn audit(record: &RequestRecord, resp: &Response<ProxyBody>, started: Instant) {
    if !crate::util::audit::enabled() {
        return;
    }
    let h = resp.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    // What the proxy protected the object with (it names keyring keys, which the SSE-S3 headers do not); else
    // what the store's answer says.
    let (sse, key_id) = match resp.extensions().get::<object::AuditSse>() {
        Some(a) => (a.sse, a.key_id.as_deref()),
        None => match (get("x-amz-server-side-encryption"), get("x-amz-server-side-encryption-customer-algorithm")) {
            (_, Some(_)) => ("sse-c", None),
            (Some(mode), None) => (mode, get("x-amz-server-side-encryption-aws-kms-key-id")),
            (None, None) => ("none", None),
        },
    };
    let version = record.version.as_deref().or_else(|| get("x-amz-version-id"));
    crate::util::audit::write(&crate::util::audit::Record {
        request_id: &record.request_id,
        principal: record.principal.as_deref().unwrap_or("-"),
        op: record.op.map_or("-", S3Op::as_str),
        bucket: record.bucket.as_deref().unwrap_or("-"),
        key: record.key.as_deref().unwrap_or("-"),
        version: version.unwrap_or("-"),
        sse,
        key_id: key_id.unwrap_or("-"),
        status: resp.status().as_u16(),
        bytes_in: record.bytes_in.unwrap_or(0),
        bytes_out: get("content-length").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        latency_ms: started.elapsed().as_millis() as u64,
    });
}

/// The error metrics: refused authentication by reason, stored objects that failed authentication.
fn count_error(e: &ProxyError) {
    if e.code() == "SlowDown" {
        crate::metrics::throttled(match e.side() {
            Side::Upstream => "store",
            Side::Client | Side::Internal => "proxy",
        });
    }
    let reason = match e {
        ProxyError::Auth(AuthError::AccessDenied(_)) => "AccessDenied",
        ProxyError::Auth(AuthError::HeadersNotSigned(_)) => "HeadersNotSigned",
        ProxyError::Auth(AuthError::RequestExpired { .. }) => "RequestExpired",
        ProxyError::InsecureTransport => "InsecureTransport",
        ProxyError::Auth(AuthError::InvalidAccessKeyId { .. }) => "InvalidAccessKeyId",
        ProxyError::Auth(AuthError::SignatureDoesNotMatch(_)) => "SignatureDoesNotMatch",
        ProxyError::Auth(AuthError::RequestTimeTooSkewed { .. }) => "RequestTimeTooSkewed",
        ProxyError::Auth(AuthError::AuthorizationHeaderMalformed { .. }) => "AuthorizationHeaderMalformed",
        ProxyError::Auth(AuthError::AuthorizationQueryParametersError(_)) => "AuthorizationQueryParametersError",
        ProxyError::Auth(AuthError::InvalidToken) => "InvalidToken",
        ProxyError::Crypto(CryptoError::Integrity(_)) => {
            crate::metrics::integrity_failure("refused");
            return;
        }
        _other => return,
    };
    crate::metrics::auth_failure(reason);
}

/// The error of a request, logged inside its span (which names the request, principal, operation and bucket).
fn log_error(e: &ProxyError) {
    match e.side() {
        Side::Client => tracing::info!(s3.code = e.code(), error = %e, "client error"),
        Side::Upstream => tracing::warn!(s3.code = e.code(), error = %e, "upstream error"),
        Side::Internal => tracing::error!(s3.code = e.code(), error = %e, "internal error"),
    }
}

fn error_response(e: &ProxyError, record: &RequestRecord) -> Response<ProxyBody> {
    let body = if record.is_head { empty_body() } else { full_body(e.to_xml(&record.resource, &record.request_id)) };
    let mut resp = Response::new(body);
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    if !record.is_head {
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    }
    for (k, v) in e.extra_headers() {
        h.insert(k, v);
    }
    // The request body was not read to its end (and is not being drained), or the client waits for `100 Continue`
    // before it sends it (an answer now leaves the connection in a state neither side can tell): do not reuse it.
    let unread = record.body.as_ref().is_some_and(|b| !b.keeps_connection());
    let awaited = record.expect_continue && record.body.as_ref().is_some_and(|b| !b.finished());
    if unread || awaited {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
