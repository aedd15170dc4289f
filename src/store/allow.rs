//! What may reach the store: for every S3 operation, the request headers and query parameters it may carry. An
//! allow-list, not a deny-list: a header or parameter that is not named here never leaves the proxy, whoever set
//! it. No list names an SSE-C header (`x-amz-server-side-encryption-customer-*`, or its copy-source form),
//! `authorization`, a hop-by-hop header or the proxy's own signing headers; the tests below check every list.
//!
//! Two further rules narrow what a *client* may forward (the proxy itself may set the rest):
//! - SSE headers never come from the client's request: the store client sets them from a typed value;
//! - the aws-chunked framing headers are the proxy's own.
//!
//! (The reserved `x-amz-meta-s3crypt-` metadata is refused at the front door on encrypted buckets; on a pass-through
//! bucket it is the client's like any metadata, which lets a proxy's envelope pass through another proxy.)

use crate::s3::op::{BUCKET_SUBRESOURCES, OBJECT_SUBRESOURCES, S3Op};
use crate::s3::query::{PART_NUMBER, UPLOAD_ID, VERSION_ID};

/// Sent on every operation.
const COMMON: &[&str] = &["x-amz-expected-bucket-owner", "x-amz-request-payer"];
/// Conditions of a read.
const READ_CONDITIONS: &[&str] = &["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"];
/// Conditions of a write (S3 conditional writes).
const WRITE_CONDITIONS: &[&str] = &["if-match", "if-none-match"];
/// The object's content headers.
const CONTENT: &[&str] =
    &["content-type", "cache-control", "content-disposition", "content-encoding", "content-language", "expires"];
/// ACL grants (objects and buckets).
const GRANTS: &[&str] = &[
    "x-amz-acl",
    "x-amz-grant-full-control",
    "x-amz-grant-read",
    "x-amz-grant-read-acp",
    "x-amz-grant-write",
    "x-amz-grant-write-acp",
];
/// What a new object carries besides content headers and metadata.
const OBJECT_ATTRIBUTES: &[&str] = &[
    "x-amz-storage-class",
    "x-amz-tagging",
    "x-amz-website-redirect-location",
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
];
/// The store's own server-side encryption (set by the store client from a typed value, never copied from a client).
pub(super) const STORE_SSE: &[&str] = &[
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
];
/// Integrity headers of a small (XML) request body, forwarded with that body.
const BODY_CHECKSUMS: &[&str] = &[
    "content-md5",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
];
/// The source of a copy and its conditions.
const COPY_SOURCE: &[&str] = &[
    "x-amz-copy-source",
    "x-amz-copy-source-if-match",
    "x-amz-copy-source-if-none-match",
    "x-amz-copy-source-if-modified-since",
    "x-amz-copy-source-if-unmodified-since",
    "x-amz-source-expected-bucket-owner",
];
/// User metadata (operations that create an object).
const META: &str = "x-amz-meta-";

/// Headers the proxy frames object bodies with (the store client sets them; a client's never pass).
const FRAMING: &[&str] = &["x-amz-decoded-content-length", "x-amz-trailer"];

const RESPONSE_OVERRIDES: &[&str] = &[
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
];

