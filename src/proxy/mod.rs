//! The request path: transport policy → addressing → SigV4 verification (from headers, before the body is
//! touched) → authorisation → operation → body transform → upstream request (re-signed) → response
//! (scrubbed). Errors are rendered once, here, as S3 XML.

mod response;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use crate::config::{ClientCredential, PlainHttpPolicy};
use crate::error::{BoxError, ProxyError, Side};
use crate::s3::headers::{
    X_AMZ_CONTENT_SHA256, X_AMZ_COPY_SOURCE, X_AMZ_DATE, X_AMZ_DECODED_CONTENT_LENGTH, X_AMZ_ID_2,
    X_AMZ_REQUEST_ID, X_AMZ_SECURITY_TOKEN, X_AMZ_TRAILER, strip_hop_by_hop,
};
use crate::s3::op::{S3Op, classify};
use crate::s3::{Target, resolve_target};
use crate::sigv4::EMPTY_SHA256;
use crate::sigv4::canonical::{canonical_query, percent_decode};
use crate::sigv4::chunked::{AwsChunkedBody, ChunkedSpec};
use crate::sigv4::payload::VerifiedBody;
use crate::sigv4::sign::OutboundPayload;
use crate::sigv4::verify::{Authenticated, PayloadMode, RequestHead, Verifier};
use crate::upstream::{Upstream, UpstreamBody};

/// Response bodies sent to clients.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// How the connection a request arrived on was made.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Arrived over TLS.
    pub secure: bool,
    /// Policy for plain-HTTP requests (ignored when `secure`).
    pub plain_http: PlainHttpPolicy,
    /// Port of the https listener, for redirects.
    pub redirect_port: Option<u16>,
}

/// The proxy: shared, cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Verifier,
    upstream: Upstream,
    base_domains: Vec<String>,
}

