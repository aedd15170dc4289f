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

    /// `seg` holds `HEADER_LEN` bytes of room followed by the segment's plaintext: the header is written and the
    /// plaintext encrypted in place; the tag to append is returned.
    pub fn seal_in_place(&mut self, seg: &mut [u8], last: bool) -> [u8; TAG_LEN] {
        let header = SegmentHeader { last, part: self.part, index: self.next_index, salt: self.salt };
        let h = header.encode();
        seg[..HEADER_LEN].copy_from_slice(&h);
        let tag = self.cipher.seal(header.nonce(), &h, &mut seg[HEADER_LEN..]);
        self.next_index += 1;
        tag
    }

    /// [`Sealer::seal_in_place`] with the tag appended to `buf`.
    pub fn seal(&mut self, buf: &mut Vec<u8>, last: bool) {
        let tag = self.seal_in_place(buf, last);
        buf.extend_from_slice(&tag);
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

/// How an object's segments are laid out: which part, index and final flag belong at each position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One stream, written by a PutObject: part 0, indexes 0.., final flag on the last segment.
    Single,
    /// A sealed multipart object: parts 1..=`parts`, each of `per_part` segments but the last (1..=`per_part`).
    Multipart { parts: u32, per_part: u64 },
    /// One part of a multipart object read on its own: a single stream of part `n`.
    Part(u16),
    /// A multipart object whose completion was never sealed, read whole and in order (recovery with
    /// `s3crypt decrypt` only): parts in ascending order, each starting at index 0 after the previous part's
    /// final segment. Dropped trailing parts cannot be detected.
    Unsealed,
}

impl Layout {
    /// Whether an object of `cipher_total` ciphertext bytes (segment size `segment`) can have this layout: its
    /// length is possible and, for a sealed multipart object, its segment count falls in the last part.
    pub fn admits(&self, cipher_total: u64, segment: u32) -> bool {
        let multipart = !matches!(self, Layout::Single | Layout::Part(_));
        if super::format::plaintext_len(cipher_total, segment, multipart).is_none() {
            return false;
        }
        let total = cipher_total.div_ceil(u64::from(segment) + super::format::SEGMENT_OVERHEAD);
        match *self {
            Layout::Single | Layout::Part(_) | Layout::Unsealed => true,
            Layout::Multipart { parts, per_part } => {
                // The layout comes from the store: no arithmetic on it may overflow.
                let Some(before_last) = u64::from(parts.saturating_sub(1)).checked_mul(per_part) else {
                    return false;
                };
                parts >= 1 && per_part >= 1 && total > before_last && total - before_last <= per_part
            }
        }
    }

    /// The (part, index, final flag) of the segment at global position `g`, given whether the object ends with
    /// it; `None` if the layout has no such segment (the object is longer, or ends inside an earlier part).
    pub fn expect(&self, g: u64, object_last: bool) -> Option<(u16, u32, bool)> {
        match *self {
            Layout::Single => Some((super::format::SINGLE_PUT_PART, u32::try_from(g).ok()?, object_last)),
            Layout::Multipart { parts, per_part } => {
                if per_part == 0 {
                    return None;
                }
                let part = g / per_part + 1;
                let within = g % per_part;
                if part > u64::from(parts) || (object_last && part != u64::from(parts)) {
                    return None;
                }
                Some((u16::try_from(part).ok()?, u32::try_from(within).ok()?, object_last || within + 1 == per_part))
            }
            Layout::Part(n) => Some((n, u32::try_from(g).ok()?, object_last)),
            Layout::Unsealed => None,
        }
    }
}

/// Opens the segments of an object, at any positions, checking each segment's header against the layout.
pub struct Opener {
    dek: Arc<DataKey>,
    segment_size: usize,
    layout: Layout,
    stream: Option<(u16, [u8; SALT_LEN], SegmentCipher)>,
    /// `Layout::Unsealed`: the header of the previous segment.
    previous: Option<SegmentHeader>,
}

impl Opener {
    /// An opener for an object laid out as `layout`.
    pub fn new(dek: Arc<DataKey>, segment_size: u32, layout: Layout) -> Opener {
        Opener { dek, segment_size: segment_size as usize, layout, stream: None, previous: None }
    }

