//! Configuration: the TOML schema (serde, `deny_unknown_fields`, named defaults) and the runtime settings; the
//! validation between them (resolve.rs: one `TryFrom` per section, every problem reported at once) resolves secrets
//! from the file, an environment variable or a secret file.
//!
//! `Config::load(path)` is the only entry point: it parses, validates and resolves, and either returns a
//! complete runtime configuration or the full list of [`Problem`]s.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod capacity;
mod check;
mod keys;
mod resolve;
pub use keys::{
    BucketPolicy, DEFAULT_KMS_TIMEOUT, DefaultProtection, EncryptionSettings, KmsSettings, RawEncryption, RawKms,
    RawPolicy, RawS3ec, S3ecSettings, SseKind, UpstreamSse, is_key_arn,
};

use crate::util::secret::SecretString;
use check::{Ctx, In};

pub const DEFAULT_REGION: &str = "us-east-1";
/// Long enough for a multi-GB upload or a re-encrypting CompleteMultipartUpload to finish after SIGTERM; pod
/// termination grace periods are sized from it (docs/OPERATIONS.md).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// After SIGTERM, how long `/readyz` fails while the listeners still accept (load balancers stop sending first).
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::ZERO;
/// How long the store may be unreachable before `/readyz` fails (a brief store outage leaves replicas in
/// the Service, where clients get S3 errors they retry instead of refused connections).
pub const DEFAULT_STORE_OUTAGE_TOLERANCE: Duration = Duration::from_secs(60);
/// How often the store's reachability is probed for `/readyz`.
pub const DEFAULT_STORE_PROBE_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// S3 answers `RequestTimeout` to an upload that sends nothing for about 20 s; a little more leeway here.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// boto3 and the aws CLI v1 presign with SigV2 by default for custom endpoints.
pub const DEFAULT_ALLOW_SIGV2_PRESIGNED: bool = true;
pub const DEFAULT_CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_SELF_SIGNED_DIR: &str = "./s3crypt-data/tls";
/// A CompleteMultipartUpload slower than this answers 200 at once and keeps the connection alive with spaces
/// until its result, as S3 does.
pub const DEFAULT_SLOW_RESPONSE_KEEPALIVE: Duration = Duration::from_secs(2);
/// Client connections served at once; more wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Header fields per request (HTTP/1.1).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Failed authentications per second one client address may cause before its requests get SlowDown unverified.
pub const DEFAULT_AUTH_FAILURES_PER_ADDRESS: u32 = 20;
/// The largest object S3 copies with one CopyObject (5 GiB); larger ones are copied part by part.
pub const DEFAULT_MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_UPSTREAM_POOL_MAX_IDLE: usize = 64;
pub const DEFAULT_EMBEDDED_DATA_DIR: &str = "./s3crypt-data/store";
pub const EMBEDDED_ENDPOINT: &str = "embedded";
/// Where dev mode keeps (and creates) its keyring when none is configured.
pub const DEFAULT_DEV_KEYRING: &str = "./s3crypt-data/keyring.toml";

/// One configuration problem: the key, what is wrong, and how to fix it.
#[derive(Debug, Clone)]
pub struct Problem {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.problem, self.fix)
    }
}

/// All problems found in a configuration file.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {} problem(s)", self.path.display(), self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// === the TOML schema ===========================================================================================

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub clients: Vec<RawClient>,
    pub upstream: RawUpstream,
    #[serde(default)]
    pub embedded: RawEmbedded,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default)]
    pub encryption: RawEncryption,
}

/// The admin listener: metrics and health, plain HTTP, meant for localhost or a pod network.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<SocketAddr>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    #[serde(default)]
    pub format: LogFormat,
    /// "stderr" (default), "off", or a file path (appended).
    pub audit: Option<String>,
}

/// Where the audit log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Off,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct LoggingSettings {
    pub format: LogFormat,
    pub audit: AuditSink,
}

