//! Keys: per-object data keys (DEK) from the OS RNG, key-encryption keys (KEK) from the local keyring, and the
//! wrapping of a DEK under a KEK, bound to the object's identity. This is the key-provider seam: the keyring
//! is one provider; AWS KMS and SSE-C plug in beside it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::aead::SegmentCipher;
use super::error::CryptoError;
use super::format::{
    DEK_LEN, FORMAT_VERSION, KEK_FINGERPRINT_LABEL, KEK_SCHEME_KEYRING, TAG_LEN, UPLOAD_TOKEN_AAD_LABEL,
    UPLOAD_TOKEN_V2_AAD_LABEL, WRAP_AAD_CONTEXT_PREFIX, WRAP_AAD_LABEL, WRAP_NONCE_LEN, WRAP_V1_LEN, WRAP_V2,
    WRAP_V2_KEY_INFO, WRAP_V2_SALT_LEN,
};

/// A 256-bit data key. Zeroized on drop; never printed.
pub struct DataKey(Zeroizing<[u8; DEK_LEN]>);

impl DataKey {
    /// A fresh key from the operating system's RNG.
    pub fn generate() -> Result<DataKey, CryptoError> {
        let mut k = Zeroizing::new([0u8; DEK_LEN]);
        getrandom::fill(&mut k[..]).map_err(|e| CryptoError::Internal(format!("OS RNG: {e}")))?;
        Ok(DataKey(k))
    }

    pub fn from_bytes(b: [u8; DEK_LEN]) -> DataKey {
        DataKey(Zeroizing::new(b))
    }

    pub fn expose(&self) -> &[u8; DEK_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// Random bytes from the OS RNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| CryptoError::Internal(format!("OS RNG: {e}")))?;
    Ok(b)
}

/// What a wrapped data key is bound to: moving or copying the stored object under another name makes the
/// unwrap fail unless the proxy re-wraps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    pub bucket: String,
    pub key: String,
}

/// The AAD of a DEK wrap: label, version, segment size, then length-prefixed (u32 big-endian) fields: the key
/// reference, bucket, key; for multipart objects only, the `x-amz-meta-s3crypt-mp` value; for objects with a
/// client SSE-KMS encryption context only, `"ctx:" || context`.
pub fn wrap_aad(
    kek_ref: &str,
    id: &ObjectIdentity,
    segment_size: u32,
    multipart: Option<&str>,
    context: Option<&str>,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64 + id.bucket.len() + id.key.len());
    aad.extend_from_slice(WRAP_AAD_LABEL);
    aad.push(FORMAT_VERSION);
    aad.extend_from_slice(&segment_size.to_be_bytes());
    let fields = [kek_ref.as_bytes(), id.bucket.as_bytes(), id.key.as_bytes()];
    for field in fields.into_iter().chain(multipart.map(str::as_bytes)) {
        push_field(&mut aad, field);
    }
    if let Some(c) = context {
        push_field(&mut aad, format!("{WRAP_AAD_CONTEXT_PREFIX}{c}").as_bytes());
    }
    aad
}

/// Wraps `dek` under a raw 256-bit key (a bucket key or a customer key): the same layout as a KEK wrap.
pub fn wrap_under(key: &[u8; 32], dek: &DataKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal_wrap(key, dek.expose(), aad)
}

/// Unwraps what [`wrap_under`] made; `None` for another key or AAD.
pub fn unwrap_under(key: &[u8; 32], wrapped: &[u8], aad: &[u8]) -> Option<DataKey> {
    open_wrap(key, wrapped, aad).and_then(|p| to_data_key(&p))
}

fn to_data_key(payload: &[u8]) -> Option<DataKey> {
    let k: [u8; DEK_LEN] = payload.try_into().ok()?;
    Some(DataKey::from_bytes(k))
}

/// The one-time key of a version-2 wrap: `HKDF-SHA256(ikm = key, salt, info = "s3crypt/v1 wrap key")`.
fn wrap_v2_key(key: &[u8; 32], salt: &[u8; WRAP_V2_SALT_LEN]) -> Zeroizing<[u8; 32]> {
    use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
    let prk = Salt::new(HKDF_SHA256, salt).extract(key);
    let mut out = Zeroizing::new([0u8; 32]);
    // Expanding 32 bytes from SHA-256 always succeeds.
    if let Ok(okm) = prk.expand(&[WRAP_V2_KEY_INFO], HKDF_SHA256) {
        let _ = okm.fill(&mut out[..]);
    }
    out
}

