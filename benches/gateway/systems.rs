//! Starting the systems under test with their own configuration files: SeaweedFS (plain and TLS ports), the
//! embedded store (s3s-fs, in this process), nginx as a TLS reverse proxy to each store, and s3crypt in front of
//! each store (one bucket set stored as plaintext, one encrypted). Plus a byte-counting TCP relay for measuring
//! what s3crypt pulls from upstream.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::procs::{Certs, Proc, free_port, wait_port};

pub const SW_AK: &str = "seaweedbench";
pub const SW_SK: &str = "seaweed-secret-for-bench";
pub const PROXY_AK: &str = "bench-client";
pub const PROXY_SK: &str = "bench-client-secret";

pub struct Seaweed {
    /// Stops SeaweedFS when dropped.
    _process: Proc,
    pub http_port: u16,
    pub https_port: u16,
}

/// `weed mini` with an https port on the bench certificate; volumes large enough for 1 GiB objects.
pub fn start_seaweedfs(weed: &str, dir: &Path, certs: &Certs) -> Seaweed {
    start_seaweedfs_with(weed, dir, certs, &[])
}

/// [`start_seaweedfs`] with more `weed mini` arguments.
pub fn start_seaweedfs_with(weed: &str, dir: &Path, certs: &Certs, extra: &[&str]) -> Seaweed {
    let data = dir.join("seaweedfs");
    std::fs::create_dir_all(&data).expect("seaweedfs dir");
    let s3json = dir.join("seaweedfs-s3.json");
    std::fs::write(
        &s3json,
        format!(
            r#"{{"identities":[{{"name":"admin","credentials":[{{"accessKey":"{SW_AK}","secretKey":"{SW_SK}"}}],
            "actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        ),
    )
    .expect("s3.json");
    let (http_port, https_port) = (free_port(), free_port());
    let log = dir.join("seaweedfs.log");
    let mut cmd = Command::new(weed);
    cmd.arg("mini")
        .arg(format!("-dir={}", data.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.volumeSizeLimitMB=1024", "-volume.max=200"])
        .args(["-master.telemetry=false", "-master.telemetry.url=http://127.0.0.1:9/", "-admin.ui=false"])
        .arg(format!("-s3.port={http_port}"))
        .arg(format!("-s3.port.https={https_port}"))
        .arg(format!("-s3.cert.file={}", certs.cert_file.display()))
        .arg(format!("-s3.key.file={}", certs.key_file.display()))
        .arg(format!("-s3.config={}", s3json.display()))
        .args(extra);
    let proc = Proc::spawn("seaweedfs", &mut cmd, &log);
    wait_port(http_port, "SeaweedFS", &log);
    wait_port(https_port, "SeaweedFS (https)", &log);
    Seaweed { _process: proc, http_port, https_port }
}

pub struct Nginx {
    pub proc: Proc,
    /// One TLS port per upstream, in the order given.
    pub ports: Vec<u16>,
}

/// nginx as a plain TLS-terminating reverse proxy: the client's Host header passes through (so client signatures
/// verify at the store), no request or response buffering, keep-alive to the upstream. With buffering off nginx
/// relays responses through one `proxy_buffer_size` buffer: 64 KiB (the default is one 4 KiB page, which cost
/// 3.3 CPU-s/GB on GETs here against 0.9 with 64 KiB).
/// `workers` is nginx's `worker_processes` ("1", "auto").
pub fn start_nginx(nginx: &str, dir: &Path, certs: &Certs, upstream_ports: &[u16], workers: &str) -> Nginx {
    let root = dir.join(format!("nginx-{workers}"));
    std::fs::create_dir_all(root.join("tmp")).expect("nginx dir");
    let ports: Vec<u16> = upstream_ports.iter().map(|_| free_port()).collect();
    let mut servers = String::new();
    for (i, (&listen, &up)) in ports.iter().zip(upstream_ports).enumerate() {
        servers.push_str(&format!(
            r#"
  upstream store{i} {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{listen} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_buffer_size 64k;
    proxy_buffers 4 64k;
    proxy_http_version 1.1;
    proxy_read_timeout 300s;
    proxy_send_timeout 300s;
    location / {{
      proxy_pass http://store{i};
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
    }}
  }}"#,
            cert = certs.cert_file.display(),
            key = certs.key_file.display(),
        ));
    }
    let t = root.join("tmp");
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
user root;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
http {{
  access_log {root}/access.log;
  client_body_temp_path {t}/body;
  proxy_temp_path {t}/proxy;
  fastcgi_temp_path {t}/fastcgi;
  uwsgi_temp_path {t}/uwsgi;
  scgi_temp_path {t}/scgi;
  keepalive_requests 100000;
  keepalive_timeout 60s;
{servers}
}}
"#,
        root = root.display(),
        t = t.display(),
    );
    let conf_file = root.join("nginx.conf");
    std::fs::write(&conf_file, conf).expect("nginx.conf");
    let log = root.join("stderr.log");
    let mut cmd = Command::new(nginx);
    cmd.arg("-e").arg(root.join("error.log")).arg("-p").arg(&root).arg("-c").arg(&conf_file);
    let proc = Proc::spawn("nginx", &mut cmd, &log);
    for &p in &ports {
        wait_port(p, "nginx", &log);
    }
    Nginx { proc, ports }
}

/// What differs between the s3crypt processes of one run.
#[derive(Clone, Copy)]
pub struct Tuning {
    /// `server.worker_threads` (0: one per core).
    pub worker_threads: usize,
    /// `encryption.md5_etags`.
    pub md5_etags: bool,
}

impl Default for Tuning {
    /// The product's defaults.
    fn default() -> Self {
        Tuning { worker_threads: 0, md5_etags: true }
    }
}

pub struct S3crypt {
    pub proc: Proc,
    pub port: u16,
    pub admin_port: u16,
}

/// The release s3crypt binary in production mode with the bench certificate, a fresh keyring, the audit log in
/// a file (as deployed), and `passthrough` buckets stored as plaintext.
pub fn start_s3crypt(
    bin: &str,
    dir: &Path,
    name: &str,
    certs: &Certs,
    upstream: &str,
    upstream_creds: (&str, &str),
    passthrough: &[String],
) -> S3crypt {
    start_s3crypt_with(bin, dir, name, certs, upstream, upstream_creds, passthrough, Tuning::default(), "")
}

/// [`start_s3crypt`] with more configuration appended (whole TOML tables).
#[allow(clippy::too_many_arguments)]
pub fn start_s3crypt_with(
    bin: &str,
    dir: &Path,
    name: &str,
    certs: &Certs,
    upstream: &str,
    upstream_creds: (&str, &str),
    passthrough: &[String],
    tuning: Tuning,
    extra: &str,
) -> S3crypt {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).expect("s3crypt dir");
    let keyring = root.join("keyring.toml");
    s3crypt::crypto::keys::keygen(&keyring, Some("bench")).expect("keygen");
    let (port, admin_port) = (free_port(), free_port());
    let list = passthrough.iter().map(|b| format!("\"{b}\"")).collect::<Vec<_>>().join(", ");
    let conf = format!(
        r#"[server]
mode = "production"
max_connections = 20000
worker_threads = {workers}
[[listeners]]
address = "127.0.0.1:{port}"
protocol = "https"
[[tls.certificates]]
cert_file = "{cert}"
key_file = "{key}"
[[clients]]
access_key_id = "{PROXY_AK}"
secret_access_key = "{PROXY_SK}"
[upstream]
endpoint = "{upstream}"
access_key_id = "{ak}"
secret_access_key = "{sk}"
response_timeout = "300s"
[admin]
address = "127.0.0.1:{admin_port}"
[logging]
audit = "{audit}"
[encryption]
keyring_file = "{keyring}"
passthrough_buckets = [{list}]
md5_etags = {md5}
"#,
        md5 = tuning.md5_etags,
        cert = certs.cert_file.display(),
        key = certs.key_file.display(),
        ak = upstream_creds.0,
        sk = upstream_creds.1,
        // S3CRYPT_BENCH_AUDIT=off measures what the audit log costs.
        audit = std::env::var("S3CRYPT_BENCH_AUDIT").unwrap_or_else(|_| root.join("audit.log").display().to_string()),
        keyring = keyring.display(),
        workers = tuning.worker_threads,
    );
    let conf_file = root.join("proxy.toml");
    std::fs::write(&conf_file, conf + extra).expect("proxy.toml");
    let log = root.join("stderr.log");
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg("--config").arg(&conf_file).env("RUST_LOG", "warn");

    let proc = Proc::spawn("s3crypt", &mut cmd, &log);
    wait_port(port, "s3crypt", &log);
    S3crypt { proc, port, admin_port }
}

/// A TCP relay 127.0.0.1:port → 127.0.0.1:`to`, counting the bytes that come back from `to`.
pub struct Relay {
    pub port: u16,
    pub from_upstream: Arc<AtomicU64>,
}

pub async fn start_relay(to: u16) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
    let port = listener.local_addr().expect("addr").port();
    let from_upstream = Arc::new(AtomicU64::new(0));
    let counter = from_upstream.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { return };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let a = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut dr, &mut uw).await;
                });
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                            if dw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                a.abort();
            });
        }
    });
    Relay { port, from_upstream }
}
