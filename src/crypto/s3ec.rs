//! Objects written by the AWS S3 Encryption Client (S3EC), read-only: the content metadata of formats V2 and V3
//! (object metadata, or an instruction file), the data key's unwrap parameters (KMS with an encryption context, or
//! a raw AES-GCM wrapping key), V3's key derivation and key commitment, and the decryption of the body, which is one
//! AES-256-GCM message over the whole object (`ciphertext || tag(16)`): nothing of it is released before the tag
//! verified. docs/S3EC.md describes what the proxy does with these objects; the constants below are AWS's format.

use std::collections::BTreeMap;

use aws_lc_rs::hkdf::{HKDF_SHA512, KeyType, Salt};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::aead::SegmentCipher;
use super::keys::DataKey;

/// User metadata names as S3 returns them.
const META: &str = "x-amz-meta-";

// V2 (and V1) content metadata keys.
const V1_KEY: &str = "x-amz-key";
const V2_KEY: &str = "x-amz-key-v2";
const V2_IV: &str = "x-amz-iv";
const V2_CEK_ALG: &str = "x-amz-cek-alg";
const V2_WRAP_ALG: &str = "x-amz-wrap-alg";
const V2_MATDESC: &str = "x-amz-matdesc";
const V2_TAG_LEN: &str = "x-amz-tag-len";
const UNENCRYPTED_LEN: &str = "x-amz-unencrypted-content-length";
// V3 (compressed) keys.
const V3_SUITE: &str = "x-amz-c";
const V3_KEY: &str = "x-amz-3";
const V3_WRAP: &str = "x-amz-w";
const V3_COMMITMENT: &str = "x-amz-d";
const V3_MESSAGE_ID: &str = "x-amz-i";
const V3_CONTEXT: &str = "x-amz-t";
const V3_MATDESC: &str = "x-amz-m";

/// Every content-metadata key, as it appears after `x-amz-meta-`: hidden from clients.
pub const CONTENT_KEYS: [&str; 15] = [
    V1_KEY,
    V2_KEY,
    V2_IV,
    V2_CEK_ALG,
    V2_WRAP_ALG,
    V2_MATDESC,
    V2_TAG_LEN,
    UNENCRYPTED_LEN,
    V3_SUITE,
    V3_KEY,
    V3_WRAP,
    V3_COMMITMENT,
    V3_MESSAGE_ID,
    V3_CONTEXT,
    V3_MATDESC,
];

/// The V2 content algorithm (the only authenticated one V2 writes).
pub const CEK_ALG_GCM: &str = "AES/GCM/NoPadding";
/// The V3 suite ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY, as stored (decimal) and as bytes (AAD, HKDF info).
pub const SUITE_V3_ID: &str = "115";
const SUITE_V3: [u8; 2] = [0x00, 0x73];
/// The reserved encryption-context key naming the content algorithm.
pub const CONTEXT_CEK_ALG: &str = "aws:x-amz-cek-alg";
/// GCM tag length, bytes.
pub const TAG_LEN: usize = 16;
const IV_LEN: usize = 12;
const MESSAGE_ID_LEN: usize = 28;
const COMMITMENT_LEN: usize = 28;
/// V3: the content IV is fixed (the key is unique per object).
const V3_IV: [u8; IV_LEN] = [0x01; IV_LEN];

/// Why an object's S3EC metadata or body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3ecError(pub &'static str);

/// How the data key is wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    /// `kms+context`: KMS Decrypt with the stored encryption context.
    KmsContext,
    /// A raw 256-bit AES key: `IV(12) || AES-GCM(ciphertext(32) || tag(16))`.
    AesGcm,
}

/// The format and its per-object parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// AES-256-GCM under the data key with a random IV and no AAD.
    V2 { iv: [u8; IV_LEN] },
    /// The content key is derived from the data key and the message ID; `commitment` must match.
    V3 { message_id: [u8; MESSAGE_ID_LEN], commitment: [u8; COMMITMENT_LEN] },
}

/// An object's S3EC content metadata.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub version: Version,
    pub wrap: Wrap,
    /// The encrypted data key.
    pub edk: Vec<u8>,
    /// The KMS encryption context (`kms+context`) or the material description (raw AES), as stored.
    pub context: BTreeMap<String, String>,
    /// `x-amz-unencrypted-content-length`, when written.
    pub unencrypted_len: Option<u64>,
}

