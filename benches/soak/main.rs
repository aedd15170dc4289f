//! The soak: SeaweedFS and the release s3crypt binary as child processes, 32 clients running a mixed
//! workload (put, get, range, list, multipart, copy, delete) for ten minutes, each client owning its own keys so
//! that the expected content of every object is known exactly. At the end every object is read back and compared
//! byte for byte, every listing must match; the proxy's RSS and open descriptors are sampled throughout.
//! Exits non-zero on any error, mismatch or descriptor growth. Run by `./scripts/soak.sh` (not by the tests).
//!
//!   --seconds N   duration (default 600)     --clients N   concurrent clients (default 32)

#[path = "../gateway/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../gateway/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "../gateway/systems.rs"]
#[allow(dead_code)]
mod systems;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{BenchBody, S3, enc, xml_values};
use http::Method;

const MIB: u64 = 1024 * 1024;
const BUCKET: &str = "soak";
/// Object sizes: empty, tiny, under and over one segment, several segments, a whole multipart part.
const SIZES: [u64; 7] = [0, 1, 4096, 65_535, 100_000, MIB + 7, 5 * MIB];
const KEYS_PER_CLIENT: u64 = 12;
const OPS: [&str; 7] = ["put", "get", "range", "list", "multipart", "copy", "delete"];
/// Weights of the operations above (out of 100).
const WEIGHTS: [u32; 7] = [30, 25, 15, 8, 4, 8, 10];

/// What an object must contain: `len` bytes of the pattern from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Content {
    offset: u64,
    len: u64,
}

