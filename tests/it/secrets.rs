//! What reaches the store. A recording forwarder between the proxy and SeaweedFS keeps every request the store is
//! sent, bodies included, and none may carry a customer (SSE-C) key: not an SSE-C header, not the key's bytes in
//! any encoding, in the URI, a header or a body. The matrix walks every path that builds a store request: reads
//! (whole, ranges, suffix ranges), a store that answers 416 or 5xx (the proxy's refetch and size probe), reads by
//! part number, multipart uploads that seal and that re-encrypt, copies and part copies, a key put in the query,
//! and the maintenance commands. And the store's own credentials when they come from the AWS chain: a web
//! identity exchanged at a real STS (moto), the session token signed on every store request and refreshed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use http::Method;

use crate::common::forward::{Forwarder, Intercept, Script, Seen};
use crate::common::raw::signed;
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, TestEnv, data};

const MIB: usize = 1024 * 1024;

/// A customer key and the three SSE-C header values for it.
struct CustomerKey {
    raw: Vec<u8>,
    b64: String,
    md5: String,
}

impl CustomerKey {
    fn new(seed: u64) -> CustomerKey {
        let raw = data(32, seed);
        let md5 = B64.encode(<md5::Md5 as md5::Digest>::digest(&raw));
        CustomerKey { b64: B64.encode(&raw), raw, md5 }
    }

