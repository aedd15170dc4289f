//! The test environment: a proxy on ephemeral ports in this process, in front of the embedded store or of
//! the SeaweedFS the test command started, with an aws-sdk-s3 client through the proxy (TLS, trusting the
//! generated dev CA), a direct client to the store, and a raw HTTP client for hand-built requests.

pub mod forward;
pub mod raw;
pub mod relay;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_types::retry::RetryConfig;
use s3crypt::config::{Config, Protocol};
use s3crypt::server::Server;
use tokio::sync::oneshot;

pub const CLIENT_AK: &str = "AKIDCLIENTTEST";
pub const CLIENT_SK: &str = "client-secret/with+special=chars";
pub const LIMITED_AK: &str = "AKIDLIMITED";
pub const LIMITED_SK: &str = "limited-secret";

/// Which store sits behind the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-process s3s-fs store (`upstream.endpoint = "embedded"`).
    Embedded,
    /// SeaweedFS started by scripts/test.sh (it verifies the proxy's re-signed SigV4).
    SeaweedFs,
    /// Whatever `TestEnvBuilder::custom_upstream` says.
    Custom,
}

/// Where the test command's SeaweedFS listens, and its credentials.
pub fn seaweedfs() -> (String, String, String) {
    let get = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: SeaweedFS tests need the SeaweedFS that scripts/test.sh installs and starts \
                 (run ./scripts/test.sh, or export S3CRYPT_TEST_SEAWEEDFS_ENDPOINT/_ACCESS_KEY/_SECRET_KEY)"
            )
        })
    };
    (
        get("S3CRYPT_TEST_SEAWEEDFS_ENDPOINT"),
        get("S3CRYPT_TEST_SEAWEEDFS_ACCESS_KEY"),
        get("S3CRYPT_TEST_SEAWEEDFS_SECRET_KEY"),
    )
}

/// Builds a [`TestEnv`].
pub struct TestEnvBuilder {
    backend: Backend,
    upstream_secret_override: Option<String>,
    extra_listeners: Vec<(&'static str, &'static str)>,
    certificates: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    base_domains: Vec<String>,
    custom_upstream: Option<(String, Client)>,
    bucket: Option<String>,
    passthrough: Vec<String>,
    keyring: Option<std::path::PathBuf>,
    legacy_passthrough: bool,
    server_extra: String,
    limited_rps: Option<u32>,
    upstream_extra: String,
    encryption_extra: String,
    admin: bool,
}

/// A running proxy and its clients.
pub struct TestEnv {
    /// Holds the config, certificates and embedded store data until the test ends.
    _dir: tempfile::TempDir,
    pub https: SocketAddr,
    /// Plain-HTTP listeners by policy name ("refuse", "redirect", "allow").
    pub http: Vec<(&'static str, SocketAddr)>,
    pub ca_pem: Vec<u8>,
    /// A bucket made for this test.
    pub bucket: String,
    /// The store, bypassing the proxy.
    pub direct: Client,
    /// The admin listener, if the builder asked for one.
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A bucket name unique to this test process and call.
pub fn unique_bucket(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() % 1_000_000;
    format!("{prefix}-{pid}-{t}-{n}")
}

/// An aws-sdk-s3 client for `endpoint`, trusting `ca_pem` if given, with retries off so tests see the first
/// answer.
pub fn s3_client(endpoint: &str, ak: &str, sk: &str, ca_pem: Option<&[u8]>, skew: Option<Duration>) -> Client {
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ak, sk, None, None, "test"))
        .force_path_style(true)
        .retry_config(RetryConfig::disabled());
    if let Some(ca) = ca_pem {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
            .tls_context(
                TlsContext::builder()
                    .with_trust_store(TrustStore::empty().with_pem_certificate(ca.to_vec()))
                    .build()
                    .expect("tls context"),
            )
            .build_https();
        b = b.http_client(http);
    }
    if let Some(skew) = skew {
        b = b.time_source(Skewed(skew));
    }
    Client::from_conf(b.build())
}

