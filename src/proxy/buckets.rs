//! Bucket settings through the S3 API (docs/BUCKETS.md): Get/Put/DeleteBucketEncryption on encrypted buckets (the
//! proxy applies the default itself; passthrough buckets keep the store's own), Get/Put/DeleteBucketPolicy on every
//! bucket (the proxy evaluates policies; the store never receives one), and DeleteBucket, which takes the bucket's
//! settings with it. Only clients marked `bucket_admin` may change settings.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};

use super::Proxy;
use super::front::{Admitted, RequestCtx};
use super::response::ProxyBody;
use super::settings::Setting;
use crate::error::ProxyError;
use crate::s3::bucket_encryption::BucketEncryption;
use crate::s3::op::S3Op;
use crate::s3::policy::Policy;
use crate::sigv4::error::AuthError;
use crate::store::StoreRequest;

fn answer(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> Response<ProxyBody> {
    let mut r = Response::new(super::response::full_body(body.clone()));
    *r.status_mut() = status;
    if let Some(t) = content_type {
        r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(t));
    }
    r.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

impl Proxy {
    /// The bucket exists at the store (its settings live elsewhere: S3 answers `NoSuchBucket` first).
    async fn bucket_exists(&self, ctx: &RequestCtx) -> Result<(), ProxyError> {
        let bucket = crate::s3::Target { key: None, ..ctx.target.clone() };
        self.store().expect_ok(StoreRequest::new(S3Op::HeadBucket, Method::HEAD, &bucket)).await.map(drop)
    }

    /// Changing settings needs a bucket administrator.
    fn admin_only(ctx: &RequestCtx, method: &Method) -> Result<(), ProxyError> {
        if *method != Method::GET && !ctx.client.bucket_admin {
            return Err(AuthError::AccessDenied("Access Denied").into());
        }
        Ok(())
    }

    /// Get/Put/DeleteBucketEncryption of an encrypted bucket.
    pub(super) async fn bucket_encryption(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, body } = r;
        Self::admin_only(ctx, &head.method)?;
        self.bucket_exists(ctx).await?;
        let bucket = ctx.identity.bucket.clone();
        match head.method {
            Method::GET => {
                let settings = self.bucket_settings(&bucket).await?;
                let encryption = settings.encryption.as_ref().ok_or(ProxyError::NoEncryptionConfiguration)?;
                Ok(answer(StatusCode::OK, Some("application/xml"), encryption.render()))
            }
            Method::PUT => {
                let doc = super::body::read_small_body(&ctx.payload, &head.headers, body).await?;
                let encryption = BucketEncryption::parse(&doc)?;
                // The operator's policy is the floor: a default it does not allow (a kind of SSE, a KMS key) is
                // refused here as it would be on an upload.
                self.inner.crypto.protection(&bucket, "", &encryption.as_request()).await?;
                self.put_setting(&bucket, Setting::Encryption, Some(&encryption.render())).await?;
                Ok(answer(StatusCode::OK, None, Bytes::new()))
            }
            _ => {
                self.put_setting(&bucket, Setting::Encryption, None).await?;
                Ok(answer(StatusCode::NO_CONTENT, None, Bytes::new()))
            }
        }
    }

    /// Get/Put/DeleteBucketPolicy: kept and evaluated by the proxy.
    pub(super) async fn bucket_policy(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, body } = r;
        Self::admin_only(ctx, &head.method)?;
        self.bucket_exists(ctx).await?;
        let bucket = ctx.identity.bucket.clone();
        match head.method {
            Method::GET => {
                let settings = self.bucket_settings(&bucket).await?;
                let (_, text) = settings.policy.as_ref().ok_or(ProxyError::NoSuchBucketPolicy)?;
                Ok(answer(StatusCode::OK, Some("application/json"), Bytes::from(text.clone())))
            }
            Method::PUT => {
                let doc = super::body::read_small_body(&ctx.payload, &head.headers, body).await?;
                let text = String::from_utf8(doc.to_vec())
                    .map_err(|_| ProxyError::MalformedPolicy("Policies must be valid JSON".into()))?;
                Policy::parse(&text, &bucket).map_err(|e| ProxyError::MalformedPolicy(e.0))?;
                self.put_setting(&bucket, Setting::Policy, Some(text.as_bytes())).await?;
                Ok(answer(StatusCode::NO_CONTENT, None, Bytes::new()))
            }
            _ => {
                self.put_setting(&bucket, Setting::Policy, None).await?;
                Ok(answer(StatusCode::NO_CONTENT, None, Bytes::new()))
            }
        }
    }

    /// DeleteBucket: once the store deleted the bucket, its settings go too (a bucket created later under the
    /// same name starts without them).
    pub(super) async fn delete_bucket(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let resp = self.forward(ctx, r).await?;
        if resp.status().is_success() {
            self.forget_settings(&ctx.identity.bucket).await;
        }
        Ok(resp)
    }
}
