//! What an encrypted bucket's object looks like to the client: the SSE headers the proxy answers with, the headers
//! that describe ciphertext removed, and GET and HEAD responses decrypted and authenticated (plaintext sizes, the
//! envelope hidden).

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

use super::etag::{Conditions, Unmet};
use super::range::{ClientRange, parse_content_range};
use super::response::ProxyBody;
use crate::config::LegacyPolicy;
use crate::crypto::Crypto;
use crate::crypto::attributes::Attributes;
use crate::crypto::body::{DecryptBody, ReadPlan};
use crate::crypto::envelope::{Envelope, USER_METADATA_LIMIT, strip_reserved};
use crate::crypto::error::CryptoError;
use crate::crypto::format::META_PREFIX;
use crate::crypto::format::plaintext_len;
use crate::crypto::keys::{DataKey, ObjectIdentity};
use crate::error::{BoxError, ProxyError};
use crate::s3::checksum::ChecksumAlgorithm;
use crate::s3::error::RequestError;
use crate::s3::sse::{CustomerKey, SSE, SSE_KMS_KEY_ID};
use crate::upstream::UpstreamIncoming;

const SSE_PREFIX: &str = "x-amz-server-side-encryption";
pub const X_AMZ_CHECKSUM_MODE: HeaderName = HeaderName::from_static("x-amz-checksum-mode");
const X_AMZ_CHECKSUM_TYPE: HeaderName = HeaderName::from_static("x-amz-checksum-type");

/// What the SSE response headers say about an object: how the proxy protected it.
#[derive(Debug, Clone)]
pub struct SseInfo {
    pub kek_ref: String,
    pub bucket_key: bool,
    pub context: Option<String>,
    /// SSE-C: the MD5 of the client's key (base64), as S3 returns it.
    pub customer_md5: Option<String>,
}

impl SseInfo {
    pub fn of(env: &Envelope, customer: Option<&Arc<CustomerKey>>) -> SseInfo {
        SseInfo {
            kek_ref: env.kek_ref.clone(),
            bucket_key: env.bucket_key.is_some(),
            context: env.context.clone(),
            customer_md5: customer.map(|k| k.md5_b64().to_owned()),
        }
    }

    /// Only a key reference known (an UploadPart: the upload ID carries no more).
    pub fn from_ref(kek_ref: &str, customer: Option<&Arc<CustomerKey>>) -> SseInfo {
        SseInfo {
            kek_ref: kek_ref.to_owned(),
            bucket_key: false,
            context: None,
            customer_md5: customer.map(|k| k.md5_b64().to_owned()),
        }
    }

    /// How the client sees the protection: the keyring is SSE-S3 (`AES256`, no key id, as S3 answers for its
    /// own managed keys); a KMS key is SSE-KMS with its ARN; a customer key is SSE-C with its MD5.
    pub fn mode(&self) -> SseMode {
        if self.kek_ref == crate::crypto::format::KEK_REF_SSE_C {
            SseMode::Customer
        } else if self.kek_ref.starts_with(crate::crypto::format::KEK_SCHEME_KMS) {
            SseMode::Kms
        } else {
            SseMode::S3
        }
    }

