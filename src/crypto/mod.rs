//! Envelope encryption of object bodies: the format (`format`, DO NOT CHANGE), the segment AEAD (`aead`), keys and
//! wrapping (`keys`), the metadata envelope (`envelope`), segment sealing/opening (`stream`) and the streaming body
//! transforms (`body`). docs/FORMAT.md specifies the format.

pub mod aead;
pub mod body;
pub mod envelope;
pub mod format;
pub mod keys;
pub mod stream;

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{EncryptionSettings, LegacyPolicy};
use crate::error::ProxyError;
use envelope::Envelope;
use format::DEFAULT_SEGMENT_SIZE;
use keys::{DataKey, LocalKeyring, ObjectIdentity, wrap_aad};

/// The proxy's encryption state: keys and per-bucket policy.
#[derive(Debug)]
pub struct Crypto {
    keyring: LocalKeyring,
    pub legacy_objects: LegacyPolicy,
    passthrough_buckets: HashSet<String>,
    pub segment_size: u32,
}

impl Crypto {
    /// Loads the keyring (in dev mode, creates one first if it does not exist).
    pub fn load(settings: &EncryptionSettings) -> Result<(Crypto, Option<String>), String> {
        let mut created = None;
        if settings.create_keyring && !settings.keyring_file.exists() {
            let id = keys::keygen(&settings.keyring_file, None)?;
            created = Some(id);
        }
        let keyring = LocalKeyring::load(&settings.keyring_file)?;
        Ok((
            Crypto {
                keyring,
                legacy_objects: settings.legacy_objects,
                passthrough_buckets: settings.passthrough_buckets.clone(),
                segment_size: DEFAULT_SEGMENT_SIZE,
            },
            created,
        ))
    }

    /// From an already loaded keyring (tests, tools).
    pub fn from_keyring(keyring: LocalKeyring, legacy_objects: LegacyPolicy) -> Crypto {
        Crypto { keyring, legacy_objects, passthrough_buckets: HashSet::new(), segment_size: DEFAULT_SEGMENT_SIZE }
    }

    pub fn keyring(&self) -> &LocalKeyring {
        &self.keyring
    }

    /// Whether objects in `bucket` are encrypted.
    pub fn encrypts(&self, bucket: &str) -> bool {
        !self.passthrough_buckets.contains(bucket)
    }

    /// A fresh data key for a new object and its envelope (the key wrapped under the current KEK, bound to the
    /// object's identity).
    pub fn new_object_key(&self, id: &ObjectIdentity) -> Result<(DataKey, Envelope), ProxyError> {
        let kek = self.keyring.current();
        let dek = DataKey::generate()?;
        let kek_ref = kek.reference();
        let wrapped = kek.wrap(&dek, &wrap_aad(&kek_ref, id, self.segment_size))?;
        Ok((dek, Envelope { segment_size: self.segment_size, kek_ref, wrapped_dek: wrapped }))
    }

    /// The data key of a stored object.
    pub fn open_envelope(&self, env: &Envelope, id: &ObjectIdentity) -> Result<Arc<DataKey>, ProxyError> {
        let kek = self.keyring.by_reference(&env.kek_ref).ok_or_else(|| ProxyError::UnknownKey(env.kek_ref.clone()))?;
        kek.unwrap(&env.wrapped_dek, &wrap_aad(&env.kek_ref, id, env.segment_size))
            .map(Arc::new)
            .ok_or(ProxyError::ObjectIntegrity("the data key does not unwrap for this object"))
    }
}
