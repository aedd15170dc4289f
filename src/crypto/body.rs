//! The streaming body transforms: `EncryptBody` (plaintext → segments, for uploads) and `DecryptBody`
//! (segments → verified plaintext, for downloads and ranges). Memory: one segment buffer plus the frame being
//! consumed, whatever the object size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::error::CryptoError;
use super::format::{HEADER_LEN, SALT_LEN, SEGMENT_OVERHEAD, TAG_LEN, ciphertext_len, segment_count, segment_offset};
use super::keys::DataKey;
use super::stream::{Layout, Opener, Sealer};
use crate::s3::error::BodyError;

enum State {
    Running,
    Done,
}

/// Crypto time and bytes of one body, reported as metrics when the body is dropped (if it is metered).
#[derive(Default)]
struct Meter {
    /// (direction, operation) when metered.
    labels: Option<(&'static str, &'static str)>,
    busy: std::time::Duration,
    bytes: u64,
}

impl Meter {
    fn time<T>(&mut self, bytes: usize, f: impl FnOnce() -> T) -> T {
        if self.labels.is_none() {
            return f();
        }
        let start = std::time::Instant::now();
        let r = f();
        self.busy += start.elapsed();
        self.bytes += bytes as u64;
        r
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some((direction, op)) = self.labels {
            crate::metrics::crypto_done(direction, op, self.busy, self.bytes);
        }
    }
}

pin_project! {
    /// Encrypts exactly `plain_len` bytes of `inner` into one stream of segments. The final segment is sealed
    /// and released only after `inner` has ended cleanly (its own end-of-stream checks passed).
    pub struct EncryptBody<B> {
        #[pin]
        inner: B,
        sealer: Sealer,
        segment_size: usize,
        remaining: u64,
        cipher_left: u64,
        // The segment being assembled (header room, then plaintext), handed on with `split().freeze()`: once
        // the store client has written a segment and dropped it, the next one reuses its allocation.
        buf: BytesMut,
        pending: Bytes,
        inner_ended: bool,
        state: State,
        meter: Meter,
    }
}

impl<B> EncryptBody<B> {
    /// Reports this body's encryption time and bytes as metrics, labelled with the S3 operation.
    pub fn metered(mut self, op: &'static str) -> Self {
        self.meter.labels = Some(("encrypt", op));
        self
    }

    pub fn new(inner: B, dek: &DataKey, part: u16, salt: [u8; SALT_LEN], segment_size: u32, plain_len: u64) -> Self {
        let segment = segment_size as usize;
        EncryptBody {
            inner,
            sealer: Sealer::new(dek, part, salt),
            segment_size: segment,
            remaining: plain_len,
            cipher_left: ciphertext_len(plain_len, segment_size),
            buf: BytesMut::new(),
            pending: Bytes::new(),
            inner_ended: false,
            state: State::Running,
            meter: Meter::default(),
        }
    }
}