    /// Every form the key could leak in.
    fn forms(&self) -> Vec<Vec<u8>> {
        let mut pct = String::new();
        for b in self.b64.bytes() {
            match b {
                b'+' => pct.push_str("%2B"),
                b'/' => pct.push_str("%2F"),
                b'=' => pct.push_str("%3D"),
                c => pct.push(c as char),
            }
        }
        vec![
            self.raw.clone(),
            self.b64.clone().into_bytes(),
            pct.into_bytes(),
            B64URL.encode(&self.raw).into_bytes(),
            hex::encode(&self.raw).into_bytes(),
            self.md5.clone().into_bytes(),
        ]
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Fails if any recorded request carries an SSE-C header or any form of any of `keys`.
fn assert_no_customer_key(seen: &[Seen], keys: &[&CustomerKey]) {
    for s in seen {
        let what = format!("{} {}", s.method, s.uri);
        assert!(!s.uri.to_ascii_lowercase().contains("customer"), "{what}: an SSE-C query parameter");
        for name in s.headers.keys() {
            assert!(!name.as_str().contains("customer"), "{what}: {name}");
        }
        for key in keys {
            for form in key.forms() {
                assert!(!contains(s.uri.as_bytes(), &form), "{what}: the key in the URI");
                for (name, value) in &s.headers {
                    assert!(!contains(value.as_bytes(), &form), "{what}: the key in {name}");
                }
                if let Some(body) = &s.body {
                    assert!(!contains(body, &form), "{what}: the key in the body");
                }
            }
        }
    }
}

/// Answers the first GET of a key ending in `suffix` whose Range starts with `range` with `status` (an empty body:
/// what some stores give), then forwards.
fn answer_once(suffix: &'static str, range: &'static str, status: u16) -> Intercept {
    let done = Arc::new(AtomicBool::new(false));
    Arc::new(move |req| {
        let hit = req.method() == Method::GET
            && req.uri().path().ends_with(suffix)
            && req.headers().get("range").and_then(|v| v.to_str().ok()).is_some_and(|r| r.starts_with(range));
        (hit && !done.swap(true, Ordering::SeqCst)).then_some((status, ""))
    })
}

fn intercepts(all: Vec<Intercept>) -> Intercept {
    Arc::new(move |req| all.iter().find_map(|f| f(req)))
}

macro_rules! sse_c {
    ($req:expr, $k:expr) => {
        $req.sse_customer_algorithm("AES256").sse_customer_key(&$k.b64).sse_customer_key_md5(&$k.md5)
    };
}

async fn body_of(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn multipart(c: &Client, b: &str, k: &str, key: &CustomerKey, parts: &[Vec<u8>]) {
    let up = sse_c!(c.create_multipart_upload().bucket(b).key(k), key).send().await.expect("create");
    let id = up.upload_id().unwrap();
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let part = sse_c!(c.upload_part().bucket(b).key(k).upload_id(id).part_number(n), key)
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .expect("part");
        done.push(CompletedPart::builder().part_number(n).e_tag(part.e_tag().unwrap()).build());
    }
    let parts = CompletedMultipartUpload::builder().set_parts(Some(done)).build();
    sse_c!(c.complete_multipart_upload().bucket(b).key(k).upload_id(id).multipart_upload(parts), key)
        .send()
        .await
        .expect("complete");
}

/// A SigV4-signed POST form (as a browser sends what `generate_presigned_post` made) uploading `body` to `key` with an
/// SSE-C key in its fields.
async fn post_form_with_customer_key(env: &TestEnv, bucket: &str, key: &str, ck: &CustomerKey, body: &[u8]) {
    let now = std::time::SystemTime::now();
    let date = s3crypt::util::time::format_amz_date(now);
    let credential = format!("{}/{}/us-east-1/s3/aws4_request", crate::common::CLIENT_AK, &date[..8]);
    let policy = serde_json::json!({
        "expiration": "2099-01-01T00:00:00Z",
        "conditions": [
            {"bucket": bucket}, {"key": key},
            ["starts-with", "$x-amz-server-side-encryption-customer-algorithm", ""],
            ["starts-with", "$x-amz-server-side-encryption-customer-key", ""],
            ["starts-with", "$x-amz-server-side-encryption-customer-key-MD5", ""],
        ]
    });
    let policy = B64.encode(policy.to_string());
    let signature =
        s3crypt::sigv4::SigningKey::derive(crate::common::CLIENT_SK, now, "us-east-1").sign(policy.as_bytes()).to_hex();
    let fields = [
        ("key", key.to_owned()),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256".to_owned()),
        ("x-amz-credential", credential),
        ("x-amz-date", date),
        ("policy", policy),
        ("x-amz-signature", signature),
        ("x-amz-server-side-encryption-customer-algorithm", "AES256".to_owned()),
        ("x-amz-server-side-encryption-customer-key", ck.b64.clone()),
        ("x-amz-server-side-encryption-customer-key-MD5", ck.md5.clone()),
    ];
    let boundary = "s3cryptFormBoundary7MA4YWxkTrZu0gW";
    let mut form = Vec::new();
    for (name, value) in fields {
        let part = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n");
        form.extend_from_slice(part.as_bytes());
    }
    let file = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n");
    form.extend_from_slice(file.as_bytes());
    form.extend_from_slice(body);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("{}/{bucket}", env.endpoint()))
        .header("host", env.https.to_string())
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("content-length", form.len())
        .body(http_body_util::Full::new(bytes::Bytes::from(form)))
        .unwrap();
    let r = env.raw().send(req).await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_to_the_store_ever_carries_a_customer_key_whatever_path_built_it() {
    let (store, ak, sk) = crate::common::seaweedfs();
    let script = Script {
        intercept: Some(intercepts(vec![
            answer_once("/suffix416", "bytes=-", 416),
            answer_once("/suffix503", "bytes=-", 503),
            answer_once("/probe416", "bytes=", 416),
        ])),
        rewrite: None,
        record_bodies: true,
    };
    let spy = Forwarder::scripted(&store, script).await;
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    s3crypt::crypto::keys::keygen(&keyring, Some("k1")).unwrap();
    let upstream =
        format!("[upstream]\nendpoint = \"{}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n", spy.url());
    let direct = crate::common::s3_client(&store, &ak, &sk, None, None);
    let env = TestEnv::builder(Backend::Custom).custom_upstream(upstream, direct).keyring(&keyring).start().await;
    let c = env.client();
    let b = env.bucket.clone();
    let (k1, k2) = (CustomerKey::new(101), CustomerKey::new(202));
    let body = data(150_000, 1);

    // Single objects: PUT, GET, HEAD, a range, a suffix range.
    sse_c!(c.put_object().bucket(&b).key("c/obj"), k1).body(ByteStream::from(body.clone())).send().await.unwrap();
    assert_eq!(body_of(sse_c!(c.get_object().bucket(&b).key("c/obj"), k1).send().await.unwrap()).await, body);
    sse_c!(c.head_object().bucket(&b).key("c/obj"), k1).send().await.unwrap();
    let r = sse_c!(c.get_object().bucket(&b).key("c/obj").range("bytes=70000-70099"), k1).send().await.unwrap();
    assert_eq!(body_of(r).await, body[70_000..70_100]);
    let r = sse_c!(c.get_object().bucket(&b).key("c/obj").range("bytes=-100"), k1).send().await.unwrap();
    assert_eq!(body_of(r).await, body[body.len() - 100..]);

    // Conditions the proxy evaluates itself (a conditional PUT first HEADs the current object), and the sealed
    // checksum of an SSE-C object through GetObjectAttributes.
    let etag = sse_c!(c.head_object().bucket(&b).key("c/obj"), k1).send().await.unwrap().e_tag().unwrap().to_owned();
    body_of(sse_c!(c.get_object().bucket(&b).key("c/obj").if_match(&etag), k1).send().await.unwrap()).await;
    let put = sse_c!(c.put_object().bucket(&b).key("c/obj").if_match(&etag), k1).body(ByteStream::from(body.clone()));
    put.send().await.unwrap();
    let sum = B64.encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    let put = sse_c!(c.put_object().bucket(&b).key("c/sum").checksum_sha256(&sum), k1);
    put.body(ByteStream::from(body.clone())).send().await.unwrap();
    let attrs = sse_c!(c.get_object_attributes().bucket(&b).key("c/sum"), k1)
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::Checksum)
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.checksum().and_then(|x| x.checksum_sha256()), Some(sum.as_str()));

