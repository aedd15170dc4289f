//! The upstream response on its way back: hop-by-hop and upstream-identity headers dropped, error documents
//! scrubbed (upstream auth failures never reach the client as such), ListBuckets filtered for clients limited
//! to some buckets.

use std::time::Duration;

use crate::upstream::UpstreamIncoming;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::{ProxyBody, full_body};
use crate::config::ClientCredential;
use crate::error::{BoxError, ProxyError};
use crate::s3::headers::{X_AMZ_ID_2, X_AMZ_REQUEST_ID, strip_hop_by_hop};
use crate::s3::op::S3Op;
use crate::s3::xml;

/// Largest upstream error document read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest ListBuckets document filtered.
const MAX_LIST_BUCKETS_BODY: usize = 16 * 1024 * 1024;
/// Deadline to read a small buffered upstream body.
const SMALL_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Upstream error codes that mean the proxy's own credentials, clock or endpoint are wrong.
const UPSTREAM_AUTH_CODES: [&str; 12] = [
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "RequestTimeTooSkewed",
    "AuthorizationHeaderMalformed",
    "AuthorizationQueryParametersError",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "MissingSecurityHeader",
    "PermanentRedirect",
    "TemporaryRedirect",
    "IllegalLocationConstraintException",
];

/// Upstream headers an error response may keep.
const ERROR_HEADERS_KEPT: [HeaderName; 6] = [
    http::header::CONTENT_RANGE,
    http::header::RETRY_AFTER,
    http::header::ALLOW,
    http::header::LAST_MODIFIED,
    HeaderName::from_static("x-amz-delete-marker"),
    HeaderName::from_static("x-amz-version-id"),
];

async fn read_small(body: UpstreamIncoming, limit: usize) -> Option<Bytes> {
    let collected = tokio::time::timeout(SMALL_BODY_TIMEOUT, Limited::new(body, limit).collect()).await;
    match collected {
        Ok(Ok(c)) => Some(c.to_bytes()),
        _other => None,
    }
}

fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        304 => "NotModified",
        400 => "BadRequest",
        403 => "AccessDenied",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        411 => "MissingContentLength",
        412 => "PreconditionFailed",
        416 => "InvalidRange",
        500 => "InternalError",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ => "UnknownError",
    }
}

/// Turns an upstream error response into the error the client sees.
pub(super) async fn upstream_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: UpstreamIncoming,
    is_head: bool,
) -> ProxyError {
    let kept: Vec<(HeaderName, HeaderValue)> =
        ERROR_HEADERS_KEPT.iter().filter_map(|n| headers.get(n).map(|v| (n.clone(), v.clone()))).collect();
    let parsed = if is_head { None } else { read_small(body, MAX_ERROR_BODY).await.and_then(|b| xml::parse_error(&b)) };
    if status.is_redirection() {
        return ProxyError::UpstreamAuth(format!("upstream answered {status}: wrong upstream region or endpoint"));
    }
    match parsed {
        Some((code, _)) if UPSTREAM_AUTH_CODES.contains(&code.as_str()) => {
            ProxyError::UpstreamAuth(format!("upstream answered {status} {code}"))
        }
        Some((code, _)) if code == "AccessDenied" => {
            ProxyError::Upstream { status, code, message: "Access Denied".into(), headers: kept }
        }
        Some((code, message)) => ProxyError::Upstream { status, code, message, headers: kept },
        None => ProxyError::Upstream {
            status,
            code: default_code(status).to_owned(),
            message: status.canonical_reason().unwrap_or("Error").to_owned(),
            headers: kept,
        },
    }
}

/// An `<Error>` document in a 200 response (CompleteMultipartUpload and copies answer so when they fail after
/// the status went out).
pub(super) fn error_in_ok_body(code: String, message: String) -> ProxyError {
    if UPSTREAM_AUTH_CODES.contains(&code.as_str()) {
        return ProxyError::UpstreamAuth(format!("upstream answered 200 with {code}"));
    }
    let status = match code.as_str() {
        "SlowDown" | "ServiceUnavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "InternalError" => StatusCode::INTERNAL_SERVER_ERROR,
        "PreconditionFailed" => StatusCode::PRECONDITION_FAILED,
        "NoSuchKey" | "NoSuchUpload" | "NoSuchBucket" => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    let message = if code == "AccessDenied" { "Access Denied".to_owned() } else { message };
    ProxyError::Upstream { status, code, message, headers: Vec::new() }
}

/// Removes what belongs to the upstream hop: hop-by-hop headers, the store's identity, its clock, and the
/// aws-chunked coding some stores (SeaweedFS, moto) keep as the object's Content-Encoding.
pub(super) fn scrub_upstream_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in [X_AMZ_REQUEST_ID, X_AMZ_ID_2, http::header::SERVER, http::header::DATE] {
        headers.remove(name);
    }
    super::strip_aws_chunked_encoding(headers);
}

/// Maps the upstream response for the client.
pub(super) async fn map_response(
    resp: Response<UpstreamIncoming>,
    op: S3Op,
    client: &ClientCredential,
    is_head: bool,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    let status = parts.status;
    if (status.is_redirection() && status != StatusCode::NOT_MODIFIED)
        || status.is_client_error()
        || status.is_server_error()
    {
        return Err(upstream_error(status, &parts.headers, body, is_head).await);
    }
    scrub_upstream_headers(&mut parts.headers);
    let body: ProxyBody = match (&client.buckets, op) {
        (Some(allowed), S3Op::ListBuckets) if status == StatusCode::OK => {
            let raw = read_small(body, MAX_LIST_BUCKETS_BODY)
                .await
                .ok_or_else(|| ProxyError::UpstreamProtocol("ListBuckets body unreadable".into()))?;
            let filtered = xml::filter_list_buckets(&raw, &|name| allowed.contains(name))
                .ok_or_else(|| ProxyError::UpstreamProtocol("ListBuckets body is not XML".into()))?;
            parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(filtered.len()));
            full_body(Bytes::from(filtered))
        }
        _other => body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync(),
    };
    Ok(Response::from_parts(parts, body))
}