impl<B> Body for EncryptBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: From<BodyError>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            let target = usize::try_from((*this.segment_size as u64).min(*this.remaining)).unwrap_or(0);
            if this.buf.is_empty() {
                this.buf.reserve(HEADER_LEN + target + TAG_LEN);
                this.buf.extend_from_slice(&[0u8; HEADER_LEN]);
            }
            let filled = this.buf.len() - HEADER_LEN;
            let last = *this.remaining == target as u64;
            if filled == target {
                if last && !this.pending.is_empty() {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(BodyError::too_long().into())));
                }
                if last && !*this.inner_ended {
                    // Everything is here; wait for the inner body's end (its checks) before the final segment.
                    if let Err(e) =
                        ready!(crate::util::body::poll_end(this.inner.as_mut(), cx, || BodyError::too_long().into()))
                    {
                        *this.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    *this.inner_ended = true;
                }
                let sealer = &mut *this.sealer;
                let buf = &mut *this.buf;
                let tag = this.meter.time(target, || sealer.seal_in_place(buf, last));
                buf.extend_from_slice(&tag);
                let seg = buf.split().freeze();
                *this.remaining -= target as u64;
                *this.cipher_left -= seg.len() as u64;
                if last {
                    *this.state = State::Done;
                }
                return Poll::Ready(Some(Ok(Frame::data(seg))));
            }
            if !this.pending.is_empty() {
                let n = (target - filled).min(this.pending.len());
                this.buf.extend_from_slice(&this.pending[..n]);
                if n == this.pending.len() {
                    // Let go of the frame's memory now: the reader that filled it (hyper's read buffer) can then
                    // reuse it instead of taking fresh pages for its next read.
                    *this.pending = Bytes::new();
                } else {
                    this.pending.advance(n);
                }
                continue;
            }
            if *this.inner_ended {
                *this.state = State::Done;
                return Poll::Ready(Some(Err(
                    BodyError::IncompleteBody("body shorter than its declared length").into()
                )));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        *this.pending = d;
                    }
                }
                Some(Err(e)) => {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                None => *this.inner_ended = true,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.cipher_left)
    }
}

/// Which segments of an object a download reads and which plaintext bytes it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub segment_size: u32,
    /// The object's ciphertext length.
    pub cipher_total: u64,
    /// First segment to decrypt (global index).
    pub first_segment: u64,
    /// One past the last segment to decrypt.
    pub end_segment: u64,
    /// Ciphertext bytes the upstream sends before `first_segment` starts.
    pub discard: u64,
    /// Plaintext bytes of the first decrypted segment not returned.
    pub skip: u64,
    /// Plaintext bytes returned.
    pub take: u64,
}

impl ReadPlan {
    /// The whole object (`cipher_total` bytes, `plain_total` of plaintext), from a response that starts at
    /// ciphertext offset `start` (0, or a few bytes before it when a store answered a suffix range whole).
    pub fn whole(segment_size: u32, cipher_total: u64, plain_total: u64, start: u64) -> ReadPlan {
        ReadPlan {
            segment_size,
            cipher_total,
            first_segment: 0,
            end_segment: segment_count(plain_total, segment_size),
            discard: segment_offset(0, segment_size).saturating_sub(start),
            skip: 0,
            take: plain_total,
        }
    }

    /// Plaintext bytes `a..=b` of an object of `cipher_total` bytes, from a response that starts at ciphertext
    /// offset `start`, which must not come after the segment holding byte `a`.
    pub fn range(segment_size: u32, cipher_total: u64, start: u64, a: u64, b: u64) -> Result<ReadPlan, CryptoError> {
        let s = u64::from(segment_size);
        let first = a / s;
        let seg_start = segment_offset(first, segment_size);
        if start > seg_start {
            return Err(CryptoError::Store("upstream range starts after the needed segment".into()));
        }
        Ok(ReadPlan {
            segment_size,
            cipher_total,
            first_segment: first,
            end_segment: b / s + 1,
            discard: seg_start - start,
            skip: a - first * s,
            take: b - a + 1,
        })
    }

    /// One stream (a part) of `cipher_size` bytes and `plain` bytes of plaintext, read whole from its start.
    pub fn stream(segment_size: u32, cipher_size: u64, plain: u64) -> ReadPlan {
        ReadPlan::whole(segment_size, cipher_size, plain, 0)
    }

    /// Drops the bytes before the range and after it from a decrypted segment; `None` if nothing is left.
    fn trim(&mut self, mut plain: Bytes) -> Option<Bytes> {
        let skip = usize::try_from(self.skip.min(plain.len() as u64)).unwrap_or(0);
        plain.advance(skip);
        self.skip -= skip as u64;
        let keep = usize::try_from(self.take.min(plain.len() as u64)).unwrap_or(0);
        plain.truncate(keep);
        self.take -= keep as u64;
        (!plain.is_empty()).then_some(plain)
    }
}

