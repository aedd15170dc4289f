//! Envelope encryption of object bodies: the format (`format`, DO NOT CHANGE), the segment AEAD (`aead`), keys and
//! wrapping (`keys`), the metadata envelope (`envelope`), segment sealing/opening (`stream`) and the streaming body
//! transforms (`body`). docs/FORMAT.md specifies the format.

pub mod aead;
pub mod attributes;
pub mod body;
pub mod envelope;
pub mod error;
pub mod format;
pub mod keys;
pub mod kms;
pub mod s3ec;
pub mod stream;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use crate::config::{BucketPolicy, DefaultProtection, EncryptionSettings, LegacyPolicy, SseKind, UpstreamSse};
use crate::s3::checksum::MultipartChecksum;
use crate::s3::error::RequestError;
use crate::s3::sse::{CustomerKey, SseRequest};
use envelope::{Envelope, Multipart};
use error::{CryptoError, KmsCode};
use format::{
    DEFAULT_SEGMENT_SIZE, FORMAT_VERSION, KEK_REF_SSE_C, KEK_SCHEME_KMS, UPLOAD_ID_PREFIX, UPLOAD_ID_PREFIX_V2,
};
use keys::{DataKey, LocalKeyring, ObjectIdentity, unwrap_under, upload_token_v2_aad, wrap_under};
use kms::{Context, KmsProvider, bucket_key_context};

/// How a new object is protected: what its data key is wrapped under.
#[derive(Debug, Clone)]
pub enum Protection {
    /// The local keyring's current key (SSE-S3 semantics, and the default).
    Keyring,
    /// A KMS key; with a client encryption context (base64 JSON); through a bucket key or not.
    Kms { key_id: String, context: Option<String>, bucket_key: bool },
    /// The client's SSE-C key.
    Customer(Arc<CustomerKey>),
    /// Not encrypted (a plaintext policy).
    Plaintext,
}

/// How the object of a multipart upload is protected, as its upload ID binds it (the token's AAD): decided at
/// CreateMultipartUpload from the proxy's own envelope, never from what the store answers later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadProtection {
    /// The local keyring (whichever key is current when the object is sealed).
    Keyring,
    /// A KMS key: its ARN (as KMS named it), bucket-key mode, and the SHA-256 of the client's encryption context.
    Kms { arn: String, bucket_key: bool, context_digest: Option<[u8; 32]> },
    /// The client's SSE-C key (its MD5 is bound too, from the request).
    Customer,
}

fn context_digest(context: Option<&str>) -> Option<[u8; 32]> {
    context.map(|c| <sha2::Sha256 as sha2::Digest>::digest(c.as_bytes()).into())
}

impl UploadProtection {
    /// The protection of the new upload whose (open) envelope is `env`.
    pub fn of(env: &Envelope) -> UploadProtection {
        if env.kek_ref == KEK_REF_SSE_C {
            return UploadProtection::Customer;
        }
        match kms_key_of(&env.kek_ref) {
            Some(arn) => UploadProtection::Kms {
                arn: arn.to_owned(),
                bucket_key: env.bucket_key.is_some(),
                context_digest: context_digest(env.context.as_deref()),
            },
            None => UploadProtection::Keyring,
        }
    }

    /// The descriptor carried in the upload ID and bound by its token: `keyring`, `sse-c`, or
    /// `kms;<ARN>;<0|1 bucket key>;<hex SHA-256 of the context, or empty>`.
    pub fn descriptor(&self) -> String {
        match self {
            UploadProtection::Keyring => "keyring".to_owned(),
            UploadProtection::Customer => KEK_REF_SSE_C.to_owned(),
            UploadProtection::Kms { arn, bucket_key, context_digest } => {
                format!("kms;{arn};{};{}", u8::from(*bucket_key), context_digest.map(hex::encode).unwrap_or_default())
            }
        }
    }

    /// Reads a descriptor.
    pub fn parse(d: &str) -> Option<UploadProtection> {
        match d {
            "keyring" => Some(UploadProtection::Keyring),
            KEK_REF_SSE_C => Some(UploadProtection::Customer),
            other => {
                let mut f = other.strip_prefix("kms;")?.rsplitn(3, ';');
                let (digest, bk, arn) = (f.next()?, f.next()?, f.next()?);
                let bucket_key = match bk {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                };
                let context_digest = match digest {
                    "" => None,
                    h => Some(hex::decode(h).ok()?.try_into().ok()?),
                };
                (!arn.is_empty()).then(|| UploadProtection::Kms { arn: arn.to_owned(), bucket_key, context_digest })
            }
        }
    }

    /// Whether the envelope the store shows for the completed upload says what this protection says (its key
    /// reference, bucket-key mode and context): necessary, not sufficient (the data key is compared too).
    fn matches(&self, env: &Envelope) -> bool {
        match self {
            UploadProtection::Keyring => env.kek_ref.starts_with("keyring:") && env.bucket_key.is_none(),
            UploadProtection::Customer => env.kek_ref == KEK_REF_SSE_C && env.bucket_key.is_none(),
            UploadProtection::Kms { arn, bucket_key, context_digest: digest } => {
                kms_key_of(&env.kek_ref) == Some(arn.as_str())
                    && env.bucket_key.is_some() == *bucket_key
                    && context_digest(env.context.as_deref()) == *digest
            }
        }
    }

    /// The response headers' key reference (`keyring`, `kms:<ARN>`, `sse-c`).
    pub fn kek_ref(&self, keyring: &LocalKeyring) -> String {
        match self {
            UploadProtection::Keyring => keyring.current().reference(),
            UploadProtection::Customer => KEK_REF_SSE_C.to_owned(),
            UploadProtection::Kms { arn, .. } => format!("{KEK_SCHEME_KMS}:{arn}"),
        }
    }
}

