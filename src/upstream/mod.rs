//! The upstream S3: a pooled hyper-util client over rustls (system roots plus an optional custom CA),
//! connect and response deadlines, upstream URL building (path or virtual-hosted style) and re-signing.

#[cfg(feature = "embedded")]
pub mod embedded;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Addressing, UpstreamSettings};
use crate::error::ProxyError;
use crate::s3::Target;
use crate::s3::error::RequestError;
use crate::sigv4::sign::{OutboundPayload, UpstreamSigner};

/// Request bodies sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, ProxyError>;

/// Response bodies from upstream: a store that goes silent mid-body for `upstream.response_timeout` fails the
/// body with `UpstreamTimeout` (the client's response is aborted, never ended cleanly).
pub type UpstreamIncoming = crate::util::body::IdleTimeout<Incoming, ProxyError>;

/// Name resolution for the upstream: the system resolver, or a fixed address (`upstream.resolve_to`, like curl's
/// `--resolve`: for private endpoints and split-horizon DNS; the Host header and TLS name stay the endpoint's).
#[derive(Clone)]
pub enum UpstreamResolver {
    System(GaiResolver),
    Fixed(std::net::IpAddr),
}

type ResolveFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<std::net::SocketAddr>, std::io::Error>> + Send>>;

impl tower_service::Service<Name> for UpstreamResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), std::io::Error>> {
        match self {
            UpstreamResolver::System(r) => r.poll_ready(cx),
            UpstreamResolver::Fixed(_) => std::task::Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, name: Name) -> ResolveFuture {
        match self {
            UpstreamResolver::System(r) => {
                let fut = r.call(name);
                Box::pin(async move { Ok(fut.await?.collect::<Vec<_>>().into_iter()) })
            }
            UpstreamResolver::Fixed(ip) => {
                let addr = std::net::SocketAddr::new(*ip, 0);
                Box::pin(async move { Ok(vec![addr].into_iter()) })
            }
        }
    }
}

/// A configured upstream S3 endpoint.
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector<UpstreamResolver>>, UpstreamBody>,
    scheme: http::uri::Scheme,
    /// `host[:port]` as it goes in URLs and the Host header (default ports omitted).
    authority: String,
    addressing: Addressing,
    signer: UpstreamSigner,
    response_timeout: std::time::Duration,
}

/// Builds the rustls client configuration: system roots, plus `ca_file` if given.
fn client_tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("upstream.ca_file {}: no certificate found", path.display()));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // ALPN (http/1.1) is set by the hyper-rustls connector builder.
    Ok(cfg)
}

impl Upstream {
    /// A client for `endpoint` (scheme and authority only) signing with `credentials`.
    pub fn new(
        settings: &UpstreamSettings,
        endpoint: &Uri,
        credentials: Arc<crate::sigv4::credentials::StoreCredentials>,
    ) -> Result<Upstream, String> {
        let scheme = endpoint.scheme().cloned().ok_or("upstream endpoint has no scheme")?;
        let host = endpoint.host().ok_or("upstream endpoint has no host")?;
        let default_port = if scheme == http::uri::Scheme::HTTPS { 443 } else { 80 };
        let authority = match endpoint.port_u16() {
            Some(p) if p != default_port => format!("{host}:{p}"),
            _other => host.to_owned(),
        };
        let resolver = match settings.resolve_to {
            Some(ip) => UpstreamResolver::Fixed(ip),
            None => UpstreamResolver::System(GaiResolver::new()),
        };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let tls = client_tls(settings.ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            // Bounds what an upload queues towards a slow store (and a download reads ahead of the client).
            .http1_max_buf_size(crate::util::HTTP1_MAX_BUF)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Upstream {
            client,
            scheme,
            authority,
            addressing: settings.addressing,
            signer: UpstreamSigner::with_credentials(credentials, &settings.region),
            response_timeout: settings.response_timeout,
        })
    }