/// What GET / HEAD do with an object that carries no s3crypt envelope (written before s3crypt, or directly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LegacyPolicy {
    /// Refuse it (403 InvalidObjectState).
    #[default]
    Reject,
    /// Return it as stored (for migrations).
    Passthrough,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub base_domains: Vec<String>,
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    #[serde(default = "default_shutdown_delay", with = "humantime_serde")]
    pub shutdown_delay: Duration,
    #[serde(default = "default_store_outage_tolerance", with = "humantime_serde")]
    pub store_outage_tolerance: Duration,
    #[serde(default = "default_store_probe_interval", with = "humantime_serde")]
    pub store_probe_interval: Duration,
    /// Bytes; 0: derived from the cgroup memory limit, if there is one.
    #[serde(default)]
    pub memory_budget: u64,
    /// 0: derived from the memory budget.
    #[serde(default)]
    pub max_inflight_requests: usize,
    #[serde(default = "default_tls_handshake_timeout", with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    #[serde(default = "default_allow_sigv2_presigned")]
    pub allow_sigv2_presigned: bool,
    #[serde(default = "default_slow_response_keepalive", with = "humantime_serde")]
    pub slow_response_keepalive: Duration,
    /// Default: 10,000, or fewer to fit the memory budget.
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    #[serde(default)]
    pub worker_threads: usize,
    #[serde(default = "default_auth_failures_per_address")]
    pub auth_failures_per_address: u32,
    #[serde(default = "default_bucket_settings_refresh", with = "humantime_serde")]
    pub bucket_settings_refresh: Duration,
}

/// How long a replica uses a bucket's settings (default encryption, policy) before reading them again.
pub const DEFAULT_BUCKET_SETTINGS_REFRESH: Duration = Duration::from_secs(5);

fn default_bucket_settings_refresh() -> Duration {
    DEFAULT_BUCKET_SETTINGS_REFRESH
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            mode: Mode::default(),
            region: default_region(),
            base_domains: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            shutdown_delay: DEFAULT_SHUTDOWN_DELAY,
            store_outage_tolerance: DEFAULT_STORE_OUTAGE_TOLERANCE,
            store_probe_interval: DEFAULT_STORE_PROBE_INTERVAL,
            memory_budget: 0,
            max_inflight_requests: 0,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            allow_sigv2_presigned: DEFAULT_ALLOW_SIGV2_PRESIGNED,
            slow_response_keepalive: DEFAULT_SLOW_RESPONSE_KEEPALIVE,
            max_connections: None,
            max_headers: DEFAULT_MAX_HEADERS,
            auth_failures_per_address: DEFAULT_AUTH_FAILURES_PER_ADDRESS,
            worker_threads: 0,
            bucket_settings_refresh: DEFAULT_BUCKET_SETTINGS_REFRESH,
        }
    }
}

/// `production` refuses to start without real certificates; `dev` generates a self-signed one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Production,
    Dev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Https,
    Http,
}

/// What a plain-HTTP listener does with requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlainHttpPolicy {
    /// 403 with an S3 XML error.
    #[default]
    Refuse,
    /// 308 to the same URL over https.
    Redirect,
    /// Serve it (for a sidecar bound to localhost).
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    pub protocol: Protocol,
    pub plain_http: Option<PlainHttpPolicy>,
    pub redirect_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    #[serde(default = "default_self_signed_dir")]
    pub self_signed_dir: PathBuf,
    #[serde(default = "default_cert_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            certificates: Vec::new(),
            self_signed_dir: default_self_signed_dir(),
            reload_interval: DEFAULT_CERT_RELOAD_INTERVAL,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub access_key_id: String,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub buckets: Option<Vec<String>>,
    /// Sustained requests per second this client may send (a token bucket with a burst of as many); more are
    /// answered 503 SlowDown. Default: no limit.
    pub requests_per_second: Option<u32>,
    /// May put and delete buckets' default encryption and policies through the S3 API. Default: false.
    #[serde(default)]
    pub bucket_admin: bool,
}

/// How upload bodies are framed towards the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadChecksum {
    /// aws-chunked with a CRC32 trailer: the store rejects aborted or corrupted uploads.
    #[default]
    Crc32,
    /// Plain `Content-Length` bodies (for stores without aws-chunked support).
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    #[default]
    Path,
    Virtual,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub addressing: Addressing,
    /// "static" (the keys below; the default) or "aws" (the standard AWS credential chain).
    #[serde(default)]
    pub credentials: CredentialSource,
    #[serde(default = "default_credentials_refresh_before", with = "humantime_serde")]
    pub credentials_refresh_before: Duration,
    pub access_key_id: Option<String>,
    pub access_key_id_env: Option<String>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub resolve_to: Option<std::net::IpAddr>,
    #[serde(default)]
    pub upload_checksum: UploadChecksum,
    #[serde(default = "default_upstream_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_upstream_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    #[serde(default = "default_upstream_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    #[serde(default = "default_upstream_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    #[serde(default = "default_max_copy_size")]
    pub max_copy_size: u64,
    #[serde(default = "default_system_bucket")]
    pub system_bucket: String,
}

