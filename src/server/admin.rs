//! The admin listener (plain HTTP, for localhost or the pod network): `/metrics` (Prometheus text format),
//! `/healthz` (the process is up) and `/readyz` (keys loaded, the upstream reachable, not draining).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Proxy;

/// How often the upstream is probed for `/readyz`.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Deadline of one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What `/readyz` reports.
#[derive(Debug)]
pub struct Health {
    pub draining: AtomicBool,
    pub upstream_ok: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health { draining: AtomicBool::new(false), upstream_ok: AtomicBool::new(true) }
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

fn route(req: &Request<Incoming>, metrics: Option<&PrometheusHandle>, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), "text/plain");
    }
    match req.uri().path() {
        "/metrics" => match metrics {
            Some(h) => text(StatusCode::OK, h.render(), "text/plain; version=0.0.4"),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder\n".into(), "text/plain"),
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            let mut problems = Vec::new();
            if health.draining.load(Ordering::SeqCst) {
                problems.push("draining");
            }
            if !health.upstream_ok.load(Ordering::SeqCst) {
                problems.push("upstream unreachable");
            }
            if problems.is_empty() {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join(", ")), "text/plain")
            }
        }
        _other => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

/// Serves the admin endpoints until `stop` turns true, and probes the upstream meanwhile.
pub async fn serve(
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
    proxy: Proxy,
    mut stop: watch::Receiver<bool>,
) {
    let probe = {
        let (health, mut stop) = (Arc::clone(&health), stop.clone());
        tokio::spawn(async move {
            loop {
                let ok = tokio::time::timeout(PROBE_TIMEOUT, proxy.upstream_reachable()).await.unwrap_or(false);
                if health.upstream_ok.swap(ok, Ordering::SeqCst) != ok {
                    tracing::warn!(upstream.reachable = ok, "upstream reachability changed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (metrics, health) = (metrics.clone(), Arc::clone(&health));
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = route(&req, metrics.as_ref(), &health);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
    probe.abort();
}