    /// What the audit line names: the mode as S3 names it and the key reference (never key material).
    pub fn audit(&self) -> AuditSse {
        let sse = match self.mode() {
            SseMode::S3 => "AES256",
            SseMode::Kms => "aws:kms",
            SseMode::Customer => "sse-c",
        };
        let key_id = self.kek_ref.strip_prefix("kms:").unwrap_or(&self.kek_ref);
        AuditSse { sse, key_id: (self.mode() != SseMode::Customer).then(|| key_id.to_owned()) }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        use crate::s3::sse::{SSE_BUCKET_KEY, SSE_C_ALGORITHM, SSE_C_KEY_MD5, SSE_CONTEXT};
        match self.mode() {
            SseMode::Customer => {
                headers.insert(SSE_C_ALGORITHM, HeaderValue::from_static("AES256"));
                if let Some(v) = self.customer_md5.as_deref().and_then(|m| HeaderValue::from_str(m).ok()) {
                    headers.insert(SSE_C_KEY_MD5, v);
                }
            }
            SseMode::S3 => {
                headers.insert(SSE, HeaderValue::from_static("AES256"));
            }
            SseMode::Kms => {
                headers.insert(SSE, HeaderValue::from_static("aws:kms"));
                let key_id = self.kek_ref.strip_prefix("kms:").unwrap_or(&self.kek_ref);
                if let Ok(v) = HeaderValue::from_str(key_id) {
                    headers.insert(SSE_KMS_KEY_ID, v);
                }
                if self.bucket_key {
                    headers.insert(SSE_BUCKET_KEY, HeaderValue::from_static("true"));
                }
                if let Some(v) = self.context.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
                    headers.insert(SSE_CONTEXT, v);
                }
            }
        }
    }
}

/// The three ways S3 describes server-side encryption to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseMode {
    /// SSE-S3 (`AES256`): the proxy's keyring.
    S3,
    /// SSE-KMS (`aws:kms`).
    Kms,
    /// SSE-C.
    Customer,
}

/// The protection of the object a response describes, for the audit line (a response extension: the response
/// headers no longer name keyring keys).
#[derive(Debug, Clone)]
pub struct AuditSse {
    pub sse: &'static str,
    pub key_id: Option<String>,
}

impl SseInfo {
    /// Whether the protection shows plaintext MD5 ETags (SSE-S3).
    pub fn shows_md5(&self) -> bool {
        self.mode() == SseMode::S3
    }
}

/// The plaintext MD5 an object shows as its ETag, from its opened attributes: SSE-S3 objects of one stream only.
pub fn shown_md5(env: &Envelope, attrs: &Attributes) -> Option<[u8; 16]> {
    attrs.md5.filter(|_| env.multipart.is_none() && SseInfo::of(env, None).shows_md5())
}

/// The ETag an SSE-S3 object shows from its opened attributes, as S3 gives it: the plaintext MD5 of an object of
/// one stream, the MD5 of the parts' MD5s (`"<hex>-<parts>"`) of one completed from parts. `None`: the opaque form.
pub fn shown_etag(env: &Envelope, attrs: &Attributes) -> Option<String> {
    if let Some(md5) = shown_md5(env, attrs) {
        return Some(super::etag::md5_etag(&md5));
    }
    let (parts, md5) = attrs.multipart_md5.filter(|_| env.multipart.is_some() && SseInfo::of(env, None).shows_md5())?;
    Some(super::etag::multipart_etag(parts, &md5))
}

/// The answer to a conditional read whose condition did not hold: a 304 with the object's ETag and Last-Modified,
/// or the 412 error.
pub fn unmet_response(
    unmet: Unmet,
    etag: &str,
    last_modified: Option<&HeaderValue>,
) -> Result<Response<ProxyBody>, ProxyError> {
    match unmet {
        Unmet::PreconditionFailed => Err(super::etag::precondition_failed()),
        Unmet::NotModified => {
            let mut r = Response::new(super::response::empty_body());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            if let Ok(v) = HeaderValue::from_str(etag) {
                r.headers_mut().insert(http::header::ETAG, v);
            }
            if let Some(v) = last_modified {
                r.headers_mut().insert(http::header::LAST_MODIFIED, v.clone());
            }
            Ok(r)
        }
    }
}

/// What reading an object of an encrypted bucket needs besides the response.
pub struct ReadCtx<'a> {
    pub crypto: &'a Crypto,
    pub id: &'a ObjectIdentity,
    pub customer: Option<&'a Arc<CustomerKey>>,
    pub legacy: LegacyPolicy,
    /// The client's conditional headers, evaluated here (the store never sees them: it knows other ETags).
    pub conditions: Conditions,
    /// `x-amz-checksum-mode: ENABLED`: answer with the sealed full-object checksum.
    pub checksum_mode: bool,
    /// A copy's source: a condition that does not hold is 412 (never 304).
    pub copy_source: bool,
}