/// Wraps `payload` (a data key, or a wrap of one) under `key`, bound to `aad`, as a version-2 wrap:
/// `0x02 || salt (16) || nonce (12) || AES-256-GCM(K, nonce, aad, payload) || tag (16)` with `K` derived from `key`
/// and the random salt, so no two wraps share a GCM key and no count of wraps per key is needed.
pub fn seal_wrap(key: &[u8; 32], payload: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    Ok(seal_wrap_with(key, payload, aad, random_bytes()?, random_bytes()?))
}

/// The length of a version-2 wrap of a payload of `payload_len` bytes.
pub const fn sealed_wrap_len(payload_len: usize) -> usize {
    1 + WRAP_V2_SALT_LEN + WRAP_NONCE_LEN + payload_len + TAG_LEN
}

/// [`seal_wrap`] with a given salt and nonce (known-answer vectors).
pub fn seal_wrap_with(
    key: &[u8; 32],
    payload: &[u8],
    aad: &[u8],
    salt: [u8; WRAP_V2_SALT_LEN],
    nonce: [u8; WRAP_NONCE_LEN],
) -> Vec<u8> {
    let cipher = SegmentCipher::new(&wrap_v2_key(key, &salt));
    let mut buf = Zeroizing::new(payload.to_vec());
    let tag = cipher.seal(nonce, aad, &mut buf);
    let mut out = Vec::with_capacity(sealed_wrap_len(payload.len()));
    out.push(WRAP_V2);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    out
}

/// Opens a wrap of either layout: a version-1 wrap is exactly [`WRAP_V1_LEN`] bytes (`nonce || ct || tag` under
/// `key` itself), a version-2 wrap starts with `0x02` and is longer. `None` if it was made for another key or AAD,
/// or altered.
pub fn open_wrap(key: &[u8; 32], wrapped: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (cipher, rest) = if wrapped.len() == WRAP_V1_LEN {
        (SegmentCipher::new(key), wrapped)
    } else {
        let rest = wrapped.strip_prefix(&[WRAP_V2])?;
        if rest.len() < WRAP_V2_SALT_LEN + WRAP_NONCE_LEN + TAG_LEN {
            return None;
        }
        let (salt, rest) = rest.split_at(WRAP_V2_SALT_LEN);
        let salt: &[u8; WRAP_V2_SALT_LEN] = salt.try_into().ok()?;
        (SegmentCipher::new(&wrap_v2_key(key, salt)), rest)
    };
    let (nonce, sealed) = rest.split_at(WRAP_NONCE_LEN);
    let nonce: [u8; WRAP_NONCE_LEN] = nonce.try_into().ok()?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    cipher.open(nonce, aad, &mut buf).ok()?;
    let plain = buf.len() - TAG_LEN;
    buf.truncate(plain);
    Some(buf)
}

fn push_field(aad: &mut Vec<u8>, field: &[u8]) {
    aad.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
    aad.extend_from_slice(field);
}

/// The AAD of the token inside a version-2 upload ID: label, segment size, then length-prefixed key reference,
/// bucket, key, upstream upload ID and protection descriptor, and, for an SSE-C upload, the MD5 of the customer key
/// (so a token opens only for its own upload, its own protection and the key it was made with).
pub fn upload_token_v2_aad(
    kek_ref: &str,
    id: &ObjectIdentity,
    segment_size: u32,
    upstream_upload_id: &str,
    protection: &str,
    customer_key_md5: Option<&[u8]>,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(160 + id.bucket.len() + id.key.len() + upstream_upload_id.len());
    aad.extend_from_slice(UPLOAD_TOKEN_V2_AAD_LABEL);
    aad.extend_from_slice(&segment_size.to_be_bytes());
    let fields = [kek_ref.as_bytes(), id.bucket.as_bytes(), id.key.as_bytes(), upstream_upload_id.as_bytes()];
    for field in fields.into_iter().chain([protection.as_bytes()]).chain(customer_key_md5) {
        push_field(&mut aad, field);
    }
    aad
}

