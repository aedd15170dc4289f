//! The s3crypt ciphertext format, version 1: constants, segment header layout, nonces, key-derivation labels,
//! metadata names and the size arithmetic. Specified in docs/FORMAT.md and pinned by the known-answer vectors
//! in tests/fixtures/crypto/.
//!
//! DO NOT CHANGE anything in this file: every object ever written depends on it. A new format gets a new
//! version number and new code next to this one.

/// Format version, in every segment header and in the object metadata. DO NOT CHANGE.
pub const FORMAT_VERSION: u8 = 1;
/// Default plaintext bytes per segment (the last segment of a stream may be shorter). DO NOT CHANGE.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Segment header length. DO NOT CHANGE.
pub const HEADER_LEN: usize = 16;
/// AES-GCM tag length. DO NOT CHANGE.
pub const TAG_LEN: usize = 16;
/// Bytes a segment adds to its plaintext (header + tag). DO NOT CHANGE.
pub const SEGMENT_OVERHEAD: u64 = (HEADER_LEN + TAG_LEN) as u64;
/// Header flag: this is the last segment of its stream. DO NOT CHANGE.
pub const FLAG_FINAL: u8 = 0x01;
/// Random per-stream salt length (in every segment header). DO NOT CHANGE.
pub const SALT_LEN: usize = 8;
/// Data-key length (AES-256). DO NOT CHANGE.
pub const DEK_LEN: usize = 32;
/// The part number of a stream written by a single PutObject. DO NOT CHANGE.
pub const SINGLE_PUT_PART: u16 = 0;
/// HKDF-SHA256 `info` prefix of stream keys (followed by the big-endian part number). DO NOT CHANGE.
pub const STREAM_KEY_INFO: &[u8] = b"s3crypt/v1 stream key";
/// First field of the data-key wrapping AAD. DO NOT CHANGE.
pub const WRAP_AAD_LABEL: &[u8] = b"s3crypt/v1 dek wrap";
/// Nonce length of the data-key wrapping (AES-256-GCM). DO NOT CHANGE.
pub const WRAP_NONCE_LEN: usize = 12;

/// Reserved user-metadata prefix (as HTTP header names). Clients may not set it; it is never returned.
pub const META_PREFIX: &str = "x-amz-meta-s3crypt-";
/// Format version of the object. DO NOT CHANGE.
pub const META_VERSION: &str = "x-amz-meta-s3crypt-v";
/// Plaintext segment size of the object. DO NOT CHANGE.
pub const META_SEGMENT_SIZE: &str = "x-amz-meta-s3crypt-seg";
/// Which key-encryption key wrapped the data key (`keyring:<id>`). DO NOT CHANGE.
pub const META_KEK: &str = "x-amz-meta-s3crypt-kek";
/// The wrapped data key, standard base64. DO NOT CHANGE.
pub const META_DEK: &str = "x-amz-meta-s3crypt-dek";
/// Multipart state of the object: `open` (uploaded by parts, not yet sealed) or `<parts>x<part size>` (sealed:
/// `parts` parts of `part size` plaintext bytes each but the last). Absent for single-PUT objects. DO NOT CHANGE.
pub const META_MULTIPART: &str = "x-amz-meta-s3crypt-mp";
/// KMS bucket-key mode: standard base64 of the KMS ciphertext blob of the bucket key that wrapped the data key.
/// DO NOT CHANGE.
pub const META_BUCKET_KEY: &str = "x-amz-meta-s3crypt-bk";
/// The client's SSE-KMS encryption context, as it sent it (base64 of JSON). DO NOT CHANGE.
pub const META_CONTEXT: &str = "x-amz-meta-s3crypt-ctx";
/// Key-reference scheme of AWS KMS keys (`kms:<key ARN>`). DO NOT CHANGE.
pub const KEK_SCHEME_KMS: &str = "kms";
/// Key reference of objects whose data key is wrapped under the client's SSE-C key. DO NOT CHANGE.
pub const KEK_REF_SSE_C: &str = "sse-c";
/// Prefix of the wrap-AAD field that carries the client's SSE-KMS encryption context. DO NOT CHANGE.
pub const WRAP_AAD_CONTEXT_PREFIX: &str = "ctx:";
/// The `x-amz-meta-s3crypt-mp` value of a multipart upload in progress (or completed, not yet sealed). DO NOT CHANGE.
pub const MULTIPART_OPEN: &str = "open";
/// Largest part count of a multipart upload (S3's limit). DO NOT CHANGE.
pub const MAX_PARTS: u32 = 10_000;
/// First field of the AAD of the data-key wrap carried in a multipart upload ID. DO NOT CHANGE.
pub const UPLOAD_TOKEN_AAD_LABEL: &[u8] = b"s3crypt/v1 upload token";
/// Prefix of the upload IDs earlier versions handed out: `s3c1.<b64url kek ref>.<b64url token>.<upstream upload id>`
/// (no longer accepted for parts or Complete: they do not bind the upload's protection). DO NOT CHANGE.
pub const UPLOAD_ID_PREFIX: &str = "s3c1.";
/// Key-reference scheme of the local keyring. DO NOT CHANGE.
pub const KEK_SCHEME_KEYRING: &str = "keyring";
/// Prefix hashed before a keyring key into its fingerprint, `hex(SHA-256(label || key)[..8])`, which operators
/// compare across replicas and backups (docs/FORMAT.md §1). Not stored with objects. DO NOT CHANGE.
pub const KEK_FINGERPRINT_LABEL: &[u8] = b"s3crypt/v1 keyring key fingerprint\0";

