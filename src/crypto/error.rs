//! What the crypto layer refuses or fails at: objects that do not authenticate, keys that are unknown or not
//! allowed, KMS refusals, upload IDs the proxy did not make. `crate::error` maps each to its S3 code and status,
//! once.

use crate::s3::error::RequestError;

/// A failure of the crypto layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CryptoError {
    /// A stored object (or its envelope or layout) failed authentication.
    #[error("stored object failed authentication: {0}")]
    Integrity(&'static str),
    /// The key that encrypted an object is not one the gateway has.
    #[error("the object's key {0} is not available")]
    UnknownKey(String),
    /// A key or a kind of encryption the configuration does not allow here.
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    #[error("KMS refused: {0:?}")]
    Kms(KmsCode),
    #[error("KMS unavailable: {0}")]
    KmsUnavailable(String),
    /// An upload ID that is not one this gateway made for this object (or was altered).
    #[error("upload ID not made by this gateway for this object")]
    ForeignUploadId,
    /// The memory budget for whole-object reads is used up (the read waited and gave up).
    #[error("read buffer budget exhausted")]
    Busy,
    /// The store's answer could not be read as planned.
    #[error("reading from the store: {0}")]
    Store(String),
    /// A request the crypto layer refuses as S3 would.
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("internal crypto failure: {0}")]
    Internal(String),
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