/// The AAD of the DEK wrap inside a version-1 (`s3c1.`) upload ID: label, version, segment size, then
/// length-prefixed key reference, bucket, key and upstream upload ID. Kept for the known-answer vectors.
pub fn upload_token_aad(kek_ref: &str, id: &ObjectIdentity, segment_size: u32, upstream_upload_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(96 + id.bucket.len() + id.key.len() + upstream_upload_id.len());
    aad.extend_from_slice(UPLOAD_TOKEN_AAD_LABEL);
    aad.push(FORMAT_VERSION);
    aad.extend_from_slice(&segment_size.to_be_bytes());
    for field in [kek_ref.as_bytes(), id.bucket.as_bytes(), id.key.as_bytes(), upstream_upload_id.as_bytes()] {
        push_field(&mut aad, field);
    }
    aad
}

/// A key-encryption key (256 bits). Zeroized on drop; never printed.
pub struct Kek {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({}, [REDACTED])", self.id)
    }
}

impl Kek {
    pub fn new(id: &str, key: [u8; 32]) -> Kek {
        Kek { id: id.to_owned(), key: Zeroizing::new(key) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A public name of the key's bytes, `hex(SHA-256(KEK_FINGERPRINT_LABEL || key)[..8])`: equal fingerprints
    /// mean the same key, and nothing about the key follows from one.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::new().chain_update(KEK_FINGERPRINT_LABEL).chain_update(&self.key[..]).finalize();
        hex::encode(&digest[..8])
    }

    /// The reference stored in metadata: `keyring:<id>`.
    pub fn reference(&self) -> String {
        format!("{KEK_SCHEME_KEYRING}:{}", self.id)
    }

    /// A version-1 wrap, `nonce (12) || AES-256-GCM(KEK, nonce, DEK, aad) (32) || tag (16)`: no longer written,
    /// kept for the known-answer vectors of the objects written with it.
    pub fn wrap_with_nonce(&self, dek: &DataKey, aad: &[u8], nonce: [u8; WRAP_NONCE_LEN]) -> Vec<u8> {
        let cipher = SegmentCipher::new(&self.key);
        let mut buf = dek.expose().to_vec();
        let tag = cipher.seal(nonce, aad, &mut buf);
        let mut out = Vec::with_capacity(WRAP_NONCE_LEN + DEK_LEN + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        out
    }

    /// Wraps a data key (a version-2 wrap, [`seal_wrap`]).
    pub fn wrap(&self, dek: &DataKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_wrap(&self.key, dek.expose(), aad)
    }

    /// Wraps any payload (a version-2 wrap): upload tokens.
    pub fn wrap_payload(&self, payload: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_wrap(&self.key, payload, aad)
    }

    /// Opens what [`Kek::wrap_payload`] made.
    pub fn unwrap_payload(&self, wrapped: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open_wrap(&self.key, wrapped, aad)
    }

    /// Unwraps a data key (either layout); `None` if the wrap was made for another key, object or parameters, or was
    /// altered.
    pub fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Option<DataKey> {
        open_wrap(&self.key, wrapped, aad).and_then(|p| to_data_key(&p))
    }
}

// === the local keyring ===========================================================================================

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    current: String,
    keys: BTreeMap<String, String>,
}

/// Named 256-bit KEKs from a file; `current` wraps new data keys, the others still unwrap old ones.
#[derive(Debug)]
pub struct LocalKeyring {
    path: PathBuf,
    current: String,
    keys: BTreeMap<String, Kek>,
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl LocalKeyring {
    /// Loads a keyring file; refuses files that the group or others may read or write.
    pub fn load(path: &Path) -> Result<LocalKeyring, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("keyring {}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "keyring {} has mode {mode:o}: it must not be readable or writable by group or others (chmod 600)",
                path.display()
            ));
        }
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("keyring {}: {e}", path.display()))?);
        Self::parse(path, &text)
    }

    /// Parses keyring text (`path` names it in messages).
    fn parse(path: &Path, text: &str) -> Result<LocalKeyring, String> {
        let file: KeyringFile =
            toml::from_str(text).map_err(|e| format!("keyring {}: {}", path.display(), e.message()))?;
        let mut keys = BTreeMap::new();
        for (id, b64) in &file.keys {
            if !valid_key_id(id) {
                return Err(format!("keyring {}: key id {id:?} must be 1-64 of [A-Za-z0-9._-]", path.display()));
            }
            let raw = Zeroizing::new(
                B64.decode(b64.trim()).map_err(|_| format!("keyring {}: key {id} is not base64", path.display()))?,
            );
            let bytes: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| format!("keyring {}: key {id} is not 32 bytes", path.display()))?;
            keys.insert(id.clone(), Kek::new(id, bytes));
        }
        if !keys.contains_key(&file.current) {
            return Err(format!("keyring {}: current key {:?} is not in [keys]", path.display(), file.current));
        }
        Ok(LocalKeyring { path: path.to_owned(), current: file.current, keys })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The KEK that wraps new data keys.
    pub fn current(&self) -> &Kek {
        &self.keys[&self.current]
    }

    /// A KEK by the reference stored in metadata (`keyring:<id>`).
    pub fn by_reference(&self, reference: &str) -> Option<&Kek> {
        let id = reference.strip_prefix(KEK_SCHEME_KEYRING)?.strip_prefix(':')?;
        self.keys.get(id)
    }

    /// Every key, in id order.
    pub fn keys(&self) -> impl Iterator<Item = &Kek> {
        self.keys.values()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// Adds a new random key to the keyring at `path` (creating the file, mode 600) and makes it current.
/// Returns the new key's id.
pub fn keygen(path: &Path, id: Option<&str>) -> Result<String, String> {
    add_key(path, id, true)
}

/// Adds a new random key to the keyring at `path` (creating the file, mode 600). A staged key
/// (`make_current` false) unwraps data keys but wraps none until [`promote_key`] makes it current: the first phase
/// of a rotation across replicas (docs/KEYS.md). A new keyring's first key is current either way. Returns the id.
pub fn add_key(path: &Path, id: Option<&str>, make_current: bool) -> Result<String, String> {
    let (mut current, mut entries) = read_entries(path)?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => {
            let now = crate::util::time::format_amz_date(std::time::SystemTime::now());
            let suffix: [u8; 3] = random_bytes().map_err(|e| e.to_string())?;
            format!("k{}-{}", &now[..8], hex::encode(suffix))
        }
    };
    if !valid_key_id(&id) {
        return Err(format!("key id {id:?} must be 1-64 of [A-Za-z0-9._-]"));
    }
    if entries.contains_key(&id) {
        return Err(format!("key id {id:?} already exists in {}", path.display()));
    }
    let key: Zeroizing<[u8; 32]> = Zeroizing::new(random_bytes().map_err(|e| e.to_string())?);
    entries.insert(id.clone(), Zeroizing::new(B64.encode(&key[..])));
    if make_current || current.is_none() {
        current = Some(id.clone());
    }
    write_keyring(path, current.as_deref().unwrap_or(&id), &entries)?;
    Ok(id)
}

