//! The store client: the only place requests to the store are built, for the request path, copies, multipart
//! uploads, sealing and re-encryption, and the maintenance commands alike.
//!
//! A [`StoreRequest`] names the S3 operation it performs; what it may carry to the store is decided by that
//! operation's allow-list ([`allow`]), whoever set it. The client's headers are copied through the same list and
//! never carry SSE (the store's own SSE comes from a typed value), reserved metadata or framing. A header or query
//! parameter of the proxy's own making that the list does not name fails the request (`Internal`), so a mistake
//! is loud, not a leak. Object bodies are framed for the store here (aws-chunked with a CRC32 trailer, or
//! unsigned), and the store's XML answers are read here, with one table of limits ([`reply::Xml`]).

pub mod allow;
pub mod reply;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Empty, Full};

use crate::config::{UploadChecksum, UpstreamSse};
use crate::error::ProxyError;
use crate::s3::error::RequestError;
use crate::s3::op::S3Op;
use crate::s3::query::{Query, VERSION_ID};
use crate::s3::{CopySource, Target};
use crate::sigv4::EMPTY_SHA256;
use crate::sigv4::chunked_encode::{AwsChunkedEncoder, encoded_length, trailer_header};
use crate::sigv4::sign::OutboundPayload;
use crate::upstream::{Upstream, UpstreamBody, UpstreamIncoming};
pub use reply::{Xml, read_xml, result_field};

/// What a store request carries as its body.
pub enum StoreBody {
    /// No body (`Content-Length: 0` on PUT and POST).
    Empty,
    /// A small body (XML), sent with its SHA-256.
    Bytes(Bytes),
    /// Object data of exactly `len` bytes (ciphertext, or plaintext for pass-through buckets), framed for the store
    /// as `upstream.upload_checksum` says.
    Object { body: UpstreamBody, len: u64 },
}

/// The store's own server-side encryption, asked for on a write.
#[derive(Debug, Clone)]
pub enum StoreSse {
    /// `x-amz-server-side-encryption: AES256` or `aws:kms` (the store's default key): a policy's `upstream_sse`.
    Own(UpstreamSse),
    /// A pass-through bucket's client asked the store for SSE-S3 or SSE-KMS: these headers, as the client sent
    /// them (never SSE-C, which the proxy refuses on such buckets).
    Client(Vec<(HeaderName, HeaderValue)>),
}

impl StoreSse {
    /// The SSE-S3 / SSE-KMS request headers of a client, for a pass-through bucket (`None` if it sent none).
    pub fn from_client(headers: &HeaderMap) -> Option<StoreSse> {
        let found: Vec<(HeaderName, HeaderValue)> = allow::STORE_SSE
            .iter()
            .filter_map(|n| headers.get(*n).map(|v| (HeaderName::from_static(n), v.clone())))
            .collect();
        (!found.is_empty()).then_some(StoreSse::Client(found))
    }
}

/// One request to the store, built up, then checked against its operation's allow-list when sent.
pub struct StoreRequest {
    op: S3Op,
    method: Method,
    target: Target,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: StoreBody,
}

