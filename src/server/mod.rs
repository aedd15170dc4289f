//! Listeners and connection lifecycle: binds every configured listener, terminates TLS (handshake deadline),
//! serves HTTP/1.1 and HTTP/2 with hyper-util (header-read deadline), and drains on shutdown: stop accepting,
//! let in-flight requests finish up to `server.drain_timeout`, stop the embedded store.

pub mod admin;
pub mod read_ahead;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::{Config, Listener, Mode, Protocol, ServerSettings, UpstreamCredentials, UpstreamEndpoint};
use crate::proxy::{ConnInfo, Proxy, Room};
use crate::sigv4::credentials::StoreCredentials;
use crate::sigv4::verify::Verifier;
use crate::upstream::Upstream;
use tls::{CertFiles, CertStore};

/// A listener's bound address.
#[derive(Debug, Clone, Copy)]
pub struct BoundAddr {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

/// A bound, ready-to-run proxy.
pub struct Server {
    listeners: Vec<(TcpListener, ConnInfo)>,
    bound: Vec<BoundAddr>,
    proxy: Proxy,
    tls: Option<(TlsAcceptor, Arc<CertStore>)>,
    dev_ca_file: Option<PathBuf>,
    created_keyring: Option<(PathBuf, String)>,
    settings: ServerSettings,
    cert_reload_interval: std::time::Duration,
    /// The admin listener (metrics, health), if configured, and its address.
    admin: Option<(TcpListener, SocketAddr)>,
    health: Arc<admin::Health>,
    /// Reload the configuration from this file on SIGHUP.
    config_path: Option<PathBuf>,
    #[cfg(feature = "embedded")]
    embedded: Option<crate::upstream::embedded::EmbeddedStore>,
}

/// Host names a development certificate covers.
fn dev_names(config: &Config) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    for d in &config.server.base_domains {
        names.push(d.clone());
        names.push(format!("*.{d}"));
    }
    for l in &config.listeners {
        let ip = l.address.ip();
        if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
            names.push(ip.to_string());
        }
    }
    names
}

/// The proxy without listeners: its upstream (the embedded store started, if configured) and its keys. What
/// `serve` runs behind listeners, and what the maintenance commands (`rewrap`, `migrate`) drive directly.
pub struct Core {
    pub proxy: Proxy,
    #[cfg(feature = "embedded")]
    pub embedded: Option<crate::upstream::embedded::EmbeddedStore>,
    /// The id of the keyring key dev mode just created, if it did.
    pub created_key: Option<String>,
}

impl Core {
    pub async fn start(config: &Config) -> Result<Core, String> {
        #[cfg(feature = "embedded")]
        let mut embedded = None;
        let upstream = match &config.upstream.endpoint {
            UpstreamEndpoint::Remote { uri } => {
                Arc::new(Upstream::new(&config.upstream, uri, store_credentials(config).await?)?)
            }
            #[cfg(feature = "embedded")]
            UpstreamEndpoint::Embedded { data_dir, buckets } => {
                let store = crate::upstream::embedded::EmbeddedStore::start(data_dir, buckets).await?;
                let credentials = StoreCredentials::fixed(&store.access_key_id, &store.secret_access_key);
                let up = Upstream::new(&config.upstream, &store.endpoint(), credentials)?;
                embedded = Some(store);
                Arc::new(up)
            }
            #[cfg(not(feature = "embedded"))]
            UpstreamEndpoint::Embedded { .. } => {
                return Err("this build has no embedded store".into());
            }
        };
        let (proxy, created_key) = Self::proxy(config, upstream).await?;
        Ok(Core {
            proxy,
            #[cfg(feature = "embedded")]
            embedded,
            created_key,
        })
    }

