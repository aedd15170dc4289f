//! Hand-built requests the SDKs never send: tampered signatures, injected headers, bad bodies, HTTP/2,
//! plain HTTP, and a raw TLS socket for `Expect: 100-continue`.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use s3crypt::sigv4::sign::{OutboundPayload, UpstreamSigner};
use s3crypt::util::secret::SecretString;
use sha2::Digest;

/// A response, fully read.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl RawResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `<Code>` of an S3 error document.
    pub fn code(&self) -> Option<String> {
        s3crypt::s3::xml::parse_error(&self.body).map(|(c, _)| c)
    }
}

/// Any request body.
pub type AnyBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;
type RawClient = Client<HttpsConnector<HttpConnector>, AnyBody>;

/// Raw HTTP/1.1 and HTTP/2 clients trusting the proxy's CA.
pub struct Raw {
    h1: RawClient,
    h2: RawClient,
    tls: Arc<rustls::ClientConfig>,
}

pub fn client_tls(ca_pem: &[u8]) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.expect("pem")).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Raw {
    pub fn new(ca_pem: &[u8]) -> Raw {
        let tls = client_tls(ca_pem);
        let h1 = Client::builder(TokioExecutor::new()).build(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .build(),
        );
        let h2 = Client::builder(TokioExecutor::new()).http2_only(true).build(
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls.clone()).https_only().enable_http2().build(),
        );
        Raw { h1, h2, tls: Arc::new(tls) }
    }

    async fn run<B>(client: &RawClient, req: Request<B>) -> RawResponse
    where
        B: http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
    {
        let resp = client.request(req.map(BodyExt::boxed_unsync)).await.expect("request");
        let version = resp.version();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        RawResponse { status: parts.status, headers: parts.headers, body, version }
    }

    pub async fn send<B>(&self, req: Request<B>) -> RawResponse
    where
        B: http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
    {
        Self::run(&self.h1, req).await
    }

    pub async fn send_h2<B>(&self, req: Request<B>) -> RawResponse
    where
        B: http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
    {
        Self::run(&self.h2, req).await
    }

    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }
}

/// A request signed like an SDK would, with the body's SHA-256 as payload hash.
pub fn signed(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    ak: &str,
    sk: &str,
) -> Request<Full<Bytes>> {
    signed_with(method, url, headers, body, ak, sk, Some(hex::encode(sha2::Sha256::digest(body))), SystemTime::now())
}

/// A request signed with an explicit payload hash (`None` = UNSIGNED-PAYLOAD) and time.
#[allow(clippy::too_many_arguments)]
pub fn signed_with(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    ak: &str,
    sk: &str,
    payload_hash: Option<String>,
    now: SystemTime,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Full::new(Bytes::copy_from_slice(body))).expect("request");
    let payload = match payload_hash {
        Some(h) => OutboundPayload::Sha256Hex(h),
        None => OutboundPayload::Unsigned,
    };
    UpstreamSigner::new(ak, &SecretString::new(sk.to_owned()), "us-east-1")
        .sign(&mut req, &payload, now)
        .expect("sign");
    req
}