/// The header names (exact) and name prefixes `op` may send to the store.
fn header_lists(op: S3Op) -> (&'static [&'static [&'static str]], Option<&'static str>) {
    match op {
        S3Op::ListBuckets
        | S3Op::DeleteBucket
        | S3Op::HeadBucket
        | S3Op::ListMultipartUploads
        | S3Op::ListParts
        | S3Op::UploadPart => (&[COMMON], None),
        S3Op::CreateBucket => (
            &[
                COMMON,
                GRANTS,
                BODY_CHECKSUMS,
                &["content-type", "x-amz-bucket-object-lock-enabled", "x-amz-object-ownership"],
            ],
            None,
        ),
        S3Op::ListObjects | S3Op::ListObjectsV2 | S3Op::ListObjectVersions => {
            (&[COMMON, &["x-amz-optional-object-attributes"]], None)
        }
        S3Op::DeleteObjects => {
            (&[COMMON, BODY_CHECKSUMS, &["content-type", "x-amz-mfa", "x-amz-bypass-governance-retention"]], None)
        }
        // A policy never reaches the store: the proxy keeps and evaluates it.
        S3Op::BucketPolicy => (&[], None),
        S3Op::BucketEncryption => (&[COMMON, BODY_CHECKSUMS, &["content-type"]], None),
        S3Op::BucketConfig => (
            &[
                COMMON,
                BODY_CHECKSUMS,
                GRANTS,
                &[
                    "content-type",
                    "x-amz-bucket-object-lock-token",
                    "x-amz-mfa",
                    "x-amz-confirm-remove-self-bucket-access",
                    "x-amz-skip-destination-validation",
                    "x-amz-transition-default-minimum-object-size",
                ],
            ],
            None,
        ),
        S3Op::GetObject | S3Op::HeadObject => (&[COMMON, READ_CONDITIONS, &["range", "x-amz-checksum-mode"]], None),
        S3Op::PutObject => (&[COMMON, CONTENT, GRANTS, OBJECT_ATTRIBUTES, WRITE_CONDITIONS, STORE_SSE], Some(META)),
        S3Op::CopyObject => (
            &[
                COMMON,
                CONTENT,
                GRANTS,
                OBJECT_ATTRIBUTES,
                WRITE_CONDITIONS,
                STORE_SSE,
                COPY_SOURCE,
                &["x-amz-metadata-directive", "x-amz-tagging-directive", "x-amz-checksum-algorithm"],
            ],
            Some(META),
        ),
        S3Op::DeleteObject => (
            &[
                COMMON,
                &[
                    "x-amz-mfa",
                    "x-amz-bypass-governance-retention",
                    "if-match",
                    "x-amz-if-match-last-modified-time",
                    "x-amz-if-match-size",
                ],
            ],
            None,
        ),
        S3Op::CreateMultipartUpload => (
            &[
                COMMON,
                CONTENT,
                GRANTS,
                OBJECT_ATTRIBUTES,
                STORE_SSE,
                &["x-amz-checksum-algorithm", "x-amz-checksum-type"],
            ],
            Some(META),
        ),
        S3Op::UploadPartCopy => (&[COMMON, COPY_SOURCE, &["x-amz-copy-source-range"]], None),
        S3Op::CompleteMultipartUpload => (
            &[
                COMMON,
                WRITE_CONDITIONS,
                BODY_CHECKSUMS,
                &["content-type", "x-amz-checksum-type", "x-amz-mp-object-size"],
            ],
            None,
        ),
        S3Op::AbortMultipartUpload => (&[COMMON, &["x-amz-if-match-initiated-time"]], None),
        S3Op::GetObjectAttributes => {
            (&[COMMON, &["x-amz-object-attributes", "x-amz-max-parts", "x-amz-part-number-marker"]], None)
        }
        S3Op::ObjectConfig => {
            (&[COMMON, BODY_CHECKSUMS, GRANTS, &["content-type", "x-amz-bypass-governance-retention"]], None)
        }
    }
}

/// Whether a request of `op` may carry the header `name` (lowercase) to the store.
pub fn header(op: S3Op, name: &str) -> bool {
    let (lists, prefix) = header_lists(op);
    lists.iter().any(|l| l.contains(&name)) || prefix.is_some_and(|p| name.starts_with(p))
}

/// Whether a header of the client's request may be copied onto the store request of `op`: allowed for the
/// operation, and not one of the proxy's own (SSE, framing).
pub fn client_header(op: S3Op, name: &str) -> bool {
    header(op, name) && !STORE_SSE.contains(&name) && !FRAMING.contains(&name)
}

/// The query parameters `op` may send to the store.
fn query_list(op: S3Op) -> &'static [&'static [&'static str]] {
    match op {
        S3Op::ListBuckets => &[&["max-buckets", "continuation-token", "prefix", "bucket-region"]],
        S3Op::CreateBucket | S3Op::DeleteBucket | S3Op::HeadBucket | S3Op::PutObject | S3Op::CopyObject => &[],
        S3Op::ListObjects => &[&["prefix", "delimiter", "marker", "max-keys", "encoding-type"]],
        S3Op::ListObjectsV2 => &[&[
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "encoding-type",
            "continuation-token",
            "fetch-owner",
            "start-after",
        ]],
        S3Op::ListObjectVersions => {
            &[&["versions", "prefix", "delimiter", "key-marker", "version-id-marker", "max-keys", "encoding-type"]]
        }
        S3Op::ListMultipartUploads => {
            &[&["uploads", "prefix", "delimiter", "key-marker", "upload-id-marker", "max-uploads", "encoding-type"]]
        }
        S3Op::DeleteObjects => &[&["delete"]],
        S3Op::BucketConfig => &[BUCKET_SUBRESOURCES, &["id", "continuation-token"]],
        S3Op::BucketEncryption => &[&["encryption"]],
        S3Op::BucketPolicy => &[],
        S3Op::GetObject | S3Op::HeadObject => &[RESPONSE_OVERRIDES, &[VERSION_ID, PART_NUMBER]],
        S3Op::DeleteObject => &[&[VERSION_ID]],
        S3Op::CreateMultipartUpload => &[&["uploads"]],
        S3Op::UploadPart | S3Op::UploadPartCopy => &[&[PART_NUMBER, UPLOAD_ID]],
        S3Op::CompleteMultipartUpload | S3Op::AbortMultipartUpload => &[&[UPLOAD_ID]],
        S3Op::ListParts => &[&[UPLOAD_ID, "max-parts", "part-number-marker", "encoding-type"]],
        S3Op::GetObjectAttributes => &[&["attributes", VERSION_ID]],
        S3Op::ObjectConfig => &[OBJECT_SUBRESOURCES, &[VERSION_ID]],
    }
}

/// Whether a request of `op` may carry the query parameter `name` to the store.
pub fn query(op: S3Op, name: &str) -> bool {
    query_list(op).iter().any(|l| l.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [S3Op; 25] = [
        S3Op::BucketEncryption,
        S3Op::BucketPolicy,
        S3Op::ListBuckets,
        S3Op::CreateBucket,
        S3Op::DeleteBucket,
        S3Op::HeadBucket,
        S3Op::ListObjects,
        S3Op::ListObjectsV2,
        S3Op::ListObjectVersions,
        S3Op::ListMultipartUploads,
        S3Op::DeleteObjects,
        S3Op::BucketConfig,
        S3Op::GetObject,
        S3Op::HeadObject,
        S3Op::PutObject,
        S3Op::CopyObject,
        S3Op::DeleteObject,
        S3Op::CreateMultipartUpload,
        S3Op::UploadPart,
        S3Op::UploadPartCopy,
        S3Op::CompleteMultipartUpload,
        S3Op::AbortMultipartUpload,
        S3Op::ListParts,
        S3Op::GetObjectAttributes,
        S3Op::ObjectConfig,
    ];

    fn every_name(op: S3Op) -> Vec<&'static str> {
        header_lists(op).0.iter().flat_map(|l| l.iter().copied()).collect()
    }

    #[test]
    fn no_operation_may_send_a_customer_key_credentials_or_hop_by_hop_headers_to_the_store() {
        let never = [
            "authorization",
            "host",
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token",
            "connection",
            "keep-alive",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "expect",
            "content-length",
        ];
        for op in ALL {
            for name in every_name(op) {
                assert!(!name.contains("customer"), "{op:?} allows {name}");
                assert!(!never.contains(&name), "{op:?} allows {name}");
                assert_eq!(name, name.to_ascii_lowercase(), "{op:?}: lowercase names only");
            }
            for name in [
                "x-amz-server-side-encryption-customer-key",
                "x-amz-server-side-encryption-customer-key-md5",
                "x-amz-server-side-encryption-customer-algorithm",
                "x-amz-copy-source-server-side-encryption-customer-key",
                "x-amz-copy-source-server-side-encryption-customer-key-md5",
                "x-amz-copy-source-server-side-encryption-customer-algorithm",
                "authorization",
            ] {
                assert!(!client_header(op, name), "{op:?} forwards {name}");
            }
            assert!(!query(op, "x-amz-server-side-encryption-customer-key"), "{op:?}");
            for name in STORE_SSE {
                assert!(!client_header(op, name), "{op:?} forwards the client's {name}");
            }
        }
    }

    #[test]
    fn user_metadata_and_the_stores_sse_go_only_with_operations_that_create_objects() {
        for op in ALL {
            let creates = matches!(op, S3Op::PutObject | S3Op::CopyObject | S3Op::CreateMultipartUpload);
            assert_eq!(header(op, "x-amz-meta-color"), creates, "{op:?}");
            assert_eq!(header(op, "x-amz-server-side-encryption"), creates, "{op:?}");
            assert_eq!(client_header(op, "x-amz-meta-color"), creates, "{op:?}");
        }
        assert!(header(S3Op::PutObject, "x-amz-meta-s3crypt-dek"), "the proxy writes its envelope");
        assert!(!header(S3Op::PutObject, "content-md5"), "object bodies are framed by the proxy");
        assert!(!header(S3Op::UploadPart, "x-amz-checksum-crc32"));
        assert!(header(S3Op::DeleteObjects, "content-md5"));
    }

    #[test]
    fn queries_name_only_what_the_operation_takes() {
        assert!(query(S3Op::GetObject, "versionId") && query(S3Op::GetObject, "response-content-type"));
        assert!(!query(S3Op::GetObject, "x-id") && !query(S3Op::GetObject, "uploadId"));
        assert!(query(S3Op::UploadPart, "uploadId") && !query(S3Op::PutObject, "uploadId"));
        assert!(query(S3Op::BucketConfig, "versioning") && !query(S3Op::BucketConfig, "prefix"));
        assert!(!query(S3Op::BucketConfig, "policy") && !query(S3Op::BucketPolicy, "policy"), "no policy to the store");
    }
}
