//! SigV4: verifying what clients send (header and presigned), decoding aws-chunked bodies, checking payload
//! hashes as bodies stream, and re-signing requests for upstream.
//!
//! Signatures are a type without `PartialEq`: the only comparison is the constant-time [`Signature::ct_eq`].

pub mod canonical;
pub mod chunked;
pub mod chunked_encode;
pub mod credentials;
pub mod error;
pub mod payload;
pub mod post;
pub mod sign;
pub mod v2;
pub mod verify;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The algorithm line of header and presigned SigV4.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// SigV4a, which the proxy refuses.
pub const ALGORITHM_ECDSA: &str = "AWS4-ECDSA-P256-SHA256";
/// Longest validity of a presigned URL (7 days), as S3; SigV2 `Expires` too.
pub const MAX_PRESIGNED_EXPIRY_SECS: u64 = 604_800;
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_UNSIGNED_PAYLOAD_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
pub const STREAMING_SIGNED_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_PAYLOAD_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_ECDSA_PREFIX: &str = "STREAMING-AWS4-ECDSA-P256-SHA256-";
/// SHA-256 of the empty string.
pub const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// A 32-byte HMAC-SHA256 signature. Deliberately not `PartialEq`.
#[derive(Clone)]
pub struct Signature([u8; 32]);

impl Signature {
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Signature> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Signature(b))
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Signature) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature([REDACTED])")
    }
}

/// The derived SigV4 signing key for one (secret, date, region, service). Zeroized on drop.
pub struct SigningKey(Zeroizing<Vec<u8>>);

impl SigningKey {
    pub fn derive(secret: &str, time: SystemTime, region: &str) -> SigningKey {
        let key = aws_sigv4::sign::v4::generate_signing_key(secret, time, region, "s3");
        SigningKey(Zeroizing::new(key.as_ref().to_vec()))
    }

    /// HMAC-SHA256 of a string to sign.
    pub fn sign(&self, string_to_sign: &[u8]) -> Signature {
        let hex_sig = aws_sigv4::sign::v4::calculate_signature(&*self.0, string_to_sign);
        let mut b = [0u8; 32];
        // calculate_signature always returns 64 hex digits
        let _ = hex::decode_to_slice(hex_sig, &mut b);
        Signature(b)
    }
}

/// Access keys whose signing keys are kept (more: the cache starts over).
const MAX_SIGNING_KEYS: usize = 1024;

/// Signing keys derived once per access key and UTC date (`YYYYMMDD`) rather than once per request (two HMAC
/// chains of four steps each). One entry per access key: a request for another date replaces it.
#[derive(Debug, Default)]
pub struct SigningKeys(Mutex<HashMap<String, (String, Arc<SigningKey>)>>);

impl SigningKeys {
    /// The key of `secret` for `date`, the date of `time` (`YYYYMMDD`), derived on first use.
    pub fn get(
        &self,
        access_key_id: &str,
        secret: &str,
        date: &str,
        time: SystemTime,
        region: &str,
    ) -> Arc<SigningKey> {
        let mut keys = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((d, k)) = keys.get(access_key_id)
            && d == date
        {
            return Arc::clone(k);
        }
        let k = Arc::new(SigningKey::derive(secret, time, region));
        if keys.len() >= MAX_SIGNING_KEYS {
            // Temporary store credentials bring a new access key with each refresh: never an unbounded map.
            keys.clear();
        }
        keys.insert(access_key_id.to_owned(), (date.to_owned(), Arc::clone(&k)));
        k
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn the_empty_sha256_constant_is_right() {
        assert_eq!(sha2::Sha256::digest(b"").as_slice(), &EMPTY_SHA256);
    }

    #[test]
    fn signatures_compare_in_constant_time_and_print_redacted() {
        let a = Signature::from_hex(&"ab".repeat(32)).unwrap();
        let b = Signature::from_hex(&"ab".repeat(32)).unwrap();
        let c = Signature::from_hex(&"ac".repeat(32)).unwrap();
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&c));
        assert!(Signature::from_hex("zz").is_none());
        assert!(!format!("{a:?}").contains("ab"));
    }
}
