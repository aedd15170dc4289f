//! Sealed attributes: what the proxy knows about an object's plaintext before its body is sent (the MD5 a client
//! declared in Content-MD5, the checksum it declared in an `x-amz-checksum-*` header), stored encrypted in the
//! envelope (`x-amz-meta-s3crypt-at`, docs/FORMAT.md §8) so that reads can answer with S3's ETag and checksum.
//! The store sees neither: an MD5 of the plaintext would let it confirm a guessed content.
//!
//! The record list is sealed like a version-2 data-key wrap with the data key as the wrapping key, under an AAD
//! that names the object, so attributes neither open under another key nor move to another object.

use super::error::CryptoError;
use super::format::{
    ATTR_CHECKSUM, ATTR_CHECKSUM_IDS, ATTR_COMPOSITE_CHECKSUM, ATTR_MD5, ATTR_MULTIPART_MD5, ATTRIBUTES_AAD_LABEL,
    PART_ATTRIBUTES_AAD_LABEL,
};
use super::keys::{DataKey, ObjectIdentity, open_wrap, seal_wrap};
use crate::s3::checksum::ChecksumAlgorithm;

/// The plaintext attributes of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub md5: Option<[u8; 16]>,
    /// The full-object checksum the client declared (and the proxy verified) at upload, or the one a Complete
    /// combined from its parts' CRCs.
    pub checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
    /// An object completed from parts: its part count and the MD5 of its parts' MD5s (S3's multipart ETag).
    pub multipart_md5: Option<(u32, [u8; 16])>,
    /// An object completed from parts: its part count, and the checksum of its parts' checksums.
    pub composite: Option<(u32, ChecksumAlgorithm, Vec<u8>)>,
}

/// A checksum as S3 shows it: its algorithm, its value (`<base64>` or `<base64>-<parts>`) and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownChecksum {
    pub algorithm: ChecksumAlgorithm,
    pub value: String,
    /// `FULL_OBJECT` or `COMPOSITE`.
    pub kind: &'static str,
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

fn algorithm_of(id: u8) -> Option<ChecksumAlgorithm> {
    ATTR_CHECKSUM_IDS.iter().position(|x| *x == id).map(|i| ALGORITHMS[i])
}

fn push_field(aad: &mut Vec<u8>, f: &[u8]) {
    aad.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
    aad.extend_from_slice(f);
}

/// The AAD: label, then the length-prefixed (u32 big-endian) bucket and key.
pub fn attributes_aad(id: &ObjectIdentity) -> Vec<u8> {
    let mut aad = ATTRIBUTES_AAD_LABEL.to_vec();
    for f in [id.bucket.as_bytes(), id.key.as_bytes()] {
        push_field(&mut aad, f);
    }
    aad
}

/// The AAD of a part's attributes: label, then the length-prefixed bucket, key, upstream upload ID and the store's
/// ETag of the part (unquoted), and the part number (u32 big-endian).
pub fn part_attributes_aad(id: &ObjectIdentity, upstream_id: &str, part: u32, store_etag: &str) -> Vec<u8> {
    let mut aad = PART_ATTRIBUTES_AAD_LABEL.to_vec();
    for f in [id.bucket.as_bytes(), id.key.as_bytes(), upstream_id.as_bytes(), store_etag.as_bytes()] {
        push_field(&mut aad, f);
    }
    aad.extend_from_slice(&part.to_be_bytes());
    aad
}

impl Attributes {
    pub fn is_empty(&self) -> bool {
        self.md5.is_none() && self.checksum.is_none() && self.multipart_md5.is_none() && self.composite.is_none()
    }

