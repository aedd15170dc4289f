//! What S3 refuses about a request as it reads it: the request itself (`RequestError`: malformed or unsupported)
//! and its body (`BodyError`: lengths, framing, checksums). The modules that parse requests and bodies (s3, sigv4,
//! crypto, proxy) return these; `crate::error` maps each to its S3 code and status, once.

use std::borrow::Cow;

/// A request S3 refuses as malformed or unsupported.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
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
    #[error("malformed Content-MD5")]
    InvalidDigest,
    #[error("request body too large for the operation")]
    EntityTooLarge,
    #[error("request body smaller than the policy allows")]
    EntityTooSmall,
    #[error("invalid POST policy: {0}")]
    InvalidPolicyDocument(Cow<'static, str>),
    #[error("malformed POST request: {0}")]
    MalformedPostRequest(Cow<'static, str>),
    #[error("user metadata too large")]
    MetadataTooLarge { limit: usize },
    #[error("invalid encryption algorithm")]
    InvalidEncryptionAlgorithm,
    #[error("malformed XML: {0}")]
    MalformedXml(&'static str),
}

/// A request body S3 refuses, or one that failed on the way in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
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
    #[error("client body read failed: {0}")]
    ClientBody(String),
    #[error("client body read timed out")]
    RequestTimeout,
}

/// A transport error of a body being read: the peer stalled (`RequestTimeout`) or the connection failed.
impl From<hyper::Error> for BodyError {
    fn from(e: hyper::Error) -> Self {
        if e.is_timeout() { BodyError::RequestTimeout } else { BodyError::ClientBody(e.to_string()) }
    }
}

impl BodyError {
    /// A body that goes on after the length it declared.
    pub fn too_long() -> Self {
        BodyError::IncompleteBody("body longer than its declared length")
    }
}
