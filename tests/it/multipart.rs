//! Multipart uploads on encrypted buckets, end to end with aws-sdk-s3: parts in any order, in parallel and retried;
//! exact plaintext sizes in HEAD, listings and ListParts; reads by range and by part number; the seal that
//! authenticates the layout (by CopyObject, or part by part over the copy limit, and with a keepalive body when
//! slow); upload IDs that work on any replica and only for their own upload; unsealed or truncated objects refused.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use s3crypt::crypto::format::ciphertext_len;

use crate::against_both_stores;
use crate::common::{Backend, TestEnv, data};

const MIB: usize = 1024 * 1024;

/// Starts an upload with a content type and user metadata.
async fn create(c: &Client, bucket: &str, key: &str) -> String {
    let out = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("text/csv")
        .metadata("color", "blue")
        .send()
        .await
        .expect("create");
    let id = out.upload_id().expect("upload id").to_owned();
    assert!(id.starts_with("s3c2."), "{id}");
    id
}

async fn upload_part(c: &Client, bucket: &str, key: &str, id: &str, n: i32, body: Vec<u8>) -> Result<String, String> {
    let out = c
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| format!("{:?}", e.into_service_error()))?;
    Ok(out.e_tag().expect("etag").to_owned())
}

async fn complete(c: &Client, bucket: &str, key: &str, id: &str, etags: &[(i32, String)]) -> Result<String, String> {
    let parts: Vec<CompletedPart> =
        etags.iter().map(|(n, e)| CompletedPart::builder().part_number(*n).e_tag(e).build()).collect();
    let out = c
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| format!("{:?}", e.into_service_error()))?;
    Ok(out.e_tag().unwrap_or_default().to_owned())
}

/// Uploads `parts` (numbered from 1) in reverse order and completes.
async fn upload(c: &Client, bucket: &str, key: &str, parts: &[Vec<u8>]) -> Result<String, String> {
    let id = create(c, bucket, key).await;
    let mut etags = Vec::new();
    for (i, p) in parts.iter().enumerate().rev() {
        etags.push((i as i32 + 1, upload_part(c, bucket, key, &id, i as i32 + 1, p.clone()).await?));
    }
    etags.reverse();
    complete(c, bucket, key, &id, &etags).await
}

async fn get(c: &Client, bucket: &str, key: &str, range: Option<&str>) -> Result<Vec<u8>, String> {
    let mut req = c.get_object().bucket(bucket).key(key);
    if let Some(r) = range {
        req = req.range(r);
    }
    let out = req.send().await.map_err(|e| format!("{:?}", e.into_service_error()))?;
    Ok(out.body.collect().await.map_err(|e| format!("{e:?}"))?.into_bytes().to_vec())
}

async fn stored_metadata(env: &TestEnv, key: &str) -> std::collections::HashMap<String, String> {
    let h = env.direct.head_object().bucket(&env.bucket).key(key).send().await.expect("direct head");
    h.metadata().cloned().unwrap_or_default()
}

