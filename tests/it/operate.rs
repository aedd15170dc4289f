//! Operating the proxy: the admin listener's /metrics (counters and histograms move with a mixed workload),
//! /healthz and /readyz (ready, then "draining" once shutdown begins).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use http::Method;

use crate::common::raw::{ChannelBody, signed_with};
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, TestEnv, data};

/// GET on the admin listener: (status, body).
async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("admin connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", "admin").body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The samples of a Prometheus text page: (name, labels) → value.
fn samples(page: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in page.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels: BTreeMap<String, String> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect();
        out.push((name.to_owned(), labels, value.parse().unwrap_or(f64::NAN)));
    }
    out
}

/// The sum of the samples named `name` whose labels include `want`.
fn sum(page: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(page)
        .into_iter()
        .filter(|(n, l, _)| n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_a_mixed_workload_and_never_carry_buckets_or_keys() {
    let env = TestEnv::builder(Backend::Embedded).admin().start().await;
    let admin = env.admin.expect("admin listener");
    let (status, before) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let c = env.client();
    let b = &env.bucket;
    let body = data(300_000, 1);
    c.put_object().bucket(b).key("m/secret-name").body(ByteStream::from(body.clone())).send().await.unwrap();
    let got = c.get_object().bucket(b).key("m/secret-name").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().len(), body.len());
    c.get_object().bucket(b).key("m/secret-name").range("bytes=10-99").send().await.unwrap();
    c.head_object().bucket(b).key("m/secret-name").send().await.unwrap();
    let _ = c.get_object().bucket(b).key("m/missing").send().await.unwrap_err();
    let wrong = env.client_as(CLIENT_AK, "not-the-secret");
    let _ = wrong.get_object().bucket(b).key("m/secret-name").send().await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, after) = admin_get(admin, "/metrics").await;

    let delta = |name: &str, want: &[(&str, &str)]| sum(&after, name, want) - sum(&before, name, want);
    let build = [("version", s3crypt::metrics::VERSION), ("revision", s3crypt::metrics::REVISION)];
    assert_eq!(sum(&after, "s3crypt_build_info", &build), 1.0, "the build is named: {after}");
    assert!(delta("s3crypt_requests_total", &[("op", "PutObject"), ("status", "2xx")]) >= 1.0);
    assert!(delta("s3crypt_requests_total", &[("op", "GetObject"), ("status", "2xx")]) >= 2.0);
    assert!(delta("s3crypt_requests_total", &[("op", "GetObject"), ("status", "4xx")]) >= 1.0);
    assert!(delta("s3crypt_request_duration_seconds_count", &[("op", "HeadObject")]) >= 1.0);
    assert!(delta("s3crypt_crypto_seconds_count", &[("direction", "encrypt"), ("op", "PutObject")]) >= 1.0);
    assert!(delta("s3crypt_crypto_seconds_count", &[("direction", "decrypt"), ("op", "GetObject")]) >= 2.0);
    assert!(delta("s3crypt_crypto_bytes_total", &[("direction", "encrypt")]) >= 300_000.0);
    assert!(delta("s3crypt_crypto_bytes_total", &[("direction", "decrypt")]) >= 300_000.0);
    assert!(delta("s3crypt_auth_failures_total", &[("reason", "SignatureDoesNotMatch")]) >= 1.0);
    assert!(delta("s3crypt_upstream_request_duration_seconds_count", &[]) >= 5.0);
    assert!(delta("s3crypt_tls_handshakes_total", &[("result", "ok")]) >= 1.0);
    assert!(sum(&after, "s3crypt_connections_total", &[]) >= 1.0);
    let expiry = sum(&after, "s3crypt_tls_certificate_expiry_timestamp_seconds", &[]);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(expiry > now, "the served certificate's expiry is exported: {expiry}");
    // explicit buckets
    assert!(
        after.contains("s3crypt_crypto_seconds_bucket{direction=\"encrypt\",op=\"PutObject\",le=\"0.0001\"}")
            || after.contains("le=\"0.0001\""),
        "crypto histogram buckets"
    );
    // low-cardinality labels only
    for forbidden in ["secret-name", b.as_str(), CLIENT_AK] {
        assert!(!after.contains(forbidden), "{forbidden} in /metrics");
    }

    assert_eq!(admin_get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
    assert_eq!(admin_get(admin, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_draining_while_an_upload_finishes_after_shutdown_began() {
    let mut env = TestEnv::builder(Backend::Embedded).admin().start().await;
    let admin = env.admin.expect("admin listener");
    let url = format!("{}/{}/draining", env.endpoint(), env.bucket);
    let total = 2 * 65_536u64;
    let req = signed_with(Method::PUT, &url, &[], b"", CLIENT_AK, CLIENT_SK, None, SystemTime::now());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = req.map(|_| ChannelBody { rx, len: total });
    req.headers_mut().insert("content-length", total.into());
    let raw = env.raw();
    let upload = tokio::spawn(async move { raw.send(req).await });
    tx.send(Bytes::from(vec![1u8; 65_536])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, text) = admin_get(admin, "/readyz").await;
    assert_eq!((status, text.as_str()), (503, "not ready: draining\n"));
    tx.send(Bytes::from(vec![1u8; 65_536])).await.unwrap();
    assert_eq!(upload.await.unwrap().status.as_u16(), 200);
    env.shutdown().await;
}