/// Where the store's credentials come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    /// `upstream.access_key_id` and `secret_access_key` (`_env`, `_file`).
    #[default]
    Static,
    /// The standard AWS chain: environment, profile, web identity (IRSA), container credentials (EKS Pod
    /// Identity, ECS), IMDS; temporary credentials refreshed ahead of their expiry.
    Aws,
}

/// Chain credentials are fetched again this long before they expire (the AWS SDKs' margin).
pub const DEFAULT_CREDENTIALS_REFRESH_BEFORE: Duration = Duration::from_secs(300);

fn default_credentials_refresh_before() -> Duration {
    DEFAULT_CREDENTIALS_REFRESH_BEFORE
}

/// The store's credentials, resolved.
#[derive(Debug, Clone)]
pub enum UpstreamCredentials {
    Static {
        access_key_id: String,
        secret: SecretString,
    },
    /// The standard AWS chain, refreshed this long before each expiry.
    AwsChain {
        refresh_before: Duration,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedded {
    #[serde(default = "default_embedded_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub buckets: Vec<String>,
}

impl Default for RawEmbedded {
    fn default() -> Self {
        RawEmbedded { data_dir: default_embedded_data_dir(), buckets: Vec::new() }
    }
}

fn default_region() -> String {
    DEFAULT_REGION.to_owned()
}
fn default_slow_response_keepalive() -> Duration {
    DEFAULT_SLOW_RESPONSE_KEEPALIVE
}
/// Most runtime worker threads accepted.
const MAX_WORKER_THREADS: usize = 1024;

fn default_max_headers() -> usize {
    DEFAULT_MAX_HEADERS
}
fn default_auth_failures_per_address() -> u32 {
    DEFAULT_AUTH_FAILURES_PER_ADDRESS
}
/// The bucket of the proxy's own records (open uploads, part attributes), hidden from clients.
pub const DEFAULT_SYSTEM_BUCKET: &str = "s3crypt-system";

fn default_system_bucket() -> String {
    DEFAULT_SYSTEM_BUCKET.to_owned()
}

fn default_max_copy_size() -> u64 {
    DEFAULT_MAX_COPY_SIZE
}
fn default_allow_sigv2_presigned() -> bool {
    DEFAULT_ALLOW_SIGV2_PRESIGNED
}
fn default_drain_timeout() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}
fn default_shutdown_delay() -> Duration {
    DEFAULT_SHUTDOWN_DELAY
}
fn default_store_outage_tolerance() -> Duration {
    DEFAULT_STORE_OUTAGE_TOLERANCE
}
fn default_store_probe_interval() -> Duration {
    DEFAULT_STORE_PROBE_INTERVAL
}
fn default_tls_handshake_timeout() -> Duration {
    DEFAULT_TLS_HANDSHAKE_TIMEOUT
}
fn default_header_read_timeout() -> Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}
fn default_body_read_timeout() -> Duration {
    DEFAULT_BODY_READ_TIMEOUT
}
fn default_cert_reload_interval() -> Duration {
    DEFAULT_CERT_RELOAD_INTERVAL
}
fn default_self_signed_dir() -> PathBuf {
    PathBuf::from(DEFAULT_SELF_SIGNED_DIR)
}
fn default_upstream_connect_timeout() -> Duration {
    DEFAULT_UPSTREAM_CONNECT_TIMEOUT
}
fn default_upstream_response_timeout() -> Duration {
    DEFAULT_UPSTREAM_RESPONSE_TIMEOUT
}
fn default_upstream_pool_idle_timeout() -> Duration {
    DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT
}
fn default_upstream_pool_max_idle() -> usize {
    DEFAULT_UPSTREAM_POOL_MAX_IDLE
}
fn default_embedded_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_EMBEDDED_DATA_DIR)
}

// === the runtime configuration =================================================================================

