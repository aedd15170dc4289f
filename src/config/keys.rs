//! The `[encryption]` section: the keyring, AWS KMS, the default protection and per-bucket / per-prefix policy.
//! Raw serde structs, their validation (every problem reported) and the resolved settings.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::{In, Problems};
use super::{DEFAULT_DEV_KEYRING, LegacyPolicy, Mode, Problem};
use crate::util::secret::SecretString;

/// Default KMS request deadline.
pub const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unwrapped KMS data key or bucket key stays cached.
pub const DEFAULT_KMS_CACHE_TTL: Duration = Duration::from_secs(300);
/// Most cached KMS keys.
pub const DEFAULT_KMS_CACHE_ENTRIES: usize = 10_000;
/// Most objects wrapped under one bucket key before a fresh one is drawn.
pub const DEFAULT_BUCKET_KEY_USES: u64 = 100_000;

fn default_true() -> bool {
    true
}
fn default_kms_timeout() -> Duration {
    DEFAULT_KMS_TIMEOUT
}
fn default_kms_cache_ttl() -> Duration {
    DEFAULT_KMS_CACHE_TTL
}
fn default_kms_cache_entries() -> usize {
    DEFAULT_KMS_CACHE_ENTRIES
}
fn default_bucket_key_uses() -> u64 {
    DEFAULT_BUCKET_KEY_USES
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryption {
    pub keyring_file: Option<PathBuf>,
    #[serde(default)]
    pub legacy_objects: LegacyPolicy,
    #[serde(default)]
    pub passthrough_buckets: Vec<String>,
    /// What objects get when the client sends no SSE header: "keyring", "kms", "kms:<key>" or "plaintext".
    pub default: Option<String>,
    pub kms: Option<RawKms>,
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
    pub s3ec: Option<RawS3ec>,
    /// SSE-S3 (keyring) objects answer PUT and UploadPart with the plaintext MD5, computed as the body streams
    /// (about 2 CPU-s/GB on the bench machine). `false`: only when the client sent Content-MD5; opaque otherwise.
    #[serde(default = "default_md5_etags")]
    pub md5_etags: bool,
}

fn default_md5_etags() -> bool {
    true
}

/// Default bound on one S3EC object read through the proxy (it is buffered whole to be authenticated).
pub const DEFAULT_S3EC_MAX_OBJECT: u64 = 64 * 1024 * 1024;
/// Default bound on all S3EC objects buffered at once.
pub const DEFAULT_S3EC_MAX_BUFFERED: u64 = 256 * 1024 * 1024;
fn default_s3ec_max_object() -> u64 {
    DEFAULT_S3EC_MAX_OBJECT
}
fn default_s3ec_max_buffered() -> u64 {
    DEFAULT_S3EC_MAX_BUFFERED
}
/// Default time an S3EC read waits for buffer space before SlowDown.
pub const DEFAULT_S3EC_BUFFER_WAIT: Duration = Duration::from_secs(30);
fn default_s3ec_buffer_wait() -> Duration {
    DEFAULT_S3EC_BUFFER_WAIT
}

/// `[encryption.s3ec]`: reading objects written by the AWS S3 Encryption Client (docs/S3EC.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3ec {
    #[serde(default)]
    pub enabled: bool,
    /// Where S3EC objects may be read: `bucket` or `bucket/prefix` entries.
    #[serde(default)]
    pub scope: Vec<String>,
    /// The KMS keys (key ARNs) S3EC objects may be wrapped under.
    #[serde(default)]
    pub kms_keys: Vec<String>,
    /// Raw AES wrapping keys (the S3EC "AES keyring"), in the keyring file format.
    pub aes_keyring_file: Option<PathBuf>,
    #[serde(default = "default_s3ec_max_object")]
    pub max_object_size: u64,
    #[serde(default = "default_s3ec_max_buffered")]
    pub max_buffered: u64,
    #[serde(default = "default_s3ec_buffer_wait", with = "humantime_serde")]
    pub buffer_wait: Duration,
    #[serde(default)]
    pub instruction_files: bool,
    #[serde(default)]
    pub list_buckets: Vec<String>,
}