impl StoreRequest {
    /// A request performing `op` with `method` on `target`.
    pub fn new(op: S3Op, method: Method, target: &Target) -> StoreRequest {
        StoreRequest {
            op,
            method,
            target: target.clone(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: StoreBody::Empty,
        }
    }

    /// GetObject of `target`.
    pub fn get(target: &Target) -> StoreRequest {
        StoreRequest::new(S3Op::GetObject, Method::GET, target)
    }

    /// A read (`op`: GetObject or HeadObject) of the object a copy names, its version if one is named.
    pub fn read_source(source: &CopySource, op: S3Op) -> StoreRequest {
        let req =
            if op == S3Op::HeadObject { StoreRequest::head(&source.target) } else { StoreRequest::get(&source.target) };
        req.version(source.version_id.as_deref())
    }

    /// HeadObject of `target`.
    /// A read of the client's object (`op`: GetObject or HeadObject) with the client's query and the headers it
    /// may forward: the proxy's reads and follow-up requests (a refetch, a size probe, a read by part number).
    pub fn client_read(op: S3Op, target: &Target, query: &Query, headers: &HeaderMap) -> StoreRequest {
        let method = if op == S3Op::HeadObject { Method::HEAD } else { Method::GET };
        StoreRequest::new(op, method, target).client_query(query).client_headers(headers)
    }

    pub fn head(target: &Target) -> StoreRequest {
        StoreRequest::new(S3Op::HeadObject, Method::HEAD, target)
    }

    /// A query parameter of the proxy's own.
    pub fn param(mut self, name: &str, value: &str) -> StoreRequest {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `versionId`, if a version is named.
    pub fn version(self, version: Option<&str>) -> StoreRequest {
        match version {
            Some(v) => self.param(VERSION_ID, v),
            None => self,
        }
    }

    /// The client's query parameters that the operation takes (others, like the SDKs' `x-id`, stay behind).
    pub fn client_query(mut self, query: &Query) -> StoreRequest {
        let op = self.op;
        self.query.extend(query.pairs().iter().filter(|(k, _)| allow::query(op, k)).cloned());
        self
    }

    /// The client's headers that the operation may forward. `aws-chunked` is dropped from Content-Encoding (the
    /// store client frames bodies itself).
    pub fn client_headers(mut self, headers: &HeaderMap) -> StoreRequest {
        for (name, value) in headers {
            if allow::client_header(self.op, name.as_str()) {
                self.headers.append(name.clone(), value.clone());
            }
        }
        strip_aws_chunked_encoding(&mut self.headers);
        self
    }

    /// A header of the proxy's own (replacing any value).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> StoreRequest {
        self.headers.insert(name, value);
        self
    }

    /// Headers of the proxy's own (each name replacing any value it had; all of its values kept).
    pub fn headers(mut self, headers: HeaderMap) -> StoreRequest {
        for name in headers.keys() {
            self.headers.remove(name);
        }
        for (name, value) in &headers {
            self.headers.append(name.clone(), value.clone());
        }
        self
    }

    /// Headers of the proxy's own as pairs (each replacing any value of its name).
    pub fn pairs(mut self, pairs: impl IntoIterator<Item = (HeaderName, HeaderValue)>) -> StoreRequest {
        for (name, value) in pairs {
            self.headers.insert(name, value);
        }
        self
    }

    /// Leaves a header out.
    pub fn without(mut self, name: &HeaderName) -> StoreRequest {
        self.headers.remove(name);
        self
    }

    /// Asks the store for its own server-side encryption.
    pub fn sse(mut self, sse: Option<&StoreSse>) -> StoreRequest {
        match sse {
            None => {}
            Some(StoreSse::Own(u)) => {
                self.headers.insert(crate::s3::sse::SSE, HeaderValue::from_static(u.header_value()));
            }
            Some(StoreSse::Client(h)) => {
                for (n, v) in h {
                    self.headers.insert(n.clone(), v.clone());
                }
            }
        }
        self
    }

    pub fn body(mut self, body: StoreBody) -> StoreRequest {
        self.body = body;
        self
    }

    /// The target's key, if any (for checks before sending).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Fails closed if anything the operation may not carry is present.
    fn check(&self) -> Result<(), ProxyError> {
        if !self.op.admits(&self.method) {
            return Err(ProxyError::Internal(format!("{} is not sent as {}", self.op.as_str(), self.method)));
        }
        if let Some(name) = self.headers.keys().find(|n| !allow::header(self.op, n.as_str())) {
            return Err(ProxyError::Internal(format!(
                "header {name} is not sent to the store on {}",
                self.op.as_str()
            )));
        }
        if let Some((name, _)) = self.query.iter().find(|(k, _)| !allow::query(self.op, k)) {
            return Err(ProxyError::Internal(format!(
                "query parameter {name} is not sent to the store on {}",
                self.op.as_str()
            )));
        }
        Ok(())
    }
}

/// Removes the `aws-chunked` coding from Content-Encoding, keeping any other (e.g. `gzip`).
pub fn strip_aws_chunked_encoding(headers: &mut HeaderMap) {
    let Some(v) = headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let rest: Vec<&str> =
        v.split(',').map(str::trim).filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked")).collect();
    if rest.is_empty() {
        headers.remove(CONTENT_ENCODING);
    } else if let Ok(v) = HeaderValue::from_str(&rest.join(", ")) {
        headers.insert(CONTENT_ENCODING, v);
    }
}

/// Puts `aws-chunked` first in Content-Encoding (the object's own codings, e.g. `gzip`, follow).
fn add_aws_chunked_encoding(headers: &mut HeaderMap) {
    let value = match headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("aws-chunked,{existing}"),
        _other => "aws-chunked".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(CONTENT_ENCODING, v);
    }
}

