//! S3's ETag and checksum contract through the proxy (docs/ENCRYPTION.md "ETags"): SSE-S3 objects answer with the
//! plaintext MD5 (PUT and UploadPart always; HEAD and GET when it is sealed in the envelope), everything else with
//! an opaque ETag that never looks like an MD5; conditional reads accept both forms; checksums declared at upload
//! come back with checksum mode; the store never sees an MD5 or checksum of the plaintext.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use md5::Digest;

use crate::against_both_stores;
use crate::common::{Backend, TestEnv, data};

fn md5_hex(b: &[u8]) -> String {
    format!("\"{}\"", hex::encode(md5::Md5::digest(b)))
}

fn looks_like_md5(etag: &str) -> bool {
    let b = etag.trim_matches('"');
    b.len() == 32 && b.bytes().all(|c| c.is_ascii_hexdigit())
}

async fn head_etag(c: &Client, b: &str, k: &str) -> String {
    c.head_object().bucket(b).key(k).send().await.unwrap().e_tag().unwrap().to_owned()
}

/// The listed ETag (s3s-fs lists none: then the HEAD's, for the tests that compare with it).
async fn listed_etag(c: &Client, b: &str, k: &str) -> Option<String> {
    let l = c.list_objects_v2().bucket(b).prefix(k).send().await.unwrap();
    l.contents().iter().find(|o| o.key() == Some(k)).and_then(|o| o.e_tag()).map(str::to_owned)
}

