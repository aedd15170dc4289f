//! Where S3's answer is what a client builds on: a Complete retried after its answer was lost, a part named twice in
//! a Complete, refusals S3 makes (a copy onto itself that changes nothing, a part-copy range past the source, SSE
//! headers on reads, part 2 of a one-part object, a presigned URL valid for 0 seconds), and the error codes S3
//! gives (a wrong SSE-C key, a read by part number of a missing key, attributes of an SSE-C object without its key).
//! Each is pinned by ceph/s3-tests too; these run without it.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ObjectAttributes};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::against_both_stores;
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, TestEnv, data};

const MIB: usize = 1024 * 1024;

fn status<E, R: std::fmt::Debug>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response<R>>) -> u16 {
    e.raw_response().map_or(0, |r| r.status().as_u16())
}

fn code<E: ProvideErrorMetadata, R>(e: aws_sdk_s3::error::SdkError<E, R>) -> String {
    ProvideErrorMetadata::code(&e).unwrap_or_default().to_owned()
}

async fn upload_two_parts(c: &Client, b: &str, key: &str) -> (String, Vec<CompletedPart>, Vec<u8>) {
    let id = c.create_multipart_upload().bucket(b).key(key).send().await.unwrap().upload_id().unwrap().to_owned();
    let (p1, p2) = (data(5 * MIB, 1), data(1000, 2));
    let mut parts = Vec::new();
    for (n, body) in [(1, &p1), (2, &p2)] {
        let out = c
            .upload_part()
            .bucket(b)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        parts.push(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
    }
    (id, parts, [p1, p2].concat())
}

async fn complete(c: &Client, b: &str, key: &str, id: &str, parts: Vec<CompletedPart>) -> Option<String> {
    let done = c
        .complete_multipart_upload()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap_or_else(|e| panic!("complete: {:?}", e.into_service_error()));
    done.e_tag().map(str::to_owned)
}

async fn a_complete_retried_after_its_answer_was_lost_answers_it_again(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let (c, b) = (env.client(), &env.bucket);
    let (id, parts, body) = upload_two_parts(&c, b, "retried").await;
    let first = complete(&c, b, "retried", &id, parts.clone()).await;
    let again = complete(&c, b, "retried", &id, parts.clone()).await;
    assert_eq!(again, first, "the retry answers with the same ETag");
    let got = c.get_object().bucket(b).key("retried").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);

    // Another upload's ID for the same key is not this object's: NoSuchUpload.
    let (other, other_parts, _) = upload_two_parts(&c, b, "retried").await;
    c.abort_multipart_upload().bucket(b).key("retried").upload_id(&other).send().await.unwrap();
    let e = c
        .complete_multipart_upload()
        .bucket(b)
        .key("retried")
        .upload_id(&other)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(other_parts)).build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e), "NoSuchUpload");
}
against_both_stores!(complete_retried, a_complete_retried_after_its_answer_was_lost_answers_it_again);

#[tokio::test]
async fn a_part_named_twice_in_a_complete_takes_its_last_entry() {
    let env = TestEnv::start(Backend::Embedded).await;
    let (c, b) = (env.client(), &env.bucket);
    let id = c.create_multipart_upload().bucket(b).key("twice").send().await.unwrap().upload_id().unwrap().to_owned();
    let mut etags = Vec::new();
    for fill in [b'B', b'A'] {
        let out = c
            .upload_part()
            .bucket(b)
            .key("twice")
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from(vec![fill; 8]))
            .send()
            .await
            .unwrap();
        etags.push(out.e_tag().unwrap().to_owned());
    }
    let parts = etags.iter().map(|e| CompletedPart::builder().part_number(1).e_tag(e).build()).collect();
    complete(&c, b, "twice", &id, parts).await;
    let got = c.get_object().bucket(b).key("twice").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), vec![b'A'; 8]);
}

#[tokio::test]
async fn refusals_and_error_codes_are_s3s() {
    let env = TestEnv::start(Backend::Embedded).await;
    let (c, b) = (env.client(), &env.bucket);
    c.put_object().bucket(b).key("one").body(ByteStream::from_static(b"12345")).send().await.unwrap();

    // A copy onto itself that changes nothing; one that replaces the metadata is fine.
    let e = c.copy_object().bucket(b).key("one").copy_source(format!("{b}/one")).send().await.unwrap_err();
    assert_eq!((status(&e), code(e)), (400, "InvalidRequest".to_owned()));
    c.copy_object()
        .bucket(b)
        .key("one")
        .copy_source(format!("{b}/one"))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("k", "v")
        .send()
        .await
        .expect("a copy onto itself with new metadata");

    // A part-copy range past the end of the source.
    let id = c.create_multipart_upload().bucket(b).key("dest").send().await.unwrap().upload_id().unwrap().to_owned();
    let e = c
        .upload_part_copy()
        .bucket(b)
        .key("dest")
        .upload_id(&id)
        .part_number(1)
        .copy_source(format!("{b}/one"))
        .copy_source_range("bytes=0-21")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(status(&e), 400 | 416));
    assert_eq!(code(e), "InvalidRange");

    // Reads name no SSE of their own.
    for method in [http::Method::GET, http::Method::HEAD] {
        let url = format!("{}/{b}/one", env.endpoint());
        let sse = [("x-amz-server-side-encryption", "aws:kms")];
        let r = env.raw().send(crate::common::raw::signed(method.clone(), &url, &sse, b"", CLIENT_AK, CLIENT_SK)).await;
        assert_eq!(r.status.as_u16(), 400, "{method} with an SSE header");
    }

    // Part 2 of a one-part object; a read by part number of a key that is not there.
    let e = c.get_object().bucket(b).key("one").part_number(2).send().await.unwrap_err();
    assert_eq!((status(&e), code(e)), (400, "InvalidPart".to_owned()));
    let e = c.get_object().bucket(b).key("missing").part_number(1).send().await.unwrap_err();
    assert_eq!((status(&e), code(e)), (404, "NoSuchKey".to_owned()));

    // A presigned URL valid for 0 seconds has expired.
    let p = c
        .get_object()
        .bucket(b)
        .key("one")
        .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let zero = p.uri().replace("X-Amz-Expires=60", "X-Amz-Expires=0");
    let r = env.raw().send(Request::builder().uri(zero).body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (403, Some("AccessDenied")));
}

#[tokio::test]
async fn attributes_of_an_sse_c_object_need_its_key() {
    // (The embedded store has no GetObjectAttributes.)
    let env = TestEnv::start(Backend::SeaweedFs).await;
    let (c, b) = (env.client(), &env.bucket);
    let key = [7u8; 32];
    let b64 = |v: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v);
    let (k, m) = (b64(&key), b64(&<md5::Md5 as md5::Digest>::digest(key)));
    c.put_object()
        .bucket(b)
        .key("c")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k)
        .sse_customer_key_md5(&m)
        .body(ByteStream::from(vec![1u8; 1000]))
        .send()
        .await
        .unwrap();
    let attrs = || c.get_object_attributes().bucket(b).key("c").object_attributes(ObjectAttributes::ObjectSize);
    let e = attrs().send().await.unwrap_err();
    assert_eq!(status(&e), 400, "without the key");
    let out = attrs().sse_customer_algorithm("AES256").sse_customer_key(&k).sse_customer_key_md5(&m).send().await;
    let out = out.unwrap_or_else(|e| panic!("{:?}", e.into_service_error()));
    assert_eq!(out.object_size(), Some(1000));
}
