//! Classifies a request into the S3 operation it performs: the label for logs and metrics, and the switch
//! that decides which body transforms apply and which operations the proxy refuses.

use http::{HeaderMap, Method};

use super::Target;
use super::headers::{X_AMZ_COPY_SOURCE, X_AMZ_WRITE_OFFSET_BYTES};
use super::query::{PART_NUMBER, Query, UPLOAD_ID};
use crate::s3::error::RequestError;

/// The S3 operations the proxy tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3Op {
    ListBuckets,
    // bucket level
    CreateBucket,
    DeleteBucket,
    HeadBucket,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    DeleteObjects,
    /// `?encryption`: Get/Put/DeleteBucketEncryption (the proxy's own on encrypted buckets).
    BucketEncryption,
    /// `?policy`: Get/Put/DeleteBucketPolicy (always the proxy's own: it evaluates policies).
    BucketPolicy,
    /// Any other bucket sub-resource (versioning, lifecycle, cors, tagging, location ...).
    BucketConfig,
    // object level
    GetObject,
    HeadObject,
    PutObject,
    CopyObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    GetObjectAttributes,
    /// Tagging, ACL, retention, legal hold, restore: bodies and headers unchanged.
    ObjectConfig,
}

impl S3Op {
    /// Stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            S3Op::ListBuckets => "ListBuckets",
            S3Op::CreateBucket => "CreateBucket",
            S3Op::DeleteBucket => "DeleteBucket",
            S3Op::HeadBucket => "HeadBucket",
            S3Op::ListObjects => "ListObjects",
            S3Op::ListObjectsV2 => "ListObjectsV2",
            S3Op::ListObjectVersions => "ListObjectVersions",
            S3Op::ListMultipartUploads => "ListMultipartUploads",
            S3Op::DeleteObjects => "DeleteObjects",
            S3Op::BucketEncryption => "BucketEncryption",
            S3Op::BucketPolicy => "BucketPolicy",
            S3Op::BucketConfig => "BucketConfig",
            S3Op::GetObject => "GetObject",
            S3Op::HeadObject => "HeadObject",
            S3Op::PutObject => "PutObject",
            S3Op::CopyObject => "CopyObject",
            S3Op::DeleteObject => "DeleteObject",
            S3Op::CreateMultipartUpload => "CreateMultipartUpload",
            S3Op::UploadPart => "UploadPart",
            S3Op::UploadPartCopy => "UploadPartCopy",
            S3Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            S3Op::AbortMultipartUpload => "AbortMultipartUpload",
            S3Op::ListParts => "ListParts",
            S3Op::GetObjectAttributes => "GetObjectAttributes",
            S3Op::ObjectConfig => "ObjectConfig",
        }
    }

    /// Operations whose body is object data (and so may arrive aws-chunked).
    pub fn carries_object_data(self) -> bool {
        matches!(self, S3Op::PutObject | S3Op::UploadPart)
    }

    /// Whether the operation is sent with `method`.
    pub fn admits(self, method: &Method) -> bool {
        match self {
            S3Op::ListBuckets
            | S3Op::ListObjects
            | S3Op::ListObjectsV2
            | S3Op::ListObjectVersions
            | S3Op::ListMultipartUploads
            | S3Op::GetObject
            | S3Op::ListParts
            | S3Op::GetObjectAttributes => method == Method::GET,
            S3Op::HeadBucket | S3Op::HeadObject => method == Method::HEAD,
            S3Op::CreateBucket | S3Op::PutObject | S3Op::CopyObject | S3Op::UploadPart | S3Op::UploadPartCopy => {
                method == Method::PUT
            }
            S3Op::DeleteBucket | S3Op::DeleteObject | S3Op::AbortMultipartUpload => method == Method::DELETE,
            S3Op::DeleteObjects | S3Op::CreateMultipartUpload | S3Op::CompleteMultipartUpload => method == Method::POST,
            S3Op::BucketConfig | S3Op::BucketEncryption | S3Op::BucketPolicy => {
                matches!(*method, Method::GET | Method::PUT | Method::DELETE)
            }
            S3Op::ObjectConfig => matches!(*method, Method::GET | Method::PUT | Method::DELETE | Method::POST),
        }
    }
}