async fn sse_s3_objects_show_their_plaintext_md5_where_it_is_known_and_an_opaque_etag_elsewhere(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let (c, b) = (env.client(), env.bucket.clone());

    // One segment or less: read whole, its MD5 sealed; PUT, HEAD and GET agree.
    let small = data(1000, 1);
    let put = c.put_object().bucket(&b).key("small").body(ByteStream::from(small.clone())).send().await.unwrap();
    assert_eq!(put.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
    assert_eq!(put.e_tag(), Some(md5_hex(&small).as_str()));
    assert_eq!(head_etag(&c, &b, "small").await, md5_hex(&small));
    let got = c.get_object().bucket(&b).key("small").send().await.unwrap();
    assert_eq!(got.e_tag(), Some(md5_hex(&small).as_str()));
    if matches!(backend, Backend::SeaweedFs) {
        // (s3s-fs has no GetObjectAttributes)
        let attrs = c
            .get_object_attributes()
            .bucket(&b)
            .key("small")
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::Etag)
            .send()
            .await
            .unwrap();
        let shown = attrs.e_tag().map(|e| format!("\"{e}\""));
        assert_eq!(shown, Some(md5_hex(&small)), "GetObjectAttributes shows it too");
    }
    // A listing cannot know the MD5: the opaque form, which never looks like one.
    if let Some(listed) = listed_etag(&c, &b, "small").await {
        assert!(listed.ends_with("-1\"") && !looks_like_md5(&listed), "{listed}");
    }

    // Larger, without Content-MD5: the PUT still answers the MD5 (SDKs check it); reads have only the opaque form.
    let big = data(300_000, 2);
    let put = c.put_object().bucket(&b).key("big").body(ByteStream::from(big.clone())).send().await.unwrap();
    assert_eq!(put.e_tag(), Some(md5_hex(&big).as_str()));
    let shown = head_etag(&c, &b, "big").await;
    assert!(shown.ends_with("-1\"") && !looks_like_md5(&shown), "{shown}");
    if let Some(listed) = listed_etag(&c, &b, "big").await {
        assert_eq!(listed, shown);
    }

    // Larger, with Content-MD5 (rclone sends it): verified as it streams, sealed, shown by reads.
    let md5_b64 = B64.encode(md5::Md5::digest(&big));
    c.put_object()
        .bucket(&b)
        .key("big-md5")
        .content_md5(&md5_b64)
        .body(ByteStream::from(big.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(head_etag(&c, &b, "big-md5").await, md5_hex(&big));

    // Conditions hold for either form; the store's own ETag means nothing to the client.
    let opaque = head_etag(&c, &b, "big").await;
    let big_md5 = md5_hex(&big);
    for (key, tag) in [("small", md5_hex(&small)), ("big", opaque.clone()), ("big-md5", big_md5)] {
        let got = c.get_object().bucket(&b).key(key).if_match(&tag).send().await.unwrap();
        assert!(!got.body.collect().await.unwrap().into_bytes().is_empty());
        let e = c.get_object().bucket(&b).key(key).if_none_match(&tag).send().await.unwrap_err();
        assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(304), "{key} {tag}");
        let e = c.head_object().bucket(&b).key(key).if_none_match(&tag).send().await.unwrap_err();
        assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(304), "{key} {tag}");
    }
    // The small object's opaque form (what a listing shows) holds too.
    let store = env.direct.head_object().bucket(&b).key("small").send().await.unwrap();
    let small_opaque = format!("\"{}-1\"", store.e_tag().unwrap().trim_matches('"'));
    assert!(c.get_object().bucket(&b).key("small").if_match(&small_opaque).send().await.is_ok());
    let e = c.get_object().bucket(&b).key("small").if_match("\"0123456789abcdef0123456789abcdef\"").send().await;
    assert_eq!(e.unwrap_err().raw_response().map(|r| r.status().as_u16()), Some(412));
    let later = aws_smithy_types::DateTime::from_secs(4_000_000_000);
    let e = c.get_object().bucket(&b).key("small").if_modified_since(later).send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(304));
    // If-Match holds, so If-Unmodified-Since is not looked at (S3's precedence).
    let earlier = aws_smithy_types::DateTime::from_secs(1_000_000_000);
    let got = c.get_object().bucket(&b).key("small").if_match(md5_hex(&small)).if_unmodified_since(earlier).send();
    assert!(got.await.is_ok());

    // A copy keeps the sealed MD5 (re-sealed for the new name) and answers with it.
    let copied = c.copy_object().bucket(&b).key("small-copy").copy_source(format!("{b}/small")).send().await.unwrap();
    assert_eq!(copied.copy_object_result().and_then(|r| r.e_tag()), Some(md5_hex(&small).as_str()));
    assert_eq!(head_etag(&c, &b, "small-copy").await, md5_hex(&small));
    let conditional = c
        .copy_object()
        .bucket(&b)
        .key("small-copy2")
        .copy_source(format!("{b}/small"))
        .copy_source_if_match(md5_hex(&small))
        .send()
        .await;
    assert!(conditional.is_ok(), "{conditional:?}");

    // The store holds no MD5 of the plaintext, in any encoding.
    for key in ["small", "big-md5", "small-copy"] {
        let o = env.direct.get_object().bucket(&b).key(key).send().await.unwrap();
        let stored = format!("{:?} {:?}", o.e_tag(), o.metadata());
        for m in [&small, &big] {
            let d = md5::Md5::digest(m);
            assert!(!stored.contains(&hex::encode(d)) && !stored.contains(&B64.encode(d)), "{key}: {stored}");
        }
    }
    env.shutdown().await;
}
against_both_stores!(
    sse_s3_etags,
    sse_s3_objects_show_their_plaintext_md5_where_it_is_known_and_an_opaque_etag_elsewhere
);