async fn multipart_objects_read_back_exactly_with_plaintext_sizes_everywhere(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let parts = vec![data(8 * MIB, 1), data(8 * MIB, 2), data(MIB + 3, 3)];
    let whole = parts.concat();
    let total = whole.len();
    upload(&c, &env.bucket, "mp/8mib", &parts).await.expect("upload");

    assert_eq!(get(&c, &env.bucket, "mp/8mib", None).await.unwrap(), whole);
    let head = c.head_object().bucket(&env.bucket).key("mp/8mib").send().await.unwrap();
    assert_eq!(head.content_length(), Some(total as i64));
    assert_eq!(head.content_type(), Some("text/csv"), "content type survives the seal");
    assert_eq!(head.metadata().and_then(|m| m.get("color")).map(String::as_str), Some("blue"));
    assert!(head.metadata().is_none_or(|m| m.keys().all(|k| !k.starts_with("s3crypt"))), "envelope hidden");
    let listed = c.list_objects_v2().bucket(&env.bucket).prefix("mp/").send().await.unwrap();
    assert_eq!(listed.contents()[0].size(), Some(total as i64), "listing size is the plaintext size");

    // ranges across a part boundary, and suffixes
    let b = 8 * MIB;
    let r = get(&c, &env.bucket, "mp/8mib", Some(&format!("bytes={}-{}", b - 10, b + 9))).await.unwrap();
    assert_eq!(r, &whole[b - 10..b + 10]);
    assert_eq!(get(&c, &env.bucket, "mp/8mib", Some("bytes=-5")).await.unwrap(), &whole[total - 5..]);

    // by part number
    let p2 = c.get_object().bucket(&env.bucket).key("mp/8mib").part_number(2).send().await.unwrap();
    assert_eq!(p2.parts_count(), Some(3));
    assert_eq!(p2.content_range(), Some(format!("bytes {b}-{}/{total}", 2 * b - 1).as_str()));
    assert_eq!(p2.body.collect().await.unwrap().into_bytes().to_vec(), parts[1]);
    let h3 = c.head_object().bucket(&env.bucket).key("mp/8mib").part_number(3).send().await.unwrap();
    assert_eq!(h3.content_length(), Some(MIB as i64 + 3));
    assert_eq!(h3.parts_count(), Some(3));
    let e = c.get_object().bucket(&env.bucket).key("mp/8mib").part_number(4).send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(e.into_service_error().meta().code(), Some("InvalidPart"), "S3's answer for a part past the last");

    // at rest: ciphertext, sealed layout
    let meta = stored_metadata(&env, "mp/8mib").await;
    assert_eq!(meta.get("s3crypt-mp").map(String::as_str), Some("3x8388608"), "{meta:?}");
    let raw = env.direct.get_object().bucket(&env.bucket).key("mp/8mib").send().await.unwrap();
    let raw = raw.body.collect().await.unwrap().into_bytes();
    assert_eq!(raw.len() as u64, ciphertext_len(total as u64, 65_536));
    assert!(!raw.windows(64).any(|w| w == &whole[MIB..MIB + 64]), "plaintext found at rest");

    // GetObjectAttributes (SeaweedFS implements it; s3s-fs does not)
    if backend == Backend::SeaweedFs {
        let attrs = c
            .get_object_attributes()
            .bucket(&env.bucket)
            .key("mp/8mib")
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectSize)
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::Etag)
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::Checksum)
            .send()
            .await
            .expect("attributes");
        assert_eq!(attrs.object_size(), Some(total as i64));
        assert!(attrs.checksum().is_none(), "no ciphertext checksums");
    }

    // an empty last part reads as empty, not as the whole object
    let empty_last = vec![data(5 * MIB, 7), Vec::new()];
    upload(&c, &env.bucket, "mp/empty-last", &empty_last).await.expect("upload with an empty last part");
    let p2 = c.get_object().bucket(&env.bucket).key("mp/empty-last").part_number(2).send().await.unwrap();
    assert_eq!((p2.content_length(), p2.parts_count()), (Some(0), Some(2)));
    assert!(p2.body.collect().await.unwrap().into_bytes().is_empty(), "an empty part has no bytes");
    let p1 = c.get_object().bucket(&env.bucket).key("mp/empty-last").part_number(1).send().await.unwrap();
    assert_eq!(p1.body.collect().await.unwrap().into_bytes().to_vec(), empty_last[0]);

    // a single-PUT object has one part
    c.put_object().bucket(&env.bucket).key("single").body(ByteStream::from(vec![7u8; 10])).send().await.unwrap();
    let p1 = c.get_object().bucket(&env.bucket).key("single").part_number(1).send().await.unwrap();
    assert_eq!(p1.body.collect().await.unwrap().into_bytes().to_vec(), vec![7u8; 10]);
    let e = c.get_object().bucket(&env.bucket).key("single").part_number(2).send().await.unwrap_err();
    let status = e.raw_response().map(|r| r.status().as_u16());
    assert_eq!((status, e.into_service_error().meta().code()), (Some(400), Some("InvalidPart")), "as S3 answers");
}
against_both_stores!(
    multipart_objects_read_back_exactly,
    multipart_objects_read_back_exactly_with_plaintext_sizes_everywhere
);

