//! How clients reach the proxy: TLS (versions, SNI, certificate reload), HTTP/2, the plain-HTTP policies,
//! `Expect: 100-continue`, and the graceful drain.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::common::raw::{ChannelBody, client_tls, signed, signed_with, tls_exchange};
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, TestEnv, s3_client};

#[tokio::test]
async fn plain_http_is_refused_with_an_s3_error_by_default_policy() {
    let env = TestEnv::builder(Backend::Embedded).plain_http(&["refuse"]).start().await;
    let url = format!("http://{}/{}/k", env.http_addr("refuse"), env.bucket);
    let r = env.raw().send(signed(Method::GET, &url, &[], b"", CLIENT_AK, CLIENT_SK)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (403, Some("InsecureTransport")));
    assert_eq!(r.headers["content-type"], "application/xml");
    env.shutdown().await;
}

#[tokio::test]
async fn plain_http_is_redirected_to_the_same_url_over_https() {
    let env = TestEnv::builder(Backend::Embedded).plain_http(&["redirect"]).start().await;
    let addr = env.http_addr("redirect");
    let url = format!("http://{addr}/{}/some%20key?versionId=abc", env.bucket);
    let r = env.raw().send(Request::builder().uri(&url).body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(r.status.as_u16(), 308);
    let expected = format!("https://127.0.0.1:{}/{}/some%20key?versionId=abc", env.https.port(), env.bucket);
    assert_eq!(r.headers["location"], expected.as_str());
    env.shutdown().await;
}

#[tokio::test]
async fn plain_http_allowed_on_a_sidecar_listener_serves_sdk_requests() {
    let env = TestEnv::builder(Backend::Embedded).plain_http(&["allow"]).start().await;
    let c = s3_client(&format!("http://{}", env.http_addr("allow")), CLIENT_AK, CLIENT_SK, None, None);
    c.put_object().bucket(&env.bucket).key("sidecar").body(ByteStream::from_static(b"over http")).send().await.unwrap();
    let got = c.get_object().bucket(&env.bucket).key("sidecar").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"over http");
    env.shutdown().await;
}

#[tokio::test]
async fn http2_clients_are_served_with_the_authority_as_host() {
    let env = TestEnv::start(Backend::Embedded).await;
    env.client().put_object().bucket(&env.bucket).key("h2").body(ByteStream::from_static(b"two")).send().await.unwrap();
    let url = format!("{}/{}/h2", env.endpoint(), env.bucket);
    let mut req = signed(Method::GET, &url, &[], b"", CLIENT_AK, CLIENT_SK);
    req.headers_mut().remove("host");
    let r = env.raw().send_h2(req).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!((r.status.as_u16(), r.text()), (200, "two".to_owned()));
    env.shutdown().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_both_negotiate() {
    let env = TestEnv::start(Backend::Embedded).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let base = client_tls(&env.ca_pem);
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&env.ca_pem) {
            let c: rustls_pki_types::CertificateDer<'static> = c.unwrap();
            roots.add(c).unwrap();
        }
        drop(base);
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let out = tls_exchange(
            env.https,
            Arc::new(cfg),
            b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 403"), "{version:?}: {out}");
    }
    env.shutdown().await;
}

/// A development CA and certificate for `names`, in a fresh directory.
fn cert_for(names: &[&str]) -> (tempfile::TempDir, s3crypt::server::tls::DevCertificate) {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let c = s3crypt::server::tls::ensure_dev_certificate(dir.path(), &names).unwrap();
    (dir, c)
}