/// Sub-resources of bucket configuration the proxy forwards (`?versioning` ...), with the parameters some of them
/// take. A bucket request naming anything else is not forwarded. `?encryption` and `?policy` have operations of
/// their own ([`S3Op::BucketEncryption`], [`S3Op::BucketPolicy`]): a policy never reaches the store.
pub const BUCKET_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "intelligent-tiering",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metadataConfiguration",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "tagging",
    "versioning",
    "website",
];

/// Object sub-resources that are configuration (tagging, ACL, retention, legal hold, restore).
pub const OBJECT_SUBRESOURCES: &[&str] = &["tagging", "acl", "retention", "legal-hold", "restore"];

/// Classifies a request. `query` holds the decoded query parameters.
pub fn classify(method: &Method, target: &Target, query: &Query, headers: &HeaderMap) -> Result<S3Op, RequestError> {
    let has = |k: &str| query.has(k);
    let get = |k: &str| query.get(k);

    if headers.contains_key(X_AMZ_WRITE_OFFSET_BYTES) {
        return Err(RequestError::NotImplemented("Append writes (x-amz-write-offset-bytes) are not supported."));
    }
    let Some(_bucket) = &target.bucket else {
        return match *method {
            Method::GET => Ok(S3Op::ListBuckets),
            _ => Err(RequestError::MethodNotAllowed),
        };
    };
    if target.key.is_none() {
        // Bucket configuration is recognised by its sub-resource; a request naming none the proxy knows is not
        // forwarded (the store would see another operation once the unknown parameter is left out).
        let config = BUCKET_SUBRESOURCES.iter().any(|s| has(s)) || has("policy") || has("encryption");
        let unknown = || RequestError::NotImplemented("This bucket sub-resource is not supported by the gateway.");
        let op = match *method {
            Method::GET | Method::PUT | Method::DELETE if has("encryption") => S3Op::BucketEncryption,
            Method::GET | Method::PUT | Method::DELETE if has("policy") => S3Op::BucketPolicy,
            Method::GET if has("uploads") => S3Op::ListMultipartUploads,
            Method::GET if has("versions") => S3Op::ListObjectVersions,
            Method::GET if config => S3Op::BucketConfig,
            Method::GET if get("list-type") == Some("2") => S3Op::ListObjectsV2,
            Method::GET => S3Op::ListObjects,
            Method::HEAD => S3Op::HeadBucket,
            Method::PUT if config => S3Op::BucketConfig,
            Method::PUT if query.pairs().iter().all(|(k, _)| k == "x-id") => S3Op::CreateBucket,
            Method::PUT => return Err(unknown()),
            Method::DELETE if config => S3Op::BucketConfig,
            Method::DELETE if query.pairs().iter().all(|(k, _)| k == "x-id") => S3Op::DeleteBucket,
            Method::DELETE => return Err(unknown()),
            Method::POST if has("delete") => S3Op::DeleteObjects,
            Method::POST => {
                let form = headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
                return Err(if form {
                    RequestError::NotImplemented("Browser POST uploads (POST policy) are not supported.")
                } else {
                    RequestError::MethodNotAllowed
                });
            }
            _ => return Err(RequestError::MethodNotAllowed),
        };
        return Ok(op);
    }
    if has("select") || has("select-type") {
        return Err(RequestError::NotImplemented(
            "SelectObjectContent is not supported: the store only holds ciphertext.",
        ));
    }
    if has("torrent") {
        return Err(RequestError::NotImplemented("GetObjectTorrent is not supported."));
    }
    let config = OBJECT_SUBRESOURCES.iter().any(|s| has(s));
    let op = match *method {
        Method::GET if has(UPLOAD_ID) => S3Op::ListParts,
        Method::GET if has("attributes") => S3Op::GetObjectAttributes,
        Method::GET if config => S3Op::ObjectConfig,
        Method::GET => S3Op::GetObject,
        Method::HEAD => S3Op::HeadObject,
        Method::PUT if config => S3Op::ObjectConfig,
        Method::PUT if has(PART_NUMBER) && has(UPLOAD_ID) => {
            if headers.contains_key(X_AMZ_COPY_SOURCE) {
                S3Op::UploadPartCopy
            } else {
                S3Op::UploadPart
            }
        }
        Method::PUT if headers.contains_key(X_AMZ_COPY_SOURCE) => S3Op::CopyObject,
        Method::PUT => S3Op::PutObject,
        Method::POST if has("uploads") => S3Op::CreateMultipartUpload,
        Method::POST if has(UPLOAD_ID) => S3Op::CompleteMultipartUpload,
        Method::POST if has("restore") => S3Op::ObjectConfig,
        Method::DELETE if has(UPLOAD_ID) => S3Op::AbortMultipartUpload,
        Method::DELETE if config => S3Op::ObjectConfig,
        Method::DELETE => S3Op::DeleteObject,
        _ => return Err(RequestError::MethodNotAllowed),
    };
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::AtBoundary;

    fn t(bucket: Option<&str>, key: Option<&str>) -> Target {
        Target { bucket: bucket.map(Into::into), key: key.map(Into::into), virtual_hosted: false }
    }
    fn q(pairs: &[(&str, &str)]) -> Query {
        Query::new(pairs.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect())
    }

    #[test]
    fn object_operations_are_told_apart_by_method_query_and_headers() {
        let h = HeaderMap::new();
        let obj = t(Some("b"), Some("k"));
        assert_eq!(classify(&Method::PUT, &obj, &q(&[]), &h).unwrap(), S3Op::PutObject);
        assert_eq!(
            classify(&Method::PUT, &obj, &q(&[("partNumber", "1"), ("uploadId", "u")]), &h).unwrap(),
            S3Op::UploadPart
        );
        assert_eq!(classify(&Method::POST, &obj, &q(&[("uploads", "")]), &h).unwrap(), S3Op::CreateMultipartUpload);
        let mut copy = HeaderMap::new();
        copy.insert(X_AMZ_COPY_SOURCE, "/a/b".parse().unwrap());
        assert_eq!(classify(&Method::PUT, &obj, &q(&[]), &copy).unwrap(), S3Op::CopyObject);
        assert_eq!(classify(&Method::GET, &obj, &q(&[("tagging", "")]), &h).unwrap(), S3Op::ObjectConfig);
    }

    #[test]
    fn bucket_operations_and_listings_are_recognised() {
        let h = HeaderMap::new();
        let b = t(Some("b"), None);
        assert_eq!(classify(&Method::GET, &b, &q(&[("list-type", "2")]), &h).unwrap(), S3Op::ListObjectsV2);
        assert_eq!(classify(&Method::GET, &b, &q(&[("prefix", "a")]), &h).unwrap(), S3Op::ListObjects);
        assert_eq!(classify(&Method::GET, &b, &q(&[("versioning", "")]), &h).unwrap(), S3Op::BucketConfig);
        assert_eq!(classify(&Method::GET, &t(None, None), &q(&[]), &h).unwrap(), S3Op::ListBuckets);
    }

    #[test]
    fn select_and_append_writes_are_refused_with_not_implemented() {
        let h = HeaderMap::new();
        let obj = t(Some("b"), Some("k"));
        let e = classify(&Method::POST, &obj, &q(&[("select", ""), ("select-type", "2")]), &h).unwrap_err();
        assert_eq!(e.code(), "NotImplemented");
        let mut a = HeaderMap::new();
        a.insert(X_AMZ_WRITE_OFFSET_BYTES, "0".parse().unwrap());
        assert_eq!(classify(&Method::PUT, &obj, &q(&[]), &a).unwrap_err().code(), "NotImplemented");
    }
}
