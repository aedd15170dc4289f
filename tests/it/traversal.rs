//! Keys and bucket names that a store could resolve outside their bucket. A client limited to one bucket names
//! another through `..` in a key, a `.` bucket, a copy source or a DeleteObjects body; every form is refused before
//! the store sees it, on the embedded store (whose keys are file paths) and on SeaweedFS alike, and the other
//! bucket's object is untouched.

use aws_sdk_s3::primitives::ByteStream;
use http::Method;

use crate::against_both_stores;
use crate::common::raw::signed;
use crate::common::{Backend, LIMITED_AK, LIMITED_SK, TestEnv, unique_bucket};

async fn no_key_reaches_outside_its_bucket(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let (mine, other) = (env.bucket.clone(), unique_bucket("bbb"));
    env.direct.create_bucket().bucket(&other).send().await.unwrap();
    env.direct
        .put_object()
        .bucket(&other)
        .key("secret.txt")
        .body(ByteStream::from_static(b"theirs"))
        .send()
        .await
        .unwrap();
    let ep = env.endpoint();
    let send = |method: Method, path: String, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let url = format!("{ep}{path}");
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let req = signed(method, &url, &h, &body, LIMITED_AK, LIMITED_SK);
        let raw = env.raw();
        async move { raw.send(req).await }
    };
    let refused = |r: &crate::common::raw::RawResponse, what: &str| {
        assert!(r.status.as_u16() == 400, "{what}: {} {}", r.status, r.text());
    };

    for (method, path) in [
        (Method::PUT, format!("/{mine}/../{other}/secret.txt")),
        (Method::GET, format!("/{mine}/../{other}/secret.txt")),
        (Method::DELETE, format!("/{mine}/../{other}/secret.txt")),
        (Method::PUT, format!("/{mine}/a/../../{other}/secret.txt")),
        (Method::PUT, format!("/{mine}/./x")),
    ] {
        let r = send(method.clone(), path.clone(), Vec::new(), b"overwritten".to_vec()).await;
        refused(&r, &format!("{method} {path}"));
        assert_eq!(r.code().as_deref(), Some("InvalidArgument"), "{method} {path}");
    }
    // A bucket named "." or "..": the store's root.
    for path in [format!("/./{other}/secret.txt"), format!("/../{mine}/x"), "/./".to_owned()] {
        let r = send(Method::GET, path.clone(), Vec::new(), Vec::new()).await;
        refused(&r, &path);
    }
    // A copy source or a DeleteObjects key that climbs out.
    let r = send(
        Method::PUT,
        format!("/{mine}/stolen"),
        vec![("x-amz-copy-source", format!("/{mine}/../{other}/secret.txt"))],
        Vec::new(),
    )
    .await;
    refused(&r, "copy source");
    let delete =
        format!("<Delete><Object><Key>../{other}/secret.txt</Key></Object><Object><Key>fine</Key></Object></Delete>");
    let md5 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        <md5::Md5 as md5::Digest>::digest(delete.as_bytes()),
    );
    let r = send(Method::POST, format!("/{mine}?delete"), vec![("content-md5", md5)], delete.into_bytes()).await;
    refused(&r, "DeleteObjects");

    let theirs = env.direct.get_object().bucket(&other).key("secret.txt").send().await.expect("still there");
    assert_eq!(&theirs.body.collect().await.unwrap().into_bytes()[..], b"theirs");
    let listed = env.direct.list_objects_v2().bucket(&mine).send().await.unwrap();
    assert!(listed.contents().is_empty(), "nothing written in the client's own bucket either");
    // Keys with dots that are not path segments are ordinary keys.
    let c = env.client();
    for key in ["a..b", "..hidden", "dir/.config", "x/.../y"] {
        c.put_object().bucket(&mine).key(key).body(ByteStream::from_static(b"ok")).send().await.expect(key);
        let got = c.get_object().bucket(&mine).key(key).send().await.expect(key);
        assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"ok", "{key}");
    }
}
against_both_stores!(no_key_reaches_outside_its_bucket_on_any_store, no_key_reaches_outside_its_bucket);

#[tokio::test]
async fn keys_that_would_alias_another_file_are_refused_on_the_embedded_store_only() {
    let env = TestEnv::start(Backend::Embedded).await;
    let c = env.client();
    c.put_object().bucket(&env.bucket).key("a/b").body(ByteStream::from_static(b"one")).send().await.unwrap();
    let e = c.put_object().bucket(&env.bucket).key("a//b").body(ByteStream::from_static(b"two")).send().await;
    assert_eq!(e.unwrap_err().raw_response().map(|r| r.status().as_u16()), Some(400));
    let got = c.get_object().bucket(&env.bucket).key("a/b").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"one");
}