/// A validated configuration with every secret resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Vec<Listener>,
    pub tls: TlsSettings,
    pub clients: Vec<ClientCredential>,
    /// Per-client request rate limits, by access key id (clients without one are not limited).
    pub client_rates: HashMap<String, u32>,
    pub upstream: UpstreamSettings,
    pub encryption: EncryptionSettings,
    /// The admin listener (metrics, health), if configured.
    pub admin: Option<SocketAddr>,
    pub logging: LoggingSettings,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub mode: Mode,
    pub region: String,
    pub base_domains: Vec<String>,
    /// After the shutdown delay, how long requests in flight may take to finish before connections are closed.
    pub drain_timeout: Duration,
    /// After SIGTERM: `/readyz` fails while the listeners keep accepting, for this long; then the drain starts.
    pub shutdown_delay: Duration,
    /// `/readyz` fails once the store has been unreachable this long.
    pub store_outage_tolerance: Duration,
    pub store_probe_interval: Duration,
    /// The memory the proxy sizes its limits to (explicit, or 80 % of the cgroup limit); `None`: no budget.
    pub memory_budget: Option<u64>,
    /// Requests served at once; past it, 503 `SlowDown` with `Retry-After` (read at start only).
    pub max_inflight_requests: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// A client upload that sends nothing for this long fails with `RequestTimeout` (slowloris bodies).
    pub body_read_timeout: Duration,
    pub allow_sigv2_presigned: bool,
    pub slow_response_keepalive: Duration,
    pub max_connections: usize,
    pub max_headers: usize,
    /// Runtime worker threads; 0 = one per core. Read at start only (a reload keeps the running runtime).
    pub worker_threads: usize,
    /// Failed authentications per second (and burst) one client address may cause; past it, its requests get
    /// `SlowDown` before any verification. 0: no limit.
    pub auth_failures_per_address: u32,
    /// How long a replica uses a bucket's settings before reading them again (docs/BUCKETS.md).
    pub bucket_settings_refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub protocol: Protocol,
    /// Only meaningful for `Protocol::Http`.
    pub plain_http: PlainHttpPolicy,
    /// Port used in redirects (default: the first https listener's port).
    pub redirect_port: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub certificates: Vec<RawCertificate>,
    pub self_signed_dir: PathBuf,
    pub reload_interval: Duration,
}

/// A client's credential and what it may reach.
#[derive(Debug, Clone)]
pub struct ClientCredential {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// `None` = every bucket.
    pub buckets: Option<HashSet<String>>,
    /// May change buckets' default encryption and policies (docs/BUCKETS.md).
    pub bucket_admin: bool,
}

#[derive(Debug, Clone)]
pub enum UpstreamEndpoint {
    /// The in-process store (s3s-fs) on a local directory.
    Embedded { data_dir: PathBuf, buckets: Vec<String> },
    /// A real S3 endpoint.
    Remote { uri: http::Uri },
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub endpoint: UpstreamEndpoint,
    pub region: String,
    pub addressing: Addressing,
    /// `None` only for the embedded store, whose credentials are generated at start.
    pub credentials: Option<UpstreamCredentials>,
    pub ca_file: Option<PathBuf>,
    /// Connect to this address instead of resolving the endpoint's host.
    pub resolve_to: Option<std::net::IpAddr>,
    pub upload_checksum: UploadChecksum,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// The store's CopyObject limit: larger objects are copied with UploadPartCopy.
    pub max_copy_size: u64,
    /// The bucket of the proxy's own records at the store (docs/MULTIPART.md "The system bucket").
    pub system_bucket: String,
}

impl Config {
    /// Reads, parses, validates and resolves a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { path: path.to_owned(), problems };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![Problem {
                key: "(file)".into(),
                problem: format!("cannot read: {e}"),
                fix: "pass an existing, readable file to --config".into(),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base, &|name| std::env::var(name).ok()).map_err(fail)
    }

    /// Parses and validates TOML text. Relative paths are resolved against `base`; `env` looks up variables.
    pub fn from_toml(text: &str, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![toml_problem(&e)])?;
        Config::try_from(In::new(&raw, Ctx { base, env, mode: raw.server.mode }))
    }
}

