//! Faults with real servers (SeaweedFS, moto's KMS), each followed by reading the store directly to show that no
//! partial or corrupt object exists: a client that vanishes mid-upload (single PUT and multipart part), the store's
//! connection reset mid-upload and mid-download, a store answering 500/503 or too slowly or going silent
//! mid-response, a KMS too slow.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use http::Method;
use tokio::io::AsyncWriteExt;

use crate::common::raw::signed_with;
use crate::common::relay::{Fault, Relay};
use crate::common::{Backend, CLIENT_AK, CLIENT_SK, TestEnv, data};

const MIB: usize = 1024 * 1024;

/// A proxy whose upstream is SeaweedFS behind a fault relay; `extra` goes into `[upstream]`.
async fn env_behind_relay(extra: &str) -> (TestEnv, Relay) {
    let (store, ak, sk) = crate::common::seaweedfs();
    let relay = Relay::start(&store).await;
    let upstream = format!(
        "[upstream]\nendpoint = \"{}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n{extra}",
        relay.url()
    );
    let direct = crate::common::s3_client(&store, &ak, &sk, None, None);
    let env = TestEnv::builder(Backend::Custom).custom_upstream(upstream, direct).start().await;
    (env, relay)
}

/// Sends a signed PUT head declaring `declared` bytes, then `sent` bytes of body, then drops the connection.
async fn put_and_vanish(env: &TestEnv, path_and_query: &str, declared: usize, sent: usize) {
    let url = format!("{}{path_and_query}", env.endpoint());
    let req = signed_with(Method::PUT, &url, &[], b"", CLIENT_AK, CLIENT_SK, None, std::time::SystemTime::now());
    let mut head = format!("PUT {path_and_query} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n", env.https.port());
    for (k, v) in req.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str(&format!("content-length: {declared}\r\n\r\n"));
    let tcp = tokio::net::TcpStream::connect(env.https).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(env.raw().tls_config());
    let mut s = connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = data(64 * 1024, 9);
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s); // no close_notify, no rest of the body: the client is gone
}