async fn parallel_out_of_order_and_retried_parts_keep_the_last_upload_of_each(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let key = "mp/parallel";
    let id = create(&c, &env.bucket, key).await;
    let parts: Vec<Vec<u8>> = vec![data(5 * MIB, 11), data(5 * MIB, 12), data(5 * MIB, 13), data(77, 14)];
    let mut tasks = Vec::new();
    for (i, p) in parts.iter().enumerate().rev() {
        let (c, bucket, id, p) = (c.clone(), env.bucket.clone(), id.clone(), p.clone());
        tasks.push(tokio::spawn(
            async move { (i as i32 + 1, upload_part(&c, &bucket, key, &id, i as i32 + 1, p).await) },
        ));
    }
    let mut etags: Vec<(i32, String)> = Vec::new();
    for t in tasks {
        let (n, e) = t.await.unwrap();
        etags.push((n, e.expect("part")));
    }
    etags.sort();
    let listed = c.list_parts().bucket(&env.bucket).key(key).upload_id(&id).send().await.unwrap();
    assert_eq!(listed.upload_id(), Some(id.as_str()), "ListParts shows the client's upload ID");
    let mut sizes: Vec<(i32, i64)> =
        listed.parts().iter().map(|p| (p.part_number().unwrap(), p.size().unwrap())).collect();
    sizes.sort(); // s3s-fs lists parts in directory order
    assert_eq!(sizes, vec![(1, 5 * MIB as i64), (2, 5 * MIB as i64), (3, 5 * MIB as i64), (4, 77)]);
    assert!(listed.parts().iter().all(|p| p.checksum_crc32().is_none()), "no ciphertext checksums");

    // part 2 again, with other bytes: the last upload wins (SeaweedFS then lists both uploads of part 2; Complete
    // picks the one the client names by ETag, or for an SSE-S3 part's MD5, the most recent: the store's times have
    // one-second resolution, so the retry comes a second later; a tie is refused, see the next test)
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let retried = data(5 * MIB, 99);
    etags[1].1 = upload_part(&c, &env.bucket, key, &id, 2, retried.clone()).await.unwrap();

    complete(&c, &env.bucket, key, &id, &etags).await.expect("complete");
    let expected = [parts[0].clone(), retried, parts[2].clone(), parts[3].clone()].concat();
    assert_eq!(get(&c, &env.bucket, key, None).await.unwrap(), expected);
    let meta = stored_metadata(&env, key).await;
    assert_eq!(meta.get("s3crypt-mp").map(String::as_str), Some("4x5242880"));
}
against_both_stores!(parallel_and_retried_parts, parallel_out_of_order_and_retried_parts_keep_the_last_upload_of_each);

#[tokio::test]
async fn an_sse_s3_part_sent_twice_at_once_completes_with_the_bytes_its_md5_names() {
    // SeaweedFS keeps both uploads of the part, in the same second; the SSE-S3 part ETag (the plaintext MD5) names
    // one through the part's sealed record, whichever was sent last.
    let env = TestEnv::start(Backend::SeaweedFs).await;
    let c = env.client();
    for (key, pick_first) in [("mp/twice-a", true), ("mp/twice-b", false)] {
        let id = create(&c, &env.bucket, key).await;
        let (first, second) = (data(1000, 41), data(1000, 42));
        let e1 = upload_part(&c, &env.bucket, key, &id, 1, first.clone()).await.unwrap();
        let e2 = upload_part(&c, &env.bucket, key, &id, 1, second.clone()).await.unwrap();
        let (etag, bytes) = if pick_first { (e1, first) } else { (e2, second) };
        complete(&c, &env.bucket, key, &id, &[(1, etag)]).await.expect("complete");
        assert_eq!(get(&c, &env.bucket, key, None).await.unwrap(), bytes, "{key}");
    }
    env.shutdown().await;
}

