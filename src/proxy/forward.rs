//! Requests the proxy passes on as they are: everything on a passthrough bucket, and on an encrypted bucket what
//! needs no encryption (bucket operations, deletes, configuration, uploads under a plaintext policy). The store
//! client still decides what of the client's request reaches the store; responses lose what belongs to the store.

use http::Response;

use super::Proxy;
use super::body::{Upload, echo_verified_checksum, prepare_body};
use super::front::{Admitted, RequestCtx};
use super::response::ProxyBody;
use crate::error::ProxyError;
use crate::s3::error::RequestError;
use crate::s3::op::S3Op;
use crate::sigv4::chunked::VerifiedChecksum;
use crate::store::{StoreBody, StoreRequest};

impl Proxy {
    pub(super) async fn forward(&self, ctx: &mut RequestCtx, r: Admitted) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, body } = r;
        let verified = VerifiedChecksum::default();
        let upload = Upload::plain(ctx.chunk_signing.take(), verified.clone());
        let store_body = prepare_body(ctx.op, &ctx.payload, &head.headers, body, upload).await?;
        if ctx.op == S3Op::DeleteObjects
            && let StoreBody::Bytes(xml) = &store_body
        {
            // No key in the body may name something outside the bucket at the store.
            let keys = crate::s3::xml::delete_keys(xml).ok_or(RequestError::MalformedXml("Delete body"))?;
            for key in &keys {
                crate::s3::check_key(key, self.inner.settings.strict_keys)?;
            }
            // The bucket policy, for each key (a Deny of any refuses the request).
            if let Some(settings) = &ctx.bucket_settings {
                let facts = super::front::PolicyFacts {
                    headers: &head.headers,
                    secure: ctx.secure,
                    peer: ctx.peer,
                    client: &ctx.client,
                };
                for key in &keys {
                    facts.check(settings, "s3:DeleteObject", &ctx.identity.bucket, Some(key), S3Op::DeleteObject)?;
                }
            }
        }
        let request = StoreRequest::new(ctx.op, head.method.clone(), &ctx.target)
            .client_query(&ctx.query)
            .client_headers(&head.headers)
            .sse(ctx.store_sse(&head.headers).as_ref())
            .body(store_body);
        let resp = self.store().send(request).await?;
        let is_head = head.method == http::Method::HEAD;
        let mut r = super::response::map_response(resp, ctx.op, &ctx.client, is_head).await?;
        if ctx.op == S3Op::ListBuckets && r.status() == http::StatusCode::OK {
            return self.without_system_bucket(r).await;
        }
        if ctx.op.carries_object_data() {
            if ctx.encrypted {
                super::object::scrub_object_headers(r.headers_mut(), None);
            }
            echo_verified_checksum(r.headers_mut(), &head.headers, &verified);
        } else if ctx.encrypted {
            crate::crypto::envelope::strip_reserved(r.headers_mut());
        }
        Ok(r)
    }

    /// ListBuckets without the system bucket.
    async fn without_system_bucket(&self, r: Response<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = r.into_parts();
        let raw = crate::store::read_xml(body, crate::store::Xml::Result).await?;
        let system = self.inner.settings.system_bucket.as_str();
        let filtered = crate::s3::xml::filter_list_buckets(&raw, &|name| name != system)
            .ok_or_else(|| ProxyError::UpstreamProtocol("ListBuckets body is not XML".into()))?;
        parts.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(filtered.len()));
        Ok(Response::from_parts(parts, super::response::full_body(bytes::Bytes::from(filtered))))
    }
}