async fn handshake_ok(addr: std::net::SocketAddr, ca: &[u8], sni: &str) -> bool {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(ca)));
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn sni_selects_the_certificate_for_the_requested_name() {
    let (_d1, one) = cert_for(&["one.test"]);
    let (_d2, two) = cert_for(&["two.test", "*.two.test"]);
    let env = TestEnv::builder(Backend::Embedded)
        .certificates(vec![
            (one.files.cert_file.clone(), one.files.key_file.clone()),
            (two.files.cert_file.clone(), two.files.key_file.clone()),
        ])
        .start()
        .await;
    let ca_one = std::fs::read(&one.ca_file).unwrap();
    let ca_two = std::fs::read(&two.ca_file).unwrap();
    assert!(handshake_ok(env.https, &ca_one, "one.test").await);
    assert!(handshake_ok(env.https, &ca_two, "two.test").await);
    assert!(handshake_ok(env.https, &ca_two, "bucket.two.test").await);
    assert!(!handshake_ok(env.https, &ca_two, "one.test").await, "one.test must get certificate one");
    env.shutdown().await;
}

#[tokio::test]
async fn replaced_certificate_files_are_served_to_new_connections_while_open_ones_survive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d1, old) = cert_for(&["rotate.test"]);
    let (_d2, new) = cert_for(&["rotate.test"]);
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = (work.path().join("tls.crt"), work.path().join("tls.key"));
    std::fs::copy(&old.files.cert_file, &cert).unwrap();
    std::fs::copy(&old.files.key_file, &key).unwrap();
    let env = TestEnv::builder(Backend::Embedded).certificates(vec![(cert.clone(), key.clone())]).start().await;
    let old_ca = std::fs::read(&old.ca_file).unwrap();
    let new_ca = std::fs::read(&new.ca_file).unwrap();

    let tcp = tokio::net::TcpStream::connect(env.https).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&old_ca)));
    let mut open =
        connector.connect(rustls_pki_types::ServerName::try_from("rotate.test").unwrap(), tcp).await.unwrap();

    std::fs::copy(&new.files.cert_file, &cert).unwrap();
    std::fs::copy(&new.files.key_file, &key).unwrap();
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if handshake_ok(env.https, &new_ca, "rotate.test").await {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "new handshakes must see the new certificate");
    assert!(!handshake_ok(env.https, &old_ca, "rotate.test").await);

    open.write_all(b"GET / HTTP/1.1\r\nhost: rotate.test\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    open.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 403"), "the open connection still works");
    env.shutdown().await;
}

