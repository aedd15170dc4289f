//! A TCP relay between the proxy and a real service that injects the faults no real server produces on demand:
//! a connection reset after so many bytes in either direction, or a stall of the answer. Bytes pass through
//! untouched otherwise, so the service still checks the proxy's signatures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the relay does to the connections it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// Reset a connection once it has carried this many bytes towards the service (mid-upload).
    ResetAfterUp(u64),
    /// Reset a connection once it has carried this many bytes back from the service (mid-download).
    ResetAfterDown(u64),
    /// Hold back the service's answer this long (a slow store or KMS).
    StallDown(Duration),
    /// Stop passing the service's answer on after this many bytes, until the fault changes (a store that goes
    /// silent mid-response).
    FreezeAfterDown(u64),
}

/// A running relay.
pub struct Relay {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    resets: Arc<AtomicUsize>,
}

impl Relay {
    /// Relays to `upstream` (`http://host:port` or `host:port`).
    pub async fn start(upstream: &str) -> Relay {
        let target = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let fault = Arc::new(Mutex::new(Fault::None));
        let resets = Arc::new(AtomicUsize::new(0));
        let (fault2, resets2) = (Arc::clone(&fault), Arc::clone(&resets));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else { continue };
                let (fault, resets) = (Arc::clone(&fault2), Arc::clone(&resets2));
                tokio::spawn(carry(client, server, fault, resets));
            }
        });
        Relay { addr, fault, resets }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies to bytes relayed from now on (on open connections too).
    pub fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    /// Connections reset so far.
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }
}

async fn carry(client: TcpStream, server: TcpStream, fault: Arc<Mutex<Fault>>, resets: Arc<AtomicUsize>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up_buf = vec![0u8; 16 * 1024];
    let mut down_buf = vec![0u8; 16 * 1024];
    let (mut up, mut down) = (0u64, 0u64);
    let now = || *fault.lock().unwrap();
    let reset = loop {
        tokio::select! {
            n = cr.read(&mut up_buf) => {
                let Ok(n @ 1..) = n else { break false };
                up += n as u64;
                if let Fault::ResetAfterUp(limit) = now() && up > limit {
                    break true;
                }
                if sw.write_all(&up_buf[..n]).await.is_err() { break false; }
            }
            n = sr.read(&mut down_buf) => {
                let Ok(n @ 1..) = n else { break false };
                down += n as u64;
                match now() {
                    Fault::ResetAfterDown(limit) if down > limit => break true,
                    Fault::StallDown(d) => tokio::time::sleep(d).await,
                    Fault::FreezeAfterDown(limit) if down > limit => {
                        while matches!(now(), Fault::FreezeAfterDown(_)) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    _other => {}
                }
                if cw.write_all(&down_buf[..n]).await.is_err() { break false; }
            }
        }
    };
    if reset {
        // SO_LINGER 0 on the whole socket (no FIN first): each peer sees a reset, not a clean close.
        resets.fetch_add(1, Ordering::SeqCst);
        for stream in [cr.reunite(cw), sr.reunite(sw)].into_iter().flatten() {
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    }
}