/// An upload ID opened: the upstream upload, the data key and the protection the token binds.
#[derive(Debug)]
pub struct OpenedUpload {
    pub upstream_id: String,
    pub dek: Arc<DataKey>,
    pub protection: UploadProtection,
    /// The checksum the upload declared at Create (bound in the ID, like the protection).
    pub checksum: Option<MultipartChecksum>,
}

/// The policy that applies to one object: the longest matching prefix policy, then the bucket's, then the global
/// settings.
#[derive(Debug, Clone)]
pub struct EffectivePolicy {
    pub default: DefaultProtection,
    pub allowed_kms_keys: Option<Vec<String>>,
    pub require_sse: bool,
    /// The SSE kinds a client may ask for (`None`: any).
    pub allowed_sse: Option<Vec<SseKind>>,
    pub bucket_key: Option<bool>,
    pub legacy_objects: LegacyPolicy,
    pub upstream_sse: Option<UpstreamSse>,
}

/// The proxy's encryption state: key providers and policy.
#[derive(Debug)]
pub struct Crypto {
    keyring: LocalKeyring,
    kms: Option<KmsProvider>,
    /// The S3 Encryption Client's raw AES wrapping keys, if configured.
    s3ec_keys: Option<LocalKeyring>,
    /// KiB of S3EC objects that may be buffered at once ([`Crypto::s3ec_buffer`]).
    s3ec_buffer: Arc<tokio::sync::Semaphore>,
    settings: EncryptionSettings,
    pub segment_size: u32,
}

/// The KMS EncryptionContext of an object's data key (direct KMS mode): the format version, the object's identity,
/// segment size and multipart state, and the client's own context.
fn object_context(env_mp: Option<&str>, client: Option<&str>, id: &ObjectIdentity, segment: u32) -> Context {
    let mut c = client.and_then(|c| crate::s3::sse::parse_context(c).ok()).unwrap_or_default();
    c.insert("s3crypt:v".into(), FORMAT_VERSION.to_string());
    c.insert("s3crypt:bucket".into(), id.bucket.clone());
    c.insert("s3crypt:key".into(), id.key.clone());
    c.insert("s3crypt:seg".into(), segment.to_string());
    if let Some(mp) = env_mp {
        c.insert("s3crypt:mp".into(), mp.to_owned());
    }
    c
}

fn s3ec_budget(s: &crate::config::S3ecSettings) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(usize::try_from(s.max_buffered.div_ceil(1024)).unwrap_or(usize::MAX >> 4)))
}

fn kms_key_of(kek_ref: &str) -> Option<&str> {
    kek_ref.strip_prefix(KEK_SCHEME_KMS)?.strip_prefix(':').filter(|k| !k.is_empty())
}

impl Crypto {
    /// Loads the keyring (in dev mode, creates one first if it does not exist) and sets up the KMS client.
    pub async fn load(settings: &EncryptionSettings) -> Result<(Crypto, Option<String>), String> {
        let mut created = None;
        if settings.create_keyring && !settings.keyring_file.exists() {
            let id = keys::keygen(&settings.keyring_file, None)?;
            created = Some(id);
        }
        let keyring = LocalKeyring::load(&settings.keyring_file)?;
        let kms = match &settings.kms {
            Some(k) => Some(KmsProvider::new(k).await),
            None => None,
        };
        let s3ec_keys = settings.s3ec.aes_keyring_file.as_deref().map(LocalKeyring::load).transpose()?;
        let s3ec_buffer = s3ec_budget(&settings.s3ec);
        let crypto = Crypto {
            keyring,
            kms,
            s3ec_keys,
            s3ec_buffer,
            settings: settings.clone(),
            segment_size: DEFAULT_SEGMENT_SIZE,
        };
        Ok((crypto, created))
    }

    /// Whether SSE-S3 uploads compute the plaintext MD5 for their ETag (`encryption.md5_etags`).
    pub fn md5_etags(&self) -> bool {
        self.settings.md5_etags
    }

    /// From an already loaded keyring (tests, tools): keyring only, default policy.
    pub fn from_keyring(keyring: LocalKeyring, legacy_objects: LegacyPolicy) -> Crypto {
        let settings = EncryptionSettings {
            keyring_file: keyring.path().to_owned(),
            create_keyring: false,
            legacy_objects,
            passthrough_buckets: Default::default(),
            default: DefaultProtection::Keyring,
            kms: None,
            policies: Vec::new(),
            s3ec: Default::default(),
            md5_etags: true,
        };
        let s3ec_buffer = s3ec_budget(&settings.s3ec);
        Crypto { keyring, kms: None, s3ec_keys: None, s3ec_buffer, settings, segment_size: DEFAULT_SEGMENT_SIZE }
    }

    /// Whether the keyring's current key wraps a fresh data key and unwraps it again: the readiness check that
    /// the keys are loaded and usable.
    pub fn keys_work(&self) -> bool {
        let Ok(dek) = DataKey::generate() else { return false };
        let kek = self.keyring.current();
        let aad = b"s3crypt readiness self-test";
        kek.wrap(&dek, aad).ok().and_then(|w| kek.unwrap(&w, aad)).is_some_and(|k| k.expose() == dek.expose())
    }

    pub fn keyring(&self) -> &LocalKeyring {
        &self.keyring
    }

    /// The KMS provider, if configured.
    pub fn kms(&self) -> Option<&KmsProvider> {
        self.kms.as_ref()
    }

    /// The settings for objects written by the AWS S3 Encryption Client.
    pub fn s3ec(&self) -> &crate::config::S3ecSettings {
        &self.settings.s3ec
    }