pub(crate) fn full_body(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Everything the error rendering needs to know about the request.
struct RequestView {
    resource: String,
    is_head: bool,
    body_unread: bool,
    op: Option<S3Op>,
}

impl Proxy {
    pub fn new(verifier: Verifier, upstream: Upstream, base_domains: Vec<String>) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                verifier,
                upstream,
                base_domains,
            }),
        }
    }

    /// Serves one request. Never fails: errors become S3 error responses.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        let request_id = crate::util::new_request_id();
        let started = Instant::now();
        let method = req.method().clone();
        let mut view = RequestView {
            resource: req.uri().path().to_owned(),
            is_head: req.method() == Method::HEAD,
            body_unread: has_body(req.headers()),
            op: None,
        };
        let result = self.process(req, conn, &mut view).await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                log_error(&e, &view, &request_id);
                error_response(&e, &view, &request_id)
            }
        };
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert(X_AMZ_REQUEST_ID, v.clone());
            h.insert(X_AMZ_ID_2, v);
        }
        h.insert(http::header::SERVER, HeaderValue::from_static("s3crypt"));
        tracing::debug!(
            request.id = %request_id,
            http.method = %method,
            s3.op = view.op.map_or("-", S3Op::as_str),
            http.status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        resp
    }

    async fn process(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        view: &mut RequestView,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if !conn.secure {
            match conn.plain_http {
                PlainHttpPolicy::Refuse => return Err(ProxyError::InsecureTransport),
                PlainHttpPolicy::Redirect => return redirect_to_https(&req, conn.redirect_port),
                PlainHttpPolicy::Allow => {}
            }
        }
        let host =
            request_host(&req).ok_or(ProxyError::InvalidArgument("missing Host header".into()))?;
        let target = resolve_target(&host, req.uri().path(), &self.inner.base_domains)?;
        view.resource = target.resource();

        let vhost_bucket = target
            .virtual_hosted
            .then_some(target.bucket.as_deref())
            .flatten();
        let head = RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            vhost_bucket,
        };
        let auth = self.inner.verifier.verify(&head, SystemTime::now())?;
        authorize(&auth.client, &target, req.headers())?;
        let op = classify(req.method(), &target, &auth.query, req.headers())?;
        view.op = Some(op);

        let (parts, body) = req.into_parts();
        view.body_unread = false; // from here on the body is consumed by the upstream request or dropped
        let prepared = prepare_body(op, &parts.method, &auth, &parts.headers, body)?;
        let upstream_req = self.build_upstream_request(
            &parts.method,
            &parts.headers,
            &target,
            &auth,
            prepared.body,
            prepared.content_length,
            prepared.aws_chunked,
        )?;
        let resp = self
            .inner
            .upstream
            .send(upstream_req, &prepared.payload)
            .await?;
        response::map_response(resp, op, &auth.client, parts.method == Method::HEAD).await
    }

    #[allow(clippy::too_many_arguments)]
    fn build_upstream_request(
        &self,
        method: &Method,
        client_headers: &HeaderMap,
        target: &Target,
        auth: &Authenticated,
        body: UpstreamBody,
        content_length: Option<u64>,
        aws_chunked: bool,
    ) -> Result<Request<UpstreamBody>, ProxyError> {
        let query = canonical_query(&auth.query, None);
        let (uri, host) = self.inner.upstream.uri_for(target, &query)?;
        let mut headers = client_headers.clone();
        strip_hop_by_hop(&mut headers);
        for name in [
            HOST,
            http::header::AUTHORIZATION,
            CONTENT_LENGTH,
            http::header::EXPECT,
            X_AMZ_DATE,
            X_AMZ_CONTENT_SHA256,
            X_AMZ_SECURITY_TOKEN,
        ] {
            headers.remove(name);
        }
        if aws_chunked {
            headers.remove(X_AMZ_DECODED_CONTENT_LENGTH);
            headers.remove(X_AMZ_TRAILER);
            headers.remove(crate::s3::headers::X_AMZ_SDK_CHECKSUM_ALGORITHM);
            strip_aws_chunked_encoding(&mut headers);
        }
        for (name, value) in &auth.hoisted_headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(
            HOST,
            HeaderValue::from_str(&host).map_err(|_| ProxyError::InvalidUri)?,
        );
        if let Some(len) = content_length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(body)
            .map_err(|e| ProxyError::Internal(e.to_string()))?;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// The client's request body, transformed for upstream.
struct Prepared {
    body: UpstreamBody,
    content_length: Option<u64>,
    payload: OutboundPayload,
    aws_chunked: bool,
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(ProxyError::InvalidArgument(
                "Content-Length is not a number".into(),
            )),
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || declared_length(headers)
            .ok()
            .flatten()
            .is_some_and(|n| n > 0)
}

/// Chooses the body transform from the signed payload mode.
fn prepare_body(
    op: S3Op,
    method: &Method,
    auth: &Authenticated,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Prepared, ProxyError> {
    let length = declared_length(headers)?;
    let chunked_transfer = headers.contains_key(http::header::TRANSFER_ENCODING);
    let body_present = chunked_transfer || length.is_some_and(|n| n > 0);
    let needs_length = matches!(*method, Method::PUT | Method::POST);
    match &auth.payload {
        PayloadMode::Sha256(expected) => {
            if !body_present {
                if *expected != EMPTY_SHA256 {
                    return Err(ProxyError::ContentSha256Mismatch {
                        client: hex::encode(expected),
                        computed: hex::encode(EMPTY_SHA256),
                    });
                }
                return Ok(Prepared {
                    body: Empty::new().map_err(|never| match never {}).boxed_unsync(),
                    content_length: needs_length.then_some(0),
                    payload: OutboundPayload::Sha256Hex(hex::encode(EMPTY_SHA256)),
                    aws_chunked: false,
                });
            }
            let len = length.ok_or(ProxyError::MissingContentLength)?;
            Ok(Prepared {
                body: VerifiedBody::new(body, Some(*expected)).boxed_unsync(),
                content_length: Some(len),
                payload: OutboundPayload::Sha256Hex(hex::encode(expected)),
                aws_chunked: false,
            })
        }
        PayloadMode::Unsigned => {
            if !body_present {
                return Ok(Prepared {
                    body: Empty::new().map_err(|never| match never {}).boxed_unsync(),
                    content_length: needs_length.then_some(0),
                    payload: OutboundPayload::Unsigned,
                    aws_chunked: false,
                });
            }
            let len = length.ok_or(ProxyError::MissingContentLength)?;
            Ok(Prepared {
                body: VerifiedBody::new(body, None).boxed_unsync(),
                content_length: Some(len),
                payload: OutboundPayload::Unsigned,
                aws_chunked: false,
            })
        }
        PayloadMode::StreamingUnsignedTrailer => {
            if !op.carries_object_data() {
                return Err(ProxyError::InvalidRequest(
                    "STREAMING-UNSIGNED-PAYLOAD-TRAILER is only allowed on PutObject and UploadPart".into(),
                ));
            }
            let spec = ChunkedSpec::from_headers(headers)?;
            let len = spec.decoded_length;
            Ok(Prepared {
                body: AwsChunkedBody::new(body, spec).boxed_unsync(),
                content_length: Some(len),
                payload: OutboundPayload::Unsigned,
                aws_chunked: true,
            })
        }
        PayloadMode::StreamingSigned | PayloadMode::StreamingSignedTrailer => {
            Err(ProxyError::NotImplemented(
                "Signed aws-chunked uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) are not supported yet; use \
             UNSIGNED-PAYLOAD, a signed payload hash or STREAMING-UNSIGNED-PAYLOAD-TRAILER.",
            ))
        }
    }
}

/// Removes the `aws-chunked` coding from Content-Encoding, keeping any other (e.g. `gzip`).
fn strip_aws_chunked_encoding(headers: &mut HeaderMap) {
    let Some(v) = headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let rest: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    if rest.is_empty() {
        headers.remove(CONTENT_ENCODING);
    } else if let Ok(v) = HeaderValue::from_str(&rest.join(", ")) {
        headers.insert(CONTENT_ENCODING, v);
    }
}

/// The Host header, or the HTTP/2 `:authority`.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

/// A client limited to some buckets may only touch those (also as a copy source).
fn authorize(
    client: &ClientCredential,
    target: &Target,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    let Some(allowed) = &client.buckets else {
        return Ok(());
    };
    if let Some(b) = &target.bucket
        && !allowed.contains(b)
    {
        return Err(ProxyError::AccessDenied("Access Denied"));
    }
    if let Some(src) = headers.get(X_AMZ_COPY_SOURCE) {
        let decoded = percent_decode(src.as_bytes());
        let text = String::from_utf8_lossy(&decoded);
        let bucket = text.trim_start_matches('/').split('/').next().unwrap_or("");
        if !allowed.contains(bucket) {
            return Err(ProxyError::AccessDenied("Access Denied"));
        }
    }
    Ok(())
}

/// 308 to the same host, path and query over https.
fn redirect_to_https<B>(
    req: &Request<B>,
    port: Option<u16>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let host =
        request_host(req).ok_or(ProxyError::InvalidArgument("missing Host header".into()))?;
    let name = crate::s3::host_without_port(&host);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    {
        return Err(ProxyError::InvalidArgument("invalid Host header".into()));
    }
    let name = if name.contains(':') {
        format!("[{name}]")
    } else {
        name
    };
    let authority = match port {
        Some(443) | None => name,
        Some(p) => format!("{name}:{p}"),
    };
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{authority}{pq}");
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(http::header::LOCATION, location)
        .body(empty_body())
        .map_err(|e| ProxyError::Internal(e.to_string()))
}

fn log_error(e: &ProxyError, view: &RequestView, request_id: &str) {
    let op = view.op.map_or("-", S3Op::as_str);
    match e.side() {
        Side::Client => {
            tracing::info!(request.id = %request_id, s3.op = op, s3.code = e.code(), error = %e, "client error")
        }
        Side::Upstream => {
            tracing::warn!(request.id = %request_id, s3.op = op, s3.code = e.code(), error = %e, "upstream error")
        }
        Side::Internal => {
            tracing::error!(request.id = %request_id, s3.op = op, s3.code = e.code(), error = %e, "internal error")
        }
    }
}

fn error_response(e: &ProxyError, view: &RequestView, request_id: &str) -> Response<ProxyBody> {
    let body = if view.is_head {
        empty_body()
    } else {
        full_body(e.to_xml(&view.resource, request_id))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    if !view.is_head {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
    }
    for (k, v) in e.extra_headers() {
        h.insert(k, v);
    }
    if view.body_unread {
        // The request body was never read: do not try to reuse the connection.
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_is_removed_from_content_encoding_but_other_codings_stay() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_ENCODING,
            HeaderValue::from_static("gzip, aws-chunked"),
        );
        strip_aws_chunked_encoding(&mut h);
        assert_eq!(h.get(CONTENT_ENCODING).unwrap(), "gzip");
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("aws-chunked"));
        strip_aws_chunked_encoding(&mut h);
        assert!(h.get(CONTENT_ENCODING).is_none());
    }

    #[test]
    fn plain_http_redirects_keep_host_path_and_query() {
        let req = Request::builder()
            .uri("/b/k?x=1")
            .header(HOST, "gw.example:8080")
            .body(())
            .unwrap();
        let r = redirect_to_https(&req, Some(8443)).unwrap();
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[http::header::LOCATION],
            "https://gw.example:8443/b/k?x=1"
        );
        let r = redirect_to_https(&req, Some(443)).unwrap();
        assert_eq!(
            r.headers()[http::header::LOCATION],
            "https://gw.example/b/k?x=1"
        );
    }

    #[test]
    fn limited_clients_reach_only_their_buckets_also_as_copy_source() {
        let client = ClientCredential {
            access_key_id: "a".into(),
            secret_access_key: crate::util::secret::SecretString::new("s".into()),
            buckets: Some(["mine".to_owned()].into_iter().collect()),
        };
        let t = |b: &str| Target {
            bucket: Some(b.into()),
            key: Some("k".into()),
            virtual_hosted: false,
        };
        assert!(authorize(&client, &t("mine"), &HeaderMap::new()).is_ok());
        assert!(authorize(&client, &t("other"), &HeaderMap::new()).is_err());
        let mut h = HeaderMap::new();
        h.insert(X_AMZ_COPY_SOURCE, HeaderValue::from_static("/other/k"));
        assert!(authorize(&client, &t("mine"), &h).is_err());
        h.insert(X_AMZ_COPY_SOURCE, HeaderValue::from_static("mine/k%20x"));
        assert!(authorize(&client, &t("mine"), &h).is_ok());
    }
}
