//! Who may do what: SigV4 in its header and presigned forms, with every refusal S3 makes, and buckets
//! limited per client.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::against_both_stores;
use crate::common::raw::{presigned_url, signed, signed_with};
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, LIMITED_AK, LIMITED_SK, TestEnv};

fn code_of<E, R>(e: aws_sdk_s3::error::SdkError<E, R>) -> String
where
    aws_sdk_s3::error::SdkError<E, R>: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    e.code().unwrap_or("<none>").to_owned()
}

#[tokio::test]
async fn a_wrong_secret_or_an_unknown_key_is_refused_like_s3() {
    let env = TestEnv::start(Backend::Embedded).await;
    let bad = env.client_as(CLIENT_AK, "not-the-secret");
    let e = bad.list_objects_v2().bucket(&env.bucket).send().await.unwrap_err();
    assert_eq!(code_of(e), "SignatureDoesNotMatch");
    let unknown = env.client_as("AKIDNOBODY", "whatever");
    let e =
        unknown.put_object().bucket(&env.bucket).key("k").body(ByteStream::from_static(b"x")).send().await.unwrap_err();
    assert_eq!(code_of(e), "InvalidAccessKeyId");
    assert!(env.stored_keys().await.is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn a_client_clock_more_than_fifteen_minutes_off_is_too_skewed() {
    let env = TestEnv::start(Backend::Embedded).await;
    let e = env.client_skewed(Duration::from_secs(20 * 60)).list_objects_v2().bucket(&env.bucket).send().await;
    assert_eq!(code_of(e.unwrap_err()), "RequestTimeTooSkewed");
    env.client_skewed(Duration::from_secs(10 * 60)).list_objects_v2().bucket(&env.bucket).send().await.unwrap();
    env.shutdown().await;
}

async fn presigned_urls_work_until_they_expire(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    c.put_object().bucket(&env.bucket).key("p/obj").body(ByteStream::from_static(b"presigned!")).send().await.unwrap();
    let raw = env.raw();

    let p = c
        .get_object()
        .bucket(&env.bucket)
        .key("p/obj")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let get = |uri: &str| Request::builder().uri(uri).body(Full::new(Bytes::new())).unwrap();
    let r = raw.send(get(p.uri())).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "presigned!".to_owned()));

    let tampered = p.uri().replace("p/obj", "p/obk");
    let r = raw.send(get(&tampered)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (403, Some("SignatureDoesNotMatch")));

    let old = PresigningConfig::builder()
        .start_time(SystemTime::now() - Duration::from_secs(7200))
        .expires_in(Duration::from_secs(3600))
        .build()
        .unwrap();
    let p = c.get_object().bucket(&env.bucket).key("p/obj").presigned(old).await.unwrap();
    let r = raw.send(get(p.uri())).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (403, Some("AccessDenied")));
    assert!(r.text().contains("Request has expired"), "{}", r.text());

    let too_long = p.uri().replace("X-Amz-Expires=3600", "X-Amz-Expires=604801");
    let r = raw.send(get(&too_long)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("AuthorizationQueryParametersError")));

    // A presigned PUT stores through the proxy too.
    let p = c
        .put_object()
        .bucket(&env.bucket)
        .key("p/put")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let mut b = Request::builder().method("PUT").uri(p.uri());
    for (k, v) in p.headers() {
        b = b.header(k, v);
    }
    let r = raw.send(b.body(Full::new(Bytes::from_static(b"via presigned put"))).unwrap()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let got = c.get_object().bucket(&env.bucket).key("p/put").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"via presigned put");
    env.shutdown().await;
}
against_both_stores!(presigned_urls, presigned_urls_work_until_they_expire);

#[tokio::test]
async fn headers_carried_in_a_presigned_query_are_checked_like_headers() {
    let env = TestEnv::start(Backend::Embedded).await;
    let raw = env.raw();
    let put = |url: String, header: Option<(&'static str, &'static str)>| {
        let mut b = Request::builder().method("PUT").uri(url);
        if let Some((k, v)) = header {
            b = b.header(k, v);
        }
        b.body(Full::new(Bytes::from_static(b"body"))).unwrap()
    };
    // A copy source outside the client's buckets is refused, as it is in a header.
    let url = presigned_url(
        &Method::PUT,
        &format!("{}/{}/copied?x-amz-copy-source=someone-elses-bucket%2Fsecret", env.endpoint(), env.bucket),
        LIMITED_AK,
        LIMITED_SK,
    );
    let r = raw.send(put(url, None)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (403, Some("AccessDenied")), "{}", r.text());
    // A header may not say something else than the signed query (SigV4 signs only `host` here, so the header is
    // an unsigned one).
    let acl_url = presigned_url(
        &Method::PUT,
        &format!("{}/{}/acl?x-amz-acl=private", env.endpoint(), env.bucket),
        CLIENT_AK,
        CLIENT_SK,
    );
    let r = raw.send(put(acl_url.clone(), Some(("x-amz-acl", "public-read-write")))).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (403, Some("AccessDenied")), "{}", r.text());
    // Reserved metadata is refused from the query as from headers.
    let url = presigned_url(
        &Method::PUT,
        &format!("{}/{}/meta?x-amz-meta-s3crypt-envelope=forged", env.endpoint(), env.bucket),
        CLIENT_AK,
        CLIENT_SK,
    );
    let r = raw.send(put(url, None)).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    assert!(env.stored_keys().await.is_empty(), "{:?}", env.stored_keys().await);
    // The signed query alone stores.
    let r = raw.send(put(acl_url, None)).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    env.shutdown().await;
}