    /// A proxy for `config` in front of `upstream`.
    async fn proxy(config: &Config, upstream: Arc<Upstream>) -> Result<(Proxy, Option<String>), String> {
        let (crypto, created_key) = crate::crypto::Crypto::load(&config.encryption).await?;
        let verifier = Verifier::new(&config.clients, &config.server.region, config.server.allow_sigv2_presigned);
        let settings = crate::proxy::ProxySettings {
            base_domains: config.server.base_domains.clone(),
            upload_checksum: config.upstream.upload_checksum,
            slow_response_keepalive: config.server.slow_response_keepalive,
            max_copy_size: config.upstream.max_copy_size,
            system_bucket: config.upstream.system_bucket.clone(),
            bucket_settings_refresh: config.server.bucket_settings_refresh,
            body_read_timeout: config.server.body_read_timeout,
            client_rates: config.client_rates.clone(),
            auth_failures_per_address: config.server.auth_failures_per_address,
            strict_keys: matches!(config.upstream.endpoint, crate::config::UpstreamEndpoint::Embedded { .. }),
        };
        let proxy = Proxy::new(verifier, upstream, settings, Arc::new(crypto));
        Ok((proxy, created_key))
    }

    /// The proxy for a reloaded configuration: clients, keys, policy and upstream settings change; the embedded
    /// store (if any) stays the one running.
    pub async fn reload(config: &Config, current: &Proxy) -> Result<Proxy, String> {
        let upstream = match &config.upstream.endpoint {
            UpstreamEndpoint::Remote { uri } => {
                Arc::new(Upstream::new(&config.upstream, uri, store_credentials(config).await?)?)
            }
            UpstreamEndpoint::Embedded { .. } => current.upstream(),
        };
        Ok(Self::proxy(config, upstream).await?.0)
    }
}