    /// Checks a segment's header and length against its position: global index `g`, and whether the object
    /// ends with it. Returns the header.
    fn check(&mut self, g: u64, object_last: bool, seg: &[u8]) -> Result<SegmentHeader, Tamper> {
        if seg.len() < HEADER_LEN + TAG_LEN || seg.len() > HEADER_LEN + TAG_LEN + self.segment_size {
            return Err(Tamper::Length);
        }
        let header = SegmentHeader::decode(&seg[..HEADER_LEN]).ok_or(Tamper::Header)?;
        let plain_len = seg.len() - HEADER_LEN - TAG_LEN;
        if self.layout == Layout::Unsealed {
            self.check_unsealed(&header, object_last, plain_len)?;
        } else {
            let (part, index, last) = self.layout.expect(g, object_last).ok_or(Tamper::Final)?;
            if header.part != part || header.index != index {
                return Err(Tamper::Position);
            }
            if header.last != last {
                return Err(Tamper::Final);
            }
            if !object_last && plain_len != self.segment_size {
                return Err(Tamper::Length);
            }
        }
        if plain_len == 0 && header.index != 0 {
            return Err(Tamper::Length);
        }
        if let Some((p, salt, _)) = &self.stream
            && *p == header.part
            && *salt != header.salt
        {
            return Err(Tamper::Position);
        }
        Ok(header)
    }

    /// The sequential checks of `Layout::Unsealed`.
    fn check_unsealed(&mut self, header: &SegmentHeader, object_last: bool, plain_len: usize) -> Result<(), Tamper> {
        let in_order = match &self.previous {
            None => header.part >= 1 && header.index == 0,
            Some(p) if p.last => header.part > p.part && header.index == 0,
            Some(p) => header.part == p.part && header.index == p.index.wrapping_add(1),
        };
        if !in_order {
            return Err(Tamper::Position);
        }
        if object_last && !header.last {
            return Err(Tamper::Final);
        }
        if !header.last && plain_len != self.segment_size {
            return Err(Tamper::Length);
        }
        self.previous = Some(*header);
        Ok(())
    }

    fn cipher_for(&mut self, header: &SegmentHeader) -> &SegmentCipher {
        if !matches!(&self.stream, Some((p, salt, _)) if *p == header.part && *salt == header.salt) {
            let c = SegmentCipher::new(&stream_key(&self.dek, header.part, &header.salt));
            self.stream = Some((header.part, header.salt, c));
        }
        match &self.stream {
            Some((_, _, c)) => c,
            None => unreachable!("set above"),
        }
    }

    /// Authenticates and decrypts the segment at position `g` (read, not modified) into a new buffer;
    /// `object_last` says whether the object ends with it.
    pub fn open_from(&mut self, g: u64, object_last: bool, seg: &[u8]) -> Result<Vec<u8>, Tamper> {
        let header = self.check(g, object_last, seg)?;
        let plain_len = seg.len() - HEADER_LEN - TAG_LEN;
        let mut out = vec![0u8; plain_len];
        let (h, rest) = seg.split_at(HEADER_LEN);
        let (ct, tag) = rest.split_at(plain_len);
        self.cipher_for(&header).open_to(header.nonce(), h, ct, tag, &mut out).map_err(|_| Tamper::Tag)?;
        Ok(out)
    }

    /// Authenticates and decrypts the segment at position `g` in place; returns where its plaintext is.
    /// `object_last` says whether the object ends with it.
    pub fn open(&mut self, g: u64, object_last: bool, seg: &mut [u8]) -> Result<Range<usize>, Tamper> {
        let header = self.check(g, object_last, seg)?;
        let plain_len = seg.len() - HEADER_LEN - TAG_LEN;
        let (h, body) = seg.split_at_mut(HEADER_LEN);
        self.cipher_for(&header).open(header.nonce(), h, body).map_err(|_| Tamper::Tag)?;
        Ok(HEADER_LEN..HEADER_LEN + plain_len)
    }
}