/// Writes `head` (and optionally `body`) on a fresh TLS connection and returns everything read until the
/// server closes or `wait` passes.
pub async fn tls_exchange(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    head: &[u8],
    wait: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut s = connector.connect(name, tcp).await.expect("tls");
    s.write_all(head).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A body that yields its frames one by one with no declared length (sent with Transfer-Encoding: chunked).
pub struct ChunkedBody(pub std::collections::VecDeque<Bytes>);

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A body fed through a channel, with a declared exact length, for requests that stay in flight.
pub struct ChannelBody {
    pub rx: tokio::sync::mpsc::Receiver<Bytes>,
    pub len: u64,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

/// How to spoil a hand-built signed aws-chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    None,
    /// The second chunk's signature is wrong.
    ChunkSignature,
    /// A data byte differs from what was signed (same length).
    Data,
    /// The trailer checksum does not match the data (but is signed).
    TrailerChecksum,
    /// The trailer signature is wrong.
    TrailerSignature,
}

/// A PUT with a signed aws-chunked body (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, or `-TRAILER` with a CRC32C
/// trailer), chunks signed with aws-sigv4 as SDKs do.
pub fn signed_chunked_put(
    url: &str,
    data: &[u8],
    chunk: usize,
    trailer: bool,
    spoil: Spoil,
    ak: &str,
    sk: &str,
) -> Request<Full<Bytes>> {
    use aws_credential_types::Credentials;
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;
    let now = SystemTime::now();
    let payload =
        if trailer { "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" } else { "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" };
    let mut headers = vec![
        ("content-encoding".to_owned(), "aws-chunked".to_owned()),
        ("x-amz-decoded-content-length".to_owned(), data.len().to_string()),
    ];
    if trailer {
        headers.push(("x-amz-trailer".to_owned(), "x-amz-checksum-crc32c".to_owned()));
    }
    let hdrs: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut req = signed_with(http::Method::PUT, url, &hdrs, b"", ak, sk, Some(payload.to_owned()), now);
    let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
    let seed = auth.rsplit("Signature=").next().unwrap().to_owned();
    let identity: Identity = Credentials::new(ak, sk, None, None, "t").into();
    let params = v4::SigningParams::<()>::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(now)
        .settings(())
        .build()
        .unwrap();
    let mut prev = seed;
    let mut wire = Vec::new();
    for (i, c) in data.chunks(chunk).enumerate() {
        let mut sig = v4::sign_chunk(&Bytes::copy_from_slice(c), &prev, &params).unwrap().signature().to_owned();
        prev = sig.clone();
        if spoil == Spoil::ChunkSignature && i == 1 {
            sig = sig.replace(|ch: char| ch.is_ascii_digit(), "0");
        }
        wire.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
        let start = wire.len();
        wire.extend_from_slice(c);
        if spoil == Spoil::Data && i == 0 {
            wire[start] ^= 1;
        }
        wire.extend_from_slice(b"\r\n");
    }
    let final_sig = v4::sign_chunk(&Bytes::new(), &prev, &params).unwrap().signature().to_owned();
    wire.extend_from_slice(format!("0;chunk-signature={final_sig}\r\n").as_bytes());
    if trailer {
        let mut crc = s3crypt::s3::checksum::Checksummer::new(s3crypt::s3::checksum::ChecksumAlgorithm::Crc32c);
        crc.update(data);
        let mut value = s3crypt::s3::checksum::encode_value(&crc.finalize());
        if spoil == Spoil::TrailerChecksum {
            value = "AAAAAA==".to_owned();
        }
        let mut t = aws_smithy_runtime_api::http::Headers::new();
        t.insert("x-amz-checksum-crc32c", value.clone());
        let mut tsig = v4::sign_trailer(&t, &final_sig, &params).unwrap().signature().to_owned();
        if spoil == Spoil::TrailerSignature {
            tsig = "0".repeat(64);
        }
        wire.extend_from_slice(
            format!("x-amz-checksum-crc32c:{value}\r\nx-amz-trailer-signature:{tsig}\r\n").as_bytes(),
        );
    }
    wire.extend_from_slice(b"\r\n");
    req.headers_mut().insert("content-length", wire.len().into());
    *req.body_mut() = Full::new(Bytes::from(wire));
    req
}

/// A SigV4 presigned URL for `url` (which may carry extra query parameters: they are signed too), valid for
/// ten minutes, signing only `host` and UNSIGNED-PAYLOAD, as the SDKs' presigners do.
pub fn presigned_url(method: &Method, url: &str, ak: &str, sk: &str) -> String {
    use aws_sigv4::http_request::{
        PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    let uri: http::Uri = url.parse().expect("url");
    let authority = uri.authority().expect("authority").as_str().to_owned();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(std::time::Duration::from_secs(600));
    let identity = aws_credential_types::Credentials::new(ak, sk, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .expect("params")
        .into();
    let signable = SignableRequest::new(
        method.as_str(),
        url,
        [("host", authority.as_str())].into_iter(),
        SignableBody::UnsignedPayload,
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let mut req = Request::builder().method(method.clone()).uri(url).body(()).expect("request");
    instructions.apply_to_request_http1x(&mut req);
    req.uri().to_string()
}