async fn listed_uploads_carry_their_client_ids_which_continue_list_and_abort_them(backend: Backend) {
    // (an ordinary async fn: only one store lists uploads)
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let keys = ["mp/listed", "mp/listed", "mp/ü listed"];
    let mut ids = Vec::new();
    for key in keys {
        ids.push(create(&c, &env.bucket, key).await);
    }
    let listed = c.list_multipart_uploads().bucket(&env.bucket).send().await.unwrap();
    let mut shown: Vec<(String, String)> =
        listed.uploads().iter().map(|u| (u.key().unwrap().to_owned(), u.upload_id().unwrap().to_owned())).collect();
    let mut made: Vec<(String, String)> = keys.iter().map(|k| k.to_string()).zip(ids.clone()).collect();
    shown.sort();
    made.sort();
    assert_eq!(shown, made, "ListMultipartUploads shows the IDs Create gave");
    // Pages continue from a client's ID (where the store pages at all).
    let first = c.list_multipart_uploads().bucket(&env.bucket).max_uploads(1).send().await.unwrap();
    if let (Some(true), Some(k), Some(u)) =
        (first.is_truncated(), first.next_key_marker(), first.next_upload_id_marker())
    {
        let next = c.list_multipart_uploads().bucket(&env.bucket).key_marker(k).upload_id_marker(u).send().await;
        assert_eq!(first.uploads().len() + next.unwrap().uploads().len(), 3, "pages cover every upload once");
    }
    // A listed ID continues the upload, lists its parts and aborts it.
    let (key, id) = &shown[0];
    let part = data(100, 3);
    upload_part(&c, &env.bucket, key, id, 1, part).await.expect("a part under the listed ID");
    let parts = c.list_parts().bucket(&env.bucket).key(key).upload_id(id).send().await.unwrap();
    assert_eq!(parts.parts().len(), 1);
    for (key, id) in &shown {
        c.abort_multipart_upload().bucket(&env.bucket).key(key).upload_id(id).send().await.expect("abort");
    }
    let after = c.list_multipart_uploads().bucket(&env.bucket).send().await.unwrap();
    assert!(after.uploads().is_empty(), "{:?}", after.uploads());
    // The records live in the system bucket, which clients neither see nor reach.
    let buckets = c.list_buckets().send().await.unwrap();
    assert!(buckets.buckets().iter().all(|b| b.name() != Some("s3crypt-system")));
    let refused = c.list_objects_v2().bucket("s3crypt-system").send().await.unwrap_err();
    assert_eq!(refused.into_service_error().meta().code(), Some("AccessDenied"));
    env.shutdown().await;
}
#[tokio::test]
async fn listed_uploads_carry_their_client_ids() {
    // The embedded store (s3s-fs) has no ListMultipartUploads.
    listed_uploads_carry_their_client_ids_which_continue_list_and_abort_them(Backend::SeaweedFs).await;
}

