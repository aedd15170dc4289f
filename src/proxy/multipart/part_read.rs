//! GET and HEAD by part number on an encrypted bucket: a HEAD at the store gives the object's layout, from which
//! part N's plaintext range follows; a GET then reads that range like any other.

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::crypto::envelope::Envelope;
use crate::crypto::error::CryptoError;
use crate::crypto::format::plaintext_len;
use crate::crypto::stream::Layout;
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::proxy::etag::Conditions;
use crate::proxy::front::RequestCtx;
use crate::proxy::object::header_value;
use crate::proxy::object::{ReadCtx, X_AMZ_CHECKSUM_MODE, envelope_or_policy, head_response};
use crate::proxy::range::ClientRange;
use crate::proxy::response::ProxyBody;
use crate::s3::error::RequestError;
use crate::s3::headers::{X_AMZ_MP_PARTS_COUNT, header_str};
use crate::s3::op::S3Op;
use crate::s3::query::PART_NUMBER;
use crate::store::StoreRequest;

/// A GET by part number, turned into a plaintext range.
pub(in crate::proxy) struct PartRead {
    pub range: ClientRange,
    /// `x-amz-mp-parts-count` (multipart objects only).
    pub parts_count: Option<u32>,
    /// The ETag the range was computed for: the GET is pinned to it.
    pub etag: Option<HeaderValue>,
}

/// What a request by part number needs next.
pub(in crate::proxy) enum Located {
    /// Answered already (a HEAD, an error status, a plaintext object).
    Done(http::Response<ProxyBody>),
    /// A GET: read this range.
    Read(PartRead),
}

/// Where part `n` lies in an object of `cipher_total` stored bytes with envelope `env`: its plaintext bytes
/// `first..last`, the object's plaintext size, and its part count (multipart objects).
fn part_extent(env: &Envelope, cipher_total: u64, n: u16) -> Result<(u64, u64, u64, Option<u32>), ProxyError> {
    let layout = env.layout().map_err(|_| ProxyError::UnsealedObject)?;
    if !layout.admits(cipher_total, env.segment_size) {
        return Err(CryptoError::Integrity("the stored object has an impossible length").into());
    }
    let total = plaintext_len(cipher_total, env.segment_size, true).unwrap_or(0);
    match layout {
        Layout::Multipart { parts, per_part } => {
            if u32::from(n) > parts {
                // S3 (and ceph/s3-tests): 400 InvalidPart, not SeaweedFS's 416.
                return Err(ProxyError::InvalidPart("One or more of the specified parts could not be found.".into()));
            }
            // Admitted above: these products stay below the object's length.
            let size = per_part * u64::from(env.segment_size);
            let first = u64::from(n - 1) * size;
            Ok((first, (first + size).min(total), total, Some(parts)))
        }
        Layout::Single | Layout::Part(_) | Layout::Unsealed if n == 1 => Ok((0, total, total, None)),
        // An object of one part has no part 2 (S3: 400 InvalidPart, where a multipart object answers 416).
        Layout::Single | Layout::Part(_) | Layout::Unsealed => {
            Err(ProxyError::InvalidPart("One or more of the specified parts could not be found.".into()))
        }
    }
}

impl Proxy {
    /// GET / HEAD `?partNumber=n`: a HEAD answered here, or the range a GET reads.
    pub(in crate::proxy) async fn locate_part(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        conditions: &Conditions,
        n: u16,
    ) -> Result<Located, ProxyError> {
        if headers.contains_key(http::header::RANGE) {
            return Err(RequestError::InvalidRequest(
                "Cannot specify both Range header and partNumber query parameter".into(),
            )
            .into());
        }
        let probe = StoreRequest::client_read(S3Op::HeadObject, &ctx.target, &ctx.query.without(PART_NUMBER), headers)
            .without(&http::header::RANGE)
            .without(&X_AMZ_CHECKSUM_MODE);
        let head = self.store().send(probe).await?;
        if !head.status().is_success() {
            if head.status() == StatusCode::NOT_MODIFIED || ctx.op != S3Op::GetObject {
                let is_head = true;
                return Ok(Located::Done(
                    crate::proxy::response::map_response(head, ctx.op, &ctx.client, is_head).await?,
                ));
            }
            return Err(self.part_read_error(ctx, headers, head).await);
        }
        let read = ReadCtx {
            crypto: &self.inner.crypto,
            id: &ctx.identity,
            customer: ctx.customer(),
            legacy: ctx.policy.legacy_objects,
            conditions: conditions.clone(),
            checksum_mode: false,
            copy_source: false,
        };
        let Some(env) = envelope_or_policy(head.headers(), read.legacy)? else {
            // A plaintext object (legacy_objects = "passthrough"): the store answers as asked.
            let resp = self.store().send(StoreRequest::client_read(ctx.op, &ctx.target, &ctx.query, headers)).await?;
            let is_head = ctx.op == S3Op::HeadObject;
            return Ok(Located::Done(crate::proxy::response::map_response(resp, ctx.op, &ctx.client, is_head).await?));
        };
        let cipher_total: u64 = header_str(head.headers(), &CONTENT_LENGTH)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ProxyError::UpstreamProtocol("HEAD without Content-Length".into()))?;
        let (first, last, total, parts_count) = part_extent(&env, cipher_total, n)?;
        let etag = head.headers().get(http::header::ETAG).cloned();
        let empty = last == first && total > 0;
        if empty && ctx.op == S3Op::GetObject {
            // An empty (last) part: nothing to read, but the layout that says so is authenticated first.
            read.crypto.open_envelope(&env, read.id, read.customer).await?;
        }
        if ctx.op == S3Op::GetObject && !empty {
            let range = if last > first { ClientRange::From(first, Some(last - 1)) } else { ClientRange::Whole };
            return Ok(Located::Read(PartRead { range, parts_count, etag }));
        }
        let mut r = head_response(head, &read).await?;
        r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(last - first));
        if last > first {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let cr = format!("bytes {first}-{}/{total}", last - 1);
            r.headers_mut().insert(http::header::CONTENT_RANGE, header_value(&cr)?);
        }
        if let Some(c) = parts_count {
            r.headers_mut().insert(X_AMZ_MP_PARTS_COUNT, HeaderValue::from(c));
        }
        Ok(Located::Done(r))
    }

    /// The error of a GET by part number whose HEAD probe failed: the error document S3 gives a GET (`NoSuchKey`,
    /// `NoSuchBucket` ...), which a HEAD has no body to say.
    async fn part_read_error(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        head: http::Response<crate::upstream::UpstreamIncoming>,
    ) -> ProxyError {
        let get = StoreRequest::client_read(S3Op::GetObject, &ctx.target, &ctx.query.without(PART_NUMBER), headers)
            .without(&http::header::RANGE)
            .without(&X_AMZ_CHECKSUM_MODE);
        let (answer, is_head) = match self.store().send(get).await {
            Ok(resp) if !resp.status().is_success() => (resp, false),
            // The object appeared in between, or the store failed: the probe's answer stands.
            Ok(_) | Err(_) => (head, true),
        };
        match crate::proxy::response::map_response(answer, ctx.op, &ctx.client, is_head).await {
            Err(e) => e,
            Ok(_) => ProxyError::UpstreamProtocol("a failed probe mapped to success".into()),
        }
    }
}
