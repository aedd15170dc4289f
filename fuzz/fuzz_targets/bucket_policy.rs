//! Bucket policies and POST policy forms, as clients send them: `Policy::parse` over any JSON (and any bytes), then
//! evaluation against a request; `BucketEncryption::parse` over any XML. Each answers with a value or an S3 error,
//! never a panic; a policy that parses evaluates without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3crypt::s3::bucket_encryption::BucketEncryption;
use s3crypt::s3::policy::{ConditionKey, Facts, Policy};

fuzz_target!(|data: &[u8]| {
    let _ = BucketEncryption::parse(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = Policy::parse(text, "b") else { return };
    let value = |k: ConditionKey| match k {
        ConditionKey::SecureTransport => Some("false".to_owned()),
        ConditionKey::SourceIp => Some("10.1.2.3".to_owned()),
        _ => None,
    };
    for (action, resource) in [("s3:PutObject", "arn:aws:s3:::b/k"), ("s3:ListBucket", "arn:aws:s3:::b")] {
        let _ = policy.evaluate(&Facts { action, resource, principal: "fuzz-client", value: &value });
    }
});
