//! Sealed attributes: what the proxy knows about an object's plaintext before its body is sent (the MD5 a client
//! declared in Content-MD5, the checksum it declared in an `x-amz-checksum-*` header), stored encrypted in the
//! envelope (`x-amz-meta-s3crypt-at`, docs/FORMAT.md §8) so that reads can answer with S3's ETag and checksum.
//! The store sees neither: an MD5 of the plaintext would let it confirm a guessed content.
//!
//! The record list is sealed like a version-2 data-key wrap with the data key as the wrapping key, under an AAD
//! that names the object, so attributes neither open under another key nor move to another object.

use super::error::CryptoError;
use super::format::{ATTR_CHECKSUM, ATTR_CHECKSUM_IDS, ATTR_MD5, ATTRIBUTES_AAD_LABEL};
use super::keys::{DataKey, ObjectIdentity, open_wrap, seal_wrap};
use crate::s3::checksum::ChecksumAlgorithm;

/// The plaintext attributes of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub md5: Option<[u8; 16]>,
    /// The full-object checksum the client declared (and the proxy verified) at upload.
    pub checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
}

const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

fn algorithm_id(alg: ChecksumAlgorithm) -> u8 {
    let i = ALGORITHMS.iter().position(|a| *a == alg).unwrap_or(0);
    ATTR_CHECKSUM_IDS[i]
}

/// The AAD: label, then the length-prefixed (u32 big-endian) bucket and key.
pub fn attributes_aad(id: &ObjectIdentity) -> Vec<u8> {
    let mut aad = ATTRIBUTES_AAD_LABEL.to_vec();
    for f in [id.bucket.as_bytes(), id.key.as_bytes()] {
        aad.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(f);
    }
    aad
}

impl Attributes {
    pub fn is_empty(&self) -> bool {
        self.md5.is_none() && self.checksum.is_none()
    }

    /// The record list: `type (1 byte) || length (1 byte) || value` per attribute.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(m) = &self.md5 {
            out.extend_from_slice(&[ATTR_MD5, 16]);
            out.extend_from_slice(m);
        }
        if let Some((alg, digest)) = &self.checksum {
            out.extend_from_slice(&[ATTR_CHECKSUM, (digest.len() + 1) as u8, algorithm_id(*alg)]);
            out.extend_from_slice(digest);
        }
        out
    }

    /// Parses a record list; records of unknown types are skipped (they are authenticated all the same).
    pub fn decode(mut b: &[u8]) -> Option<Attributes> {
        let mut a = Attributes::default();
        while !b.is_empty() {
            let (&[t, len], rest) = b.split_first_chunk::<2>()?;
            let (value, rest) = rest.split_at_checked(usize::from(len))?;
            match t {
                ATTR_MD5 => a.md5 = Some(value.try_into().ok()?),
                ATTR_CHECKSUM => {
                    let (&id, digest) = value.split_first()?;
                    let i = ATTR_CHECKSUM_IDS.iter().position(|x| *x == id)?;
                    a.checksum = Some((ALGORITHMS[i], digest.to_vec()));
                }
                _ => {}
            }
            b = rest;
        }
        Some(a)
    }

    /// Seals the attributes of the object `id` under its data key.
    pub fn seal(&self, dek: &DataKey, id: &ObjectIdentity) -> Result<Vec<u8>, CryptoError> {
        seal_wrap(dek.expose(), &self.encode(), &attributes_aad(id))
    }

    /// Opens sealed attributes; an integrity error if they were not sealed for this object under this key.
    pub fn open(sealed: &[u8], dek: &DataKey, id: &ObjectIdentity) -> Result<Attributes, CryptoError> {
        let plain = open_wrap(dek.expose(), sealed, &attributes_aad(id))
            .ok_or(CryptoError::Integrity("the sealed attributes do not open for this object"))?;
        Attributes::decode(&plain).ok_or(CryptoError::Integrity("the sealed attributes are malformed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> ObjectIdentity {
        ObjectIdentity { bucket: "b".into(), key: key.into() }
    }

    #[test]
    fn attributes_round_trip_and_open_only_for_their_object_and_key() {
        let dek = DataKey::generate().unwrap();
        let a = Attributes { md5: Some([7; 16]), checksum: Some((ChecksumAlgorithm::Crc64Nvme, vec![1; 8])) };
        let sealed = a.seal(&dek, &id("k")).unwrap();
        assert_eq!(Attributes::open(&sealed, &dek, &id("k")).unwrap(), a);
        assert!(Attributes::open(&sealed, &dek, &id("other")).is_err());
        assert!(Attributes::open(&sealed, &DataKey::generate().unwrap(), &id("k")).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(Attributes::open(&bad, &dek, &id("k")).is_err());
        // unknown record types are skipped; truncated records are refused
        assert_eq!(
            Attributes::decode(&[9, 2, 0, 0, ATTR_MD5, 16, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
                .unwrap()
                .md5,
            Some([3; 16])
        );
        assert!(Attributes::decode(&[ATTR_MD5, 16, 1]).is_none());
        assert_eq!(Attributes::decode(&[]), Some(Attributes::default()));
    }
}
