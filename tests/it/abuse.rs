//! Abuse limits: slowloris heads and bodies, idle connections at the connection limit, request floods, addresses
//! that keep failing authentication. Each ends within its deadline with S3's answer where one is possible, stores
//! nothing, and leaves other clients served.

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::raw::signed_with;
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, TestEnv};

async fn tls_to(env: &TestEnv) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(env.https).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(env.raw().tls_config());
    connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// A TLS connection to the proxy from a chosen loopback source address.
async fn tls_from(env: &TestEnv, source: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(env.https).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(env.raw().tls_config());
    connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// Reads until the server closes or `wait` passes; returns what was read and when it ended.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S, wait: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(wait.saturating_sub(started.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_body_that_stalls_gets_request_timeout_and_nothing_is_stored() {
    let env = TestEnv::builder(Backend::Embedded).server_setting("body_read_timeout = \"1s\"").start().await;
    let path = format!("/{}/slowloris/body", env.bucket);
    let url = format!("{}{path}", env.endpoint());
    let req = signed_with(Method::PUT, &url, &[], b"", CLIENT_AK, CLIENT_SK, None, SystemTime::now());
    let mut head = format!("PUT {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n", env.https.port());
    for (k, v) in req.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str("content-length: 1048576\r\n\r\n");
    let mut s = tls_to(&env).await;
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[7u8; 1000]).await.unwrap(); // then nothing more
    let (out, took) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("<Code>RequestTimeout</Code>"), "{out}");
    assert!(took < Duration::from_secs(4), "answered at the deadline, not later: {took:?}");
    assert!(env.stored_keys().await.is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_at_the_header_deadline_while_other_clients_are_served() {
    let env = TestEnv::builder(Backend::Embedded).server_setting("header_read_timeout = \"1s\"").start().await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tls_to(&env).await;
        s.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nx-a: ").await.unwrap();
        slow.push(s);
    }
    // Meanwhile an ordinary client works.
    let c = env.client();
    c.put_object().bucket(&env.bucket).key("fine").body(ByteStream::from_static(b"ok")).send().await.unwrap();
    for mut s in slow {
        let (_, took) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(took < Duration::from_secs(4), "a dribbling head is cut at its deadline: {took:?}");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_connection_limit_cannot_lock_out_a_client_for_longer_than_the_handshake_deadline() {
    let env = TestEnv::builder(Backend::Embedded)
        .server_setting("max_connections = 3")
        .server_setting("header_read_timeout = \"1s\"")
        .server_setting("tls_handshake_timeout = \"1s\"")
        .start()
        .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(env.https).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let c = env.client();
    c.put_object().bucket(&env.bucket).key("after-idle").body(ByteStream::from_static(b"ok")).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    drop(idle);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_past_its_rate_gets_slow_down_while_another_client_is_served() {
    use crate::common::{LIMITED_AK, LIMITED_SK};
    let env = TestEnv::builder(Backend::Embedded).limited_client_rate(50).start().await;
    let flooder = env.client_as(LIMITED_AK, LIMITED_SK);
    let other = env.client();
    let bucket = env.bucket.clone();
    // 2,000 tiny requests as fast as 64 connections allow, against a limit of 50 per second.
    let flood_started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (c, b) = (flooder.clone(), bucket.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut slow) = (0u32, 0u32);
            for i in 0..32 {
                match c.head_object().bucket(&b).key(format!("nothing-{w}-{i}")).send().await {
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 503) => {
                        let retry_after = e.raw_response().and_then(|r| r.headers().get("retry-after"));
                        assert_eq!(retry_after, Some("1"));
                        slow += 1;
                    }
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => ok += 1,
                    other => panic!("{other:?}"),
                }
            }
            (ok, slow)
        }));
    }
    // Meanwhile the other client, unlimited, is served every time.
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(1) {
        other.put_object().bucket(&bucket).key("other").body(ByteStream::from_static(b"fine")).send().await.unwrap();
        served += 1;
    }
    let (mut ok, mut slow) = (0, 0);
    for t in tasks {
        let (o, s) = t.await.unwrap();
        ok += o;
        slow += s;
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    assert_eq!(ok + slow, 64 * 32);
    // Served: the burst (one second's worth) plus the rate over the flood's duration, however slow the machine.
    let allowed = 50.0 * (1.0 + flood_secs.ceil());
    assert!(f64::from(ok) <= allowed, "{ok} served in {flood_secs:.1} s, more than the rate allows ({allowed})");
    assert!(slow > 0, "the flood past the rate is refused: {ok} served, {slow} SlowDown");
    assert!(ok >= 50, "the burst and the rate are served: {ok}");
    assert!(served > 0);
    // A SlowDown is a well-formed S3 error.
    let e = flooder.list_objects_v2().bucket(&bucket).send().await;
    if let Err(e) = e {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        assert_eq!(e.code(), Some("SlowDown"), "{e:?}");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_failing_authentication_gets_slow_down_unverified_while_other_addresses_are_served() {
    let env = TestEnv::builder(Backend::Embedded).server_setting("auth_failures_per_address = 5").start().await;
    let path = format!("/{}/guess", env.bucket);
    let url = format!("{}{path}", env.endpoint());
    let mut answers = Vec::new();
    // From 127.0.0.2: requests signed with a wrong secret, as fast as one client goes.
    for _ in 0..30 {
        let req = signed_with(Method::GET, &url, &[], b"", CLIENT_AK, "not-the-secret", None, SystemTime::now());
        let mut head = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nconnection: close\r\n", env.https.port());
        for (k, v) in req.headers() {
            head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
        }
        head.push_str("\r\n");
        let mut s = tls_from(&env, "127.0.0.2").await;
        s.write_all(head.as_bytes()).await.unwrap();
        let (out, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        answers.push(out);
    }
    let refused = |a: &String| a.starts_with("HTTP/1.1 403") && a.contains("<Code>SignatureDoesNotMatch</Code>");
    let slowed = |a: &String| a.starts_with("HTTP/1.1 503") && a.contains("<Code>SlowDown</Code>");
    assert!(answers.iter().all(|a| refused(a) || slowed(a)), "{answers:?}");
    assert!(answers[..5].iter().all(refused), "the first failures are verified and refused");
    assert!(answers.iter().filter(|a| slowed(a)).count() >= 10, "then the address is slowed down: {answers:?}");
    // Meanwhile a client from another address is served.
    let c = env.client();
    c.put_object().bucket(&env.bucket).key("fine").body(ByteStream::from_static(b"ok")).send().await.unwrap();
    assert_eq!(env.stored_keys().await, vec!["fine".to_owned()]);
    env.shutdown().await;
}

/// Sends a head of our own making on a fresh TLS connection and returns the status line's code (0: none).
async fn status_of(env: &TestEnv, head: &str) -> u16 {
    let mut s = tls_to(env).await;
    s.write_all(head.as_bytes()).await.unwrap();
    let (text, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn sizes_and_ranges_up_to_2_pow_64_minus_1_get_s3_answers_not_overflows() {
    let env = TestEnv::start(Backend::Embedded).await;
    let c = env.client();
    let b = env.bucket.clone();
    let body = crate::common::data(150_000, 4);
    c.put_object().bucket(&b).key("o").body(ByteStream::from(body.clone())).send().await.unwrap();
    let max = u64::MAX;
    for (range, want) in [
        (format!("bytes=0-{max}"), Some(&body[..])),
        (format!("bytes=100-{max}"), Some(&body[100..])),
        (format!("bytes=-{max}"), Some(&body[..])),
        (format!("bytes={}-{max}", max - 1), None),
        (format!("bytes={max}-"), None),
    ] {
        let r = c.get_object().bucket(&b).key("o").range(&range).send().await;
        match want {
            Some(w) => assert_eq!(&r.expect(&range).body.collect().await.unwrap().into_bytes()[..], w, "{range}"),
            None => {
                let e = r.unwrap_err();
                assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(416), "{range}");
            }
        }
    }
    // Declared body lengths beyond any object (5 TiB): refused before any arithmetic, nothing stored.
    let url = format!("{}/{b}/huge", env.endpoint());
    let over = (5u64 << 40) + 1;
    for (length, decoded) in [(max, None), (over, None), (100, Some(max)), (100, Some(over))] {
        let mut extra = Vec::new();
        let decoded_text = decoded.map(|d| d.to_string());
        let mut payload = None;
        if let Some(d) = &decoded_text {
            extra = vec![("x-amz-decoded-content-length", d.as_str()), ("content-encoding", "aws-chunked")];
            payload = Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER".to_owned());
        }
        let signed = signed_with(Method::PUT, &url, &extra, b"", CLIENT_AK, CLIENT_SK, payload, SystemTime::now());
        let mut head = format!("PUT /{b}/huge HTTP/1.1\r\n");
        for (n, v) in signed.headers() {
            if n != "content-length" {
                head.push_str(&format!("{n}: {}\r\n", v.to_str().unwrap()));
            }
        }
        head.push_str(&format!("content-length: {length}\r\n\r\n"));
        let status = status_of(&env, &head).await;
        // hyper's parser itself refuses a Content-Length of 2^64 - 1 (431); the rest is EntityTooLarge.
        let expected: &[u16] = if length == max { &[400, 431] } else { &[400] };
        assert!(expected.contains(&status), "content-length {length}, decoded {decoded:?}: {status}");
    }
    let listed = env.direct.list_objects_v2().bucket(&b).send().await.unwrap();
    assert_eq!(listed.contents().len(), 1, "only the first object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_its_small_body_is_read_gets_its_answer_and_keeps_its_connection() {
    // Refused in the front door (SSE-S3 and SSE-C together), with the body still arriving: the proxy reads the
    // rest of a small body instead of closing, so the client is not reset before it reads the 400 and the
    // connection serves the next request.
    let env = TestEnv::start(Backend::Embedded).await;
    let path = format!("/{}/refused", env.bucket);
    let url = format!("{}{path}", env.endpoint());
    let body = vec![5u8; 200_000];
    let conflict = [
        ("x-amz-server-side-encryption", "AES256"),
        ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ("x-amz-server-side-encryption-customer-key", "pO3upElrwuEXSoFwCfnZPdSsmt/xWeFa0N9KgDijwVs="),
        ("x-amz-server-side-encryption-customer-key-md5", "DWygnHRtgiJ77HCm+1rvHw=="),
    ];
    let req = signed_with(Method::PUT, &url, &conflict, &body, CLIENT_AK, CLIENT_SK, None, SystemTime::now());
    let mut head = format!("PUT {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n", env.https.port());
    for (k, v) in req.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut s = tls_to(&env).await;
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let get = signed_with(
        Method::GET,
        &format!("{}/{}", env.endpoint(), env.bucket),
        &[],
        b"",
        CLIENT_AK,
        CLIENT_SK,
        None,
        SystemTime::now(),
    );
    let mut second = format!("GET /{} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n", env.bucket, env.https.port());
    for (k, v) in get.headers() {
        second.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    second.push_str("connection: close\r\n\r\n");
    s.write_all(second.as_bytes()).await.unwrap();
    let (out, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("<Code>InvalidArgument</Code>"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("connection: close\r\n\r\n<?xml"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 2, "the second request was answered on the same connection: {out}");
    assert!(out.contains("ListBucketResult"), "{out}");
    env.shutdown().await;
}