    // The store answers a suffix range with 416 or 503 (the proxy reads the whole object instead), or a range
    // with a bare 416 (the proxy asks the store for the object's size).
    for key in ["c/suffix416", "c/suffix503"] {
        sse_c!(c.put_object().bucket(&b).key(key), k1).body(ByteStream::from(body.clone())).send().await.unwrap();
        let r = sse_c!(c.get_object().bucket(&b).key(key).range("bytes=-10"), k1).send().await.unwrap();
        assert_eq!(body_of(r).await, body[body.len() - 10..], "{key}");
    }
    sse_c!(c.put_object().bucket(&b).key("c/probe416"), k1).body(ByteStream::from(data(100, 2))).send().await.unwrap();
    let e = sse_c!(c.get_object().bucket(&b).key("c/probe416").range("bytes=1000-"), k1).send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(416));

    // Multipart uploads: sealed in place (aligned parts) and re-encrypted (misaligned); reads by part number.
    let aligned = [data(5 * MIB, 3), data(10, 4)];
    multipart(&c, &b, "c/mp-aligned", &k1, &aligned).await;
    let misaligned = [data(5 * MIB + 1, 5), data(100, 6)];
    multipart(&c, &b, "c/mp-repacked", &k1, &misaligned).await;
    let p2 = sse_c!(c.get_object().bucket(&b).key("c/mp-aligned").part_number(2), k1).send().await.unwrap();
    assert_eq!(body_of(p2).await, aligned[1]);
    sse_c!(c.head_object().bucket(&b).key("c/mp-aligned").part_number(1), k1).send().await.unwrap();
    let p1 = sse_c!(c.get_object().bucket(&b).key("c/obj").part_number(1), k1).send().await.unwrap();
    assert_eq!(body_of(p1).await, body);
    sse_c!(c.head_object().bucket(&b).key("c/obj").part_number(1), k1).send().await.unwrap();

    // Copies: to another customer key, to the keyring, and a part copy into an SSE-C upload.
    let copy = c
        .copy_object()
        .bucket(&b)
        .key("c/copy-k2")
        .copy_source(format!("{b}/c/obj"))
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&k1.b64)
        .copy_source_sse_customer_key_md5(&k1.md5);
    sse_c!(copy, k2).send().await.expect("SSE-C to SSE-C copy");
    c.copy_object()
        .bucket(&b)
        .key("c/copy-keyring")
        .copy_source(format!("{b}/c/obj"))
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&k1.b64)
        .copy_source_sse_customer_key_md5(&k1.md5)
        .send()
        .await
        .expect("SSE-C to keyring copy");
    let up = sse_c!(c.create_multipart_upload().bucket(&b).key("c/part-copy"), k2).send().await.unwrap();
    let id = up.upload_id().unwrap();
    let pc = c
        .upload_part_copy()
        .bucket(&b)
        .key("c/part-copy")
        .upload_id(id)
        .part_number(1)
        .copy_source(format!("{b}/c/obj"))
        .copy_source_range("bytes=0-99999")
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&k1.b64)
        .copy_source_sse_customer_key_md5(&k1.md5);
    let pc = sse_c!(pc, k2).send().await.expect("part copy");
    let etag = pc.copy_part_result().and_then(|r| r.e_tag()).unwrap().to_owned();
    let parts =
        CompletedMultipartUpload::builder().parts(CompletedPart::builder().part_number(1).e_tag(etag).build()).build();
    sse_c!(c.complete_multipart_upload().bucket(&b).key("c/part-copy").upload_id(id).multipart_upload(parts), k2)
        .send()
        .await
        .expect("complete the part copy");
    let got = sse_c!(c.get_object().bucket(&b).key("c/part-copy"), k2).send().await.unwrap();
    assert_eq!(body_of(got).await, body[..100_000]);

    // A header-signed request that also names the key in its query: the parameter is not the store's.
    let url =
        format!("{}/{b}/c/obj?x-amz-server-side-encryption-customer-key={}", env.endpoint(), B64URL.encode(&k1.raw));
    let headers = [
        ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ("x-amz-server-side-encryption-customer-key", k1.b64.as_str()),
        ("x-amz-server-side-encryption-customer-key-md5", k1.md5.as_str()),
    ];
    let r = env.raw().send(signed(Method::GET, &url, &headers, b"", CLIENT_AK, CLIENT_SK)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());

    // The maintenance commands over the same bucket (a legacy plaintext object for migrate to encrypt).
    env.direct.put_object().bucket(&b).key("legacy").body(ByteStream::from_static(b"plain")).send().await.unwrap();
    let config = dir.path().join("maintenance.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nmode = \"dev\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"http\"\nplain_http = \"allow\"\n\
             [[clients]]\naccess_key_id = \"AKIDMAINT\"\nsecret_access_key = \"maint-secret\"\n\
             [upstream]\nendpoint = \"{}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n\
             [encryption]\nkeyring_file = {keyring:?}\nlegacy_objects = \"passthrough\"\n",
            spy.url()
        ),
    )
    .unwrap();
    s3crypt::crypto::keys::keygen(&keyring, Some("k2")).unwrap();
    for command in ["rewrap", "migrate"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt"))
            .args([command, "--config", config.to_str().unwrap(), "--bucket", &b])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for key in ["legacy", "c/copy-keyring"] {
        let meta = env.direct.head_object().bucket(&b).key(key).send().await.unwrap();
        let kek = meta.metadata().and_then(|m| m.get("s3crypt-kek")).cloned();
        assert_eq!(kek.as_deref(), Some("keyring:k2"), "{key} migrated or re-wrapped");
    }

    // A browser upload (POST Object) whose form carries the SSE-C key; read back with the key.
    post_form_with_customer_key(&env, &b, "c/posted", &k2, b"posted with a customer key").await;
    let posted = sse_c!(c.get_object().bucket(&b).key("c/posted"), k2).send().await.unwrap();
    assert_eq!(body_of(posted).await, b"posted with a customer key");

    // None of the requests the store received carried a customer key, and every path above reached it.
    let seen = spy.seen();
    assert_no_customer_key(&seen, &[&k1, &k2]);
    let saw = |what: &str, f: &dyn Fn(&Seen) -> bool| assert!(seen.iter().any(f), "no {what} reached the store");
    let range = |s: &Seen| s.headers.get("range").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    saw("suffix refetch", &|s| s.method == Method::GET && s.uri.ends_with("/c/suffix416") && range(s).is_empty());
    saw("5xx refetch", &|s| s.method == Method::GET && s.uri.ends_with("/c/suffix503") && range(s).is_empty());
    saw("size probe", &|s| s.method == Method::HEAD && s.uri.ends_with("/c/probe416"));
    saw("seal copy", &|s| {
        s.method == Method::PUT && s.uri.ends_with("/c/mp-aligned") && s.headers.contains_key("x-amz-copy-source")
    });
    saw("repacked part", &|s| {
        s.method == Method::PUT && s.uri.contains("/c/mp-repacked?") && s.uri.contains("partNumber=2")
    });
    saw("POST Object upload", &|s| s.method == Method::PUT && s.uri.ends_with("/c/posted"));
    saw("part-number HEAD", &|s| s.method == Method::HEAD && s.uri.ends_with("/c/mp-aligned"));
    saw("rewrap copy", &|s| {
        s.method == Method::PUT && s.uri.ends_with("/legacy") && s.body.as_ref().is_some_and(|b| !b.is_empty())
    });
    // The records of open uploads (the system bucket) hold the client's upload ID and sealed part attributes:
    // never a customer key (checked above with every request), never a part's plaintext MD5.
    saw("upload ID record", &|s| {
        s.method == Method::PUT && s.uri.contains("/s3crypt-system/u/") && s.uri.ends_with("/id")
    });
    let md5s: Vec<[u8; 16]> =
        aligned.iter().chain(&misaligned).map(|p| <md5::Md5 as md5::Digest>::digest(p).into()).collect();
    for s in seen.iter().filter(|s| s.uri.contains("/s3crypt-system/")) {
        for m in &md5s {
            let body = s.body.as_deref().unwrap_or_default();
            assert!(!contains(body, m) && !contains(body, hex::encode(m).as_bytes()), "a plaintext MD5 in a record");
        }
    }
    assert!(seen.iter().all(|s| !s.uri.contains("x-id=")), "the SDK's x-id never reaches the store");
    assert!(seen.len() > 60, "the matrix sent {} requests", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_key_for_a_pass_through_bucket_is_refused_not_sent_to_the_store() {
    let (store, ak, sk) = crate::common::seaweedfs();
    let spy = Forwarder::scripted(&store, Script { record_bodies: true, ..Script::default() }).await;
    let plain = crate::common::unique_bucket("plain");
    let upstream =
        format!("[upstream]\nendpoint = \"{}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n", spy.url());
    let direct = crate::common::s3_client(&store, &ak, &sk, None, None);
    direct.create_bucket().bucket(&plain).send().await.unwrap();
    let env =
        TestEnv::builder(Backend::Custom).custom_upstream(upstream, direct).passthrough_bucket(&plain).start().await;
    let c = env.client();
    let k = CustomerKey::new(7);
    let e =
        sse_c!(c.put_object().bucket(&plain).key("x"), k).body(ByteStream::from_static(b"x")).send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&e), Some("InvalidRequest"));
    let e = sse_c!(c.get_object().bucket(&plain).key("x"), k).send().await.unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    // A copy out of the pass-through bucket naming a source key is refused too.
    c.put_object().bucket(&plain).key("src").body(ByteStream::from_static(b"s")).send().await.unwrap();
    let e = c
        .copy_object()
        .bucket(&env.bucket)
        .key("dst")
        .copy_source(format!("{plain}/src"))
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&k.b64)
        .copy_source_sse_customer_key_md5(&k.md5)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert!(!spy.seen().iter().any(|s| s.uri.contains("/x") || s.uri.ends_with("/dst")), "refused before the store");
    assert_no_customer_key(&spy.seen(), &[&k]);
}

