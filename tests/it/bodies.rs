//! Request bodies: every shape the front door accepts is checked as it streams, and a body that fails its
//! check leaves nothing at the store.

use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::against_both_stores;
use crate::common::raw::{ChunkedBody, signed_with};
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, TestEnv, data};

const STREAMING_UNSIGNED: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

fn crc32_b64(data: &[u8]) -> String {
    let mut c = s3crypt::s3::checksum::Checksummer::new(s3crypt::s3::checksum::ChecksumAlgorithm::Crc32);
    c.update(data);
    s3crypt::s3::checksum::encode_value(&c.finalize())
}

/// `data` framed as aws-chunked with `chunk`-byte chunks and a CRC32 trailer (value given or computed).
fn aws_chunked(data: &[u8], chunk: usize, crc: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    let crc = crc.map_or_else(|| crc32_b64(data), str::to_owned);
    out.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n").as_bytes());
    out
}

fn chunked_request(env: &TestEnv, key: &str, wire: Vec<u8>, decoded_len: usize) -> Request<Full<Bytes>> {
    let url = format!("{}/{}/{key}", env.endpoint(), env.bucket);
    let len = decoded_len.to_string();
    let headers = [
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", len.as_str()),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
    ];
    signed_with(
        Method::PUT,
        &url,
        &headers,
        &wire,
        CLIENT_AK,
        CLIENT_SK,
        Some(STREAMING_UNSIGNED.into()),
        SystemTime::now(),
    )
}

/// Reads an object back through the proxy, and checks the store holds ciphertext of the right length, not it.
async fn read_direct(env: &TestEnv, key: &str) -> Vec<u8> {
    let o = env.client().get_object().bucket(&env.bucket).key(key).send().await.expect("get through the proxy");
    let plain = o.body.collect().await.unwrap().into_bytes().to_vec();
    let raw = env.direct.get_object().bucket(&env.bucket).key(key).send().await.expect("direct get");
    let raw = raw.body.collect().await.unwrap().into_bytes().to_vec();
    assert_eq!(raw.len() as u64, s3crypt::crypto::format::ciphertext_len(plain.len() as u64, 65_536));
    assert!(plain.len() < 16 || !raw.windows(16).any(|w| w == &plain[..16]), "plaintext at rest");
    plain
}

async fn a_body_that_does_not_match_its_signed_hash_is_refused_and_not_stored(backend: Backend) {
    use sha2::Digest;
    let env = TestEnv::start(backend).await;
    let body = data(3 * 1024 * 1024, 1);
    let url = format!("{}/{}/mismatch", env.endpoint(), env.bucket);
    let good_hash = hex::encode(sha2::Sha256::digest(&body));
    let r = env
        .raw()
        .send(signed_with(Method::PUT, &url, &[], &body, CLIENT_AK, CLIENT_SK, Some(good_hash), SystemTime::now()))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());

    // An overwrite whose last byte differs from what was signed: refused, and the stored object is untouched.
    let mut other = body.clone();
    other[body.len() - 1] ^= 1;
    let wrong_hash = hex::encode(sha2::Sha256::digest(&body));
    let r = env
        .raw()
        .send(signed_with(Method::PUT, &url, &[], &other, CLIENT_AK, CLIENT_SK, Some(wrong_hash), SystemTime::now()))
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("XAmzContentSHA256Mismatch")), "{}", r.text());
    assert_eq!(read_direct(&env, "mismatch").await, body, "the earlier version must survive");

    // Content-MD5 and x-amz-checksum-* headers are checked over the data too.
    let url2 = format!("{}/{}/digests", env.endpoint(), env.bucket);
    let md5 = "AAAAAAAAAAAAAAAAAAAAAA==";
    let r = env
        .raw()
        .send(signed_with(
            Method::PUT,
            &url2,
            &[("content-md5", md5)],
            &body,
            CLIENT_AK,
            CLIENT_SK,
            None,
            SystemTime::now(),
        ))
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("BadDigest")));
    let r = env
        .raw()
        .send(signed_with(
            Method::PUT,
            &url2,
            &[("x-amz-checksum-crc32", "AAAAAA==")],
            &body,
            CLIENT_AK,
            CLIENT_SK,
            None,
            SystemTime::now(),
        ))
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("BadDigest")));
    let right_crc = crc32_b64(&body);
    let r = env
        .raw()
        .send(signed_with(
            Method::PUT,
            &url2,
            &[("x-amz-checksum-crc32", &right_crc)],
            &body,
            CLIENT_AK,
            CLIENT_SK,
            None,
            SystemTime::now(),
        ))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let mut keys = env.stored_keys().await;
    keys.sort();
    assert_eq!(keys, vec!["digests".to_owned(), "mismatch".to_owned()]);
    env.shutdown().await;
}
against_both_stores!(payload_hash_mismatch, a_body_that_does_not_match_its_signed_hash_is_refused_and_not_stored);

