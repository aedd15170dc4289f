//! Reading what the store answers: the one XML reader (every limit and deadline in one table), and the store's
//! errors turned into the errors clients see (the proxy's own credential or endpoint problems never reach a
//! client as such).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

use crate::error::ProxyError;
use crate::s3::xml;

/// The kinds of XML document the proxy reads from the store, each with its size limit and deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xml {
    /// An `<Error>` document (what is read of an error response; more is ignored).
    Error,
    /// A result or a listing page (ListObjects, ListParts, ListBuckets, CreateMultipartUpload ...).
    Result,
    /// The result of a request the store may work on for minutes, sending spaces meanwhile
    /// (CompleteMultipartUpload, CopyObject, UploadPartCopy).
    SlowResult,
}

impl Xml {
    /// Largest document read.
    pub fn limit(self) -> usize {
        match self {
            Xml::Error => 64 * 1024,
            Xml::Result | Xml::SlowResult => 16 * 1024 * 1024,
        }
    }

    /// How long the whole document may take to arrive.
    pub fn deadline(self) -> Duration {
        match self {
            Xml::Error => Duration::from_secs(30),
            Xml::Result => Duration::from_secs(60),
            Xml::SlowResult => Duration::from_secs(30 * 60),
        }
    }
}

/// Reads a whole XML document from the store (or from a response already mapped for the client) within the
/// limits of `kind`.
pub async fn read_xml<B>(body: B, kind: Xml) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let limit = kind.limit();
    let deadline = tokio::time::Instant::now() + kind.deadline();
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.map_err(|_| ProxyError::UpstreamTimeout)?;
        match frame {
            None => return Ok(Bytes::from(out)),
            Some(Err(e)) => return Err(ProxyError::UpstreamProtocol(format!("reading an XML document: {e}"))),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    if out.len() + d.len() > limit {
                        return Err(ProxyError::UpstreamProtocol(format!("XML document over {limit} bytes")));
                    }
                    out.extend_from_slice(&d);
                }
            }
        }
    }
}

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
pub async fn error<B>(status: StatusCode, headers: &HeaderMap, body: B, is_head: bool) -> ProxyError
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let kept: Vec<(HeaderName, HeaderValue)> =
        ERROR_HEADERS_KEPT.iter().filter_map(|n| headers.get(n).map(|v| (n.clone(), v.clone()))).collect();
    let parsed = if is_head { None } else { read_xml(body, Xml::Error).await.ok().and_then(|b| xml::parse_error(&b)) };
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
pub fn error_in_ok_body(code: String, message: String) -> ProxyError {
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

/// A non-empty top-level field of a result document `root`.
pub fn result_field(body: &[u8], root: &str, name: &str) -> Result<String, ProxyError> {
    let (_, top) =
        xml::records(body, &[root, "-"]).ok_or_else(|| ProxyError::UpstreamProtocol(format!("{root} is not XML")))?;
    xml::field(&top, name)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ProxyError::UpstreamProtocol(format!("{root} without {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn documents_over_their_limit_are_refused_and_others_read_whole() {
        let small = Full::new(Bytes::from_static(b"<Error><Code>NoSuchKey</Code></Error>"));
        assert_eq!(read_xml(small, Xml::Error).await.unwrap().len(), 37);
        let big = Full::new(Bytes::from(vec![b' '; Xml::Error.limit() + 1]));
        assert_eq!(read_xml(big, Xml::Error).await.unwrap_err().code(), "BadGateway");
    }

    #[tokio::test]
    async fn the_stores_credential_errors_never_reach_clients_as_such() {
        let body = Full::new(Bytes::from_static(b"<Error><Code>SignatureDoesNotMatch</Code></Error>"));
        let e = error(StatusCode::FORBIDDEN, &HeaderMap::new(), body, false).await;
        assert!(matches!(e, ProxyError::UpstreamAuth(_)), "{e:?}");
        let e = error_in_ok_body("AccessDenied".into(), "the store's own words".into());
        assert_eq!(e.client_message(), "Access Denied");
    }
}