/// Whether the object's metadata carries any S3EC content key (then it is an S3EC object, or a broken one).
pub fn has_content_metadata(headers: &HeaderMap) -> bool {
    CONTENT_KEYS.iter().any(|k| headers.contains_key(format!("{META}{k}").as_str()))
}

/// Whether a V3 object keeps its key material in an instruction file (`x-amz-c` without `x-amz-3`).
pub fn needs_instruction_file(headers: &HeaderMap) -> bool {
    let has = |k: &str| headers.contains_key(format!("{META}{k}").as_str());
    has(V3_SUITE) && !has(V3_KEY)
}

/// The S3EC keys among an object's user metadata (`x-amz-meta-` stripped).
pub fn metadata_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in CONTENT_KEYS {
        if let Some(v) = headers.get(format!("{META}{k}").as_str()).and_then(|v| v.to_str().ok()) {
            out.insert(k.to_owned(), v.to_owned());
        }
    }
    out
}

/// Removes the S3EC content metadata from response headers.
pub fn strip_content_metadata(headers: &mut HeaderMap) {
    for k in CONTENT_KEYS {
        headers.remove(format!("{META}{k}").as_str());
    }
}

/// The metadata an instruction file adds: its JSON object, merged over the object's own (V3: the object keeps
/// `x-amz-c`, `x-amz-d`, `x-amz-i`; those may not come from the instruction file).
pub fn merge_instruction_file(
    object: &BTreeMap<String, String>,
    file: &[u8],
) -> Result<BTreeMap<String, String>, S3ecError> {
    let parsed: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(file).map_err(|_| S3ecError("the instruction file is not a JSON object"))?;
    let mut out = object.clone();
    let v3 = object.contains_key(V3_SUITE);
    for (k, v) in parsed {
        if !CONTENT_KEYS.contains(&k.as_str()) {
            continue;
        }
        if v3 && matches!(k.as_str(), V3_SUITE | V3_COMMITMENT | V3_MESSAGE_ID) {
            return Err(S3ecError("the instruction file carries keys that must stay in the object's metadata"));
        }
        let s = match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        out.insert(k, s);
    }
    Ok(out)
}

fn b64(map: &BTreeMap<String, String>, k: &str) -> Result<Vec<u8>, S3ecError> {
    let v = map.get(k).ok_or(S3ecError("S3EC metadata is incomplete"))?;
    B64.decode(v.trim()).map_err(|_| S3ecError("S3EC metadata is not base64"))
}

fn fixed<const N: usize>(map: &BTreeMap<String, String>, k: &str) -> Result<[u8; N], S3ecError> {
    b64(map, k)?.try_into().map_err(|_| S3ecError("S3EC metadata has a field of the wrong length"))
}

/// A JSON object of strings (an encryption context or material description); S3 may have RFC 2047-encoded it.
fn json_map(v: Option<&String>) -> Result<BTreeMap<String, String>, S3ecError> {
    let Some(v) = v else { return Ok(BTreeMap::new()) };
    let text = decode_rfc2047(v.trim()).unwrap_or_else(|| v.trim().to_owned());
    if text.is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(&text).map_err(|_| S3ecError("S3EC encryption context is not a JSON object of strings"))
}

/// `=?UTF-8?B?...?=` (how S3 returns non-ASCII metadata): the decoded text, if `v` is one such word.
fn decode_rfc2047(v: &str) -> Option<String> {
    let inner = v.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let (charset, enc, data) = (parts.next()?, parts.next()?, parts.next()?);
    if !charset.eq_ignore_ascii_case("utf-8") || !enc.eq_ignore_ascii_case("b") {
        return None;
    }
    String::from_utf8(B64.decode(data).ok()?).ok()
}