async fn multipart_checksums_are_composite_or_full_object_as_declared_and_checked_at_complete(backend: Backend) {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType};
    use base64::Engine;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let parts = [data(5 * MIB, 61), data(1000, 62)];
    for (key, alg, kind) in [
        ("ck/sha256", ChecksumAlgorithm::Sha256, ChecksumType::Composite),
        ("ck/crc64", ChecksumAlgorithm::Crc64Nvme, ChecksumType::FullObject),
        ("ck/crc32c", ChecksumAlgorithm::Crc32C, ChecksumType::FullObject),
    ] {
        let created = c
            .create_multipart_upload()
            .bucket(&env.bucket)
            .key(key)
            .checksum_algorithm(alg.clone())
            .checksum_type(kind.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(created.checksum_type(), Some(&kind), "{key}");
        let id = created.upload_id().unwrap().to_owned();
        let mut done = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let n = i as i32 + 1;
            let out = c
                .upload_part()
                .bucket(&env.bucket)
                .key(key)
                .upload_id(&id)
                .part_number(n)
                .checksum_algorithm(alg.clone())
                .body(ByteStream::from(p.clone()))
                .send()
                .await
                .unwrap();
            let part = CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap());
            done.push(
                match alg {
                    ChecksumAlgorithm::Sha256 => part.checksum_sha256(out.checksum_sha256().unwrap()),
                    ChecksumAlgorithm::Crc64Nvme => part.checksum_crc64_nvme(out.checksum_crc64_nvme().unwrap()),
                    _ => part.checksum_crc32_c(out.checksum_crc32_c().unwrap()),
                }
                .build(),
            );
        }
        let whole = parts.concat();
        let expected = match alg {
            ChecksumAlgorithm::Sha256 => {
                use sha2::Digest;
                let digests: Vec<u8> = parts.iter().flat_map(|p| sha2::Sha256::digest(p).to_vec()).collect();
                format!("{}-2", b64(&sha2::Sha256::digest(&digests)))
            }
            ChecksumAlgorithm::Crc64Nvme => {
                b64(&crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &whole).to_be_bytes())
            }
            _ => b64(&(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &whole) as u32).to_be_bytes()),
        };
        let upload = CompletedMultipartUpload::builder().set_parts(Some(done)).build();
        // A wrong object checksum at Complete is BadDigest (and completes nothing).
        let wrong =
            c.complete_multipart_upload().bucket(&env.bucket).key(key).upload_id(&id).multipart_upload(upload.clone());
        let wrong = match alg {
            ChecksumAlgorithm::Sha256 => wrong.checksum_sha256("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=-2"),
            ChecksumAlgorithm::Crc64Nvme => wrong.checksum_crc64_nvme("AAAAAAAAAAA="),
            _ => wrong.checksum_crc32_c("AAAAAA=="),
        };
        assert_eq!(wrong.send().await.unwrap_err().into_service_error().meta().code(), Some("BadDigest"), "{key}");
        let out = c
            .complete_multipart_upload()
            .bucket(&env.bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(upload)
            .send()
            .await
            .unwrap();
        let shown =
            |sha: Option<&str>, crc64: Option<&str>, crc32c: Option<&str>| sha.or(crc64).or(crc32c).map(str::to_owned);
        let completed = shown(out.checksum_sha256(), out.checksum_crc64_nvme(), out.checksum_crc32_c());
        assert_eq!(completed.as_deref(), Some(expected.as_str()), "{key}: Complete");
        assert_eq!(out.checksum_type(), Some(&kind), "{key}");
        let head =
            c.head_object().bucket(&env.bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
        let headed = shown(head.checksum_sha256(), head.checksum_crc64_nvme(), head.checksum_crc32_c());
        assert_eq!(headed.as_deref(), Some(expected.as_str()), "{key}: HEAD");
        assert_eq!(head.checksum_type(), Some(&kind), "{key}");
        assert_eq!(get(&c, &env.bucket, key, None).await.unwrap(), whole);
    }
    env.shutdown().await;
}
against_both_stores!(
    multipart_checksums,
    multipart_checksums_are_composite_or_full_object_as_declared_and_checked_at_complete
);

