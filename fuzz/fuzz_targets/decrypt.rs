//! The decryptor over arbitrary and mutated ciphertext: a known object (1 KiB segments, so a few hundred bytes of
//! input span several) is flipped, truncated, extended, spliced or replaced by the fuzzer's bytes. Whatever comes
//! out must be the original plaintext (or its prefix, for a body cut short before its error): nothing
//! unauthenticated is ever returned. Also feeds the envelope parser arbitrary metadata values, and the key-wrap
//! reader (both layouts) arbitrary wrapped keys: none opens.
#![no_main]

mod common;

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use s3crypt::crypto::body::{DecryptBody, EncryptBody, ReadPlan};
use s3crypt::crypto::envelope::Envelope;
use s3crypt::crypto::format::{SINGLE_PUT_PART, plaintext_len, segment_count};
use s3crypt::crypto::keys::DataKey;
use s3crypt::crypto::stream::Layout;

const SEGMENT: u32 = 1024;

fn plaintext() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| (0..3000u32).map(|i| (i * 31 % 251) as u8).collect())
}

fn dek() -> Arc<DataKey> {
    Arc::new(DataKey::from_bytes([0x42; 32]))
}

fn ciphertext() -> &'static [u8] {
    static C: OnceLock<Vec<u8>> = OnceLock::new();
    C.get_or_init(|| {
        let p = plaintext();
        let body = EncryptBody::new(common::frames(p, &[7]), &dek(), SINGLE_PUT_PART, [5; 8], SEGMENT, p.len() as u64);
        common::drain(body).expect("encrypt")
    })
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let valid = ciphertext();
    let rest = &data[1..];
    let input: Vec<u8> = match data[0] % 5 {
        0 => rest.to_vec(),
        1 => {
            // XOR the fuzzer's bytes in at a position it picks.
            let mut c = valid.to_vec();
            if rest.len() >= 2 {
                let at = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % c.len();
                for (i, b) in rest[2..].iter().enumerate() {
                    let j = (at + i) % c.len();
                    c[j] ^= b;
                }
            }
            c
        }
        2 => {
            let cut = rest.first().map_or(0, |&b| usize::from(b) * 13) % valid.len();
            valid[..cut].to_vec()
        }
        3 => {
            let mut c = valid.to_vec();
            c.extend_from_slice(rest);
            c
        }
        _ => {
            // Splice: the fuzzer's bytes replace a stretch of the valid object.
            let at = rest.first().map_or(0, |&b| usize::from(b) * 11) % valid.len();
            let mut c = valid[..at].to_vec();
            c.extend_from_slice(rest);
            c.extend_from_slice(&valid[(at + rest.len()).min(valid.len())..]);
            c
        }
    };
    if let Some(plain) = plaintext_len(input.len() as u64, SEGMENT, false) {
        let plan = ReadPlan {
            segment_size: SEGMENT,
            cipher_total: input.len() as u64,
            first_segment: 0,
            end_segment: segment_count(plain, SEGMENT),
            discard: 0,
            skip: 0,
            take: plain,
        };
        let body = DecryptBody::new(common::frames(&input, &data[..data.len().min(3)]), dek(), Layout::Single, plan);
        if let Ok(out) = common::drain(body) {
            assert_eq!(out, plaintext(), "decryption returned something other than the authenticated object");
        }
    }
    // The envelope parser: the fuzzer's bytes as the metadata values.
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(4, '\n');
    let mut headers = http::HeaderMap::new();
    for name in ["x-amz-meta-s3crypt-v", "x-amz-meta-s3crypt-seg", "x-amz-meta-s3crypt-kek", "x-amz-meta-s3crypt-dek"] {
        if let Some(v) = parts.next().and_then(|v| http::HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    let _ = Envelope::from_headers(&headers);
    // The wrapped-key reader, on bytes the store could put in an envelope: nothing made without the key opens.
    assert!(s3crypt::crypto::keys::open_wrap(&[0x42; 32], rest, b"aad").is_none(), "a forged wrap opened");
});