async fn aws_chunked_bodies_are_decoded_and_their_trailer_checked(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let raw = env.raw();
    let body = data(300_000, 2);

    // Content-Length framing, 64 KiB chunks.
    let r = raw.send(chunked_request(&env, "ok-cl", aws_chunked(&body, 65_536, None), body.len())).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(read_direct(&env, "ok-cl").await, body, "the object is the decoded data, not the framing");

    // Transfer-Encoding: chunked framing (what boto3 and the aws CLI send over https), uneven HTTP chunks.
    let wire = aws_chunked(&body, 1 << 20, None);
    let mut req = chunked_request(&env, "ok-te", wire.clone(), body.len());
    req.headers_mut().remove("content-length");
    let parts: std::collections::VecDeque<Bytes> = wire.chunks(7777).map(Bytes::copy_from_slice).collect();
    let req = req.map(|_| ChunkedBody(parts));
    let r = raw.send(req).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(read_direct(&env, "ok-te").await, body);

    // A wrong trailer checksum, a short body and a long body: refused, nothing stored.
    let bad_crc = aws_chunked(&body, 65_536, Some("AAAAAA=="));
    let r = raw.send(chunked_request(&env, "bad-crc", bad_crc, body.len())).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("BadDigest")));
    let r = raw.send(chunked_request(&env, "short", aws_chunked(&body, 65_536, None), body.len() + 1)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("IncompleteBody")));
    let r = raw.send(chunked_request(&env, "long", aws_chunked(&body, 65_536, None), body.len() - 1)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("IncompleteBody")));
    // Abuse: a chunk declaring more than the 16 MiB the decoder accepts, a chunk header line that never ends,
    // and a chunk size that is not hex: each refused at once, nothing buffered, nothing stored.
    let mut huge = b"40000000\r\n".to_vec();
    huge.extend_from_slice(&body[..1000]);
    let mut endless = b"10;".to_vec();
    endless.extend(std::iter::repeat_n(b'x', 10_000));
    for (name, wire, code) in [
        ("huge-chunk", huge, "InvalidChunkSizeError"),
        ("endless-header", endless, "IncompleteBody"),
        ("not-hex", b"zz\r\n".to_vec(), "IncompleteBody"),
    ] {
        let r = raw.send(chunked_request(&env, name, wire, body.len())).await;
        assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some(code)), "{name}: {}", r.text());
    }
    let mut keys = env.stored_keys().await;
    keys.sort();
    assert_eq!(keys, vec!["ok-cl".to_owned(), "ok-te".to_owned()]);
    env.shutdown().await;
}
against_both_stores!(aws_chunked_trailer_bodies, aws_chunked_bodies_are_decoded_and_their_trailer_checked);

#[tokio::test]
async fn an_unsigned_payload_needs_a_content_length_and_an_empty_body_its_hash() {
    let env = TestEnv::start(Backend::Embedded).await;
    let url = format!("{}/{}/nolen", env.endpoint(), env.bucket);
    let req = signed_with(Method::PUT, &url, &[], b"", CLIENT_AK, CLIENT_SK, None, SystemTime::now());
    let req = req.map(|_| ChunkedBody([Bytes::from_static(b"abc")].into_iter().collect()));
    let r = env.raw().send(req).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (411, Some("MissingContentLength")));

    let wrong = "0".repeat(64);
    let req = signed_with(Method::GET, &url, &[], b"", CLIENT_AK, CLIENT_SK, Some(wrong), SystemTime::now());
    let r = env.raw().send(req).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("XAmzContentSHA256Mismatch")));

    let req = signed_with(Method::PUT, &url, &[], b"unsigned body", CLIENT_AK, CLIENT_SK, None, SystemTime::now());
    let r = env.raw().send(req).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(read_direct(&env, "nolen").await, b"unsigned body");
    env.shutdown().await;
}
