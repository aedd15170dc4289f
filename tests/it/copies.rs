//! CopyObject and UploadPartCopy with encrypted buckets: server-side copies that only re-wrap the data key (the
//! stored ciphertext is copied byte for byte), COPY / REPLACE metadata, copies to itself, across buckets, between
//! encrypted and plaintext buckets (decrypt / encrypt on the way), ranged part copies, source conditions; and
//! versioned buckets (reads, copies and deletes of a given version; one version per multipart upload).

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, MetadataDirective, VersioningConfiguration,
};

use crate::against_both_stores;
use crate::common::{Backend, TestEnv, data, unique_bucket};

const MIB: usize = 1024 * 1024;

async fn put(c: &Client, bucket: &str, key: &str, body: &[u8]) -> Option<String> {
    let out = c
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/x-test")
        .metadata("origin", "put")
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .expect("put");
    out.version_id().map(str::to_owned)
}

async fn get(c: &Client, bucket: &str, key: &str, version: Option<&str>) -> Vec<u8> {
    let out = c.get_object().bucket(bucket).key(key).set_version_id(version.map(str::to_owned)).send().await;
    let out = out.unwrap_or_else(|e| panic!("get {key}: {:?}", e.into_service_error()));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn stored(env: &TestEnv, bucket: &str, key: &str) -> (Vec<u8>, std::collections::HashMap<String, String>) {
    let o = env.direct.get_object().bucket(bucket).key(key).send().await.expect("direct get");
    let meta = o.metadata().cloned().unwrap_or_default();
    (o.body.collect().await.unwrap().into_bytes().to_vec(), meta)
}

async fn copies_between_encrypted_objects_rewrap_the_key_and_leave_the_ciphertext_alone(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let b = &env.bucket;
    let other = unique_bucket("copydst");
    env.direct.create_bucket().bucket(&other).send().await.unwrap();
    let body = data(3 * 65_536 + 11, 1);
    put(&c, b, "src", &body).await;

    // same bucket, COPY directive: metadata and content type carried over
    let out = c.copy_object().bucket(b).key("dst").copy_source(format!("{b}/src")).send().await.expect("copy");
    assert!(out.copy_object_result().and_then(|r| r.e_tag()).is_some());
    assert_eq!(out.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
    assert_eq!(get(&c, b, "dst", None).await, body);
    let head = c.head_object().bucket(b).key("dst").send().await.unwrap();
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(head.metadata().and_then(|m| m.get("origin")).map(String::as_str), Some("put"));
    assert!(head.metadata().is_none_or(|m| m.keys().all(|k| !k.starts_with("s3crypt"))));
    let (src_raw, src_meta) = stored(&env, b, "src").await;
    let (dst_raw, dst_meta) = stored(&env, b, "dst").await;
    assert_eq!(src_raw, dst_raw, "the store copied the ciphertext: no re-encryption");
    assert_ne!(src_meta.get("s3crypt-dek"), dst_meta.get("s3crypt-dek"), "the data key is re-wrapped for the new name");

    // across buckets, and a key with characters that need encoding
    c.copy_object().bucket(&other).key("a b/ü?.bin").copy_source(format!("{b}/src")).send().await.expect("copy across");
    assert_eq!(get(&c, &other, "a b/ü?.bin", None).await, body);

    // REPLACE: the client's metadata and content type; the reserved prefix stays reserved
    c.copy_object()
        .bucket(b)
        .key("replaced")
        .copy_source(format!("{b}/src"))
        .metadata_directive(MetadataDirective::Replace)
        .content_type("text/plain")
        .metadata("origin", "copy")
        .send()
        .await
        .expect("copy replace");
    let head = c.head_object().bucket(b).key("replaced").send().await.unwrap();
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.metadata().and_then(|m| m.get("origin")).map(String::as_str), Some("copy"));
    assert_eq!(get(&c, b, "replaced", None).await, body);
    let e = c
        .copy_object()
        .bucket(b)
        .key("forged")
        .copy_source(format!("{b}/src"))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("s3crypt-dek", "forged")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("InvalidArgument"));

    // onto itself (a metadata change)
    c.copy_object()
        .bucket(b)
        .key("src")
        .copy_source(format!("{b}/src"))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("origin", "self")
        .send()
        .await
        .expect("self copy");
    let head = c.head_object().bucket(b).key("src").send().await.unwrap();
    assert_eq!(head.metadata().and_then(|m| m.get("origin")).map(String::as_str), Some("self"));
    assert_eq!(get(&c, b, "src", None).await, body);

    // a source condition that does not hold
    let e = c
        .copy_object()
        .bucket(b)
        .key("cond")
        .copy_source(format!("{b}/src"))
        .copy_source_if_match("\"not-the-etag\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("PreconditionFailed"));
    let e = c.copy_object().bucket(b).key("x").copy_source(format!("{b}/missing")).send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("NoSuchKey"));
}
against_both_stores!(copies_rewrap, copies_between_encrypted_objects_rewrap_the_key_and_leave_the_ciphertext_alone);