// --- Added with the second wrap layout and upload-ID version (docs/FORMAT.md §2 "Wrapped DEK", §7 "Upload IDs").
// The object format stays version 1: readers accept both wrap layouts; writers write the second.

/// First byte of a version-2 wrap (a wrap under a per-wrap derived key). DO NOT CHANGE.
pub const WRAP_V2: u8 = 0x02;
/// Random salt of a version-2 wrap, from which its one-time key is derived. DO NOT CHANGE.
pub const WRAP_V2_SALT_LEN: usize = 16;
/// HKDF-SHA256 `info` of a version-2 wrap's key. DO NOT CHANGE.
pub const WRAP_V2_KEY_INFO: &[u8] = b"s3crypt/v1 wrap key";
/// Length of a version-1 wrap of a data key (nonce, 32 bytes, tag): the only length a version-1 wrap has. DO NOT CHANGE.
pub const WRAP_V1_LEN: usize = WRAP_NONCE_LEN + DEK_LEN + TAG_LEN;
/// Prefix of the upload IDs s3crypt hands out since upload IDs bind the protection:
/// `s3c2.<b64url kek ref>.<b64url protection>.<b64url token>.<upstream upload id>`. DO NOT CHANGE.
pub const UPLOAD_ID_PREFIX_V2: &str = "s3c2.";
/// First field of the AAD of a version-2 upload token. DO NOT CHANGE.
pub const UPLOAD_TOKEN_V2_AAD_LABEL: &[u8] = b"s3crypt/v1 upload token v2";

// --- Added with sealed attributes (docs/FORMAT.md §8). Old readers ignore the field.

/// Sealed plaintext attributes of the object (its MD5, its checksum): standard base64 of a version-2 wrap (§2)
/// made with the data key itself as the wrapping key. DO NOT CHANGE.
pub const META_ATTRIBUTES: &str = "x-amz-meta-s3crypt-at";
/// First field of the AAD of the sealed attributes. DO NOT CHANGE.
pub const ATTRIBUTES_AAD_LABEL: &[u8] = b"s3crypt/v1 attributes";
/// Attribute record type: the MD5 of the object's plaintext (16 bytes). DO NOT CHANGE.
pub const ATTR_MD5: u8 = 0x01;
/// Attribute record type: the full-object checksum of the plaintext (algorithm id byte, then the digest). DO NOT
/// CHANGE.
pub const ATTR_CHECKSUM: u8 = 0x02;
/// Checksum algorithm ids in an `ATTR_CHECKSUM` record: CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256. DO NOT CHANGE.
pub const ATTR_CHECKSUM_IDS: [u8; 5] = [1, 2, 3, 4, 5];

// --- Added with multipart ETags and checksums (docs/FORMAT.md §2, §7). Old readers skip unknown record types.

/// Attribute record type: the ETag S3 gives an object assembled from parts, the MD5 of its parts' MD5s: part
/// count (u32 big-endian), then the 16-byte digest; shown as `"<hex>-<count>"`. DO NOT CHANGE.
pub const ATTR_MULTIPART_MD5: u8 = 0x03;
/// Attribute record type: the composite checksum of an object assembled from parts (the checksum of its parts'
/// checksums): part count (u32 big-endian), algorithm id byte, then the digest; shown as `<base64>-<count>`. DO
/// NOT CHANGE.
pub const ATTR_COMPOSITE_CHECKSUM: u8 = 0x04;
/// First field of the AAD of a part's sealed attributes (the part records of an open upload, FORMAT.md §7). DO NOT
/// CHANGE.
pub const PART_ATTRIBUTES_AAD_LABEL: &[u8] = b"s3crypt/v1 part attributes";

// --- Added with bucket settings (docs/FORMAT.md §10).

/// First field of the AAD of a sealed bucket setting (default encryption, bucket policy) in the system bucket. DO
/// NOT CHANGE.
pub const SETTING_AAD_LABEL: &[u8] = b"s3crypt/v1 bucket setting";

