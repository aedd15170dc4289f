//! GetObject and HeadObject on an encrypted bucket: the ciphertext segments that cover the client's range (or part)
//! in one store request, decrypted and authenticated on the way out; objects of the AWS S3 Encryption Client and
//! legacy plaintext objects where the configuration reads them.

use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::Proxy;
use super::body::{Upload, prepare_body};
use super::etag::Conditions;
use super::front::{Admitted, RequestCtx};
use super::multipart::{Located, PartRead};
use super::object::{ObjectResponse, ReadCtx, X_AMZ_CHECKSUM_MODE};
use super::range::ClientRange;
use super::response::ProxyBody;
use crate::error::ProxyError;
use crate::s3::error::RequestError;
use crate::s3::headers::X_AMZ_MP_PARTS_COUNT;
use crate::s3::op::S3Op;
use crate::s3::query::{PART_NUMBER, Query};
use crate::store::{StoreBody, StoreRequest};
use crate::upstream::UpstreamIncoming;

impl Proxy {
    pub(super) async fn read_object(
        &self,
        ctx: &mut RequestCtx,
        r: Admitted,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, body } = r;
        // Conditions are evaluated here against the ETags the client knows; the store sees none of them.
        let conditions = Conditions::of(&head.headers);
        let unconditional = Conditions::strip(&head.headers);
        let headers = &unconditional;
        // No body is expected; one that is there is checked (and sent) like any small body.
        let upload = Upload::plain(ctx.chunk_signing.take(), Default::default());
        let store_body = prepare_body(ctx.op, &ctx.payload, headers, body, upload).await?;
        let part = match ctx.query.part_number()? {
            None => None,
            Some(n) => match self.locate_part(ctx, headers, &conditions, n).await? {
                Located::Done(resp) => return Ok(resp),
                Located::Read(p) => Some(p),
            },
        };
        let query = if part.is_some() { ctx.query.without(PART_NUMBER) } else { ctx.query.clone() };
        let range = part.as_ref().map_or_else(|| ClientRange::parse(headers), |p| p.range);
        let resp = self.fetch_ciphertext(ctx, headers, &query, range, part.as_ref(), store_body).await?;
        let read = ReadCtx {
            crypto: &self.inner.crypto,
            id: &ctx.identity,
            customer: ctx.customer(),
            legacy: ctx.policy.legacy_objects,
            conditions,
            checksum_mode: super::object::checksum_mode(headers) && part.is_none(),
            copy_source: false,
        };
        let ok = resp.status().is_success();
        let resp = match self.s3ec_first(resp, ctx.op, range, part.is_some(), &read).await? {
            Ok(done) => return Ok(done),
            Err(resp) => resp,
        };
        match ctx.op {
            S3Op::GetObject if ok => match super::object::get_response(resp, range, &read).await? {
                ObjectResponse::Ready(mut r) => {
                    if let Some(count) = part.and_then(|p| p.parts_count) {
                        r.headers_mut().insert(X_AMZ_MP_PARTS_COUNT, HeaderValue::from(count));
                    }
                    Ok(r)
                }
                // A plaintext object read under legacy_objects = "passthrough": fetch it as the client asked.
                ObjectResponse::RefetchPlain => {
                    let again = StoreRequest::client_read(S3Op::GetObject, &ctx.target, &ctx.query, &head.headers);
                    let resp = self.store().send(again).await?;
                    super::response::map_response(resp, ctx.op, &ctx.client, false).await
                }
            },
            S3Op::GetObject if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                Err(self.range_not_satisfiable(ctx, headers, &resp).await)
            }
            S3Op::HeadObject if ok => super::object::head_response(resp, &read).await,
            _ => {
                let mut r =
                    super::response::map_response(resp, ctx.op, &ctx.client, ctx.op == S3Op::HeadObject).await?;
                crate::crypto::envelope::strip_reserved(r.headers_mut());
                Ok(r)
            }
        }
    }

    /// The store's answer for the segments covering `range` (HEAD: the object's head), pinned to the ETag a part's
    /// range was computed from. Some stores (s3s-fs) fail a suffix range longer than the object instead of returning
    /// all of it: the whole object is fetched then (the read plan skips to the segments needed).
    async fn fetch_ciphertext(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        query: &Query,
        range: ClientRange,
        part: Option<&PartRead>,
        body: StoreBody,
    ) -> Result<http::Response<UpstreamIncoming>, ProxyError> {
        let whole = || {
            StoreRequest::client_read(ctx.op, &ctx.target, query, headers)
                .without(&http::header::RANGE)
                .without(&X_AMZ_CHECKSUM_MODE)
        };
        let mut request = whole().body(body);
        if ctx.op == S3Op::GetObject
            && let Some(r) = range.upstream_range(self.inner.crypto.segment_size)
            && let Ok(v) = HeaderValue::from_str(&r)
        {
            request = request.header(http::header::RANGE, v);
        }
        if let Some(etag) = part.and_then(|p| p.etag.clone())
            && !headers.contains_key(http::header::IF_MATCH)
        {
            request = request.header(http::header::IF_MATCH, etag);
        }
        let resp = self.store().send(request).await?;
        let refused = resp.status() == StatusCode::RANGE_NOT_SATISFIABLE || resp.status().is_server_error();
        if ctx.op == S3Op::GetObject && matches!(range, ClientRange::Suffix(_)) && refused {
            return self.store().send(whole()).await;
        }
        Ok(resp)
    }

    /// An object of the AWS S3 Encryption Client, where the configuration reads them: answered here (`Ok`), or the
    /// response back (`Err`) for the s3crypt path.
    async fn s3ec_first(
        &self,
        resp: http::Response<UpstreamIncoming>,
        op: S3Op,
        range: ClientRange,
        by_part: bool,
        read: &ReadCtx<'_>,
    ) -> Result<Result<Response<ProxyBody>, http::Response<UpstreamIncoming>>, ProxyError> {
        if !resp.status().is_success() {
            return Ok(Err(resp));
        }
        if by_part && crate::crypto::s3ec::has_content_metadata(resp.headers()) {
            return Err(RequestError::NotImplemented(
                "Reading a part of an object written by the AWS S3 Encryption Client is not supported; read a range.",
            )
            .into());
        }
        if by_part || !super::s3ec::candidate(read.crypto, read.id, resp.headers()) {
            return Ok(Err(resp));
        }
        Ok(match self.s3ec_read(resp, op, range, read).await? {
            super::s3ec::S3ecRead::Done(r) => Ok(r),
            super::s3ec::S3ecRead::NotS3ec(r) => Err(r),
        })
    }

    /// The store refused the ciphertext range: the client's 416, with the plaintext size (asked of the store when
    /// its answer does not say: s3s-fs).
    async fn range_not_satisfiable(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        resp: &http::Response<UpstreamIncoming>,
    ) -> ProxyError {
        let segment = self.inner.crypto.segment_size;
        if let Some(e) = super::object::range_not_satisfiable(resp.headers(), segment) {
            return e;
        }
        let probe = StoreRequest::client_read(S3Op::HeadObject, &ctx.target, &ctx.query.without(PART_NUMBER), headers)
            .without(&http::header::RANGE)
            .without(&X_AMZ_CHECKSUM_MODE);
        let size = match self.store().send(probe).await {
            Ok(head) => head
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .and_then(|c| crate::crypto::format::plaintext_len(c, segment, true))
                .unwrap_or(0),
            Err(e) => return e,
        };
        ProxyError::InvalidRange { size }
    }
}
