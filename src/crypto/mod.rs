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
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use envelope::{Envelope, Multipart};
use format::{DEFAULT_SEGMENT_SIZE, UPLOAD_ID_PREFIX};
use keys::{DataKey, LocalKeyring, ObjectIdentity, upload_token_aad};

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
    pub fn new_object_key(
        &self,
        id: &ObjectIdentity,
        multipart: Option<Multipart>,
    ) -> Result<(DataKey, Envelope), ProxyError> {
        let kek = self.keyring.current();
        let dek = DataKey::generate()?;
        let mut env =
            Envelope { segment_size: self.segment_size, kek_ref: kek.reference(), wrapped_dek: Vec::new(), multipart };
        env.wrapped_dek = kek.wrap(&dek, &env.wrap_aad(id))?;
        Ok((dek, env))
    }

    /// The data key of a stored object.
    pub fn open_envelope(&self, env: &Envelope, id: &ObjectIdentity) -> Result<Arc<DataKey>, ProxyError> {
        let kek = self.keyring.by_reference(&env.kek_ref).ok_or_else(|| ProxyError::UnknownKey(env.kek_ref.clone()))?;
        kek.unwrap(&env.wrapped_dek, &env.wrap_aad(id))
            .map(Arc::new)
            .ok_or(ProxyError::ObjectIntegrity("the data key does not unwrap for this object"))
    }

    /// `env` with its data key re-wrapped (under the current KEK) for `id` and `multipart`: how a copy renames an
    /// object and how Complete seals one, without touching the ciphertext.
    pub fn rewrap(
        &self,
        dek: &DataKey,
        env: &Envelope,
        id: &ObjectIdentity,
        multipart: Option<Multipart>,
    ) -> Result<Envelope, ProxyError> {
        let kek = self.keyring.current();
        let mut out =
            Envelope { segment_size: env.segment_size, kek_ref: kek.reference(), wrapped_dek: Vec::new(), multipart };
        out.wrapped_dek = kek.wrap(dek, &out.wrap_aad(id))?;
        Ok(out)
    }

    /// The upload ID handed to the client for the upstream upload `upstream_id` of object `id` with data key
    /// `dek`: `s3c1.<b64url kek ref>.<b64url wrapped dek>.<upstream id>` (docs/FORMAT.md, "Multipart uploads").
    pub fn upload_id(&self, dek: &DataKey, id: &ObjectIdentity, upstream_id: &str) -> Result<String, ProxyError> {
        let kek = self.keyring.current();
        let kek_ref = kek.reference();
        let token = kek.wrap(dek, &upload_token_aad(&kek_ref, id, self.segment_size, upstream_id))?;
        Ok(format!("{UPLOAD_ID_PREFIX}{}.{}.{upstream_id}", B64URL.encode(kek_ref), B64URL.encode(token)))
    }

    /// Reads an upload ID made by [`Crypto::upload_id`]: the upstream upload ID, the data key and the reference of
    /// the KEK that wrapped it.
    pub fn open_upload_id(
        &self,
        upload_id: &str,
        id: &ObjectIdentity,
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
        let kek = self.keyring.by_reference(&kek_ref).ok_or_else(|| ProxyError::UnknownKey(kek_ref.clone()))?;
        let dek =
            kek.unwrap(&token, &upload_token_aad(&kek_ref, id, self.segment_size, upstream_id)).ok_or_else(no_such)?;
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
        let upload_id = c.upload_id(&dek, &id, "up.stream_id-1.2").unwrap();
        assert!(upload_id.starts_with("s3c1.") && upload_id.ends_with(".up.stream_id-1.2"));
        let (upstream, got, kek_ref) = c.open_upload_id(&upload_id, &id).unwrap();
        assert_eq!(kek_ref, "keyring:k1");
        assert_eq!((upstream.as_str(), got.expose()), ("up.stream_id-1.2", dek.expose()));
        assert_eq!(Crypto::upstream_upload_id(&upload_id), "up.stream_id-1.2");
        assert_eq!(Crypto::upstream_upload_id("raw-id"), "raw-id");
        let other = ObjectIdentity { bucket: "b".into(), key: "other".into() };
        assert_eq!(c.open_upload_id(&upload_id, &other).unwrap_err().code(), "NoSuchUpload");
        let swapped = upload_id.replace(".up.stream_id-1.2", ".another-upload");
        assert_eq!(c.open_upload_id(&swapped, &id).unwrap_err().code(), "NoSuchUpload");
        for bad in ["raw-id", "s3c1.", "s3c1.a.b", "s3c1.!!.!!.x"] {
            assert_eq!(c.open_upload_id(bad, &id).unwrap_err().code(), "NoSuchUpload", "{bad}");
        }
    }
}
