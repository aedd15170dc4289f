//! The front door: everything decided about a request before any handler runs, in one pass, into one context
//! (pingora's `CTX`). Transport policy, addressing, SigV4 (from the head, before the body is touched), rate limits,
//! authorisation, classification, the keys it names, the bucket's policy, SSE (with the bucket's default encryption),
//! the protection policy. Nothing here talks to the store but the bucket-settings cache (a read per bucket and
//! refresh interval, `settings.rs`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};

use super::Proxy;
use super::body::ClientBody;
use super::settings::BucketSettings;
use crate::config::{ClientCredential, PlainHttpPolicy};
use crate::crypto::keys::ObjectIdentity;
use crate::crypto::{Crypto, EffectivePolicy};
use crate::error::ProxyError;
use crate::proxy::body::ClientIncoming;
use crate::s3::error::{BodyError, RequestError};
use crate::s3::headers::X_AMZ_DECODED_CONTENT_LENGTH;
use crate::s3::op::{S3Op, classify};
use crate::s3::policy::{self, ConditionKey, Decision, Facts};
use crate::s3::query::Query;
use crate::s3::sse::{CustomerKey, SSE, SSE_KMS_KEY_ID, SseRequest, copy_source_customer, has_customer_key};
use crate::s3::{CopySource, Target, check_key, resolve_target, validate_bucket_name};
use crate::sigv4::error::AuthError;
use crate::sigv4::verify::{ChunkSigningContext, PayloadMode, RequestHead};
use crate::store::StoreSse;

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

/// What the error document and the audit line need to know about a request: known at its arrival (id, resource,
/// method, declared length) or learnt as the front door goes (principal, operation, object, version). The first part
/// of the request's context, the only one before the front door admitted it.
#[derive(Default)]
pub(super) struct RequestRecord {
    pub request_id: String,
    pub resource: String,
    pub is_head: bool,
    /// The request body, if it has one: how far it was read.
    pub body: Option<crate::util::body::BodyProgress>,
    /// The client sent `Expect: 100-continue` (it sends the body only once the proxy reads it).
    pub expect_continue: bool,
    pub op: Option<S3Op>,
    /// For the audit log: the authenticated access key id, the object, its version, the body length.
    pub principal: Option<String>,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub version: Option<String>,
    pub bytes_in: Option<u64>,
}