/// Waits a little for the proxy to notice, then lists what the store holds.
async fn settled_keys(env: &TestEnv) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(700)).await;
    env.stored_keys().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_upload_leaves_no_object_and_no_part() {
    let (env, _relay) = env_behind_relay("").await;
    let b = env.bucket.clone();
    put_and_vanish(&env, &format!("/{b}/vanished/single"), 8 * MIB, 3 * MIB).await;
    assert_eq!(settled_keys(&env).await, Vec::<String>::new(), "a single PUT cut short stores nothing");

    let c = env.client();
    let up = c.create_multipart_upload().bucket(&b).key("vanished/mp").send().await.unwrap();
    let id = up.upload_id().unwrap().to_owned();
    let q = format!(
        "/{b}/vanished/mp?partNumber=1&uploadId={}",
        id.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
    );
    put_and_vanish(&env, &q, 6 * MIB, 2 * MIB).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let parts = c.list_parts().bucket(&b).key("vanished/mp").upload_id(&id).send().await.unwrap();
    assert!(parts.parts().is_empty(), "a part cut short is not stored: {:?}", parts.parts());
    // The upload is still usable: the part sent again completes it, byte-exact.
    let body = data(6 * MIB, 4);
    let p = c
        .upload_part()
        .bucket(&b)
        .key("vanished/mp")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .parts(aws_sdk_s3::types::CompletedPart::builder().part_number(1).e_tag(p.e_tag().unwrap()).build())
        .build();
    c.complete_multipart_upload()
        .bucket(&b)
        .key("vanished/mp")
        .upload_id(&id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    let got = c.get_object().bucket(&b).key("vanished/mp").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    assert_eq!(settled_keys(&env).await, vec!["vanished/mp".to_owned()]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_connection_reset_mid_upload_is_a_gateway_error_and_stores_nothing() {
    let (env, relay) = env_behind_relay("").await;
    let c = env.client();
    relay.set(Fault::ResetAfterUp(2 * MIB as u64));
    let e = c
        .put_object()
        .bucket(&env.bucket)
        .key("reset/up")
        .body(ByteStream::from(data(8 * MIB, 1)))
        .send()
        .await
        .unwrap_err();
    let status = e.raw_response().map(|r| r.status().as_u16());
    assert!(matches!(status, Some(502 | 503)), "{status:?}: {e:?}");
    assert!(relay.resets() >= 1);
    relay.set(Fault::None);
    assert_eq!(settled_keys(&env).await, Vec::<String>::new());
    // and the next upload goes through on a fresh connection
    c.put_object().bucket(&env.bucket).key("reset/after").body(ByteStream::from(data(MIB, 2))).send().await.unwrap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_connection_reset_mid_download_never_ends_as_a_clean_short_body() {
    let (env, relay) = env_behind_relay("").await;
    let c = env.client();
    let body = data(8 * MIB, 3);
    c.put_object().bucket(&env.bucket).key("reset/down").body(ByteStream::from(body.clone())).send().await.unwrap();
    relay.set(Fault::ResetAfterDown(3 * MIB as u64));
    let result = match c.get_object().bucket(&env.bucket).key("reset/down").send().await {
        Ok(out) => out.body.collect().await.map(|b| b.into_bytes().len()).map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e:?}")),
    };
    assert!(result.is_err(), "a cut download must fail at the client, got {result:?} bytes");
    relay.set(Fault::None);
    let got = c.get_object().bucket(&env.bucket).key("reset/down").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body, "the object itself is intact");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_answering_500_or_503_gives_the_client_that_retryable_s3_error_and_stores_nothing() {
    for (status, code) in [(503u16, "SlowDown"), (500, "InternalError")] {
        let (store, ak, sk) = crate::common::seaweedfs();
        let body: &'static str = if status == 503 {
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request \
             rate.</Message></Error>"
        } else {
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an \
             internal error.</Message></Error>"
        };
        let intercept: crate::common::forward::Intercept = std::sync::Arc::new(move |req| {
            (req.method() == Method::PUT && req.uri().path().contains("/faulty/")).then_some((status, body))
        });
        let fwd = crate::common::forward::Forwarder::start(&store, Some(intercept)).await;
        let upstream = format!(
            "[upstream]\nendpoint = \"{}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n",
            fwd.url()
        );
        let direct = crate::common::s3_client(&store, &ak, &sk, None, None);
        let env = TestEnv::builder(Backend::Custom).custom_upstream(upstream, direct).start().await;
        let c = env.client();
        let e = c
            .put_object()
            .bucket(&env.bucket)
            .key("faulty/obj")
            .body(ByteStream::from(data(MIB, 1)))
            .send()
            .await
            .unwrap_err();
        use aws_sdk_s3::error::ProvideErrorMetadata;
        let got_status = e.raw_response().map(|r| r.status().as_u16());
        assert_eq!((got_status, e.code()), (Some(status), Some(code)), "{e:?}");
        assert!(env.stored_keys().await.is_empty());
        // Reads still work meanwhile.
        c.put_object().bucket(&env.bucket).key("fine/obj").body(ByteStream::from_static(b"ok")).send().await.unwrap();
        env.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_slower_than_the_response_deadline_is_a_gateway_timeout() {
    let (env, relay) = env_behind_relay("response_timeout = \"1s\"\n").await;
    let c = env.client();
    c.put_object().bucket(&env.bucket).key("slow/obj").body(ByteStream::from_static(b"slow")).send().await.unwrap();
    relay.set(Fault::StallDown(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let e = c.get_object().bucket(&env.bucket).key("slow/obj").send().await.unwrap_err();
    use aws_sdk_s3::error::ProvideErrorMetadata;
    assert_eq!((e.raw_response().map(|r| r.status().as_u16()), e.code()), (Some(504), Some("GatewayTimeout")));
    assert!(started.elapsed() < Duration::from_millis(2500), "answered at the deadline: {:?}", started.elapsed());
    relay.set(Fault::None);
    tokio::time::sleep(Duration::from_secs(3)).await; // let the stalled answer drain
    let got = c.get_object().bucket(&env.bucket).key("slow/obj").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"slow");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_slower_than_its_timeout_is_503_with_nothing_written_and_reads_once_it_recovers() {
    use aws_sdk_s3::types::ServerSideEncryption;
    let relay = Relay::start(&crate::common::kms_endpoint()).await;
    let key = crate::common::create_kms_key().await;
    let env = TestEnv::builder(Backend::SeaweedFs)
        .kms(&relay.url(), &key, "bucket_key = false\ntimeout = \"1s\"\n")
        .start()
        .await;
    let c = env.client();
    let put = |k: &'static str| {
        c.put_object()
            .bucket(&env.bucket)
            .key(k)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .body(ByteStream::from(data(100_000, 5)))
    };
    put("kms/before").send().await.unwrap();
    relay.set(Fault::StallDown(Duration::from_secs(5)));
    let started = std::time::Instant::now();
    let e = put("kms/slow").send().await.unwrap_err();
    use aws_sdk_s3::error::ProvideErrorMetadata;
    assert_eq!((e.raw_response().map(|r| r.status().as_u16()), e.code()), (Some(503), Some("ServiceUnavailable")));
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the KMS timeouts: {:?}", started.elapsed());
    assert_eq!(env.stored_keys().await, vec!["kms/before".to_owned()], "nothing written for the failed PUT");
    relay.set(Fault::None);
    tokio::time::sleep(Duration::from_secs(5)).await; // stalled answers drain
    let got = c.get_object().bucket(&env.bucket).key("kms/before").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), data(100_000, 5));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_goes_silent_mid_download_fails_the_response_at_the_deadline_instead_of_hanging() {
    // (3 s, not 1: what sits in the socket buffers when the upload's last byte is written takes the relay a
    // moment to deliver, and that counts as the store's silence.)
    let (env, relay) = env_behind_relay("response_timeout = \"3s\"\n").await;
    let c = env.client();
    let body = data(4 * MIB, 6);
    c.put_object().bucket(&env.bucket).key("silent/obj").body(ByteStream::from(body.clone())).send().await.unwrap();
    relay.set(Fault::FreezeAfterDown(MIB as u64));
    let started = std::time::Instant::now();
    let get = async {
        match c.get_object().bucket(&env.bucket).key("silent/obj").send().await {
            Ok(out) => out.body.collect().await.map(|b| b.into_bytes().len()).map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:?}")),
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(10), get).await.unwrap_or_else(|_| Err("hung".into()));
    assert!(result.is_err(), "a frozen download must fail, got {result:?}");
    assert!(started.elapsed() < Duration::from_secs(7), "at the deadline, not later: {:?}", started.elapsed());
    relay.set(Fault::None);
    let got = c.get_object().bucket(&env.bucket).key("silent/obj").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_slower_than_the_response_deadline_still_succeeds_while_it_makes_progress() {
    // The deadline bounds the store's silence, not the transfer: a 4-second upload against a 1.5-second deadline.
    let (env, _relay) = env_behind_relay("response_timeout = \"1500ms\"\n").await;
    let url = format!("{}/{}/slow/upload", env.endpoint(), env.bucket);
    let req = signed_with(Method::PUT, &url, &[], b"", CLIENT_AK, CLIENT_SK, None, std::time::SystemTime::now());
    let body = data(10 * 100_000, 8);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = req.map(|_| crate::common::raw::ChannelBody { rx, len: body.len() as u64 });
    let chunks: Vec<bytes::Bytes> = body.chunks(100_000).map(bytes::Bytes::copy_from_slice).collect();
    tokio::spawn(async move {
        for c in chunks {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if tx.send(c).await.is_err() {
                return;
            }
        }
    });
    let r = env.raw().send(req).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let got = env.client().get_object().bucket(&env.bucket).key("slow/upload").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    env.shutdown().await;
}
