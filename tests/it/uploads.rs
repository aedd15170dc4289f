//! Every upload shape real clients send reaches the store decoded, encrypted and verified: the Rust SDK with
//! each checksum algorithm over https (unsigned aws-chunked trailers) and http (signed chunks and trailers), and
//! hand-built signed chunks with every kind of damage, which leaves nothing at the store.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;

use crate::against_both_stores;
use crate::common::raw::{Spoil, signed_chunked_put};
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, TestEnv, data, s3_client};

async fn sdk_uploads_with_every_checksum_over_https_and_http(backend: Backend) {
    let env = TestEnv::builder(backend).plain_http(&["allow"]).start().await;
    let dir = tempfile::tempdir().unwrap();
    let https = env.client();
    let http = s3_client(&format!("http://{}", env.http_addr("allow")), CLIENT_AK, CLIENT_SK, None, None);
    let algorithms = [
        None,
        Some(ChecksumAlgorithm::Crc32),
        Some(ChecksumAlgorithm::Crc32C),
        Some(ChecksumAlgorithm::Crc64Nvme),
        Some(ChecksumAlgorithm::Sha1),
        Some(ChecksumAlgorithm::Sha256),
    ];
    for (scheme, client) in [("https", &https), ("http", &http)] {
        for (i, len) in [0usize, 1, 65_536, 7 * 1024 * 1024].into_iter().enumerate() {
            let body = data(len, i as u64 + 40);
            let path = dir.path().join(format!("{scheme}-{len}"));
            std::fs::write(&path, &body).unwrap();
            for alg in &algorithms {
                let key = format!("{scheme}/{len}/{}", alg.as_ref().map_or("default", |a| a.as_str()));
                // A streaming body: the SDK sends it aws-chunked (unsigned trailer over https, signed over http).
                let mut put =
                    client.put_object().bucket(&env.bucket).key(&key).body(ByteStream::from_path(&path).await.unwrap());
                if let Some(a) = alg {
                    put = put.checksum_algorithm(a.clone());
                }
                let out = put.send().await.unwrap_or_else(|e| panic!("{key}: {e:?}"));
                // The proxy echoes the plaintext checksum it verified, in the client's algorithm.
                let echoed = match alg {
                    Some(ChecksumAlgorithm::Crc32C) => out.checksum_crc32_c(),
                    Some(ChecksumAlgorithm::Crc64Nvme) => out.checksum_crc64_nvme(),
                    Some(ChecksumAlgorithm::Sha1) => out.checksum_sha1(),
                    Some(ChecksumAlgorithm::Sha256) => out.checksum_sha256(),
                    _ => out.checksum_crc32(),
                };
                assert!(echoed.is_some(), "{key}: no checksum echoed");
                let got = client.get_object().bucket(&env.bucket).key(&key).send().await.unwrap();
                assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body, "{key}");
            }
        }
    }
    env.shutdown().await;
}
against_both_stores!(sdk_checksums, sdk_uploads_with_every_checksum_over_https_and_http);

async fn signed_chunks_verify_and_every_damage_is_refused_with_nothing_stored(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let raw = env.raw();
    let body = data(3 * 65_536 + 100, 9);
    let url = |k: &str| format!("{}/{}/{k}", env.endpoint(), env.bucket);
    for trailer in [false, true] {
        let key = format!("signed-{trailer}");
        let r =
            raw.send(signed_chunked_put(&url(&key), &body, 65_536, trailer, Spoil::None, CLIENT_AK, CLIENT_SK)).await;
        assert_eq!(r.status.as_u16(), 200, "{key}: {}", r.text());
        let got = env.client().get_object().bucket(&env.bucket).key(&key).send().await.unwrap();
        assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    }
    // Damaged uploads are refused mid-body and the connection closed: keep them small enough to be written whole
    // before the answer, so the client reads the answer instead of a broken pipe.
    let body = data(3 * 8192 + 100, 11);
    let cases = [
        (false, Spoil::ChunkSignature, "SignatureDoesNotMatch"),
        (false, Spoil::Data, "SignatureDoesNotMatch"),
        (true, Spoil::ChunkSignature, "SignatureDoesNotMatch"),
        (true, Spoil::TrailerChecksum, "BadDigest"),
        (true, Spoil::TrailerSignature, "SignatureDoesNotMatch"),
    ];
    for (trailer, spoil, code) in cases {
        let r = raw.send(signed_chunked_put(&url("spoiled"), &body, 8192, trailer, spoil, CLIENT_AK, CLIENT_SK)).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_deref()),
            (if code == "BadDigest" { 400 } else { 403 }, Some(code)),
            "{spoil:?}"
        );
    }
    // Framing damage on a valid signed body: short, long, bad hex size, a chunk over the cap, small chunks.
    let good = signed_chunked_put(&url("spoiled"), &body, 8192, false, Spoil::None, CLIENT_AK, CLIENT_SK);
    let wire = good.body().clone();
    let text = {
        use http_body_util::BodyExt;
        wire.collect().await.unwrap().to_bytes().to_vec()
    };
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut req = signed_chunked_put(&url("spoiled"), &body, 8192, false, Spoil::None, CLIENT_AK, CLIENT_SK);
        let mut w = text.clone();
        f(&mut w);
        req.headers_mut().insert("content-length", w.len().into());
        *req.body_mut() = http_body_util::Full::new(bytes::Bytes::from(w));
        req
    };
    let short = mutate(&|w: &mut Vec<u8>| w.truncate(w.len() - 100));
    let long = mutate(&|w: &mut Vec<u8>| w.extend_from_slice(b"extra"));
    let bad_hex = mutate(&|w: &mut Vec<u8>| w[0] = b'g');
    for (name, req, code) in
        [("short", short, "IncompleteBody"), ("long", long, "IncompleteBody"), ("bad hex", bad_hex, "IncompleteBody")]
    {
        let r = raw.send(req).await;
        assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some(code)), "{name}: {}", r.text());
    }
    // A chunk declared larger than 16 MiB is refused on its header; the request carries only the start of it (a
    // body beyond what the proxy drains after an error could be cut before the client reads the answer).
    let big = data(17 * 1024 * 1024, 3);
    let mut req = signed_chunked_put(&url("spoiled"), &big, 17 * 1024 * 1024, false, Spoil::None, CLIENT_AK, CLIENT_SK);
    let head: bytes::Bytes = {
        let full = std::mem::take(req.body_mut());
        let all = http_body_util::BodyExt::collect(full).await.unwrap().to_bytes();
        all.slice(..64 * 1024)
    };
    req.headers_mut().insert("content-length", head.len().into());
    *req.body_mut() = http_body_util::Full::new(head);
    let r = raw.send(req).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("InvalidChunkSizeError")));
    let r = raw.send(signed_chunked_put(&url("spoiled"), &body, 4000, false, Spoil::None, CLIENT_AK, CLIENT_SK)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("InvalidChunkSizeError")));

    let mut keys = env.stored_keys().await;
    keys.sort();
    assert_eq!(keys, vec!["signed-false".to_owned(), "signed-true".to_owned()], "no spoiled upload left anything");
    env.shutdown().await;
}
against_both_stores!(signed_chunks, signed_chunks_verify_and_every_damage_is_refused_with_nothing_stored);
