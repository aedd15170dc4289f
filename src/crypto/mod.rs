//! Envelope encryption of object bodies: the format (`format`, DO NOT CHANGE), the segment AEAD (`aead`), keys and
//! wrapping (`keys`), the metadata envelope (`envelope`), segment sealing/opening (`stream`) and the streaming body
//! transforms (`body`). docs/FORMAT.md specifies the format.

pub mod aead;
pub mod body;
pub mod envelope;
pub mod format;
pub mod keys;
pub mod kms;
pub mod s3ec;
pub mod stream;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use crate::config::{BucketPolicy, DefaultProtection, EncryptionSettings, LegacyPolicy, UpstreamSse};
use crate::error::ProxyError;
use crate::s3::sse::{CustomerKey, SseRequest};
use envelope::{Envelope, Multipart};
use format::{DEFAULT_SEGMENT_SIZE, FORMAT_VERSION, KEK_REF_SSE_C, KEK_SCHEME_KMS, UPLOAD_ID_PREFIX};
use keys::{DataKey, LocalKeyring, ObjectIdentity, unwrap_under, upload_token_aad, wrap_under};
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

/// The policy that applies to one object: the longest matching prefix policy, then the bucket's, then the global
/// settings.
#[derive(Debug, Clone)]
pub struct EffectivePolicy {
    pub default: DefaultProtection,
    pub allowed_kms_keys: Option<Vec<String>>,
    pub require_sse: bool,
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
        };
        let s3ec_buffer = s3ec_budget(&settings.s3ec);
        Crypto { keyring, kms: None, s3ec_keys: None, s3ec_buffer, settings, segment_size: DEFAULT_SEGMENT_SIZE }
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
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ProxyError> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).map_err(|_| ProxyError::SlowDown)?;
        match tokio::time::timeout(wait, Arc::clone(&self.s3ec_buffer).acquire_many_owned(kib)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) | Err(_) => Err(ProxyError::SlowDown),
        }
    }

    /// The data key of an S3EC object: KMS Decrypt with its stored encryption context, or the raw AES wrapping key
    /// that opens it.
    pub async fn open_s3ec(&self, meta: &s3ec::Metadata) -> Result<Arc<DataKey>, ProxyError> {
        match meta.wrap {
            s3ec::Wrap::KmsContext => self.kms_provider()?.decrypt_any(&meta.edk, &meta.context).await,
            s3ec::Wrap::AesGcm => {
                let ring = self.s3ec_keys.as_ref().ok_or_else(|| ProxyError::UnknownKey("s3ec:aes".into()))?;
                meta.unwrap_aes(ring).map(Arc::new).ok_or_else(|| ProxyError::UnknownKey("s3ec:aes".into()))
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

    fn kms_provider(&self) -> Result<&KmsProvider, ProxyError> {
        self.kms.as_ref().ok_or(ProxyError::Kms { code: "KMS.NotFoundException", status: 400 })
    }

    /// What a write of `bucket`/`key` is protected with, from the client's SSE headers and the policy.
    pub fn protection(&self, bucket: &str, key: &str, sse: &SseRequest) -> Result<Protection, ProxyError> {
        let policy = self.policy(bucket, key);
        let kms_default = |named: Option<&String>| -> Result<String, ProxyError> {
            named
                .cloned()
                .or_else(|| self.kms.as_ref().and_then(|k| k.settings().default_key.clone()))
                .ok_or(ProxyError::Kms { code: "KMS.NotFoundException", status: 400 })
        };
        let bucket_key_default = |requested: Option<bool>| {
            requested
                .or(policy.bucket_key)
                .unwrap_or_else(|| self.kms.as_ref().is_some_and(|k| k.settings().bucket_key))
        };
        match sse {
            SseRequest::None => {
                if policy.require_sse {
                    return Err(ProxyError::AccessDenied(
                        "Access Denied: this bucket requires server-side encryption headers on uploads",
                    ));
                }
                Ok(match &policy.default {
                    DefaultProtection::Keyring => Protection::Keyring,
                    DefaultProtection::Plaintext => Protection::Plaintext,
                    DefaultProtection::Kms(k) => Protection::Kms {
                        key_id: kms_default(k.as_ref())?,
                        context: None,
                        bucket_key: bucket_key_default(None),
                    },
                })
            }
            SseRequest::S3 => Ok(Protection::Keyring),
            SseRequest::Customer(k) => Ok(Protection::Customer(Arc::clone(k))),
            SseRequest::Kms { key_id, context, bucket_key } => {
                let kms = self.kms_provider()?;
                let policy_key = match &policy.default {
                    DefaultProtection::Kms(Some(k)) => Some(k.clone()),
                    DefaultProtection::Kms(None) | DefaultProtection::Keyring | DefaultProtection::Plaintext => None,
                };
                let default_key = policy_key.clone().or_else(|| kms.settings().default_key.clone());
                let key = match key_id {
                    Some(k) => k.clone(),
                    None => {
                        default_key.clone().ok_or(ProxyError::Kms { code: "KMS.NotFoundException", status: 400 })?
                    }
                };
                let allowed = policy.allowed_kms_keys.as_ref().unwrap_or(&kms.settings().allowed_keys);
                let permitted = Some(&key) == default_key.as_ref()
                    || allowed.iter().any(|a| a == "*" || *a == key || key.ends_with(&format!("/{a}")));
                if !permitted {
                    return Err(ProxyError::AccessDenied("Access Denied: this KMS key is not allowed here"));
                }
                Ok(Protection::Kms {
                    key_id: key,
                    context: context.clone(),
                    bucket_key: bucket_key_default(*bucket_key),
                })
            }
        }
    }

    /// The protection an existing object has (to re-wrap it the same way), given the client's SSE-C key if any.
    pub fn protection_of(&self, env: &Envelope, customer: Option<&Arc<CustomerKey>>) -> Result<Protection, ProxyError> {
        if env.kek_ref == KEK_REF_SSE_C {
            return customer.map(|k| Protection::Customer(Arc::clone(k))).ok_or_else(sse_c_required);
        }
        if let Some(key) = kms_key_of(&env.kek_ref) {
            return Ok(Protection::Kms {
                key_id: key.to_owned(),
                context: env.context.clone(),
                bucket_key: env.bucket_key.is_some(),
            });
        }
        Ok(Protection::Keyring)
    }

    /// A fresh data key for a new object and its envelope.
    pub async fn new_object_key(
        &self,
        id: &ObjectIdentity,
        protection: &Protection,
        multipart: Option<Multipart>,
    ) -> Result<(DataKey, Envelope), ProxyError> {
        if let Protection::Kms { key_id, context, bucket_key: false } = protection {
            // Direct KMS mode: the data key comes from KMS (one GenerateDataKey), bound to the object.
            let kms = self.kms_provider()?;
            let mp = multipart.map(|m| m.encode());
            let ctx = object_context(mp.as_deref(), context.as_deref(), id, self.segment_size);
            let (dek, blob, arn) = kms.generate(key_id, &ctx).await?;
            let env = Envelope {
                segment_size: self.segment_size,
                kek_ref: format!("{KEK_SCHEME_KMS}:{arn}"),
                wrapped_dek: blob,
                multipart,
                bucket_key: None,
                context: context.clone(),
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
    ) -> Result<Envelope, ProxyError> {
        let mut env = Envelope {
            segment_size: self.segment_size,
            kek_ref: String::new(),
            wrapped_dek: Vec::new(),
            multipart,
            bucket_key: None,
            context: None,
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
                    env.kek_ref = format!("{KEK_SCHEME_KMS}:{}", bk.arn);
                    env.bucket_key = Some(bk.blob);
                    env.wrapped_dek = wrap_under(bk.key.expose(), dek, &env.wrap_aad(id))?;
                } else {
                    let mp = env.multipart.map(|m| m.encode());
                    let ctx = object_context(mp.as_deref(), context.as_deref(), id, self.segment_size);
                    let (blob, arn) = kms.encrypt(key_id, dek, &ctx).await?;
                    env.kek_ref = format!("{KEK_SCHEME_KMS}:{arn}");
                    env.wrapped_dek = blob;
                }
            }
            Protection::Plaintext => {
                return Err(ProxyError::Internal("no envelope for a plaintext object".into()));
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
    ) -> Result<Arc<DataKey>, ProxyError> {
        let sse_c = env.kek_ref == KEK_REF_SSE_C;
        if customer.is_some() && !sse_c {
            return Err(ProxyError::InvalidRequest(
                "The encryption parameters are not applicable to this object.".into(),
            ));
        }
        if sse_c {
            let key = customer.ok_or_else(sse_c_required)?;
            return unwrap_under(key.expose(), &env.wrapped_dek, &env.wrap_aad(id))
                .map(Arc::new)
                .ok_or(ProxyError::AccessDenied("Access Denied"));
        }
        if let Some(key) = kms_key_of(&env.kek_ref) {
            let kms = self.kms_provider()?;
            return match &env.bucket_key {
                Some(bk) => {
                    let bucket_key = kms.decrypt(key, bk, &bucket_key_context(&id.bucket)).await?;
                    unwrap_under(bucket_key.expose(), &env.wrapped_dek, &env.wrap_aad(id))
                        .map(Arc::new)
                        .ok_or(ProxyError::ObjectIntegrity("the data key does not unwrap for this object"))
                }
                None => {
                    let mp = env.multipart.map(|m| m.encode());
                    let ctx = object_context(mp.as_deref(), env.context.as_deref(), id, env.segment_size);
                    kms.decrypt(key, &env.wrapped_dek, &ctx).await
                }
            };
        }
        let kek = self.keyring.by_reference(&env.kek_ref).ok_or_else(|| ProxyError::UnknownKey(env.kek_ref.clone()))?;
        kek.unwrap(&env.wrapped_dek, &env.wrap_aad(id))
            .map(Arc::new)
            .ok_or(ProxyError::ObjectIntegrity("the data key does not unwrap for this object"))
    }

    /// `env` with its data key re-wrapped for `id` and `multipart`, the same way it is protected now (keyring
    /// objects move to the current KEK): how a copy renames an object and how Complete seals one, without
    /// touching the ciphertext.
    pub async fn rewrap(
        &self,
        dek: &DataKey,
        env: &Envelope,
        id: &ObjectIdentity,
        multipart: Option<Multipart>,
        customer: Option<&Arc<CustomerKey>>,
    ) -> Result<Envelope, ProxyError> {
        let protection = self.protection_of(env, customer)?;
        self.wrap_for(dek, id, &protection, multipart).await
    }

    /// The upload ID handed to the client for the upstream upload `upstream_id` of object `id` with data key
    /// `dek`: `s3c1.<b64url kek ref>.<b64url wrapped dek>.<upstream id>` (docs/FORMAT.md, "Multipart uploads").
    /// SSE-C uploads wrap it under the client's key (every part must then bring it); others under the keyring.
    pub fn upload_id(
        &self,
        dek: &DataKey,
        id: &ObjectIdentity,
        upstream_id: &str,
        customer: Option<&Arc<CustomerKey>>,
    ) -> Result<String, ProxyError> {
        let (kek_ref, token) = match customer {
            Some(k) => {
                let aad = upload_token_aad(KEK_REF_SSE_C, id, self.segment_size, upstream_id);
                (KEK_REF_SSE_C.to_owned(), wrap_under(k.expose(), dek, &aad)?)
            }
            None => {
                let kek = self.keyring.current();
                let kek_ref = kek.reference();
                let token = kek.wrap(dek, &upload_token_aad(&kek_ref, id, self.segment_size, upstream_id))?;
                (kek_ref, token)
            }
        };
        Ok(format!("{UPLOAD_ID_PREFIX}{}.{}.{upstream_id}", B64URL.encode(kek_ref), B64URL.encode(token)))
    }

    /// Reads an upload ID made by [`Crypto::upload_id`]: the upstream upload ID, the data key and the reference of
    /// the key that wrapped it.
    pub fn open_upload_id(
        &self,
        upload_id: &str,
        id: &ObjectIdentity,
        customer: Option<&Arc<CustomerKey>>,
    ) -> Result<(String, Arc<DataKey>, String), ProxyError> {
        let no_such = || ProxyError::NoSuchUpload;
        let rest = upload_id.strip_prefix(UPLOAD_ID_PREFIX).ok_or_else(no_such)?;
        let mut fields = rest.splitn(3, '.');
        let (Some(kek_ref), Some(token), Some(upstream_id)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(no_such());
        };
        let kek_ref = B64URL.decode(kek_ref).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(no_such)?;
        let token = B64URL.decode(token).map_err(|_| no_such())?;
        if upstream_id.is_empty() {
            return Err(no_such());
        }
        let aad = upload_token_aad(&kek_ref, id, self.segment_size, upstream_id);
        let dek = if kek_ref == KEK_REF_SSE_C {
            let key = customer.ok_or_else(sse_c_required)?;
            unwrap_under(key.expose(), &token, &aad).ok_or_else(|| {
                ProxyError::InvalidRequest(
                    "The provided encryption parameters did not match the ones used originally.".into(),
                )
            })?
        } else {
            if customer.is_some() {
                return Err(ProxyError::InvalidRequest(
                    "The encryption parameters are not applicable to this upload.".into(),
                ));
            }
            let kek = self.keyring.by_reference(&kek_ref).ok_or_else(|| ProxyError::UnknownKey(kek_ref.clone()))?;
            kek.unwrap(&token, &aad).ok_or_else(no_such)?
        };
        Ok((upstream_id.to_owned(), Arc::new(dek), kek_ref))
    }

    /// The upstream upload ID inside an upload ID (no key needed: Abort and ListParts also accept raw IDs, the
    /// ones ListMultipartUploads shows).
    pub fn upstream_upload_id(upload_id: &str) -> &str {
        match upload_id.strip_prefix(UPLOAD_ID_PREFIX) {
            Some(rest) => rest.splitn(3, '.').nth(2).unwrap_or(upload_id),
            None => upload_id,
        }
    }
}

fn sse_c_required() -> ProxyError {
    ProxyError::InvalidRequest(
        "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to \
         retrieve the object."
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto() -> (Crypto, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        keys::keygen(&path, Some("k1")).unwrap();
        (Crypto::from_keyring(LocalKeyring::load(&path).unwrap(), LegacyPolicy::Reject), dir)
    }

    #[test]
    fn an_upload_id_carries_the_data_key_to_any_replica_and_only_for_its_own_upload() {
        let (c, _dir) = crypto();
        let id = ObjectIdentity { bucket: "b".into(), key: "k".into() };
        let dek = DataKey::generate().unwrap();
        let upload_id = c.upload_id(&dek, &id, "up.stream_id-1.2", None).unwrap();
        assert!(upload_id.starts_with("s3c1.") && upload_id.ends_with(".up.stream_id-1.2"));
        let (upstream, got, kek_ref) = c.open_upload_id(&upload_id, &id, None).unwrap();
        assert_eq!(kek_ref, "keyring:k1");
        assert_eq!((upstream.as_str(), got.expose()), ("up.stream_id-1.2", dek.expose()));
        assert_eq!(Crypto::upstream_upload_id(&upload_id), "up.stream_id-1.2");
        assert_eq!(Crypto::upstream_upload_id("raw-id"), "raw-id");
        let other = ObjectIdentity { bucket: "b".into(), key: "other".into() };
        assert_eq!(c.open_upload_id(&upload_id, &other, None).unwrap_err().code(), "NoSuchUpload");
        let swapped = upload_id.replace(".up.stream_id-1.2", ".another-upload");
        assert_eq!(c.open_upload_id(&swapped, &id, None).unwrap_err().code(), "NoSuchUpload");
        for bad in ["raw-id", "s3c1.", "s3c1.a.b", "s3c1.!!.!!.x"] {
            assert_eq!(c.open_upload_id(bad, &id, None).unwrap_err().code(), "NoSuchUpload", "{bad}");
        }
    }
}