fn expected_bytes(pattern: &Bytes, c: Content, from: u64, to_inclusive: u64) -> Vec<u8> {
    let p = pattern.len() as u64;
    (from..=to_inclusive).map(|i| pattern[((c.offset + i) % p) as usize]).collect()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Counters {
    ops: [AtomicU64; 7],
    errors: AtomicU64,
    bytes: AtomicU64,
}

struct Client {
    id: usize,
    s3: S3,
    pattern: Bytes,
    objects: BTreeMap<String, Content>,
    rng: Rng,
}

impl Client {
    fn key(&mut self) -> String {
        format!("c{:02}/k{:02}", self.id, self.rng.below(KEYS_PER_CLIENT))
    }

    fn existing(&mut self) -> Option<(String, Content)> {
        if self.objects.is_empty() {
            return None;
        }
        let i = self.rng.below(self.objects.len() as u64) as usize;
        self.objects.iter().nth(i).map(|(k, c)| (k.clone(), *c))
    }

    async fn verify(&self, key: &str, c: Content, range: Option<(u64, u64)>) -> Result<u64, String> {
        let r = self.s3.get(BUCKET, key, range, true).await?;
        let got = r.body.unwrap_or_default();
        let (from, to) = range.unwrap_or((0, c.len.saturating_sub(1)));
        let want = if c.len == 0 { Vec::new() } else { expected_bytes(&self.pattern, c, from, to) };
        if got != want {
            return Err(format!("{key} {range:?}: {} bytes differ from the {} expected", got.len(), want.len()));
        }
        Ok(got.len() as u64)
    }

    async fn list_matches(&self) -> Result<(), String> {
        let q = format!("/{BUCKET}?list-type=2&prefix={}", enc(&format!("c{:02}/", self.id)));
        let r = self.s3.send(Method::GET, &q, &[], BenchBody::Empty, true).await?;
        let xml = String::from_utf8_lossy(r.body.as_deref().unwrap_or_default()).into_owned();
        let listed = xml_values(&xml, "Key");
        let sizes: Vec<u64> = xml_values(&xml, "Size").iter().filter_map(|s| s.parse().ok()).collect();
        let want: Vec<&String> = self.objects.keys().collect();
        let want_sizes: Vec<u64> = self.objects.values().map(|c| c.len).collect();
        if listed.iter().collect::<Vec<_>>() != want || sizes != want_sizes {
            return Err(format!("listing of client {}: {listed:?} {sizes:?} vs {want:?} {want_sizes:?}", self.id));
        }
        Ok(())
    }

    /// One operation; returns the object bytes moved.
    async fn step(&mut self, op: usize) -> Result<u64, String> {
        match OPS[op] {
            "put" => {
                let key = self.key();
                let c = Content {
                    offset: self.rng.below(self.pattern.len() as u64),
                    len: SIZES[self.rng.below(SIZES.len() as u64) as usize],
                };
                let body = BenchBody::pattern(&self.pattern, c.offset, c.len);
                self.s3.send(Method::PUT, &format!("/{BUCKET}/{key}"), &[], body, false).await?;
                self.objects.insert(key, c);
                Ok(c.len)
            }
            "get" => match self.existing() {
                Some((k, c)) => self.verify(&k, c, None).await,
                None => Ok(0),
            },
            "range" => match self.existing() {
                Some((k, c)) if c.len > 0 => {
                    let a = self.rng.below(c.len);
                    let b = (a + self.rng.below(2 * 65_536)).min(c.len - 1);
                    self.verify(&k, c, Some((a, b))).await
                }
                _other => Ok(0),
            },
            "list" => self.list_matches().await.map(|()| 0),
            "multipart" => {
                let key = self.key();
                let len = 10 * MIB + self.rng.below(MIB);
                let offset = self.rng.below(self.pattern.len() as u64);
                // The pattern body starts at `offset` for the whole object: parts continue it.
                let mut rotated = Vec::with_capacity(self.pattern.len());
                rotated.extend_from_slice(&self.pattern[offset as usize..]);
                rotated.extend_from_slice(&self.pattern[..offset as usize]);
                let rotated = Bytes::from(rotated);
                self.s3.multipart(BUCKET, &key, &rotated, len, 5 * MIB, 2).await?;
                self.objects.insert(key, Content { offset, len });
                Ok(len)
            }
            "copy" => match self.existing() {
                Some((src, c)) => {
                    let dst = self.key();
                    if dst == src {
                        return Ok(0); // a copy onto itself needs REPLACE metadata: not this workload's business
                    }
                    let headers = [("x-amz-copy-source", format!("/{BUCKET}/{}", enc(&src).replace("%2F", "/")))];
                    let r = self
                        .s3
                        .send(Method::PUT, &format!("/{BUCKET}/{dst}"), &headers, BenchBody::Empty, true)
                        .await?;
                    let body = String::from_utf8_lossy(r.body.as_deref().unwrap_or_default()).into_owned();
                    if body.contains("<Error>") {
                        return Err(format!("copy {src} → {dst}: {body}"));
                    }
                    self.objects.insert(dst, c);
                    Ok(0)
                }
                None => Ok(0),
            },
            "delete" => match self.existing() {
                Some((k, _)) => {
                    self.s3.delete(BUCKET, &k).await?;
                    self.objects.remove(&k);
                    Ok(0)
                }
                None => Ok(0),
            },
            other => Err(format!("unknown op {other}")),
        }
    }
}

fn pick(rng: &mut Rng) -> usize {
    let mut r = rng.below(100) as u32;
    for (i, w) in WEIGHTS.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    0
}

/// Asks the SeaweedFS master to compact volumes with more than 10 % garbage (best effort).
fn vacuum_seaweedfs(master_port: u16) {
    use std::io::{Read, Write};
    if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", master_port)) {
        let _ = c.set_read_timeout(Some(Duration::from_secs(120)));
        let req = format!("GET /vol/vacuum?garbageThreshold=0.1 HTTP/1.0\r\nHost: 127.0.0.1:{master_port}\r\n\r\n");
        if c.write_all(req.as_bytes()).is_ok() {
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink);
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 600);
    let clients = arg("--clients", 32) as usize;
    let bin = std::env::var("S3CRYPT_BENCH_BIN").expect("S3CRYPT_BENCH_BIN: the release s3crypt binary");
    let weed = std::env::var("S3CRYPT_BENCH_WEED").expect("S3CRYPT_BENCH_WEED: the weed binary");
    let dir = procs::work_dir();
    let certs = procs::make_certs(&dir);
    // Overwrites and deletes leave garbage in SeaweedFS volumes until a vacuum (about 100 MB/s of writes here: ten
    // minutes of churn would fill the disk). `weed mini` does not sweep on its own schedule quickly enough, so the
    // harness asks the master to vacuum every 20 s (SeaweedFS's /vol/vacuum), as an operator's cron would.
    let master_port = procs::free_port();
    let master_flag = format!("-master.port={master_port}");
    let sw = systems::start_seaweedfs_with(&weed, &dir, &certs, &[&master_flag, "-master.volumeSizeLimitMB=256"]);
    let upstream = format!("http://127.0.0.1:{}", sw.http_port);
    let proxy = systems::start_s3crypt(&bin, &dir, "s3crypt", &certs, &upstream, (systems::SW_AK, systems::SW_SK), &[]);
    let pid = proxy.proc.pid();
    let base = format!("https://127.0.0.1:{}", proxy.port);
    let s3 = S3::new(&base, &certs.ca_pem, systems::PROXY_AK, systems::PROXY_SK);
    s3.create_bucket(BUCKET).await.expect("create bucket");
    let pattern = Bytes::from((0..(1u64 << 20) + 13).map(|i| (i * 131 % 251) as u8).collect::<Vec<u8>>());

    // Warm-up so the descriptor baseline includes the pools.
    for i in 0..clients {
        s3.send(Method::PUT, &format!("/{BUCKET}/warm{i}"), &[], BenchBody::pattern(&pattern, 0, 10), false)
            .await
            .expect("warm-up");
    }
    let fds_start = open_fds(pid);
    let rss_start = procs::rss_mib(&[pid]);
    eprintln!("soak: {clients} clients for {seconds} s; proxy RSS {rss_start:.1} MiB, {fds_start} fds");

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let vacuum = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(20));
                vacuum_seaweedfs(master_port);
            }
        })
    };
    let errors: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut samples = vec![(0u64, rss_start, fds_start, 0u64)];
    let mut tasks = Vec::new();
    for id in 0..clients {
        let mut c = Client {
            id,
            s3: s3.clone(),
            pattern: pattern.clone(),
            objects: BTreeMap::new(),
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)),
        };
        let (counters, stop, errors) = (counters.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let op = pick(&mut c.rng);
                match c.step(op).await {
                    Ok(bytes) => {
                        counters.ops[op].fetch_add(1, Ordering::Relaxed);
                        counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        let mut errs = errors.lock().unwrap();
                        if errs.len() < 20 {
                            errs.push(format!("{}: {e}", OPS[op]));
                        }
                    }
                }
            }
            c
        }));
    }
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(10).min(Duration::from_secs(seconds))).await;
        let done: u64 = counters.ops.iter().map(|o| o.load(Ordering::Relaxed)).sum();
        let s = (started.elapsed().as_secs(), procs::rss_mib(&[pid]), open_fds(pid), done);
        eprintln!(
            "soak: t={:>4}s RSS {:.1} MiB, {} fds, {} ops, {} errors",
            s.0,
            s.1,
            s.2,
            s.3,
            counters.errors.load(Ordering::Relaxed)
        );
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = vacuum.join();
    let mut finished = Vec::new();
    for t in tasks {
        finished.push(t.await.expect("client task"));
    }
    let elapsed = started.elapsed();

    // Verify everything.
    let mut verified = 0u64;
    let mut verified_bytes = 0u64;
    let mut mismatches = Vec::new();
    let mut verified_listings = 0usize;
    for c in &finished {
        verified_listings += 1;
        if let Err(e) = c.list_matches().await {
            mismatches.push(e);
        }
        for (k, content) in &c.objects {
            match c.verify(k, *content, None).await {
                Ok(n) => {
                    verified += 1;
                    verified_bytes += n;
                }
                Err(e) => mismatches.push(e),
            }
        }
    }
    // The load generator's connections close; the proxy's pooled upstream connections may stay (up to its pool
    // size): descriptors must not exceed what the steady load held.
    drop(finished);
    drop(s3);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fds_end = open_fds(pid);
    let steady = samples.iter().map(|s| s.2).max().unwrap_or(fds_start);
    let rss_end = procs::rss_mib(&[pid]);
    let peak = procs::peak_rss_mib(&[pid]);

    let mut out = String::new();
    let total_ops: u64 = counters.ops.iter().map(|o| o.load(Ordering::Relaxed)).sum();
    let errors_n = counters.errors.load(Ordering::Relaxed);
    out.push_str(&format!(
        "## Soak: {clients} clients, {:.0} s, SeaweedFS behind the release s3crypt (encrypting)\n\n",
        elapsed.as_secs_f64()
    ));
    out.push_str("| | |\n|---|---|\n");
    out.push_str(&format!(
        "| operations | {total_ops} ({:.0}/s), {:.2} GB of object data moved |\n",
        total_ops as f64 / elapsed.as_secs_f64(),
        counters.bytes.load(Ordering::Relaxed) as f64 / 1e9
    ));
    for (i, name) in OPS.iter().enumerate() {
        out.push_str(&format!("| {name} | {} |\n", counters.ops[i].load(Ordering::Relaxed)));
    }
    out.push_str(&format!("| errors | {errors_n} |\n"));
    out.push_str(&format!(
        "| final verification | {verified} objects, {:.1} MiB, read back byte-exact; {} listings compared; {} mismatches |\n",
        verified_bytes as f64 / MIB as f64,
        verified_listings,
        mismatches.len()
    ));
    out.push_str(&format!(
        "| proxy RSS | {rss_start:.1} MiB after warm-up, {rss_end:.1} MiB at the end, peak {peak:.1} MiB |\n"
    ));
    out.push_str(&format!(
        "| proxy open descriptors | {fds_start} after warm-up, at most {steady} under load, {fds_end} once the clients \
         disconnected |\n\n"
    ));
    out.push_str(
        "RSS and descriptors over time (every 10 s):\n\n| t (s) | RSS MiB | fds | ops so far |\n|---|---|---|---|\n",
    );
    for (t, rss, fds, ops) in &samples {
        out.push_str(&format!("| {t} | {rss:.1} | {fds} | {ops} |\n"));
    }
    for e in errors.lock().unwrap().iter().chain(mismatches.iter()).take(20) {
        out.push_str(&format!("\n- {e}"));
    }
    println!("{out}");
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let _ = std::fs::create_dir_all(&out_dir);
    let file = out_dir.join(format!(
        "soak-{}.md",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    ));
    let _ = std::fs::write(&file, &out);
    eprintln!("soak: written to {}", file.display());
    let fd_leak = fds_end > steady;
    if errors_n > 0 || !mismatches.is_empty() || fd_leak {
        eprintln!("soak: FAILED ({errors_n} errors, {} mismatches, fd leak: {fd_leak})", mismatches.len());
        std::process::exit(1);
    }
}