/// The real binary with `upstream.credentials = "aws"` and nothing but a web identity (IRSA's environment): it
/// exchanges the token at moto's STS (AssumeRoleWithWebIdentity, recorded by a forwarder), signs every store
/// request with the temporary credentials, `x-amz-security-token` among the signed headers, and refreshes them
/// ahead of their expiry (here at once: `credentials_refresh_before` longer than their lifetime), so later
/// requests carry new ones. The store is moto's S3, which accepts any credentials; what the proxy sent is checked
/// at a second forwarder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_credentials_from_a_web_identity_are_exchanged_at_sts_signed_with_their_token_and_refreshed() {
    let moto = crate::common::kms_endpoint();
    let sts = Forwarder::scripted(&moto, Script { record_bodies: true, ..Script::default() }).await;
    let store = Forwarder::start(&moto, None).await;
    let direct = crate::common::s3_client(&moto, "any", "any", None, None);
    let bucket = crate::common::unique_bucket("irsa");
    direct.create_bucket().bucket(&bucket).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6czNjcnlwdCJ9.c2ln")
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "[server]\nmode = \"dev\"\ndrain_timeout = \"5s\"\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\nprotocol = \"https\"\n\
         [tls]\nself_signed_dir = \"tls\"\n\
         [[clients]]\naccess_key_id = \"{CLIENT_AK}\"\nsecret_access_key = \"{CLIENT_SK}\"\n\
         [upstream]\nendpoint = \"{}\"\ncredentials = \"aws\"\ncredentials_refresh_before = \"24h\"\n\
         [encryption]\nkeyring_file = \"keyring.toml\"\n",
        store.url()
    );
    std::fs::write(dir.path().join("proxy.toml"), config).unwrap();
    let nowhere = dir.path().join("none");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt"))
        .args(["serve", "--config", "proxy.toml"])
        .current_dir(dir.path())
        .env_clear()
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/s3crypt-store")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ROLE_SESSION_NAME", "s3crypt")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_STS", sts.url())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &nowhere)
        .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = crate::common::KillOnDrop(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the proxy did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let c = crate::common::s3_client(&format!("https://127.0.0.1:{port}"), CLIENT_AK, CLIENT_SK, Some(&ca), None);
    let body = data(100_000, 7);
    c.put_object().bucket(&bucket).key("a").body(ByteStream::from(body.clone())).send().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    c.put_object().bucket(&bucket).key("b").body(ByteStream::from(body.clone())).send().await.unwrap();
    for k in ["a", "b"] {
        let got = c.get_object().bucket(&bucket).key(k).send().await.unwrap();
        assert!(got.body.collect().await.unwrap().into_bytes() == body);
    }

    let exchanges = sts
        .seen()
        .into_iter()
        .filter(|r| r.body.as_ref().is_some_and(|b| String::from_utf8_lossy(b).contains("AssumeRoleWithWebIdentity")))
        .count();
    assert!(exchanges >= 2, "the web identity exchanged at STS, then again to refresh: {exchanges}");
    let mut identities = std::collections::BTreeSet::new();
    let to_store: Vec<Seen> = store.seen();
    assert!(!to_store.is_empty());
    for r in &to_store {
        let auth = r.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let token = r.headers.get("x-amz-security-token").and_then(|v| v.to_str().ok());
        let token = token.unwrap_or_else(|| panic!("{} {}: no session token", r.method, r.uri));
        let signed_headers = auth.split("SignedHeaders=").nth(1).and_then(|s| s.split(',').next()).unwrap_or_default();
        assert!(signed_headers.split(';').any(|h| h == "x-amz-security-token"), "the token is signed: {auth}");
        let akid = auth.split("Credential=").nth(1).and_then(|s| s.split('/').next()).unwrap_or_default();
        assert!(akid.starts_with("ASIA"), "temporary credentials from STS: {akid}");
        identities.insert((akid.to_owned(), token.to_owned()));
    }
    assert!(identities.len() >= 2, "requests after the refresh carry new credentials: {identities:?}");
}
