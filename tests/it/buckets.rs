//! Bucket settings through the S3 API, with aws-sdk-s3 (docs/BUCKETS.md): default encryption applied by the proxy
//! and reported as S3 reports it, bucket policies evaluated by the proxy on the client's real transport and SSE
//! headers (and never given to the store), who may change them, the operator's floor, and two replicas agreeing
//! on a change.

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};

use crate::common::{Backend, LIMITED_AK, LIMITED_SK, TestEnv, create_kms_key, kms_endpoint, s3_client};

fn default_encryption(
    sse: ServerSideEncryption,
    key: Option<&str>,
    bucket_key: bool,
) -> ServerSideEncryptionConfiguration {
    let by_default =
        ServerSideEncryptionByDefault::builder().sse_algorithm(sse).set_kms_master_key_id(key.map(str::to_owned));
    let rule = ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(by_default.build().unwrap());
    ServerSideEncryptionConfiguration::builder().rules(rule.bucket_key_enabled(bucket_key).build()).build().unwrap()
}

async fn put(
    c: &Client,
    bucket: &str,
    key: &str,
) -> Result<aws_sdk_s3::operation::put_object::PutObjectOutput, String> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"governed"))
        .send()
        .await
        .map_err(|e| e.into_service_error().meta().code().unwrap_or("?").to_owned())
}

#[tokio::test]
async fn default_encryption_set_through_the_api_applies_to_uploads_without_headers() {
    let (k1, k2) = (create_kms_key().await, create_kms_key().await);
    let env = TestEnv::builder(Backend::SeaweedFs)
        .kms(&kms_endpoint(), &k1, &format!("allowed_keys = [{k2:?}]\n"))
        .start()
        .await;
    let (c, b) = (env.client(), env.bucket.clone());
    let missing = c.get_bucket_encryption().bucket(&b).send().await.unwrap_err();
    assert_eq!(missing.into_service_error().meta().code(), Some("ServerSideEncryptionConfigurationNotFoundError"));

    // SSE-KMS with a chosen key and bucket keys: uploads without SSE headers get it, and say so.
    let kms = default_encryption(ServerSideEncryption::AwsKms, Some(&k2), true);
    c.put_bucket_encryption().bucket(&b).server_side_encryption_configuration(kms).send().await.unwrap();
    let got = c.get_bucket_encryption().bucket(&b).send().await.unwrap();
    let rule = &got.server_side_encryption_configuration().unwrap().rules()[0];
    let by_default = rule.apply_server_side_encryption_by_default().unwrap();
    assert_eq!(by_default.sse_algorithm(), &ServerSideEncryption::AwsKms);
    assert_eq!((by_default.kms_master_key_id(), rule.bucket_key_enabled()), (Some(k2.as_str()), Some(true)));
    let out = put(&c, &b, "by-default").await.unwrap();
    assert_eq!(out.server_side_encryption(), Some(&ServerSideEncryption::AwsKms));
    assert_eq!((out.ssekms_key_id(), out.bucket_key_enabled()), (Some(k2.as_str()), Some(true)));
    let head = c.head_object().bucket(&b).key("by-default").send().await.unwrap();
    assert_eq!(head.ssekms_key_id(), Some(k2.as_str()));
    // Headers the client sends win over the default.
    let asked = c.put_object().bucket(&b).key("asked").server_side_encryption(ServerSideEncryption::Aes256);
    let asked = asked.body(ByteStream::from_static(b"x")).send().await.unwrap();
    assert_eq!(asked.server_side_encryption(), Some(&ServerSideEncryption::Aes256));
    // The store holds no policy or default of its own: the proxy applied it.
    let stored = env.direct.head_object().bucket(&b).key("by-default").send().await.unwrap();
    assert!(stored.metadata().unwrap().contains_key("s3crypt-kek"), "{:?}", stored.metadata());

    // A key the operator did not allow is refused as it would be on an upload; a client that is not a bucket
    // administrator changes nothing.
    let other = create_kms_key().await;
    let refused = c
        .put_bucket_encryption()
        .bucket(&b)
        .server_side_encryption_configuration(default_encryption(ServerSideEncryption::AwsKms, Some(&other), false))
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.into_service_error().meta().code(), Some("AccessDenied"));
    let limited = env.client_as(LIMITED_AK, LIMITED_SK);
    let refused = limited.delete_bucket_encryption().bucket(&b).send().await.unwrap_err();
    assert_eq!(refused.into_service_error().meta().code(), Some("AccessDenied"));

    c.delete_bucket_encryption().bucket(&b).send().await.unwrap();
    let out = put(&c, &b, "after-delete").await.unwrap();
    assert_eq!(out.server_side_encryption(), Some(&ServerSideEncryption::Aes256), "the operator's default again");
    env.shutdown().await;
}

#[tokio::test]
async fn the_operators_policy_is_a_floor_the_api_cannot_lower() {
    let bucket = crate::common::unique_bucket("floor");
    let env = TestEnv::builder(Backend::SeaweedFs)
        .bucket(&bucket)
        .encryption(&format!(
            "[[encryption.policy]]\nbucket = {bucket:?}\nrequire_sse = true\nallowed_sse = [\"sse-s3\"]"
        ))
        .start()
        .await;
    let c = env.client();
    // SSE-KMS is not allowed here: not as a default either.
    let kms = default_encryption(ServerSideEncryption::AwsKms, None, false);
    let refused = c.put_bucket_encryption().bucket(&bucket).server_side_encryption_configuration(kms).send().await;
    assert_eq!(refused.unwrap_err().into_service_error().meta().code(), Some("AccessDenied"));
    // A default SSE-S3 is allowed, but does not lift the operator's demand for SSE headers.
    let s3 = default_encryption(ServerSideEncryption::Aes256, None, false);
    c.put_bucket_encryption().bucket(&bucket).server_side_encryption_configuration(s3).send().await.unwrap();
    assert_eq!(put(&c, &bucket, "no-headers").await.unwrap_err(), "AccessDenied");
    env.shutdown().await;
}