impl Metadata {
    /// Reads S3EC content metadata (`x-amz-meta-` stripped): `Ok(None)` if there is none; an error for V1,
    /// unauthenticated or unknown algorithms, mixed versions and malformed fields.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Option<Metadata>, S3ecError> {
        let v2 = [V2_KEY, V2_IV, V2_CEK_ALG, V2_WRAP_ALG, V2_MATDESC, V2_TAG_LEN].iter().any(|k| map.contains_key(*k));
        let v3 = [V3_SUITE, V3_KEY, V3_WRAP, V3_COMMITMENT, V3_MESSAGE_ID, V3_CONTEXT, V3_MATDESC]
            .iter()
            .any(|k| map.contains_key(*k));
        let v1 = map.contains_key(V1_KEY);
        let unencrypted_len = match map.get(UNENCRYPTED_LEN) {
            Some(v) => {
                Some(v.trim().parse().map_err(|_| S3ecError("x-amz-unencrypted-content-length is not a number"))?)
            }
            None => None,
        };
        match (v1, v2, v3) {
            (false, false, false) => Ok(None),
            (true, false, false) => Err(S3ecError("S3EC V1 objects (unauthenticated or legacy) are not read")),
            (false, true, false) => Self::parse_v2(map, unencrypted_len).map(Some),
            (false, false, true) => Self::parse_v3(map, unencrypted_len).map(Some),
            _mixed => Err(S3ecError("S3EC metadata mixes format versions")),
        }
    }

    fn parse_v2(map: &BTreeMap<String, String>, unencrypted_len: Option<u64>) -> Result<Metadata, S3ecError> {
        if map.get(V2_CEK_ALG).map(String::as_str) != Some(CEK_ALG_GCM) {
            return Err(S3ecError("S3EC content algorithm is not AES/GCM/NoPadding (CBC objects are not read)"));
        }
        if map.get(V2_TAG_LEN).is_some_and(|t| t.trim() != "128") {
            return Err(S3ecError("S3EC tag length is not 128 bits"));
        }
        let wrap = match map.get(V2_WRAP_ALG).map(String::as_str) {
            Some("kms+context") => Wrap::KmsContext,
            Some("AES/GCM") => Wrap::AesGcm,
            _other => return Err(S3ecError("S3EC key wrap algorithm is not kms+context or AES/GCM")),
        };
        let context = json_map(map.get(V2_MATDESC))?;
        if wrap == Wrap::KmsContext && context.get(CONTEXT_CEK_ALG).map(String::as_str) != Some(CEK_ALG_GCM) {
            return Err(S3ecError("S3EC encryption context does not name the content algorithm"));
        }
        Ok(Metadata {
            version: Version::V2 { iv: fixed(map, V2_IV)? },
            wrap,
            edk: b64(map, V2_KEY)?,
            context,
            unencrypted_len,
        })
    }

    fn parse_v3(map: &BTreeMap<String, String>, unencrypted_len: Option<u64>) -> Result<Metadata, S3ecError> {
        if map.get(V3_SUITE).map(|s| s.trim()) != Some(SUITE_V3_ID) {
            return Err(S3ecError("S3EC content suite is not 115 (AES-256-GCM, HKDF-SHA512, key commitment)"));
        }
        let (wrap, context) = match map.get(V3_WRAP).map(|s| s.trim()) {
            Some("12") => (Wrap::KmsContext, json_map(map.get(V3_CONTEXT))?),
            Some("02") => (Wrap::AesGcm, json_map(map.get(V3_MATDESC))?),
            _other => return Err(S3ecError("S3EC key wrap algorithm is not kms+context (12) or AES/GCM (02)")),
        };
        if wrap == Wrap::KmsContext && context.get(CONTEXT_CEK_ALG).map(String::as_str) != Some(SUITE_V3_ID) {
            return Err(S3ecError("S3EC encryption context does not name the content suite"));
        }
        Ok(Metadata {
            version: Version::V3 { message_id: fixed(map, V3_MESSAGE_ID)?, commitment: fixed(map, V3_COMMITMENT)? },
            wrap,
            edk: b64(map, V3_KEY)?,
            context,
            unencrypted_len,
        })
    }

    /// The AADs a raw AES key wrap may have used: the content cipher's name (`AES/GCM/NoPadding`, the AWS Java
    /// client for V2 and V3); for V3 also the suite id (`115`), which some clients write. GCM authenticates the
    /// wrap, so trying both is safe.
    pub fn wrap_aads(&self) -> &'static [&'static [u8]] {
        const V2: [&[u8]; 1] = [CEK_ALG_GCM.as_bytes()];
        const V3: [&[u8]; 2] = [CEK_ALG_GCM.as_bytes(), SUITE_V3_ID.as_bytes()];
        match self.version {
            Version::V2 { .. } => &V2,
            Version::V3 { .. } => &V3,
        }
    }

    /// The data key, unwrapped by whichever raw AES wrapping key of `ring` opens it (`Wrap::AesGcm` objects).
    pub fn unwrap_aes(&self, ring: &super::keys::LocalKeyring) -> Option<DataKey> {
        ring.keys().find_map(|k| self.wrap_aads().iter().find_map(|aad| k.unwrap(&self.edk, aad)))
    }

    /// The plaintext length of a stored object of `cipher_len` bytes; an error if impossible.
    pub fn plaintext_len(&self, cipher_len: u64) -> Result<u64, S3ecError> {
        let plain =
            cipher_len.checked_sub(TAG_LEN as u64).ok_or(S3ecError("the stored object is shorter than a tag"))?;
        if self.unencrypted_len.is_some_and(|u| u != plain) {
            return Err(S3ecError("the stored object's length does not match x-amz-unencrypted-content-length"));
        }
        Ok(plain)
    }

    /// Decrypts the whole stored object in place (`ciphertext || tag`) with the unwrapped data key; on success
    /// `buf` holds the plaintext. On any failure `buf` is cleared: nothing unauthenticated survives.
    pub fn decrypt_in_place(&self, pdk: &DataKey, buf: &mut Vec<u8>) -> Result<(), S3ecError> {
        let result = self.open(pdk, buf);
        if result.is_err() {
            buf.clear();
        }
        result
    }

    fn open(&self, pdk: &DataKey, buf: &mut Vec<u8>) -> Result<(), S3ecError> {
        if buf.len() < TAG_LEN {
            return Err(S3ecError("the stored object is shorter than a tag"));
        }
        let (key, iv, aad): (Zeroizing<[u8; 32]>, [u8; IV_LEN], &[u8]) = match &self.version {
            Version::V2 { iv } => (Zeroizing::new(*pdk.expose()), *iv, &[]),
            Version::V3 { message_id, commitment } => {
                let (dek, ck) = derive_v3(pdk, message_id);
                if !bool::from(ck.ct_eq(commitment)) {
                    return Err(S3ecError("the S3EC key commitment does not match the data key"));
                }
                (dek, V3_IV, &SUITE_V3[..])
            }
        };
        SegmentCipher::new(&key)
            .open(iv, aad, buf)
            .map_err(|_| S3ecError("the S3EC object does not authenticate (tampered, truncated or wrong key)"))?;
        buf.truncate(buf.len() - TAG_LEN);
        Ok(())
    }
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// V3: `PRK = HKDF-Extract(SHA-512, salt = message ID, ikm = data key)`; content key =
/// `Expand(PRK, 0x0073 || "DERIVEKEY", 32)`; commitment = `Expand(PRK, 0x0073 || "COMMITKEY", 28)`.
pub fn derive_v3(pdk: &DataKey, message_id: &[u8; MESSAGE_ID_LEN]) -> (Zeroizing<[u8; 32]>, [u8; COMMITMENT_LEN]) {
    let prk = Salt::new(HKDF_SHA512, message_id).extract(pdk.expose());
    let mut dek = Zeroizing::new([0u8; 32]);
    let mut ck = [0u8; COMMITMENT_LEN];
    // Expanding at most 64 bytes from SHA-512 always succeeds.
    if let Ok(okm) = prk.expand(&[&SUITE_V3[..], b"DERIVEKEY"], Len(32)) {
        let _ = okm.fill(&mut dek[..]);
    }
    if let Ok(okm) = prk.expand(&[&SUITE_V3[..], b"COMMITKEY"], Len(COMMITMENT_LEN)) {
        let _ = okm.fill(&mut ck[..]);
    }
    (dek, ck)
}

