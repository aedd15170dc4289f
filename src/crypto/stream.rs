//! Segment sealing and opening, independent of any I/O (the proxy's body transforms and `s3crypt decrypt` both use
//! it). A stream's key is derived from the data key, the stream's random salt and its part number, so no two
//! streams share a key, and every retry of an upload gets a fresh one.

use std::ops::Range;
use std::sync::Arc;

use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use zeroize::Zeroizing;

use super::aead::SegmentCipher;
use super::format::{HEADER_LEN, SALT_LEN, STREAM_KEY_INFO, SegmentHeader, TAG_LEN};
use super::keys::DataKey;

struct Len32;

impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// `HKDF-SHA256(ikm = DEK, salt = stream salt, info = "s3crypt/v1 stream key" || BE16(part))`, 32 bytes.
pub fn stream_key(dek: &DataKey, part: u16, salt: &[u8; SALT_LEN]) -> Zeroizing<[u8; 32]> {
    let prk = Salt::new(HKDF_SHA256, salt).extract(dek.expose());
    let part_be = part.to_be_bytes();
    let info = [STREAM_KEY_INFO, &part_be[..]];
    let mut out = Zeroizing::new([0u8; 32]);
    // Expanding 32 bytes from SHA-256 always succeeds.
    if let Ok(okm) = prk.expand(&info, Len32) {
        let _ = okm.fill(&mut out[..]);
    }
    out
}

/// Seals the segments of one stream, in order.
pub struct Sealer {
    cipher: SegmentCipher,
    part: u16,
    salt: [u8; SALT_LEN],
    next_index: u32,
}

impl Sealer {
    pub fn new(dek: &DataKey, part: u16, salt: [u8; SALT_LEN]) -> Sealer {
        Sealer { cipher: SegmentCipher::new(&stream_key(dek, part, &salt)), part, salt, next_index: 0 }
    }

    /// Seals `plain` (read, not modified) into a new segment: header, ciphertext, tag.
    pub fn seal_from(&mut self, plain: &[u8], last: bool) -> Vec<u8> {
        let header = SegmentHeader { last, part: self.part, index: self.next_index, salt: self.salt };
        let h = header.encode();
        let mut seg = vec![0u8; HEADER_LEN + plain.len() + TAG_LEN];
        seg[..HEADER_LEN].copy_from_slice(&h);
        let (body, tag_out) = seg[HEADER_LEN..].split_at_mut(plain.len());
        let tag = self.cipher.seal_to(header.nonce(), &h, plain, body);
        tag_out.copy_from_slice(&tag);
        self.next_index += 1;
        seg
    }

    /// `buf` holds `HEADER_LEN` bytes of room followed by the segment's plaintext; the header is written, the
    /// plaintext encrypted in place and the tag appended.
    pub fn seal(&mut self, buf: &mut Vec<u8>, last: bool) {
        let header = SegmentHeader { last, part: self.part, index: self.next_index, salt: self.salt };
        let h = header.encode();
        buf[..HEADER_LEN].copy_from_slice(&h);
        let tag = self.cipher.seal(header.nonce(), &h, &mut buf[HEADER_LEN..]);
        buf.extend_from_slice(&tag);
        self.next_index += 1;
    }
}

/// Why a segment was refused. Every case means the stored object is not what s3crypt wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Unknown version or flags.
    Header,
    /// Authentication failed.
    Tag,
    /// The segment is not the one expected at this position (index, part, salt).
    Position,
    /// A final segment before the end, or no final segment at the end.
    Final,
    /// A segment of impossible length.
    Length,
}

impl Tamper {
    pub fn as_str(self) -> &'static str {
        match self {
            Tamper::Header => "unknown segment header",
            Tamper::Tag => "segment authentication failed",
            Tamper::Position => "segment out of place",
            Tamper::Final => "final-segment marker out of place (truncated or extended)",
            Tamper::Length => "segment of impossible length",
        }
    }
}

/// Opens the segments of a single-stream object (a PutObject), starting at any segment.
pub struct Opener {
    dek: Arc<DataKey>,
    segment_size: usize,
    expected_part: u16,
    next_index: u32,
    stream: Option<([u8; SALT_LEN], SegmentCipher)>,
}

impl Opener {
    /// An opener expecting segment `first_index` of the stream of `part` next.
    pub fn new(dek: Arc<DataKey>, segment_size: u32, part: u16, first_index: u32) -> Opener {
        Opener { dek, segment_size: segment_size as usize, expected_part: part, next_index: first_index, stream: None }
    }

