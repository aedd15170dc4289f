//! The one error type at the request boundary, and its S3 rendering.
//!
//! Every failure a request can meet ends up as a [`ProxyError`]: the gateway's own kinds, or the small error of the
//! module that found it (`s3::error::{RequestError, BodyError}`, `sigv4::error::AuthError`,
//! `crypto::error::CryptoError`), converted here. [`ProxyError::kind`] is the one table: each kind maps once,
//! exhaustively (no wildcard arms), to its S3 code, HTTP status, the [`Side`] that caused it, the message clients
//! see and the elements and headers S3 adds. The `Display` text (which may carry internal detail) is for logs.

use std::borrow::Cow;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::crypto::error::{CryptoError, KmsCode};
use crate::s3::error::{BodyError, RequestError};
use crate::sigv4::chunked::ChunkedError;
use crate::sigv4::error::{AuthError, SignError};

/// Who caused a failure: decides the log level and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we refuse (4xx).
    Client,
    /// The upstream store failed or misbehaved.
    Upstream,
    /// A bug or an environment failure inside the proxy.
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// Every way a request can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    // --- found by the modules that read requests, bodies and objects ------------------------------------
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),

    // --- the gateway's policy ---------------------------------------------------------------------------
    #[error("plain HTTP refused on this listener")]
    InsecureTransport,
    #[error("client over its request rate")]
    SlowDown,
    /// `server.max_inflight_requests` requests are in flight already (the memory budget's limit).
    #[error("proxy at its in-flight request limit")]
    Overloaded,
    #[error("object is not encrypted by s3crypt")]
    PlaintextObject,
    /// An object of the AWS S3 Encryption Client larger than `encryption.s3ec.max_object_size`: it would have to be
    /// buffered whole to be authenticated.
    #[error("S3 Encryption Client object too large to authenticate in memory")]
    S3ecTooLarge { limit: u64 },
    #[error("range not satisfiable")]
    InvalidRange { size: u64 },
    #[error("multipart object not sealed")]
    UnsealedObject,

    // --- bucket settings made through the API (docs/BUCKETS.md) ------------------------------------------
    /// The bucket's settings cannot be read from the system bucket, or do not open: its requests fail closed.
    #[error("bucket settings unavailable")]
    SettingsUnavailable,
    #[error("malformed policy: {0}")]
    MalformedPolicy(String),
    #[error("no bucket policy")]
    NoSuchBucketPolicy,
    #[error("no default encryption configuration")]
    NoEncryptionConfiguration,

    // --- multipart --------------------------------------------------------------------------------------
    #[error("no such upload")]
    NoSuchUpload,
    #[error("invalid part: {0}")]
    InvalidPart(Cow<'static, str>),
    #[error("parts not in ascending order")]
    InvalidPartOrder,

    // --- upstream ---------------------------------------------------------------------------------------
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream response timed out")]
    UpstreamTimeout,
    #[error("upstream rejected the proxy's credentials or endpoint: {0}")]
    UpstreamAuth(String),
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(String),
    /// An upstream error answered on the client's behalf, scrubbed: code, message and a few safe headers.
    #[error("upstream error {code}")]
    Upstream { status: StatusCode, code: String, message: String, headers: Vec<(HeaderName, HeaderValue)> },

    // --- internal ---------------------------------------------------------------------------------------
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ChunkedError> for ProxyError {
    fn from(e: ChunkedError) -> Self {
        match e {
            ChunkedError::Body(e) => e.into(),
            ChunkedError::Signature(e) => e.into(),
            ChunkedError::Request(e) => e.into(),
        }
    }
}

/// A transport error of a body being read (see `BodyError`'s).
impl From<hyper::Error> for ProxyError {
    fn from(e: hyper::Error) -> Self {
        BodyError::from(e).into()
    }
}

/// The proxy's own signing failed: the request cannot be sent as asked.
impl From<SignError> for ProxyError {
    fn from(e: SignError) -> Self {
        match e {
            SignError::NoHost => RequestError::InvalidUri.into(),
            SignError::HeaderNotText(name) => {
                RequestError::InvalidArgument(format!("header {name} is not valid UTF-8").into()).into()
            }
            SignError::Unsignable(what) => ProxyError::Internal(format!("cannot sign: {what}")),
        }
    }
}

/// Writes `<Error><Code/><Message/><Resource/><RequestId/>[extra]</Error>` as S3 does.
fn error_document(
    code: &str,
    message: &str,
    resource: &str,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> Bytes {
    let mut s = String::with_capacity(256);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
    crate::util::push_xml_element(&mut s, "Code", code);
    crate::util::push_xml_element(&mut s, "Message", message);
    crate::util::push_xml_element(&mut s, "Resource", resource);
    crate::util::push_xml_element(&mut s, "RequestId", request_id);
    for (name, value) in extra {
        crate::util::push_xml_element(&mut s, name, value);
    }
    s.push_str("</Error>");
    Bytes::from(s)
}

/// A row of the error table: the S3 code, HTTP status, side and client message of one error, and the elements and
/// headers S3 adds to it.
#[derive(Debug, Clone)]
pub struct Kind<'a> {
    pub code: &'a str,
    pub status: StatusCode,
    pub side: Side,
    pub message: Cow<'a, str>,
    /// Code-specific XML elements after the standard ones.
    pub elements: Vec<(&'static str, String)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

fn kind<'a>(code: &'a str, status: StatusCode, side: Side, message: Cow<'a, str>) -> Kind<'a> {
    Kind { code, status, side, message, elements: Vec::new(), headers: Vec::new() }
}

impl<'a> Kind<'a> {
    fn element(mut self, name: &'static str, value: String) -> Self {
        self.elements.push((name, value));
        self
    }

    fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// `Retry-After: 1`, for errors a client should retry soon.
    fn retry_soon(self) -> Self {
        self.header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
    }
}

use Side::{Client, Internal, Upstream};
use StatusCode as S;

fn said(m: &str) -> Cow<'_, str> {
    Cow::Borrowed(m)
}

fn now() -> String {
    crate::util::time::iso8601(SystemTime::now())
}

impl ProxyError {
    /// The one table: each kind of error's S3 code, HTTP status, the side that caused it, the message the client
    /// sees (never internal detail; the `Display` text, for logs, may carry it), and what S3 adds to it.
    pub fn kind(&self) -> Kind<'_> {
        match self {
            ProxyError::Request(e) => request_kind(e),
            ProxyError::Body(e) => body_kind(e),
            ProxyError::Auth(e) => auth_kind(e),
            ProxyError::Crypto(e) => crypto_kind(e),
            ProxyError::InsecureTransport => kind(
                "InsecureTransport",
                S::FORBIDDEN,
                Client,
                said("Requests to this endpoint must use HTTPS; plain HTTP is refused by policy."),
            ),
            ProxyError::SlowDown | ProxyError::Overloaded => {
                kind("SlowDown", S::SERVICE_UNAVAILABLE, Client, said("Please reduce your request rate.")).retry_soon()
            }
            ProxyError::PlaintextObject => kind(
                "InvalidObjectState",
                S::FORBIDDEN,
                Client,
                said("The object is not encrypted by the gateway, and reading unencrypted objects is disabled."),
            ),
            ProxyError::S3ecTooLarge { limit } => kind(
                "InvalidObjectState",
                S::FORBIDDEN,
                Client,
                format!(
                    "This object was written by the AWS S3 Encryption Client; it is authenticated as a whole, and it \
                     is larger than the gateway reads in one piece ({limit} bytes). Re-encrypt it with `s3crypt \
                     migrate --from-s3ec`."
                )
                .into(),
            ),
            ProxyError::InvalidRange { size } => {
                let k = kind(
                    "InvalidRange",
                    S::RANGE_NOT_SATISFIABLE,
                    Client,
                    said("The requested range is not satisfiable"),
                )
                .element("ActualObjectSize", size.to_string());
                match HeaderValue::from_str(&format!("bytes */{size}")) {
                    Ok(v) => k.header(http::header::CONTENT_RANGE, v),
                    Err(_) => k,
                }
            }
            ProxyError::UnsealedObject => kind(
                "InvalidObjectState",
                S::FORBIDDEN,
                Client,
                said(
                    "This multipart object was completed at the storage service but the gateway could not seal it, \
                     so its layout is not authenticated and it is not returned. Complete the upload again or \
                     re-upload the object.",
                ),
            ),
            ProxyError::SettingsUnavailable => kind(
                "ServiceUnavailable",
                S::SERVICE_UNAVAILABLE,
                Internal,
                said("The bucket's settings cannot be read right now. Please try again."),
            )
            .retry_soon(),
            ProxyError::MalformedPolicy(m) => kind("MalformedPolicy", S::BAD_REQUEST, Client, said(m)),
            ProxyError::NoSuchBucketPolicy => {
                kind("NoSuchBucketPolicy", S::NOT_FOUND, Client, said("The bucket policy does not exist"))
            }
            ProxyError::NoEncryptionConfiguration => kind(
                "ServerSideEncryptionConfigurationNotFoundError",
                S::NOT_FOUND,
                Client,
                said("The server side encryption configuration was not found"),
            ),
            ProxyError::NoSuchUpload => no_such_upload(),
            ProxyError::InvalidPart(m) => kind("InvalidPart", S::BAD_REQUEST, Client, said(m)),
            ProxyError::InvalidPartOrder => kind(
                "InvalidPartOrder",
                S::BAD_REQUEST,
                Client,
                said("The list of parts was not in ascending order. Parts must be ordered by part number."),
            ),
            ProxyError::UpstreamUnavailable(_) => kind(
                "ServiceUnavailable",
                S::SERVICE_UNAVAILABLE,
                Upstream,
                said("The storage service is unavailable. Please retry."),
            )
            .retry_soon(),
            ProxyError::UpstreamTimeout => kind(
                "GatewayTimeout",
                S::GATEWAY_TIMEOUT,
                Upstream,
                said("The storage service did not answer in time."),
            ),
            ProxyError::UpstreamAuth(_) => kind(
                "BadGateway",
                S::BAD_GATEWAY,
                Upstream,
                said("The gateway could not access the storage service. Contact the gateway operator."),
            ),
            ProxyError::UpstreamProtocol(_) => bad_store_answer(),
            // An upstream 4xx answers the client's own request (NoSuchKey, PreconditionFailed ...).
            ProxyError::Upstream { status, code, message, headers } => {
                let side = if status.is_client_error() { Client } else { Upstream };
                Kind { headers: headers.clone(), ..kind(code, *status, side, said(message)) }
            }
            ProxyError::Internal(_) => internal(),
        }
    }

    /// The S3 error code.
    pub fn code(&self) -> &str {
        self.kind().code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind().status
    }

    /// Who caused it.
    pub fn side(&self) -> Side {
        self.kind().side
    }

    /// The message clients see. Never carries internal detail.
    pub fn client_message(&self) -> Cow<'_, str> {
        self.kind().message
    }

    /// Extra response headers that go with this error.
    pub fn extra_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.kind().headers
    }

    /// Renders the S3 XML error document.
    pub fn to_xml(&self, resource: &str, request_id: &str) -> Bytes {
        let k = self.kind();
        error_document(k.code, &k.message, resource, request_id, &k.elements)
    }

    /// Finds a `ProxyError` in an error's source chain (a body error surfaced through hyper).
    pub fn find_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ProxyError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<ProxyError>() {
                return Some(found);
            }
            cur = e.source();
        }
        None
    }
}