impl ReadCtx<'_> {
    /// A read with no conditions and no checksum (a copy's source).
    pub fn plain<'a>(
        crypto: &'a Crypto,
        id: &'a ObjectIdentity,
        customer: Option<&'a Arc<CustomerKey>>,
        legacy: LegacyPolicy,
    ) -> ReadCtx<'a> {
        ReadCtx {
            crypto,
            id,
            customer,
            legacy,
            conditions: Conditions::default(),
            checksum_mode: false,
            copy_source: false,
        }
    }

    /// A copy's source, with the client's `x-amz-copy-source-if-*` conditions.
    pub fn copy_source<'a>(
        crypto: &'a Crypto,
        id: &'a ObjectIdentity,
        customer: Option<&'a Arc<CustomerKey>>,
        legacy: LegacyPolicy,
        conditions: Conditions,
    ) -> ReadCtx<'a> {
        ReadCtx { conditions, copy_source: true, ..ReadCtx::plain(crypto, id, customer, legacy) }
    }
}

/// Whether a request asks for checksums (`x-amz-checksum-mode: ENABLED`).
pub fn checksum_mode(headers: &HeaderMap) -> bool {
    headers.get(X_AMZ_CHECKSUM_MODE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"enabled"))
}

/// What a read shows of an encrypted object besides its data: the client's ETag (the plaintext MD5 of an SSE-S3
/// object when it is sealed in the envelope, else the opaque form of the store's), and the sealed checksum on
/// whole reads with checksum mode. Evaluates the client's conditions against both ETag forms first.
/// `dek`: the object's data key, if it was opened (the attributes need it).
fn present_read(
    headers: &mut HeaderMap,
    env: &Envelope,
    dek: Option<&DataKey>,
    ctx: &ReadCtx<'_>,
    whole: bool,
) -> Result<Result<(), (Unmet, String)>, ProxyError> {
    let store = headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let attrs = match (&env.attributes, dek) {
        (Some(sealed), Some(dek)) => Some(Attributes::open(sealed, dek, ctx.id)?),
        _ => None,
    };
    let opaque = super::etag::opaque(&store);
    let shown = attrs.as_ref().and_then(|a| shown_etag(env, a)).unwrap_or_else(|| opaque.clone());
    if let Err(unmet) = ctx.conditions.evaluate(&[&shown, &opaque], super::etag::last_modified(headers)) {
        let unmet = if ctx.copy_source { Unmet::PreconditionFailed } else { unmet };
        return Ok(Err((unmet, shown)));
    }
    if let Ok(v) = HeaderValue::from_str(&shown) {
        headers.insert(http::header::ETAG, v);
    }
    if whole
        && ctx.checksum_mode
        && let Some(shown) = attrs.and_then(|a| a.shown_checksum())
        && let Ok(v) = HeaderValue::from_str(&shown.value)
    {
        headers.insert(HeaderName::from_static(shown.algorithm.header_name()), v);
        headers.insert(X_AMZ_CHECKSUM_TYPE, HeaderValue::from_static(shown.kind));
    }
    Ok(Ok(()))
}

/// A plaintext object's answer to a conditional read (its own ETag: the store's): `Some` 304, a 412 error, or
/// `None` to answer with the object.
fn plain_conditions(headers: &HeaderMap, ctx: &ReadCtx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let store = headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("");
    match ctx.conditions.evaluate(&[store], super::etag::last_modified(headers)) {
        Ok(()) => Ok(None),
        Err(_) if ctx.copy_source => Err(super::etag::precondition_failed()),
        Err(unmet) => unmet_response(unmet, store, headers.get(http::header::LAST_MODIFIED)).map(Some),
    }
}

