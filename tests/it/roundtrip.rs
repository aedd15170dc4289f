//! Objects go through the proxy and come back byte for byte, with S3 semantics intact, on both stores.

use aws_sdk_s3::primitives::ByteStream;

use crate::against_both_stores;
use crate::common::{Backend, TestEnv, data};

async fn objects_of_many_sizes_round_trip_byte_for_byte(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    for (i, len) in [0usize, 1, 65_535, 65_536, 65_537, 5 * 1024 * 1024 + 1].into_iter().enumerate() {
        let key = format!("sizes/{len}");
        let body = data(len, i as u64);
        c.put_object().bucket(&env.bucket).key(&key).body(ByteStream::from(body.clone())).send().await.unwrap();
        let head = c.head_object().bucket(&env.bucket).key(&key).send().await.unwrap();
        assert_eq!(head.content_length(), Some(len as i64), "HEAD size of {key}");
        let got = c.get_object().bucket(&env.bucket).key(&key).send().await.unwrap();
        let got = got.body.collect().await.unwrap().into_bytes();
        assert!(got == body, "{key} came back different ({} bytes)", got.len());
    }
    let listed = c.list_objects_v2().bucket(&env.bucket).prefix("sizes/").send().await.unwrap();
    assert_eq!(listed.contents().len(), 6);
    env.shutdown().await;
}
against_both_stores!(objects_of_many_sizes_round_trip, objects_of_many_sizes_round_trip_byte_for_byte);

async fn keys_with_reserved_and_unicode_characters_survive_signing_twice(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let keys = [
        "with space.txt",
        "plus+sign",
        "percent%25literal",
        "equals=sign",
        "at@sign",
        "colon:name",
        "bang!(paren)",
        "caret^hat",
        "ünïcödé/日本語",
        "tilde~dash-under_score.dot",
        "a/b/c/deep",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body = data(100 + i, i as u64);
        c.put_object()
            .bucket(&env.bucket)
            .key(*key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
        let got =
            c.get_object().bucket(&env.bucket).key(*key).send().await.unwrap_or_else(|e| panic!("get {key}: {e:?}"));
        assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body, "{key}");
    }
    let mut listed: Vec<String> = c
        .list_objects_v2()
        .bucket(&env.bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    listed.sort();
    let mut expected: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for key in keys {
        c.delete_object().bucket(&env.bucket).key(key).send().await.unwrap();
    }
    assert!(env.stored_keys().await.is_empty());
    env.shutdown().await;
}
against_both_stores!(keys_with_special_characters, keys_with_reserved_and_unicode_characters_survive_signing_twice);

async fn metadata_content_type_and_listing_parameters_pass_through(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    c.put_object()
        .bucket(&env.bucket)
        .key("dir/meta.txt")
        .content_type("text/plain")
        .metadata("color", "blue")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket(&env.bucket).key("dir/meta.txt").send().await.unwrap();
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.content_encoding(), None, "the aws-chunked framing is not the object's encoding");
    assert_eq!(head.metadata().and_then(|m| m.get("color")).map(String::as_str), Some("blue"));
    let listed = c.list_objects_v2().bucket(&env.bucket).delimiter("/").send().await.unwrap();
    assert_eq!(listed.common_prefixes().len(), 1);
    assert_eq!(listed.common_prefixes()[0].prefix(), Some("dir/"));
    let e = c.get_object().bucket(&env.bucket).key("missing").send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("NoSuchKey"));
    env.shutdown().await;
}
against_both_stores!(metadata_and_listing, metadata_content_type_and_listing_parameters_pass_through);

async fn multipart_uploads_pass_through_untouched_on_plaintext_buckets(backend: Backend) {
    let plain = crate::common::unique_bucket("plain");
    let env = TestEnv::builder(backend).passthrough_bucket(&plain).start().await;
    env.direct.create_bucket().bucket(&plain).send().await.unwrap();
    let c = env.client();
    let part = data(5 * 1024 * 1024, 9);
    let up = c.create_multipart_upload().bucket(&plain).key("mp").send().await.unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for n in 1..=2 {
        let r = c
            .upload_part()
            .bucket(&plain)
            .key("mp")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .unwrap();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder().part_number(n).set_e_tag(r.e_tag().map(str::to_owned)).build(),
        );
    }
    c.complete_multipart_upload()
        .bucket(&plain)
        .key("mp")
        .upload_id(id)
        .multipart_upload(aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap();
    let got = c.get_object().bucket(&plain).key("mp").send().await.unwrap();
    let got = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(got.len(), 2 * part.len());
    assert!(got[..part.len()] == part[..] && got[part.len()..] == part[..]);
    let r = c.get_object().bucket(&plain).key("mp").range("bytes=10-19").send().await.unwrap();
    assert_eq!(r.content_range(), Some("bytes 10-19/10485760"));
    env.shutdown().await;
}
against_both_stores!(multipart_on_plaintext_buckets, multipart_uploads_pass_through_untouched_on_plaintext_buckets);

async fn the_bucket_lifecycle_works_through_the_proxy(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let name = crate::common::unique_bucket("made");
    c.create_bucket().bucket(&name).send().await.unwrap();
    c.head_bucket().bucket(&name).send().await.unwrap();
    let buckets = c.list_buckets().send().await.unwrap();
    assert!(buckets.buckets().iter().any(|b| b.name() == Some(name.as_str())));
    c.delete_bucket().bucket(&name).send().await.unwrap();
    let e = c.head_bucket().bucket(&name).send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(404));
    env.shutdown().await;
}
against_both_stores!(bucket_lifecycle, the_bucket_lifecycle_works_through_the_proxy);