#[cfg(test)]
mod tests {
    //! Known answers computed independently with Python's `cryptography` (AES-GCM, HKDF-SHA512), following the
    //! S3EC specification; the data key is 0x00..0x1f.
    use super::*;
    use crate::crypto::keys::Kek;

    const PLAIN: &[u8] = b"s3crypt reads S3 Encryption Client objects";
    const V2_IV_B64: &str = "ZGVmZ2hpamtsbW5v";
    const V2_CT: &str = "3b28bd14009922be4c073e8ca94539ce62876869f9158306cebec268b8cfcc2dfa9d60af2e78fe678980c3ef729f0ebf\
                         9514a014886a3253df0f";
    const V3_MID: &str = "yMnKy8zNzs/Q0dLT1NXW19jZ2tvc3d7f4OHi4w==";
    const V3_CK: &str = "lj8ehZr4g0HLIx1d3yuw8+EDSOoPDexxfdSXFg==";
    const V3_CT: &str = "d43a32860f7b5d3e441de914cb62ddd72e2c36ec68b3f2165e7152b198eb2ad8d5285f45d08708f7b7ef0657d633150a\
                         d400da0a0a9578b1b025";
    /// The data key wrapped under 0x07 × 32 with AAD "AES/GCM/NoPadding".
    const EDK_AES: &str = "MjM0NTY3ODk6Ozw9zdczDwD97SmB94+K67KlV2Vs4G2aiSTz9WODFUHbJ+3YeXvFRMlzl/adoumP4yTC";