pin_project! {
    /// Decrypts the segments of `plan` from `inner` (the upstream body), releasing a segment's plaintext only
    /// after its tag and position verified. Any failure ends the body with an error.
    pub struct DecryptBody<B> {
        #[pin]
        inner: B,
        segments: Segments,
        // The ciphertext of the current segment gathered across frames.
        buf: Vec<u8>,
        // What is left of the last frame read from `inner`.
        pending: Bytes,
        // Plaintext decrypted by `prime`, released first.
        ready: Option<Bytes>,
        state: Decrypting,
    }
}

/// Where a `DecryptBody` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decrypting {
    /// Dropping the ciphertext the store sent before the first planned segment.
    Skipping,
    /// Reading segments: gathering one, or opening one held whole in `pending`.
    Reading,
    /// Every planned segment was released, or the body failed.
    Done,
}

/// Source of a segment's ciphertext for `Segments::open`.
enum Sealed<'a> {
    /// Gathered across frames: opened in place.
    Gathered(Vec<u8>),
    /// Whole in one incoming frame: opened straight out of it.
    InFrame(&'a [u8]),
}

/// The segment walk of a read: which segment comes next, how long it is, and opening it.
struct Segments {
    opener: Opener,
    plan: ReadPlan,
    next: u64,
    meter: Meter,
    // Plaintext was released: a failure now ends a response already under way.
    released: bool,
}

impl Segments {
    fn done(&self) -> bool {
        self.next >= self.plan.end_segment
    }

    /// The ciphertext length of the next segment (the object's last may be short).
    fn next_len(&self) -> Result<u64, CryptoError> {
        let start = segment_offset(self.next, self.plan.segment_size);
        let full = u64::from(self.plan.segment_size) + SEGMENT_OVERHEAD;
        let len = full.min(self.plan.cipher_total.saturating_sub(start));
        if len < SEGMENT_OVERHEAD {
            return Err(integrity("segment of impossible length"));
        }
        Ok(len)
    }

    /// Takes the next segment's ciphertext from `pending` (gathering it in `buf` when it spans frames) and opens
    /// it once whole: the plaintext to release, if any.
    fn feed(&mut self, buf: &mut Vec<u8>, pending: &mut Bytes) -> Result<Option<Bytes>, CryptoError> {
        let len = usize::try_from(self.next_len()?).unwrap_or(usize::MAX);
        if buf.is_empty() && pending.len() >= len {
            let seg = pending.split_to(len);
            return self.open(Sealed::InFrame(&seg));
        }
        let n = (len - buf.len()).min(pending.len());
        buf.extend_from_slice(&pending.split_to(n));
        if buf.len() < len {
            return Ok(None);
        }
        let seg = std::mem::replace(buf, Vec::with_capacity(len));
        self.open(Sealed::Gathered(seg))
    }

    /// Authenticates and decrypts the next segment: the plaintext the plan returns from it, if any.
    fn open(&mut self, sealed: Sealed<'_>) -> Result<Option<Bytes>, CryptoError> {
        let start = segment_offset(self.next, self.plan.segment_size);
        let len = match &sealed {
            Sealed::Gathered(v) => v.len(),
            Sealed::InFrame(s) => s.len(),
        };
        let object_last = start + len as u64 >= self.plan.cipher_total;
        let (opener, g, plain_len) = (&mut self.opener, self.next, len.saturating_sub(SEGMENT_OVERHEAD as usize));
        let opened = match sealed {
            Sealed::Gathered(mut seg) => self
                .meter
                .time(plain_len, || opener.open(g, object_last, &mut seg))
                .map(|range| Bytes::from(seg).slice(range)),
            Sealed::InFrame(seg) => {
                self.meter.time(plain_len, || opener.open_from(g, object_last, seg)).map(Bytes::from)
            }
        };
        match opened {
            Ok(plain) => {
                self.next += 1;
                let out = self.plan.trim(plain);
                self.released |= out.is_some();
                Ok(out)
            }
            Err(t) => {
                if self.released {
                    crate::metrics::integrity_failure("mid_stream");
                }
                Err(integrity(t.as_str()))
            }
        }
    }
}

