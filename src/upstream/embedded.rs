//! The embedded store: an in-process S3-compatible server (`s3s` + `s3s-fs`) on a local directory, bound to
//! 127.0.0.1 on an ephemeral port with credentials generated at start. The proxy talks to it exactly as to
//! a remote store (HTTP, re-signed SigV4, which s3s checks), so the data path is the same in a quick start as
//! in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use rand::Rng;
use rand::distr::Alphanumeric;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::util::secret::SecretString;

/// A running embedded store.
pub struct EmbeddedStore {
    pub addr: SocketAddr,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub data_dir: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn random_string(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

impl EmbeddedStore {
    /// Creates `data_dir` and the listed buckets (directories), then serves them.
    pub async fn start(data_dir: &Path, buckets: &[String]) -> Result<EmbeddedStore, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("embedded.data_dir {}: cannot create: {e}", data_dir.display()))?;
        for b in buckets {
            std::fs::create_dir_all(data_dir.join(b))
                .map_err(|e| format!("embedded bucket {b}: cannot create: {e}"))?;
        }
        let fs = s3s_fs::FileSystem::new(data_dir)
            .map_err(|e| format!("embedded.data_dir {}: {e:?}", data_dir.display()))?;
        let access_key_id = format!("EMBEDDED{}", random_string(12).to_ascii_uppercase());
        let secret = random_string(40);
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(access_key_id.clone(), secret.clone()));
            b.build()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("embedded store bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("embedded store: {e}"))?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let conn = tokio::select! {
                    r = listener.accept() => r,
                    _ = stopped.changed() => break,
                };
                let Ok((socket, _)) = conn else { continue };
                let _ = socket.set_nodelay(true);
                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(EmbeddedStore {
            addr,
            access_key_id,
            secret_access_key: SecretString::new(secret),
            data_dir: data_dir.to_owned(),
            stop,
            task,
        })
    }

    /// The store's base URL.
    pub fn endpoint(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap_or_default()
    }

    /// Stops accepting connections.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