fn internal() -> Kind<'static> {
    kind(
        "InternalError",
        S::INTERNAL_SERVER_ERROR,
        Internal,
        said("We encountered an internal error. Please try again."),
    )
}

fn bad_store_answer() -> Kind<'static> {
    kind("BadGateway", S::BAD_GATEWAY, Upstream, said("The storage service returned an invalid response."))
}

fn no_such_upload() -> Kind<'static> {
    kind(
        "NoSuchUpload",
        S::NOT_FOUND,
        Client,
        said(
            "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload \
             might have been aborted or completed.",
        ),
    )
}

fn request_kind(e: &RequestError) -> Kind<'_> {
    match e {
        RequestError::InvalidRequest(m) => kind("InvalidRequest", S::BAD_REQUEST, Client, said(m)),
        RequestError::InvalidArgument(m) => kind("InvalidArgument", S::BAD_REQUEST, Client, said(m)),
        RequestError::InvalidBucketName => {
            kind("InvalidBucketName", S::BAD_REQUEST, Client, said("The specified bucket is not valid."))
        }
        RequestError::InvalidUri => {
            kind("InvalidURI", S::BAD_REQUEST, Client, said("Couldn't parse the specified URI."))
        }
        RequestError::MethodNotAllowed => kind(
            "MethodNotAllowed",
            S::METHOD_NOT_ALLOWED,
            Client,
            said("The specified method is not allowed against this resource."),
        ),
        RequestError::NotImplemented(m) => kind("NotImplemented", S::NOT_IMPLEMENTED, Client, said(m)),
        RequestError::MissingContentLength => kind(
            "MissingContentLength",
            S::LENGTH_REQUIRED,
            Client,
            said("You must provide the Content-Length HTTP header."),
        ),
        RequestError::InvalidDigest => {
            kind("InvalidDigest", S::BAD_REQUEST, Client, said("The Content-MD5 you specified was invalid."))
        }
        RequestError::EntityTooLarge => kind(
            "EntityTooLarge",
            S::BAD_REQUEST,
            Client,
            said("Your proposed upload exceeds the maximum allowed size."),
        ),
        RequestError::EntityTooSmall => kind(
            "EntityTooSmall",
            S::BAD_REQUEST,
            Client,
            said("Your proposed upload is smaller than the minimum allowed size."),
        ),
        RequestError::InvalidPolicyDocument(m) => kind("InvalidPolicyDocument", S::BAD_REQUEST, Client, said(m)),
        RequestError::MalformedPostRequest(m) => kind("MalformedPOSTRequest", S::BAD_REQUEST, Client, said(m)),
        RequestError::MetadataTooLarge { limit } => kind(
            "MetadataTooLarge",
            S::BAD_REQUEST,
            Client,
            said("Your metadata headers exceed the maximum allowed metadata size."),
        )
        .element("MaxSizeAllowed", limit.to_string()),
        RequestError::InvalidEncryptionAlgorithm => kind(
            "InvalidEncryptionAlgorithmError",
            S::BAD_REQUEST,
            Client,
            said("The encryption request you specified is not valid. The valid value is AES256."),
        ),
        RequestError::MalformedXml(_) => kind(
            "MalformedXML",
            S::BAD_REQUEST,
            Client,
            said("The XML you provided was not well-formed or did not validate against our published schema."),
        ),
    }
}

