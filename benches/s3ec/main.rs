//! What reading objects of the AWS S3 Encryption Client costs (docs/S3EC.md): SeaweedFS and the release
//! s3crypt binary as child processes; for each size, an S3EC V3 object (raw AES wrap, written straight to the
//! store in the Java client's layout) and an s3crypt object of the same plaintext. Reports, side by side, GET and a
//! 1 KiB range of each through s3crypt and the stored bytes read straight from the store, median of `--rounds`
//! sequential reads, and the proxy's peak RSS while it serves the S3EC reads (they are buffered whole).
//! Run by `./scripts/bench.sh --s3ec`; not a test. Markdown on stdout and in target/bench-results/s3ec-<time>.md.

#[path = "../gateway/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../gateway/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "../gateway/systems.rs"]
#[allow(dead_code)]
mod systems;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use client::{BenchBody, S3};
use http::Method;
use s3crypt::crypto::aead::SegmentCipher;
use s3crypt::crypto::keys::{DataKey, Kek};
use s3crypt::crypto::s3ec::derive_v3;

const MIB: u64 = 1024 * 1024;
const BUCKET: &str = "s3ec-bench";
const SIZES: [u64; 3] = [MIB, 16 * MIB, 64 * MIB];
const WRAPPING_KEY: [u8; 32] = [0x5a; 32];

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn plaintext(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// An S3EC V3 object (suite 0x0073, raw AES wrap `02`): its metadata headers and stored bytes.
fn s3ec_object(plain: &[u8]) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let pdk = DataKey::generate().expect("rng");
    let message_id: [u8; 28] = s3crypt::crypto::keys::random_bytes().expect("rng");
    let (content_key, commitment) = derive_v3(&pdk, &message_id);
    let mut body = plain.to_vec();
    let tag = SegmentCipher::new(&content_key).seal([0x01; 12], &[0x00, 0x73], &mut body);
    body.extend_from_slice(&tag);
    let edk = Kek::new("bench", WRAPPING_KEY).wrap(&pdk, b"AES/GCM/NoPadding").expect("wrap");
    let meta = vec![
        ("x-amz-meta-x-amz-c", "115".to_owned()),
        ("x-amz-meta-x-amz-3", B64.encode(&edk)),
        ("x-amz-meta-x-amz-w", "02".to_owned()),
        ("x-amz-meta-x-amz-m", "{}".to_owned()),
        ("x-amz-meta-x-amz-i", B64.encode(message_id)),
        ("x-amz-meta-x-amz-d", B64.encode(commitment)),
    ];
    (meta, body)
}

/// Median wall-clock seconds of `rounds` sequential GETs, checking the length returned.
async fn timed_get(s3: &S3, key: &str, range: Option<(u64, u64)>, want: u64, rounds: u64) -> f64 {
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let r = s3.get(BUCKET, key, range, false).await.unwrap_or_else(|e| panic!("GET {key}: {e}"));
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(r.bytes, want, "{key}");
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds = arg("--rounds", 7);
    let bin = std::env::var("S3CRYPT_BENCH_BIN").expect("S3CRYPT_BENCH_BIN: the release s3crypt binary");
    let weed = std::env::var("S3CRYPT_BENCH_WEED").expect("S3CRYPT_BENCH_WEED: the weed binary");
    let dir = procs::work_dir();
    let certs = procs::make_certs(&dir);
    let sw = systems::start_seaweedfs(&weed, &dir, &certs);
    let ring = dir.join("s3ec-aes.toml");
    std::fs::write(&ring, format!("current = \"bench\"\n[keys]\nbench = \"{}\"\n", B64.encode(WRAPPING_KEY)))
        .expect("s3ec keyring");
    std::fs::set_permissions(&ring, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let extra = format!(
        "[encryption.s3ec]\nenabled = true\nscope = [\"{BUCKET}\"]\naes_keyring_file = \"{}\"\nmax_object_size = {}\nmax_buffered = {}\n",
        ring.display(),
        128 * MIB,
        512 * MIB
    );
    let upstream = format!("http://127.0.0.1:{}", sw.http_port);
    let proxy = systems::start_s3crypt_with(
        &bin,
        &dir,
        "s3crypt",
        &certs,
        &upstream,
        (systems::SW_AK, systems::SW_SK),
        &[],
        systems::Tuning::default(),
        &extra,
    );
    let pid = proxy.proc.pid();
    let through =
        S3::new(&format!("https://127.0.0.1:{}", proxy.port), &certs.ca_pem, systems::PROXY_AK, systems::PROXY_SK);
    let direct = S3::new(&upstream, &certs.ca_pem, systems::SW_AK, systems::SW_SK);
    through.create_bucket(BUCKET).await.expect("bucket");

    let mut out = String::from(
        "## Reading S3 Encryption Client objects through s3crypt (median wall-clock of sequential reads)\n\n\
         | object | GET: store direct (http) | GET: s3crypt object | GET: S3EC object | S3EC ÷ s3crypt | 1 KiB range: \
         s3crypt object | 1 KiB range: S3EC object | proxy peak RSS during the S3EC reads |\n|---|---|---|---|---|---|---|---|\n",
    );
    for size in SIZES {
        let plain = plaintext(size);
        let (meta, stored) = s3ec_object(&plain);
        let stored_len = stored.len() as u64;
        let s3ec_key = format!("s3ec-{size}");
        let native_key = format!("native-{size}");
        direct
            .send(
                Method::PUT,
                &format!("/{BUCKET}/{s3ec_key}"),
                &meta.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>(),
                BenchBody::Full(Some(Bytes::from(stored))),
                false,
            )
            .await
            .expect("PUT S3EC object");
        through
            .send(
                Method::PUT,
                &format!("/{BUCKET}/{native_key}"),
                &[],
                BenchBody::Full(Some(Bytes::from(plain.clone()))),
                false,
            )
            .await
            .expect("PUT s3crypt object");
        // Correctness first: the S3EC object reads back exactly.
        let got = through.get(BUCKET, &s3ec_key, None, true).await.expect("GET S3EC");
        assert!(got.body.as_deref() == Some(&plain[..]), "S3EC object {size} did not read back");

        let store = timed_get(&direct, &s3ec_key, None, stored_len, rounds).await;
        let native = timed_get(&through, &native_key, None, size, rounds).await;
        let rss_before = procs::rss_mib(&[pid]);
        procs::reset_peak(&[pid]);
        let s3ec = timed_get(&through, &s3ec_key, None, size, rounds).await;
        let peak = procs::peak_rss_mib(&[pid]);
        let mid = size / 2;
        let native_range = timed_get(&through, &native_key, Some((mid, mid + 1023)), 1024, rounds).await;
        let s3ec_range = timed_get(&through, &s3ec_key, Some((mid, mid + 1023)), 1024, rounds).await;
        let ms = |s: f64| format!("{:.1} ms", s * 1000.0);
        out.push_str(&format!(
            "| {} MiB | {} | {} | {} | {:.2}× | {} | {} | {:.1} MiB (before: {:.1}) |\n",
            size / MIB,
            ms(store),
            ms(native),
            ms(s3ec),
            s3ec / native,
            ms(native_range),
            ms(s3ec_range),
            peak,
            rss_before
        ));
        eprintln!("s3ec bench: {} MiB done", size / MIB);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    out.push_str(&format!("\n{rounds} sequential reads per cell, one client, this machine ({}).\n", procs_machine()));
    print!("{out}");
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let _ = std::fs::create_dir_all(&results);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let _ = std::fs::write(results.join(format!("s3ec-{stamp}.md")), out);
}

fn procs_machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores")
}