impl RequestRecord {
    pub fn of(req: &Request<ClientIncoming>) -> RequestRecord {
        let h = req.headers();
        RequestRecord {
            request_id: crate::util::new_request_id(),
            resource: req.uri().path().to_owned(),
            is_head: req.method() == Method::HEAD,
            // Whether the connection survives an answer sent before the body was read (DrainOnDrop).
            body: super::body::has_body(h).then(|| req.body().progress()),
            expect_continue: h
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")),
            op: None,
            principal: None,
            bucket: None,
            key: None,
            version: None,
            bytes_in: h
                .get(X_AMZ_DECODED_CONTENT_LENGTH)
                .or_else(|| h.get(CONTENT_LENGTH))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// One request's context (pingora's CTX is the model): its record, from its arrival to its audit line, and what
/// the front door established when it admitted it. Handlers read it and may refine it (`&mut`); the error document
/// and the audit line are rendered from its record afterwards.
pub(super) struct RequestCtx {
    /// Request id, resource, principal, object...: also for documents a handler renders itself (a slow Complete's
    /// error).
    pub record: RequestRecord,
    pub op: S3Op,
    pub target: Target,
    /// The bucket and key (empty when absent): what data keys are bound to.
    pub identity: ObjectIdentity,
    pub query: Query,
    pub client: Arc<ClientCredential>,
    /// How the body is signed, and the chain seed of signed chunks.
    pub payload: PayloadMode,
    pub chunk_signing: Option<ChunkSigningContext>,
    /// The bucket is encrypted (not a passthrough bucket).
    pub encrypted: bool,
    pub policy: EffectivePolicy,
    /// The client's SSE request (encrypted buckets; `None` elsewhere).
    pub sse: SseRequest,
    /// `x-amz-copy-source`, for copies.
    pub copy_source: Option<CopySource>,
    /// The bucket's settings made through the API (its policy, its default encryption), as the door read them.
    pub bucket_settings: Option<Arc<BucketSettings>>,
    /// Arrived over TLS, and from where: what a policy's conditions ask after the door (DeleteObjects' keys).
    pub secure: bool,
    pub peer: Option<std::net::IpAddr>,
}

impl RequestCtx {
    /// The client's SSE-C key, if it sent one.
    pub fn customer(&self) -> Option<&Arc<CustomerKey>> {
        self.sse.customer()
    }

    /// The store's own SSE for a request that creates an object: what the policy asks of it on top for an
    /// encrypted bucket (the client's SSE headers asked the proxy), the client's own request for a passthrough
    /// bucket (SSE-C excepted: refused at the door).
    pub fn store_sse(&self, headers: &HeaderMap) -> Option<StoreSse> {
        if !matches!(self.op, S3Op::PutObject | S3Op::CreateMultipartUpload | S3Op::CopyObject) {
            return None;
        }
        if self.encrypted { self.policy.upstream_sse.map(StoreSse::Own) } else { StoreSse::from_client(headers) }
    }

    /// An upload created under a plaintext policy: it has the store's own upload ID, and passes through.
    pub fn plain_upload(&self) -> bool {
        self.encrypted
            && self.policy.default == crate::config::DefaultProtection::Plaintext
            && self.query.upload_id().is_some_and(|id| !Crypto::is_proxy_upload_id(id))
    }

    /// A copy with an encrypted bucket on either side (the proxy's own copy; others are forwarded).
    pub fn copies_encrypted(&self, crypto: &Crypto) -> bool {
        self.copy_source
            .as_ref()
            .is_some_and(|s| self.encrypted || s.target.bucket.as_deref().is_some_and(|b| crypto.encrypts(b)))
    }
}

/// A request's parts before admission: head and body, where it goes, its query, and its operation when the
/// caller already knows it.
pub(super) struct Parts {
    pub head: http::request::Parts,
    pub body: ClientIncoming,
    pub target: Target,
    pub query: Query,
    pub op: Option<S3Op>,
}

/// Who signed a request, and how its body is signed.
pub(super) struct Signed {
    pub client: Arc<ClientCredential>,
    pub payload: PayloadMode,
    pub chunk_signing: Option<ChunkSigningContext>,
}

/// A request past the front door: its head (headers include a presigned URL's signed values) and its body.
pub(super) struct Admitted {
    pub head: http::request::Parts,
    pub body: ClientBody,
}

impl Proxy {
    /// Admits a request, or refuses it with the S3 error S3 would give. `record` learns what the error document and the
    /// audit line need as it becomes known, and becomes the record of the context.
    pub(super) async fn front_door(
        &self,
        req: Request<ClientIncoming>,
        conn: &ConnInfo,
        record: &mut RequestRecord,
    ) -> Result<(RequestCtx, Admitted), ProxyError> {
        let host = request_host(&req).ok_or(RequestError::InvalidArgument("missing Host header".into()))?;
        let target = resolve_target(&host, req.uri().path(), &self.inner.settings.base_domains)?;
        record.resource = target.resource();
        let mut auth = self.authenticate(&req, &target, conn)?;
        // A presigned URL's signed header values are headers from here on: every check below (SSE, SSE-C over
        // plain HTTP, copy source, reserved metadata, classification) sees them, and they go upstream only as
        // those checks allow.
        let (mut head, body) = req.into_parts();
        merge_query_headers(&mut head.headers, std::mem::take(&mut auth.hoisted_headers))?;
        let query = Query::new(std::mem::take(&mut auth.query));
        let client = Arc::clone(&auth.client);
        let signed = Signed { client, payload: auth.payload.clone(), chunk_signing: auth.chunk_signing.take() };
        self.admit(Parts { head, body, target, query, op: None }, signed, conn, record).await
    }

    /// What every admitted request goes through once its client is known (from SigV4 here, from a POST form's
    /// signed policy in `post.rs`): rate limit, authorisation, classification (unless `op` is given), names, the
    /// bucket's policy, SSE with the bucket's default encryption, the protection policy.
    pub(super) async fn admit(
        &self,
        parts: Parts,
        signed: Signed,
        conn: &ConnInfo,
        record: &mut RequestRecord,
    ) -> Result<(RequestCtx, Admitted), ProxyError> {
        let Parts { head, body, target, query, op } = parts;
        let Signed { client, payload, chunk_signing } = signed;
        record.principal = Some(client.access_key_id.clone());
        if !self.inner.limits.allow(&client.access_key_id, Instant::now()) {
            return Err(ProxyError::SlowDown);
        }
        (record.bucket, record.key) = (target.bucket.clone(), target.key.clone());
        record.version = query.version_id().map(str::to_owned);
        authorize(&client, &target, &head.headers, &self.inner.settings.system_bucket)?;
        let op = match op {
            Some(op) => op,
            None => classify(&head.method, &target, &query, &head.headers)?,
        };
        record.op = Some(op);
        let copy_source = match op {
            S3Op::CopyObject | S3Op::UploadPartCopy => CopySource::from_headers(&head.headers)?,
            _ => None,
        };
        self.check_names(&target, copy_source.as_ref())?;
        // The bucket's policy, where the client's transport, identity and SSE headers are known, before anything
        // else is checked (S3 evaluates bucket policies first); a copy's source bucket's policy too.
        let bucket_settings = match (&target.bucket, op) {
            (Some(b), op) if op != S3Op::CreateBucket => Some(self.bucket_settings(b).await?),
            _ => None,
        };
        let facts = PolicyFacts { headers: &head.headers, secure: conn.secure, peer: conn.peer, client: &client };
        // (The action is named only for a bucket that has a policy: most requests need no name.)
        if let (Some(settings), Some(bucket)) = (&bucket_settings, &target.bucket)
            && settings.policy.is_some()
        {
            facts.check(settings, &policy::action(op, &head.method, &query), bucket, target.key.as_deref(), op)?;
        }
        if let Some(source) = &copy_source
            && let Some(bucket) = &source.target.bucket
        {
            let settings = self.bucket_settings(bucket).await?;
            let action = if source.version_id.is_some() { "s3:GetObjectVersion" } else { "s3:GetObject" };
            facts.check(&settings, action, bucket, source.target.key.as_deref(), S3Op::GetObject)?;
        }
        let crypto = &self.inner.crypto;
        let encrypted = target.bucket.as_deref().is_some_and(|b| crypto.encrypts(b));
        let identity = ObjectIdentity {
            bucket: target.bucket.clone().unwrap_or_default(),
            key: target.key.clone().unwrap_or_default(),
        };
        let policy = crypto.policy(&identity.bucket, &identity.key);
        let mut sse = self.sse_of(op, &head.headers, encrypted, conn.secure)?;
        // An upload without SSE headers takes the bucket's default encryption (after the policy saw the headers as
        // sent, as at S3), unless the operator requires the headers or declared the prefix plaintext.
        if matches!(sse, SseRequest::None)
            && encrypted
            && matches!(op, S3Op::PutObject | S3Op::CreateMultipartUpload | S3Op::CopyObject)
            && !policy.require_sse
            && policy.default != crate::config::DefaultProtection::Plaintext
            && let Some(default) = bucket_settings.as_ref().and_then(|s| s.encryption.as_ref())
        {
            sse = default.as_request();
        }
        let body = ClientBody::new(body, self.inner.settings.body_read_timeout, BodyError::RequestTimeout.into());
        let ctx = RequestCtx {
            record: std::mem::take(record),
            op,
            target,
            identity,
            query,
            client,
            payload,
            chunk_signing,
            encrypted,
            policy,
            sse,
            copy_source,
            bucket_settings,
            secure: conn.secure,
            peer: conn.peer,
        };
        Ok((ctx, Admitted { head, body }))
    }

    /// SigV4 (or SigV2 presigned) from the head; an address that keeps failing gets SlowDown unverified.
    fn authenticate(
        &self,
        req: &Request<ClientIncoming>,
        target: &Target,
        conn: &ConnInfo,
    ) -> Result<crate::sigv4::verify::Authenticated, ProxyError> {
        let vhost_bucket = target.virtual_hosted.then_some(target.bucket.as_deref()).flatten();
        let head = RequestHead { method: req.method(), uri: req.uri(), headers: req.headers(), vhost_bucket };
        if let Some(ip) = conn.peer
            && self.inner.auth_failures.blocked(ip, Instant::now())
        {
            return Err(ProxyError::SlowDown);
        }
        self.inner.verifier.verify(&head, SystemTime::now()).map_err(ProxyError::from).inspect_err(|_| {
            if let Some(ip) = conn.peer {
                self.inner.auth_failures.failed(ip, Instant::now());
            }
        })
    }

    /// No key may name something outside its bucket at the store, as the target or as a copy source.
    fn check_names(&self, target: &Target, source: Option<&CopySource>) -> Result<(), ProxyError> {
        let strict = self.inner.settings.strict_keys;
        if let Some(key) = &target.key {
            check_key(key, strict)?;
        }
        if let Some(source) = source {
            validate_bucket_name(source.target.bucket.as_deref().unwrap_or(""), true)?;
            check_key(source.target.key.as_deref().unwrap_or(""), strict)?;
        }
        Ok(())
    }

    /// The client's SSE headers ask the proxy for a protection; they never reach the store as such. A customer key
    /// is the proxy's to use or to refuse: never the store's, even for a passthrough bucket.
    fn sse_of(&self, op: S3Op, headers: &HeaderMap, encrypted: bool, secure: bool) -> Result<SseRequest, ProxyError> {
        let crypto = &self.inner.crypto;
        // Reads name no SSE of their own: S3 refuses them (only SSE-C, which says which key to read with, is taken).
        if matches!(op, S3Op::GetObject | S3Op::HeadObject | S3Op::GetObjectAttributes)
            && [SSE, SSE_KMS_KEY_ID].iter().any(|h| headers.contains_key(h))
        {
            return Err(RequestError::InvalidArgument(
                "x-amz-server-side-encryption header is not supported for this operation.".into(),
            )
            .into());
        }
        if encrypted {
            crate::crypto::envelope::refuse_reserved(headers)?;
        }
        let sse = if encrypted { SseRequest::from_headers(headers)? } else { SseRequest::None };
        if !encrypted && has_customer_key(headers) {
            return Err(sse_c_not_here());
        }
        let source_key = copy_source_customer(headers)?;
        if let Some(source) = copy_source_bucket(headers)
            && !crypto.encrypts(&source)
            && source_key.is_some()
        {
            return Err(sse_c_not_here());
        }
        if !secure && (sse.customer().is_some() || source_key.is_some()) {
            return Err(RequestError::InvalidRequest(
                "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure \
                 connection."
                    .into(),
            )
            .into());
        }
        Ok(sse)
    }
}

/// Plain HTTP, as the listener says: refused, allowed (`None`), or redirected to the returned https URL (before
/// anything else is looked at).
pub(super) fn plain_http<B>(req: &Request<B>, conn: &ConnInfo) -> Result<Option<String>, ProxyError> {
    if conn.secure {
        return Ok(None);
    }
    match conn.plain_http {
        PlainHttpPolicy::Refuse => Err(ProxyError::InsecureTransport),
        PlainHttpPolicy::Redirect => redirect_location(req, conn.redirect_port).map(Some),
        PlainHttpPolicy::Allow => Ok(None),
    }
}

/// SSE-C on a bucket the proxy does not encrypt: the key would have to go to the store, which it never does.
fn sse_c_not_here() -> ProxyError {
    RequestError::InvalidRequest(
        "Server-side encryption with customer-provided keys is not available for this bucket (the gateway stores it \
         as plaintext and never sends a customer key to the storage service)."
            .into(),
    )
    .into()
}

/// The Host header, or the HTTP/2 `:authority`.
pub(super) fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

/// The bucket named by `x-amz-copy-source` (`[/]bucket/key[?versionId=…]`, URL-encoded).
fn copy_source_bucket(headers: &HeaderMap) -> Option<String> {
    let src = headers.get(crate::s3::headers::X_AMZ_COPY_SOURCE)?;
    let decoded = crate::util::uri::percent_decode(src.as_bytes());
    let text = String::from_utf8_lossy(&decoded);
    text.trim_start_matches('/').split('/').next().map(str::to_owned)
}

/// What a bucket policy's conditions are evaluated against: the request's SSE headers as sent, its transport, its
/// source address and its client.
pub(super) struct PolicyFacts<'a> {
    pub headers: &'a HeaderMap,
    pub secure: bool,
    pub peer: Option<std::net::IpAddr>,
    pub client: &'a ClientCredential,
}

impl PolicyFacts<'_> {
    /// `AccessDenied` when the bucket's policy denies `action` on the bucket or `key`. Bucket administrators always
    /// reach the policy itself (as an account's root user does at S3), so that no policy locks them out.
    pub fn check(
        &self,
        settings: &BucketSettings,
        action: &str,
        bucket: &str,
        key: Option<&str>,
        op: S3Op,
    ) -> Result<(), ProxyError> {
        let Some((policy, _)) = &settings.policy else { return Ok(()) };
        if op == S3Op::BucketPolicy && self.client.bucket_admin {
            return Ok(());
        }
        let resource = match key {
            Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
            None => format!("arn:aws:s3:::{bucket}"),
        };
        let header = |n: &str| self.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let value = |k: ConditionKey| match k {
            ConditionKey::SecureTransport => Some(self.secure.to_string()),
            ConditionKey::SourceIp => self.peer.map(|p| p.to_string()),
            ConditionKey::Sse => header("x-amz-server-side-encryption"),
            ConditionKey::SseKmsKeyId => header("x-amz-server-side-encryption-aws-kms-key-id"),
            ConditionKey::SseCustomerAlgorithm => header("x-amz-server-side-encryption-customer-algorithm"),
        };
        let facts = Facts { action, resource: &resource, principal: &self.client.access_key_id, value: &value };
        match policy.evaluate(&facts) {
            Decision::Deny(sid) => {
                tracing::info!(action, statement = sid.as_deref().unwrap_or("-"), "denied by the bucket policy");
                Err(AuthError::AccessDenied("Access Denied").into())
            }
            Decision::Allow | Decision::NotApplicable => Ok(()),
        }
    }
}

/// No client touches the system bucket (the proxy's own records); a client limited to some buckets may only touch
/// those (also as a copy source).
fn authorize(client: &ClientCredential, target: &Target, headers: &HeaderMap, system: &str) -> Result<(), ProxyError> {
    let source = copy_source_bucket(headers);
    if target.bucket.as_deref() == Some(system) || source.as_deref() == Some(system) {
        return Err(AuthError::AccessDenied("Access Denied").into());
    }
    let Some(allowed) = &client.buckets else {
        return Ok(());
    };
    if let Some(b) = &target.bucket
        && !allowed.contains(b)
    {
        return Err(AuthError::AccessDenied("Access Denied").into());
    }
    if let Some(bucket) = source
        && !allowed.contains(&bucket)
    {
        return Err(AuthError::AccessDenied("Access Denied").into());
    }
    Ok(())
}

/// The https URL of a plain-HTTP request: same host, path and query (the Host validated to a plain name or IP).
fn redirect_location<B>(req: &Request<B>, port: Option<u16>) -> Result<String, ProxyError> {
    let host = request_host(req).ok_or(RequestError::InvalidArgument("missing Host header".into()))?;
    let name = crate::s3::host_without_port(&host);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')) {
        return Err(RequestError::InvalidArgument("invalid Host header".into()).into());
    }
    let name = if name.contains(':') { format!("[{name}]") } else { name };
    let authority = match port {
        Some(443) | None => name,
        Some(p) => format!("{name}:{p}"),
    };
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    Ok(format!("https://{authority}{pq}"))
}

