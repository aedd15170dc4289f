//! Keys the customer controls, against a real KMS API (moto in server mode) seen through a recording forwarder:
//! SSE-KMS in direct and bucket-key modes (EncryptionContext binding, call counts, KMS down), SSE-C (the client's
//! key on every request, never at the store), SSE-S3, per-bucket / per-prefix policy, and keyring rotation (bulk
//! rewrap, and a staged rotation rolled out across replicas holding different keyrings).

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::against_both_stores;
use crate::common::forward::Forwarder;
use crate::common::{Backend, TestEnv, create_kms_key, data, kms_endpoint, unique_bucket};

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> Option<String> {
    aws_sdk_s3::error::ProvideErrorMetadata::code(e).map(str::to_owned)
}

fn status<E, R: std::fmt::Debug>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response<R>>) -> u16 {
    e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn get(c: &Client, b: &str, k: &str) -> Vec<u8> {
    let o = c.get_object().bucket(b).key(k).send().await.unwrap_or_else(|e| panic!("get {k}: {e:?}"));
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn kms_proxy(backend: Backend, bucket_key: bool, more: &str) -> (TestEnv, Forwarder, String) {
    let kms = Forwarder::start(&kms_endpoint(), None).await;
    let key = create_kms_key().await;
    let env =
        TestEnv::builder(backend).kms(&kms.url(), &key, &format!("bucket_key = {bucket_key}\n{more}")).start().await;
    (env, kms, key)
}

async fn sse_kms_wraps_each_data_key_under_kms_bound_to_the_object(backend: Backend) {
    let other_key = create_kms_key().await;
    let (env, kms, key) = kms_proxy(backend, false, &format!("allowed_keys = [{other_key:?}]\n")).await;
    let c = env.client();
    let b = &env.bucket;
    let body = data(200_000, 1);
    let put = c
        .put_object()
        .bucket(b)
        .key("kms/obj")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("SSE-KMS put");
    assert_eq!(put.server_side_encryption(), Some(&ServerSideEncryption::AwsKms));
    assert_eq!(put.ssekms_key_id(), Some(key.as_str()), "the KMS key's ARN");
    assert_eq!(kms.kms_calls(), vec!["GenerateDataKey"]);
    assert_eq!(get(&c, b, "kms/obj").await, body);
    assert_eq!(get(&c, b, "kms/obj").await, body);
    c.head_object().bucket(b).key("kms/obj").send().await.unwrap();
    assert_eq!(kms.kms_calls(), vec!["GenerateDataKey", "Decrypt"], "one Decrypt, then the cache; none for HEAD");
    let meta = env.direct.head_object().bucket(b).key("kms/obj").send().await.unwrap();
    let kek = meta.metadata().and_then(|m| m.get("s3crypt-kek")).cloned().unwrap_or_default();
    assert_eq!(kek, format!("kms:{key}"));

    // The EncryptionContext binds the object: a copy made at the store does not decrypt.
    env.direct.copy_object().bucket(b).key("kms/moved").copy_source(format!("{b}/kms/obj")).send().await.unwrap();
    let e = c.get_object().bucket(b).key("kms/moved").send().await.unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (502, Some("ObjectIntegrityError")));
    // ...while a copy through the proxy re-wraps it with one Encrypt.
    c.copy_object().bucket(b).key("kms/copied").copy_source(format!("{b}/kms/obj")).send().await.unwrap();
    assert_eq!(get(&c, b, "kms/copied").await, body);

    // A named key: allowed, or AccessDenied; an unknown allowed key: KMS.NotFoundException.
    let named = c
        .put_object()
        .bucket(b)
        .key("kms/named")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&other_key)
        .body(ByteStream::from_static(b"named"))
        .send()
        .await
        .unwrap();
    assert_eq!(named.ssekms_key_id(), Some(other_key.as_str()));
    let stranger = create_kms_key().await;
    let e = c
        .put_object()
        .bucket(b)
        .key("kms/denied")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(&stranger)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (403, Some("AccessDenied")));
    // A client encryption context is bound too, and returned.
    let ctx = B64.encode(br#"{"team":"payments"}"#);
    let put = c
        .put_object()
        .bucket(b)
        .key("kms/ctx")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_encryption_context(&ctx)
        .body(ByteStream::from_static(b"with context"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.ssekms_encryption_context(), Some(ctx.as_str()));
    assert_eq!(get(&c, b, "kms/ctx").await, b"with context");
    let reserved = B64.encode(br#"{"aws:x":"y"}"#);
    let e = c
        .put_object()
        .bucket(b)
        .key("kms/bad-ctx")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_encryption_context(&reserved)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("InvalidArgument"));
    // No SSE header: the default (the keyring).
    let plain = c.put_object().bucket(b).key("kms/default").body(ByteStream::from_static(b"d")).send().await.unwrap();
    assert_eq!(plain.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
    assert_eq!(plain.ssekms_key_id(), None);
    let keys = env.stored_keys().await;
    assert!(!keys.contains(&"kms/denied".to_owned()), "{keys:?}");
}
against_both_stores!(sse_kms_direct, sse_kms_wraps_each_data_key_under_kms_bound_to_the_object);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bucket_keys_keep_a_hot_bucket_at_about_one_kms_call_per_thousand_requests() {
    let kms = Forwarder::start(&kms_endpoint(), None).await;
    let key = create_kms_key().await;
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    s3crypt::crypto::keys::keygen(&keyring, Some("k")).unwrap();
    let a = TestEnv::builder(Backend::SeaweedFs)
        .keyring(&keyring)
        .encryption("default = \"kms\"")
        .kms(&kms.url(), &key, "")
        .start()
        .await;
    let c = a.client();
    let n = 500;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (c, b) = (c.clone(), a.bucket.clone());
        tasks.spawn(async move {
            let body = data(1024, i);
            c.put_object()
                .bucket(&b)
                .key(format!("hot/{i}"))
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(get(&c, &b, &format!("hot/{i}")).await, body);
            // concurrency is bounded by the join set below
        });
        if tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let calls = kms.kms_calls();
    eprintln!("bucket keys: {} PUTs + {} GETs on one replica made {} KMS calls: {calls:?}", n, n, calls.len());
    assert!(calls.len() <= 1, "{calls:?}");

    // Another replica (sharing only the store, keyring and KMS) reads them with one Decrypt.
    let b2 = TestEnv::builder(Backend::SeaweedFs)
        .keyring(&keyring)
        .bucket(&a.bucket)
        .encryption("default = \"kms\"")
        .kms(&kms.url(), &key, "")
        .start()
        .await;
    let c2 = b2.client();
    for i in 0..100 {
        assert_eq!(get(&c2, &a.bucket, &format!("hot/{i}")).await, data(1024, i));
    }
    let calls = kms.kms_calls();
    eprintln!("a second replica reading 100 of them: {} KMS calls in all: {calls:?}", calls.len());
    assert!(calls.len() <= 2, "{calls:?}");
    let head = c2.head_object().bucket(&a.bucket).key("hot/1").send().await.unwrap();
    assert_eq!(head.bucket_key_enabled(), Some(true));
    assert_eq!(head.ssekms_key_id(), Some(key.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_kms_is_down_cached_keys_keep_working_and_the_rest_is_503_with_nothing_written() {
    let (env, kms, _key) = kms_proxy(Backend::SeaweedFs, true, "timeout = \"1s\"").await;
    let c = env.client();
    let b = &env.bucket;
    let put = |k: &'static str| {
        c.put_object()
            .bucket(b)
            .key(k)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .body(ByteStream::from_static(b"v"))
    };
    put("warm").send().await.unwrap();
    assert_eq!(get(&c, b, "warm").await, b"v");
    kms.set_down(true);
    assert_eq!(get(&c, b, "warm").await, b"v", "a cached key still reads");
    put("also-cached").send().await.expect("the cached bucket key still writes");
    let other = unique_bucket("kmsdown");
    env.direct.create_bucket().bucket(&other).send().await.unwrap();
    let e = c
        .put_object()
        .bucket(&other)
        .key("new")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (503, Some("ServiceUnavailable")));
    assert!(e.raw_response().is_some_and(|r| r.headers().get("retry-after").is_some()));
    let listed = env.direct.list_objects_v2().bucket(&other).send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing half-written");
    kms.set_down(false);
    c.put_object()
        .bucket(&other)
        .key("new")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .expect("KMS back");
}

fn customer_key(seed: u8) -> (String, String) {
    let key = [seed; 32];
    let md5 = B64.encode(<md5::Md5 as md5::Digest>::digest(key));
    (B64.encode(key), md5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_c_objects_need_the_clients_key_on_every_request_and_the_store_never_sees_it() {
    let (store, ak, sk) = crate::common::seaweedfs();
    let spy = Forwarder::start(&store, None).await;
    let upstream =
        format!("[upstream]\nendpoint = \"{}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n", spy.url());
    let direct = crate::common::s3_client(&store, &ak, &sk, None, None);
    let env = TestEnv::builder(Backend::Custom).custom_upstream(upstream, direct).plain_http(&["allow"]).start().await;
    let c = env.client();
    let b = &env.bucket;
    let (k1, m1) = customer_key(1);
    let (k2, m2) = customer_key(2);
    let body = data(150_000, 3);
    let put = c
        .put_object()
        .bucket(b)
        .key("c/obj")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1)
        .sse_customer_key_md5(&m1)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("SSE-C put");
    assert_eq!((put.sse_customer_algorithm(), put.sse_customer_key_md5()), (Some("AES256"), Some(m1.as_str())));
    let got = c
        .get_object()
        .bucket(b)
        .key("c/obj")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1)
        .sse_customer_key_md5(&m1)
        .send()
        .await
        .unwrap();
    assert_eq!(got.sse_customer_key_md5(), Some(m1.as_str()));
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    let e = c.get_object().bucket(b).key("c/obj").send().await.unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (400, Some("InvalidRequest")), "no key");
    let e = c
        .get_object()
        .bucket(b)
        .key("c/obj")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k2)
        .sse_customer_key_md5(&m2)
        .send()
        .await
        .unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (400, Some("InvalidRequest")), "wrong key (S3: 400)");
    let e = c.head_object().bucket(b).key("c/obj").send().await.unwrap_err();
    assert_eq!(status(&e), 400, "HEAD needs the key too");
    c.head_object()
        .bucket(b)
        .key("c/obj")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1)
        .sse_customer_key_md5(&m1)
        .send()
        .await
        .expect("HEAD with the key");
    let e = c
        .put_object()
        .bucket(b)
        .key("c/bad")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1)
        .sse_customer_key_md5(&m2)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (400, Some("InvalidArgument")), "MD5 of another key");

    // copy to another SSE-C key
    c.copy_object()
        .bucket(b)
        .key("c/copy")
        .copy_source(format!("{b}/c/obj"))
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&k1)
        .copy_source_sse_customer_key_md5(&m1)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k2)
        .sse_customer_key_md5(&m2)
        .send()
        .await
        .expect("SSE-C copy");
    let got = c
        .get_object()
        .bucket(b)
        .key("c/copy")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k2)
        .sse_customer_key_md5(&m2)
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);

    // multipart: the key on Create, every part and Complete
    let up = c
        .create_multipart_upload()
        .bucket(b)
        .key("c/mp")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1)
        .sse_customer_key_md5(&m1)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let e = c
        .upload_part()
        .bucket(b)
        .key("c/mp")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from(vec![1u8; 10]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400, "a part without the key");
    let parts = [data(5 * 1024 * 1024, 4), data(10, 5)];
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let out = c
            .upload_part()
            .bucket(b)
            .key("c/mp")
            .upload_id(id)
            .part_number(i as i32 + 1)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&k1)
            .sse_customer_key_md5(&m1)
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .unwrap();
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(i as i32 + 1)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket(b)
        .key("c/mp")
        .upload_id(id)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1)
        .sse_customer_key_md5(&m1)
        .multipart_upload(aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .expect("complete with the key");
    let got = c
        .get_object()
        .bucket(b)
        .key("c/mp")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1)
        .sse_customer_key_md5(&m1)
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), parts.concat());

    // over plain HTTP: refused
    let http = crate::common::s3_client(
        &format!("http://{}", env.http_addr("allow")),
        crate::common::CLIENT_AK,
        crate::common::CLIENT_SK,
        None,
        None,
    );
    let e = http
        .put_object()
        .bucket(b)
        .key("c/http")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1)
        .sse_customer_key_md5(&m1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (400, Some("InvalidRequest")));

    // A presigned URL carrying the SSE-C headers in its query gets the same treatment as the headers: the object
    // is encrypted under the client's key, and over plain HTTP the request is refused.
    let enc = |v: &str| v.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let sse_query = format!(
        "x-amz-server-side-encryption-customer-algorithm=AES256&x-amz-server-side-encryption-customer-key={}\
         &x-amz-server-side-encryption-customer-key-MD5={}",
        enc(&k2),
        enc(&m2)
    );
    let raw = env.raw();
    for (base, want) in [(env.endpoint(), 200), (format!("http://{}", env.http_addr("allow")), 400)] {
        let url = crate::common::raw::presigned_url(
            &http::Method::PUT,
            &format!("{base}/{b}/c/presigned?{sse_query}"),
            crate::common::CLIENT_AK,
            crate::common::CLIENT_SK,
        );
        let req = http::Request::builder()
            .method("PUT")
            .uri(url)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"presigned with SSE-C")))
            .unwrap();
        let r = raw.send(req).await;
        assert_eq!(r.status.as_u16(), want, "{base}: {}", r.text());
    }
    let e = c.get_object().bucket(b).key("c/presigned").send().await.unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (400, Some("InvalidRequest")), "stored under SSE-C");
    let got = c
        .get_object()
        .bucket(b)
        .key("c/presigned")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k2)
        .sse_customer_key_md5(&m2)
        .send()
        .await
        .unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"presigned with SSE-C");

    // The store saw neither the keys nor any SSE-C header or query parameter.
    for seen in spy.seen() {
        assert!(!seen.uri.to_ascii_lowercase().contains("customer"), "{} {}", seen.method, seen.uri);
        for (name, value) in &seen.headers {
            assert!(!name.as_str().contains("customer"), "{} {}: {name}", seen.method, seen.uri);
            let v = value.to_str().unwrap_or("");
            assert!(!v.contains(&k1) && !v.contains(&k2), "key in {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_require_sse_headers_add_the_stores_own_sse_and_keep_plaintext_prefixes() {
    let (store, ak, sk) = crate::common::seaweedfs();
    let spy = Forwarder::start(&store, None).await;
    let upstream =
        format!("[upstream]\nendpoint = \"{}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n", spy.url());
    let bucket = unique_bucket("policy");
    let direct = crate::common::s3_client(&store, &ak, &sk, None, None);
    let env = TestEnv::builder(Backend::Custom)
        .custom_upstream(upstream, direct)
        .bucket(&bucket)
        .encryption(&format!(
            "[[encryption.policy]]\nbucket = {bucket:?}\nrequire_sse = true\nupstream_sse = \"AES256\"\n\
             [[encryption.policy]]\nbucket = {bucket:?}\nprefix = \"public/\"\ndefault = \"plaintext\"\nrequire_sse = false\n"
        ))
        .start()
        .await;
    let c = env.client();
    let e = c.put_object().bucket(&bucket).key("secret").body(ByteStream::from_static(b"s")).send().await.unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (403, Some("AccessDenied")), "uploads must ask for SSE");
    c.put_object()
        .bucket(&bucket)
        .key("secret")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"s"))
        .send()
        .await
        .expect("with SSE-S3 headers");
    assert_eq!(get(&c, &bucket, "secret").await, b"s");
    let put_upstream = spy.seen().into_iter().find(|s| s.method == http::Method::PUT && s.uri.contains("/secret"));
    let sse = put_upstream.and_then(|s| s.headers.get("x-amz-server-side-encryption").cloned());
    assert_eq!(sse.as_ref().and_then(|v| v.to_str().ok()), Some("AES256"), "the store was asked for its own SSE");

    let body = data(70_000, 9);
    c.put_object().bucket(&bucket).key("public/readme").body(ByteStream::from(body.clone())).send().await.unwrap();
    let raw = env.direct.get_object().bucket(&bucket).key("public/readme").send().await.unwrap();
    assert_eq!(raw.body.collect().await.unwrap().into_bytes().to_vec(), body, "stored as plaintext");
    assert_eq!(get(&c, &bucket, "public/readme").await, body);
    let listed = c.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let mut sizes: Vec<(String, i64)> =
        listed.contents().iter().map(|o| (o.key().unwrap().to_owned(), o.size().unwrap())).collect();
    sizes.sort();
    assert_eq!(sizes, vec![("public/readme".to_owned(), 70_000), ("secret".to_owned(), 1)]);
}

