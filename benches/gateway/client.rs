//! The load generator's S3 client: hyper over rustls (HTTP/1.1, pooled keep-alive connections), requests signed
//! with SigV4 (`UNSIGNED-PAYLOAD`, as SDKs do over TLS) by the proxy's own outbound signer, bodies generated from
//! one shared buffer (no copies on the client side) and responses counted, not buffered.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use s3crypt::sigv4::sign::{OutboundPayload, UpstreamSigner};
use s3crypt::util::secret::SecretString;

/// Request bodies: nothing, or `len` bytes of the shared pattern in frames of the pattern's size.
pub enum BenchBody {
    Empty,
    Pattern { pattern: Bytes, offset: u64, remaining: u64 },
    Full(Option<Bytes>),
}

impl BenchBody {
    /// `len` bytes starting at `offset` of the infinite repetition of `pattern`.
    pub fn pattern(pattern: &Bytes, offset: u64, len: u64) -> BenchBody {
        BenchBody::Pattern { pattern: pattern.clone(), offset, remaining: len }
    }
}

impl Body for BenchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            BenchBody::Empty => Poll::Ready(None),
            BenchBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BenchBody::Pattern { pattern, offset, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let p = pattern.len() as u64;
                let start = *offset % p;
                let n = (p - start).min(*remaining);
                let frame = pattern.slice(start as usize..(start + n) as usize);
                *offset += n;
                *remaining -= n;
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            BenchBody::Empty => true,
            BenchBody::Full(b) => b.is_none(),
            BenchBody::Pattern { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            BenchBody::Empty => SizeHint::with_exact(0),
            BenchBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            BenchBody::Pattern { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// One system's S3 endpoint as the load generator sees it.
#[derive(Clone)]
pub struct S3 {
    client: Client<Https, BenchBody>,
    /// `scheme://host:port`
    pub base: String,
    signer: Arc<UpstreamSigner>,
}

/// A response: status, the headers we need, and the body (counted; kept only if asked).
pub struct Resp {
    pub etag: Option<String>,
    pub bytes: u64,
    pub body: Option<Vec<u8>>,
}

pub fn tls_config(ca_pem: &[u8]) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// S3's unreserved characters stay; everything else in a query value is percent-encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

pub fn enc(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, QUERY_VALUE).to_string()
}

impl S3 {
    pub fn new(base: &str, ca_pem: &[u8], access_key: &str, secret: &str) -> S3 {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca_pem))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(20))
            .build(https);
        let signer = UpstreamSigner::new(access_key, &SecretString::new(secret.to_owned()), "us-east-1");
        S3 { client, base: base.to_owned(), signer: Arc::new(signer) }
    }

    /// Sends `method /path?query` with `headers` and `body`; `keep` keeps the response body.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: BenchBody,
        keep: bool,
    ) -> Result<Resp, String> {
        let uri = format!("{}{}", self.base, path_and_query);
        let mut b = Request::builder().method(method).uri(&uri);
        let host = self.base.split("://").nth(1).unwrap_or_default().to_owned();
        b = b.header("host", host);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let mut req = b.body(body).map_err(|e| e.to_string())?;
        self.signer
            .sign(&mut req, &OutboundPayload::Unsigned, SystemTime::now())
            .map_err(|e| format!("sign: {e:?}"))?;
        let resp = self.client.request(req).await.map_err(|e| format!("{uri}: {e:?}"))?;
        let status = resp.status().as_u16();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{uri}: body: {e}"))?;
            if let Ok(d) = frame.into_data() {
                bytes += d.len() as u64;
                if keep || status >= 300 {
                    kept.extend_from_slice(&d);
                }
            }
        }
        if status >= 300 {
            return Err(format!("{uri}: HTTP {status}: {}", String::from_utf8_lossy(&kept)));
        }
        Ok(Resp { etag, bytes, body: keep.then_some(kept) })
    }

    pub async fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        self.send(Method::PUT, &format!("/{bucket}"), &[], BenchBody::Empty, false).await.map(|_| ())
    }

    pub async fn put(&self, bucket: &str, key: &str, pattern: &Bytes, len: u64) -> Result<Resp, String> {
        let body = BenchBody::pattern(pattern, 0, len);
        let headers = [("content-type", "application/octet-stream".to_owned())];
        self.send(Method::PUT, &format!("/{bucket}/{key}"), &headers, body, false).await
    }

    pub async fn get(&self, bucket: &str, key: &str, range: Option<(u64, u64)>, keep: bool) -> Result<Resp, String> {
        let headers: Vec<(&str, String)> = match range {
            Some((first, last)) => vec![("range", format!("bytes={first}-{last}"))],
            None => vec![],
        };
        self.send(Method::GET, &format!("/{bucket}/{key}"), &headers, BenchBody::Empty, keep).await
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), String> {
        self.send(Method::DELETE, &format!("/{bucket}/{key}"), &[], BenchBody::Empty, false).await.map(|_| ())
    }

    /// The first 1,000 keys in the bucket.
    pub async fn list(&self, bucket: &str) -> Result<Vec<String>, String> {
        let r = self.send(Method::GET, &format!("/{bucket}?list-type=2"), &[], BenchBody::Empty, true).await?;
        let xml = String::from_utf8_lossy(r.body.as_deref().unwrap_or_default()).into_owned();
        Ok(xml_values(&xml, "Key"))
    }

    /// Deletes every object, then the bucket (frees the store's disk between rounds).
    pub async fn remove_bucket(&self, bucket: &str) -> Result<(), String> {
        loop {
            let keys = self.list(bucket).await?;
            if keys.is_empty() {
                break;
            }
            for k in keys {
                self.delete(bucket, &k).await?;
            }
        }
        self.send(Method::DELETE, &format!("/{bucket}"), &[], BenchBody::Empty, false).await.map(|_| ())
    }

    /// A multipart upload of `len` bytes in `part` byte parts, `parallel` parts in flight.
    pub async fn multipart(
        &self,
        bucket: &str,
        key: &str,
        pattern: &Bytes,
        len: u64,
        part: u64,
        parallel: usize,
    ) -> Result<(), String> {
        let r = self.send(Method::POST, &format!("/{bucket}/{key}?uploads"), &[], BenchBody::Empty, true).await?;
        let xml = String::from_utf8_lossy(r.body.as_deref().unwrap_or_default()).into_owned();
        let upload_id = xml_values(&xml, "UploadId").into_iter().next().ok_or("no UploadId")?;
        let parts = len.div_ceil(part);
        let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let mut tasks = Vec::new();
        for _ in 0..parallel {
            let (s3, next, pattern, bucket, key, id) =
                (self.clone(), next.clone(), pattern.clone(), bucket.to_owned(), key.to_owned(), upload_id.clone());
            tasks.push(tokio::spawn(async move {
                let mut etags = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n > parts {
                        return Ok::<_, String>(etags);
                    }
                    let off = (n - 1) * part;
                    let body = BenchBody::pattern(&pattern, off, part.min(len - off));
                    let q = format!("/{bucket}/{key}?partNumber={n}&uploadId={}", enc(&id));
                    let r = s3.send(Method::PUT, &q, &[], body, false).await?;
                    etags.push((n, r.etag.ok_or("part without ETag")?));
                }
            }));
        }
        let mut etags = Vec::new();
        for t in tasks {
            etags.extend(t.await.map_err(|e| e.to_string())??);
        }
        etags.sort();
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, e) in &etags {
            xml.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let q = format!("/{bucket}/{key}?uploadId={}", enc(&upload_id));
        let r = self.send(Method::POST, &q, &[], BenchBody::Full(Some(Bytes::from(xml))), true).await?;
        let body = String::from_utf8_lossy(r.body.as_deref().unwrap_or_default()).into_owned();
        if body.contains("<Error>") {
            return Err(format!("CompleteMultipartUpload: {body}"));
        }
        Ok(())
    }
}

/// The text of every `<tag>...</tag>` in a small XML document.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].replace("&quot;", "\"").replace("&amp;", "&"));
        rest = &after[j + close.len()..];
    }
    out
}

/// Runs `total` operations with `concurrency` workers; `op(i)` is operation i. Returns each latency and the
/// wall-clock time of the whole batch.
pub async fn run_concurrent<F, Fut>(
    total: usize,
    concurrency: usize,
    op: F,
) -> Result<(Vec<Duration>, Duration), String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, String>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok((all, started.elapsed()))
}
