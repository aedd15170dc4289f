//! PutObject on an encrypted bucket: the protection the client asked for (or the policy's default) gives a fresh
//! data key and its envelope before the body is read; the body is encrypted as it streams.

use std::sync::Arc;

use http::Response;

use super::Proxy;
use super::body::{Encrypting, Upload, echo_verified_checksum, prepare_body};
use super::front::{Admitted, RequestCtx};
use super::object::{SseInfo, scrub_object_headers};
use super::response::ProxyBody;
use crate::crypto::Protection;
use crate::crypto::envelope::check_client_metadata;
use crate::crypto::format::SINGLE_PUT_PART;
use crate::error::ProxyError;
use crate::sigv4::chunked::VerifiedChecksum;
use crate::store::StoreRequest;

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
        let (dek, env) = crypto.new_object_key(&ctx.identity, &protection, None).await?;
        check_client_metadata(&head.headers, env.metadata_len())?;
        let verified = VerifiedChecksum::default();
        let encrypting = Encrypting { dek: Arc::new(dek), part: SINGLE_PUT_PART, segment_size: crypto.segment_size };
        let upload = Upload {
            encrypting: Some(encrypting),
            chunk_signing: ctx.chunk_signing.take(),
            verified: verified.clone(),
        };
        let store_body = prepare_body(ctx.op, &ctx.payload, &head.headers, body, upload).await?;
        let request = StoreRequest::new(ctx.op, head.method.clone(), &ctx.target)
            .client_query(&ctx.query)
            .client_headers(&head.headers)
            .sse(ctx.store_sse(&head.headers).as_ref())
            .pairs(env.to_headers())
            .body(store_body);
        let resp = self.store().send(request).await?;
        let mut r = super::response::map_response(resp, ctx.op, &ctx.client, false).await?;
        scrub_object_headers(r.headers_mut(), Some(&SseInfo::of(&env, ctx.customer())));
        echo_verified_checksum(r.headers_mut(), &head.headers, &verified);
        Ok(r)
    }
}