/// The store client: builds, checks, frames, signs and sends. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    upstream: Arc<Upstream>,
    upload_checksum: UploadChecksum,
}

impl Store {
    pub fn new(upstream: Arc<Upstream>, upload_checksum: UploadChecksum) -> Store {
        Store { upstream, upload_checksum }
    }

    /// The transport underneath (a reload keeps the embedded store's).
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Sends a request and returns the store's response head (the body streams).
    pub async fn send(&self, req: StoreRequest) -> Result<Response<UpstreamIncoming>, ProxyError> {
        req.check()?;
        let StoreRequest { op: _, method, target, query, mut headers, body } = req;
        let q = crate::sigv4::canonical::canonical_query(&query, None);
        let (uri, host) = self.upstream.uri_for(&target, &q)?;
        let writes = matches!(method, Method::PUT | Method::POST);
        let (body, length, payload): (UpstreamBody, Option<u64>, OutboundPayload) = match body {
            StoreBody::Empty => (
                Empty::new().map_err(|never| match never {}).boxed_unsync(),
                writes.then_some(0),
                OutboundPayload::Sha256Hex(hex::encode(EMPTY_SHA256)),
            ),
            StoreBody::Bytes(b) => {
                let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b));
                let len = b.len() as u64;
                (
                    Full::new(b).map_err(|never| match never {}).boxed_unsync(),
                    Some(len),
                    OutboundPayload::Sha256Hex(hash),
                )
            }
            StoreBody::Object { body, len } => match self.upload_checksum {
                UploadChecksum::Crc32 => {
                    headers.insert(crate::s3::headers::X_AMZ_DECODED_CONTENT_LENGTH, HeaderValue::from(len));
                    headers.insert(crate::s3::headers::X_AMZ_TRAILER, HeaderValue::from_static(trailer_header()));
                    add_aws_chunked_encoding(&mut headers);
                    let encoded: UpstreamBody = AwsChunkedEncoder::new(body, len).boxed_unsync();
                    let length = encoded_length(len);
                    (encoded, Some(length), OutboundPayload::StreamingUnsignedTrailer)
                }
                UploadChecksum::None => (body, Some(len), OutboundPayload::Unsigned),
            },
        };
        headers.insert(HOST, HeaderValue::from_str(&host).map_err(|_| RequestError::InvalidUri)?);
        if let Some(len) = length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        let mut req =
            Request::builder().method(method).uri(uri).body(body).map_err(|e| ProxyError::Internal(e.to_string()))?;
        *req.headers_mut() = headers;
        self.upstream.send(req, &payload).await
    }

    /// Sends a request whose success is an XML document of `kind`, and reads it: an error status, or a 200 whose
    /// body is an `<Error>` document (Complete and copies do that), is an error.
    pub async fn xml(&self, req: StoreRequest, kind: Xml) -> Result<(HeaderMap, Bytes), ProxyError> {
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            return Err(reply::error(parts.status, &parts.headers, body, false).await);
        }
        let bytes = read_xml(body, kind).await?;
        if let Some((code, message)) = crate::s3::xml::parse_error(&bytes) {
            return Err(reply::error_in_ok_body(code, message));
        }
        Ok((parts.headers, bytes))
    }

    /// Sends a request whose success needs no body (HEAD, PUT of an object, DELETE): its headers, or the store's
    /// error.
    pub async fn expect_ok(&self, req: StoreRequest) -> Result<HeaderMap, ProxyError> {
        let is_head = req.method == Method::HEAD;
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            return Err(reply::error(parts.status, &parts.headers, body, is_head).await);
        }
        Ok(parts.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target { bucket: Some("b".into()), key: Some("k".into()), virtual_hosted: false }
    }

    #[test]
    fn aws_chunked_is_removed_from_content_encoding_but_other_codings_stay() {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("gzip, aws-chunked"));
        strip_aws_chunked_encoding(&mut h);
        assert_eq!(h.get(http::header::CONTENT_ENCODING).unwrap(), "gzip");
        h.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("aws-chunked"));
        strip_aws_chunked_encoding(&mut h);
        assert!(h.get(http::header::CONTENT_ENCODING).is_none());
    }

    #[test]
    fn the_clients_sse_c_key_and_credentials_are_never_copied_onto_a_store_request() {
        let mut client = HeaderMap::new();
        for (n, v) in [
            ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
            ("x-amz-server-side-encryption-customer-key", "a2V5"),
            ("x-amz-server-side-encryption-customer-key-md5", "bWQ1"),
            ("x-amz-copy-source-server-side-encryption-customer-key", "a2V5"),
            ("x-amz-server-side-encryption", "aws:kms"),
            ("authorization", "AWS4-HMAC-SHA256 ..."),
            ("x-amz-security-token", "t"),
            ("x-amz-decoded-content-length", "5"),
            ("content-encoding", "aws-chunked,gzip"),
            ("if-match", "\"e\""),
            ("range", "bytes=0-1"),
            ("x-amz-meta-color", "blue"),
            ("user-agent", "sdk"),
        ] {
            client.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        for op in [S3Op::GetObject, S3Op::HeadObject, S3Op::PutObject, S3Op::UploadPart, S3Op::CopyObject] {
            let method = if op == S3Op::HeadObject { Method::HEAD } else { Method::GET };
            let r = StoreRequest::new(op, method, &target()).client_headers(&client);
            for name in r.headers.keys() {
                let n = name.as_str();
                assert!(!n.contains("customer") && n != "authorization", "{op:?}: {n}");
                assert!(n != "x-amz-server-side-encryption" && n != "x-amz-security-token", "{op:?}: {n}");
                assert!(n != "x-amz-decoded-content-length" && n != "user-agent", "{op:?}: {n}");
            }
        }
        let put = StoreRequest::new(S3Op::PutObject, Method::PUT, &target()).client_headers(&client);
        assert_eq!(put.headers["content-encoding"], "gzip");
        assert_eq!(put.headers["x-amz-meta-color"], "blue");
        let get = StoreRequest::get(&target()).client_headers(&client);
        assert_eq!(
            (&get.headers["if-match"], &get.headers["range"]),
            (&"\"e\"".parse::<HeaderValue>().unwrap(), &"bytes=0-1".parse::<HeaderValue>().unwrap())
        );
    }

    #[test]
    fn a_header_or_parameter_of_the_proxys_own_outside_the_list_fails_the_request() {
        let bad = StoreRequest::get(&target()).header(
            HeaderName::from_static("x-amz-server-side-encryption-customer-key"),
            HeaderValue::from_static("k"),
        );
        assert_eq!(bad.check().unwrap_err().code(), "InternalError");
        let bad = StoreRequest::get(&target()).param("uploadId", "u");
        assert_eq!(bad.check().unwrap_err().code(), "InternalError");
        let wrong_method = StoreRequest::new(S3Op::PutObject, Method::GET, &target());
        assert_eq!(wrong_method.check().unwrap_err().code(), "InternalError");
        let ok = StoreRequest::get(&target())
            .param("versionId", "v")
            .header(http::header::RANGE, HeaderValue::from_static("bytes=0-1"));
        assert!(ok.check().is_ok());
        let q = Query::new(vec![("x-id".to_owned(), "GetObject".to_owned()), ("versionId".to_owned(), "1".to_owned())]);
        assert_eq!(StoreRequest::get(&target()).client_query(&q).query, vec![("versionId".to_owned(), "1".to_owned())]);
    }
}
