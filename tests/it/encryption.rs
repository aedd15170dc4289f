//! Envelope encryption end to end: what reaches the store is ciphertext with an envelope; reads are byte-exact,
//! ranges map to the covering segments; anything altered at the store fails closed; keys rotate.

use aws_sdk_s3::primitives::ByteStream;
use s3crypt::crypto::format::{SEGMENT_OVERHEAD, ciphertext_len};

use crate::against_both_stores;
use crate::common::{Backend, TestEnv, data};

const S: usize = 65_536;

async fn get_bytes(c: &aws_sdk_s3::Client, bucket: &str, key: &str, range: Option<&str>) -> Result<Vec<u8>, String> {
    let mut req = c.get_object().bucket(bucket).key(key);
    if let Some(r) = range {
        req = req.range(r);
    }
    let out = req.send().await.map_err(|e| format!("{e:?}"))?;
    let bytes = out.body.collect().await.map_err(|e| format!("body: {e:?}"))?;
    Ok(bytes.into_bytes().to_vec())
}

async fn raw_object(env: &TestEnv, key: &str) -> (Vec<u8>, std::collections::HashMap<String, String>) {
    let o = env.direct.get_object().bucket(&env.bucket).key(key).send().await.expect("direct get");
    let meta = o.metadata().cloned().unwrap_or_default();
    (o.body.collect().await.unwrap().into_bytes().to_vec(), meta)
}