impl<B> DecryptBody<B> {
    pub fn new(inner: B, dek: Arc<DataKey>, layout: Layout, plan: ReadPlan) -> Self {
        DecryptBody {
            inner,
            segments: Segments {
                opener: Opener::new(dek, plan.segment_size, layout),
                next: plan.first_segment,
                plan,
                meter: Meter::default(),
                released: false,
            },
            buf: Vec::with_capacity(plan.segment_size as usize + SEGMENT_OVERHEAD as usize),
            pending: Bytes::new(),
            ready: None,
            state: if plan.discard > 0 { Decrypting::Skipping } else { Decrypting::Reading },
        }
    }

    /// Reports this body's decryption time and bytes as metrics, labelled with the S3 operation.
    pub fn metered(mut self, op: &'static str) -> Self {
        self.segments.meter.labels = Some(("decrypt", op));
        self
    }
}

impl<B> DecryptBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: From<CryptoError> + std::fmt::Display,
{
    /// Decrypts up to the first plaintext output, so that a tampered or undecryptable object is refused with a
    /// proper error response before any header goes out (for objects of one segment: before anything at all).
    pub async fn prime(&mut self) -> Result<(), B::Error> {
        let first = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await;
        match first {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    self.ready = Some(d);
                }
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }
}

fn integrity(what: &'static str) -> CryptoError {
    CryptoError::Integrity(what)
}