    /// Reserves buffer space for an S3EC object of `bytes` (waits while other reads hold the budget; gives up
    /// with SlowDown after `wait`).
    pub async fn s3ec_buffer(
        &self,
        bytes: u64,
        wait: std::time::Duration,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, CryptoError> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).map_err(|_| CryptoError::Busy)?;
        match tokio::time::timeout(wait, Arc::clone(&self.s3ec_buffer).acquire_many_owned(kib)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) | Err(_) => Err(CryptoError::Busy),
        }
    }

    /// The data key of an S3EC object: KMS Decrypt with its stored encryption context under one of
    /// `encryption.s3ec.kms_keys` (the key KMS used is checked before the data key is), or the raw AES wrapping key
    /// that opens it.
    pub async fn open_s3ec(&self, meta: &s3ec::Metadata) -> Result<Arc<DataKey>, CryptoError> {
        match meta.wrap {
            s3ec::Wrap::KmsContext => {
                let allowed = &self.settings.s3ec.kms_keys;
                if allowed.is_empty() {
                    return Err(CryptoError::UnknownKey("s3ec:kms".into()));
                }
                // One allowed key: KMS itself refuses a blob of any other. Several: KMS says which it used.
                let only = (allowed.len() == 1).then(|| allowed.iter().next()).flatten().map(String::as_str);
                let (dek, arn) = self.kms_provider()?.decrypt_reporting(only, &meta.edk, &meta.context).await?;
                if !allowed.contains(&arn) {
                    return Err(CryptoError::Integrity(
                        "the S3 Encryption Client object is wrapped under a KMS key outside encryption.s3ec.kms_keys",
                    ));
                }
                Ok(dek)
            }
            s3ec::Wrap::AesGcm => {
                let ring = self.s3ec_keys.as_ref().ok_or_else(|| CryptoError::UnknownKey("s3ec:aes".into()))?;
                meta.unwrap_aes(ring).map(Arc::new).ok_or_else(|| CryptoError::UnknownKey("s3ec:aes".into()))
            }
        }
    }

    /// Whether objects in `bucket` go through encryption at all (not a passthrough bucket).
    pub fn encrypts(&self, bucket: &str) -> bool {
        !self.settings.passthrough_buckets.contains(bucket)
    }

    /// The policy for an object (or for a bucket, with `key` empty).
    pub fn policy(&self, bucket: &str, key: &str) -> EffectivePolicy {
        let mut matching: Vec<&BucketPolicy> =
            self.settings.policies.iter().filter(|p| p.bucket == bucket && key.starts_with(&p.prefix)).collect();
        matching.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
        let default = matching.iter().find_map(|p| p.default.clone()).unwrap_or_else(|| self.settings.default.clone());
        // Objects under a plaintext policy are read as stored unless the policy says otherwise.
        let legacy =
            matching.iter().find_map(|p| p.legacy_objects).unwrap_or(if default == DefaultProtection::Plaintext {
                LegacyPolicy::Passthrough
            } else {
                self.settings.legacy_objects
            });
        EffectivePolicy {
            default,
            allowed_kms_keys: matching.iter().find_map(|p| p.allowed_kms_keys.clone()),
            require_sse: matching.iter().find_map(|p| p.require_sse).unwrap_or(false),
            allowed_sse: matching.iter().find_map(|p| p.allowed_sse.clone()),
            bucket_key: matching.iter().find_map(|p| p.bucket_key),
            legacy_objects: legacy,
            upstream_sse: matching.iter().find_map(|p| p.upstream_sse),
        }
    }

    /// Whether objects under `prefix`-policies of `bucket` are written as plaintext (listings leave their sizes).
    pub fn plaintext_prefixes(&self, bucket: &str) -> Vec<String> {
        self.settings
            .policies
            .iter()
            .filter(|p| p.bucket == bucket && !p.prefix.is_empty() && p.default == Some(DefaultProtection::Plaintext))
            .map(|p| p.prefix.clone())
            .collect()
    }

    fn kms_provider(&self) -> Result<&KmsProvider, CryptoError> {
        self.kms.as_ref().ok_or(CryptoError::Kms(KmsCode::NotFound))
    }

    /// What a write of `bucket`/`key` is protected with, from the client's SSE headers and the policy. A KMS key is
    /// resolved to its ARN (aliases by DescribeKey) and allowed only if that ARN is the default key's or an allowed
    /// key's: what is compared is the key, not its name.
    pub async fn protection(&self, bucket: &str, key: &str, sse: &SseRequest) -> Result<Protection, CryptoError> {
        let policy = self.policy(bucket, key);
        let asked = match sse {
            SseRequest::None => None,
            SseRequest::S3 => Some(SseKind::S3),
            SseRequest::Kms { .. } => Some(SseKind::Kms),
            SseRequest::Customer(_) => Some(SseKind::Customer),
        };
        if let (Some(kind), Some(allowed)) = (asked, &policy.allowed_sse)
            && !allowed.contains(&kind)
        {
            return Err(CryptoError::NotAllowed("Access Denied: this kind of encryption is not allowed here"));
        }
        let not_found = || CryptoError::Kms(KmsCode::NotFound);
        let bucket_key_default = |requested: Option<bool>| {
            requested
                .or(policy.bucket_key)
                .unwrap_or_else(|| self.kms.as_ref().is_some_and(|k| k.settings().bucket_key))
        };
        let policy_key = match &policy.default {
            DefaultProtection::Kms(Some(k)) => Some(k.clone()),
            DefaultProtection::Kms(None) | DefaultProtection::Keyring | DefaultProtection::Plaintext => None,
        };
        let default_key =
            || policy_key.clone().or_else(|| self.kms.as_ref().and_then(|k| k.settings().default_key.clone()));
        match sse {
            SseRequest::None => {
                if policy.require_sse {
                    return Err(CryptoError::NotAllowed(
                        "Access Denied: this bucket requires server-side encryption headers on uploads",
                    ));
                }
                Ok(match &policy.default {
                    DefaultProtection::Keyring => Protection::Keyring,
                    DefaultProtection::Plaintext => Protection::Plaintext,
                    DefaultProtection::Kms(_) => {
                        let named = default_key().ok_or_else(not_found)?;
                        Protection::Kms {
                            key_id: self.kms_provider()?.resolve(&named).await?,
                            context: None,
                            bucket_key: bucket_key_default(None),
                        }
                    }
                })
            }
            SseRequest::S3 => Ok(Protection::Keyring),
            SseRequest::Customer(k) => Ok(Protection::Customer(Arc::clone(k))),
            SseRequest::Kms { key_id, context, bucket_key } => {
                let kms = self.kms_provider()?;
                let default = default_key();
                let named = key_id.clone().or_else(|| default.clone()).ok_or_else(not_found)?;
                let arn = kms.resolve(&named).await?;
                let allowed = policy.allowed_kms_keys.as_ref().unwrap_or(&kms.settings().allowed_keys);
                let mut permitted = allowed.iter().any(|a| a == "*");
                for candidate in default.iter().chain(allowed.iter()) {
                    if permitted {
                        break;
                    }
                    // A configured name KMS does not know matches nothing.
                    permitted = kms.resolve(candidate).await.is_ok_and(|a| a == arn);
                }
                if !permitted {
                    return Err(CryptoError::NotAllowed("Access Denied: this KMS key is not allowed here"));
                }
                Ok(Protection::Kms {
                    key_id: arn,
                    context: context.clone(),
                    bucket_key: bucket_key_default(*bucket_key),
                })
            }
        }
    }

    /// Every KMS key name the configuration mentions (default keys, allowed keys, readable keys, policies').
    fn configured_kms_keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if let Some(k) = &self.settings.kms {
            out.extend(k.default_key.as_deref());
            out.extend(k.allowed_keys.iter().map(String::as_str));
            out.extend(k.readable_keys.iter().map(String::as_str));
        }
        if let DefaultProtection::Kms(Some(k)) = &self.settings.default {
            out.push(k);
        }
        for p in &self.settings.policies {
            if let Some(DefaultProtection::Kms(Some(k))) = &p.default {
                out.push(k);
            }
            out.extend(p.allowed_kms_keys.iter().flatten().map(String::as_str));
        }
        out
    }

    /// Refuses to use a KMS key an envelope read from the store names unless the configuration names it (as a
    /// default, allowed or readable key; `"*"` allows any): a store cannot make the proxy unwrap under a key of its
    /// choosing.
    async fn check_readable_kms_key(&self, arn: &str) -> Result<(), CryptoError> {
        let kms = self.kms_provider()?;
        let names = self.configured_kms_keys();
        if names.contains(&"*") || names.contains(&arn) {
            return Ok(());
        }
        for name in names {
            if kms.resolve(name).await.is_ok_and(|a| a == arn) {
                return Ok(());
            }
        }
        Err(CryptoError::UnknownKey(format!("{KEK_SCHEME_KMS}:{arn}")))
    }

    /// Resolves a KMS protection's key to its ARN (a protection the operator names, e.g. `rewrap --to`).
    pub async fn resolve_protection(&self, p: Protection) -> Result<Protection, CryptoError> {
        match p {
            Protection::Kms { key_id, context, bucket_key } => {
                let arn = self.kms_provider()?.resolve(&key_id).await?;
                Ok(Protection::Kms { key_id: arn, context, bucket_key })
            }
            other => Ok(other),
        }
    }

    /// A fresh data key for a new object and its envelope.
    pub async fn new_object_key(
        &self,
        id: &ObjectIdentity,
        protection: &Protection,
        multipart: Option<Multipart>,
    ) -> Result<(DataKey, Envelope), CryptoError> {
        if let Protection::Kms { key_id, context, bucket_key: false } = protection {
            // Direct KMS mode: the data key comes from KMS (one GenerateDataKey), bound to the object.
            let kms = self.kms_provider()?;
            let mp = multipart.map(|m| m.encode());
            let ctx = object_context(mp.as_deref(), context.as_deref(), id, self.segment_size);
            let (dek, blob, arn) = kms.generate(key_id, &ctx).await?;
            same_key(key_id, &arn)?;
            let env = Envelope {
                segment_size: self.segment_size,
                kek_ref: format!("{KEK_SCHEME_KMS}:{arn}"),
                wrapped_dek: blob,
                multipart,
                bucket_key: None,
                context: context.clone(),
                attributes: None,
            };
            return Ok((dek, env));
        }
        let dek = DataKey::generate()?;
        let env = self.wrap_for(&dek, id, protection, multipart).await?;
        Ok((dek, env))
    }

    /// Wraps `dek` for object `id` under `protection`.
    pub async fn wrap_for(
        &self,
        dek: &DataKey,
        id: &ObjectIdentity,
        protection: &Protection,
        multipart: Option<Multipart>,
    ) -> Result<Envelope, CryptoError> {
        let mut env = Envelope {
            segment_size: self.segment_size,
            kek_ref: String::new(),
            wrapped_dek: Vec::new(),
            multipart,
            bucket_key: None,
            context: None,
            attributes: None,
        };
        match protection {
            Protection::Keyring => {
                let kek = self.keyring.current();
                env.kek_ref = kek.reference();
                env.wrapped_dek = kek.wrap(dek, &env.wrap_aad(id))?;
            }
            Protection::Customer(k) => {
                env.kek_ref = KEK_REF_SSE_C.to_owned();
                env.wrapped_dek = wrap_under(k.expose(), dek, &env.wrap_aad(id))?;
            }
            Protection::Kms { key_id, context, bucket_key } => {
                let kms = self.kms_provider()?;
                env.context = context.clone();
                if *bucket_key {
                    let bk = kms.write_bucket_key(key_id, &id.bucket).await?;
                    same_key(key_id, &bk.arn)?;
                    env.kek_ref = format!("{KEK_SCHEME_KMS}:{}", bk.arn);
                    env.bucket_key = Some(bk.blob);
                    env.wrapped_dek = wrap_under(bk.key.expose(), dek, &env.wrap_aad(id))?;
                } else {
                    let mp = env.multipart.map(|m| m.encode());
                    let ctx = object_context(mp.as_deref(), context.as_deref(), id, self.segment_size);
                    let (blob, arn) = kms.encrypt(key_id, dek, &ctx).await?;
                    same_key(key_id, &arn)?;
                    env.kek_ref = format!("{KEK_SCHEME_KMS}:{arn}");
                    env.wrapped_dek = blob;
                }
            }
            Protection::Plaintext => {
                return Err(CryptoError::Internal("no envelope for a plaintext object".into()));
            }
        }
        Ok(env)
    }

    /// The data key of a stored object; `customer` is the client's SSE-C key, if it sent one.
    pub async fn open_envelope(
        &self,
        env: &Envelope,
        id: &ObjectIdentity,
        customer: Option<&Arc<CustomerKey>>,
    ) -> Result<Arc<DataKey>, CryptoError> {
        let sse_c = env.kek_ref == KEK_REF_SSE_C;
        if customer.is_some() && !sse_c {
            return Err(RequestError::InvalidRequest(
                "The encryption parameters are not applicable to this object.".into(),
            )
            .into());
        }
        if sse_c {
            let key = customer.ok_or_else(sse_c_required)?;
            // Another key than the object's (S3: 400); a wrap the store altered reads the same.
            return unwrap_under(key.expose(), &env.wrapped_dek, &env.wrap_aad(id)).map(Arc::new).ok_or_else(|| {
                RequestError::InvalidRequest(
                    "The provided encryption parameters did not match the ones used originally.".into(),
                )
                .into()
            });
        }
        if let Some(key) = kms_key_of(&env.kek_ref) {
            self.check_readable_kms_key(key).await?;
            let kms = self.kms_provider()?;
            return match &env.bucket_key {
                Some(bk) => {
                    let bucket_key = kms.decrypt(key, bk, &bucket_key_context(&id.bucket)).await?;
                    unwrap_under(bucket_key.expose(), &env.wrapped_dek, &env.wrap_aad(id))
                        .map(Arc::new)
                        .ok_or(CryptoError::Integrity("the data key does not unwrap for this object"))
                }
                None => {
                    let mp = env.multipart.map(|m| m.encode());
                    let ctx = object_context(mp.as_deref(), env.context.as_deref(), id, env.segment_size);
                    kms.decrypt(key, &env.wrapped_dek, &ctx).await
                }
            };
        }
        let kek =
            self.keyring.by_reference(&env.kek_ref).ok_or_else(|| CryptoError::UnknownKey(env.kek_ref.clone()))?;
        kek.unwrap(&env.wrapped_dek, &env.wrap_aad(id))
            .map(Arc::new)
            .ok_or(CryptoError::Integrity("the data key does not unwrap for this object"))
    }

    /// The protection a completed upload is sealed (or re-encrypted) with, once the envelope the store shows for it
    /// is authenticated: it must say what the upload's token binds (key reference, bucket-key mode, context, segment
    /// size, the open state), and its data key must unwrap, for this object, to the token's (compared in constant
    /// time). Anything else is the store's doing: `ObjectIntegrity`, and nothing is sealed.
    pub async fn sealing_protection(
        &self,
        open: &Envelope,
        id: &ObjectIdentity,
        dek: &DataKey,
        protection: &UploadProtection,
        customer: Option<&Arc<CustomerKey>>,
    ) -> Result<Protection, CryptoError> {
        let changed = CryptoError::Integrity("the store changed the envelope of the completed upload");
        if !protection.matches(open)
            || open.segment_size != self.segment_size
            || open.multipart != Some(Multipart::Open)
        {
            return Err(changed);
        }
        let stored = self.open_envelope(open, id, customer).await.map_err(|e| match e {
            CryptoError::Integrity(_) | CryptoError::NotAllowed(_) | CryptoError::UnknownKey(_) => changed.clone(),
            other => other,
        })?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&stored.expose()[..], &dek.expose()[..])) {
            return Err(changed);
        }
        Ok(match protection {
            UploadProtection::Keyring => Protection::Keyring,
            UploadProtection::Customer => Protection::Customer(Arc::clone(customer.ok_or_else(sse_c_required)?)),
            UploadProtection::Kms { arn, bucket_key, .. } => {
                Protection::Kms { key_id: arn.clone(), context: open.context.clone(), bucket_key: *bucket_key }
            }
        })
    }

    /// The upload ID handed to the client for the upstream upload `upstream_id` of object `id`, whose data key is
    /// `dek` and whose open envelope (the proxy's own) is `env`:
    /// `s3c2.<b64url kek ref>.<b64url protection>.<b64url token>.<upstream id>` (docs/FORMAT.md §7). The token is
    /// wrapped under the keyring's current key (clients cannot make one), bound to the object, the upstream upload
    /// and the protection; for SSE-C its payload is the data key wrapped under the client's key, bound to that
    /// key's MD5 too (every part must bring it).
    pub fn upload_id(
        &self,
        dek: &DataKey,
        id: &ObjectIdentity,
        upstream_id: &str,
        env: &Envelope,
        customer: Option<&Arc<CustomerKey>>,
        checksum: Option<MultipartChecksum>,
    ) -> Result<String, CryptoError> {
        let protection = UploadProtection::of(env);
        let mut descriptor = protection.descriptor();
        if let Some(c) = checksum {
            descriptor.push('#');
            descriptor.push_str(&c.descriptor());
        }
        let kek = self.keyring.current();
        let kek_ref = kek.reference();
        let aad = upload_token_v2_aad(&kek_ref, id, self.segment_size, upstream_id, &descriptor, None);
        let token = match (&protection, customer) {
            (UploadProtection::Customer, Some(k)) => {
                let md5 = k.md5();
                let inner_aad =
                    upload_token_v2_aad(&kek_ref, id, self.segment_size, upstream_id, &descriptor, Some(&md5));
                kek.wrap_payload(&wrap_under(k.expose(), dek, &inner_aad)?, &aad)?
            }
            (UploadProtection::Customer, None) => return Err(sse_c_required()),
            (_, Some(_)) => return Err(CryptoError::Internal("a customer key for an upload that is not SSE-C".into())),
            (_, None) => kek.wrap(dek, &aad)?,
        };
        Ok(format!(
            "{UPLOAD_ID_PREFIX_V2}{}.{}.{}.{upstream_id}",
            B64URL.encode(kek_ref),
            B64URL.encode(descriptor),
            B64URL.encode(token)
        ))
    }

    /// Opens an upload ID made by [`Crypto::upload_id`] for object `id`, given the request's SSE-C key if any. A
    /// token made for another object or upload, altered, or not made by this keyring is `NoSuchUpload`; an SSE-C
    /// upload opened without its key, or with another, is `InvalidRequest` (as S3 answers).
    pub fn open_upload_id(
        &self,
        upload_id: &str,
        id: &ObjectIdentity,
        customer: Option<&Arc<CustomerKey>>,
    ) -> Result<OpenedUpload, CryptoError> {
        let no_such = || CryptoError::ForeignUploadId;
        let UploadIdFields { kek_ref, descriptor, token, upstream_id } =
            UploadIdFields::parse(upload_id).ok_or_else(no_such)?;
        let (protection, checksum) = match descriptor.split_once('#') {
            Some((p, c)) => (p, Some(MultipartChecksum::parse(c).ok_or_else(no_such)?)),
            None => (descriptor.as_str(), None),
        };
        let protection = UploadProtection::parse(protection).ok_or_else(no_such)?;
        let kek = self.keyring.by_reference(&kek_ref).ok_or_else(no_such)?;
        let aad = upload_token_v2_aad(&kek_ref, id, self.segment_size, upstream_id, &descriptor, None);
        let payload = kek.unwrap_payload(&token, &aad).ok_or_else(no_such)?;
        let dek = match (&protection, customer) {
            (UploadProtection::Customer, None) => return Err(sse_c_required()),
            (UploadProtection::Customer, Some(k)) => {
                let md5 = k.md5();
                let inner_aad =
                    upload_token_v2_aad(&kek_ref, id, self.segment_size, upstream_id, &descriptor, Some(&md5));
                unwrap_under(k.expose(), &payload, &inner_aad).ok_or_else(|| {
                    RequestError::InvalidRequest(
                        "The provided encryption parameters did not match the ones used originally.".into(),
                    )
                })?
            }
            (_, Some(_)) => {
                return Err(RequestError::InvalidRequest(
                    "The encryption parameters are not applicable to this upload.".into(),
                )
                .into());
            }
            (_, None) => {
                let k: [u8; 32] = payload.as_slice().try_into().map_err(|_| no_such())?;
                DataKey::from_bytes(k)
            }
        };
        Ok(OpenedUpload { upstream_id: upstream_id.to_owned(), dek: Arc::new(dek), protection, checksum })
    }

    /// Whether `upload_id` is one this keyring made for the store's upload `upstream_id` of object `id`: its outer
    /// wrap opens (an SSE-C upload's inner layer needs the customer's key and is not opened). ListMultipartUploads
    /// checks this before it shows an ID it read back from the store.
    pub fn made_upload_id(&self, upload_id: &str, id: &ObjectIdentity, upstream_id: &str) -> bool {
        let Some(f) = UploadIdFields::parse(upload_id) else { return false };
        if f.upstream_id != upstream_id {
            return false;
        }
        let Some(kek) = self.keyring.by_reference(&f.kek_ref) else { return false };
        let aad = upload_token_v2_aad(&f.kek_ref, id, self.segment_size, upstream_id, &f.descriptor, None);
        kek.unwrap_payload(&f.token, &aad).is_some()
    }

    /// Seals a bucket setting's document under the keyring's current key, bound to the bucket and the setting's
    /// kind (FORMAT.md §10): `BE16(len(kek_ref)) || kek_ref || layout-2 wrap`.
    pub fn seal_setting(&self, bucket: &str, kind: &str, doc: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let kek = self.keyring.current();
        let reference = kek.reference();
        let wrapped = kek.wrap_payload(doc, &setting_aad(&reference, bucket, kind))?;
        let len = u16::try_from(reference.len()).map_err(|_| CryptoError::Internal("key reference too long".into()))?;
        let mut out = Vec::with_capacity(2 + reference.len() + wrapped.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(reference.as_bytes());
        out.extend_from_slice(&wrapped);
        Ok(out)
    }

    /// Opens a sealed bucket setting; an integrity error unless this keyring sealed it for this bucket and kind.
    pub fn open_setting(&self, bucket: &str, kind: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let bad = || CryptoError::Integrity("a bucket setting does not open for its bucket");
        let (len, rest) = sealed.split_first_chunk::<2>().ok_or_else(bad)?;
        let (reference, wrapped) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len))).ok_or_else(bad)?;
        let reference = std::str::from_utf8(reference).map_err(|_| bad())?;
        let kek = self.keyring.by_reference(reference).ok_or_else(bad)?;
        let doc = kek.unwrap_payload(wrapped, &setting_aad(reference, bucket, kind)).ok_or_else(bad)?;
        Ok(doc.to_vec())
    }

    /// The upstream upload ID inside an upload ID of either version (no key needed: Abort and ListParts also accept
    /// raw IDs, the ones ListMultipartUploads shows).
    pub fn upstream_upload_id(upload_id: &str) -> &str {
        if let Some(rest) = upload_id.strip_prefix(UPLOAD_ID_PREFIX_V2) {
            return rest.splitn(4, '.').nth(3).unwrap_or(upload_id);
        }
        match upload_id.strip_prefix(UPLOAD_ID_PREFIX) {
            Some(rest) => rest.splitn(3, '.').nth(2).unwrap_or(upload_id),
            None => upload_id,
        }
    }

    /// Whether an upload ID is one of the proxy's (either version), not a store's raw ID.
    pub fn is_proxy_upload_id(upload_id: &str) -> bool {
        upload_id.starts_with(UPLOAD_ID_PREFIX_V2) || upload_id.starts_with(UPLOAD_ID_PREFIX)
    }
}