const DENY_UNENCRYPTED_AND_PLAIN_HTTP: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "DenyUnencrypted", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
     "Resource": "arn:aws:s3:::__B__/*", "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}},
    {"Sid": "DenyPlainHttp", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
     "Resource": ["arn:aws:s3:::__B__", "arn:aws:s3:::__B__/*"],
     "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
  ]
}"#;

#[tokio::test]
async fn bucket_policies_are_evaluated_on_the_clients_transport_and_headers_and_never_reach_the_store() {
    let env = TestEnv::builder(Backend::SeaweedFs).plain_http(&["allow"]).start().await;
    let (c, b) = (env.client(), env.bucket.clone());
    let plain = s3_client(
        &format!("http://{}", env.http_addr("allow")),
        crate::common::CLIENT_AK,
        crate::common::CLIENT_SK,
        None,
        None,
    );
    assert_eq!(put(&plain, &b, "before").await.map(drop), Ok(()), "no policy yet");
    let policy = DENY_UNENCRYPTED_AND_PLAIN_HTTP.replace("__B__", &b);
    c.put_bucket_policy().bucket(&b).policy(&policy).send().await.unwrap();

    assert_eq!(put(&c, &b, "unencrypted").await.unwrap_err(), "AccessDenied", "no SSE header");
    let sse = c.put_object().bucket(&b).key("encrypted").server_side_encryption(ServerSideEncryption::Aes256);
    sse.body(ByteStream::from_static(b"x")).send().await.expect("with the SSE header");
    let over_http = plain.put_object().bucket(&b).key("plain").server_side_encryption(ServerSideEncryption::Aes256);
    let refused = over_http.body(ByteStream::from_static(b"x")).send().await.unwrap_err();
    assert_eq!(refused.into_service_error().meta().code(), Some("AccessDenied"), "plain HTTP");
    let read = plain.get_object().bucket(&b).key("encrypted").send().await.unwrap_err();
    assert_eq!(read.into_service_error().meta().code(), Some("AccessDenied"), "plain HTTP reads too");
    c.get_object().bucket(&b).key("encrypted").send().await.expect("a read over TLS");

    // GetBucketPolicy answers the document; the store has none.
    let got = c.get_bucket_policy().bucket(&b).send().await.unwrap();
    assert_eq!(got.policy(), Some(policy.as_str()));
    let at_store = env.direct.get_bucket_policy().bucket(&b).send().await;
    assert!(at_store.is_err(), "the store never receives the policy: {at_store:?}");

    // A policy with an element the proxy does not evaluate is refused, naming it; the stored one stays.
    let half = policy.replace("aws:SecureTransport", "aws:PrincipalOrgID");
    let refused = c.put_bucket_policy().bucket(&b).policy(half).send().await.unwrap_err();
    let meta = refused.into_service_error();
    assert_eq!(meta.meta().code(), Some("MalformedPolicy"));
    assert!(meta.meta().message().unwrap_or("").contains("aws:PrincipalOrgID"), "{:?}", meta.meta().message());
    let limited = env.client_as(LIMITED_AK, LIMITED_SK);
    let refused = limited.delete_bucket_policy().bucket(&b).send().await.unwrap_err();
    assert_eq!(refused.into_service_error().meta().code(), Some("AccessDenied"));
    assert_eq!(put(&c, &b, "still").await.unwrap_err(), "AccessDenied");

    c.delete_bucket_policy().bucket(&b).send().await.unwrap();
    assert_eq!(put(&plain, &b, "after").await.map(drop), Ok(()), "the policy is gone");
    let missing = c.get_bucket_policy().bucket(&b).send().await.unwrap_err();
    assert_eq!(missing.into_service_error().meta().code(), Some("NoSuchBucketPolicy"));
    env.shutdown().await;
}

#[tokio::test]
async fn two_replicas_agree_on_a_policy_change_within_the_refresh_interval() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    s3crypt::crypto::keys::keygen(&keyring, Some("shared")).unwrap();
    let a = TestEnv::builder(Backend::SeaweedFs)
        .keyring(&keyring)
        .server_setting("bucket_settings_refresh = \"1s\"")
        .start()
        .await;
    let b = TestEnv::builder(Backend::SeaweedFs)
        .keyring(&keyring)
        .server_setting("bucket_settings_refresh = \"1s\"")
        .bucket(&a.bucket)
        .start()
        .await;
    let (ca, cb, bucket) = (a.client(), b.client(), a.bucket.clone());
    assert_eq!(put(&cb, &bucket, "before").await.map(drop), Ok(()), "B has read the settings: none");
    let policy = DENY_UNENCRYPTED_AND_PLAIN_HTTP.replace("__B__", &bucket);
    ca.put_bucket_policy().bucket(&bucket).policy(&policy).send().await.unwrap();
    let changed = Instant::now();
    assert_eq!(put(&ca, &bucket, "on-a").await.unwrap_err(), "AccessDenied", "the replica that changed it: at once");
    let agreed = loop {
        if put(&cb, &bucket, "on-b").await.is_err() {
            break changed.elapsed();
        }
        assert!(changed.elapsed() < Duration::from_secs(20), "replica B never saw the policy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("replica B enforced the new policy {} ms after replica A stored it", agreed.as_millis());
    ca.delete_bucket_policy().bucket(&bucket).send().await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}