impl Server {
    /// Starts the embedded store if configured, loads certificates and binds every listener.
    pub async fn bind(config: Config) -> Result<Server, String> {
        if config.admin.is_some() {
            // Before anything records: the certificate expiry, the first requests.
            crate::metrics::install();
        }
        let Core {
            proxy,
            #[cfg(feature = "embedded")]
            embedded,
            created_key,
        } = Core::start(&config).await?;

        let needs_tls = config.listeners.iter().any(|l| l.protocol == Protocol::Https);
        let mut dev_ca_file = None;
        let tls = if needs_tls {
            let files: Vec<CertFiles> = if config.tls.certificates.is_empty() && config.server.mode == Mode::Dev {
                let dev = tls::ensure_dev_certificate(&config.tls.self_signed_dir, &dev_names(&config))?;
                dev_ca_file = Some(dev.ca_file.clone());
                vec![dev.files]
            } else {
                config
                    .tls
                    .certificates
                    .iter()
                    .map(|c| CertFiles { cert_file: c.cert_file.clone(), key_file: c.key_file.clone() })
                    .collect()
            };
            let store = Arc::new(CertStore::load(&files)?);
            let acceptor = TlsAcceptor::from(tls::server_config(Arc::clone(&store))?);
            Some((acceptor, store))
        } else {
            None
        };

        let mut bound_listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let tcp = TcpListener::bind(l.address).await.map_err(|e| format!("bind {}: {e}", l.address))?;
            let addr = tcp.local_addr().map_err(|e| format!("bind {}: {e}", l.address))?;
            bound_listeners.push((tcp, l.clone(), addr));
        }
        let admin = match config.admin {
            Some(a) => {
                let tcp = TcpListener::bind(a).await.map_err(|e| format!("bind admin {a}: {e}"))?;
                let addr = tcp.local_addr().map_err(|e| format!("bind admin {a}: {e}"))?;
                Some((tcp, addr))
            }
            None => None,
        };
        let first_https_port =
            bound_listeners.iter().find(|(_, l, _)| l.protocol == Protocol::Https).map(|(_, _, a)| a.port());
        let bound = bound_listeners.iter().map(|(_, l, a)| BoundAddr { protocol: l.protocol, addr: *a }).collect();
        let listeners = bound_listeners
            .into_iter()
            .map(|(tcp, l, _)| {
                let info = conn_info(&l, first_https_port);
                (tcp, info)
            })
            .collect();
        Ok(Server {
            listeners,
            bound,
            proxy,
            tls,
            dev_ca_file,
            created_keyring: created_key.map(|id| (config.encryption.keyring_file.clone(), id)),
            settings: config.server.clone(),
            cert_reload_interval: config.tls.reload_interval,
            admin,
            health: Arc::default(),
            config_path: None,
            #[cfg(feature = "embedded")]
            embedded,
        })
    }

    /// Reloads the configuration from `path` on SIGHUP: validated fully first; on any problem the running
    /// configuration stays. Clients, keys, policy and upstream settings change; listeners, TLS certificate paths
    /// and the admin listener need a restart (certificate files themselves are re-read as they change).
    pub fn reload_on_sighup(&mut self, path: PathBuf) {
        self.config_path = Some(path);
    }

    /// Where the admin listener is bound, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, a)| *a)
    }

    /// Where each listener is bound.
    pub fn addrs(&self) -> &[BoundAddr] {
        &self.bound
    }

    /// The generated development CA, when dev mode made one.
    pub fn dev_ca_file(&self) -> Option<&std::path::Path> {
        self.dev_ca_file.as_deref()
    }

    /// The embedded store, when configured.
    #[cfg(feature = "embedded")]
    pub fn embedded(&self) -> Option<&crate::upstream::embedded::EmbeddedStore> {
        self.embedded.as_ref()
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listeners, proxy, tls, settings, cert_reload_interval, admin, health, config_path, .. } = self;
        let current = Arc::new(arc_swap::ArcSwap::from_pointee(proxy.clone()));
        let mut reloads = match &config_path {
            Some(_) => crate::signal::reloads(),
            None => tokio::sync::mpsc::channel(1).1,
        };
        #[cfg(feature = "embedded")]
        let embedded = self.embedded;
        let (stop_tx, stop_rx) = watch::channel(false);
        let infos: Vec<ConnInfo> = listeners.iter().map(|(_, i)| i.clone()).collect();
        let (accept_tasks, mut conn_rx) = spawn_acceptors(listeners, &stop_rx);
        if let Some((_, store)) = &tls {
            tokio::spawn(tls::reload_loop(Arc::clone(store), cert_reload_interval, stop_rx.clone()));
        }
        // The admin listener outlives the drain (readyz says "draining" meanwhile): its own stop signal.
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin_task = admin.map(|(tcp, _)| {
            let metrics = crate::metrics::install();
            let probe = admin::Probe {
                every: settings.store_probe_interval,
                outage_tolerance: settings.store_outage_tolerance,
            };
            tokio::spawn(admin::serve(tcp, metrics, Arc::clone(&health), Arc::clone(&current), probe, admin_stop_rx))
        });
        let builder = http_builder(&settings);
        let connections = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
        let inflight = Arc::new(tokio::sync::Semaphore::new(settings.max_inflight_requests));
        let acceptor = tls.map(|(a, _)| a);
        let graceful = GracefulShutdown::new();
        // After the shutdown signal, `/readyz` fails while the listeners still accept for `shutdown_delay` (load
        // balancers and Service endpoints stop sending first); then they close and the drain starts.
        let stop = async {
            shutdown.await;
            stop_requested(&health, &settings);
            tokio::time::sleep(settings.shutdown_delay).await;
        };
        tokio::pin!(stop);
        loop {
            // At the connection limit, stop taking connections until one closes (they wait in the backlog).
            let permit = tokio::select! {
                p = Arc::clone(&connections).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = &mut stop => break,
            };
            let (stream, peer, idx) = tokio::select! {
                c = conn_rx.recv() => match c { Some(c) => c, None => break },
                Some(()) = reloads.recv() => {
                    if let Some(path) = config_path.clone() {
                        tokio::spawn(reload(path, Arc::clone(&current), Arc::clone(&health)));
                    }
                    continue;
                }
                _ = &mut stop => break,
            };
            let mut info = infos[idx].clone();
            info.peer = Some(peer.ip());
            let acceptor = if info.secure { acceptor.clone() } else { None };
            let span = tracing::info_span!("connection", client.addr = %peer, tls = info.secure);
            let conn = Accepted { stream, info, acceptor, handshake_timeout: settings.tls_handshake_timeout, permit };
            let serve = serve_connection(
                conn,
                builder.clone(),
                graceful.watcher(),
                Arc::clone(&current),
                Arc::clone(&inflight),
            );
            tokio::spawn(serve.instrument(span));
        }
        // Stop accepting: listeners close, new connections are refused.
        let _ = stop_tx.send(true);
        drop(conn_rx);
        for t in accept_tasks {
            let _ = t.await;
        }
        tracing::info!(drain.timeout_s = settings.drain_timeout.as_secs(), "draining connections");
        crate::metrics::draining(true);
        health.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all connections drained"),
            _ = tokio::time::sleep(settings.drain_timeout) => tracing::warn!("drain deadline reached; closing remaining connections"),
        }
        let _ = admin_stop_tx.send(true);
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        #[cfg(feature = "embedded")]
        if let Some(store) = embedded {
            store.stop().await;
        }
    }
}

