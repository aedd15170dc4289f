//! A recording HTTP forwarder put between the proxy and a real service (SeaweedFS, moto's KMS): it passes every
//! request through unchanged (Host included, so signatures stay valid), records what it saw (the bodies too, if
//! asked), and can answer a scripted fault itself, rewrite a response's headers, or go down — faults no real
//! server produces on demand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;

/// What the forwarder saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: String,
    pub headers: http::HeaderMap,
    /// The request body, when the forwarder records bodies.
    pub body: Option<Bytes>,
}

impl Seen {
    /// The KMS operation (`X-Amz-Target: TrentService.<Op>`), if this was a KMS call.
    pub fn kms_op(&self) -> Option<&str> {
        self.headers.get("x-amz-target")?.to_str().ok()?.strip_prefix("TrentService.")
    }
}

/// Decides whether to answer a request itself: `Some((status, body))` to answer, `None` to forward.
pub type Intercept = Arc<dyn Fn(&http::Request<Incoming>) -> Option<(u16, &'static str)> + Send + Sync>;

/// Rewrites the headers of a forwarded response, given the request's method and URI.
pub type Rewrite = Arc<dyn Fn(&http::Method, &str, &mut http::HeaderMap) + Send + Sync>;

/// What a forwarder does besides forwarding.
#[derive(Default, Clone)]
pub struct Script {
    pub intercept: Option<Intercept>,
    pub rewrite: Option<Rewrite>,
    /// Read each request body whole, record it, then forward it.
    pub record_bodies: bool,
}

/// A running forwarder.
pub struct Forwarder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    down: Arc<AtomicBool>,
}

impl Forwarder {
    /// Forwards to `upstream` (`http://host:port`), answering what `intercept` picks.
    pub async fn start(upstream: &str, intercept: Option<Intercept>) -> Forwarder {
        Self::scripted(upstream, Script { intercept, ..Script::default() }).await
    }

    /// Forwards to `upstream` as `script` says.
    pub async fn scripted(upstream: &str, script: Script) -> Forwarder {
        let authority = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let client: hyper_util::client::legacy::Client<_, http_body_util::combinators::BoxBody<Bytes, hyper::Error>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let (seen2, down2) = (Arc::clone(&seen), Arc::clone(&down));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                if down2.load(Ordering::SeqCst) {
                    drop(stream); // the service is down: connections are refused at once
                    continue;
                }
                let (client, authority, seen, script) =
                    (client.clone(), authority.clone(), Arc::clone(&seen2), script.clone());
                let down3 = Arc::clone(&down2);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let (client, authority, seen, script) =
                            (client.clone(), authority.clone(), Arc::clone(&seen), script.clone());
                        let down = Arc::clone(&down3);
                        async move {
                            if down.load(Ordering::SeqCst) {
                                // Down while a kept-alive connection was open: a service error.
                                let mut resp = http::Response::new(
                                    Full::new(Bytes::from_static(br#"{"__type":"KMSInternalException"}"#))
                                        .map_err(|n| match n {})
                                        .boxed(),
                                );
                                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok::<_, hyper::Error>(resp);
                            }
                            let index = {
                                let mut all = seen.lock().unwrap();
                                all.push(Seen {
                                    method: req.method().clone(),
                                    uri: req.uri().to_string(),
                                    headers: req.headers().clone(),
                                    body: None,
                                });
                                all.len() - 1
                            };
                            if let Some((status, body)) = script.intercept.as_ref().and_then(|f| f(&req)) {
                                // Read the request body first, as a store that fails after the upload does.
                                let _ = req.into_body().collect().await;
                                let mut resp = http::Response::new(
                                    Full::new(Bytes::from_static(body.as_bytes())).map_err(|n| match n {}).boxed(),
                                );
                                *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                                return Ok::<_, hyper::Error>(resp);
                            }
                            let (mut parts, body) = req.into_parts();
                            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                            let (method, uri) = (parts.method.clone(), pq.clone());
                            parts.uri = format!("http://{authority}{pq}").parse().unwrap();
                            let body = if script.record_bodies {
                                let bytes = body.collect().await?.to_bytes();
                                seen.lock().unwrap()[index].body = Some(bytes.clone());
                                Full::new(bytes).map_err(|n| match n {}).boxed()
                            } else {
                                body.boxed()
                            };
                            let mut resp = client.request(http::Request::from_parts(parts, body)).await.unwrap();
                            if let Some(rewrite) = &script.rewrite {
                                rewrite(&method, &uri, resp.headers_mut());
                            }
                            Ok(resp.map(|b| b.boxed()))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Forwarder { addr, seen, down }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// KMS calls seen so far, by operation.
    pub fn kms_calls(&self) -> Vec<String> {
        self.seen().iter().filter_map(|s| s.kms_op().map(str::to_owned)).collect()
    }

    /// Refuse every new connection from now on (or serve again).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}