fn body_kind(e: &BodyError) -> Kind<'_> {
    match e {
        BodyError::ContentSha256Mismatch { client, computed } => kind(
            "XAmzContentSHA256Mismatch",
            S::BAD_REQUEST,
            Client,
            said("The provided 'x-amz-content-sha256' header does not match what was computed."),
        )
        .element("ClientComputedContentSHA256", client.clone())
        .element("S3ComputedContentSHA256", computed.clone()),
        BodyError::IncompleteBody(_) | BodyError::ClientBody(_) => kind(
            "IncompleteBody",
            S::BAD_REQUEST,
            Client,
            said("You did not provide the number of bytes specified by the Content-Length HTTP header."),
        ),
        BodyError::MalformedChunkedBody(_) => {
            kind("IncompleteBody", S::BAD_REQUEST, Client, said("The aws-chunked request body is malformed."))
        }
        BodyError::InvalidChunkSize(_) => kind(
            "InvalidChunkSizeError",
            S::BAD_REQUEST,
            Client,
            said(
                "Only the last chunk is allowed to have a size less than 8192 bytes, and no chunk may exceed the \
                 maximum chunk size.",
            ),
        ),
        BodyError::MalformedTrailer(m) => kind("MalformedTrailerError", S::BAD_REQUEST, Client, said(m)),
        BodyError::BadDigest { algorithm } => kind(
            "BadDigest",
            S::BAD_REQUEST,
            Client,
            format!("The {algorithm} you specified did not match the calculated checksum.").into(),
        ),
        BodyError::RequestTimeout => kind(
            "RequestTimeout",
            S::BAD_REQUEST,
            Client,
            said("Your socket connection to the server was not read from or written to within the timeout period."),
        ),
    }
}