async fn stored_objects_are_ciphertext_and_read_back_byte_exact(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let sizes = [0, 1, S - 1, S, S + 1, 3 * S + 7, 1_000_003];
    for (i, len) in sizes.into_iter().enumerate() {
        let key = format!("enc/{len}");
        let body = data(len, 100 + i as u64);
        let put =
            c.put_object().bucket(&env.bucket).key(&key).body(ByteStream::from(body.clone())).send().await.unwrap();
        // The keyring is SSE-S3 to clients: AES256, no key id.
        assert_eq!(put.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
        assert_eq!(put.ssekms_key_id(), None);
        assert_eq!(get_bytes(&c, &env.bucket, &key, None).await.unwrap(), body, "{key}");
        let head = c.head_object().bucket(&env.bucket).key(&key).send().await.unwrap();
        assert_eq!(head.content_length(), Some(len as i64));
        assert!(head.metadata().is_none_or(|m| m.keys().all(|k| !k.starts_with("s3crypt"))), "envelope hidden");

        let (raw, meta) = raw_object(&env, &key).await;
        assert_eq!(raw.len() as u64, ciphertext_len(len as u64, S as u32));
        assert_eq!(meta.get("s3crypt-v").map(String::as_str), Some("1"), "{meta:?}");
        assert!(meta.contains_key("s3crypt-dek") && meta.contains_key("s3crypt-kek"));
        if len >= 32 {
            assert!(!raw.windows(32).any(|w| w == &body[..32]), "plaintext found at rest in {key}");
        }
    }
    let listed = c.list_objects_v2().bucket(&env.bucket).prefix("enc/").send().await.unwrap();
    let mut listed: Vec<(String, i64)> =
        listed.contents().iter().map(|o| (o.key().unwrap().to_owned(), o.size().unwrap())).collect();
    listed.sort();
    let mut expected: Vec<(String, i64)> = sizes.iter().map(|n| (format!("enc/{n}"), *n as i64)).collect();
    expected.sort();
    assert_eq!(listed, expected, "listings show plaintext sizes");
    let v1 = c.list_objects().bucket(&env.bucket).prefix("enc/1").send().await.unwrap();
    assert!(v1.contents().iter().all(|o| o.key() != Some("enc/1") || o.size() == Some(1)));
    env.shutdown().await;
}
against_both_stores!(ciphertext_at_rest, stored_objects_are_ciphertext_and_read_back_byte_exact);

async fn every_kind_of_range_returns_the_right_plaintext_bytes(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let len = 3 * S + 777;
    let body = data(len, 7);
    c.put_object().bucket(&env.bucket).key("r").body(ByteStream::from(body.clone())).send().await.unwrap();
    let n = len as u64;
    let cases: Vec<(String, std::ops::Range<usize>)> = vec![
        ("bytes=0-0".into(), 0..1),
        ("bytes=0-9".into(), 0..10),
        (format!("bytes={}-{}", S - 1, S), S - 1..S + 1),
        (format!("bytes={}-{}", S, 2 * S - 1), S..2 * S),
        (format!("bytes={}-", 2 * S + 5), 2 * S + 5..len),
        (format!("bytes={}-{}", 100, n + 1000), 100..len),
        ("bytes=-1".into(), len - 1..len),
        (format!("bytes=-{}", S + 3), len - S - 3..len),
        (format!("bytes=-{}", n + 5), 0..len),
        (format!("bytes={}-{}", n - 1, n - 1), len - 1..len),
    ];
    for (range, want) in cases {
        let out = c
            .get_object()
            .bucket(&env.bucket)
            .key("r")
            .range(&range)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{range}: {e:?}"));
        let content_range = out.content_range().map(str::to_owned);
        let got = out.body.collect().await.unwrap().into_bytes().to_vec();
        assert_eq!(got, body[want.clone()], "{range}");
        assert_eq!(content_range, Some(format!("bytes {}-{}/{n}", want.start, want.end - 1)), "{range}");
    }
    // Start at or past the end: 416 with the plaintext size.
    let raw = env.raw();
    let url = format!("{}/{}/r", env.endpoint(), env.bucket);
    for r in [format!("bytes={n}-"), format!("bytes={}-{}", n + S as u64 * 3, n + S as u64 * 4)] {
        let req = crate::common::raw::signed(
            http::Method::GET,
            &url,
            &[("range", &r)],
            b"",
            crate::common::CLIENT_AK,
            crate::common::CLIENT_SK,
        );
        let resp = raw.send(req).await;
        assert_eq!((resp.status.as_u16(), resp.code().as_deref()), (416, Some("InvalidRange")), "{r}");
        assert_eq!(resp.headers["content-range"], format!("bytes */{n}").as_str());
    }
    // Invalid and multi-ranges are ignored: the whole object, 200.
    for r in ["bytes=5-1", "bytes=0-1,5-6", "lines=1-2"] {
        let req = crate::common::raw::signed(
            http::Method::GET,
            &url,
            &[("range", r)],
            b"",
            crate::common::CLIENT_AK,
            crate::common::CLIENT_SK,
        );
        let resp = raw.send(req).await;
        assert_eq!(resp.status.as_u16(), 200, "{r}");
        assert_eq!(resp.body.len(), len, "{r}");
    }
    // An empty object has no satisfiable range.
    c.put_object().bucket(&env.bucket).key("empty").body(ByteStream::from_static(b"")).send().await.unwrap();
    let url = format!("{}/{}/empty", env.endpoint(), env.bucket);
    let req = crate::common::raw::signed(
        http::Method::GET,
        &url,
        &[("range", "bytes=0-0")],
        b"",
        crate::common::CLIENT_AK,
        crate::common::CLIENT_SK,
    );
    assert_eq!(raw.send(req).await.status.as_u16(), 416);
    env.shutdown().await;
}
against_both_stores!(ranges, every_kind_of_range_returns_the_right_plaintext_bytes);

/// Reads through the proxy must fail: an error status, or a body that errors. Never 2xx with all bytes.
async fn assert_fails_closed(env: &TestEnv, key: &str, original: &[u8]) {
    match get_bytes(&env.client(), &env.bucket, key, None).await {
        Err(_) => {}
        Ok(got) => panic!("{key}: read succeeded ({} bytes, equal to original: {})", got.len(), got == original),
    }
}

async fn put_raw(env: &TestEnv, key: &str, body: Vec<u8>, meta: &std::collections::HashMap<String, String>) {
    env.direct
        .put_object()
        .bucket(&env.bucket)
        .key(key)
        .set_metadata(Some(meta.clone()))
        .body(ByteStream::from(body))
        .send()
        .await
        .expect("direct put");
}

async fn anything_altered_at_the_store_fails_closed(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let a = data(2 * S + 100, 1);
    let b = data(2 * S + 100, 2);
    let small = data(1000, 3);
    for (k, v) in [("a", &a), ("b", &b), ("small", &small)] {
        c.put_object().bucket(&env.bucket).key(k).body(ByteStream::from(v.clone())).send().await.unwrap();
    }
    let (ra, ma) = raw_object(&env, "a").await;
    let (rb, mb) = raw_object(&env, "b").await;
    let (rs, ms) = raw_object(&env, "small").await;
    let full = S + SEGMENT_OVERHEAD as usize;

    // A flipped byte, in the first and in a later segment (the latter after headers went out: aborted body).
    let mut f = rs.clone();
    f[40] ^= 1;
    put_raw(&env, "small", f, &ms).await;
    let r = c.get_object().bucket(&env.bucket).key("small").send().await;
    let code = r.err().and_then(|e| e.raw_response().map(|r| r.status().as_u16()));
    assert_eq!(code, Some(502), "a single-segment object is refused before any byte");
    let mut f = ra.clone();
    f[full + 500] ^= 0x10;
    put_raw(&env, "a", f, &ma).await;
    assert_fails_closed(&env, "a", &a).await;

    // Truncated at a segment boundary and off one; extended.
    put_raw(&env, "a", ra[..full].to_vec(), &ma).await;
    assert_fails_closed(&env, "a", &a).await;
    put_raw(&env, "a", ra[..ra.len() - 7].to_vec(), &ma).await;
    assert_fails_closed(&env, "a", &a).await;
    let mut ext = ra.clone();
    ext.extend_from_slice(&rs[..100]);
    put_raw(&env, "a", ext, &ma).await;
    assert_fails_closed(&env, "a", &a).await;

    // Swapped bodies; swapped bodies and metadata; a copy under another name.
    put_raw(&env, "a", rb.clone(), &ma).await;
    assert_fails_closed(&env, "a", &a).await;
    put_raw(&env, "a", rb.clone(), &mb).await;
    assert_fails_closed(&env, "a", &b).await;
    put_raw(&env, "moved", ra.clone(), &ma).await;
    assert_fails_closed(&env, "moved", &a).await;
    env.direct
        .copy_object()
        .bucket(&env.bucket)
        .key("copied")
        .copy_source(format!("{}/b", env.bucket))
        .send()
        .await
        .unwrap();
    assert_fails_closed(&env, "copied", &b).await;

    // Forged or damaged envelopes.
    let mut m = ma.clone();
    m.insert("s3crypt-seg".into(), "4096".into());
    put_raw(&env, "a", ra.clone(), &m).await;
    assert_fails_closed(&env, "a", &a).await;
    let mut m = ma.clone();
    m.remove("s3crypt-dek");
    put_raw(&env, "a", ra.clone(), &m).await;
    assert_fails_closed(&env, "a", &a).await;

    // And the original, put back, reads again: nothing above was a false alarm.
    put_raw(&env, "a", ra.clone(), &ma).await;
    assert_eq!(get_bytes(&c, &env.bucket, "a", None).await.unwrap(), a);
    // A range read of an intact segment of a damaged object still returns only authentic bytes.
    let mut f = ra.clone();
    f[2 * full + 40] ^= 1;
    put_raw(&env, "a", f, &ma).await;
    assert_eq!(get_bytes(&c, &env.bucket, "a", Some("bytes=0-99")).await.unwrap(), a[..100].to_vec());
    assert!(get_bytes(&c, &env.bucket, "a", Some(&format!("bytes={}-", 2 * S))).await.is_err());
    env.shutdown().await;
}
against_both_stores!(tampering, anything_altered_at_the_store_fails_closed);

#[tokio::test]
async fn plaintext_objects_are_refused_by_default_and_served_under_the_passthrough_policy() {
    for passthrough in [false, true] {
        let mut b = TestEnv::builder(Backend::Embedded);
        if passthrough {
            b = b.legacy_passthrough();
        }
        let env = b.start().await;
        let body = data(200_000, 5);
        env.direct
            .put_object()
            .bucket(&env.bucket)
            .key("legacy")
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        let c = env.client();
        let got = get_bytes(&c, &env.bucket, "legacy", None).await;
        let ranged = get_bytes(&c, &env.bucket, "legacy", Some("bytes=70000-70009")).await;
        let head = c.head_object().bucket(&env.bucket).key("legacy").send().await;
        if passthrough {
            assert_eq!(got.unwrap(), body);
            assert_eq!(ranged.unwrap(), body[70_000..70_010].to_vec(), "the client's own range, not the segment one");
            assert_eq!(head.unwrap().content_length(), Some(200_000));
        } else {
            let e = c.get_object().bucket(&env.bucket).key("legacy").send().await.unwrap_err();
            assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&e), Some("InvalidObjectState"));
            assert!(got.is_err() && ranged.is_err() && head.is_err());
        }
        env.shutdown().await;
    }
}