async fn misaligned_parts_are_re_encrypted_into_an_aligned_layout_with_exact_sizes(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    type Parts = Vec<(i32, Vec<u8>)>;
    let cases: Vec<(&str, Parts, &str)> = vec![
        // 5 MiB + 1, more than one repacked part
        (
            "mp/plus-one",
            (1..=4).map(|n| (n, data(5 * MIB + 1, n as u64))).chain([(5, data(10, 5))]).collect(),
            "2x16777216",
        ),
        // part numbers with a gap
        ("mp/gap", vec![(1, data(5 * MIB, 7)), (3, data(100, 8))], "1x16777216"),
    ];
    for (key, parts, sealed) in cases {
        if key == "mp/gap" && backend == Backend::Embedded {
            continue; // s3s-fs completes only part numbers 1, 2, 3 ... ("invalid part order")
        }
        let id = create(&c, &env.bucket, key).await;
        let mut etags = Vec::new();
        for (n, p) in &parts {
            etags.push((*n, upload_part(&c, &env.bucket, key, &id, *n, p.clone()).await.unwrap()));
        }
        complete(&c, &env.bucket, key, &id, &etags).await.expect("complete");
        let whole: Vec<u8> = parts.iter().flat_map(|(_, p)| p.clone()).collect();
        assert_eq!(get(&c, &env.bucket, key, None).await.unwrap(), whole, "{key}");
        let head = c.head_object().bucket(&env.bucket).key(key).send().await.unwrap();
        assert_eq!(head.content_length(), Some(whole.len() as i64), "{key}");
        assert_eq!(head.content_type(), Some("text/csv"), "{key}");
        let listed = c.list_objects_v2().bucket(&env.bucket).prefix(key).send().await.unwrap();
        assert_eq!(listed.contents()[0].size(), Some(whole.len() as i64), "{key}: listing size");
        assert_eq!(stored_metadata(&env, key).await.get("s3crypt-mp").map(String::as_str), Some(sealed), "{key}");
        let mid = whole.len() / 2;
        let r = get(&c, &env.bucket, key, Some(&format!("bytes={}-{}", mid - 3, mid + 3))).await.unwrap();
        assert_eq!(r, &whole[mid - 3..mid + 4]);
    }
    // 5,000,000-byte parts are below S3's 5 MiB minimum for every part but the last: the store refuses them at
    // Complete, as it does without the gateway, and the upload can still be aborted
    let id = create(&c, &env.bucket, "mp/decimal").await;
    let e1 = upload_part(&c, &env.bucket, "mp/decimal", &id, 1, data(5_000_000, 1)).await.unwrap();
    let e2 = upload_part(&c, &env.bucket, "mp/decimal", &id, 2, data(5_000_000, 2)).await.unwrap();
    let err = complete(&c, &env.bucket, "mp/decimal", &id, &[(1, e1), (2, e2)]).await.unwrap_err();
    assert!(err.contains("EntityTooSmall"), "{err}");
    let aborted = c.abort_multipart_upload().bucket(&env.bucket).key("mp/decimal").upload_id(&id).send().await;
    if backend == Backend::SeaweedFs {
        aborted.expect("abort"); // s3s-fs forgets the upload when its Complete fails
    }
    // ... while a 5,000,000-byte last part is an ordinary aligned upload
    let parts = vec![data(5 * MIB, 3), data(5_000_000, 4)];
    upload(&c, &env.bucket, "mp/decimal-last", &parts).await.expect("upload");
    assert_eq!(get(&c, &env.bucket, "mp/decimal-last", None).await.unwrap(), parts.concat());

    // an abandoned upload aborts, and its ID is then unknown
    let id = create(&c, &env.bucket, "mp/aborted").await;
    upload_part(&c, &env.bucket, "mp/aborted", &id, 1, data(10, 1)).await.unwrap();
    c.abort_multipart_upload().bucket(&env.bucket).key("mp/aborted").upload_id(&id).send().await.expect("abort");
    let err = upload_part(&c, &env.bucket, "mp/aborted", &id, 2, vec![1]).await.unwrap_err();
    // S3 and SeaweedFS say NoSuchUpload; s3s-fs says AccessDenied for an upload it no longer knows.
    assert!(err.contains("NoSuchUpload") || err.contains("AccessDenied"), "{err}");
}
against_both_stores!(
    misaligned_parts_are_re_encrypted,
    misaligned_parts_are_re_encrypted_into_an_aligned_layout_with_exact_sizes
);