/// The AAD of a sealed bucket setting: label, then the length-prefixed key reference, bucket and kind.
fn setting_aad(reference: &str, bucket: &str, kind: &str) -> Vec<u8> {
    let mut aad = crate::crypto::format::SETTING_AAD_LABEL.to_vec();
    for f in [reference, bucket, kind] {
        aad.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(f.as_bytes());
    }
    aad
}

/// The fields of a version-2 upload ID (FORMAT.md §7), decoded, not yet authenticated.
struct UploadIdFields<'a> {
    kek_ref: String,
    descriptor: String,
    token: Vec<u8>,
    upstream_id: &'a str,
}

impl UploadIdFields<'_> {
    fn parse(upload_id: &str) -> Option<UploadIdFields<'_>> {
        let rest = upload_id.strip_prefix(UPLOAD_ID_PREFIX_V2)?;
        let mut fields = rest.splitn(4, '.');
        let (kek_ref, descriptor, token, upstream_id) =
            (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        let text = |f: &str| B64URL.decode(f).ok().and_then(|b| String::from_utf8(b).ok());
        let token = B64URL.decode(token).ok()?;
        if upstream_id.is_empty() {
            return None;
        }
        Some(UploadIdFields { kek_ref: text(kek_ref)?, descriptor: text(descriptor)?, token, upstream_id })
    }
}