/// The 16-byte header in front of every segment: authenticated as the segment's AAD.
///
/// ```text
/// byte 0      version (0x01)
/// byte 1      flags: bit 0 = final segment of its stream; other bits zero
/// bytes 2..4  part number, big-endian (0 = single PutObject; 1..=10000 = multipart part)
/// bytes 4..8  segment index within its stream, big-endian, from 0
/// bytes 8..16 stream salt: 8 random bytes, the same in every segment of one stream
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub last: bool,
    pub part: u16,
    pub index: u32,
    pub salt: [u8; SALT_LEN],
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = FORMAT_VERSION;
        h[1] = if self.last { FLAG_FINAL } else { 0 };
        h[2..4].copy_from_slice(&self.part.to_be_bytes());
        h[4..8].copy_from_slice(&self.index.to_be_bytes());
        h[8..16].copy_from_slice(&self.salt);
        h
    }

    /// Parses a header; `None` for an unknown version or flag.
    pub fn decode(h: &[u8]) -> Option<SegmentHeader> {
        if h.len() < HEADER_LEN || h[0] != FORMAT_VERSION || h[1] & !FLAG_FINAL != 0 {
            return None;
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&h[8..16]);
        Some(SegmentHeader {
            last: h[1] & FLAG_FINAL != 0,
            part: u16::from_be_bytes([h[2], h[3]]),
            index: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            salt,
        })
    }

    /// The AES-GCM nonce: index (big-endian) in bytes 0..4, zeros, flags in byte 11.
    pub fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[0..4].copy_from_slice(&self.index.to_be_bytes());
        n[11] = if self.last { FLAG_FINAL } else { 0 };
        n
    }
}

/// Number of segments a stream of `plain` bytes has (an empty stream has one, empty, segment).
pub fn segment_count(plain: u64, segment: u32) -> u64 {
    plain.div_ceil(u64::from(segment)).max(1)
}

/// Ciphertext length of a stream of `plain` bytes.
pub fn ciphertext_len(plain: u64, segment: u32) -> u64 {
    plain + SEGMENT_OVERHEAD * segment_count(plain, segment)
}

/// Plaintext length of `cipher` bytes of s3crypt ciphertext, or `None` if no object can have that length.
///
/// Every segment but the last is full, so `K = ceil(C / (S + 32))` and `P = C − 32·K`. The last segment must hold
/// at least its header and tag. An empty last segment after full ones only occurs in multipart objects whose last
/// part is empty; `allow_empty_last` accepts it (listings, which cannot tell objects apart, use it: the result is
/// right for both layouts).
pub fn plaintext_len(cipher: u64, segment: u32, allow_empty_last: bool) -> Option<u64> {
    let full = u64::from(segment) + SEGMENT_OVERHEAD;
    if cipher < SEGMENT_OVERHEAD {
        return None;
    }
    let k = cipher.div_ceil(full);
    let last = cipher - (k - 1) * full;
    if last < SEGMENT_OVERHEAD || (last == SEGMENT_OVERHEAD && k > 1 && !allow_empty_last) {
        return None;
    }
    Some(cipher - SEGMENT_OVERHEAD * k)
}

/// Ciphertext offset of segment `g` (every segment before it is full).
pub fn segment_offset(g: u64, segment: u32) -> u64 {
    g * (u64::from(segment) + SEGMENT_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u32 = DEFAULT_SEGMENT_SIZE;

    #[test]
    fn sizes_invert_exactly_for_every_small_length_and_around_boundaries() {
        let s = u64::from(S);
        let mut lens: Vec<u64> = (0..2000).collect();
        for k in 1..5 {
            lens.extend([k * s - 1, k * s, k * s + 1]);
        }
        lens.push(5 * 1024 * 1024 * 1024);
        for p in lens {
            let c = ciphertext_len(p, S);
            assert_eq!(plaintext_len(c, S, false), Some(p), "p = {p}");
            assert_eq!(plaintext_len(c, S, true), Some(p), "p = {p}");
        }
    }

    #[test]
    fn impossible_ciphertext_lengths_are_rejected() {
        let full = u64::from(S) + SEGMENT_OVERHEAD;
        for c in [0, 1, 31, full + 1, full + 31, 2 * full + 5] {
            assert_eq!(plaintext_len(c, S, true), None, "c = {c}");
        }
        // An empty segment after a full one: only a multipart layout has it.
        assert_eq!(plaintext_len(full + 32, S, false), None);
        assert_eq!(plaintext_len(full + 32, S, true), Some(u64::from(S)));
    }

    #[test]
    fn headers_round_trip_and_unknown_versions_or_flags_are_rejected() {
        let h = SegmentHeader { last: true, part: 10_000, index: 0x0102_0304, salt: [9; 8] };
        let e = h.encode();
        assert_eq!(e[..8], [1, 1, 0x27, 0x10, 1, 2, 3, 4]);
        assert_eq!(SegmentHeader::decode(&e), Some(h));
        assert_eq!(h.nonce(), [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut bad = e;
        bad[0] = 2;
        assert_eq!(SegmentHeader::decode(&bad), None);
        let mut bad = e;
        bad[1] = 0x03;
        assert_eq!(SegmentHeader::decode(&bad), None);
    }
}
