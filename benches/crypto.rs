//! Throughput of the encryption body transforms next to the raw AEAD they are built on (single core): sealing
//! and opening 64 KiB segments in place, versus `EncryptBody` / `DecryptBody` over a 64 MiB stream delivered in
//! frames of 16 KiB, 64 KiB and 1 MiB (copying frames into segment buffers, headers, key derivation, framing),
//! and the same transforms with 16 KiB .. 1 MiB segments (the measurement behind the 64 KiB choice).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use s3crypt::crypto::aead::SegmentCipher;
use s3crypt::crypto::body::{DecryptBody, EncryptBody, ReadPlan};
use s3crypt::crypto::format::{DEFAULT_SEGMENT_SIZE, SINGLE_PUT_PART, TAG_LEN, segment_count};
use s3crypt::crypto::keys::DataKey;
use s3crypt::crypto::stream::Layout;
use s3crypt::error::ProxyError;

struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = ProxyError;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn frames(data: &Bytes, size: usize) -> Frames {
    Frames((0..data.len()).step_by(size).map(|i| data.slice(i..(i + size).min(data.len()))).collect())
}

/// Drains a body, counting bytes (what hyper does with frames: hand them on without copying).
async fn drain<B: Body<Data = Bytes> + Unpin>(mut b: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(f) = b.frame().await {
        n += f.unwrap().into_data().map_or(0, |d| d.len());
    }
    n
}

/// The read plan for a whole single-PUT object of `plain_len` bytes.
fn whole_object(segment_size: u32, cipher_len: usize, plain_len: usize) -> ReadPlan {
    ReadPlan {
        segment_size,
        cipher_total: cipher_len as u64,
        first_segment: 0,
        end_segment: segment_count(plain_len as u64, segment_size),
        discard: 0,
        skip: 0,
        take: plain_len as u64,
    }
}

fn bench(c: &mut Criterion) {
    let seg = DEFAULT_SEGMENT_SIZE as usize;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();

    let mut g = c.benchmark_group("aead_raw_64KiB_segment");
    g.throughput(Throughput::Bytes(seg as u64));
    let cipher = SegmentCipher::new(&[7u8; 32]);
    let mut buf = vec![0x5au8; seg];
    g.bench_function("seal", |b| b.iter(|| cipher.seal([1; 12], b"0123456789abcdef", &mut buf)));
    let mut sealed = vec![0x5au8; seg];
    let tag = cipher.seal([1; 12], b"0123456789abcdef", &mut sealed);
    sealed.extend_from_slice(&tag);
    g.bench_function("open", |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |s| cipher.open([1; 12], b"0123456789abcdef", s).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();

    // A proxy's input frames are fresh off the socket (in cache), so the stream is built from slices of one
    // 1 MiB buffer, and each iteration processes a 1 MiB object (2 MiB of L2 per core on these machines).
    let len = 1024 * 1024usize;
    let plain = Bytes::from((0..len).map(|i| (i * 13 % 251) as u8).collect::<Vec<u8>>());
    let dek = DataKey::from_bytes([9u8; 32]);
    let cipher_bytes = rt.block_on(async {
        EncryptBody::new(frames(&plain, 65_536), &dek, SINGLE_PUT_PART, [3; 8], DEFAULT_SEGMENT_SIZE, len as u64)
            .collect()
            .await
            .unwrap()
            .to_bytes()
    });
    let dek = Arc::new(dek);
    let plan = whole_object(DEFAULT_SEGMENT_SIZE, cipher_bytes.len(), len);
    let mut g = c.benchmark_group("body_1MiB_object");
    g.throughput(Throughput::Bytes(len as u64));
    // 16 KiB: TLS-record-sized frames (segments straddle frames: copy path); 64 KiB + 32 / 64 KiB: one segment
    // per frame; 1 MiB: many segments per frame (fast path, no copy).
    for (name, enc_frame, dec_frame) in
        [("16KiB", 16 * 1024, 16 * 1024), ("64KiB", 64 * 1024, 64 * 1024 + 32), ("1MiB", 1 << 20, 1 << 20)]
    {
        g.bench_function(format!("encrypt_body/frames_{name}"), |b| {
            b.iter(|| {
                let body = EncryptBody::new(
                    frames(&plain, enc_frame),
                    &dek,
                    SINGLE_PUT_PART,
                    [3; 8],
                    DEFAULT_SEGMENT_SIZE,
                    len as u64,
                );
                rt.block_on(drain(Box::pin(body)))
            })
        });
        g.bench_function(format!("decrypt_body/frames_{name}"), |b| {
            b.iter(|| {
                let body = DecryptBody::new(frames(&cipher_bytes, dec_frame), dek.clone(), Layout::Single, plan);
                rt.block_on(drain(body))
            })
        });
    }
    g.finish();

    // Segment size (the writer's is fixed at 64 KiB; readers take any from the envelope): the same 4 MiB object in
    // 128 KiB frames (what hyper's 128 KiB read buffer delivers at most), sealed and opened with 16 KiB .. 1 MiB
    // segments.
    let len = 4 * 1024 * 1024usize;
    let plain = Bytes::from((0..len).map(|i| (i * 13 % 251) as u8).collect::<Vec<u8>>());
    let mut g = c.benchmark_group("segment_size_4MiB_object_128KiB_frames");
    g.throughput(Throughput::Bytes(len as u64));
    for seg_kib in [16u32, 64, 256, 1024] {
        let seg = seg_kib * 1024;
        let ct = rt.block_on(async {
            EncryptBody::new(frames(&plain, 128 * 1024), &dek, SINGLE_PUT_PART, [3; 8], seg, len as u64)
                .collect()
                .await
                .unwrap()
                .to_bytes()
        });
        let plan = whole_object(seg, ct.len(), len);
        g.bench_function(format!("encrypt_body/segment_{seg_kib}KiB"), |b| {
            b.iter(|| {
                let body = EncryptBody::new(frames(&plain, 128 * 1024), &dek, SINGLE_PUT_PART, [3; 8], seg, len as u64);
                rt.block_on(drain(Box::pin(body)))
            })
        });
        g.bench_function(format!("decrypt_body/segment_{seg_kib}KiB"), |b| {
            b.iter(|| {
                let body = DecryptBody::new(frames(&ct, 128 * 1024), dek.clone(), Layout::Single, plan);
                rt.block_on(drain(body))
            })
        });
    }
    g.finish();
    let _ = TAG_LEN;
}

criterion_group!(benches, bench);
criterion_main!(benches);
