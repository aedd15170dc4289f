//! The admin listener (plain HTTP, for localhost or the pod network): `/metrics` (Prometheus text format),
//! `/healthz` (the process is up) and `/readyz`: what this replica can serve now, judged on the configuration in
//! force (a reload's, once applied) — its keys load and work, the store has not been unreachable for longer than
//! `server.store_outage_tolerance`, and no shutdown has begun. The body names each check; a failed reload is
//! reported but does not fail readiness (the running configuration is whole).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
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

/// Deadline of one probe of the store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How the store is probed for `/readyz`.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub every: Duration,
    /// Unreachable for this long before readiness fails.
    pub outage_tolerance: Duration,
}

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// Shutdown has begun (the shutdown delay, then the drain).
    pub draining: AtomicBool,
    /// Since when the store has failed every probe; `None` while it answers.
    store_down_since: Mutex<Option<Instant>>,
    /// The last configuration reload: 0 none yet, 1 applied, 2 refused or failed.
    last_reload: AtomicU8,
}

impl Health {
    /// Records a probe's outcome; true if reachability changed.
    fn probed(&self, reachable: bool, now: Instant) -> bool {
        let mut down = self.store_down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match (reachable, *down) {
            (true, Some(_)) => *down = None,
            (false, None) => *down = Some(now),
            _unchanged => return false,
        }
        true
    }

    /// How long the store has been unreachable, if it is.
    fn store_down_for(&self, now: Instant) -> Option<Duration> {
        let down = self.store_down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        down.map(|since| now.saturating_duration_since(since))
    }

    /// Records the outcome of a configuration reload.
    pub fn reloaded(&self, applied: bool) {
        self.last_reload.store(if applied { 1 } else { 2 }, Ordering::SeqCst);
    }
}

/// The `/readyz` answer: 200 if every check passes, else 503; one line per check either way.
fn readiness(health: &Health, proxy: &Proxy, probe: Probe, now: Instant) -> (StatusCode, String) {
    let mut ready = true;
    let mut lines = Vec::new();
    let mut check = |ok: bool, name: &str, detail: String| {
        ready &= ok;
        lines.push(format!("{} {name}: {detail}", if ok { "ok  " } else { "FAIL" }));
    };
    let draining = health.draining.load(Ordering::SeqCst);
    check(!draining, "shutdown", if draining { "draining".into() } else { "not requested".into() });
    let keys = proxy.keys_ready();
    check(keys, "keys", if keys { "loaded, the current key wraps and unwraps".into() } else { "not usable".into() });
    match health.store_down_for(now) {
        None => check(true, "store", "reachable".into()),
        Some(d) => check(
            d < probe.outage_tolerance,
            "store",
            format!("unreachable for {}s (tolerated up to {}s)", d.as_secs(), probe.outage_tolerance.as_secs()),
        ),
    }
    let reload = match health.last_reload.load(Ordering::SeqCst) {
        0 => "as started",
        1 => "the last reload applied",
        _ => "the last reload was refused; the previous configuration is in force",
    };
    lines.push(format!("ok   config: {reload}"));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let head = if ready { "ready" } else { "not ready" };
    (status, format!("{head}\n{}\n", lines.join("\n")))
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

fn route(
    req: &Request<Incoming>,
    metrics: Option<&PrometheusHandle>,
    health: &Health,
    proxy: &Proxy,
    probe: Probe,
) -> Response<Full<Bytes>> {
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
            let (status, body) = readiness(health, proxy, probe, Instant::now());
            text(status, body, "text/plain")
        }
        _other => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

/// Serves the admin endpoints until `stop` turns true, and probes the store meanwhile (always through the
/// configuration in force: after a reload, the new store).
pub async fn serve(
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
    current: Arc<ArcSwap<Proxy>>,
    probe: Probe,
    mut stop: watch::Receiver<bool>,
) {
    let prober = {
        let (health, current, mut stop) = (Arc::clone(&health), Arc::clone(&current), stop.clone());
        tokio::spawn(async move {
            loop {
                let proxy = current.load_full();
                let ok = tokio::time::timeout(PROBE_TIMEOUT, proxy.upstream_reachable()).await.unwrap_or(false);
                if health.probed(ok, Instant::now()) {
                    tracing::warn!(upstream.reachable = ok, "upstream reachability changed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(probe.every) => {}
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
        let (metrics, health, current) = (metrics.clone(), Arc::clone(&health), Arc::clone(&current));
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = route(&req, metrics.as_ref(), &health, &current.load(), probe);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
    prober.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_counts_as_down_only_from_the_first_failed_probe_and_up_again_at_once() {
        let h = Health::default();
        let t0 = Instant::now();
        assert!(!h.probed(true, t0));
        assert_eq!(h.store_down_for(t0), None);
        assert!(h.probed(false, t0));
        assert!(!h.probed(false, t0 + Duration::from_secs(30)), "still down: the outage keeps its start");
        assert_eq!(h.store_down_for(t0 + Duration::from_secs(45)), Some(Duration::from_secs(45)));
        assert!(h.probed(true, t0 + Duration::from_secs(50)));
        assert_eq!(h.store_down_for(t0 + Duration::from_secs(60)), None);
    }
}