/// Adds the header values a presigned URL carries in its query to the request's headers. A name given twice,
/// or given as a header with another value, is refused: what goes upstream must be what was signed.
fn merge_query_headers(headers: &mut HeaderMap, from_query: Vec<(HeaderName, HeaderValue)>) -> Result<(), ProxyError> {
    for (i, (name, value)) in from_query.iter().enumerate() {
        if from_query[..i].iter().any(|(n, _)| n == name) {
            return Err(RequestError::InvalidArgument(
                format!("query parameter {name} is given more than once").into(),
            )
            .into());
        }
        if let Some(existing) = headers.get(name)
            && existing != value
        {
            return Err(RequestError::InvalidArgument(
                format!("{name} is given as a header and a query parameter with different values").into(),
            )
            .into());
        }
    }
    for (name, value) in from_query {
        headers.insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_redirects_keep_host_path_and_query() {
        let req = Request::builder().uri("/b/k?x=1").header(http::header::HOST, "gw.example:8080").body(()).unwrap();
        assert_eq!(redirect_location(&req, Some(8443)).unwrap(), "https://gw.example:8443/b/k?x=1");
        assert_eq!(redirect_location(&req, Some(443)).unwrap(), "https://gw.example/b/k?x=1");
        let bad = Request::builder().uri("/").header(http::header::HOST, "evil.example/x").body(()).unwrap();
        assert!(redirect_location(&bad, None).is_err());
    }

    #[test]
    fn limited_clients_reach_only_their_buckets_also_as_copy_source() {
        let client = ClientCredential {
            access_key_id: "a".into(),
            secret_access_key: crate::util::secret::SecretString::new("s".into()),
            buckets: Some(["mine".to_owned()].into_iter().collect()),
            bucket_admin: false,
        };
        let t = |b: &str| Target { bucket: Some(b.into()), key: Some("k".into()), virtual_hosted: false };
        assert!(authorize(&client, &t("mine"), &HeaderMap::new(), "sys").is_ok());
        assert!(authorize(&client, &t("other"), &HeaderMap::new(), "sys").is_err());
        let everyone = ClientCredential { buckets: None, ..client.clone() };
        assert!(authorize(&everyone, &t("sys"), &HeaderMap::new(), "sys").is_err(), "the system bucket");
        let mut h = HeaderMap::new();
        h.insert(crate::s3::headers::X_AMZ_COPY_SOURCE, HeaderValue::from_static("/other/k"));
        assert!(authorize(&client, &t("mine"), &h, "sys").is_err());
        h.insert(crate::s3::headers::X_AMZ_COPY_SOURCE, HeaderValue::from_static("mine/k%20x"));
        assert!(authorize(&client, &t("mine"), &h, "sys").is_ok());
    }

    #[test]
    fn presigned_header_values_join_the_headers_unless_they_conflict() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-acl", HeaderValue::from_static("private"));
        let n = |s: &'static str| HeaderName::from_static(s);
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(
            merge_query_headers(&mut h, vec![(n("x-amz-acl"), v("private")), (n("x-amz-tagging"), v("a=b"))]).is_ok()
        );
        assert_eq!(h["x-amz-tagging"], "a=b");
        assert!(merge_query_headers(&mut h, vec![(n("x-amz-acl"), v("public-read"))]).is_err());
        assert!(merge_query_headers(&mut h, vec![(n("x-amz-meta-a"), v("1")), (n("x-amz-meta-a"), v("1"))]).is_err());
    }
}
