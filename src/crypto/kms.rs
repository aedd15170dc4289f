//! The AWS KMS key provider (aws-sdk-kms): data keys from GenerateDataKey, unwrapped with Decrypt, both bound to
//! the object by an EncryptionContext; S3-Bucket-Key-style intermediate keys; and the caches that keep a hot bucket
//! at about one KMS call per thousand requests. Every call is counted ([`KmsProvider::calls`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use sha2::{Digest, Sha256};

use super::error::{CryptoError, KmsCode};
use super::format::{DEK_LEN, FORMAT_VERSION};
use super::keys::DataKey;
use crate::config::KmsSettings;

/// An EncryptionContext: sorted, so that its canonical form (for cache keys) is stable.
pub type Context = BTreeMap<String, String>;

/// KMS calls made, by operation.
#[derive(Debug, Default)]
pub struct KmsCalls {
    pub generate_data_key: AtomicU64,
    pub decrypt: AtomicU64,
    pub encrypt: AtomicU64,
}

impl KmsCalls {
    pub fn total(&self) -> u64 {
        self.generate_data_key.load(Ordering::Relaxed)
            + self.decrypt.load(Ordering::Relaxed)
            + self.encrypt.load(Ordering::Relaxed)
    }
}

/// A bucket key in use for writes.
struct WriteKey {
    key: Arc<DataKey>,
    blob: Vec<u8>,
    arn: String,
    created: Instant,
    uses: u64,
}

/// An unwrapped key and when it was unwrapped.
/// A data key KMS decrypted, the ARN of the key that decrypted it, and when.
type CachedKey = (Arc<DataKey>, String, Instant);
/// The bucket key of one (KMS key, bucket), behind its own async lock.
type WriteSlot = Arc<tokio::sync::Mutex<Option<WriteKey>>>;

/// A bucket key drawn for writes: its plaintext, its KMS blob and the KMS key's ARN.
pub struct BucketKey {
    pub key: Arc<DataKey>,
    pub blob: Vec<u8>,
    pub arn: String,
}

/// The KMS client and its caches.
pub struct KmsProvider {
    client: aws_sdk_kms::Client,
    settings: KmsSettings,
    /// Unwrapped keys by (blob, key, context) digest.
    decrypted: Mutex<HashMap<[u8; 32], CachedKey>>,
    /// Key names (aliases, key IDs) resolved to key ARNs by DescribeKey, and when.
    resolved: Mutex<HashMap<String, (String, Instant)>>,
    /// Bucket keys for writes, by (KMS key as configured or requested, bucket). One async lock per slot, so that
    /// concurrent writes to a cold bucket draw one bucket key, not one each.
    write_keys: Mutex<HashMap<(String, String), WriteSlot>>,
    calls: KmsCalls,
}

impl std::fmt::Debug for KmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsProvider").field("endpoint", &self.settings.endpoint).finish_non_exhaustive()
    }
}

/// The context a bucket key is generated with: it may wrap data keys of that bucket only.
pub fn bucket_key_context(bucket: &str) -> Context {
    let mut c = Context::new();
    c.insert("s3crypt:v".into(), FORMAT_VERSION.to_string());
    c.insert("s3crypt:bucket".into(), bucket.to_owned());
    c
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

fn canonical(context: &Context) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in context {
        for f in [k.as_bytes(), v.as_bytes()] {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
    }
    out
}

/// Maps a KMS failure to the S3-style error a client gets.
fn kms_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(e: SdkError<E, R>) -> CryptoError {
    match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            match code {
                "NotFoundException" => CryptoError::Kms(KmsCode::NotFound),
                "DisabledException" => CryptoError::Kms(KmsCode::Disabled),
                "KMSInvalidStateException" => CryptoError::Kms(KmsCode::InvalidState),
                "AccessDeniedException" => CryptoError::NotAllowed("Access Denied"),
                "InvalidCiphertextException" | "IncorrectKeyException" => {
                    CryptoError::Integrity("the data key does not unwrap for this object (KMS)")
                }
                "ThrottlingException"
                | "LimitExceededException"
                | "KMSInternalException"
                | "DependencyTimeoutException" => CryptoError::KmsUnavailable(format!("KMS {code}")),
                "" => CryptoError::Kms(KmsCode::Failed),
                _other => CryptoError::Kms(KmsCode::RequestFailed),
            }
        }
        _other => CryptoError::KmsUnavailable(format!("{e:?}")),
    }
}