impl<B> Body for DecryptBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: From<CryptoError> + std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if let Some(b) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        loop {
            if *this.state == Decrypting::Done {
                return Poll::Ready(None);
            }
            if this.segments.done() {
                *this.state = Decrypting::Done;
                return Poll::Ready(None);
            }
            if this.pending.is_empty() {
                match ready!(this.inner.as_mut().poll_frame(cx)) {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            *this.pending = d;
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        *this.state = Decrypting::Done;
                        let e = CryptoError::Store(format!("reading the object: {e}"));
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    None => {
                        *this.state = Decrypting::Done;
                        return Poll::Ready(Some(Err(integrity("object shorter than its length").into())));
                    }
                }
            }
            if *this.state == Decrypting::Skipping {
                let plan = &mut this.segments.plan;
                let n = usize::try_from(plan.discard.min(this.pending.len() as u64)).unwrap_or(0);
                this.pending.advance(n);
                plan.discard -= n as u64;
                if plan.discard == 0 {
                    *this.state = Decrypting::Reading;
                }
                continue;
            }
            match this.segments.feed(this.buf, this.pending) {
                Ok(Some(plain)) => return Poll::Ready(Some(Ok(Frame::data(plain)))),
                Ok(None) => continue,
                Err(e) => {
                    *this.state = Decrypting::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && (self.state == Decrypting::Done || self.segments.done())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.segments.plan.take + self.ready.as_ref().map_or(0, |b| b.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::format::{SINGLE_PUT_PART, plaintext_len};
    use crate::error::ProxyError;
    use crate::test_util::{body_in_frames, failing_body};
    use http_body_util::BodyExt;

    const S: u32 = 4096;

    async fn encrypt(data: &[u8], frame: usize) -> Vec<u8> {
        let dek = DataKey::from_bytes([7; 32]);
        EncryptBody::new(body_in_frames(data, frame), &dek, SINGLE_PUT_PART, [1; 8], S, data.len() as u64)
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn plan_for(cipher_total: u64, a: u64, b: u64) -> (ReadPlan, u64) {
        let s = u64::from(S);
        let (g1, g2) = (a / s, b / s);
        let fetch_start = segment_offset(g1, S);
        (
            ReadPlan {
                segment_size: S,
                cipher_total,
                first_segment: g1,
                end_segment: g2 + 1,
                discard: 0,
                skip: a - g1 * s,
                take: b - a + 1,
            },
            fetch_start,
        )
    }

    async fn decrypt_range(ct: &[u8], a: u64, b: u64, frame: usize) -> Result<Vec<u8>, ProxyError> {
        let (plan, start) = plan_for(ct.len() as u64, a, b);
        let end = segment_offset(plan.end_segment, S).min(ct.len() as u64);
        let dek = Arc::new(DataKey::from_bytes([7; 32]));
        let body =
            DecryptBody::new(body_in_frames(&ct[start as usize..end as usize], frame), dek, Layout::Single, plan);
        body.collect().await.map(|c| c.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn every_length_round_trips_through_the_body_transforms() {
        for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096 + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let ct = encrypt(&data, 1000).await;
            assert_eq!(ct.len() as u64, ciphertext_len(len as u64, S));
            let p = plaintext_len(ct.len() as u64, S, false).unwrap();
            assert_eq!(p, len as u64);
            let whole = if len == 0 {
                let dek = Arc::new(DataKey::from_bytes([7; 32]));
                let plan = ReadPlan {
                    segment_size: S,
                    cipher_total: ct.len() as u64,
                    first_segment: 0,
                    end_segment: 1,
                    discard: 0,
                    skip: 0,
                    take: 0,
                };
                DecryptBody::new(body_in_frames(&ct, 7), dek, Layout::Single, plan)
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec()
            } else {
                decrypt_range(&ct, 0, len as u64 - 1, 777).await.unwrap()
            };
            assert_eq!(whole, data, "len {len}");
        }
    }

    #[tokio::test]
    async fn every_range_of_a_small_object_decrypts_to_the_right_bytes() {
        let data: Vec<u8> = (0..2 * 4096 + 100).map(|i| (i * 31 % 251) as u8).collect();
        let ct = encrypt(&data, 5000).await;
        let n = data.len() as u64;
        for a in (0..n).step_by(397) {
            for b in (a..n).step_by(1013) {
                let got = decrypt_range(&ct, a, b, 3000).await.unwrap();
                assert_eq!(got, data[a as usize..=b as usize], "range {a}-{b}");
            }
        }
        let got = decrypt_range(&ct, n - 1, n - 1, 10).await.unwrap();
        assert_eq!(got, vec![data[n as usize - 1]]);
    }

    #[tokio::test]
    async fn tampered_or_truncated_ciphertext_fails_and_releases_nothing_unverified() {
        let data = vec![42u8; 3 * 4096];
        let ct = encrypt(&data, 4096).await;
        let mut flipped = ct.clone();
        flipped[4096 + 32 + 100] ^= 1; // second segment
        let dek = Arc::new(DataKey::from_bytes([7; 32]));
        let (plan, _) = plan_for(ct.len() as u64, 0, data.len() as u64 - 1);
        let mut body = DecryptBody::new(body_in_frames(&flipped, 999), dek.clone(), Layout::Single, plan);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), 4096, "the first, authentic, segment is released");
        let e = body.frame().await.unwrap().unwrap_err();
        assert_eq!(e.code(), "ObjectIntegrityError");
        assert!(body.frame().await.is_none());

        // truncated at a segment boundary: the final marker is missing
        let cut = &ct[..2 * (4096 + 32)];
        let (plan, _) = plan_for(cut.len() as u64, 0, 2 * 4096 - 1);
        let e =
            DecryptBody::new(body_in_frames(cut, 999), dek.clone(), Layout::Single, plan).collect().await.unwrap_err();
        assert_eq!(e.code(), "ObjectIntegrityError");

        // the upstream body ends early
        let (plan, _) = plan_for(ct.len() as u64, 0, data.len() as u64 - 1);
        let e =
            DecryptBody::new(body_in_frames(&ct[..5000], 999), dek, Layout::Single, plan).collect().await.unwrap_err();
        assert_eq!(e.code(), "ObjectIntegrityError");
    }

    #[tokio::test]
    async fn the_final_segment_waits_for_the_inner_checks() {
        let dek = DataKey::from_bytes([7; 32]);
        let mut body = EncryptBody::new(failing_body(vec![vec![1u8; 5000]]), &dek, SINGLE_PUT_PART, [1; 8], S, 5000);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), 4096 + 32);
        assert!(body.frame().await.unwrap().is_err(), "no final segment after a failed inner body");
        let short = EncryptBody::new(body_in_frames(&[1u8; 10], 3), &dek, SINGLE_PUT_PART, [1; 8], S, 11);
        assert_eq!(short.collect().await.unwrap_err().code(), "IncompleteBody");
    }
}

#[cfg(test)]
mod prop {
    //! Property tests: any length round-trips through the body transforms, framed any way, and any range of a
    //! small object decrypts to exactly its bytes.
    use super::*;
    use crate::crypto::format::{DEFAULT_SEGMENT_SIZE, SINGLE_PUT_PART, plaintext_len};
    use crate::test_util::body_in_frames;
    use http_body_util::BodyExt;
    use proptest::prelude::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    fn encrypt(data: &[u8], frame: usize, seg: u32) -> Vec<u8> {
        let dek = DataKey::from_bytes([3; 32]);
        rt().block_on(async {
            EncryptBody::new(body_in_frames(data, frame), &dek, SINGLE_PUT_PART, [8; 8], seg, data.len() as u64)
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec()
        })
    }

