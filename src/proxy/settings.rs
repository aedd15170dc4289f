//! Bucket settings made through the S3 API — default encryption (PutBucketEncryption) and the bucket policy
//! (PutBucketPolicy) — kept where every replica reads them: the system bucket at the store, `b/<bucket>/encryption`
//! and `b/<bucket>/policy`, each sealed under the keyring (FORMAT.md §10) so that the store can neither read nor
//! alter one unnoticed. A replica caches a bucket's settings for `server.bucket_settings_refresh`; the replica that
//! changes them sees the change at once, the others within that time. A setting that cannot be read, or does not
//! open, fails the bucket's requests closed (503) rather than serve them without it (docs/BUCKETS.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;

use super::Proxy;
use crate::crypto::Crypto;
use crate::error::ProxyError;
use crate::s3::Target;
use crate::s3::bucket_encryption::BucketEncryption;
use crate::s3::op::S3Op;
use crate::s3::policy::Policy;
use crate::store::{Store, StoreBody, StoreRequest, Xml, read_xml};

/// The kinds of bucket setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Encryption,
    Policy,
}

impl Setting {
    /// Its name in the record's key and in the seal's AAD.
    pub fn name(self) -> &'static str {
        match self {
            Setting::Encryption => "encryption",
            Setting::Policy => "policy",
        }
    }
}

/// A bucket's settings, as read (and opened) from its records.
#[derive(Debug, Default)]
pub struct BucketSettings {
    pub encryption: Option<BucketEncryption>,
    /// The policy, and its document as it was put (GetBucketPolicy answers it).
    pub policy: Option<(Policy, String)>,
}

/// Most buckets whose settings one replica keeps (the least recently read go first).
const CACHED_BUCKETS: usize = 10_000;

/// Each bucket's settings and when they were read.
#[derive(Debug)]
pub struct SettingsCache {
    refresh: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<BucketSettings>)>>,
}

impl SettingsCache {
    pub fn new(refresh: Duration) -> SettingsCache {
        SettingsCache { refresh, entries: Mutex::new(HashMap::new()) }
    }

    fn fresh(&self, bucket: &str) -> Option<Arc<BucketSettings>> {
        let entries = self.entries.lock().ok()?;
        let (at, s) = entries.get(bucket)?;
        (at.elapsed() < self.refresh).then(|| Arc::clone(s))
    }

    fn insert(&self, bucket: &str, settings: Arc<BucketSettings>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHED_BUCKETS && !entries.contains_key(bucket) {
                let oldest = entries.iter().min_by_key(|(_, (at, _))| *at).map(|(b, _)| b.clone());
                if let Some(b) = oldest {
                    entries.remove(&b);
                }
            }
            entries.insert(bucket.to_owned(), (Instant::now(), settings));
        }
    }

    fn forget(&self, bucket: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(bucket);
        }
    }
}

fn record_key(bucket: &str, setting: Setting) -> String {
    format!("b/{bucket}/{}", setting.name())
}

/// Reads one setting's record: `None` when there is none; an error when it cannot be read or does not open.
async fn read_setting(
    store: &Store,
    crypto: &Crypto,
    system: &str,
    bucket: &str,
    setting: Setting,
) -> Result<Option<Vec<u8>>, ProxyError> {
    let target =
        Target { bucket: Some(system.to_owned()), key: Some(record_key(bucket, setting)), virtual_hosted: false };
    let resp = store.send(StoreRequest::get(&target)).await?;
    let status = resp.status();
    if status == http::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        let (parts, body) = resp.into_parts();
        return Err(crate::store::reply::error(parts.status, &parts.headers, body, false).await);
    }
    let sealed = read_xml(resp.into_body(), Xml::Result).await?;
    Ok(Some(crypto.open_setting(bucket, setting.name(), &sealed)?))
}

impl Proxy {
    /// A bucket's settings: cached, else read from the system bucket (both records at once). Fails closed
    /// (`SettingsUnavailable`) when they cannot be read or do not open.
    pub(super) async fn bucket_settings(&self, bucket: &str) -> Result<Arc<BucketSettings>, ProxyError> {
        if let Some(s) = self.inner.settings_cache.fresh(bucket) {
            return Ok(s);
        }
        let (store, crypto, system) = (self.store(), &*self.inner.crypto, self.inner.settings.system_bucket.as_str());
        let (encryption, policy) = tokio::join!(
            read_setting(store, crypto, system, bucket, Setting::Encryption),
            read_setting(store, crypto, system, bucket, Setting::Policy)
        );
        // Fail closed: the store's own trouble as itself (502/503/504), anything else (a refusal, a record that
        // does not open) as SettingsUnavailable.
        let unavailable = |e: ProxyError| {
            tracing::error!(error = %e, "the bucket's settings cannot be read: its requests are refused");
            match e {
                ProxyError::UpstreamAuth(_) | ProxyError::UpstreamUnavailable(_) | ProxyError::UpstreamTimeout => e,
                _ => ProxyError::SettingsUnavailable,
            }
        };
        let encryption = match encryption.map_err(unavailable)? {
            Some(doc) => Some(BucketEncryption::parse(&doc).map_err(|_| ProxyError::SettingsUnavailable)?),
            None => None,
        };
        let policy = match policy.map_err(unavailable)? {
            Some(doc) => {
                let text = String::from_utf8(doc).map_err(|_| ProxyError::SettingsUnavailable)?;
                Some((Policy::parse(&text, bucket).map_err(|_| ProxyError::SettingsUnavailable)?, text))
            }
            None => None,
        };
        let settings = Arc::new(BucketSettings { encryption, policy });
        self.inner.settings_cache.insert(bucket, Arc::clone(&settings));
        Ok(settings)
    }

    /// Writes (`Some`) or deletes (`None`) one of a bucket's settings, and drops this replica's cached copy.
    pub(super) async fn put_setting(
        &self,
        bucket: &str,
        setting: Setting,
        doc: Option<&[u8]>,
    ) -> Result<(), ProxyError> {
        let system = &self.inner.settings.system_bucket;
        let target =
            Target { bucket: Some(system.clone()), key: Some(record_key(bucket, setting)), virtual_hosted: false };
        let request = match doc {
            Some(doc) => {
                let sealed = self.inner.crypto.seal_setting(bucket, setting.name(), doc)?;
                self.records().ensure_bucket_once().await?;
                StoreRequest::new(S3Op::PutObject, Method::PUT, &target).body(StoreBody::Bytes(Bytes::from(sealed)))
            }
            None => StoreRequest::new(S3Op::DeleteObject, Method::DELETE, &target),
        };
        let result = self.store().expect_ok(request).await.map(drop);
        self.inner.settings_cache.forget(bucket);
        result
    }

    /// Removes every setting of a bucket (it was deleted, or created anew: a bucket of the same name must not
    /// inherit a deleted one's policy).
    pub(super) async fn forget_settings(&self, bucket: &str) {
        for setting in [Setting::Encryption, Setting::Policy] {
            if let Err(e) = self.put_setting(bucket, setting, None).await {
                tracing::warn!(error = %e, setting = setting.name(), "could not remove a bucket setting");
            }
        }
    }
}