    /// Checks a segment's header and length against its position; returns the header.
    fn check(&mut self, seg: &[u8], object_last: bool) -> Result<SegmentHeader, Tamper> {
        if seg.len() < HEADER_LEN + TAG_LEN || seg.len() > HEADER_LEN + TAG_LEN + self.segment_size {
            return Err(Tamper::Length);
        }
        let header = SegmentHeader::decode(&seg[..HEADER_LEN]).ok_or(Tamper::Header)?;
        if header.part != self.expected_part || header.index != self.next_index {
            return Err(Tamper::Position);
        }
        let plain_len = seg.len() - HEADER_LEN - TAG_LEN;
        if header.last != object_last {
            return Err(Tamper::Final);
        }
        if (!header.last && plain_len != self.segment_size) || (plain_len == 0 && header.index != 0) {
            return Err(Tamper::Length);
        }
        if let Some((salt, _)) = &self.stream
            && *salt != header.salt
        {
            return Err(Tamper::Position);
        }
        Ok(header)
    }

    fn cipher_for(&mut self, header: &SegmentHeader) -> &SegmentCipher {
        if self.stream.is_none() {
            let c = SegmentCipher::new(&stream_key(&self.dek, header.part, &header.salt));
            self.stream = Some((header.salt, c));
        }
        match &self.stream {
            Some((_, c)) => c,
            None => unreachable!("set above"),
        }
    }

    /// Authenticates and decrypts one whole segment (read, not modified) into a new plaintext buffer.
    pub fn open_from(&mut self, seg: &[u8], object_last: bool) -> Result<Vec<u8>, Tamper> {
        let header = self.check(seg, object_last)?;
        let plain_len = seg.len() - HEADER_LEN - TAG_LEN;
        let mut out = vec![0u8; plain_len];
        let (h, rest) = seg.split_at(HEADER_LEN);
        let (ct, tag) = rest.split_at(plain_len);
        self.cipher_for(&header).open_to(header.nonce(), h, ct, tag, &mut out).map_err(|_| Tamper::Tag)?;
        self.next_index = self.next_index.wrapping_add(1);
        Ok(out)
    }

    /// Authenticates and decrypts one whole segment in place; returns where its plaintext is in `seg`.
    /// `object_last` says whether this segment ends the object.
    pub fn open(&mut self, seg: &mut [u8], object_last: bool) -> Result<Range<usize>, Tamper> {
        let header = self.check(seg, object_last)?;
        let plain_len = seg.len() - HEADER_LEN - TAG_LEN;
        let (h, body) = seg.split_at_mut(HEADER_LEN);
        self.cipher_for(&header).open(header.nonce(), h, body).map_err(|_| Tamper::Tag)?;
        self.next_index = self.next_index.wrapping_add(1);
        Ok(HEADER_LEN..HEADER_LEN + plain_len)
    }
}