async fn copies_to_and_from_plaintext_buckets_encrypt_and_decrypt_on_the_way(backend: Backend) {
    let plain = unique_bucket("plain");
    let env = TestEnv::builder(backend).passthrough_bucket(&plain).start().await;
    env.direct.create_bucket().bucket(&plain).send().await.unwrap();
    let c = env.client();
    let b = &env.bucket;
    let body = data(200_001, 2);
    put(&c, &plain, "p", &body).await;
    c.copy_object().bucket(b).key("enc").copy_source(format!("{plain}/p")).send().await.expect("plain → encrypted");
    assert_eq!(get(&c, b, "enc", None).await, body);
    let (raw, meta) = stored(&env, b, "enc").await;
    assert!(meta.contains_key("s3crypt-dek") && raw.len() > body.len(), "encrypted at rest");
    assert_eq!(c.head_object().bucket(b).key("enc").send().await.unwrap().content_type(), Some("application/x-test"));
    c.copy_object().bucket(&plain).key("back").copy_source(format!("{b}/enc")).send().await.expect("encrypted → plain");
    let (raw, meta) = stored(&env, &plain, "back").await;
    assert_eq!(raw, body, "decrypted into the plaintext bucket");
    assert!(meta.keys().all(|k| !k.starts_with("s3crypt")));
}
against_both_stores!(copies_across_policies, copies_to_and_from_plaintext_buckets_encrypt_and_decrypt_on_the_way);

async fn ranged_upload_part_copies_re_encrypt_the_ranges_as_parts(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let b = &env.bucket;
    let source = data(11 * MIB + 5, 3);
    put(&c, b, "big", &source).await;
    let up = c.create_multipart_upload().bucket(b).key("assembled").send().await.unwrap();
    let id = up.upload_id().unwrap();
    let ranges = [(0, 8 * MIB - 1), (8 * MIB, source.len() - 1)];
    let mut parts = Vec::new();
    for (i, (a, z)) in ranges.iter().enumerate() {
        let out = c
            .upload_part_copy()
            .bucket(b)
            .key("assembled")
            .upload_id(id)
            .part_number(i as i32 + 1)
            .copy_source(format!("{b}/big"))
            .copy_source_range(format!("bytes={a}-{z}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("part copy: {:?}", e.into_service_error()));
        let etag = out.copy_part_result().and_then(|r| r.e_tag()).expect("etag").to_owned();
        parts.push(CompletedPart::builder().part_number(i as i32 + 1).e_tag(etag).build());
    }
    c.complete_multipart_upload()
        .bucket(b)
        .key("assembled")
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .expect("complete");
    assert_eq!(get(&c, b, "assembled", None).await, source);
    let e = c
        .upload_part_copy()
        .bucket(b)
        .key("assembled2")
        .upload_id(id)
        .part_number(1)
        .copy_source(format!("{b}/big"))
        .copy_source_range("bytes=10-")
        .send()
        .await
        .unwrap_err();
    let code = e.into_service_error().meta().code().map(str::to_owned);
    assert!(matches!(code.as_deref(), Some("InvalidArgument") | Some("NoSuchUpload")), "{code:?}");

    // a sealed multipart object copies with its layout
    c.copy_object().bucket(b).key("assembled-copy").copy_source(format!("{b}/assembled")).send().await.unwrap();
    assert_eq!(get(&c, b, "assembled-copy", None).await, source);
    let p2 = c.get_object().bucket(b).key("assembled-copy").part_number(2).send().await.unwrap();
    assert_eq!(p2.body.collect().await.unwrap().into_bytes().to_vec(), &source[8 * MIB..]);
}
against_both_stores!(ranged_part_copies, ranged_upload_part_copies_re_encrypt_the_ranges_as_parts);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_read_copied_and_deleted_by_id_and_a_multipart_upload_leaves_one_version() {
    let env = TestEnv::start(Backend::SeaweedFs).await;
    let c = env.client();
    let b = &env.bucket;
    c.put_bucket_versioning()
        .bucket(b)
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .expect("versioning");
    let v1_body = data(70_000, 1);
    let v2_body = data(1_000, 2);
    let v1 = put(&c, b, "doc", &v1_body).await.expect("version id");
    let v2 = put(&c, b, "doc", &v2_body).await.expect("version id");
    assert_ne!(v1, v2);
    assert_eq!(get(&c, b, "doc", None).await, v2_body);
    assert_eq!(get(&c, b, "doc", Some(&v1)).await, v1_body);
    let head = c.head_object().bucket(b).key("doc").version_id(&v1).send().await.unwrap();
    assert_eq!(head.content_length(), Some(70_000));

    c.copy_object()
        .bucket(b)
        .key("from-v1")
        .copy_source(format!("{b}/doc?versionId={v1}"))
        .send()
        .await
        .expect("copy a version");
    assert_eq!(get(&c, b, "from-v1", None).await, v1_body);

    let versions = c.list_object_versions().bucket(b).prefix("doc").send().await.unwrap();
    let mut sizes: Vec<i64> = versions.versions().iter().filter_map(|v| v.size()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![1_000, 70_000], "version listings show plaintext sizes");

    c.delete_object().bucket(b).key("doc").version_id(&v2).send().await.expect("delete a version");
    assert_eq!(get(&c, b, "doc", None).await, v1_body);

    // a multipart upload (sealed by a self-copy) leaves one version, not two
    let up = c.create_multipart_upload().bucket(b).key("mp").send().await.unwrap();
    let id = up.upload_id().unwrap();
    let parts = [data(5 * MIB, 3), data(10, 4)];
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let out = c
            .upload_part()
            .bucket(b)
            .key("mp")
            .upload_id(id)
            .part_number(i as i32 + 1)
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .unwrap();
        done.push(CompletedPart::builder().part_number(i as i32 + 1).set_e_tag(out.e_tag().map(str::to_owned)).build());
    }
    let out = c
        .complete_multipart_upload()
        .bucket(b)
        .key("mp")
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .unwrap();
    let version = out.version_id().expect("version of the sealed object").to_owned();
    let versions = c.list_object_versions().bucket(b).prefix("mp").send().await.unwrap();
    let ids: Vec<&str> = versions.versions().iter().filter_map(|v| v.version_id()).collect();
    assert_eq!(ids, vec![version.as_str()], "only the sealed version remains");
    assert_eq!(get(&c, b, "mp", Some(&version)).await, parts.concat());
}