/// Drops what describes the stored ciphertext or the store's own encryption, and adds the gateway's SSE headers.
pub fn scrub_object_headers(headers: &mut HeaderMap, sse: Option<&SseInfo>) {
    super::response::scrub_upstream_headers(headers);
    strip_reserved(headers);
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            ChecksumAlgorithm::from_header_name(n.as_str()).is_some()
                || **n == X_AMZ_CHECKSUM_TYPE
                || n.as_str().starts_with(SSE_PREFIX)
                || *n == crate::s3::headers::CONTENT_MD5
        })
        .cloned()
        .collect();
    for n in drop {
        headers.remove(n);
    }
    if let Some(s) = sse {
        s.apply(headers);
    }
}

/// [`scrub_object_headers`] on a response, which also carries the protection for the audit line.
pub fn present_object<B>(resp: &mut Response<B>, sse: Option<&SseInfo>) {
    scrub_object_headers(resp.headers_mut(), sse);
    if let Some(s) = sse {
        resp.extensions_mut().insert(s.audit());
    }
}

/// [`present_object`] on a response's parts.
pub fn present_parts(parts: &mut http::response::Parts, sse: Option<&SseInfo>) {
    scrub_object_headers(&mut parts.headers, sse);
    if let Some(s) = sse {
        parts.extensions.insert(s.audit());
    }
}

/// What a GET / HEAD of an encrypted bucket's object turned into.
pub enum ObjectResponse {
    Ready(Response<ProxyBody>),
    /// A plaintext object under `legacy_objects = "passthrough"` whose upstream request was altered for
    /// decryption (its Range): it must be fetched again as the client asked.
    RefetchPlain,
}

fn not_applicable() -> ProxyError {
    RequestError::InvalidRequest("The encryption parameters are not applicable to this object.".into()).into()
}

fn plain_response(resp: Response<UpstreamIncoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    super::response::scrub_upstream_headers(&mut parts.headers);
    Response::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
}

/// (first byte, whole object length) of a stored object's 200 or 206 response.
pub(super) fn stored_extent(status: StatusCode, headers: &HeaderMap) -> Result<(u64, u64), ProxyError> {
    let header = |n: http::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if status == StatusCode::PARTIAL_CONTENT {
        return header(http::header::CONTENT_RANGE)
            .and_then(parse_content_range)
            .and_then(|(x, t)| x.map(|x| (x, t)))
            .ok_or_else(|| ProxyError::UpstreamProtocol("206 without a usable Content-Range".into()));
    }
    header(http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse().ok())
        .map(|t| (0, t))
        .ok_or_else(|| ProxyError::UpstreamProtocol("object without Content-Length".into()))
}

/// The envelope, or what the legacy policy says about an object without one.
pub fn envelope_or_policy(headers: &HeaderMap, legacy: LegacyPolicy) -> Result<Option<Envelope>, ProxyError> {
    match Envelope::from_headers(headers) {
        Ok(Some(e)) => Ok(Some(e)),
        Ok(None) => match legacy {
            LegacyPolicy::Reject => Err(ProxyError::PlaintextObject),
            LegacyPolicy::Passthrough => Ok(None),
        },
        Err(e) => Err(CryptoError::Integrity(e.0).into()),
    }
}

