//! What signature verification refuses (`AuthError`), and what can stop the proxy signing a request of its own
//! (`SignError`). `crate::error` maps them to S3 codes and statuses, once.

use std::borrow::Cow;
use std::time::SystemTime;

use crate::s3::error::RequestError;

/// Why a request is not authenticated (or not allowed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("access denied: {0}")]
    AccessDenied(&'static str),
    #[error("headers present but not signed: {0:?}")]
    HeadersNotSigned(Vec<String>),
    #[error("presigned request has expired")]
    RequestExpired { expires_secs: u64, expired_at: SystemTime },
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
    /// The request is malformed or unsupported in a way found while authenticating it.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// What S3 returns with SignatureDoesNotMatch, to help client authors debug their signer.
#[derive(Debug, Clone)]
pub struct SignatureMismatch {
    pub access_key_id: String,
    pub string_to_sign: String,
    pub canonical_request: String,
    pub signature_provided: String,
}

/// Why the proxy could not sign a request for the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The URI names no host to sign.
    #[error("no host to sign")]
    NoHost,
    /// A header value is not text, so it has no canonical form.
    #[error("header {0} is not valid UTF-8")]
    HeaderNotText(String),
    /// A value the signature needs cannot be a header (or the clock is out of range).
    #[error("cannot sign: {0}")]
    Unsignable(&'static str),
}