async fn forged_foreign_and_raw_upload_ids_are_no_such_upload(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let id = create(&c, &env.bucket, "mp/a").await;
    // the ID of another key's upload
    let err = upload_part(&c, &env.bucket, "mp/b", &id, 1, vec![1; 10]).await.unwrap_err();
    assert!(err.contains("NoSuchUpload"), "{err}");
    // the upstream ID alone (as ListMultipartUploads shows it) cannot carry parts
    let raw = id.splitn(5, '.').nth(4).expect("upstream id").to_owned();
    let err = upload_part(&c, &env.bucket, "mp/a", &raw, 1, vec![1; 10]).await.unwrap_err();
    assert!(err.contains("NoSuchUpload"), "{err}");
    // a flipped bit in the token
    let mut forged = id.clone().into_bytes();
    let token_at = id.match_indices('.').nth(2).unwrap().0 + 5;
    forged[token_at] = if forged[token_at] == b'A' { b'B' } else { b'A' };
    let err = upload_part(&c, &env.bucket, "mp/a", &String::from_utf8(forged).unwrap(), 1, vec![1]).await.unwrap_err();
    assert!(err.contains("NoSuchUpload"), "{err}");
    // ...but the raw ID still aborts
    c.abort_multipart_upload().bucket(&env.bucket).key("mp/a").upload_id(&raw).send().await.expect("abort raw");
}
against_both_stores!(forged_upload_ids, forged_foreign_and_raw_upload_ids_are_no_such_upload);

async fn unsealed_or_truncated_multipart_objects_are_refused(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let parts = vec![data(5 * MIB, 1), data(5 * MIB, 2), data(100, 3)];
    upload(&c, &env.bucket, "mp/t", &parts).await.expect("upload");
    let stored = env.direct.get_object().bucket(&env.bucket).key("mp/t").send().await.unwrap();
    let meta = stored.metadata().cloned().unwrap_or_default();
    let raw = stored.body.collect().await.unwrap().into_bytes().to_vec();

    // the last part dropped at the store, metadata intact
    let part_cipher = ciphertext_len(5 * MIB as u64, 65_536) as usize;
    let truncated = raw[..2 * part_cipher].to_vec();
    let mut put = env.direct.put_object().bucket(&env.bucket).key("mp/t").body(ByteStream::from(truncated));
    for (k, v) in &meta {
        put = put.metadata(k, v);
    }
    put.send().await.unwrap();
    let e = c.head_object().bucket(&env.bucket).key("mp/t").send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(502));
    let err = get(&c, &env.bucket, "mp/t", None).await.unwrap_err();
    assert!(err.contains("ObjectIntegrityError"), "{err}");

    // the seal removed (as after an interrupted Complete)
    let mut put = env.direct.put_object().bucket(&env.bucket).key("mp/t").body(ByteStream::from(raw));
    for (k, v) in &meta {
        put = put.metadata(k, if k == "s3crypt-mp" { "open" } else { v });
    }
    put.send().await.unwrap();
    let err = get(&c, &env.bucket, "mp/t", None).await.unwrap_err();
    assert!(err.contains("InvalidObjectState"), "{err}");
}
against_both_stores!(unsealed_or_truncated_objects, unsealed_or_truncated_multipart_objects_are_refused);