/// A connection as accepted: its stream, where it came from, the TLS acceptor if its listener is https, and its
/// slot under `server.max_connections`.
struct Accepted {
    stream: TcpStream,
    info: ConnInfo,
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: std::time::Duration,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// Accepted connections, with the index of the listener that took each.
type AcceptedRx = mpsc::Receiver<(TcpStream, SocketAddr, usize)>;

/// One accept loop per listener, until `stop`; connections are handed over on the returned channel.
fn spawn_acceptors(
    listeners: Vec<(TcpListener, ConnInfo)>,
    stop: &watch::Receiver<bool>,
) -> (Vec<tokio::task::JoinHandle<()>>, AcceptedRx) {
    let (conn_tx, conn_rx) = mpsc::channel::<(TcpStream, SocketAddr, usize)>(128);
    let mut tasks = Vec::new();
    for (idx, (tcp, _)) in listeners.into_iter().enumerate() {
        let tx = conn_tx.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = tcp.accept() => r,
                    _ = stop.changed() => break,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        if tx.send((stream, peer, idx)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    (tasks, conn_rx)
}

/// Runs the tasks hyper spawns (one per HTTP/2 stream) in the span of the connection that spawns them, so that a
/// request's log lines carry its connection's fields over HTTP/2 as over HTTP/1.1.
#[derive(Clone, Copy)]
struct InConnectionSpan;

impl<F> hyper::rt::Executor<F> for InConnectionSpan
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut.in_current_span());
    }
}

/// HTTP/1.1 (header-read deadline, bounded buffers and header count) and HTTP/2 for client connections.
fn http_builder(settings: &ServerSettings) -> ConnBuilder<InConnectionSpan> {
    let mut builder = ConnBuilder::new(InConnectionSpan);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(crate::util::HTTP1_MAX_BUF)
        .max_headers(settings.max_headers);
    builder.http2().max_header_list_size(MAX_H2_HEADER_LIST);
    builder
}