    /// The checksum S3 shows for the object: full-object, else composite.
    pub fn shown_checksum(&self) -> Option<ShownChecksum> {
        use crate::s3::checksum::encode_value;
        if let Some((algorithm, digest)) = &self.checksum {
            return Some(ShownChecksum { algorithm: *algorithm, value: encode_value(digest), kind: "FULL_OBJECT" });
        }
        let (parts, algorithm, digest) = self.composite.as_ref()?;
        let value = format!("{}-{parts}", encode_value(digest));
        Some(ShownChecksum { algorithm: *algorithm, value, kind: "COMPOSITE" })
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
        if let Some((parts, digest)) = &self.multipart_md5 {
            out.extend_from_slice(&[ATTR_MULTIPART_MD5, 20]);
            out.extend_from_slice(&parts.to_be_bytes());
            out.extend_from_slice(digest);
        }
        if let Some((parts, alg, digest)) = &self.composite {
            out.extend_from_slice(&[ATTR_COMPOSITE_CHECKSUM, (digest.len() + 5) as u8]);
            out.extend_from_slice(&parts.to_be_bytes());
            out.push(algorithm_id(*alg));
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
                    a.checksum = Some((algorithm_of(id)?, digest.to_vec()));
                }
                ATTR_MULTIPART_MD5 => {
                    let (count, digest) = value.split_first_chunk::<4>()?;
                    a.multipart_md5 = Some((u32::from_be_bytes(*count), digest.try_into().ok()?));
                }
                ATTR_COMPOSITE_CHECKSUM => {
                    let (count, rest) = value.split_first_chunk::<4>()?;
                    let (&id, digest) = rest.split_first()?;
                    a.composite = Some((u32::from_be_bytes(*count), algorithm_of(id)?, digest.to_vec()));
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

    /// Seals the attributes of part `part` of upstream upload `upstream_id` (stored by the store as `store_etag`)
    /// under the upload's data key.
    pub fn seal_part(
        &self,
        dek: &DataKey,
        id: &ObjectIdentity,
        upstream_id: &str,
        part: u32,
        store_etag: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        seal_wrap(dek.expose(), &self.encode(), &part_attributes_aad(id, upstream_id, part, store_etag))
    }

    /// Opens a part's sealed attributes; `None` unless they were sealed for exactly this part.
    pub fn open_part(
        sealed: &[u8],
        dek: &DataKey,
        id: &ObjectIdentity,
        upstream_id: &str,
        part: u32,
        store_etag: &str,
    ) -> Option<Attributes> {
        let plain = open_wrap(dek.expose(), sealed, &part_attributes_aad(id, upstream_id, part, store_etag))?;
        Attributes::decode(&plain)
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
        let a = Attributes {
            md5: Some([7; 16]),
            checksum: Some((ChecksumAlgorithm::Crc64Nvme, vec![1; 8])),
            multipart_md5: Some((3, [9; 16])),
            composite: Some((3, ChecksumAlgorithm::Sha256, vec![4; 32])),
        };
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

    #[test]
    fn part_attributes_open_only_for_their_upload_part_and_stored_etag() {
        let dek = DataKey::generate().unwrap();
        let a = Attributes { md5: Some([1; 16]), ..Attributes::default() };
        let sealed = a.seal_part(&dek, &id("k"), "up-1", 2, "abc").unwrap();
        assert_eq!(Attributes::open_part(&sealed, &dek, &id("k"), "up-1", 2, "abc"), Some(a));
        for (key, up, part, etag) in
            [("x", "up-1", 2, "abc"), ("k", "up-2", 2, "abc"), ("k", "up-1", 3, "abc"), ("k", "up-1", 2, "abd")]
        {
            assert_eq!(Attributes::open_part(&sealed, &dek, &id(key), up, part, etag), None);
        }
        assert!(Attributes::open(&sealed, &dek, &id("k")).is_err(), "a part's attributes are not an object's");
    }

    #[test]
    fn checksums_show_as_s3_shows_full_object_and_composite_ones() {
        let full = Attributes { checksum: Some((ChecksumAlgorithm::Crc32, vec![0, 0, 0, 1])), ..Default::default() };
        assert_eq!(full.shown_checksum().unwrap().value, "AAAAAQ==");
        assert_eq!(full.shown_checksum().unwrap().kind, "FULL_OBJECT");
        let composite = Attributes { composite: Some((3, ChecksumAlgorithm::Sha1, vec![0; 20])), ..Default::default() };
        let shown = composite.shown_checksum().unwrap();
        assert_eq!((shown.value.as_str(), shown.kind), ("AAAAAAAAAAAAAAAAAAAAAAAAAAA=-3", "COMPOSITE"));
    }
}