/// Resolved `[encryption.s3ec]`.
#[derive(Debug, Clone)]
pub struct S3ecSettings {
    /// Read S3EC objects (else they fall under `legacy_objects` like any object without an envelope). Off by
    /// default: an S3EC object is bound to no bucket or key, so a store could put one in place of any object.
    pub enabled: bool,
    /// `(bucket, key prefix)` pairs: only objects there are ever read as S3EC objects.
    pub scope: Vec<(String, String)>,
    /// The KMS key ARNs an S3EC object's data key may be wrapped under (checked against the key KMS used).
    pub kms_keys: HashSet<String>,
    pub aes_keyring_file: Option<PathBuf>,
    /// Largest S3EC object read through the proxy (plaintext bytes).
    pub max_object_size: u64,
    /// Most bytes of S3EC objects buffered at once, over all requests.
    pub max_buffered: u64,
    /// How long a read waits for buffer space before it answers SlowDown.
    pub buffer_wait: Duration,
    /// Look for `<key>.instruction` when an object has no metadata of its own.
    pub instruction_files: bool,
    /// Buckets whose listings report S3EC objects' plaintext sizes (one HEAD per listed object).
    pub list_buckets: HashSet<String>,
}

impl Default for S3ecSettings {
    fn default() -> S3ecSettings {
        S3ecSettings {
            enabled: false,
            scope: Vec::new(),
            kms_keys: HashSet::new(),
            aes_keyring_file: None,
            max_object_size: DEFAULT_S3EC_MAX_OBJECT,
            max_buffered: DEFAULT_S3EC_MAX_BUFFERED,
            buffer_wait: DEFAULT_S3EC_BUFFER_WAIT,
            instruction_files: false,
            list_buckets: HashSet::new(),
        }
    }
}

impl S3ecSettings {
    /// Whether the object `key` of `bucket` may be read as an S3EC object.
    pub fn covers(&self, bucket: &str, key: &str) -> bool {
        self.enabled && self.scope.iter().any(|(b, prefix)| b == bucket && key.starts_with(prefix.as_str()))
    }
}

/// Whether `k` is a KMS key ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`).
pub fn is_key_arn(k: &str) -> bool {
    let f: Vec<&str> = k.splitn(6, ':').collect();
    f.len() == 6
        && f[0] == "arn"
        && f[2] == "kms"
        && !f[3].is_empty()
        && !f[4].is_empty()
        && f[5].strip_prefix("key/").is_some_and(|id| !id.is_empty())
}