    fn pdk() -> DataKey {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        DataKey::from_bytes(k)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn v2_kms() -> BTreeMap<String, String> {
        map(&[
            (V2_KEY, "AAAA"),
            (V2_IV, V2_IV_B64),
            (V2_CEK_ALG, CEK_ALG_GCM),
            (V2_WRAP_ALG, "kms+context"),
            (V2_MATDESC, "{\"aws:x-amz-cek-alg\": \"AES/GCM/NoPadding\"}"),
            (V2_TAG_LEN, "128"),
        ])
    }

    fn v3(wrap: &str) -> BTreeMap<String, String> {
        map(&[
            (V3_SUITE, "115"),
            (V3_KEY, EDK_AES),
            (V3_WRAP, wrap),
            (V3_MESSAGE_ID, V3_MID),
            (V3_COMMITMENT, V3_CK),
            (V3_CONTEXT, "{\"purpose\": \"test\", \"aws:x-amz-cek-alg\": \"115\"}"),
        ])
    }

    #[test]
    fn a_v2_object_decrypts_to_the_known_plaintext_and_its_size_is_the_ciphertext_minus_the_tag() {
        let meta = Metadata::parse(&v2_kms()).unwrap().unwrap();
        assert_eq!(meta.wrap, Wrap::KmsContext);
        assert_eq!(meta.context.get(CONTEXT_CEK_ALG).map(String::as_str), Some(CEK_ALG_GCM));
        let mut buf = hex::decode(V2_CT).unwrap();
        assert_eq!(meta.plaintext_len(buf.len() as u64).unwrap(), PLAIN.len() as u64);
        meta.decrypt_in_place(&pdk(), &mut buf).unwrap();
        assert_eq!(buf, PLAIN);
    }

    #[test]
    fn a_v3_object_derives_its_key_checks_the_commitment_and_decrypts() {
        let meta = Metadata::parse(&v3("12")).unwrap().unwrap();
        assert_eq!(meta.context.get("purpose").map(String::as_str), Some("test"));
        let mut buf = hex::decode(V3_CT).unwrap();
        meta.decrypt_in_place(&pdk(), &mut buf).unwrap();
        assert_eq!(buf, PLAIN);
    }

    #[test]
    fn a_wrong_commitment_is_refused_before_any_content_is_decrypted() {
        let mut m = v3("12");
        m.insert(V3_COMMITMENT.into(), B64.encode([0u8; COMMITMENT_LEN]));
        let meta = Metadata::parse(&m).unwrap().unwrap();
        let mut buf = hex::decode(V3_CT).unwrap();
        let e = meta.decrypt_in_place(&pdk(), &mut buf).unwrap_err();
        assert!(e.0.contains("commitment"), "{e:?}");
        assert!(buf.is_empty());
    }

    #[test]
    fn tampered_truncated_or_wrongly_keyed_bodies_release_nothing() {
        let meta = Metadata::parse(&v2_kms()).unwrap().unwrap();
        let good = hex::decode(V2_CT).unwrap();
        let mut flipped = good.clone();
        flipped[3] ^= 1;
        let truncated = good[..good.len() - 1].to_vec();
        let mut wrong_key = DataKey::from_bytes([9u8; 32]);
        for (mut buf, key) in
            [(flipped, pdk()), (truncated, pdk()), (good.clone(), std::mem::replace(&mut wrong_key, pdk()))]
        {
            assert!(meta.decrypt_in_place(&key, &mut buf).is_err());
            assert!(buf.is_empty());
        }
        let mut other_iv = v2_kms();
        other_iv.insert(V2_IV.into(), B64.encode([0u8; IV_LEN]));
        let mut buf = good;
        assert!(Metadata::parse(&other_iv).unwrap().unwrap().decrypt_in_place(&pdk(), &mut buf).is_err());
    }

    #[test]
    fn a_raw_aes_wrapped_data_key_opens_with_the_content_cipher_name_as_aad() {
        let meta = Metadata::parse(&v3("02")).unwrap().unwrap();
        assert_eq!(meta.wrap, Wrap::AesGcm);
        let kek = Kek::new("s3ec", [7u8; 32]);
        let dek = meta.wrap_aads().iter().find_map(|aad| kek.unwrap(&meta.edk, aad)).unwrap();
        assert_eq!(dek.expose(), pdk().expose());
        assert!(Kek::new("other", [8u8; 32]).unwrap(&meta.edk, CEK_ALG_GCM.as_bytes()).is_none());
    }

    #[test]
    fn unsupported_mixed_or_malformed_metadata_is_refused_and_other_objects_are_not_s3ec() {
        assert!(Metadata::parse(&map(&[("other", "x")])).unwrap().is_none());
        let mut cbc = v2_kms();
        cbc.insert(V2_CEK_ALG.into(), "AES/CBC/PKCS5Padding".into());
        let mut mixed = v2_kms();
        mixed.insert(V3_SUITE.into(), "115".into());
        let mut rsa = v2_kms();
        rsa.insert(V2_WRAP_ALG.into(), "RSA-OAEP-SHA1".into());
        let mut short_iv = v2_kms();
        short_iv.insert(V2_IV.into(), "AAAA".into());
        let mut no_cek_in_context = v2_kms();
        no_cek_in_context.insert(V2_MATDESC.into(), "{}".into());
        let v1 = map(&[(V1_KEY, "AAAA"), (V2_IV, V2_IV_B64)]);
        let mut suite = v3("12");
        suite.insert(V3_SUITE.into(), "114".into());
        for bad in [cbc, mixed, rsa, short_iv, no_cek_in_context, v1, suite] {
            assert!(Metadata::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_declared_plaintext_length_must_match_the_stored_length() {
        let mut m = v2_kms();
        m.insert(UNENCRYPTED_LEN.into(), "42".into());
        let meta = Metadata::parse(&m).unwrap().unwrap();
        assert_eq!(meta.plaintext_len(58).unwrap(), 42);
        assert!(meta.plaintext_len(59).is_err());
        assert!(meta.plaintext_len(15).is_err());
    }

    #[test]
    fn instruction_files_add_key_material_but_may_not_replace_the_committed_fields() {
        let object = map(&[(V3_SUITE, "115"), (V3_MESSAGE_ID, V3_MID), (V3_COMMITMENT, V3_CK)]);
        let file = format!(r#"{{"x-amz-3": "{EDK_AES}", "x-amz-w": "02", "x-amz-m": "{{}}", "unrelated": 1}}"#);
        let merged = merge_instruction_file(&object, file.as_bytes()).unwrap();
        let meta = Metadata::parse(&merged).unwrap().unwrap();
        assert_eq!(meta.wrap, Wrap::AesGcm);
        assert!(!merged.contains_key("unrelated"));
        let sneaky = format!(r#"{{"x-amz-3": "{EDK_AES}", "x-amz-w": "02", "x-amz-d": "AAAA"}}"#);
        assert!(merge_instruction_file(&object, sneaky.as_bytes()).is_err());
        assert!(merge_instruction_file(&object, b"not json").is_err());
    }

    #[test]
    fn rfc2047_encoded_contexts_are_read() {
        let encoded = format!("=?UTF-8?B?{}?=", B64.encode("{\"k\": \"v\u{e9}\", \"aws:x-amz-cek-alg\": \"115\"}"));
        let mut m = v3("12");
        m.insert(V3_CONTEXT.into(), encoded);
        let meta = Metadata::parse(&m).unwrap().unwrap();
        assert_eq!(meta.context.get("k").map(String::as_str), Some("v\u{e9}"));
    }
}