#[tokio::test]
async fn reserved_metadata_oversized_metadata_and_dual_layer_sse_are_refused() {
    let env = TestEnv::start(Backend::Embedded).await;
    let c = env.client();
    fn code<E>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> u16 {
        e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
    }
    let e = c
        .put_object()
        .bucket(&env.bucket)
        .key("k")
        .metadata("s3crypt-dek", "forged")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), aws_sdk_s3::error::ProvideErrorMetadata::code(&e)), (400, Some("InvalidArgument")));
    let e = c
        .put_object()
        .bucket(&env.bucket)
        .key("k")
        .metadata("big", "x".repeat(1900))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&e), Some("MetadataTooLarge"));
    c.put_object()
        .bucket(&env.bucket)
        .key("k")
        .metadata("fits", "x".repeat(1500))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let e = c
        .put_object()
        .bucket(&env.bucket)
        .key("k2")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKmsDsse)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), 501, "dual-layer SSE-KMS is refused");
    assert_eq!(env.stored_keys().await, vec!["k".to_owned()]);
    env.shutdown().await;
}

#[tokio::test]
async fn conditional_reads_use_the_stored_etag() {
    // SeaweedFS: s3s-fs 0.14 ignores If-None-Match on GET (research/testbed.md).
    let env = TestEnv::start(Backend::SeaweedFs).await;
    let c = env.client();
    let put = c.put_object().bucket(&env.bucket).key("e").body(ByteStream::from_static(b"etag")).send().await.unwrap();
    let etag = put.e_tag().unwrap().to_owned();
    let head = c.head_object().bucket(&env.bucket).key("e").send().await.unwrap();
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    let got = c.get_object().bucket(&env.bucket).key("e").if_match(&etag).send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"etag");
    let e = c.get_object().bucket(&env.bucket).key("e").if_none_match(&etag).send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(304));
    let e = c.get_object().bucket(&env.bucket).key("e").if_match("\"0000\"").send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    env.shutdown().await;
}