/// Decrypts a whole single-stream object from `input` to `output` (what `s3crypt decrypt` does), verifying every
/// segment. Plaintext is written segment by segment as each verifies; a failure returns an error after the
/// verified prefix was written, so callers must treat the output as complete only on `Ok`.
pub fn decrypt_object(
    dek: Arc<DataKey>,
    segment_size: u32,
    input: &mut dyn std::io::Read,
    output: &mut dyn std::io::Write,
) -> Result<u64, String> {
    let full = segment_size as usize + HEADER_LEN + TAG_LEN;
    let mut opener = Opener::new(dek, segment_size, super::format::SINGLE_PUT_PART, 0);
    let read_up_to = |input: &mut dyn std::io::Read, buf: &mut Vec<u8>| -> Result<(), String> {
        while buf.len() < full {
            let start = buf.len();
            buf.resize(full, 0);
            let n = input.read(&mut buf[start..]).map_err(|e| format!("reading the ciphertext: {e}"))?;
            buf.truncate(start + n);
            if n == 0 {
                break;
            }
        }
        Ok(())
    };
    let mut current = Vec::with_capacity(full);
    read_up_to(input, &mut current)?;
    if current.is_empty() {
        return Err("empty input: an s3crypt object has at least 32 bytes".into());
    }
    let mut written = 0u64;
    loop {
        let mut next = Vec::with_capacity(full);
        if current.len() == full {
            read_up_to(input, &mut next)?;
        }
        let last = next.is_empty();
        let range =
            opener.open(&mut current, last).map_err(|t| format!("the object failed authentication: {}", t.as_str()))?;
        output.write_all(&current[range.clone()]).map_err(|e| format!("writing the plaintext: {e}"))?;
        written += range.len() as u64;
        if last {
            output.flush().map_err(|e| format!("writing the plaintext: {e}"))?;
            return Ok(written);
        }
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::format::{DEFAULT_SEGMENT_SIZE, SINGLE_PUT_PART, ciphertext_len};

    const S: u32 = 1024;

    fn encrypt(dek: &DataKey, data: &[u8], salt: [u8; 8]) -> Vec<Vec<u8>> {
        let mut sealer = Sealer::new(dek, SINGLE_PUT_PART, salt);
        let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(S as usize).collect() };
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut buf = vec![0u8; HEADER_LEN];
                buf.extend_from_slice(c);
                sealer.seal(&mut buf, i == n - 1);
                buf
            })
            .collect()
    }

    fn decrypt(dek: &DataKey, segs: &[Vec<u8>]) -> Result<Vec<u8>, Tamper> {
        let mut o = Opener::new(Arc::new(DataKey::from_bytes(*dek.expose())), S, SINGLE_PUT_PART, 0);
        let mut out = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let mut s = s.clone();
            let r = o.open(&mut s, i == segs.len() - 1)?;
            out.extend_from_slice(&s[r]);
        }
        Ok(out)
    }

    #[test]
    fn streams_round_trip_with_the_announced_length() {
        let dek = DataKey::from_bytes([1; 32]);
        for len in [0usize, 1, 1023, 1024, 1025, 3 * 1024 + 7] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let segs = encrypt(&dek, &data, [2; 8]);
            let total: usize = segs.iter().map(Vec::len).sum();
            assert_eq!(total as u64, ciphertext_len(len as u64, S));
            assert_eq!(decrypt(&dek, &segs).unwrap(), data);
        }
        let _ = DEFAULT_SEGMENT_SIZE;
    }

    #[test]
    fn truncation_reordering_extension_and_splicing_are_all_detected() {
        let dek = DataKey::from_bytes([1; 32]);
        let data: Vec<u8> = (0..3 * 1024 + 7).map(|i| (i * 7) as u8).collect();
        let segs = encrypt(&dek, &data, [2; 8]);
        // truncated at a segment boundary
        assert_eq!(decrypt(&dek, &segs[..3]), Err(Tamper::Final));
        // reordered
        let mut r = segs.clone();
        r.swap(0, 1);
        assert_eq!(decrypt(&dek, &r), Err(Tamper::Position));
        // extended with a segment of another stream of the same key
        let other = encrypt(&dek, &data, [3; 8]);
        let mut e = segs.clone();
        e.push(other[3].clone());
        assert!(decrypt(&dek, &e).is_err());
        // spliced: a segment from another stream at the same position
        let mut s = segs.clone();
        s[1] = other[1].clone();
        assert_eq!(decrypt(&dek, &s), Err(Tamper::Position));
        // header edited to claim another index: tag fails or position fails
        let mut h = segs.clone();
        h[1][7] ^= 1;
        assert!(decrypt(&dek, &h).is_err());
        // another key
        assert_eq!(decrypt(&DataKey::from_bytes([9; 32]), &segs), Err(Tamper::Tag));
        // a flipped ciphertext bit
        let mut f = segs.clone();
        f[2][100] ^= 4;
        assert_eq!(decrypt(&dek, &f), Err(Tamper::Tag));
    }

    #[test]
    fn whole_objects_decrypt_from_a_reader_and_truncation_is_an_error() {
        let dek = DataKey::from_bytes([1; 32]);
        for len in [0usize, 5, 1024, 4000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let ct: Vec<u8> = encrypt(&dek, &data, [4; 8]).concat();
            let mut out = Vec::new();
            let key = Arc::new(DataKey::from_bytes([1; 32]));
            let n = decrypt_object(key.clone(), S, &mut &ct[..], &mut out).unwrap();
            assert_eq!((n as usize, out), (len, data));
            if len > 1024 {
                let cut = &ct[..1024 + 32];
                assert!(decrypt_object(key, S, &mut &cut[..], &mut Vec::new()).is_err());
            }
        }
    }

    #[test]
    fn an_empty_stream_has_one_authenticated_segment() {
        let dek = DataKey::from_bytes([1; 32]);
        let segs = encrypt(&dek, &[], [5; 8]);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].len(), 32);
        assert_eq!(decrypt(&dek, &segs).unwrap(), Vec::<u8>::new());
        assert_eq!(decrypt(&dek, &[]).unwrap(), Vec::<u8>::new(), "no segments at all decodes to nothing here,");
        // ... which is why callers compute the plaintext length from the ciphertext length first (0 bytes of
        // ciphertext is an impossible length).
    }
}