/// A KMS call made under `asked` (a key ARN, resolved beforehand) must report that key: the ARN stored in the
/// envelope is the one that was checked against the allowed keys.
fn same_key(asked: &str, used: &str) -> Result<(), CryptoError> {
    if asked == used {
        Ok(())
    } else {
        Err(CryptoError::Internal(format!("KMS used the key {used} where {asked} was asked for")))
    }
}

fn sse_c_required() -> CryptoError {
    RequestError::InvalidRequest(
        "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to \
         retrieve the object."
            .into(),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::AtBoundary;
    use base64::Engine;

    fn crypto() -> (Crypto, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        keys::keygen(&path, Some("k1")).unwrap();
        (Crypto::from_keyring(LocalKeyring::load(&path).unwrap(), LegacyPolicy::Reject), dir)
    }

    fn open_env(kek_ref: &str, bucket_key: Option<Vec<u8>>, context: Option<&str>) -> Envelope {
        Envelope {
            segment_size: DEFAULT_SEGMENT_SIZE,
            kek_ref: kek_ref.into(),
            wrapped_dek: vec![0; 77],
            multipart: Some(Multipart::Open),
            bucket_key,
            context: context.map(str::to_owned),
            attributes: None,
        }
    }

    fn customer(seed: u8) -> Arc<CustomerKey> {
        let mut h = http::HeaderMap::new();
        let key = [seed; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let md5 = base64::engine::general_purpose::STANDARD.encode(<md5::Md5 as md5::Digest>::digest(key));
        h.insert(crate::s3::sse::SSE_C_ALGORITHM, "AES256".parse().unwrap());
        h.insert(crate::s3::sse::SSE_C_KEY, b64.parse().unwrap());
        h.insert(crate::s3::sse::SSE_C_KEY_MD5, md5.parse().unwrap());
        Arc::clone(SseRequest::from_headers(&h).unwrap().customer().unwrap())
    }

    #[test]
    fn an_upload_id_carries_the_data_key_to_any_replica_and_only_for_its_own_upload() {
        let (c, _dir) = crypto();
        let id = ObjectIdentity { bucket: "b".into(), key: "k".into() };
        let dek = DataKey::generate().unwrap();
        let env = open_env("keyring:k1", None, None);
        let upload_id = c.upload_id(&dek, &id, "up.stream_id-1.2", &env, None, None).unwrap();
        assert!(upload_id.starts_with("s3c2.") && upload_id.ends_with(".up.stream_id-1.2"));
        let opened = c.open_upload_id(&upload_id, &id, None).unwrap();
        assert_eq!(opened.protection, UploadProtection::Keyring);
        assert_eq!((opened.upstream_id.as_str(), opened.dek.expose()), ("up.stream_id-1.2", dek.expose()));
        assert_eq!(Crypto::upstream_upload_id(&upload_id), "up.stream_id-1.2");
        assert_eq!(Crypto::upstream_upload_id("s3c1.a.b.raw.1"), "raw.1");
        assert_eq!(Crypto::upstream_upload_id("raw-id"), "raw-id");
        let other = ObjectIdentity { bucket: "b".into(), key: "other".into() };
        assert_eq!(c.open_upload_id(&upload_id, &other, None).unwrap_err().code(), "NoSuchUpload");
        let other_bucket = ObjectIdentity { bucket: "b2".into(), key: "k".into() };
        assert_eq!(c.open_upload_id(&upload_id, &other_bucket, None).unwrap_err().code(), "NoSuchUpload");
        let swapped = upload_id.replace(".up.stream_id-1.2", ".another-upload");
        assert_eq!(c.open_upload_id(&swapped, &id, None).unwrap_err().code(), "NoSuchUpload");
        for bad in ["raw-id", "s3c2.", "s3c2.a.b.c", "s3c2.!!.!!.!!.x", "s3c1.a2V5.dG9r.up"] {
            assert_eq!(c.open_upload_id(bad, &id, None).unwrap_err().code(), "NoSuchUpload", "{bad}");
        }
    }

    #[test]
    fn an_upload_id_binds_the_protection_and_cannot_be_made_by_a_client() {
        let (c, _dir) = crypto();
        let id = ObjectIdentity { bucket: "b".into(), key: "k".into() };
        let dek = DataKey::generate().unwrap();
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let kms = open_env(&format!("kms:{arn}"), Some(vec![1; 40]), Some("eyJhIjoiYiJ9"));
        let upload_id = c.upload_id(&dek, &id, "u1", &kms, None, None).unwrap();
        let opened = c.open_upload_id(&upload_id, &id, None).unwrap();
        let UploadProtection::Kms { arn: got, bucket_key: true, context_digest: Some(_) } = &opened.protection else {
            panic!("{:?}", opened.protection);
        };
        assert_eq!(got, arn);
        // The descriptor in the ID is authenticated: another key, mode or scheme does not open.
        let fields: Vec<&str> = upload_id.splitn(5, '.').collect();
        for forged in ["keyring", "sse-c", &format!("kms;{arn}x;1;"), &format!("kms;{arn};0;")] {
            let id2 = format!("s3c2.{}.{}.{}.u1", fields[1], B64URL.encode(forged), fields[3]);
            assert!(c.open_upload_id(&id2, &id, None).is_err(), "{forged}");
        }
        // SSE-C: the token opens only with the client's key, and a client cannot mint one for an upload of its
        // choosing (it has no keyring key).
        let (k1, k2) = (customer(1), customer(2));
        let sse_c = c.upload_id(&dek, &id, "u2", &open_env("sse-c", None, None), Some(&k1), None).unwrap();
        assert_eq!(c.open_upload_id(&sse_c, &id, Some(&k1)).unwrap().dek.expose(), dek.expose());
        assert_eq!(c.open_upload_id(&sse_c, &id, Some(&k2)).unwrap_err().code(), "InvalidRequest");
        assert_eq!(c.open_upload_id(&sse_c, &id, None).unwrap_err().code(), "InvalidRequest");
        assert_eq!(c.open_upload_id(&upload_id, &id, Some(&k1)).unwrap_err().code(), "InvalidRequest");
        let descriptor = "sse-c";
        let aad =
            keys::upload_token_v2_aad("keyring:k1", &id, DEFAULT_SEGMENT_SIZE, "victim", descriptor, Some(&k2.md5()));
        let mine = DataKey::generate().unwrap();
        let inner = wrap_under(k2.expose(), &mine, &aad).unwrap();
        let token = keys::seal_wrap(k2.expose(), &inner, &aad).unwrap();
        let minted = format!(
            "s3c2.{}.{}.{}.victim",
            B64URL.encode("keyring:k1"),
            B64URL.encode(descriptor),
            B64URL.encode(token)
        );
        assert!(c.open_upload_id(&minted, &id, Some(&k2)).is_err(), "a client-made token");
        let v1 = format!("s3c1.{}.{}.victim", B64URL.encode("sse-c"), B64URL.encode(inner));
        assert_eq!(c.open_upload_id(&v1, &id, Some(&k2)).unwrap_err().code(), "NoSuchUpload", "version 1");
    }

    #[test]
    fn upload_protection_descriptors_round_trip_and_check_the_stores_envelope() {
        let arn = "arn:aws:kms:eu-west-1:1:alias/with;semicolon";
        for p in [
            UploadProtection::Keyring,
            UploadProtection::Customer,
            UploadProtection::Kms { arn: arn.into(), bucket_key: false, context_digest: None },
            UploadProtection::Kms { arn: arn.into(), bucket_key: true, context_digest: Some([7; 32]) },
        ] {
            assert_eq!(UploadProtection::parse(&p.descriptor()), Some(p.clone()), "{}", p.descriptor());
        }
        for bad in ["", "kms", "kms;;0;", "kms;a;2;", "kms;a;0;zz", "Keyring", "keyring:k1"] {
            assert_eq!(UploadProtection::parse(bad), None, "{bad}");
        }
        let kms = UploadProtection::of(&open_env("kms:arn:k", None, Some("e30=")));
        assert!(kms.matches(&open_env("kms:arn:k", None, Some("e30="))));
        assert!(!kms.matches(&open_env("kms:arn:other", None, Some("e30="))));
        assert!(!kms.matches(&open_env("kms:arn:k", None, None)));
        assert!(!kms.matches(&open_env("kms:arn:k", Some(vec![1]), Some("e30="))));
        assert!(!kms.matches(&open_env("keyring:k1", None, None)));
        assert!(!UploadProtection::Customer.matches(&open_env("keyring:k1", None, None)));
        assert!(!UploadProtection::Keyring.matches(&open_env("sse-c", None, None)));
    }

    proptest::proptest! {
        #[test]
        fn no_string_opens_as_an_upload_id_and_no_altered_id_opens(junk in ".{0,300}", at in 0usize..400, bit in 0u8..6) {
            let (c, _dir) = crypto();
            let id = ObjectIdentity { bucket: "b".into(), key: "k".into() };
            proptest::prop_assert!(c.open_upload_id(&junk, &id, None).is_err());
            let prefixed = format!("s3c2.{junk}");
            proptest::prop_assert!(c.open_upload_id(&prefixed, &id, None).is_err());
            let dek = DataKey::generate().unwrap();
            let good = c.upload_id(&dek, &id, "up-1", &open_env("keyring:k1", None, None), None, None).unwrap();
            let mut bytes = good.into_bytes();
            let i = 5 + at % (bytes.len() - 5);
            bytes[i] ^= 1 << bit;
            if let Ok(altered) = String::from_utf8(bytes) {
                proptest::prop_assert!(c.open_upload_id(&altered, &id, None).is_err(), "{}", altered);
            }
        }
    }
}