#[tokio::test]
async fn objects_written_under_an_old_key_still_read_after_rotation_and_not_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    let old = s3crypt::crypto::keys::keygen(&keyring, Some("old")).unwrap();
    let bucket = crate::common::unique_bucket("rot");
    let env = TestEnv::builder(Backend::SeaweedFs).bucket(&bucket).keyring(&keyring).start().await;
    let c = env.client();
    c.put_object().bucket(&bucket).key("before").body(ByteStream::from_static(b"old key")).send().await.unwrap();
    env.shutdown().await;

    let new = s3crypt::crypto::keys::keygen(&keyring, Some("new")).unwrap();
    let env = TestEnv::builder(Backend::SeaweedFs).bucket(&bucket).keyring(&keyring).start().await;
    let c = env.client();
    assert_eq!(get_bytes(&c, &bucket, "before", None).await.unwrap(), b"old key");
    let put =
        c.put_object().bucket(&bucket).key("after").body(ByteStream::from_static(b"new key")).send().await.unwrap();
    assert_eq!(put.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
    let (_, meta) = raw_object(&env, "after").await;
    assert_eq!(meta.get("s3crypt-kek").map(String::as_str), Some(format!("keyring:{new}").as_str()));
    let (_, meta) = raw_object(&env, "before").await;
    assert_eq!(meta.get("s3crypt-kek").map(String::as_str), Some(format!("keyring:{old}").as_str()));
    env.shutdown().await;

    // A keyring without the old key cannot read what it wrapped: a clear error, not garbage.
    let other = dir.path().join("other.toml");
    s3crypt::crypto::keys::keygen(&other, Some("unrelated")).unwrap();
    let env = TestEnv::builder(Backend::SeaweedFs).bucket(&bucket).keyring(&other).start().await;
    let e = env.client().get_object().bucket(&bucket).key("before").send().await.unwrap_err();
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&e), Some("KMS.NotFoundException"));
    env.shutdown().await;
}