#[tokio::test]
async fn sse_c_and_multipart_etags_are_opaque_and_sse_s3_parts_answer_their_md5() {
    let env = TestEnv::start(Backend::SeaweedFs).await;
    let (c, b) = (env.client(), env.bucket.clone());
    let key = [7u8; 32];
    let (k, m) = (B64.encode(key), B64.encode(md5::Md5::digest(key)));
    let body = data(1000, 3);
    let put = c
        .put_object()
        .bucket(&b)
        .key("ssec")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k)
        .sse_customer_key_md5(&m)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_owned();
    assert!(!looks_like_md5(&etag), "SSE-C ETags are opaque: {etag}");
    let head = c
        .head_object()
        .bucket(&b)
        .key("ssec")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k)
        .sse_customer_key_md5(&m)
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), Some(etag.as_str()), "the same opaque ETag on PUT and HEAD");

    // SSE-S3 parts answer the MD5 of what was sent (the AWS SDK for Java v1 compares it); Complete takes them.
    let id = c.create_multipart_upload().bucket(&b).key("mp").send().await.unwrap().upload_id().unwrap().to_owned();
    let parts = [data(5 * 1024 * 1024, 4), data(70_000, 5)];
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let out = c
            .upload_part()
            .bucket(&b)
            .key("mp")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.e_tag(), Some(md5_hex(p).as_str()), "part {n}");
        done.push(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
    }
    // ListParts shows the same MD5s (from the parts' sealed records).
    let listed = c.list_parts().bucket(&b).key("mp").upload_id(&id).send().await.unwrap();
    let listed: Vec<&str> = listed.parts().iter().filter_map(|p| p.e_tag()).collect();
    assert_eq!(listed, done.iter().filter_map(|p| p.e_tag()).collect::<Vec<_>>());
    // A wrong MD5 names no part.
    let wrong = vec![CompletedPart::builder().part_number(1).e_tag("ffffffffffffffffffffffffffffffff").build()];
    let wrong = CompletedMultipartUpload::builder().set_parts(Some(wrong)).build();
    let refused =
        c.complete_multipart_upload().bucket(&b).key("mp").upload_id(&id).multipart_upload(wrong).send().await;
    assert_eq!(refused.unwrap_err().into_service_error().meta().code(), Some("InvalidPart"));
    // S3's multipart ETag: the MD5 of the parts' MD5s, then the part count; HEAD and Complete agree.
    let mut md5s = Vec::new();
    for p in &parts {
        md5s.extend_from_slice(&md5::Md5::digest(p));
    }
    let expected = format!("\"{}-2\"", hex::encode(md5::Md5::digest(&md5s)));
    let done = CompletedMultipartUpload::builder().set_parts(Some(done)).build();
    let out = c.complete_multipart_upload().bucket(&b).key("mp").upload_id(&id).multipart_upload(done).send().await;
    let etag = out.unwrap().e_tag().unwrap().to_owned();
    assert_eq!(etag, expected);
    assert_eq!(head_etag(&c, &b, "mp").await, etag, "Complete and HEAD agree");
    env.shutdown().await;
}

#[tokio::test]
async fn checksums_declared_at_upload_come_back_with_checksum_mode() {
    let env = TestEnv::start(Backend::SeaweedFs).await;
    let (c, b) = (env.client(), env.bucket.clone());
    let body = data(200_000, 6);
    let sha = B64.encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    c.put_object()
        .bucket(&b)
        .key("sum")
        .checksum_sha256(&sha)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket(&b).key("sum").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(head.checksum_sha256(), Some(sha.as_str()));
    let got = c.get_object().bucket(&b).key("sum").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(got.checksum_sha256(), Some(sha.as_str()));
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    let plain = c.head_object().bucket(&b).key("sum").send().await.unwrap();
    assert_eq!(plain.checksum_sha256(), None, "only with checksum mode");
    let attrs = c
        .get_object_attributes()
        .bucket(&b)
        .key("sum")
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::Checksum)
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::Etag)
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.checksum().and_then(|c| c.checksum_sha256()), Some(sha.as_str()), "GetObjectAttributes too");
    let o = env.direct.head_object().bucket(&b).key("sum").send().await.unwrap();
    let stored = format!("{:?}", o.metadata());
    assert!(!stored.contains(&sha), "the store does not see the plaintext's checksum: {stored}");
    env.shutdown().await;
}

#[tokio::test]
async fn with_md5_etags_off_sse_s3_puts_are_opaque_unless_the_client_sent_content_md5() {
    let env = TestEnv::builder(Backend::SeaweedFs).encryption("md5_etags = false").start().await;
    let (c, b) = (env.client(), env.bucket.clone());
    let body = data(300_000, 7);
    let put = c.put_object().bucket(&b).key("plain").body(ByteStream::from(body.clone())).send().await.unwrap();
    assert_eq!(put.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
    let etag = put.e_tag().unwrap().to_owned();
    assert!(!looks_like_md5(&etag), "no MD5 computed: opaque {etag}");
    assert_eq!(head_etag(&c, &b, "plain").await, etag);
    let md5_b64 = B64.encode(md5::Md5::digest(&body));
    let put = c.put_object().bucket(&b).key("md5").content_md5(&md5_b64).body(ByteStream::from(body.clone()));
    assert_eq!(put.send().await.unwrap().e_tag(), Some(md5_hex(&body).as_str()), "the client's verified MD5");
    assert_eq!(head_etag(&c, &b, "md5").await, md5_hex(&body));
    env.shutdown().await;
}
