//! What the store says is not trusted until it is authenticated, and upload IDs cannot be made by anyone but the
//! proxy. A forwarder in front of SeaweedFS rewrites the envelope the store shows for a just-completed upload (a
//! store that wants an SSE-C upload sealed under the keyring, under a KMS key of its own, or under another upload's
//! data key): the Complete is refused and nothing becomes readable. Upload IDs minted by a client (under its own
//! SSE-C key, in the earlier `s3c1` form or the current one) or carried to another bucket are refused.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use http::HeaderValue;

use crate::common::forward::{Forwarder, Rewrite, Script};
use crate::common::{Backend, TestEnv, data};

const MIB: usize = 1024 * 1024;

/// A customer key's header values.
fn customer_key(seed: u8) -> (String, String) {
    let key = [seed; 32];
    (B64.encode(key), B64.encode(<md5::Md5 as md5::Digest>::digest(key)))
}

/// The envelope headers the store should show for `key` after Complete, as the test decides them.
type Swap = Arc<Mutex<Vec<(String, String)>>>;

/// A proxy in front of SeaweedFS whose HEAD answers for keys under `tampered/` carry the headers in the swap
/// instead of the stored ones (the proxy HEADs a completed upload before it seals it).
async fn behind_a_rewriting_store() -> (TestEnv, Forwarder, Swap) {
    let (store, ak, sk) = crate::common::seaweedfs();
    let swap: Swap = Arc::default();
    let s = Arc::clone(&swap);
    let rewrite: Rewrite = Arc::new(move |method, uri, headers| {
        if method == http::Method::HEAD && uri.contains("/tampered/") {
            for (name, value) in s.lock().unwrap().iter() {
                headers.insert(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
        }
    });
    let spy = Forwarder::scripted(&store, Script { rewrite: Some(rewrite), ..Script::default() }).await;
    let upstream =
        format!("[upstream]\nendpoint = \"{}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n", spy.url());
    let direct = crate::common::s3_client(&store, &ak, &sk, None, None);
    let env = TestEnv::builder(Backend::Custom).custom_upstream(upstream, direct).start().await;
    (env, spy, swap)
}

/// Uploads two aligned parts and completes; `sse_c` names the customer key.
async fn upload(c: &Client, b: &str, k: &str, sse_c: Option<&(String, String)>) -> Result<(), String> {
    let mut create = c.create_multipart_upload().bucket(b).key(k);
    if let Some((key, md5)) = sse_c {
        create = create.sse_customer_algorithm("AES256").sse_customer_key(key).sse_customer_key_md5(md5);
    }
    let id = create.send().await.map_err(|e| format!("{e:?}"))?.upload_id().unwrap().to_owned();
    let mut done = Vec::new();
    for (n, body) in [(1, data(5 * MIB, 1)), (2, data(10, 2))] {
        let mut part = c.upload_part().bucket(b).key(k).upload_id(&id).part_number(n).body(ByteStream::from(body));
        if let Some((key, md5)) = sse_c {
            part = part.sse_customer_algorithm("AES256").sse_customer_key(key).sse_customer_key_md5(md5);
        }
        let etag = part.send().await.map_err(|e| format!("{e:?}"))?.e_tag().unwrap().to_owned();
        done.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
    }
    let mut complete = c
        .complete_multipart_upload()
        .bucket(b)
        .key(k)
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build());
    if let Some((key, md5)) = sse_c {
        complete = complete.sse_customer_algorithm("AES256").sse_customer_key(key).sse_customer_key_md5(md5);
    }
    complete.send().await.map(|_| ()).map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_rewrites_the_envelope_of_a_completed_upload_gets_the_complete_refused() {
    let (env, spy, swap) = behind_a_rewriting_store().await;
    let c = env.client();
    let b = env.bucket.clone();
    let k1 = customer_key(1);

    // An SSE-C upload the store wants sealed under the keyring (readable by every client).
    *swap.lock().unwrap() = vec![("x-amz-meta-s3crypt-kek".into(), "keyring:nope".into())];
    let err = upload(&c, &b, "tampered/sse-c", Some(&k1)).await.unwrap_err();
    assert!(err.contains("ObjectIntegrity"), "{err}");
    // ...or under a KMS key of its own.
    *swap.lock().unwrap() =
        vec![("x-amz-meta-s3crypt-kek".into(), "kms:arn:aws:kms:us-east-1:999999999999:key/store-owned".into())];
    let err = upload(&c, &b, "tampered/keyring", None).await.unwrap_err();
    assert!(err.contains("ObjectIntegrity"), "{err}");

    // A genuine open envelope of an earlier upload of the same key (right key reference, right object, a data key
    // that unwraps): the data keys differ, so the store cannot pass it off.
    swap.lock().unwrap().clear();
    let first = c.create_multipart_upload().bucket(&b).key("tampered/replayed").send().await.unwrap();
    let create = spy
        .seen()
        .into_iter()
        .rfind(|s| s.method == http::Method::POST && s.uri.contains("/tampered/replayed?uploads"))
        .expect("the first create");
    let replay: Vec<(String, String)> = create
        .headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-amz-meta-s3crypt-"))
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    assert!(replay.iter().any(|(n, _)| n == "x-amz-meta-s3crypt-dek"));
    c.abort_multipart_upload()
        .bucket(&b)
        .key("tampered/replayed")
        .upload_id(first.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    *swap.lock().unwrap() = replay;
    let err = upload(&c, &b, "tampered/replayed", None).await.unwrap_err();
    assert!(err.contains("ObjectIntegrity"), "{err}");

    // Nothing became readable: the completed objects were never sealed, and the SSE-C one kept its real envelope.
    swap.lock().unwrap().clear();
    for key in ["tampered/sse-c", "tampered/keyring", "tampered/replayed"] {
        let e = c.get_object().bucket(&b).key(key).send().await.unwrap_err();
        assert!(
            format!("{e:?}").contains("InvalidObjectState") || format!("{e:?}").contains("InvalidRequest"),
            "{key}: {e:?}"
        );
    }
    let stored = env.direct.head_object().bucket(&b).key("tampered/sse-c").send().await.unwrap();
    let meta = stored.metadata().unwrap();
    assert_eq!(
        (meta.get("s3crypt-kek").map(String::as_str), meta.get("s3crypt-mp").map(String::as_str)),
        (Some("sse-c"), Some("open"))
    );

    // An honest store: the same uploads complete and read back.
    upload(&c, &b, "tampered/sse-c", Some(&k1)).await.expect("honest SSE-C upload");
    upload(&c, &b, "tampered/keyring", None).await.expect("honest upload");
    let got = c.get_object().bucket(&b).key("tampered/keyring").send().await.unwrap();
    assert_eq!(got.content_length(), Some(5 * MIB as i64 + 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_ids_minted_by_a_client_or_carried_to_another_bucket_are_refused() {
    let env = TestEnv::start(Backend::SeaweedFs).await;
    let c = env.client();
    let b = env.bucket.clone();
    let (k1, k2) = (customer_key(1), customer_key(2));
    let victim = c
        .create_multipart_upload()
        .bucket(&b)
        .key("victim")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1.0)
        .sse_customer_key_md5(&k1.1)
        .send()
        .await
        .unwrap();
    let id = victim.upload_id().unwrap().to_owned();
    let upstream = id.splitn(5, '.').nth(4).expect("the upstream upload ID").to_owned();

    // An attacker with its own SSE-C key wraps its own data key for the victim's upstream upload, as version-1 IDs
    // allowed (the token was wrapped under the client's key), and as the current form would need (under a key
    // the attacker does not have).
    let mine = s3crypt::crypto::keys::DataKey::from_bytes([9; 32]);
    let key2: [u8; 32] = [2; 32];
    let identity = s3crypt::crypto::keys::ObjectIdentity { bucket: b.clone(), key: "victim".into() };
    let v1_aad = s3crypt::crypto::keys::upload_token_aad("sse-c", &identity, 65_536, &upstream);
    let v1 = s3crypt::crypto::keys::wrap_under(&key2, &mine, &v1_aad).unwrap();
    let v1_id = format!("s3c1.{}.{}.{upstream}", B64URL.encode("sse-c"), B64URL.encode(v1));
    let md5: [u8; 16] = <md5::Md5 as md5::Digest>::digest(key2).into();
    let v2_aad =
        s3crypt::crypto::keys::upload_token_v2_aad("keyring:x", &identity, 65_536, &upstream, "sse-c", Some(&md5));
    let inner = s3crypt::crypto::keys::wrap_under(&key2, &mine, &v2_aad).unwrap();
    let v2 = s3crypt::crypto::keys::seal_wrap(&key2, &inner, &v2_aad).unwrap();
    let v2_id =
        format!("s3c2.{}.{}.{}.{upstream}", B64URL.encode("keyring:x"), B64URL.encode("sse-c"), B64URL.encode(v2));
    for forged in [&v1_id, &v2_id] {
        let e = c
            .upload_part()
            .bucket(&b)
            .key("victim")
            .upload_id(forged)
            .part_number(1)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&k2.0)
            .sse_customer_key_md5(&k2.1)
            .body(ByteStream::from_static(b"injected"))
            .send()
            .await
            .unwrap_err();
        let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).unwrap_or_default().to_owned();
        assert!(code == "NoSuchUpload" || code == "InvalidRequest", "{forged}: {code}");
    }
    let parts = env.direct.list_parts().bucket(&b).key("victim").upload_id(&upstream).send().await.unwrap();
    assert!(parts.parts().is_empty(), "no part was injected into the victim's upload");

    // The victim's own ID, carried to another bucket (same key), opens nothing there.
    let other = crate::common::unique_bucket("other");
    env.direct.create_bucket().bucket(&other).send().await.unwrap();
    let e = c
        .upload_part()
        .bucket(&other)
        .key("victim")
        .upload_id(&id)
        .part_number(1)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1.0)
        .sse_customer_key_md5(&k1.1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&e), Some("NoSuchUpload"), "{e:?}");
}