    fn decrypt(ct: &[u8], frame: usize, seg: u32, a: u64, b: Option<u64>) -> Vec<u8> {
        let total = plaintext_len(ct.len() as u64, seg, false).unwrap();
        let s = u64::from(seg);
        let (first, end, skip, take) = match b {
            None => (0, segment_count_of(total, seg), 0, total),
            Some(b) => (a / s, b / s + 1, a % s, b - a + 1),
        };
        let start = segment_offset(first, seg) as usize;
        let stop = (segment_offset(end, seg) as usize).min(ct.len());
        let plan = ReadPlan {
            segment_size: seg,
            cipher_total: ct.len() as u64,
            first_segment: first,
            end_segment: end,
            discard: 0,
            skip,
            take,
        };
        let dek = Arc::new(DataKey::from_bytes([3; 32]));
        rt().block_on(async {
            DecryptBody::new(body_in_frames(&ct[start..stop], frame), dek, Layout::Single, plan)
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec()
        })
    }

    fn segment_count_of(p: u64, seg: u32) -> u64 {
        crate::crypto::format::segment_count(p, seg)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_length_round_trips_however_it_is_framed(len in 0usize..20_000, frame in 1usize..9000, seed: u8) {
            let seg = 4096;
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let ct = encrypt(&data, frame, seg);
            prop_assert_eq!(ct.len() as u64, crate::crypto::format::ciphertext_len(len as u64, seg));
            prop_assert_eq!(decrypt(&ct, frame.max(1), seg, 0, None), data);
        }

        #[test]
        fn any_range_of_a_small_object_is_exact(len in 1usize..13_000, a_frac in 0.0f64..1.0, span in 0usize..9000, frame in 1usize..9000) {
            let seg = 4096;
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let ct = encrypt(&data, 5000, seg);
            let a = ((len - 1) as f64 * a_frac) as usize;
            let b = (a + span).min(len - 1);
            prop_assert_eq!(decrypt(&ct, frame, seg, a as u64, Some(b as u64)), data[a..=b].to_vec());
        }
    }

    #[test]
    fn the_default_segment_size_round_trips_at_its_boundaries() {
        let s = DEFAULT_SEGMENT_SIZE as usize;
        for len in [0, 1, s - 1, s, s + 1, 3 * s + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
            let ct = encrypt(&data, 10_000, DEFAULT_SEGMENT_SIZE);
            assert_eq!(decrypt(&ct, 7_777, DEFAULT_SEGMENT_SIZE, 0, None), data, "{len}");
        }
    }
}
