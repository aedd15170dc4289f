//! The one error type at the request boundary, and its S3 rendering.
//!
//! Every failure a request can meet ends up as a [`ProxyError`]. Each variant is mapped exhaustively (no
//! wildcard arms) to the S3 error code, the HTTP status and the [`Side`] that caused it. Clients only ever
//! see [`ProxyError::client_message`]; the `Display` text (which may carry internal detail) is for logs.

use std::borrow::Cow;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::s3::xml;

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
    #[error("KMS refused: {code}")]
    Kms { code: &'static str, status: u16 },
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

/// What S3 returns with SignatureDoesNotMatch, to help client authors debug their signer.
#[derive(Debug, Clone)]
pub struct SignatureMismatch {
    pub access_key_id: String,
    pub string_to_sign: String,
    pub canonical_request: String,
    pub signature_provided: String,
}

impl ProxyError {
    /// The S3 error code.
    pub fn code(&self) -> &str {
        match self {
            ProxyError::AccessDenied(_) => "AccessDenied",
            ProxyError::HeadersNotSigned(_) => "AccessDenied",
            ProxyError::RequestExpired { .. } => "AccessDenied",
            ProxyError::InsecureTransport => "InsecureTransport",
            ProxyError::InvalidAccessKeyId { .. } => "InvalidAccessKeyId",
            ProxyError::SignatureDoesNotMatch(_) => "SignatureDoesNotMatch",
            ProxyError::RequestTimeTooSkewed { .. } => "RequestTimeTooSkewed",
            ProxyError::AuthorizationHeaderMalformed { .. } => "AuthorizationHeaderMalformed",
            ProxyError::AuthorizationQueryParametersError(_) => "AuthorizationQueryParametersError",
            ProxyError::InvalidToken => "InvalidToken",
            ProxyError::InvalidRequest(_) => "InvalidRequest",
            ProxyError::InvalidArgument(_) => "InvalidArgument",
            ProxyError::InvalidBucketName => "InvalidBucketName",
            ProxyError::InvalidUri => "InvalidURI",
            ProxyError::MethodNotAllowed => "MethodNotAllowed",
            ProxyError::NotImplemented(_) => "NotImplemented",
            ProxyError::MissingContentLength => "MissingContentLength",
            ProxyError::ContentSha256Mismatch { .. } => "XAmzContentSHA256Mismatch",
            ProxyError::IncompleteBody(_) => "IncompleteBody",
            ProxyError::MalformedChunkedBody(_) => "IncompleteBody",
            ProxyError::InvalidChunkSize(_) => "InvalidChunkSizeError",
            ProxyError::MalformedTrailer(_) => "MalformedTrailerError",
            ProxyError::BadDigest { .. } => "BadDigest",
            ProxyError::InvalidDigest => "InvalidDigest",
            ProxyError::EntityTooLarge => "EntityTooLarge",
            ProxyError::ClientBody(_) => "IncompleteBody",
            ProxyError::RequestTimeout => "RequestTimeout",
            ProxyError::SlowDown => "SlowDown",
            ProxyError::ObjectIntegrity(_) => "ObjectIntegrityError",
            ProxyError::UnknownKey(_) => "KMS.NotFoundException",
            ProxyError::PlaintextObject => "InvalidObjectState",
            ProxyError::S3ecTooLarge { .. } => "InvalidObjectState",
            ProxyError::MetadataTooLarge { .. } => "MetadataTooLarge",
            ProxyError::InvalidRange { .. } => "InvalidRange",
            ProxyError::UnsealedObject => "InvalidObjectState",
            ProxyError::Kms { code, .. } => code,
            ProxyError::KmsUnavailable(_) => "ServiceUnavailable",
            ProxyError::InvalidEncryptionAlgorithm => "InvalidEncryptionAlgorithmError",
            ProxyError::NoSuchUpload => "NoSuchUpload",
            ProxyError::InvalidPart(_) => "InvalidPart",
            ProxyError::InvalidPartOrder => "InvalidPartOrder",
            ProxyError::InvalidPartNumber => "InvalidPartNumber",
            ProxyError::MalformedXml(_) => "MalformedXML",
            ProxyError::UpstreamUnavailable(_) => "ServiceUnavailable",
            ProxyError::UpstreamTimeout => "GatewayTimeout",
            ProxyError::UpstreamAuth(_) => "BadGateway",
            ProxyError::UpstreamProtocol(_) => "BadGateway",
            ProxyError::Upstream { code, .. } => code,
            ProxyError::Internal(_) => "InternalError",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::AccessDenied(_)
            | ProxyError::HeadersNotSigned(_)
            | ProxyError::RequestExpired { .. }
            | ProxyError::InsecureTransport
            | ProxyError::InvalidAccessKeyId { .. }
            | ProxyError::SignatureDoesNotMatch(_)
            | ProxyError::RequestTimeTooSkewed { .. } => StatusCode::FORBIDDEN,
            ProxyError::AuthorizationHeaderMalformed { .. }
            | ProxyError::AuthorizationQueryParametersError(_)
            | ProxyError::InvalidToken
            | ProxyError::InvalidRequest(_)
            | ProxyError::InvalidArgument(_)
            | ProxyError::InvalidBucketName
            | ProxyError::InvalidUri
            | ProxyError::ContentSha256Mismatch { .. }
            | ProxyError::IncompleteBody(_)
            | ProxyError::MalformedChunkedBody(_)
            | ProxyError::InvalidChunkSize(_)
            | ProxyError::MalformedTrailer(_)
            | ProxyError::BadDigest { .. }
            | ProxyError::InvalidDigest
            | ProxyError::EntityTooLarge
            | ProxyError::ClientBody(_)
            | ProxyError::RequestTimeout => StatusCode::BAD_REQUEST,
            ProxyError::ObjectIntegrity(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UnknownKey(_) => StatusCode::BAD_REQUEST,
            ProxyError::PlaintextObject => StatusCode::FORBIDDEN,
            ProxyError::S3ecTooLarge { .. } => StatusCode::FORBIDDEN,
            ProxyError::MetadataTooLarge { .. } => StatusCode::BAD_REQUEST,
            ProxyError::InvalidRange { .. } | ProxyError::InvalidPartNumber => StatusCode::RANGE_NOT_SATISFIABLE,
            ProxyError::UnsealedObject => StatusCode::FORBIDDEN,
            ProxyError::Kms { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            ProxyError::KmsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::InvalidEncryptionAlgorithm => StatusCode::BAD_REQUEST,
            ProxyError::NoSuchUpload => StatusCode::NOT_FOUND,
            ProxyError::InvalidPart(_) | ProxyError::InvalidPartOrder | ProxyError::MalformedXml(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::MissingContentLength => StatusCode::LENGTH_REQUIRED,
            ProxyError::UpstreamUnavailable(_) | ProxyError::SlowDown => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamAuth(_) | ProxyError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Upstream { status, .. } => *status,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who caused it.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::AccessDenied(_)
            | ProxyError::HeadersNotSigned(_)
            | ProxyError::RequestExpired { .. }
            | ProxyError::InsecureTransport
            | ProxyError::InvalidAccessKeyId { .. }
            | ProxyError::SignatureDoesNotMatch(_)
            | ProxyError::RequestTimeTooSkewed { .. }
            | ProxyError::AuthorizationHeaderMalformed { .. }
            | ProxyError::AuthorizationQueryParametersError(_)
            | ProxyError::InvalidToken
            | ProxyError::InvalidRequest(_)
            | ProxyError::InvalidArgument(_)
            | ProxyError::InvalidBucketName
            | ProxyError::InvalidUri
            | ProxyError::MethodNotAllowed
            | ProxyError::NotImplemented(_)
            | ProxyError::MissingContentLength
            | ProxyError::ContentSha256Mismatch { .. }
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
            | ProxyError::MetadataTooLarge { .. }
            | ProxyError::InvalidRange { .. }
            | ProxyError::PlaintextObject
            | ProxyError::S3ecTooLarge { .. }
            | ProxyError::UnsealedObject
            | ProxyError::NoSuchUpload
            | ProxyError::InvalidPart(_)
            | ProxyError::InvalidPartOrder
            | ProxyError::InvalidPartNumber
            | ProxyError::MalformedXml(_)
            | ProxyError::InvalidEncryptionAlgorithm => Side::Client,
            ProxyError::Kms { status, .. } => {
                if *status >= 500 {
                    Side::Upstream
                } else {
                    Side::Client
                }
            }
            ProxyError::KmsUnavailable(_) => Side::Upstream,
            ProxyError::ObjectIntegrity(_) => Side::Upstream,
            ProxyError::UnknownKey(_) => Side::Internal,
            ProxyError::UpstreamUnavailable(_)
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamAuth(_)
            | ProxyError::UpstreamProtocol(_) => Side::Upstream,
            // An upstream 4xx answers the client's own request (NoSuchKey, PreconditionFailed ...).
            ProxyError::Upstream { status, .. } => {
                if status.is_client_error() {
                    Side::Client
                } else {
                    Side::Upstream
                }
            }
            ProxyError::Internal(_) => Side::Internal,
        }
    }

    /// The message clients see. Never carries internal detail.
    pub fn client_message(&self) -> Cow<'_, str> {
        match self {
            ProxyError::AccessDenied(msg) => Cow::Borrowed(msg),
            ProxyError::HeadersNotSigned(_) => "There were headers present in the request which were not signed".into(),
            ProxyError::RequestExpired { .. } => "Request has expired".into(),
            ProxyError::InsecureTransport => {
                "Requests to this endpoint must use HTTPS; plain HTTP is refused by policy.".into()
            }
            ProxyError::InvalidAccessKeyId { .. } => {
                "The AWS Access Key Id you provided does not exist in our records.".into()
            }
            ProxyError::SignatureDoesNotMatch(_) => "The request signature we calculated does not match the \
                 signature you provided. Check your key and signing method."
                .into(),
            ProxyError::RequestTimeTooSkewed { .. } => {
                "The difference between the request time and the current time is too large.".into()
            }
            ProxyError::AuthorizationHeaderMalformed { message, .. } => Cow::Borrowed(message),
            ProxyError::AuthorizationQueryParametersError(msg) => Cow::Borrowed(msg),
            ProxyError::InvalidToken => "The provided token is malformed or otherwise invalid.".into(),
            ProxyError::InvalidRequest(msg) => Cow::Borrowed(msg),
            ProxyError::InvalidArgument(msg) => Cow::Borrowed(msg),
            ProxyError::InvalidBucketName => "The specified bucket is not valid.".into(),
            ProxyError::InvalidUri => "Couldn't parse the specified URI.".into(),
            ProxyError::MethodNotAllowed => "The specified method is not allowed against this resource.".into(),
            ProxyError::NotImplemented(msg) => Cow::Borrowed(msg),
            ProxyError::MissingContentLength => "You must provide the Content-Length HTTP header.".into(),
            ProxyError::ContentSha256Mismatch { .. } => {
                "The provided 'x-amz-content-sha256' header does not match what was computed.".into()
            }
            ProxyError::IncompleteBody(_) | ProxyError::ClientBody(_) => {
                "You did not provide the number of bytes specified by the Content-Length HTTP header.".into()
            }
            ProxyError::MalformedChunkedBody(_) => "The aws-chunked request body is malformed.".into(),
            ProxyError::InvalidChunkSize(_) => {
                "Only the last chunk is allowed to have a size less than 8192 bytes, and no chunk may exceed \
                 the maximum chunk size."
                    .into()
            }
            ProxyError::MalformedTrailer(msg) => Cow::Borrowed(msg),
            ProxyError::BadDigest { algorithm } => {
                format!("The {algorithm} you specified did not match the calculated checksum.").into()
            }
            ProxyError::InvalidDigest => "The Content-MD5 you specified was invalid.".into(),
            ProxyError::EntityTooLarge => "Your proposed upload exceeds the maximum allowed size.".into(),
            ProxyError::RequestTimeout => "Your socket connection to the server was not read from or written \
                 to within the timeout period."
                .into(),
            ProxyError::SlowDown => "Please reduce your request rate.".into(),
            ProxyError::ObjectIntegrity(_) => "The stored object failed authentication: it was altered, truncated or \
                 moved at the storage service, and is not returned."
                .into(),
            ProxyError::UnknownKey(_) => "The key that encrypted this object is not available to the gateway.".into(),
            ProxyError::PlaintextObject => "The object is not encrypted by the gateway, and reading unencrypted \
                 objects is disabled."
                .into(),
            ProxyError::S3ecTooLarge { limit } => format!(
                "This object was written by the AWS S3 Encryption Client; it is authenticated as a whole, and it is \
                 larger than the gateway reads in one piece ({limit} bytes). Re-encrypt it with `s3crypt migrate \
                 --from-s3ec`."
            )
            .into(),
            ProxyError::MetadataTooLarge { .. } => {
                "Your metadata headers exceed the maximum allowed metadata size.".into()
            }
            ProxyError::InvalidRange { .. } => "The requested range is not satisfiable".into(),
            ProxyError::UnsealedObject => "This multipart object was completed at the storage service but the \
                 gateway could not seal it, so its layout is not authenticated and it is not returned. Complete the \
                 upload again or re-upload the object."
                .into(),
            ProxyError::NoSuchUpload => "The specified multipart upload does not exist. The upload ID might be \
                 invalid, or the multipart upload might have been aborted or completed."
                .into(),
            ProxyError::InvalidPart(msg) => Cow::Borrowed(msg),
            ProxyError::Kms { code, .. } => match *code {
                "KMS.NotFoundException" => "The KMS key does not exist or is not available to the gateway.".into(),
                "KMS.DisabledException" => "The KMS key is disabled.".into(),
                "KMS.KMSInvalidStateException" => "The KMS key is not in a state that allows this request.".into(),
                _other => "The key management service refused the request.".into(),
            },
            ProxyError::KmsUnavailable(_) => "The key management service is unavailable. Please retry.".into(),
            ProxyError::InvalidEncryptionAlgorithm => {
                "The encryption request you specified is not valid. The valid value is AES256.".into()
            }
            ProxyError::InvalidPartOrder => {
                "The list of parts was not in ascending order. Parts must be ordered by part number.".into()
            }
            ProxyError::InvalidPartNumber => "The requested partnumber is not satisfiable".into(),
            ProxyError::MalformedXml(_) => "The XML you provided was not well-formed or did not validate against \
                 our published schema."
                .into(),
            ProxyError::UpstreamUnavailable(_) => "The storage service is unavailable. Please retry.".into(),
            ProxyError::UpstreamTimeout => "The storage service did not answer in time.".into(),
            ProxyError::UpstreamAuth(_) => {
                "The gateway could not access the storage service. Contact the gateway operator.".into()
            }
            ProxyError::UpstreamProtocol(_) => "The storage service returned an invalid response.".into(),
            ProxyError::Upstream { message, .. } => Cow::Borrowed(message),
            ProxyError::Internal(_) => "We encountered an internal error. Please try again.".into(),
        }
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
        xml::error_document(self.code(), &self.client_message(), resource, request_id, &extra)
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
