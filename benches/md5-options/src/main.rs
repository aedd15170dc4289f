//! The MD5 options for SSE-S3 ETags, one core each unless said: what the proxy uses today (md-5 with
//! its assembly core, one stream), the single-stream cores of the two multi-buffer crates on crates.io
//! (md5-simd 0.2, md5-many 0.1.0-alpha), their multi-buffer paths (several independent uploads hashed together in
//! SIMD lanes, as MinIO's md5-simd does in Go), and hashing overlapped with AES-256-GCM on a second thread. Every
//! digest is checked against md-5's. Prints a Markdown table: GB/s (10^9 bytes) and CPU-s/GB.
//!
//!   ./scripts/bench.sh --md5      (cargo run --release in benches/md5-options)

use std::time::Instant;

use md5::Digest as _;

const FRAME: usize = 64 * 1024;
const STREAM: usize = 64 * 1024 * 1024;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Best of `rounds` runs of `f`, which processes `bytes`: GB/s.
fn gbps(bytes: usize, rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    bytes as f64 / best / 1e9
}

fn reference(d: &[u8]) -> [u8; 16] {
    md5::Md5::digest(d).into()
}

fn row(name: &str, gbps: f64, cores: f64, note: &str) {
    println!("| {name} | {gbps:.2} | {:.2} | {note} |", cores / gbps);
}

fn main() {
    let rounds = 5;
    let stream = data(STREAM, 1);
    let want = reference(&stream);
    println!("| option | GB/s | CPU-s/GB | note |");
    println!("|---|---|---|---|");

    // One stream, fed 64 KiB at a time as the proxy feeds it.
    let g = gbps(STREAM, rounds, || {
        let mut h = md5::Md5::new();
        stream.chunks(FRAME).for_each(|c| h.update(c));
        assert_eq!(<[u8; 16]>::from(h.finalize()), want);
    });
    row("md-5 0.10 (asm core), one stream", g, 1.0, "what the proxy uses");
    let g = gbps(STREAM, rounds, || {
        let mut h = md5_simd::Md5::new();
        stream.chunks(FRAME).for_each(|c| h.update(c));
        assert_eq!(h.finalize(), want);
    });
    row("md5-simd 0.2, one stream", g, 1.0, md5_simd::backend_name());
    let g = gbps(STREAM, rounds, || {
        let mut h = <md5_many::Md5 as md5_many::Digest>::new();
        stream.chunks(FRAME).for_each(|c| md5_many::Digest::update(&mut h, c));
        assert_eq!(<[u8; 16]>::from(md5_many::Digest::finalize(h)), want);
    });
    row("md5-many 0.1.0-alpha.4, one stream", g, 1.0, "");

    // Several uploads at once: each gets the next 64 KiB of its own stream per call, as concurrent PUTs would
    // hand their frames to a shared hasher.
    for lanes in [4usize, 8, 16] {
        let per = STREAM / lanes;
        let streams: Vec<Vec<u8>> = (0..lanes).map(|i| data(per, 7 + i as u64)).collect();
        let wants: Vec<[u8; 16]> = streams.iter().map(|s| reference(s)).collect();
        let engine = md5_many::Md5Many::new();
        let g = gbps(per * lanes, rounds, || {
            let mut states = vec![md5_many::Md5State::new(); lanes];
            for off in (0..per).step_by(FRAME) {
                let inputs: Vec<&[u8]> = streams.iter().map(|s| &s[off..(off + FRAME).min(per)]).collect();
                engine.update_many(&mut states, &inputs);
            }
            let mut out = vec![[0u8; 16]; lanes];
            engine.finalize_many(&states, &mut out);
            assert_eq!(out, wants);
        });
        row(&format!("md5-many multi-buffer, {lanes} streams in 64 KiB steps"), g, 1.0, "aggregate of all streams");
        let inputs: Vec<&[u8]> = streams.iter().map(Vec::as_slice).collect();
        let g = gbps(per * lanes, rounds, || {
            let mut out = vec![[0u8; 16]; lanes];
            md5_simd::Md5Engine::new().hash_many(&inputs, &mut out);
            assert_eq!(out, wants);
        });
        row(
            &format!("md5-simd hash_many, {lanes} whole messages"),
            g,
            1.0,
            &format!("one-shot only ({} lanes; its update_many is sequential)", md5_simd::Md5Engine::new().lanes()),
        );
    }

    // AES-256-GCM of the same stream (aws-lc-rs, in place, 64 KiB segments) for scale, then MD5 with it: in one
    // thread one after the other, and on two threads at once (wall clock; CPU is the sum of both threads).
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9u8; 32]).expect("key"));
    let seal = |buf: &mut [u8]| {
        for (i, seg) in buf.chunks_mut(FRAME).enumerate() {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::empty(), seg).expect("seal");
        }
    };
    let mut work = stream.clone();
    let aes = gbps(STREAM, rounds, || seal(&mut work));
    row("AES-256-GCM seal (aws-lc-rs), for scale", aes, 1.0, "");
    let g = gbps(STREAM, rounds, || {
        let mut h = md5::Md5::new();
        for (i, seg) in work.chunks_mut(FRAME).enumerate() {
            h.update(&stream[i * FRAME..i * FRAME + seg.len()]);
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::empty(), seg).expect("seal");
        }
        assert_eq!(<[u8; 16]>::from(h.finalize()), want);
    });
    row("MD5 then AES-GCM per segment, one thread", g, 1.0, "what an encrypting PUT with MD5 ETags does");
    let mut t_md5 = 0.0;
    let mut t_aes = 0.0;
    let g = gbps(STREAM, rounds, || {
        std::thread::scope(|s| {
            let hasher = s.spawn(|| {
                let t = Instant::now();
                let mut h = md5::Md5::new();
                stream.chunks(FRAME).for_each(|c| h.update(c));
                assert_eq!(<[u8; 16]>::from(h.finalize()), want);
                t.elapsed().as_secs_f64()
            });
            let t = Instant::now();
            seal(&mut work);
            t_aes = t.elapsed().as_secs_f64();
            t_md5 = hasher.join().expect("hasher");
        });
    });
    let cpu_per_gb = (t_md5 + t_aes) / (STREAM as f64 / 1e9);
    println!(
        "| MD5 on a second thread while AES-GCM runs, one stream | {g:.2} | {cpu_per_gb:.2} | wall clock of the pair; \
         CPU is both threads |"
    );
}