/// A clock running `0` ahead of the real one.
#[derive(Debug)]
struct Skewed(Duration);

impl aws_smithy_async::time::TimeSource for Skewed {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.0
    }
}

impl TestEnv {
    pub fn builder(backend: Backend) -> TestEnvBuilder {
        TestEnvBuilder {
            backend,
            upstream_secret_override: None,
            extra_listeners: Vec::new(),
            certificates: Vec::new(),
            base_domains: Vec::new(),
            custom_upstream: None,
            bucket: None,
            passthrough: Vec::new(),
            keyring: None,
            legacy_passthrough: false,
            server_extra: String::new(),
            limited_rps: None,
            upstream_extra: String::new(),
            encryption_extra: String::new(),
            admin: false,
        }
    }

    /// A proxy with default settings in front of `backend`.
    pub async fn start(backend: Backend) -> TestEnv {
        Self::builder(backend).start().await
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.https.port())
    }

    /// A client through the proxy with the default (unlimited) credentials.
    pub fn client(&self) -> Client {
        s3_client(&self.endpoint(), CLIENT_AK, CLIENT_SK, Some(&self.ca_pem), None)
    }

    /// A client through the proxy with other credentials.
    pub fn client_as(&self, ak: &str, sk: &str) -> Client {
        s3_client(&self.endpoint(), ak, sk, Some(&self.ca_pem), None)
    }

    /// A client through the proxy whose clock is off by `skew`.
    pub fn client_skewed(&self, skew: Duration) -> Client {
        s3_client(&self.endpoint(), CLIENT_AK, CLIENT_SK, Some(&self.ca_pem), Some(skew))
    }

    pub fn http_addr(&self, policy: &str) -> SocketAddr {
        self.http.iter().find(|(p, _)| *p == policy).map(|(_, a)| *a).expect("no such plain-http listener")
    }

    /// The raw-request helper for this proxy.
    pub fn raw(&self) -> raw::Raw {
        raw::Raw::new(&self.ca_pem)
    }

    /// Signals shutdown without waiting (the proxy drains in the background).
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Stops the proxy and waits for its drain.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Lists the keys the store holds in this test's bucket (bypassing the proxy).
    pub async fn stored_keys(&self) -> Vec<String> {
        let out = self.direct.list_objects_v2().bucket(&self.bucket).send().await.expect("direct list");
        out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl TestEnvBuilder {
    /// Sign upstream requests with a wrong secret (SeaweedFS only).
    pub fn wrong_upstream_secret(mut self) -> Self {
        self.upstream_secret_override = Some("definitely-not-the-secret".into());
        self
    }

    /// Adds plain-HTTP listeners: ("refuse" | "redirect" | "allow").
    pub fn plain_http(mut self, policies: &[&'static str]) -> Self {
        for p in policies {
            self.extra_listeners.push((p, p));
        }
        self
    }

    /// Serves these certificate files instead of the generated dev certificate.
    pub fn certificates(mut self, files: Vec<(std::path::PathBuf, std::path::PathBuf)>) -> Self {
        self.certificates = files;
        self
    }

    /// Uses this `[upstream]` table, and `direct` to reach the store behind it (with `Backend::Custom`).
    pub fn custom_upstream(mut self, upstream_toml: String, direct: Client) -> Self {
        self.custom_upstream = Some((upstream_toml, direct));
        self
    }

    /// Uses this bucket name (created if missing) instead of a fresh one.
    pub fn bucket(mut self, name: &str) -> Self {
        self.bucket = Some(name.to_owned());
        self
    }

    /// Stores this bucket's objects as plaintext (no encryption).
    pub fn passthrough_bucket(mut self, name: &str) -> Self {
        self.passthrough.push(name.to_owned());
        self
    }

    /// Uses this keyring file (default: a fresh one in the test's directory).
    pub fn keyring(mut self, path: &std::path::Path) -> Self {
        self.keyring = Some(path.to_owned());
        self
    }

    /// `encryption.legacy_objects = "passthrough"`.
    pub fn legacy_passthrough(mut self) -> Self {
        self.legacy_passthrough = true;
        self
    }

    /// More of the `[encryption]` section, as TOML: keys first (`default = ...`), then tables
    /// (`[encryption.kms]`, `[[encryption.policy]]`).
    pub fn encryption(mut self, toml: &str) -> Self {
        self.encryption_extra.push_str(toml);
        self.encryption_extra.push('\n');
        self
    }

    /// `[encryption.kms]` pointing at the test KMS (moto) through `endpoint`, with `default_key` and more keys.
    pub fn kms(self, endpoint: &str, default_key: &str, more: &str) -> Self {
        self.encryption(&format!(
            "[encryption.kms]\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\n\
             secret_access_key = \"testing\"\ndefault_key = {default_key:?}\n{more}"
        ))
    }

    /// An admin listener (metrics, health) on an ephemeral port.
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// `server.slow_response_keepalive` (default 2s).
    pub fn slow_response_keepalive(mut self, v: &str) -> Self {
        self.server_extra.push_str(&format!("slow_response_keepalive = {v:?}\n"));
        self
    }

    /// `requests_per_second` for the LIMITED client.
    pub fn limited_client_rate(mut self, rps: u32) -> Self {
        self.limited_rps = Some(rps);
        self
    }

    /// Any `[server]` setting, as a TOML line (`body_read_timeout = "1s"`).
    pub fn server_setting(mut self, line: &str) -> Self {
        self.server_extra.push_str(line);
        self.server_extra.push('\n');
        self
    }

    /// `upstream.max_copy_size` (default 5 GiB).
    pub fn max_copy_size(mut self, bytes: u64) -> Self {
        self.upstream_extra.push_str(&format!("max_copy_size = {bytes}\n"));
        self
    }

    pub fn base_domain(mut self, d: &str) -> Self {
        self.base_domains.push(d.to_owned());
        self
    }

    pub async fn start(self) -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut toml = String::from("[server]\nmode = \"dev\"\ndrain_timeout = \"5s\"\n");
        toml.push_str(&format!("base_domains = {:?}\n", self.base_domains));
        toml.push_str(&self.server_extra);
        toml.push_str("[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"https\"\n");
        for (policy, _) in &self.extra_listeners {
            toml.push_str(&format!(
                "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"http\"\nplain_http = \"{policy}\"\n"
            ));
        }
        if self.admin {
            toml.push_str("[admin]\naddress = \"127.0.0.1:0\"\n");
        }
        toml.push_str("[tls]\nself_signed_dir = \"tls\"\nreload_interval = \"200ms\"\n");
        for (c, k) in &self.certificates {
            toml.push_str(&format!("[[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n", c, k));
        }
        toml.push_str(&format!(
            "[[clients]]\naccess_key_id = \"{CLIENT_AK}\"\nsecret_access_key = \"{CLIENT_SK}\"\nbucket_admin = true\n\
             [[clients]]\naccess_key_id = \"{LIMITED_AK}\"\nsecret_access_key = \"{LIMITED_SK}\"\nbuckets = [\"__LIMITED__\"]\n"
        ));
        if let Some(rps) = self.limited_rps {
            toml.push_str(&format!("requests_per_second = {rps}\n"));
        }
        let bucket = self.bucket.clone().unwrap_or_else(|| unique_bucket("s3c"));
        let mut toml = toml.replace("__LIMITED__", &bucket);
        toml.push_str(&format!("[encryption]\npassthrough_buckets = {:?}\n", self.passthrough));
        if let Some(k) = &self.keyring {
            toml.push_str(&format!("keyring_file = {k:?}\n"));
        }
        if self.legacy_passthrough {
            toml.push_str("legacy_objects = \"passthrough\"\n");
        }
        toml.push_str(&self.encryption_extra);
        let mut custom_direct = None;
        let (toml, direct_ep, direct_ak, direct_sk) = match self.backend {
            Backend::Custom => {
                let (up, direct) = self.custom_upstream.clone().expect("custom_upstream");
                custom_direct = Some(direct);
                (format!("{toml}{up}"), None, None, None)
            }
            Backend::Embedded => (
                format!("{toml}[upstream]\nendpoint = \"embedded\"\n[embedded]\ndata_dir = \"store\"\n"),
                None,
                None,
                None,
            ),
            Backend::SeaweedFs => {
                let (ep, ak, sk) = seaweedfs();
                let used_sk = self.upstream_secret_override.clone().unwrap_or_else(|| sk.clone());
                (
                    format!(
                        "{toml}[upstream]\nendpoint = \"{ep}\"\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{used_sk}\"\n"
                    ),
                    Some(ep),
                    Some(ak),
                    Some(sk),
                )
            }
        };
        let toml = toml.replacen("[upstream]\n", &format!("[upstream]\n{}", self.upstream_extra), 1);
        let config = Config::from_toml(&toml, dir.path(), &|_| None).unwrap_or_else(|p| panic!("config: {p:?}"));
        let server = Server::bind(config).await.expect("bind");
        let https = server.addrs().iter().find(|b| b.protocol == Protocol::Https).expect("https").addr;
        let admin = server.admin_addr();
        let http: Vec<(&'static str, SocketAddr)> = server
            .addrs()
            .iter()
            .filter(|b| b.protocol == Protocol::Http)
            .zip(self.extra_listeners.iter())
            .map(|(b, (p, _))| (*p, b.addr))
            .collect();
        let ca_pem = match server.dev_ca_file() {
            Some(p) => std::fs::read(p).expect("ca"),
            None => std::fs::read(dir.path().join("ca.pem")).unwrap_or_default(),
        };
        let direct = match (direct_ep, direct_ak, direct_sk, custom_direct) {
            (_, _, _, Some(direct)) => direct,
            (Some(ep), Some(ak), Some(sk), None) => s3_client(&ep, &ak, &sk, None, None),
            _ => {
                let e = server.embedded().expect("embedded store");
                s3_client(&format!("http://{}", e.addr), &e.access_key_id, e.secret_access_key.expose(), None, None)
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        if let Err(e) = direct.create_bucket().bucket(&bucket).send().await {
            let exists = e
                .as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists());
            assert!(exists || self.bucket.is_some(), "create test bucket: {e:?}");
        }
        TestEnv { _dir: dir, https, http, ca_pem, bucket, direct, admin, stop: Some(stop), task: Some(task) }
    }
}

/// The KMS the test command started (moto in server mode).
pub fn kms_endpoint() -> String {
    std::env::var("S3CRYPT_TEST_KMS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "S3CRYPT_TEST_KMS_ENDPOINT is not set: KMS tests need the moto server that scripts/test.sh starts (run \
             ./scripts/test.sh, or start `moto_server -H 127.0.0.1 -p 5055` and export the endpoint)"
        )
    })
}

/// A KMS client on the test KMS (moto).
pub fn kms_client() -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .endpoint_url(kms_endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// Creates a symmetric KMS key in the test KMS; returns its ARN.
pub async fn create_kms_key() -> String {
    let out = kms_client().create_key().send().await.expect("create KMS key");
    out.key_metadata().and_then(|m| m.arn()).expect("key ARN").to_owned()
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

/// Runs a scenario against both backends as two tests named `<name>::embedded` and `<name>::seaweedfs`.
#[macro_export]
macro_rules! against_both_stores {
    ($name:ident, $scenario:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                $scenario($crate::common::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn seaweedfs() {
                $scenario($crate::common::Backend::SeaweedFs).await
            }
        }
    };
}

/// A child process (the real binary) killed if the test ends before stopping it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