fn auth_kind(e: &AuthError) -> Kind<'_> {
    match e {
        AuthError::AccessDenied(m) => kind("AccessDenied", S::FORBIDDEN, Client, said(m)),
        AuthError::HeadersNotSigned(names) => kind(
            "AccessDenied",
            S::FORBIDDEN,
            Client,
            said("There were headers present in the request which were not signed"),
        )
        .element("HeadersNotSigned", names.join(", ")),
        AuthError::RequestExpired { expires_secs, expired_at } => {
            kind("AccessDenied", S::FORBIDDEN, Client, said("Request has expired"))
                .element("X-Amz-Expires", expires_secs.to_string())
                .element("Expires", crate::util::time::iso8601(*expired_at))
                .element("ServerTime", now())
        }
        AuthError::InvalidAccessKeyId { access_key_id } => kind(
            "InvalidAccessKeyId",
            S::FORBIDDEN,
            Client,
            said("The AWS Access Key Id you provided does not exist in our records."),
        )
        .element("AWSAccessKeyId", access_key_id.clone()),
        AuthError::SignatureDoesNotMatch(m) => kind(
            "SignatureDoesNotMatch",
            S::FORBIDDEN,
            Client,
            said(
                "The request signature we calculated does not match the signature you provided. Check your key and \
                 signing method.",
            ),
        )
        .element("AWSAccessKeyId", m.access_key_id.clone())
        .element("StringToSign", m.string_to_sign.clone())
        .element("SignatureProvided", m.signature_provided.clone())
        .element("CanonicalRequest", m.canonical_request.clone()),
        AuthError::RequestTimeTooSkewed { request_time } => kind(
            "RequestTimeTooSkewed",
            S::FORBIDDEN,
            Client,
            said("The difference between the request time and the current time is too large."),
        )
        .element("RequestTime", crate::util::time::iso8601(*request_time))
        .element("ServerTime", now())
        .element("MaxAllowedSkewMilliseconds", "900000".to_owned()),
        AuthError::AuthorizationHeaderMalformed { message, region } => {
            let k = kind("AuthorizationHeaderMalformed", S::BAD_REQUEST, Client, said(message));
            match region {
                Some(r) => k.element("Region", r.clone()),
                None => k,
            }
        }
        AuthError::AuthorizationQueryParametersError(m) => {
            kind("AuthorizationQueryParametersError", S::BAD_REQUEST, Client, said(m))
        }
        AuthError::InvalidToken => {
            kind("InvalidToken", S::BAD_REQUEST, Client, said("The provided token is malformed or otherwise invalid."))
        }
        AuthError::Request(e) => request_kind(e),
    }
}