/// Decrypts a whole object laid out as `layout` from `input` to `output` (what `s3crypt decrypt` does), verifying every
/// segment. Plaintext is written segment by segment as each verifies; a failure returns an error after the
/// verified prefix was written, so callers must treat the output as complete only on `Ok`.
pub fn decrypt_object(
    dek: Arc<DataKey>,
    segment_size: u32,
    layout: Layout,
    input: &mut dyn std::io::Read,
    output: &mut dyn std::io::Write,
) -> Result<u64, String> {
    let full = segment_size as usize + HEADER_LEN + TAG_LEN;
    let mut opener = Opener::new(dek, segment_size, layout);
    let mut g = 0u64;
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
        let range = opener
            .open(g, last, &mut current)
            .map_err(|t| format!("the object failed authentication: {}", t.as_str()))?;
        g += 1;
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
        open_all(dek, Layout::Single, segs)
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
            let n = decrypt_object(key.clone(), S, Layout::Single, &mut &ct[..], &mut out).unwrap();
            assert_eq!((n as usize, out), (len, data));
            if len > 1024 {
                let cut = &ct[..1024 + 32];
                assert!(decrypt_object(key, S, Layout::Single, &mut &cut[..], &mut Vec::new()).is_err());
            }
        }
    }

    /// Seals `parts` as the parts 1.. of one multipart object (segment size S), each with its own salt.
    fn encrypt_parts(dek: &DataKey, parts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut segs = Vec::new();
        for (p, data) in parts.iter().enumerate() {
            let mut sealer = Sealer::new(dek, p as u16 + 1, [p as u8 + 10; 8]);
            let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(S as usize).collect() };
            let n = chunks.len();
            for (i, c) in chunks.into_iter().enumerate() {
                let mut buf = vec![0u8; HEADER_LEN];
                buf.extend_from_slice(c);
                sealer.seal(&mut buf, i == n - 1);
                segs.push(buf);
            }
        }
        segs
    }

    fn open_all(dek: &DataKey, layout: Layout, segs: &[Vec<u8>]) -> Result<Vec<u8>, Tamper> {
        let mut o = Opener::new(Arc::new(DataKey::from_bytes(*dek.expose())), S, layout);
        let mut out = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let mut s = s.clone();
            let r = o.open(i as u64, i + 1 == segs.len(), &mut s)?;
            out.extend_from_slice(&s[r]);
        }
        Ok(out)
    }

    #[test]
    fn sealed_multipart_layouts_open_at_any_position_and_refuse_dropped_swapped_or_extra_parts() {
        let dek = DataKey::from_bytes([1; 32]);
        let s = S as usize;
        let parts: Vec<Vec<u8>> = vec![vec![1; 2 * s], vec![2; 2 * s], vec![3; s + 5]];
        let segs = encrypt_parts(&dek, &parts);
        let layout = Layout::Multipart { parts: 3, per_part: 2 };
        assert_eq!(open_all(&dek, layout, &segs).unwrap(), parts.concat());
        assert!(layout.admits(segs.iter().map(|x| x.len() as u64).sum(), S));
        // the whole last part dropped: the object now ends in part 2
        assert_eq!(open_all(&dek, layout, &segs[..4]), Err(Tamper::Final));
        assert!(!layout.admits(4 * (u64::from(S) + 32), S));
        // parts 2 and 3 swapped
        let mut swapped = segs.clone();
        swapped.swap(2, 4);
        swapped.swap(3, 5);
        assert!(open_all(&dek, layout, &swapped).is_err());
        // a random segment in the middle of a part opens on its own, by position
        let mut o = Opener::new(Arc::new(DataKey::from_bytes([1; 32])), S, layout);
        let mut third = segs[3].clone();
        let r = o.open(3, false, &mut third).unwrap();
        assert_eq!(&third[r], &parts[1][s..]);
        // an empty last part is one empty segment
        let with_empty = encrypt_parts(&dek, &[vec![1; 2 * s], vec![]]);
        let l2 = Layout::Multipart { parts: 2, per_part: 2 };
        assert_eq!(open_all(&dek, l2, &with_empty).unwrap(), vec![1; 2 * s]);
        // the same object read as unsealed (recovery), and a single-PUT layout refuses it
        assert_eq!(open_all(&dek, Layout::Unsealed, &segs).unwrap(), parts.concat());
        assert_eq!(open_all(&dek, Layout::Unsealed, &swapped), Err(Tamper::Position));
        assert!(open_all(&dek, Layout::Single, &segs).is_err());
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