async fn slow_completes_answer_200_with_spaces_and_objects_over_the_copy_limit_seal_part_by_part(backend: Backend) {
    let env = TestEnv::builder(backend).slow_response_keepalive("20ms").max_copy_size(5 * MIB as u64).start().await;
    let c = env.client();
    let parts = vec![data(5 * MIB, 5), data(5 * MIB, 6), data(3, 7)];
    let etag = upload(&c, &env.bucket, "mp/slow", &parts).await.expect("complete through the keepalive body");
    let head = c.head_object().bucket(&env.bucket).key("mp/slow").send().await.unwrap();
    assert_eq!(head.e_tag(), Some(etag.as_str()), "Complete returns the sealed object's ETag");
    assert_eq!(get(&c, &env.bucket, "mp/slow", None).await.unwrap(), parts.concat());
    let meta = stored_metadata(&env, "mp/slow").await;
    assert_eq!(meta.get("s3crypt-mp").map(String::as_str), Some("3x5242880"));
    assert_eq!(head.content_type(), Some("text/csv"));
}
against_both_stores!(
    slow_completes_and_part_copies,
    slow_completes_answer_200_with_spaces_and_objects_over_the_copy_limit_seal_part_by_part
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_sharing_only_the_store_and_keyring_serve_one_upload() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    s3crypt::crypto::keys::keygen(&keyring, Some("shared")).unwrap();
    let a = TestEnv::builder(Backend::SeaweedFs).keyring(&keyring).start().await;
    let b = TestEnv::builder(Backend::SeaweedFs).keyring(&keyring).bucket(&a.bucket).start().await;
    let (ca, cb) = (a.client(), b.client());
    let key = "mp/two-replicas";
    let id = create(&ca, &a.bucket, key).await;
    let parts = [data(5 * MIB, 21), data(5 * MIB, 22), data(5 * MIB, 23), data(999, 24)];
    let mut etags = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let client = if i % 2 == 0 { &cb } else { &ca };
        etags.push((i as i32 + 1, upload_part(client, &a.bucket, key, &id, i as i32 + 1, p.clone()).await.unwrap()));
    }
    complete(&cb, &a.bucket, key, &id, &etags).await.expect("complete on the other replica");
    assert_eq!(get(&ca, &a.bucket, key, None).await.unwrap(), parts.concat());
    assert_eq!(
        get(&cb, &a.bucket, key, Some("bytes=5242870-5242889")).await.unwrap(),
        parts.concat()[5242870..5242890]
    );
}

/// Which upstream request the fault forwarder answers itself with `200 OK` and an `<Error>` body (as S3 does when
/// a Complete or a copy fails after its status went out), instead of forwarding it.
#[derive(Clone, Copy)]
enum Fault {
    Complete,
    SealCopy,
}

/// A forwarder in front of SeaweedFS that answers `fault` itself. No real store produces this answer on demand.
async fn fault_forwarder(fault: Fault) -> crate::common::forward::Forwarder {
    let (store, _, _) = crate::common::seaweedfs();
    let intercept: crate::common::forward::Intercept = std::sync::Arc::new(move |req| {
        let q = req.uri().query().unwrap_or("");
        let hit = match fault {
            Fault::Complete => req.method() == http::Method::POST && q.contains("uploadId="),
            Fault::SealCopy => req.method() == http::Method::PUT && req.headers().contains_key("x-amz-copy-source"),
        };
        hit.then_some((
            200,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n<Error><Code>InternalError</Code>\
             <Message>We encountered an internal error. Please try again.</Message></Error>",
        ))
    });
    crate::common::forward::Forwarder::start(&store, Some(intercept)).await
}

async fn env_behind(fault: Fault, keepalive: &str) -> TestEnv {
    let (store, ak, sk) = crate::common::seaweedfs();
    let addr = fault_forwarder(fault).await.addr;
    let upstream =
        format!("[upstream]\nendpoint = \"http://{addr}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n");
    let direct = crate::common::s3_client(&store, &ak, &sk, None, None);
    TestEnv::builder(Backend::Custom).custom_upstream(upstream, direct).slow_response_keepalive(keepalive).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_answered_200_with_an_error_document_is_reported_as_the_error() {
    let env = env_behind(Fault::Complete, "2s").await;
    let c = env.client();
    let err = upload(&c, &env.bucket, "mp/fails", &[data(5 * MIB, 1), data(10, 2)]).await.unwrap_err();
    assert!(err.contains("InternalError"), "{err}");
    assert!(env.stored_keys().await.is_empty(), "nothing completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_that_fails_is_reported_and_the_unsealed_object_is_never_served() {
    for keepalive in ["2s", "10ms"] {
        let env = env_behind(Fault::SealCopy, keepalive).await;
        let c = env.client();
        let err = upload(&c, &env.bucket, "mp/unsealed", &[data(5 * MIB, 1), data(10, 2)]).await.unwrap_err();
        assert!(err.contains("InternalError"), "{keepalive}: {err}");
        let err = get(&c, &env.bucket, "mp/unsealed", None).await.unwrap_err();
        assert!(err.contains("InvalidObjectState"), "{keepalive}: {err}");
    }
}