fn crypto_kind(e: &CryptoError) -> Kind<'_> {
    match e {
        CryptoError::Integrity(_) => kind(
            "ObjectIntegrityError",
            S::BAD_GATEWAY,
            Upstream,
            said(
                "The stored object failed authentication: it was altered, truncated or moved at the storage service, \
                 and is not returned.",
            ),
        ),
        CryptoError::UnknownKey(_) => kind(
            "KMS.NotFoundException",
            S::BAD_REQUEST,
            Internal,
            said("The key that encrypted this object is not available to the gateway."),
        ),
        CryptoError::NotAllowed(m) => kind("AccessDenied", S::FORBIDDEN, Client, said(m)),
        CryptoError::Kms(c) => kms_kind(*c),
        CryptoError::KmsUnavailable(_) => kind(
            "ServiceUnavailable",
            S::SERVICE_UNAVAILABLE,
            Upstream,
            said("The key management service is unavailable. Please retry."),
        )
        .retry_soon(),
        CryptoError::ForeignUploadId => no_such_upload(),
        CryptoError::Busy => {
            kind("SlowDown", S::SERVICE_UNAVAILABLE, Client, said("Please reduce your request rate.")).retry_soon()
        }
        CryptoError::Store(_) => bad_store_answer(),
        CryptoError::Request(e) => request_kind(e),
        CryptoError::Internal(_) => internal(),
    }
}

fn kms_kind(c: KmsCode) -> Kind<'static> {
    let (code, message) = match c {
        KmsCode::NotFound => {
            ("KMS.NotFoundException", "The KMS key does not exist or is not available to the gateway.")
        }
        KmsCode::Disabled => ("KMS.DisabledException", "The KMS key is disabled."),
        KmsCode::InvalidState => {
            ("KMS.KMSInvalidStateException", "The KMS key is not in a state that allows this request.")
        }
        KmsCode::RequestFailed | KmsCode::Failed => {
            ("KMS.RequestFailed", "The key management service refused the request.")
        }
    };
    match c {
        KmsCode::Failed => kind(code, S::INTERNAL_SERVER_ERROR, Upstream, said(message)),
        KmsCode::NotFound | KmsCode::Disabled | KmsCode::InvalidState | KmsCode::RequestFailed => {
            kind(code, S::BAD_REQUEST, Client, said(message))
        }
    }
}

/// Boxed error used by bodies crossing hyper.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_escape_their_text() {
        let x = error_document("NoSuchKey", "a < b & c", "/b/k<", "RID", &[("Key", "k".into())]);
        let s = std::str::from_utf8(&x).unwrap();
        assert!(s.contains("<Message>a &lt; b &amp; c</Message>"));
        assert!(s.contains("<Resource>/b/k&lt;</Resource>"));
        assert!(s.contains("<Key>k</Key>"));
        assert_eq!(crate::s3::xml::parse_error(&x), Some(("NoSuchKey".into(), "a < b & c".into())));
    }

    #[test]
    fn client_errors_never_show_internal_detail() {
        let e = ProxyError::Internal("secret path /etc/keys".into());
        assert!(!e.client_message().contains("/etc"));
        let xml = e.to_xml("/b/k", "RID");
        assert!(!String::from_utf8_lossy(&xml).contains("/etc"));
        let e = ProxyError::UpstreamAuth("upstream AKID AKIAXXXX".into());
        assert!(!String::from_utf8_lossy(&e.to_xml("/b", "R")).contains("AKIA"));
    }

    #[test]
    fn a_proxy_error_is_found_through_a_chain_of_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] ProxyError);
        let outer = Outer(BodyError::BadDigest { algorithm: "CRC32" }.into());
        assert_eq!(ProxyError::find_in(&outer).map(|e| e.code()), Some("BadDigest"));
    }
}
