//! The one error type at the request boundary, and its S3 rendering.
//!
//! Every failure a request can meet ends up as a [`ProxyError`]. Each variant is mapped exhaustively (no
//! wildcard arms) to the S3 error code, the HTTP status and the [`Side`] that caused it. Clients only ever
//! see [`ProxyError::client_message`]; the `Display` text (which may carry internal detail) is for logs.

use std::borrow::Cow;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

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
    // --- authentication and authorisation -------------------------------------------------------------
    #[error("access denied: {0}")]
    AccessDenied(&'static str),
    #[error("headers present but not signed: {0:?}")]
    HeadersNotSigned(Vec<String>),
    #[error("presigned request has expired")]
    RequestExpired { expires_secs: u64, expired_at: SystemTime },
    #[error("plain HTTP refused on this listener")]
    InsecureTransport,
    #[error("unknown access key id")]
    InvalidAccessKeyId { access_key_id: String },
    #[error("signature does not match")]
    SignatureDoesNotMatch(Box<SignatureMismatch>),
    #[error("request time too skewed")]
    RequestTimeTooSkewed { request_time: SystemTime },
    #[error("malformed authorization header: {message}")]
    AuthorizationHeaderMalformed { message: Cow<'static, str>, region: Option<String> },
    #[error("bad presigned URL parameters: {0}")]
    AuthorizationQueryParametersError(Cow<'static, str>),
    #[error("security tokens are not accepted")]
    InvalidToken,

    // --- malformed or unsupported requests --------------------------------------------------------------
    #[error("invalid request: {0}")]
    InvalidRequest(Cow<'static, str>),
    #[error("invalid argument: {0}")]
    InvalidArgument(Cow<'static, str>),
    #[error("invalid bucket name")]
    InvalidBucketName,
    #[error("invalid URI")]
    InvalidUri,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    #[error("missing content length")]
    MissingContentLength,

    // --- bodies -----------------------------------------------------------------------------------------
    #[error("payload hash mismatch")]
    ContentSha256Mismatch { client: String, computed: String },
    #[error("incomplete body: {0}")]
    IncompleteBody(&'static str),
    #[error("malformed aws-chunked body: {0}")]
    MalformedChunkedBody(&'static str),
    #[error("invalid chunk size: {0}")]
    InvalidChunkSize(&'static str),
    #[error("malformed trailer: {0}")]
    MalformedTrailer(Cow<'static, str>),
    #[error("{algorithm} checksum mismatch")]
    BadDigest { algorithm: &'static str },
    #[error("malformed Content-MD5")]
    InvalidDigest,
    #[error("request body too large for the operation")]
    EntityTooLarge,
    #[error("client body read failed: {0}")]
    ClientBody(String),
    #[error("client body read timed out")]
    RequestTimeout,
    #[error("client over its request rate")]
    SlowDown,

    // --- encryption -------------------------------------------------------------------------------------
    #[error("stored object failed authentication: {0}")]
    ObjectIntegrity(&'static str),
    #[error("the object's key {0} is not available")]
    UnknownKey(String),
    #[error("object is not encrypted by s3crypt")]
    PlaintextObject,
    /// An object of the AWS S3 Encryption Client larger than `encryption.s3ec.max_object_size`: it would have to be
    /// buffered whole to be authenticated.
    #[error("S3 Encryption Client object too large to authenticate in memory")]
    S3ecTooLarge { limit: u64 },
    #[error("user metadata too large")]
    MetadataTooLarge { limit: usize },
    #[error("range not satisfiable")]
    InvalidRange { size: u64 },
    #[error("multipart object not sealed")]
    UnsealedObject,
    #[error("KMS refused: {0:?}")]
    Kms(KmsCode),
    #[error("KMS unavailable: {0}")]
    KmsUnavailable(String),
    #[error("invalid encryption algorithm")]
    InvalidEncryptionAlgorithm,

    // --- multipart --------------------------------------------------------------------------------------
    #[error("no such upload")]
    NoSuchUpload,
    #[error("invalid part: {0}")]
    InvalidPart(Cow<'static, str>),
    #[error("parts not in ascending order")]
    InvalidPartOrder,
    #[error("part number not satisfiable")]
    InvalidPartNumber,
    #[error("malformed XML: {0}")]
    MalformedXml(&'static str),

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
    Upstream { status: StatusCode, code: String, message: String, headers: Vec<(http::HeaderName, HeaderValue)> },

    // --- internal ---------------------------------------------------------------------------------------
    #[error("internal error: {0}")]
    Internal(String),
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

/// A row of the error table: the S3 code, HTTP status, side and client message of one error.
#[derive(Debug, Clone)]
pub struct Kind<'a> {
    pub code: &'a str,
    pub status: StatusCode,
    pub side: Side,
    pub message: Cow<'a, str>,
}

fn kind<'a>(code: &'a str, status: StatusCode, side: Side, message: Cow<'a, str>) -> Kind<'a> {
    Kind { code, status, side, message }
}

/// What KMS refused, as the client is told (KMS's own error codes, prefixed `KMS.` as S3 does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsCode {
    /// The key does not exist, or is not one the gateway may use.
    NotFound,
    Disabled,
    InvalidState,
    /// Any other refusal of the client's request.
    RequestFailed,
    /// KMS failed without saying why.
    Failed,
}

impl KmsCode {
    pub fn code(self) -> &'static str {
        match self {
            KmsCode::NotFound => "KMS.NotFoundException",
            KmsCode::Disabled => "KMS.DisabledException",
            KmsCode::InvalidState => "KMS.KMSInvalidStateException",
            KmsCode::RequestFailed | KmsCode::Failed => "KMS.RequestFailed",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            KmsCode::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            KmsCode::NotFound | KmsCode::Disabled | KmsCode::InvalidState | KmsCode::RequestFailed => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    fn message(self) -> &'static str {
        match self {
            KmsCode::NotFound => "The KMS key does not exist or is not available to the gateway.",
            KmsCode::Disabled => "The KMS key is disabled.",
            KmsCode::InvalidState => "The KMS key is not in a state that allows this request.",
            KmsCode::RequestFailed | KmsCode::Failed => "The key management service refused the request.",
        }
    }
}

/// What S3 returns with SignatureDoesNotMatch, to help client authors debug their signer.
#[derive(Debug, Clone)]
pub struct SignatureMismatch {
    pub access_key_id: String,
    pub string_to_sign: String,
    pub canonical_request: String,
    pub signature_provided: String,
}

impl ProxyError {
    /// A body that goes on after the length it declared.
    pub fn body_too_long() -> Self {
        ProxyError::IncompleteBody("body longer than its declared length")
    }
}

impl ProxyError {
    /// The one table: each kind of error's S3 code, HTTP status, the side that caused it, and the message the client
    /// sees (never internal detail; the `Display` text, for logs, may carry it).
    pub fn kind(&self) -> Kind<'_> {
        use Side::{Client, Internal, Upstream};
        use StatusCode as S;
        let said = |m: &'static str| -> Cow<'_, str> { Cow::Borrowed(m) };
        match self {
            ProxyError::AccessDenied(m) => kind("AccessDenied", S::FORBIDDEN, Client, said(m)),
            ProxyError::HeadersNotSigned(_) => kind(
                "AccessDenied",
                S::FORBIDDEN,
                Client,
                said("There were headers present in the request which were not signed"),
            ),
            ProxyError::RequestExpired { .. } => {
                kind("AccessDenied", S::FORBIDDEN, Client, said("Request has expired"))
            }
            ProxyError::InsecureTransport => kind(
                "InsecureTransport",
                S::FORBIDDEN,
                Client,
                said("Requests to this endpoint must use HTTPS; plain HTTP is refused by policy."),
            ),
            ProxyError::InvalidAccessKeyId { .. } => kind(
                "InvalidAccessKeyId",
                S::FORBIDDEN,
                Client,
                said("The AWS Access Key Id you provided does not exist in our records."),
            ),
            ProxyError::SignatureDoesNotMatch(_) => kind(
                "SignatureDoesNotMatch",
                S::FORBIDDEN,
                Client,
                said(
                    "The request signature we calculated does not match the signature you provided. Check your key \
                     and signing method.",
                ),
            ),
            ProxyError::RequestTimeTooSkewed { .. } => kind(
                "RequestTimeTooSkewed",
                S::FORBIDDEN,
                Client,
                said("The difference between the request time and the current time is too large."),
            ),
            ProxyError::AuthorizationHeaderMalformed { message, .. } => {
                kind("AuthorizationHeaderMalformed", S::BAD_REQUEST, Client, Cow::Borrowed(message))
            }
            ProxyError::AuthorizationQueryParametersError(m) => {
                kind("AuthorizationQueryParametersError", S::BAD_REQUEST, Client, Cow::Borrowed(m))
            }
            ProxyError::InvalidToken => kind(
                "InvalidToken",
                S::BAD_REQUEST,
                Client,
                said("The provided token is malformed or otherwise invalid."),
            ),
            ProxyError::InvalidRequest(m) => kind("InvalidRequest", S::BAD_REQUEST, Client, Cow::Borrowed(m)),
            ProxyError::InvalidArgument(m) => kind("InvalidArgument", S::BAD_REQUEST, Client, Cow::Borrowed(m)),
            ProxyError::InvalidBucketName => {
                kind("InvalidBucketName", S::BAD_REQUEST, Client, said("The specified bucket is not valid."))
            }
            ProxyError::InvalidUri => {
                kind("InvalidURI", S::BAD_REQUEST, Client, said("Couldn't parse the specified URI."))
            }
            ProxyError::MethodNotAllowed => kind(
                "MethodNotAllowed",
                S::METHOD_NOT_ALLOWED,
                Client,
                said("The specified method is not allowed against this resource."),
            ),
            ProxyError::NotImplemented(m) => kind("NotImplemented", S::NOT_IMPLEMENTED, Client, said(m)),
            ProxyError::MissingContentLength => kind(
                "MissingContentLength",
                S::LENGTH_REQUIRED,
                Client,
                said("You must provide the Content-Length HTTP header."),
            ),
            ProxyError::ContentSha256Mismatch { .. } => kind(
                "XAmzContentSHA256Mismatch",
                S::BAD_REQUEST,
                Client,
                said("The provided 'x-amz-content-sha256' header does not match what was computed."),
            ),
            ProxyError::IncompleteBody(_) | ProxyError::ClientBody(_) => kind(
                "IncompleteBody",
                S::BAD_REQUEST,
                Client,
                said("You did not provide the number of bytes specified by the Content-Length HTTP header."),
            ),
            ProxyError::MalformedChunkedBody(_) => {
                kind("IncompleteBody", S::BAD_REQUEST, Client, said("The aws-chunked request body is malformed."))
            }
            ProxyError::InvalidChunkSize(_) => kind(
                "InvalidChunkSizeError",
                S::BAD_REQUEST,
                Client,
                said(
                    "Only the last chunk is allowed to have a size less than 8192 bytes, and no chunk may exceed the \
                     maximum chunk size.",
                ),
            ),
            ProxyError::MalformedTrailer(m) => kind("MalformedTrailerError", S::BAD_REQUEST, Client, Cow::Borrowed(m)),
            ProxyError::BadDigest { algorithm } => kind(
                "BadDigest",
                S::BAD_REQUEST,
                Client,
                format!("The {algorithm} you specified did not match the calculated checksum.").into(),
            ),
            ProxyError::InvalidDigest => {
                kind("InvalidDigest", S::BAD_REQUEST, Client, said("The Content-MD5 you specified was invalid."))
            }
            ProxyError::EntityTooLarge => kind(
                "EntityTooLarge",
                S::BAD_REQUEST,
                Client,
                said("Your proposed upload exceeds the maximum allowed size."),
            ),
            ProxyError::RequestTimeout => kind(
                "RequestTimeout",
                S::BAD_REQUEST,
                Client,
                said("Your socket connection to the server was not read from or written to within the timeout period."),
            ),
            ProxyError::SlowDown => {
                kind("SlowDown", S::SERVICE_UNAVAILABLE, Client, said("Please reduce your request rate."))
            }
            ProxyError::ObjectIntegrity(_) => kind(
                "ObjectIntegrityError",
                S::BAD_GATEWAY,
                Upstream,
                said(
                    "The stored object failed authentication: it was altered, truncated or moved at the storage \
                     service, and is not returned.",
                ),
            ),
            ProxyError::UnknownKey(_) => kind(
                "KMS.NotFoundException",
                S::BAD_REQUEST,
                Internal,
                said("The key that encrypted this object is not available to the gateway."),
            ),
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
            ProxyError::MetadataTooLarge { .. } => kind(
                "MetadataTooLarge",
                S::BAD_REQUEST,
                Client,
                said("Your metadata headers exceed the maximum allowed metadata size."),
            ),
            ProxyError::InvalidRange { .. } => {
                kind("InvalidRange", S::RANGE_NOT_SATISFIABLE, Client, said("The requested range is not satisfiable"))
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
            ProxyError::Kms(c) => {
                let side = if c.status().is_server_error() { Upstream } else { Client };
                kind(c.code(), c.status(), side, said(c.message()))
            }
            ProxyError::KmsUnavailable(_) => kind(
                "ServiceUnavailable",
                S::SERVICE_UNAVAILABLE,
                Upstream,
                said("The key management service is unavailable. Please retry."),
            ),
            ProxyError::InvalidEncryptionAlgorithm => kind(
                "InvalidEncryptionAlgorithmError",
                S::BAD_REQUEST,
                Client,
                said("The encryption request you specified is not valid. The valid value is AES256."),
            ),
            ProxyError::NoSuchUpload => kind(
                "NoSuchUpload",
                S::NOT_FOUND,
                Client,
                said(
                    "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart \
                     upload might have been aborted or completed.",
                ),
            ),
            ProxyError::InvalidPart(m) => kind("InvalidPart", S::BAD_REQUEST, Client, Cow::Borrowed(m)),
            ProxyError::InvalidPartOrder => kind(
                "InvalidPartOrder",
                S::BAD_REQUEST,
                Client,
                said("The list of parts was not in ascending order. Parts must be ordered by part number."),
            ),
            ProxyError::InvalidPartNumber => kind(
                "InvalidPartNumber",
                S::RANGE_NOT_SATISFIABLE,
                Client,
                said("The requested partnumber is not satisfiable"),
            ),
            ProxyError::MalformedXml(_) => kind(
                "MalformedXML",
                S::BAD_REQUEST,
                Client,
                said("The XML you provided was not well-formed or did not validate against our published schema."),
            ),
            ProxyError::UpstreamUnavailable(_) => kind(
                "ServiceUnavailable",
                S::SERVICE_UNAVAILABLE,
                Upstream,
                said("The storage service is unavailable. Please retry."),
            ),
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
            ProxyError::UpstreamProtocol(_) => {
                kind("BadGateway", S::BAD_GATEWAY, Upstream, said("The storage service returned an invalid response."))
            }
            // An upstream 4xx answers the client's own request (NoSuchKey, PreconditionFailed ...).
            ProxyError::Upstream { status, code, message, .. } => {
                let side = if status.is_client_error() { Client } else { Upstream };
                kind(code, *status, side, Cow::Borrowed(message))
            }
            ProxyError::Internal(_) => kind(
                "InternalError",
                S::INTERNAL_SERVER_ERROR,
                Internal,
                said("We encountered an internal error. Please try again."),
            ),
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

    /// Code-specific XML elements S3 adds after the standard ones.
    fn extra_elements(&self, now: SystemTime) -> Vec<(&'static str, String)> {
        match self {
            ProxyError::HeadersNotSigned(names) => vec![("HeadersNotSigned", names.join(", "))],
            ProxyError::RequestExpired { expires_secs, expired_at } => vec![
                ("X-Amz-Expires", expires_secs.to_string()),
                ("Expires", crate::util::time::iso8601(*expired_at)),
                ("ServerTime", crate::util::time::iso8601(now)),
            ],
            ProxyError::InvalidAccessKeyId { access_key_id } => {
                vec![("AWSAccessKeyId", access_key_id.clone())]
            }
            ProxyError::SignatureDoesNotMatch(m) => vec![
                ("AWSAccessKeyId", m.access_key_id.clone()),
                ("StringToSign", m.string_to_sign.clone()),
                ("SignatureProvided", m.signature_provided.clone()),
                ("CanonicalRequest", m.canonical_request.clone()),
            ],
            ProxyError::RequestTimeTooSkewed { request_time } => vec![
                ("RequestTime", crate::util::time::iso8601(*request_time)),
                ("ServerTime", crate::util::time::iso8601(now)),
                ("MaxAllowedSkewMilliseconds", "900000".to_owned()),
            ],
            ProxyError::AuthorizationHeaderMalformed { region, .. } => {
                region.iter().map(|r| ("Region", r.clone())).collect()
            }
            ProxyError::ContentSha256Mismatch { client, computed } => {
                vec![("ClientComputedContentSHA256", client.clone()), ("S3ComputedContentSHA256", computed.clone())]
            }
            ProxyError::MetadataTooLarge { limit } => vec![("MaxSizeAllowed", limit.to_string())],
            ProxyError::InvalidRange { size } => vec![("ActualObjectSize", size.to_string())],
            ProxyError::ObjectIntegrity(_)
            | ProxyError::UnknownKey(_)
            | ProxyError::PlaintextObject
            | ProxyError::S3ecTooLarge { .. }
            | ProxyError::UnsealedObject
            | ProxyError::NoSuchUpload
            | ProxyError::InvalidPart(_)
            | ProxyError::InvalidPartOrder
            | ProxyError::InvalidPartNumber
            | ProxyError::MalformedXml(_)
            | ProxyError::Kms { .. }
            | ProxyError::KmsUnavailable(_)
            | ProxyError::InvalidEncryptionAlgorithm => Vec::new(),
            ProxyError::AccessDenied(_)
            | ProxyError::InsecureTransport
            | ProxyError::AuthorizationQueryParametersError(_)
            | ProxyError::InvalidToken
            | ProxyError::InvalidRequest(_)
            | ProxyError::InvalidArgument(_)
            | ProxyError::InvalidBucketName
            | ProxyError::InvalidUri
            | ProxyError::MethodNotAllowed
            | ProxyError::NotImplemented(_)
            | ProxyError::MissingContentLength
            | ProxyError::IncompleteBody(_)
            | ProxyError::MalformedChunkedBody(_)
            | ProxyError::InvalidChunkSize(_)
            | ProxyError::MalformedTrailer(_)
            | ProxyError::BadDigest { .. }
            | ProxyError::InvalidDigest
            | ProxyError::EntityTooLarge
            | ProxyError::ClientBody(_)
            | ProxyError::RequestTimeout
            | ProxyError::SlowDown
            | ProxyError::UpstreamUnavailable(_)
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamAuth(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::Upstream { .. }
            | ProxyError::Internal(_) => Vec::new(),
        }
    }

    /// Extra response headers that go with this error.
    pub fn extra_headers(&self) -> Vec<(http::HeaderName, HeaderValue)> {
        if let ProxyError::Upstream { headers, .. } = self {
            return headers.clone();
        }
        if let ProxyError::InvalidRange { size } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            return vec![(http::header::CONTENT_RANGE, v)];
        }
        if matches!(self, ProxyError::UpstreamUnavailable(_) | ProxyError::KmsUnavailable(_) | ProxyError::SlowDown) {
            vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))]
        } else {
            Vec::new()
        }
    }

    /// Renders the S3 XML error document.
    pub fn to_xml(&self, resource: &str, request_id: &str) -> Bytes {
        let extra = self.extra_elements(SystemTime::now());
        error_document(self.code(), &self.client_message(), resource, request_id, &extra)
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
        let outer = Outer(ProxyError::BadDigest { algorithm: "CRC32" });
        assert_eq!(ProxyError::find_in(&outer).map(|e| e.code()), Some("BadDigest"));
    }
}