fn toml_problem(e: &toml::de::Error) -> Problem {
    let msg = e.message().to_owned();
    let fix = if msg.contains("unknown field") {
        "remove or rename the key; proxy.toml.example lists every key".to_owned()
    } else {
        "correct the value's syntax or type; proxy.toml.example shows each key with its default".to_owned()
    };
    let key = match e.span() {
        Some(span) => format!("(at byte {})", span.start),
        None => "(file)".to_owned(),
    };
    Problem { key, problem: msg, fix }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const MINIMAL: &str = r#"
        [[listeners]]
        address = "127.0.0.1:0"
        protocol = "https"
        [server]
        mode = "dev"
        [[clients]]
        access_key_id = "AKIDTEST"
        secret_access_key = "secret"
        [upstream]
        endpoint = "embedded"
    "#;

    #[test]
    fn a_minimal_dev_config_loads_with_defaults() {
        let c = Config::from_toml(MINIMAL, Path::new("/tmp"), &no_env).unwrap();
        assert_eq!(c.server.region, DEFAULT_REGION);
        assert_eq!(c.upstream.connect_timeout, DEFAULT_UPSTREAM_CONNECT_TIMEOUT);
        assert!(matches!(c.upstream.endpoint, UpstreamEndpoint::Embedded { .. }));
    }

    #[test]
    fn unknown_keys_are_rejected_and_named() {
        let text = MINIMAL.replace("mode = \"dev\"", "mode = \"dev\"\nmoed = 1");
        let problems = Config::from_toml(&text, Path::new("/tmp"), &no_env).unwrap_err();
        assert!(problems[0].problem.contains("moed"), "{problems:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [[listeners]]
            address = "nonsense"
            protocol = "https"
            [[clients]]
            access_key_id = "x"
            [upstream]
            endpoint = "ftp://x"
            region = ""
        "#;
        let problems = Config::from_toml(text, Path::new("/tmp"), &no_env).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "listeners[0].address",
            "tls.certificates",
            "clients[0].access_key_id",
            "clients[0].secret_access_key",
            "upstream.endpoint",
            "upstream.access_key_id",
            "upstream.secret_access_key",
            "upstream.region",
            "encryption.keyring_file",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
    }

    #[test]
    fn secrets_can_come_from_the_environment() {
        let text = MINIMAL.replace("secret_access_key = \"secret\"", "secret_access_key_env = \"S3C_TEST\"");
        let env = |n: &str| (n == "S3C_TEST").then(|| "from-env".to_owned());
        let c = Config::from_toml(&text, Path::new("/tmp"), &env).unwrap();
        assert_eq!(c.clients[0].secret_access_key.expose(), "from-env");
        let problems = Config::from_toml(&text, Path::new("/tmp"), &no_env).unwrap_err();
        assert_eq!(problems[0].key, "clients[0].secret_access_key_env");
    }

    #[test]
    fn kms_and_policies_parse_and_their_mistakes_are_all_reported() {
        let ok = format!(
            "{MINIMAL}\n[encryption]\ndefault = \"kms\"\n[encryption.kms]\nendpoint = \"http://127.0.0.1:5055\"\n\
             default_key = \"alias/app\"\n[[encryption.policy]]\nbucket = \"fin\"\nprefix = \"pub/\"\n\
             default = \"plaintext\"\nrequire_sse = false\nupstream_sse = \"AES256\"\n"
        );
        let c = Config::from_toml(&ok, Path::new("/tmp"), &no_env).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(c.encryption.default, DefaultProtection::Kms(None));
        assert_eq!(c.encryption.kms.as_ref().unwrap().default_key.as_deref(), Some("alias/app"));
        assert!(c.encryption.kms.as_ref().unwrap().bucket_key, "bucket keys by default");
        assert_eq!(c.encryption.policies[0].default, Some(DefaultProtection::Plaintext));
        assert_eq!(c.encryption.policies[0].upstream_sse, Some(UpstreamSse::Aes256));

        let bad = format!(
            "{MINIMAL}\n[encryption]\ndefault = \"kms\"\n[[encryption.policy]]\nbucket = \"no/slash\"\n\
             default = \"rot13\"\n[[encryption.policy]]\nbucket = \"ok-bucket\"\n[[encryption.policy]]\n\
             bucket = \"ok-bucket\"\n"
        );
        let problems = Config::from_toml(&bad, Path::new("/tmp"), &no_env).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in
            ["encryption.kms", "encryption.policy[0].bucket", "encryption.policy[0].default", "encryption.policy[2]"]
        {
            assert!(keys.contains(&k), "{k} in {keys:?}");
        }
    }
}