#[tokio::test]
async fn an_object_read_straight_from_the_store_decrypts_offline_with_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt"))
        .args(["keygen", "--keyring"])
        .arg(&keyring)
        .args(["--id", "dr-key"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = TestEnv::builder(Backend::SeaweedFs).keyring(&keyring).start().await;
    let body = data(3 * S + 123, 77);
    let key = "dr/object with spaces.bin";
    env.client().put_object().bucket(&env.bucket).key(key).body(ByteStream::from(body.clone())).send().await.unwrap();
    let (raw, meta) = raw_object(&env, key).await;
    let bucket = env.bucket.clone();
    env.shutdown().await;

    // What an operator has: the ciphertext and `aws s3api head-object` output, from the store directly.
    let meta_json = serde_json::json!({ "ContentLength": raw.len(), "Metadata": meta });
    std::fs::write(dir.path().join("meta.json"), meta_json.to_string()).unwrap();
    std::fs::write(dir.path().join("ct.bin"), &raw).unwrap();
    let run = |bucket: &str, k: &str, input: &str, output: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt"))
            .arg("decrypt")
            .arg("--keyring")
            .arg(&keyring)
            .arg("--metadata")
            .arg(dir.path().join("meta.json"))
            .args(["--bucket", bucket, "--key", k, "--in"])
            .arg(dir.path().join(input))
            .arg("--out")
            .arg(dir.path().join(output))
            .output()
            .unwrap()
    };
    let ok = run(&bucket, key, "ct.bin", "plain.bin");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(std::fs::read(dir.path().join("plain.bin")).unwrap(), body);

    // Another name, or a damaged ciphertext: refused, and no output file left behind.
    let wrong = run(&bucket, "dr/other", "ct.bin", "wrong.bin");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("does not unwrap"));
    let mut damaged = raw.clone();
    damaged[2 * (S + 32) + 77] ^= 1;
    std::fs::write(dir.path().join("bad.bin"), &damaged).unwrap();
    let bad = run(&bucket, key, "bad.bin", "out2.bin");
    assert!(!bad.status.success());
    assert!(!dir.path().join("out2.bin").exists() && !dir.path().join("out2.partial").exists());
}

/// The restore drill of docs/RUNBOOK-KEYRING.md: the keyring's backup (here as a platform hands a Secret back,
/// group-readable) is installed as a private file, its fingerprints match those recorded at backup time, and it
/// decrypts an object read straight from the store with `s3crypt decrypt`, the original keyring gone.
#[tokio::test]
async fn a_keyring_restored_from_backup_lists_the_same_fingerprints_and_decrypts_offline() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let path = |name: &str| dir.path().join(name).into_os_string();
    let keyring = path("keyring.toml");
    cli(&["keys".as_ref(), "add".as_ref(), "--keyring".as_ref(), &keyring, "--id".as_ref(), "dr-a".as_ref()]);
    cli(&["keys".as_ref(), "add".as_ref(), "--keyring".as_ref(), &keyring, "--id".as_ref(), "dr-b".as_ref()]);
    cli(&["keys".as_ref(), "promote".as_ref(), "--keyring".as_ref(), &keyring, "--id".as_ref(), "dr-b".as_ref()]);
    let recorded = cli(&["keys".as_ref(), "list".as_ref(), "--keyring".as_ref(), &keyring]);
    assert!(recorded.contains("dr-a") && recorded.contains("dr-b"), "{recorded}");
    let secret_text = std::fs::read_to_string(&keyring).unwrap();
    for line in recorded.lines() {
        let fingerprint = line.split_whitespace().nth(1).unwrap();
        assert!(!secret_text.contains(fingerprint), "a fingerprint is not part of the key's text");
    }

    // Escrow: a copy of the file, kept elsewhere (as it comes back from a Secret or a vault: mode 644).
    let backup = path("backup.toml");
    std::fs::write(&backup, &secret_text).unwrap();
    std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o644)).unwrap();

    let env = TestEnv::builder(Backend::SeaweedFs).keyring(std::path::Path::new(&keyring)).start().await;
    let body = data(2 * S + 5, 91);
    env.client()
        .put_object()
        .bucket(&env.bucket)
        .key("dr/restore")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let (raw, meta) = raw_object(&env, "dr/restore").await;
    let bucket = env.bucket.clone();
    env.shutdown().await;
    std::fs::remove_file(&keyring).unwrap();

    // Restore: the backup installed private, the fingerprints compared, then the object decrypted offline.
    let restored = path("restored/keyring.toml");
    cli(&["install-keyring".as_ref(), "--from".as_ref(), &backup, "--to".as_ref(), &restored]);
    assert_eq!(std::fs::metadata(&restored).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(cli(&["keys".as_ref(), "list".as_ref(), "--keyring".as_ref(), &restored]), recorded);
    std::fs::write(dir.path().join("meta.json"), serde_json::json!({ "Metadata": meta }).to_string()).unwrap();
    std::fs::write(dir.path().join("ct.bin"), &raw).unwrap();
    cli(&[
        "decrypt".as_ref(),
        "--keyring".as_ref(),
        &restored,
        "--metadata".as_ref(),
        &path("meta.json"),
        "--bucket".as_ref(),
        bucket.as_ref(),
        "--key".as_ref(),
        "dr/restore".as_ref(),
        "--in".as_ref(),
        &path("ct.bin"),
        "--out".as_ref(),
        &path("plain.bin"),
    ]);
    assert!(std::fs::read(dir.path().join("plain.bin")).unwrap() == body);
}
