//! PutObject on an encrypted bucket: the protection the client asked for (or the policy's default) gives a fresh
//! data key and its envelope before the body is read; the body is encrypted as it streams.

use std::sync::Arc;

use http::Response;

use super::Proxy;
use super::body::{Encrypting, Upload, echo_verified_checksum, prepare_body};
use super::front::{Admitted, RequestCtx};
use super::object::{SseInfo, present_object};
use super::response::ProxyBody;
use crate::crypto::Protection;
use crate::crypto::attributes::Attributes;
use crate::crypto::envelope::check_client_metadata;
use crate::crypto::format::SINGLE_PUT_PART;
use crate::error::ProxyError;
use crate::s3::checksum::ChecksumAlgorithm;
use crate::s3::op::S3Op;
use crate::sigv4::chunked::VerifiedChecksum;
use crate::sigv4::payload::BodyMd5;
use crate::store::StoreRequest;
use http::header::{IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue};

impl Proxy {
    pub(super) async fn put_object(
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
        let pin = self.write_conditions(ctx, &head.headers).await?;
        let (dek, mut env) = crypto.new_object_key(&ctx.identity, &protection, None).await?;
        let sse = SseInfo::of(&env, ctx.customer());
        let dek = Arc::new(dek);
        let verified = VerifiedChecksum::default();
        let md5 = (sse.shows_md5() && crypto.md5_etags()).then(BodyMd5::default);
        let encrypting = Encrypting { dek: Arc::clone(&dek), part: SINGLE_PUT_PART, segment_size: crypto.segment_size };
        let upload = Upload {
            encrypting: Some(encrypting),
            chunk_signing: ctx.chunk_signing.take(),
            verified: verified.clone(),
            md5: md5.clone(),
            buffer_small: true,
        };
        let store_body = prepare_body(ctx.op, &ctx.payload, &head.headers, body, upload).await?;
        // What the client declared about the plaintext (checked as the body streams: a mismatch fails the upload).
        let mut declared = declared_attributes(&head.headers, sse.shows_md5());
        if declared.md5.is_none() {
            // A body of at most one segment was read whole: its MD5 is known already.
            declared.md5 = md5.as_ref().and_then(|m| m.get()).copied();
        }
        if declared.checksum.is_none() {
            // A trailer checksum of a body read whole, verified already.
            declared.checksum = verified_checksum(&verified);
        }
        let declared_md5 = declared.md5;
        if !declared.is_empty() {
            env.attributes = Some(declared.seal(&dek, &ctx.identity)?);
        }
        check_client_metadata(&head.headers, env.metadata_len())?;
        let mut request = StoreRequest::new(ctx.op, head.method.clone(), &ctx.target)
            .client_query(&ctx.query)
            .client_headers(&head.headers)
            .sse(ctx.store_sse(&head.headers).as_ref())
            .pairs(env.to_headers())
            .body(store_body);
        if let Some((name, value)) = pin {
            request = request.without(&IF_MATCH).without(&IF_NONE_MATCH).header(name, value);
        }
        let resp = self.store().send(request).await?;
        let mut r = super::response::map_response(resp, ctx.op, &ctx.client, false).await?;
        present_object(&mut r, Some(&sse));
        // The MD5 computed as the body streamed, or the client's verified Content-MD5 (with md5_etags off).
        let shown = md5.as_ref().and_then(|m| m.get()).copied().or(declared_md5);
        super::etag::present(&mut r, shown.as_ref());
        echo_verified_checksum(r.headers_mut(), &head.headers, &verified);
        Ok(r)
    }

    /// A conditional PutObject that names ETags (`If-Match`, `If-None-Match` other than `*`): evaluated here against
    /// the current object's ETag in every form the client may hold (the store knows only its own). The answer is
    /// the condition the store then gets instead, so that the write happens only if the object is still the one
    /// evaluated: `If-Match: <its store ETag>`, or `If-None-Match: *` when there was none. `None`: no ETag named
    /// (no condition, or `If-None-Match: *`, which the store evaluates as it is).
    async fn write_conditions(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
    ) -> Result<Option<(HeaderName, HeaderValue)>, ProxyError> {
        let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
        let (if_match, if_none) = (text(&IF_MATCH), text(&IF_NONE_MATCH));
        if if_match.is_none() && if_none.is_none_or(|v| v == "*") {
            return Ok(None);
        }
        let current = self.store().send(StoreRequest::head(&ctx.target)).await?;
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
        let current = super::response::map_response(current, S3Op::HeadObject, &ctx.client, true).await?;
        let h = current.headers();
        let store = h.get(http::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let opaque = super::etag::opaque(&store);
        let md5 = self.sealed_md5(h, &ctx.identity).await;
        let mut tags = vec![store.as_str(), opaque.as_str()];
        tags.extend(md5.as_deref());
        let holds = if_match.is_none_or(|l| super::etag::list_names(l, &tags))
            && if_none.is_none_or(|l| !super::etag::list_names(l, &tags));
        if !holds {
            return Err(super::etag::precondition_failed());
        }
        Ok(Some((IF_MATCH, super::object::header_value(&store)?)))
    }

    /// The plaintext MD5 of an SSE-S3 object of one stream, as an ETag, when its envelope seals one (the keyring
    /// opens it locally; other protections show no MD5, and are not opened).
    async fn sealed_md5(&self, headers: &HeaderMap, id: &crate::crypto::keys::ObjectIdentity) -> Option<String> {
        let env = crate::crypto::envelope::Envelope::from_headers(headers).ok()??;
        let sealed = env.attributes.as_ref()?;
        if env.multipart.is_some() || !SseInfo::of(&env, None).shows_md5() {
            return None;
        }
        let dek = self.inner.crypto.open_envelope(&env, id, None).await.ok()?;
        let attrs = Attributes::open(sealed, &dek, id).ok()?;
        super::object::shown_md5(&env, &attrs).as_ref().map(super::etag::md5_etag)
    }
}

/// A trailer checksum the body check verified (and recorded), as an attribute.
fn verified_checksum(verified: &VerifiedChecksum) -> Option<(ChecksumAlgorithm, Vec<u8>)> {
    let g = verified.lock().ok()?;
    let (alg, value) = g.as_ref()?;
    Some((*alg, alg.decode_value(value).ok()?))
}

/// The attributes a client declared in its headers: the Content-MD5 (kept for SSE-S3 objects, whose ETag it is)
/// and the full-object checksum header. Both are verified against the body before the upload completes.
pub(super) fn declared_attributes(headers: &http::HeaderMap, keep_md5: bool) -> Attributes {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let md5 = headers
        .get(crate::s3::headers::CONTENT_MD5)
        .filter(|_| keep_md5)
        .and_then(|v| b64.decode(v.as_bytes()).ok())
        .and_then(|d| <[u8; 16]>::try_from(d.as_slice()).ok());
    let checksum = headers.iter().find_map(|(n, v)| {
        let alg = ChecksumAlgorithm::from_header_name(n.as_str())?;
        Some((alg, alg.decode_value(v.to_str().ok()?).ok()?))
    });
    Attributes { md5, checksum }
}