#[tokio::test]
async fn an_unsigned_x_amz_header_is_refused_and_nothing_is_stored() {
    let env = TestEnv::start(Backend::Embedded).await;
    let url = format!("{}/{}/injected", env.endpoint(), env.bucket);
    let mut req = signed(Method::PUT, &url, &[], b"data", CLIENT_AK, CLIENT_SK);
    req.headers_mut().insert("x-amz-acl", "public-read".parse().unwrap());
    let r = env.raw().send(req).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (403, Some("AccessDenied")));
    assert!(r.text().contains("<HeadersNotSigned>x-amz-acl</HeadersNotSigned>"), "{}", r.text());
    assert!(env.stored_keys().await.is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn anonymous_and_sigv4a_requests_are_refused() {
    let env = TestEnv::start(Backend::Embedded).await;
    let raw = env.raw();
    let url = format!("{}/{}/k", env.endpoint(), env.bucket);
    let r = raw.send(Request::builder().uri(&url).body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (403, Some("AccessDenied")));
    let r = raw
        .send(
            Request::builder()
                .uri(&url)
                .header(
                    "authorization",
                    "AWS4-ECDSA-P256-SHA256 Credential=AK/20260101/s3/aws4_request, SignedHeaders=host, Signature=00",
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (501, Some("NotImplemented")));
    let r = raw
        .send(
            Request::builder()
                .uri(&url)
                .header("authorization", "AWS AKID:c2ln")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("InvalidRequest")));
    env.shutdown().await;
}

#[tokio::test]
async fn a_client_limited_to_buckets_sees_and_reaches_only_those() {
    let env = TestEnv::start(Backend::Embedded).await;
    let other = crate::common::unique_bucket("other");
    env.direct.create_bucket().bucket(&other).send().await.unwrap();
    env.direct.put_object().bucket(&other).key("secret").body(ByteStream::from_static(b"s")).send().await.unwrap();
    let limited = env.client_as(LIMITED_AK, LIMITED_SK);

    limited.put_object().bucket(&env.bucket).key("mine").body(ByteStream::from_static(b"ok")).send().await.unwrap();
    let e = limited.get_object().bucket(&other).key("secret").send().await.unwrap_err();
    assert_eq!(code_of(e), "AccessDenied");
    let e = limited
        .copy_object()
        .bucket(&env.bucket)
        .key("stolen")
        .copy_source(format!("{other}/secret"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(e), "AccessDenied");
    let names: Vec<String> = limited
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, vec![env.bucket.clone()]);
    let all = env.client().list_buckets().send().await.unwrap();
    assert!(all.buckets().len() >= 2, "an unlimited client sees every bucket");
    env.shutdown().await;
}

#[tokio::test]
async fn virtual_hosted_style_requests_name_the_bucket_in_the_host() {
    let env = TestEnv::builder(Backend::Embedded).base_domain("s3.test").start().await;
    env.client()
        .put_object()
        .bucket(&env.bucket)
        .key("v/key")
        .body(ByteStream::from_static(b"vhost"))
        .send()
        .await
        .unwrap();
    let host = format!("{}.s3.test:{}", env.bucket, env.https.port());
    let url = format!("{}/v/key", env.endpoint());
    let req = signed(Method::GET, &url, &[("host", &host)], b"", CLIENT_AK, CLIENT_SK);
    let r = env.raw().send(req).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "vhost".to_owned()));
    env.shutdown().await;
}

#[tokio::test]
async fn upstream_auth_failures_become_a_gateway_error_that_leaks_nothing() {
    let env = TestEnv::builder(Backend::SeaweedFs).wrong_upstream_secret().start().await;
    let url = format!("{}/{}/k", env.endpoint(), env.bucket);
    let r = env.raw().send(signed(Method::GET, &url, &[], b"", CLIENT_AK, CLIENT_SK)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (502, Some("BadGateway")));
    let (_, upstream_ak, _) = crate::common::seaweedfs();
    assert!(!r.text().contains(&upstream_ak), "upstream identity leaked: {}", r.text());
    assert!(!r.text().contains("StringToSign"), "upstream signing detail leaked: {}", r.text());
    env.shutdown().await;
}

#[tokio::test]
async fn a_request_signed_for_another_region_names_the_right_one() {
    let env = TestEnv::start(Backend::Embedded).await;
    let url = format!("{}/{}/k", env.endpoint(), env.bucket);
    let mut req = signed_with(Method::GET, &url, &[], b"", CLIENT_AK, CLIENT_SK, None, SystemTime::now());
    let auth = req.headers()["authorization"].to_str().unwrap().replace("/us-east-1/", "/eu-west-1/");
    req.headers_mut().insert("authorization", auth.parse().unwrap());
    let r = env.raw().send(req).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (400, Some("AuthorizationHeaderMalformed")));
    assert!(r.text().contains("<Region>us-east-1</Region>"));
    env.shutdown().await;
}
