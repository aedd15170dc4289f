//! PutObject on an encrypted bucket: the protection the client asked for (or the policy's default) gives a fresh
//! data key and its envelope before the body is read; the body is encrypted as it streams.

use std::sync::Arc;

use http::Response;

use super::Proxy;
use super::body::{Encrypting, Upload, declared_attributes, echo_verified_checksum, prepare_body, verified_checksum};
use super::front::{Admitted, RequestCtx};
use super::object::{SseInfo, present_object};
use super::response::ProxyBody;
use crate::crypto::Protection;
use crate::crypto::envelope::check_client_metadata;
use crate::crypto::format::SINGLE_PUT_PART;
use crate::error::ProxyError;
use crate::sigv4::chunked::VerifiedChecksum;
use crate::sigv4::payload::BodyMd5;
use crate::store::StoreRequest;
use http::header::{IF_MATCH, IF_NONE_MATCH};

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
        let pin = self.write_conditions(&ctx.target, &ctx.identity, &head.headers).await?;
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
}