impl TryFrom<In<'_, RawS3ec>> for S3ecSettings {
    type Error = Vec<Problem>;

    fn try_from(r: In<'_, RawS3ec>) -> Result<S3ecSettings, Vec<Problem>> {
        let (raw, base) = (r.raw, r.ctx.base);
        let mut p = Problems::default();
        let mut scope = Vec::new();
        for (i, entry) in raw.scope.iter().enumerate() {
            let (bucket, prefix) = entry.split_once('/').unwrap_or((entry.as_str(), ""));
            if crate::s3::validate_bucket_name(bucket, true).is_err() {
                p.push(
                    format!("encryption.s3ec.scope[{i}]"),
                    format!("{entry:?} does not start with a valid bucket name"),
                    "\"bucket\" or \"bucket/prefix/\"",
                );
            }
            scope.push((bucket.to_owned(), prefix.to_owned()));
        }
        if raw.enabled && scope.is_empty() {
            p.push(
                "encryption.s3ec.scope",
                "S3EC reading is on but names no bucket",
                "list the buckets (or bucket/prefix/) that hold S3 Encryption Client objects: scope = [\"legacy\"]",
            );
        }
        for (i, k) in raw.kms_keys.iter().enumerate() {
            if !is_key_arn(k) {
                p.push(
                    format!("encryption.s3ec.kms_keys[{i}]"),
                    format!("{k:?} is not a KMS key ARN"),
                    "the key's full ARN, arn:aws:kms:<region>:<account>:key/<id> (aliases can be repointed)",
                );
            }
        }
        let aes_keyring_file = raw.aes_keyring_file.as_ref().map(|f| base.join(f));
        if let Some(f) = &aes_keyring_file
            && !f.is_file()
        {
            p.push(
                "encryption.s3ec.aes_keyring_file",
                format!("{} does not exist", f.display()),
                "a keyring file (mode 600) holding the S3 Encryption Client's AES wrapping keys",
            );
        }
        if raw.max_object_size == 0 || raw.max_object_size > raw.max_buffered {
            p.push(
                "encryption.s3ec.max_object_size",
                format!("{} must be at least 1 and at most max_buffered ({})", raw.max_object_size, raw.max_buffered),
                "e.g. max_object_size = 67108864, max_buffered = 268435456",
            );
        }
        p.duration("encryption.s3ec.buffer_wait", raw.buffer_wait);
        if raw.max_buffered > (u64::from(u32::MAX) << 10) {
            p.push("encryption.s3ec.max_buffered", "must be below 4 TiB", "use the default (256 MiB)");
        }
        for (i, b) in raw.list_buckets.iter().enumerate() {
            if crate::s3::validate_bucket_name(b, true).is_err() {
                p.push(
                    format!("encryption.s3ec.list_buckets[{i}]"),
                    format!("{b:?} is not a valid bucket name"),
                    "list bucket names",
                );
            } else if !scope.iter().any(|(sb, _)| sb == b) {
                p.push(
                    format!("encryption.s3ec.list_buckets[{i}]"),
                    format!("{b:?} is not in encryption.s3ec.scope"),
                    "add it to scope, or leave it out of list_buckets",
                );
            }
        }
        let settings = S3ecSettings {
            enabled: raw.enabled,
            scope,
            kms_keys: raw.kms_keys.iter().cloned().collect(),
            aes_keyring_file,
            max_object_size: raw.max_object_size,
            max_buffered: raw.max_buffered,
            buffer_wait: raw.buffer_wait,
            instruction_files: raw.instruction_files,
            list_buckets: raw.list_buckets.iter().cloned().collect(),
        };
        p.finish(Some(settings), "encryption.s3ec")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKms {
    /// Default: the standard AWS chain (AWS_REGION, profile), else "us-east-1".
    pub region: Option<String>,
    /// A custom KMS endpoint (VPC endpoint, a KMS-compatible service). Default: AWS's.
    pub endpoint: Option<String>,
    /// Explicit credentials; default: the standard AWS chain (environment, profile, web identity for
    /// Kubernetes IRSA, container and instance metadata).
    pub access_key_id: Option<String>,
    pub access_key_id_env: Option<String>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// The KMS key (ID, ARN or alias) used when the policy says "kms" and the client names none.
    pub default_key: Option<String>,
    /// KMS keys clients may name with SSE-KMS headers (besides the default key); "*" allows any.
    #[serde(default)]
    pub allowed_keys: Vec<String>,
    /// Further KMS keys objects may be read under (retired keys whose objects remain).
    #[serde(default)]
    pub readable_keys: Vec<String>,
    /// S3-Bucket-Key-style intermediate keys: one KMS call per bucket key, not per object.
    #[serde(default = "default_true")]
    pub bucket_key: bool,
    #[serde(default = "default_bucket_key_uses")]
    pub bucket_key_uses: u64,
    #[serde(default = "default_kms_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    #[serde(default = "default_kms_cache_entries")]
    pub cache_entries: usize,
    #[serde(default = "default_kms_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub default: Option<String>,
    pub allowed_kms_keys: Option<Vec<String>>,
    pub require_sse: Option<bool>,
    /// The kinds of SSE a client may ask for with headers ("sse-s3", "sse-kms", "sse-c"); others are refused.
    pub allowed_sse: Option<Vec<SseKind>>,
    pub bucket_key: Option<bool>,
    pub legacy_objects: Option<LegacyPolicy>,
    pub upstream_sse: Option<UpstreamSse>,
}

/// A kind of server-side encryption a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SseKind {
    /// `x-amz-server-side-encryption: AES256`.
    #[serde(rename = "sse-s3")]
    S3,
    /// `x-amz-server-side-encryption: aws:kms`.
    #[serde(rename = "sse-kms")]
    Kms,
    /// The `x-amz-server-side-encryption-customer-*` headers.
    #[serde(rename = "sse-c")]
    Customer,
}

/// What the store is asked for on top (its own server-side encryption of the ciphertext), for upstream bucket
/// policies that demand an `x-amz-server-side-encryption` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpstreamSse {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    AwsKms,
}

impl UpstreamSse {
    pub fn header_value(self) -> &'static str {
        match self {
            UpstreamSse::Aes256 => "AES256",
            UpstreamSse::AwsKms => "aws:kms",
        }
    }
}

/// The protection an object gets when the client asks for none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultProtection {
    /// The local keyring's current key.
    Keyring,
    /// A KMS key; `None`: `encryption.kms.default_key`.
    Kms(Option<String>),
    /// Not encrypted.
    Plaintext,
}