#[tokio::test]
async fn a_rejected_upload_with_expect_continue_is_answered_before_its_body_is_sent() {
    let env = TestEnv::start(Backend::Embedded).await;
    let url = format!("{}/{}/expect", env.endpoint(), env.bucket);
    let req = signed_with(Method::PUT, &url, &[], b"", CLIENT_AK, "wrong-secret", None, SystemTime::now());
    let mut head = format!("PUT /{}/expect HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n", env.bucket, env.https.port());
    for (k, v) in req.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str("content-length: 104857600\r\nexpect: 100-continue\r\n\r\n");
    let out = tls_exchange(env.https, env.raw().tls_config(), head.as_bytes(), Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(!out.contains("100 Continue"), "no 100 Continue for a rejected request: {out}");
    assert!(out.contains("SignatureDoesNotMatch"));

    let req = signed_with(Method::PUT, &url, &[], b"", CLIENT_AK, CLIENT_SK, None, SystemTime::now());
    let mut head = format!("PUT /{}/expect HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n", env.bucket, env.https.port());
    for (k, v) in req.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str("content-length: 5\r\nexpect: 100-continue\r\n\r\n");
    let out = tls_exchange(env.https, env.raw().tls_config(), head.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 100 Continue"), "an accepted request is invited to send its body: {out}");
    env.shutdown().await;
}

#[tokio::test]
async fn an_upload_in_flight_at_shutdown_completes_and_new_connections_are_refused() {
    let mut env = TestEnv::start(Backend::Embedded).await;
    let url = format!("{}/{}/inflight", env.endpoint(), env.bucket);
    let total = 4 * 65_536u64;
    let req = signed_with(Method::PUT, &url, &[], b"", CLIENT_AK, CLIENT_SK, None, SystemTime::now());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = req.map(|_| ChannelBody { rx, len: total });
    req.headers_mut().insert("content-length", total.into());
    let raw = env.raw();
    let upload = tokio::spawn(async move { raw.send(req).await });
    tx.send(Bytes::from(vec![1u8; 65_536])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    env.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tokio::net::TcpStream::connect(env.https).await.is_err(), "the listener is closed");
    for _ in 0..3 {
        tx.send(Bytes::from(vec![1u8; 65_536])).await.unwrap();
    }
    let r = upload.await.unwrap();
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let got = env.direct.head_object().bucket(&env.bucket).key("inflight").send().await.unwrap();
    let stored = s3crypt::crypto::format::ciphertext_len(total, 65_536);
    assert_eq!(got.content_length(), Some(stored as i64));
    env.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_is_trusted_through_its_ca_file_and_addressed_virtual_hosted_style() {
    // Proxy B (embedded store, virtual-hosted style on s3b.test) is the upstream of proxy A, reached over TLS
    // with B's development CA as upstream.ca_file, bucket in the host name, connecting to 127.0.0.1.
    let a_bucket = crate::common::unique_bucket("chain");
    let b = TestEnv::builder(Backend::Embedded).base_domain("s3b.test").passthrough_bucket(&a_bucket).start().await;
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &b.ca_pem).unwrap();
    let upstream = format!(
        "[upstream]\nendpoint = \"https://s3b.test:{}\"\naddressing = \"virtual\"\nresolve_to = \"127.0.0.1\"\n\
         ca_file = {:?}\naccess_key_id = \"{CLIENT_AK}\"\nsecret_access_key = \"{CLIENT_SK}\"\n\
         system_bucket = \"s3crypt-system-a\"\n",
        b.https.port(),
        ca_file.path()
    );
    let a = TestEnv::builder(Backend::Custom).custom_upstream(upstream, b.client()).bucket(&a_bucket).start().await;
    let c = a.client();
    c.put_object()
        .bucket(&a.bucket)
        .key("chained/obj")
        .body(ByteStream::from_static(b"through two proxies"))
        .send()
        .await
        .unwrap();
    let got = c.get_object().bucket(&a.bucket).key("chained/obj").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"through two proxies");
    assert_eq!(a.stored_keys().await, vec!["chained/obj".to_owned()]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_with_an_untrusted_certificate_is_a_gateway_error() {
    let b = TestEnv::start(Backend::Embedded).await;
    let upstream = format!(
        "[upstream]\nendpoint = \"https://127.0.0.1:{}\"\naccess_key_id = \"{CLIENT_AK}\"\nsecret_access_key = \"{CLIENT_SK}\"\n",
        b.https.port()
    );
    let a = TestEnv::builder(Backend::Custom).custom_upstream(upstream, b.client()).start().await;
    let url = format!("{}/{}/k", a.endpoint(), a.bucket);
    let r = a.raw().send(signed(Method::GET, &url, &[], b"", CLIENT_AK, CLIENT_SK)).await;
    assert_eq!((r.status.as_u16(), r.code().as_deref()), (503, Some("ServiceUnavailable")));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_request_head_over_128_kib_is_refused_with_431_and_a_large_one_under_it_is_parsed() {
    let env = TestEnv::start(Backend::Embedded).await;
    let big = "a".repeat(140 * 1024);
    let head = format!("GET /{}/k HTTP/1.1\r\nHost: localhost\r\nx-filler: {big}\r\n\r\n", env.bucket);
    let out = tls_exchange(env.https, env.raw().tls_config(), head.as_bytes(), Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{}", &out[..out.len().min(200)]);
    // 100 KiB fits: the head is parsed and the (unsigned) request gets an S3 error, not a transport one.
    let fits = "a".repeat(100 * 1024);
    let head = format!("GET /{}/k HTTP/1.1\r\nHost: localhost\r\nx-filler: {fits}\r\n\r\n", env.bucket);
    let out = tls_exchange(env.https, env.raw().tls_config(), head.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 403"), "{}", &out[..out.len().min(200)]);
    env.shutdown().await;
}
