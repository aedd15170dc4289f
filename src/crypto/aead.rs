//! The segment AEAD (AES-256-GCM), in place with a detached tag. aws-lc-rs by default (15 GB/s per core here);
//! RustCrypto's `aes-gcm` with the `rustcrypto-aead` feature (4.5 GB/s). Both are checked against the same
//! known-answer vectors.

use super::format::TAG_LEN;

/// A keyed AES-256-GCM instance.
pub struct SegmentCipher {
    #[cfg(not(feature = "rustcrypto-aead"))]
    key: aws_lc_rs::aead::LessSafeKey,
    #[cfg(feature = "rustcrypto-aead")]
    key: aes_gcm::Aes256Gcm,
}

/// Authentication failed (tampered, truncated, misplaced or wrong key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

impl SegmentCipher {
    #[cfg(not(feature = "rustcrypto-aead"))]
    pub fn new(key: &[u8; 32]) -> SegmentCipher {
        use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
        // A 32-byte key is always valid for AES-256-GCM.
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!("AES-256 key length"));
        SegmentCipher { key: LessSafeKey::new(unbound) }
    }

    #[cfg(feature = "rustcrypto-aead")]
    pub fn new(key: &[u8; 32]) -> SegmentCipher {
        use aes_gcm::KeyInit;
        SegmentCipher { key: aes_gcm::Aes256Gcm::new(&(*key).into()) }
    }

    /// Encrypts `buf` in place and returns the tag.
    #[cfg(not(feature = "rustcrypto-aead"))]
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use aws_lc_rs::aead::{Aad, Nonce};
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .unwrap_or_else(|_| unreachable!("AES-GCM sealing only fails past 64 GiB per message"));
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    #[cfg(feature = "rustcrypto-aead")]
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use aes_gcm::AeadInOut;
        let tag = self
            .key
            .encrypt_inout_detached(&nonce.into(), aad, buf.into())
            .unwrap_or_else(|_| unreachable!("AES-GCM sealing only fails past 64 GiB per message"));
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        out
    }

    /// Encrypts `input` into `out` (same length) and returns the tag, without touching `input`.
    #[cfg(not(feature = "rustcrypto-aead"))]
    pub fn seal_to(&self, nonce: [u8; 12], aad: &[u8], input: &[u8], out: &mut [u8]) -> [u8; TAG_LEN] {
        use aws_lc_rs::aead::{Aad, Nonce};
        let mut tag = [0u8; TAG_LEN];
        self.key
            .seal_out_of_place_scatter(Nonce::assume_unique_for_key(nonce), Aad::from(aad), input, out, &[], &mut tag)
            .unwrap_or_else(|_| unreachable!("AES-GCM sealing only fails past 64 GiB per message"));
        tag
    }

    #[cfg(feature = "rustcrypto-aead")]
    pub fn seal_to(&self, nonce: [u8; 12], aad: &[u8], input: &[u8], out: &mut [u8]) -> [u8; TAG_LEN] {
        out.copy_from_slice(input);
        self.seal(nonce, aad, out)
    }

    /// Decrypts `ciphertext` with `tag` into `out` (same length), without touching the input.
    #[cfg(not(feature = "rustcrypto-aead"))]
    pub fn open_to(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), OpenError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        self.key
            .open_separate_gather(Nonce::assume_unique_for_key(nonce), Aad::from(aad), ciphertext, tag, out)
            .map_err(|_| OpenError)
    }

    #[cfg(feature = "rustcrypto-aead")]
    pub fn open_to(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), OpenError> {
        use aes_gcm::AeadInOut;
        out.copy_from_slice(ciphertext);
        let mut t = aes_gcm::aead::Tag::<aes_gcm::Aes256Gcm>::default();
        if tag.len() != TAG_LEN {
            return Err(OpenError);
        }
        t.copy_from_slice(tag);
        let r = self.key.decrypt_inout_detached(&nonce.into(), aad, (&mut *out).into(), &t).map_err(|_| OpenError);
        if r.is_err() {
            out.fill(0);
        }
        r
    }

    /// Decrypts `ct_and_tag` (ciphertext followed by its tag) in place; on success the first
    /// `len - TAG_LEN` bytes are the plaintext.
    #[cfg(not(feature = "rustcrypto-aead"))]
    pub fn open(&self, nonce: [u8; 12], aad: &[u8], ct_and_tag: &mut [u8]) -> Result<(), OpenError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        self.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), ct_and_tag)
            .map(|_| ())
            .map_err(|_| OpenError)
    }

    #[cfg(feature = "rustcrypto-aead")]
    pub fn open(&self, nonce: [u8; 12], aad: &[u8], ct_and_tag: &mut [u8]) -> Result<(), OpenError> {
        use aes_gcm::AeadInOut;
        if ct_and_tag.len() < TAG_LEN {
            return Err(OpenError);
        }
        let (ct, tag) = ct_and_tag.split_at_mut(ct_and_tag.len() - TAG_LEN);
        let mut t = aes_gcm::aead::Tag::<aes_gcm::Aes256Gcm>::default();
        t.copy_from_slice(tag);
        self.key.decrypt_inout_detached(&nonce.into(), aad, ct.into(), &t).map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_then_opening_round_trips_and_any_flip_fails() {
        let c = SegmentCipher::new(&[7u8; 32]);
        let mut buf = b"attack at dawn".to_vec();
        let tag = c.seal([1; 12], b"aad", &mut buf);
        assert_ne!(&buf[..], b"attack at dawn");
        let mut sealed = buf.clone();
        sealed.extend_from_slice(&tag);
        let mut ok = sealed.clone();
        c.open([1; 12], b"aad", &mut ok).unwrap();
        assert_eq!(&ok[..14], b"attack at dawn");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x80;
            assert_eq!(c.open([1; 12], b"aad", &mut bad), Err(OpenError), "flip at {i}");
        }
        let mut wrong_aad = sealed.clone();
        assert_eq!(c.open([1; 12], b"aaD", &mut wrong_aad), Err(OpenError));
        let mut wrong_nonce = sealed;
        assert_eq!(c.open([2; 12], b"aad", &mut wrong_nonce), Err(OpenError));
    }

    #[test]
    fn out_of_place_sealing_and_opening_match_in_place() {
        let c = SegmentCipher::new(&[5u8; 32]);
        let input = b"some plaintext of a segment".to_vec();
        let mut in_place = input.clone();
        let tag1 = c.seal([3; 12], b"h", &mut in_place);
        let mut out = vec![0u8; input.len()];
        let tag2 = c.seal_to([3; 12], b"h", &input, &mut out);
        assert_eq!((out.clone(), tag1), (in_place, tag2));
        let mut plain = vec![0u8; out.len()];
        c.open_to([3; 12], b"h", &out, &tag2, &mut plain).unwrap();
        assert_eq!(plain, input);
        let mut bad = tag2;
        bad[0] ^= 1;
        assert_eq!(c.open_to([3; 12], b"h", &out, &bad, &mut plain), Err(OpenError));
    }

    /// NIST SP 800-38D / McGrew-Viega GCM test case 14: AES-256, zero key, zero IV, one zero block.
    #[test]
    fn the_gcm_standard_vector_matches() {
        let c = SegmentCipher::new(&[0u8; 32]);
        let mut buf = [0u8; 16];
        let tag = c.seal([0; 12], b"", &mut buf);
        assert_eq!(hex::encode(buf), "cea7403d4d606b6e074ec5d3baf39d18");
        assert_eq!(hex::encode(tag), "d0d1c8a799996bf0265b98b5d48ab919");
    }
}