impl DefaultProtection {
    fn parse(s: &str) -> Option<DefaultProtection> {
        match s {
            "keyring" => Some(DefaultProtection::Keyring),
            "kms" => Some(DefaultProtection::Kms(None)),
            "plaintext" => Some(DefaultProtection::Plaintext),
            other => {
                other.strip_prefix("kms:").filter(|k| !k.is_empty()).map(|k| DefaultProtection::Kms(Some(k.to_owned())))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct KmsSettings {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub credentials: Option<(String, SecretString)>,
    pub default_key: Option<String>,
    pub allowed_keys: Vec<String>,
    pub readable_keys: Vec<String>,
    pub bucket_key: bool,
    pub bucket_key_uses: u64,
    pub cache_ttl: Duration,
    pub cache_entries: usize,
    pub timeout: Duration,
}

/// Policy for a bucket, or for the keys of a bucket under a prefix (the longest matching prefix wins; unset fields
/// fall back to the bucket's policy, then to the global settings).
#[derive(Debug, Clone)]
pub struct BucketPolicy {
    pub bucket: String,
    pub prefix: String,
    pub default: Option<DefaultProtection>,
    pub allowed_kms_keys: Option<Vec<String>>,
    pub require_sse: Option<bool>,
    pub allowed_sse: Option<Vec<SseKind>>,
    pub bucket_key: Option<bool>,
    pub legacy_objects: Option<LegacyPolicy>,
    pub upstream_sse: Option<UpstreamSse>,
}

#[derive(Debug, Clone)]
pub struct EncryptionSettings {
    pub keyring_file: PathBuf,
    /// Dev mode: create the keyring (one fresh key) if the file does not exist.
    pub create_keyring: bool,
    pub legacy_objects: LegacyPolicy,
    /// Buckets stored as plaintext (no encryption at all).
    pub passthrough_buckets: HashSet<String>,
    pub default: DefaultProtection,
    pub kms: Option<KmsSettings>,
    pub policies: Vec<BucketPolicy>,
    pub s3ec: S3ecSettings,
    /// SSE-S3 ETags are plaintext MD5s computed by the proxy (`md5_etags`).
    pub md5_etags: bool,
}

impl TryFrom<In<'_, RawEncryption>> for EncryptionSettings {
    type Error = Vec<Problem>;

    fn try_from(r: In<'_, RawEncryption>) -> Result<EncryptionSettings, Vec<Problem>> {
        let (raw, base, mode) = (r.raw, r.ctx.base, r.ctx.mode);
        let mut p = Problems::default();
        let p = &mut p;
        let keyring_file = match (&raw.keyring_file, mode) {
            (Some(f), _) => Some(base.join(f)),
            (None, Mode::Dev) => Some(base.join(DEFAULT_DEV_KEYRING)),
            (None, Mode::Production) => {
                p.push(
                    "encryption.keyring_file",
                    "no keyring configured: object bodies cannot be encrypted",
                    "create one with `s3crypt keygen --keyring /etc/s3crypt/keyring.toml` and set keyring_file",
                );
                None
            }
        };
        if let Some(f) = &keyring_file
            && mode == Mode::Production
            && !f.is_file()
        {
            p.push(
                "encryption.keyring_file",
                format!("{} does not exist", f.display()),
                "create it with `s3crypt keygen --keyring FILE` (mode 600)",
            );
        }
        for (i, b) in raw.passthrough_buckets.iter().enumerate() {
            if crate::s3::validate_bucket_name(b, true).is_err() {
                p.push(
                    format!("encryption.passthrough_buckets[{i}]"),
                    format!("{b:?} is not a valid bucket name"),
                    "list bucket names",
                );
            }
        }
        let default = match &raw.default {
            None => Some(DefaultProtection::Keyring),
            Some(v) => parse_default("encryption.default".into(), v, p),
        };
        let kms = raw.kms.as_ref().and_then(|k| p.take(KmsSettings::try_from(In::new(k, r.ctx))));
        let s3ec = match &raw.s3ec {
            Some(s) => p.take(S3ecSettings::try_from(In::new(s, r.ctx))).unwrap_or_default(),
            None => S3ecSettings::default(),
        };
        let policies = bucket_policies(&raw.policy, p);
        // KMS is needed as soon as anything may use it.
        let wants_kms = matches!(default, Some(DefaultProtection::Kms(_)))
            || policies
                .iter()
                .any(|b| matches!(b.default, Some(DefaultProtection::Kms(_))) || b.allowed_kms_keys.is_some());
        if wants_kms && raw.kms.is_none() {
            p.push(
                "encryption.kms",
                "a default or policy uses KMS but [encryption.kms] is missing",
                "add [encryption.kms]",
            );
        }
        let needs_default_key = matches!(default, Some(DefaultProtection::Kms(None)))
            || policies.iter().any(|b| b.default == Some(DefaultProtection::Kms(None)));
        if needs_default_key && raw.kms.as_ref().is_some_and(|k| k.default_key.is_none()) {
            p.push(
                "encryption.kms.default_key",
                "\"kms\" without a key is used but no default key is set",
                "set default_key, or write \"kms:<key id or ARN>\"",
            );
        }
        let settings = keyring_file.zip(default).map(|(keyring_file, default)| EncryptionSettings {
            keyring_file,
            create_keyring: mode == Mode::Dev,
            legacy_objects: raw.legacy_objects,
            passthrough_buckets: raw.passthrough_buckets.iter().cloned().collect(),
            default,
            kms,
            policies,
            s3ec,
            md5_etags: raw.md5_etags,
        });
        std::mem::take(p).finish(settings, "encryption")
    }
}

fn parse_default(key: String, v: &str, p: &mut Problems) -> Option<DefaultProtection> {
    let d = DefaultProtection::parse(v);
    if d.is_none() {
        p.push(key, format!("{v:?} is not a protection"), "use \"keyring\", \"kms\", \"kms:<key>\" or \"plaintext\"");
    }
    d
}

/// The `[[encryption.policy]]` entries: valid bucket names, one entry per bucket and prefix.
fn bucket_policies(raw: &[RawPolicy], p: &mut Problems) -> Vec<BucketPolicy> {
    let mut policies = Vec::with_capacity(raw.len());
    let mut seen = HashSet::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("encryption.policy[{i}]");
        if crate::s3::validate_bucket_name(&r.bucket, true).is_err() {
            p.push(format!("{key}.bucket"), format!("{:?} is not a valid bucket name", r.bucket), "name a bucket");
        }
        if !seen.insert((r.bucket.clone(), r.prefix.clone())) {
            p.push(key.clone(), "a second policy for the same bucket and prefix", "merge the two entries");
        }
        let d = r.default.as_deref().and_then(|v| parse_default(format!("{key}.default"), v, p));
        policies.push(BucketPolicy {
            bucket: r.bucket.clone(),
            prefix: r.prefix.clone(),
            default: d,
            allowed_kms_keys: r.allowed_kms_keys.clone(),
            require_sse: r.require_sse,
            allowed_sse: r.allowed_sse.clone(),
            bucket_key: r.bucket_key,
            legacy_objects: r.legacy_objects,
            upstream_sse: r.upstream_sse,
        });
    }
    policies
}

impl TryFrom<In<'_, RawKms>> for KmsSettings {
    type Error = Vec<Problem>;

    fn try_from(r: In<'_, RawKms>) -> Result<KmsSettings, Vec<Problem>> {
        let raw = r.raw;
        let mut p = Problems::default();
        let explicit = raw.access_key_id.is_some()
            || raw.access_key_id_env.is_some()
            || raw.secret_access_key.is_some()
            || raw.secret_access_key_env.is_some()
            || raw.secret_access_key_file.is_some();
        let mut credentials = None;
        if explicit {
            let akid = p.access_key_id(
                "encryption.kms.access_key_id",
                (&raw.access_key_id, &raw.access_key_id_env),
                r.ctx,
                (
                    "set exactly one of access_key_id or access_key_id_env (or none: the AWS chain)",
                    "give the access key id, or remove every KMS credential key",
                ),
            );
            let secret = p.secret(
                "encryption.kms.secret_access_key",
                &raw.secret_access_key,
                &raw.secret_access_key_env,
                &raw.secret_access_key_file,
                r.ctx,
            );
            credentials = akid.zip(secret);
        }
        if let Some(e) = &raw.endpoint {
            let ok = e.parse::<http::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http") | Some("https")));
            if !ok {
                p.push(
                    "encryption.kms.endpoint",
                    format!("{e:?} is not an http(s) URL"),
                    "e.g. \"https://kms.eu-west-1.amazonaws.com\"",
                );
            }
        }
        p.duration("encryption.kms.timeout", raw.timeout);
        p.duration("encryption.kms.cache_ttl", raw.cache_ttl);
        if raw.cache_entries == 0 || raw.bucket_key_uses == 0 {
            p.push(
                "encryption.kms.cache_entries",
                "cache_entries and bucket_key_uses must be at least 1",
                "use the defaults",
            );
        }
        let settings = KmsSettings {
            region: raw.region.clone(),
            endpoint: raw.endpoint.clone(),
            credentials,
            default_key: raw.default_key.clone(),
            allowed_keys: raw.allowed_keys.clone(),
            readable_keys: raw.readable_keys.clone(),
            bucket_key: raw.bucket_key,
            bucket_key_uses: raw.bucket_key_uses,
            cache_ttl: raw.cache_ttl,
            cache_entries: raw.cache_entries,
            timeout: raw.timeout,
        };
        p.finish(Some(settings), "encryption.kms")
    }
}