fn to_data_key(plain: Option<&Blob>) -> Result<DataKey, CryptoError> {
    let bytes = plain.map(Blob::as_ref).unwrap_or_default();
    let arr: [u8; DEK_LEN] =
        bytes.try_into().map_err(|_| CryptoError::Internal("KMS returned a key of the wrong length".into()))?;
    Ok(DataKey::from_bytes(arr))
}

impl KmsProvider {
    /// A client from the settings: explicit endpoint, region and credentials, or the standard AWS chain.
    pub async fn new(settings: &KmsSettings) -> KmsProvider {
        use aws_config::BehaviorVersion;
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(settings.timeout)
                    .operation_timeout(settings.timeout * 3)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(r) = &settings.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &settings.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        if let Some((ak, sk)) = &settings.credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                ak.clone(),
                sk.expose().to_owned(),
                None,
                None,
                "s3crypt-config",
            ));
        }
        let mut conf = loader.load().await;
        if conf.region().is_none() {
            conf = conf.into_builder().region(aws_config::Region::new("us-east-1")).build();
        }
        KmsProvider {
            client: aws_sdk_kms::Client::new(&conf),
            settings: settings.clone(),
            decrypted: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            write_keys: Mutex::new(HashMap::new()),
            calls: KmsCalls::default(),
        }
    }

    pub fn settings(&self) -> &KmsSettings {
        &self.settings
    }

    pub fn calls(&self) -> &KmsCalls {
        &self.calls
    }

    /// The ARN of the key `key` names: a key ARN is itself; an alias (`alias/x`, an alias ARN) or a key ID is
    /// resolved by DescribeKey, cached for `cache_ttl` (an alias can be repointed).
    pub async fn resolve(&self, key: &str) -> Result<String, CryptoError> {
        if crate::config::is_key_arn(key) {
            return Ok(key.to_owned());
        }
        let ttl = self.settings.cache_ttl;
        if let Ok(cache) = self.resolved.lock()
            && let Some((arn, at)) = cache.get(key)
            && at.elapsed() < ttl
        {
            return Ok(arn.clone());
        }
        let started = Instant::now();
        let out = self.client.describe_key().key_id(key).send().await;
        crate::metrics::kms_call("DescribeKey", out.is_ok(), started.elapsed());
        let out = out.map_err(kms_error)?;
        let arn = out
            .key_metadata()
            .map(|m| m.arn().unwrap_or(m.key_id()).to_owned())
            .filter(|a| crate::config::is_key_arn(a))
            .ok_or(CryptoError::Kms(KmsCode::NotFound))?;
        if let Ok(mut cache) = self.resolved.lock() {
            if cache.len() >= self.settings.cache_entries {
                cache.clear();
            }
            cache.insert(key.to_owned(), (arn.clone(), Instant::now()));
        }
        Ok(arn)
    }

    /// A fresh data key under `key_id` bound to `context`: (plaintext, blob, the key's ARN).
    pub async fn generate(&self, key_id: &str, context: &Context) -> Result<(DataKey, Vec<u8>, String), CryptoError> {
        self.calls.generate_data_key.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context.clone().into_iter().collect()))
            .send()
            .await;
        crate::metrics::kms_call("GenerateDataKey", out.is_ok(), started.elapsed());
        let out = out.map_err(kms_error)?;
        let dek = to_data_key(out.plaintext())?;
        let blob = out.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default();
        let arn = out.key_id().unwrap_or(key_id).to_owned();
        Ok((dek, blob, arn))
    }

    /// Wraps a known data key under `key_id` with `context`: (blob, the key's ARN).
    pub async fn encrypt(
        &self,
        key_id: &str,
        dek: &DataKey,
        context: &Context,
    ) -> Result<(Vec<u8>, String), CryptoError> {
        self.calls.encrypt.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let out = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(dek.expose().to_vec()))
            .set_encryption_context(Some(context.clone().into_iter().collect()))
            .send()
            .await;
        crate::metrics::kms_call("Encrypt", out.is_ok(), started.elapsed());
        let out = out.map_err(kms_error)?;
        let arn = out.key_id().unwrap_or(key_id).to_owned();
        Ok((out.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default(), arn))
    }

    /// Unwraps `blob` (made under `key_id` with `context`), from the cache when it holds it.
    pub async fn decrypt(&self, key_id: &str, blob: &[u8], context: &Context) -> Result<Arc<DataKey>, CryptoError> {
        self.decrypt_under(Some(key_id), blob, context).await.map(|(k, _)| k)
    }

    /// Unwraps a blob with `key_id` if given, else with whichever key the blob names (objects of the AWS S3
    /// Encryption Client); also returns the ARN of the key KMS used, for the caller to check before using the key.
    pub async fn decrypt_reporting(
        &self,
        key_id: Option<&str>,
        blob: &[u8],
        context: &Context,
    ) -> Result<(Arc<DataKey>, String), CryptoError> {
        self.decrypt_under(key_id, blob, context).await
    }

    async fn decrypt_under(
        &self,
        key_id: Option<&str>,
        blob: &[u8],
        context: &Context,
    ) -> Result<(Arc<DataKey>, String), CryptoError> {
        let id = digest(&[blob, key_id.unwrap_or("").as_bytes(), &canonical(context)]);
        let ttl = self.settings.cache_ttl;
        if let Ok(cache) = self.decrypted.lock()
            && let Some((k, arn, at)) = cache.get(&id)
            && at.elapsed() < ttl
        {
            crate::metrics::key_cache("decrypt", true);
            return Ok((Arc::clone(k), arn.clone()));
        }
        crate::metrics::key_cache("decrypt", false);
        self.calls.decrypt.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let out = self
            .client
            .decrypt()
            .set_key_id(key_id.map(str::to_owned))
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .set_encryption_context(Some(context.clone().into_iter().collect()))
            .send()
            .await;
        crate::metrics::kms_call("Decrypt", out.is_ok(), started.elapsed());
        let out = out.map_err(kms_error)?;
        let key = Arc::new(to_data_key(out.plaintext())?);
        let arn = out.key_id().or(key_id).unwrap_or("").to_owned();
        if let Ok(mut cache) = self.decrypted.lock() {
            if cache.len() >= self.settings.cache_entries {
                cache.retain(|_, (_, _, at)| at.elapsed() < ttl);
                if cache.len() >= self.settings.cache_entries
                    && let Some(victim) = cache.keys().next().copied()
                {
                    cache.remove(&victim);
                }
            }
            cache.insert(id, (Arc::clone(&key), arn.clone(), Instant::now()));
        }
        Ok((key, arn))
    }

    /// The bucket key new objects of `bucket` under `key_id` are wrapped with: reused for `cache_ttl` and
    /// `bucket_key_uses` objects, then drawn afresh (one GenerateDataKey).
    pub async fn write_bucket_key(&self, key_id: &str, bucket: &str) -> Result<BucketKey, CryptoError> {
        let slot = {
            let mut keys =
                self.write_keys.lock().map_err(|_| CryptoError::Internal("bucket key cache poisoned".into()))?;
            if keys.len() >= self.settings.cache_entries {
                keys.clear();
            }
            Arc::clone(keys.entry((key_id.to_owned(), bucket.to_owned())).or_default())
        };
        let mut held = slot.lock().await;
        if let Some(k) = held.as_mut()
            && k.created.elapsed() < self.settings.cache_ttl
            && k.uses < self.settings.bucket_key_uses
        {
            k.uses += 1;
            crate::metrics::key_cache("bucket_key", true);
            return Ok(BucketKey { key: Arc::clone(&k.key), blob: k.blob.clone(), arn: k.arn.clone() });
        }
        crate::metrics::key_cache("bucket_key", false);
        let (key, blob, arn) = self.generate(key_id, &bucket_key_context(bucket)).await?;
        let key = Arc::new(key);
        // The new bucket key also opens without a KMS call on this replica.
        let id = digest(&[&blob, arn.as_bytes(), &canonical(&bucket_key_context(bucket))]);
        if let Ok(mut cache) = self.decrypted.lock() {
            cache.insert(id, (Arc::clone(&key), arn.clone(), Instant::now()));
        }
        *held = Some(WriteKey {
            key: Arc::clone(&key),
            blob: blob.clone(),
            arn: arn.clone(),
            created: Instant::now(),
            uses: 1,
        });
        Ok(BucketKey { key, blob, arn })
    }
}