    /// The upstream URI for a target and an already-encoded query (without `?`), and the Host header value.
    pub fn uri_for(&self, target: &Target, query: &str) -> Result<(Uri, String), ProxyError> {
        let virtual_style = self.addressing == Addressing::Virtual && target.bucket.is_some();
        let host = match (&target.bucket, virtual_style) {
            (Some(b), true) => {
                crate::s3::validate_bucket_name(b, false)?;
                format!("{b}.{}", self.authority)
            }
            _other => self.authority.clone(),
        };
        let mut s = format!("{}://{host}{}", self.scheme, target.upstream_path(virtual_style));
        if !query.is_empty() {
            s.push('?');
            s.push_str(query);
        }
        let uri = s.parse::<Uri>().map_err(|_| RequestError::InvalidUri)?;
        Ok((uri, host))
    }

    /// Signs and sends a request and waits for the response head. The deadline (`upstream.response_timeout`)
    /// bounds the upstream's silence, not the transfer: it runs while the upstream neither takes more of the
    /// request body nor answers, and is stopped while the body waits on its own source (the client).
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
        payload: &OutboundPayload,
    ) -> Result<Response<UpstreamIncoming>, ProxyError> {
        self.signer.sign(&mut req, payload, SystemTime::now())?;
        let started = std::time::Instant::now();
        let progress = Arc::new(SendProgress::new(started));
        let watched = Arc::clone(&progress);
        let req = req.map(move |b| http_body_util::BodyExt::boxed_unsync(ProgressBody { inner: b, progress: watched }));
        let mut fut = std::pin::pin!(self.client.request(req));
        let result = loop {
            let deadline = progress.deadline(self.response_timeout);
            tokio::select! {
                r = &mut fut => break Some(r),
                () = tokio::time::sleep_until(deadline.into()) => {
                    if progress.stalled(self.response_timeout) {
                        break None;
                    }
                }
            }
        };
        match result {
            None => {
                crate::metrics::upstream_error("timeout");
                Err(ProxyError::UpstreamTimeout)
            }
            Some(Ok(resp)) => {
                crate::metrics::upstream_done(started.elapsed());
                let idle = self.response_timeout;
                Ok(resp.map(|b| UpstreamIncoming::new(b, idle, ProxyError::UpstreamTimeout)))
            }
            Some(Err(e)) => {
                let err = classify_send_error(&e);
                match &err {
                    ProxyError::UpstreamUnavailable(_) => crate::metrics::upstream_error("connect"),
                    ProxyError::UpstreamProtocol(_) => crate::metrics::upstream_error("protocol"),
                    _ours => {} // our own body failed (a client error), not the upstream's
                }
                Err(err)
            }
        }
    }
}

/// When the upstream last made progress on a request being sent (took a body frame, or the body ended), and
/// whether the body is meanwhile waiting on its own source, which is not the upstream's delay.
struct SendProgress {
    base: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
    waiting_on_source: std::sync::atomic::AtomicBool,
}

impl SendProgress {
    fn new(base: std::time::Instant) -> SendProgress {
        SendProgress { base, last_ms: 0.into(), waiting_on_source: false.into() }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn deadline(&self, timeout: std::time::Duration) -> std::time::Instant {
        let last = std::time::Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.base + last + timeout
    }

    fn stalled(&self, timeout: std::time::Duration) -> bool {
        if self.waiting_on_source.load(std::sync::atomic::Ordering::Relaxed) {
            self.touch(); // our own source is slow (bounded by its own deadline): restart the upstream's clock
            return false;
        }
        std::time::Instant::now() >= self.deadline(timeout)
    }
}

pin_project_lite::pin_project! {
    /// The request body as hyper pulls it towards the upstream, reporting progress to [`SendProgress`].
    struct ProgressBody {
        #[pin]
        inner: UpstreamBody,
        progress: Arc<SendProgress>,
    }
}

impl http_body::Body for ProgressBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, ProxyError>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let this = self.project();
        // hyper asks for more: the upstream took what it was given.
        this.progress.touch();
        let polled = this.inner.poll_frame(cx);
        this.progress.waiting_on_source.store(polled.is_pending(), Relaxed);
        if polled.is_ready() {
            this.progress.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A failed send: our own body error (a failed verification aborted the upload) wins; otherwise it is the
/// upstream's fault.
fn classify_send_error(e: &hyper_util::client::legacy::Error) -> ProxyError {
    if let Some(ours) = ProxyError::find_in(e) {
        return ours.clone();
    }
    if e.is_connect() {
        ProxyError::UpstreamUnavailable(format!("{e:?}"))
    } else {
        ProxyError::UpstreamProtocol(format!("{e:?}"))
    }
}