/// Makes key `id` of the keyring at `path` the current one (the second phase of a rotation).
pub fn promote_key(path: &Path, id: &str) -> Result<(), String> {
    let (_, entries) = read_entries(path)?;
    if !entries.contains_key(id) {
        return Err(format!("key id {id:?} is not in {}", path.display()));
    }
    write_keyring(path, id, &entries)
}

/// One key of a keyring as `s3crypt keys list` shows it: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListing {
    pub id: String,
    pub fingerprint: String,
    pub current: bool,
}

/// The keys of the keyring at `path`, in id order, with their fingerprints.
pub fn list_keys(path: &Path) -> Result<Vec<KeyListing>, String> {
    let ring = LocalKeyring::load(path)?;
    Ok(ring
        .keys()
        .map(|k| KeyListing { id: k.id().to_owned(), fingerprint: k.fingerprint(), current: k.id() == ring.current })
        .collect())
}

/// The current key id (if the file exists) and the base64 keys of the keyring at `path`, checked to load.
type KeyEntries = (Option<String>, BTreeMap<String, Zeroizing<String>>);

fn read_entries(path: &Path) -> Result<KeyEntries, String> {
    if !path.exists() {
        return Ok((None, BTreeMap::new()));
    }
    // Loading checks the mode and every key before the file is rewritten.
    drop(LocalKeyring::load(path)?);
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let file: KeyringFile = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    let entries = file.keys.into_iter().map(|(id, b64)| (id, Zeroizing::new(b64))).collect();
    Ok((Some(file.current), entries))
}