/// A successful upstream GET (200 / 206) of an encrypted bucket's object → the client's plaintext response.
pub async fn get_response(
    resp: Response<UpstreamIncoming>,
    range: ClientRange,
    ctx: &ReadCtx<'_>,
) -> Result<ObjectResponse, ProxyError> {
    let Some(env) = envelope_or_policy(resp.headers(), ctx.legacy)? else {
        if ctx.customer.is_some() {
            return Err(not_applicable());
        }
        if let Some(r) = plain_conditions(resp.headers(), ctx)? {
            return Ok(ObjectResponse::Ready(r));
        }
        return Ok(if range == ClientRange::Whole {
            ObjectResponse::Ready(plain_response(resp))
        } else {
            ObjectResponse::RefetchPlain
        });
    };
    let layout = env.layout().map_err(|_| ProxyError::UnsealedObject)?;
    let dek = ctx.crypto.open_envelope(&env, ctx.id, ctx.customer).await?;
    let (mut parts, body) = resp.into_parts();
    let seg = env.segment_size;
    let (start, cipher_total) = stored_extent(parts.status, &parts.headers)?;
    if !layout.admits(cipher_total, seg) {
        return Err(CryptoError::Integrity("the stored object has an impossible length").into());
    }
    let plain_total = plaintext_len(cipher_total, seg, true).unwrap_or(0);
    present_parts(&mut parts, Some(&SseInfo::of(&env, ctx.customer)));
    if let Err((unmet, etag)) = present_read(&mut parts.headers, &env, Some(&dek), ctx, range == ClientRange::Whole)? {
        return unmet_response(unmet, &etag, parts.headers.get(http::header::LAST_MODIFIED)).map(ObjectResponse::Ready);
    }
    let wanted = range.resolve(plain_total)?;
    let plan = match wanted {
        None => ReadPlan::whole(seg, cipher_total, plain_total, start),
        Some((a, b)) => ReadPlan::range(seg, cipher_total, start, a, b)?,
    };
    let mut decrypted = DecryptBody::new(body, dek, layout, plan).metered("GetObject");
    decrypted.prime().await?;
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(plan.take));
    match wanted {
        None => {
            parts.status = StatusCode::OK;
            parts.headers.remove(http::header::CONTENT_RANGE);
        }
        Some((a, b)) => {
            parts.status = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{plain_total}")) {
                parts.headers.insert(http::header::CONTENT_RANGE, v);
            }
        }
    }
    let body: ProxyBody = decrypted.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    Ok(ObjectResponse::Ready(Response::from_parts(parts, body)))
}

/// An upstream 416 for a ciphertext range → the client's 416 with the plaintext size.
pub fn range_not_satisfiable(headers: &HeaderMap, segment: u32) -> Option<ProxyError> {
    let (_, total) =
        headers.get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range)?;
    Some(ProxyError::InvalidRange { size: plaintext_len(total, segment, true).unwrap_or(0) })
}

/// A successful upstream HEAD of an encrypted bucket's object → plaintext length, envelope hidden. Only SSE-C
/// objects are unwrapped (to check the client's key, as S3 does); others are not (no KMS call on HEAD).
pub async fn head_response(
    resp: Response<UpstreamIncoming>,
    ctx: &ReadCtx<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(env) = envelope_or_policy(resp.headers(), ctx.legacy)? else {
        if ctx.customer.is_some() {
            return Err(not_applicable());
        }
        if let Some(r) = plain_conditions(resp.headers(), ctx)? {
            return Ok(r);
        }
        return Ok(plain_response(resp));
    };
    // The key is opened for SSE-C (to check the client's, as S3 does), for sealed attributes under the keyring
    // (local) and, under KMS, only when checksums are asked for (no KMS call on a plain HEAD).
    let sse = SseInfo::of(&env, ctx.customer);
    let attrs_wanted = env.attributes.is_some() && (sse.mode() != SseMode::Kms || ctx.checksum_mode);
    let dek = if sse.mode() == SseMode::Customer || ctx.customer.is_some() || attrs_wanted {
        Some(ctx.crypto.open_envelope(&env, ctx.id, ctx.customer).await?)
    } else {
        None
    };
    let (mut parts, _body) = resp.into_parts();
    let cipher_total: u64 = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ProxyError::UpstreamProtocol("HEAD without Content-Length".into()))?;
    let layout = env.layout().map_err(|_| ProxyError::UnsealedObject)?;
    if !layout.admits(cipher_total, env.segment_size) {
        return Err(CryptoError::Integrity("the stored object has an impossible length").into());
    }
    let plain = plaintext_len(cipher_total, env.segment_size, true).unwrap_or(0);
    present_parts(&mut parts, Some(&sse));
    if let Err((unmet, etag)) = present_read(&mut parts.headers, &env, dek.as_deref(), ctx, true)? {
        return unmet_response(unmet, &etag, parts.headers.get(http::header::LAST_MODIFIED));
    }
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(plain));
    parts.headers.remove(http::header::CONTENT_RANGE);
    parts.status = StatusCode::OK;
    Ok(Response::from_parts(parts, super::response::empty_body()))
}

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