/// A configuration for the maintenance commands: SeaweedFS, this keyring.
fn maintenance_config(dir: &std::path::Path, keyring: &std::path::Path) -> std::path::PathBuf {
    let (ep, ak, sk) = crate::common::seaweedfs();
    let text = format!(
        "[server]\nmode = \"dev\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"http\"\nplain_http = \"allow\"\n\
         [[clients]]\naccess_key_id = \"AKIDMAINT\"\nsecret_access_key = \"maint-secret\"\n\
         [upstream]\nendpoint = \"{ep}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n\
         max_copy_size = 5242880\n\
         [encryption]\nkeyring_file = {keyring:?}\nlegacy_objects = \"passthrough\"\n"
    );
    let path = dir.join("maintenance.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewrap_rotates_a_thousand_objects_by_metadata_only_resumably_and_migrate_encrypts_legacy_ones() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    s3crypt::crypto::keys::keygen(&keyring, Some("old")).unwrap();
    let env = TestEnv::builder(Backend::SeaweedFs).keyring(&keyring).start().await;
    let b = env.bucket.clone();
    let c = env.client();
    let n = 1000u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (c, b) = (c.clone(), b.clone());
        tasks.spawn(async move {
            c.put_object()
                .bucket(&b)
                .key(format!("r/{i:04}"))
                .body(ByteStream::from(data(100, i)))
                .send()
                .await
                .unwrap();
        });
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    // one object over the (test's) 5 MiB copy limit: re-wrapped by a copy in ranges
    c.put_object().bucket(&b).key("big/one").body(ByteStream::from(data(6 * 1024 * 1024, 77))).send().await.unwrap();
    for i in 0..3u64 {
        let body = ByteStream::from(data(5000, 900 + i));
        env.direct
            .put_object()
            .bucket(&b)
            .key(format!("legacy/{i}"))
            .content_type("text/x-legacy")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    let stored = |env: &TestEnv, prefix: &'static str| {
        let (direct, b) = (env.direct.clone(), b.clone());
        async move {
            let mut out = std::collections::BTreeMap::new();
            let mut token = None;
            loop {
                let page = direct
                    .list_objects_v2()
                    .bucket(&b)
                    .prefix(prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                for o in page.contents() {
                    out.insert(o.key().unwrap().to_owned(), o.e_tag().unwrap().to_owned());
                }
                token = page.next_continuation_token().map(str::to_owned);
                if token.is_none() {
                    return out;
                }
            }
        }
    };
    let kek_of = |key: String| {
        let (direct, b) = (env.direct.clone(), b.clone());
        async move {
            let h = direct.head_object().bucket(&b).key(key).send().await.unwrap();
            h.metadata().and_then(|m| m.get("s3crypt-kek")).cloned().unwrap_or_default()
        }
    };
    let etags_before = stored(&env, "r/").await;
    assert_eq!(etags_before.len(), n as usize);

    // Rotate: a new current key, then rewrap in two runs (the first stopped after 300 objects).
    s3crypt::crypto::keys::keygen(&keyring, Some("new")).unwrap();
    let cfg = maintenance_config(dir.path(), &keyring);
    let cfg = cfg.to_str().unwrap();
    let (ok, log) = run_cli(&["rewrap", "--config", cfg, "--bucket", &b, "--prefix", "r/", "--dry-run"]);
    assert!(ok && log.contains("1000 changed") && log.contains("dry run"), "{log}");
    assert_eq!(kek_of("r/0000".into()).await, "keyring:old", "a dry run changes nothing");
    let (ok, log) = run_cli(&["rewrap", "--config", cfg, "--bucket", &b, "--prefix", "r/", "--limit", "300"]);
    assert!(ok, "{log}");
    let (ok, log) = run_cli(&["rewrap", "--config", cfg, "--bucket", &b, "--prefix", "r/", "--concurrency", "16"]);
    assert!(ok, "{log}");
    assert!(log.contains("700 changed") && log.contains("300 already done"), "the second run resumes: {log}");
    eprintln!("rewrap: {}", log.lines().last().unwrap_or(""));
    for i in [0u64, 299, 300, 999] {
        assert_eq!(kek_of(format!("r/{i:04}")).await, "keyring:new");
    }
    assert_eq!(stored(&env, "r/").await, etags_before, "no data re-uploaded: the store kept every ETag");

    let (ok, log) = run_cli(&["rewrap", "--config", cfg, "--bucket", &b, "--prefix", "big/"]);
    assert!(ok && log.contains("1 changed"), "{log}");
    assert_eq!(kek_of("big/one".into()).await, "keyring:new");

    // Migrate the legacy plaintext objects; the encrypted ones are already done.
    let (ok, log) = run_cli(&["migrate", "--config", cfg, "--bucket", &b]);
    assert!(ok && log.contains("3 changed") && log.contains("1001 already done"), "{log}");
    let reader = TestEnv::builder(Backend::SeaweedFs).keyring(&keyring).bucket(&b).start().await;
    let rc = reader.client();
    for i in [0u64, 500, 999] {
        assert_eq!(get(&rc, &b, &format!("r/{i:04}")).await, data(100, i));
    }
    for i in 0..3u64 {
        assert_eq!(get(&rc, &b, &format!("legacy/{i}")).await, data(5000, 900 + i));
        assert_eq!(kek_of(format!("legacy/{i}")).await, "keyring:new");
    }
    assert_eq!(get(&rc, &b, "big/one").await, data(6 * 1024 * 1024, 77));
    let h = rc.head_object().bucket(&b).key("legacy/0").send().await.unwrap();
    assert_eq!(h.content_type(), Some("text/x-legacy"), "content headers kept");
}

async fn put_kms(c: &Client, b: &str, k: &str, key_id: &str) -> Result<String, (u16, Option<String>)> {
    c.put_object()
        .bucket(b)
        .key(k)
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .ssekms_key_id(key_id)
        .body(ByteStream::from_static(b"k"))
        .send()
        .await
        .map(|o| o.ssekms_key_id().unwrap_or_default().to_owned())
        .map_err(|e| (status(&e), code(&e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_kms_key_is_allowed_by_the_key_it_resolves_to_not_by_the_end_of_its_name() {
    let default = create_kms_key().await;
    let allowed = create_kms_key().await;
    let uuid = allowed.rsplit('/').next().unwrap().to_owned();
    let alias = format!("alias/{}", unique_bucket("allowed"));
    crate::common::kms_client().create_alias().alias_name(&alias).target_key_id(&uuid).send().await.unwrap();
    // Allowed by key ID and by alias; the same key ID in another account's ARN is another key.
    let other_account = allowed.replace(":123456789012:", ":999999999999:");
    let env = TestEnv::builder(Backend::SeaweedFs)
        .kms(&kms_endpoint(), &default, &format!("allowed_keys = [{uuid:?}]\nbucket_key = false\n"))
        .start()
        .await;
    let c = env.client();
    let b = &env.bucket;
    assert_eq!(put_kms(&c, b, "by-arn", &allowed).await, Ok(allowed.clone()));
    assert_eq!(put_kms(&c, b, "by-id", &uuid).await, Ok(allowed.clone()));
    assert_eq!(put_kms(&c, b, "by-alias", &alias).await, Ok(allowed.clone()), "the alias resolves to the allowed key");
    let e = put_kms(&c, b, "cross-account", &other_account).await.unwrap_err();
    assert_eq!(e, (403, Some("AccessDenied".to_owned())), "another account's key with the same ID");
    let stranger_alias = format!("alias/{}", unique_bucket("stranger"));
    let stranger = create_kms_key().await;
    crate::common::kms_client()
        .create_alias()
        .alias_name(&stranger_alias)
        .target_key_id(&stranger)
        .send()
        .await
        .unwrap();
    let e = put_kms(&c, b, "stranger", &stranger_alias).await.unwrap_err();
    assert_eq!(e, (403, Some("AccessDenied".to_owned())));
    let stored = env.stored_keys().await;
    assert!(!stored.iter().any(|k| k == "cross-account" || k == "stranger"), "{stored:?}");

    // A key allowed as written, for which KMS answers with another key's ARN (moto maps every account's ARN to
    // its own key): the envelope would name a key that was never checked, so nothing is written.
    let quirky = TestEnv::builder(Backend::SeaweedFs)
        .kms(&kms_endpoint(), &default, &format!("allowed_keys = [{other_account:?}]\nbucket_key = false\n"))
        .start()
        .await;
    let e = put_kms(&quirky.client(), &quirky.bucket, "mismatch", &other_account).await.unwrap_err();
    assert_eq!(e.0, 500, "{e:?}");
    assert!(quirky.stored_keys().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_under_a_kms_key_the_configuration_does_not_name_is_not_read() {
    // The store serves an object whose envelope names a KMS key of its choosing (here written by a second proxy that
    // has that key): the first proxy's principal could decrypt it, but the key is not one it was configured with.
    let mine = create_kms_key().await;
    let theirs = create_kms_key().await;
    let bucket = unique_bucket("kmsread");
    let a = TestEnv::builder(Backend::SeaweedFs).bucket(&bucket).kms(&kms_endpoint(), &mine, "").start().await;
    let forger = TestEnv::builder(Backend::SeaweedFs).bucket(&bucket).kms(&kms_endpoint(), &theirs, "").start().await;
    put_kms(&a.client(), &bucket, "honest", &mine).await.unwrap();
    put_kms(&forger.client(), &bucket, "forged", &theirs).await.unwrap();
    let c = a.client();
    assert_eq!(get(&c, &bucket, "honest").await, b"k");
    let e = c.get_object().bucket(&bucket).key("forged").send().await.unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (400, Some("KMS.NotFoundException")));
    // Listed as readable (a retired key), it reads.
    let b = TestEnv::builder(Backend::SeaweedFs)
        .bucket(&bucket)
        .kms(&kms_endpoint(), &mine, &format!("readable_keys = [{theirs:?}]\n"))
        .start()
        .await;
    assert_eq!(get(&b.client(), &bucket, "forged").await, b"k");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_can_allow_only_some_kinds_of_encryption_and_reserved_metadata_is_refused_under_any_policy() {
    let key = create_kms_key().await;
    let bucket = unique_bucket("forcekms");
    let env = TestEnv::builder(Backend::SeaweedFs)
        .bucket(&bucket)
        .kms(&kms_endpoint(), &key, "")
        .encryption(&format!(
            "[[encryption.policy]]\nbucket = {bucket:?}\ndefault = \"kms\"\nallowed_sse = [\"sse-kms\"]\n\
             [[encryption.policy]]\nbucket = {bucket:?}\nprefix = \"public/\"\ndefault = \"plaintext\"\n"
        ))
        .start()
        .await;
    let c = env.client();
    let e = c
        .put_object()
        .bucket(&bucket)
        .key("s3")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (403, Some("AccessDenied")), "SSE-S3 is not allowed here");
    let (k, md5) = customer_key(5);
    let e = c
        .put_object()
        .bucket(&bucket)
        .key("c")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k)
        .sse_customer_key_md5(&md5)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((status(&e), code(&e).as_deref()), (403, Some("AccessDenied")), "SSE-C is not allowed here");
    let none = c.put_object().bucket(&bucket).key("none").body(ByteStream::from_static(b"x")).send().await.unwrap();
    assert_eq!(none.ssekms_key_id(), Some(key.as_str()), "no header: the KMS default");
    assert_eq!(put_kms(&c, &bucket, "kms", &key).await, Ok(key.clone()));
    // Reserved metadata is refused on every write to an encrypted bucket, under a plaintext policy too.
    for k in ["public/readme", "secret"] {
        let e = c
            .put_object()
            .bucket(&bucket)
            .key(k)
            .metadata("s3crypt-kek", "keyring:forged")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!((status(&e), code(&e).as_deref()), (400, Some("InvalidArgument")), "{k}");
    }
    let stored = env.stored_keys().await;
    assert_eq!(stored.len(), 2, "{stored:?}");
}

/// The two-phase rollout of docs/KEYS.md, with two replicas on one bucket whose keyrings differ as they do while a
/// Deployment rolls: phase 1 adds a staged key (old and new replicas both wrap under the current one), phase 2
/// promotes it (replicas still on phase 1's keyring can read what promoted ones write). Every replica reads every
/// object in both phases; the one-step rotation this avoids is shown failing closed at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staged_rotation_rolled_out_in_two_phases_fails_no_read_or_write_across_replicas_with_different_keyrings() {
    use s3crypt::crypto::keys::{add_key, list_keys, promote_key};
    let dir = tempfile::tempdir().unwrap();
    let ring = |name: &str| dir.path().join(name);
    add_key(&ring("before.toml"), Some("k1"), true).unwrap();
    std::fs::copy(ring("before.toml"), ring("staged.toml")).unwrap();
    add_key(&ring("staged.toml"), Some("k2"), false).unwrap();
    std::fs::copy(ring("staged.toml"), ring("promoted.toml")).unwrap();
    promote_key(&ring("promoted.toml"), "k2").unwrap();
    let fingerprint = |file: &str, id: &str| {
        list_keys(&ring(file)).unwrap().into_iter().find(|k| k.id == id).map(|k| (k.fingerprint, k.current))
    };
    let k1 = fingerprint("before.toml", "k1").unwrap().0;
    assert_eq!(fingerprint("staged.toml", "k1"), Some((k1.clone(), true)));
    assert_eq!(fingerprint("staged.toml", "k2").map(|f| f.1), Some(false));
    assert_eq!(fingerprint("promoted.toml", "k1"), Some((k1, false)));
    assert_eq!(fingerprint("promoted.toml", "k2"), fingerprint("staged.toml", "k2").map(|(f, _)| (f, true)));

    let bucket = unique_bucket("rotate");
    let replica = |file: &str| TestEnv::builder(Backend::SeaweedFs).bucket(&bucket).keyring(&ring(file)).start();
    let mut written: Vec<(String, Vec<u8>)> = Vec::new();
    for (phase, pair, expect_kek) in [
        (1, ["before.toml", "staged.toml"], ["keyring:k1", "keyring:k1"]),
        (2, ["staged.toml", "promoted.toml"], ["keyring:k1", "keyring:k2"]),
    ] {
        let replicas = [replica(pair[0]).await, replica(pair[1]).await];
        for (r, env) in replicas.iter().enumerate() {
            for i in 0..3u64 {
                let key = format!("phase{phase}/replica{r}/{i}");
                let body = data(70_000 + i as usize, (phase * 10 + r) as u64 * 100 + i);
                env.client()
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .body(ByteStream::from(body.clone()))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("phase {phase}: replica {r} writes {key}: {e:?}"));
                let head = env.direct.head_object().bucket(&bucket).key(&key).send().await.unwrap();
                let kek = head.metadata().and_then(|m| m.get("s3crypt-kek")).cloned().unwrap_or_default();
                assert_eq!(kek, expect_kek[r], "phase {phase}: replica {r} wraps under the current key");
                written.push((key, body));
            }
        }
        for (r, env) in replicas.iter().enumerate() {
            for (key, body) in &written {
                assert!(get(&env.client(), &bucket, key).await == *body, "phase {phase}: replica {r} reads {key}");
            }
        }
        for env in replicas {
            env.shutdown().await;
        }
    }

    // Promoting at once instead: a replica still on the old keyring cannot read what a promoted one wrote, and
    // fails closed (an error, never other bytes).
    let old = replica("before.toml").await;
    let e = old.client().get_object().bucket(&bucket).key("phase2/replica1/0").send().await.unwrap_err();
    assert!(status(&e) >= 400, "{e:?}");
    assert!(get(&old.client(), &bucket, "phase2/replica0/0").await == written[6].1, "its own key still reads");
    old.shutdown().await;
}