/// Serves one connection (after its TLS handshake, within its deadline): each request by the configuration
/// current when it arrives, until the connection ends or the drain closes it.
async fn serve_connection(
    conn: Accepted,
    builder: ConnBuilder<InConnectionSpan>,
    watcher: hyper_util::server::graceful::Watcher,
    current: Arc<arc_swap::ArcSwap<Proxy>>,
    inflight: Arc<tokio::sync::Semaphore>,
) {
    let Accepted { stream, info, acceptor, handshake_timeout, permit } = conn;
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| {
        let proxy = current.load_full();
        let info = info.clone();
        // A slot under `server.max_inflight_requests`, held until the response's last byte is sent.
        let slot = Arc::clone(&inflight).try_acquire_owned().ok();
        async move {
            let resp = match slot {
                Some(slot) => proxy
                    .handle(req, &info, Room::Yes)
                    .await
                    .map(|b| http_body_util::BodyExt::boxed_unsync(crate::util::body::Held::new(b, slot))),
                None => proxy.handle(req, &info, Room::Full).await,
            };
            Ok::<_, Infallible>(resp)
        }
    });
    crate::metrics::connection_opened();
    let _open = ConnectionGuard(permit);
    let ended = match acceptor {
        Some(acceptor) => {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(read_ahead::ReadAhead::new(stream)))
                .await
            {
                Ok(Ok(s)) => {
                    crate::metrics::tls_handshake("ok");
                    s
                }
                Ok(Err(e)) => {
                    crate::metrics::tls_handshake("error");
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    crate::metrics::tls_handshake("timeout");
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            watcher.watch(builder.serve_connection(TokioIo::new(tls), svc).into_owned()).await
        }
        None => watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned()).await,
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The store's credentials as configured: static keys, or the AWS chain (fetched once before serving).
async fn store_credentials(config: &Config) -> Result<Arc<StoreCredentials>, String> {
    match config.upstream.credentials.as_ref().ok_or("upstream credentials missing")? {
        UpstreamCredentials::Static { access_key_id, secret } => Ok(StoreCredentials::fixed(access_key_id, secret)),
        UpstreamCredentials::AwsChain { refresh_before } => {
            StoreCredentials::aws_chain(&config.upstream.region, *refresh_before).await
        }
    }
}

/// Loads, validates and applies a new configuration; keeps the current one on any problem (`/readyz` says the
/// last reload failed, and stays ready: the running configuration is whole).
async fn reload(path: PathBuf, current: Arc<arc_swap::ArcSwap<Proxy>>, health: Arc<admin::Health>) {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(problems = %e, "configuration reload refused; keeping the running configuration");
            health.reloaded(false);
            return;
        }
    };
    match Core::reload(&config, &current.load()).await {
        Ok(p) => {
            current.store(Arc::new(p));
            health.reloaded(true);
            tracing::info!(config = %path.display(), "configuration reloaded");
        }
        Err(e) => {
            health.reloaded(false);
            tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
        }
    }
}

/// The shutdown signal arrived: readiness fails from now on; the listeners close after `shutdown_delay`.
fn stop_requested(health: &admin::Health, settings: &ServerSettings) {
    tracing::info!(
        shutdown_delay_s = settings.shutdown_delay.as_secs_f64(),
        "shutdown requested: /readyz fails now, the listeners close after the shutdown delay"
    );
    health.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    crate::metrics::draining(true);
}

/// Largest HTTP/2 header list accepted (HTTP/1.1 heads are bounded by the read buffer and the header count).
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;

/// Holds a connection's slot under `server.max_connections` and counts it open until dropped.
struct ConnectionGuard(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        crate::metrics::connection_closed();
    }
}

fn conn_info(l: &Listener, first_https_port: Option<u16>) -> ConnInfo {
    ConnInfo {
        secure: l.protocol == Protocol::Https,
        plain_http: l.plain_http,
        redirect_port: match l.redirect_port {
            Some(0) | None => first_https_port,
            Some(p) => Some(p),
        },
        peer: None,
    }
}

/// Prints where the server listens (and the dev CA, if one was generated) to stderr, one line each, in a
/// fixed format scripts can read: `s3crypt: listening on https://127.0.0.1:8443`.
pub fn announce(server: &Server) {
    for b in server.addrs() {
        let scheme = match b.protocol {
            Protocol::Https => "https",
            Protocol::Http => "http",
        };
        eprintln!("s3crypt: listening on {scheme}://{}", b.addr);
    }
    if let Some(a) = server.admin_addr() {
        eprintln!("s3crypt: admin (metrics, health) on http://{a}");
    }
    if let Some((path, id)) = &server.created_keyring {
        eprintln!(
            "s3crypt: dev mode: created a demo keyring at {} with key {id} (back it up: objects cannot be read \
             without it)",
            path.display()
        );
    }
    if let Some(ca) = server.dev_ca_file() {
        eprintln!(
            "s3crypt: dev mode: generated a development CA at {} (trust it with: aws --ca-bundle {})",
            ca.display(),
            ca.display()
        );
    }
    #[cfg(feature = "embedded")]
    if let Some(e) = server.embedded() {
        eprintln!("s3crypt: embedded store on {} (data in {})", e.addr, e.data_dir.display());
    }
}