pub(super) fn etag_eq(a: &str, b: &str) -> bool {
    a.trim().trim_matches('"') == b.trim().trim_matches('"')
}

impl super::Proxy {
    /// A conditional PutObject or CompleteMultipartUpload that names ETags (`If-Match`, `If-None-Match` other than `*`): evaluated here against
    /// the current object's ETag in every form the client may hold (the store knows only its own). The answer is
    /// the condition the store then gets instead, so that the write happens only if the object is still the one
    /// evaluated: `If-Match: <its store ETag>`, or `If-None-Match: *` when there was none. `None`: no ETag named
    /// (no condition, or `If-None-Match: *`, which the store evaluates as it is).
    pub(in crate::proxy) async fn write_conditions(
        &self,
        target: &crate::s3::Target,
        id: &ObjectIdentity,
        headers: &HeaderMap,
    ) -> Result<Option<(HeaderName, HeaderValue)>, ProxyError> {
        use crate::store::StoreRequest;
        use http::header::{IF_MATCH, IF_NONE_MATCH};
        let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
        let (if_match, if_none) = (text(&IF_MATCH), text(&IF_NONE_MATCH));
        if if_match.is_none() && if_none.is_none_or(|v| v == "*") {
            return Ok(None);
        }
        let current = self.store().send(StoreRequest::head(target)).await?;
        if current.status() == http::StatusCode::NOT_FOUND {
            if if_match.is_some() {
                return Err(ProxyError::Upstream {
                    status: http::StatusCode::NOT_FOUND,
                    code: "NoSuchKey".into(),
                    message: "The specified key does not exist.".into(),
                    headers: Vec::new(),
                });
            }
            return Ok(Some((IF_NONE_MATCH, HeaderValue::from_static("*"))));
        }
        if !current.status().is_success() {
            let (parts, body) = current.into_parts();
            return Err(crate::store::reply::error(parts.status, &parts.headers, body, true).await);
        }
        let h = current.headers();
        let store = h.get(http::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let opaque = super::etag::opaque(&store);
        let md5 = self.sealed_md5(h, id).await;
        let mut tags = vec![store.as_str(), opaque.as_str()];
        tags.extend(md5.as_deref());
        let holds = if_match.is_none_or(|l| super::etag::list_names(l, &tags))
            && if_none.is_none_or(|l| !super::etag::list_names(l, &tags));
        if !holds {
            return Err(super::etag::precondition_failed());
        }
        Ok(Some((IF_MATCH, header_value(&store)?)))
    }

    /// The plaintext MD5 of an SSE-S3 object of one stream, as an ETag, when its envelope seals one (the keyring
    /// opens it locally; other protections show no MD5, and are not opened).
    async fn sealed_md5(&self, headers: &HeaderMap, id: &ObjectIdentity) -> Option<String> {
        let env = crate::crypto::envelope::Envelope::from_headers(headers).ok()??;
        let sealed = env.attributes.as_ref()?;
        if !SseInfo::of(&env, None).shows_md5() {
            return None;
        }
        let dek = self.inner.crypto.open_envelope(&env, id, None).await.ok()?;
        let attrs = Attributes::open(sealed, &dek, id).ok()?;
        shown_etag(&env, &attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::crypto::envelope::Multipart;

    const S: u32 = 65_536;
    const MIB: u64 = 1024 * 1024;

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
            attributes: None,
        };
        let out = replace_headers(&head, &env).unwrap();
        assert_eq!(out[CONTENT_TYPE], "text/csv");
        assert_eq!(out[http::header::CONTENT_ENCODING], "gzip");
        assert_eq!(out["x-amz-meta-color"], "blue");
        assert_eq!(out["x-amz-meta-s3crypt-mp"], "2x8388608");
        assert!(out.get(http::header::ETAG).is_none());
    }
}