fn write_keyring(path: &Path, current: &str, entries: &BTreeMap<String, Zeroizing<String>>) -> Result<(), String> {
    let mut text = Zeroizing::new(String::from(
        "# s3crypt keyring: 256-bit key-encryption keys, base64. `current` wraps new data keys; the others\n\
         # still unwrap objects written under them. Keep this file secret (mode 600) and backed up: losing a key\n\
         # loses every object written under it. Written by `s3crypt keys` / `s3crypt keygen`.\n",
    ));
    text.push_str(&format!("current = {current:?}\n\n[keys]\n"));
    for (k, v) in entries {
        text.push_str(&format!("{k:?} = {:?}\n", v.as_str()));
    }
    write_private(path, text.as_bytes())
}

/// Writes a file readable only by its owner, atomically.
/// Copies a keyring (checked to parse) to `to`, readable by its owner only: for platforms that mount secrets
/// group-readable (a Kubernetes Secret with `fsGroup`), run as an init step into a private volume. Returns the
/// current key's id.
pub fn install_keyring(from: &Path, to: &Path) -> Result<String, String> {
    let text = Zeroizing::new(std::fs::read_to_string(from).map_err(|e| format!("keyring {}: {e}", from.display()))?);
    let ring = LocalKeyring::parse(from, &text)?;
    write_private(to, text.as_bytes())?;
    Ok(ring.current)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // A fresh, unpredictable name created exclusively (O_CREAT|O_EXCL: never an existing file, never through a
    // symbolic link), mode 600 from the start, then renamed over the target.
    let suffix: [u8; 8] = random_bytes().map_err(|e| e.to_string())?;
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.tmp", hex::encode(suffix)));
    let tmp = path.with_file_name(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let written = (|| {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", tmp.display()));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: &str, k: &str) -> ObjectIdentity {
        ObjectIdentity { bucket: b.into(), key: k.into() }
    }

    #[test]
    fn a_keyring_keys_fingerprint_matches_the_known_answer_of_format_md() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(Kek::new("any", key).fingerprint(), "2e35d77aa0c3f987");
    }

    #[test]
    fn a_staged_key_is_listed_but_not_current_until_promoted_and_the_file_stays_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring.toml");
        assert_eq!(add_key(&path, Some("first"), false).unwrap(), "first", "a new keyring's first key is current");
        add_key(&path, Some("next"), false).unwrap();
        let listed = list_keys(&path).unwrap();
        assert_eq!(
            listed.iter().map(|k| (k.id.as_str(), k.current)).collect::<Vec<_>>(),
            [("first", true), ("next", false)]
        );
        assert!(listed.iter().all(|k| k.fingerprint.len() == 16) && listed[0].fingerprint != listed[1].fingerprint);
        let before = LocalKeyring::load(&path).unwrap().keys().map(Kek::fingerprint).collect::<Vec<_>>();
        promote_key(&path, "next").unwrap();
        let ring = LocalKeyring::load(&path).unwrap();
        assert_eq!(ring.current().id(), "next");
        assert_eq!(ring.keys().map(Kek::fingerprint).collect::<Vec<_>>(), before, "promotion keeps every key");
        assert!(promote_key(&path, "missing").is_err());
        assert!(add_key(&path, Some("next"), true).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_wrapped_key_unwraps_only_for_the_same_object_and_parameters() {
        let kek = Kek::new("main", [3u8; 32]);
        let dek = DataKey::generate().unwrap();
        let aad = wrap_aad(&kek.reference(), &id("b", "k"), 65536, None, None);
        let w = kek.wrap(&dek, &aad).unwrap();
        assert_eq!(kek.unwrap(&w, &aad).unwrap().expose(), dek.expose());
        for other in [
            wrap_aad(&kek.reference(), &id("b", "k2"), 65536, None, None),
            wrap_aad(&kek.reference(), &id("b2", "k"), 65536, None, None),
            wrap_aad(&kek.reference(), &id("b", "k"), 4096, None, None),
            wrap_aad("keyring:other", &id("b", "k"), 65536, None, None),
            // length prefixes keep ("ab","c") and ("a","bc") apart
            wrap_aad(&kek.reference(), &id("bk", ""), 65536, None, None),
            // a multipart state cannot be added or changed
            wrap_aad(&kek.reference(), &id("b", "k"), 65536, Some("open"), None),
            upload_token_aad(&kek.reference(), &id("b", "k"), 65536, ""),
        ] {
            assert!(kek.unwrap(&w, &other).is_none());
        }
        assert!(Kek::new("main", [4u8; 32]).unwrap(&w, &aad).is_none(), "another KEK");
        let sealed = wrap_aad(&kek.reference(), &id("b", "k"), 65536, Some("3x8388608"), None);
        let w2 = kek.wrap(&dek, &sealed).unwrap();
        assert!(kek.unwrap(&w2, &sealed).is_some());
        assert!(kek.unwrap(&w2, &wrap_aad(&kek.reference(), &id("b", "k"), 65536, Some("2x8388608"), None)).is_none());
        let mut tampered = w.clone();
        tampered[20] ^= 1;
        assert!(kek.unwrap(&tampered, &aad).is_none());
    }

    #[test]
    fn wraps_use_a_one_time_derived_key_and_earlier_wraps_still_open() {
        let kek = Kek::new("main", [3u8; 32]);
        let dek = DataKey::generate().unwrap();
        let aad = wrap_aad(&kek.reference(), &id("b", "k"), 65536, None, None);
        let (a, b) = (kek.wrap(&dek, &aad).unwrap(), kek.wrap(&dek, &aad).unwrap());
        assert_eq!((a.len(), a[0]), (1 + 16 + 12 + 32 + 16, WRAP_V2));
        assert_ne!(a[1..17], b[1..17], "a fresh salt, so a fresh key, per wrap");
        assert_eq!(kek.unwrap(&a, &aad).unwrap().expose(), dek.expose());
        let v1 = kek.wrap_with_nonce(&dek, &aad, [9; 12]);
        assert_eq!(v1.len(), WRAP_V1_LEN);
        assert_eq!(kek.unwrap(&v1, &aad).unwrap().expose(), dek.expose(), "objects wrapped before still read");
        // A version-2 wrap is not a version-1 wrap under the raw key, and cannot be cut down to one.
        assert!(kek.unwrap(&a[1..61], &aad).is_none());
        for i in [0, 1, 20, 40, 76] {
            let mut t = a.clone();
            t[i] ^= 1;
            assert!(kek.unwrap(&t, &aad).is_none(), "byte {i}");
        }
        assert!(kek.unwrap(&a[..a.len() - 1], &aad).is_none());
        let payload = kek.wrap_payload(&a, &aad).unwrap();
        assert_eq!(&kek.unwrap_payload(&payload, &aad).unwrap()[..], &a[..]);
        assert!(kek.unwrap(&payload, &aad).is_none(), "a 77-byte payload is not a data key");
    }

    #[test]
    fn keygen_creates_a_private_keyring_and_adds_keys_that_become_current() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/keyring.toml");
        let a = keygen(&p, Some("first")).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = keygen(&p, None).unwrap();
        let ring = LocalKeyring::load(&p).unwrap();
        assert_eq!(ring.current().id(), b);
        assert!(ring.by_reference(&format!("keyring:{a}")).is_some());
        assert!(ring.by_reference("keyring:nope").is_none());
        assert!(ring.by_reference("kms:first").is_none());
        assert!(keygen(&p, Some("first")).is_err(), "ids are unique");
        assert!(!format!("{ring:?}").contains('='), "no key material in Debug: {ring:?}");
    }

    #[test]
    fn keygen_never_writes_through_a_planted_temporary_file_or_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring.toml");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("keyring.tmp")).unwrap();
        std::fs::write(dir.path().join("keyring.toml.tmp"), "planted").unwrap();
        keygen(&p, Some("a")).unwrap();
        keygen(&p, Some("b")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 4, "no temporary file left behind: {left:?}");
        assert_eq!(LocalKeyring::load(&p).unwrap().current().id(), "b");
    }

    #[test]
    fn a_group_readable_keyring_is_installed_as_a_private_copy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mounted = dir.path().join("secret/keyring.toml");
        let id = keygen(&mounted, Some("k8s")).unwrap();
        std::fs::set_permissions(&mounted, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert!(LocalKeyring::load(&mounted).is_err(), "group-readable: refused");
        let private = dir.path().join("keys/keyring.toml");
        assert_eq!(install_keyring(&mounted, &private).unwrap(), id);
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(LocalKeyring::load(&private).unwrap().current().id(), "k8s");
        std::fs::write(dir.path().join("bad.toml"), "current = 1").unwrap();
        assert!(install_keyring(&dir.path().join("bad.toml"), &dir.path().join("x.toml")).is_err());
        assert!(!dir.path().join("x.toml").exists());
    }

    #[test]
    fn a_keyring_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        keygen(&p, Some("a")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(LocalKeyring::load(&p).unwrap_err().contains("chmod 600"));
    }
}
