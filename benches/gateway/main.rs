//! The side-by-side gateway benchmark (`scripts/bench.sh` runs it): the same workloads against the same store
//! (SeaweedFS, and the embedded s3s-fs store) directly over http and https, through nginx as a TLS reverse
//! proxy, and through s3crypt storing plaintext (pass-through) and encrypting. Systems are interleaved within
//! each round (their order rotates), every figure is the median over the rounds, and besides wall-clock numbers
//! it reports each proxy's own CPU seconds per GB moved and peak RSS, from /proc. Prints Markdown.
//!
//!   cargo bench --bench gateway -- [--rounds N] [--quick] [--upstreams seaweedfs,embedded] [--out FILE]
//!                                  [--workloads get-big,put4k-c1,get64k-c16,...,checks]
//!                                  [--systems http,https,nginx1,nginx,pass,enc,enc-md5,enc-1t]
//!                                  [--perf DIR]
//!
//! Needs: S3CRYPT_BENCH_BIN (the release s3crypt binary), S3CRYPT_BENCH_WEED (SeaweedFS `weed`), `nginx`.

mod client;
mod procs;
mod systems;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use client::S3;
use systems::{PROXY_AK, PROXY_SK, SW_AK, SW_SK};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    DirectHttp,
    DirectHttps,
    /// nginx with one worker process (the reference of the uploads-and-small-requests targets) and with
    /// `worker_processes auto`.
    Nginx1,
    Nginx,
    PassThrough,
    /// The encrypting proxy as the targets are set: SSE-S3 PUTs without plaintext-MD5 ETags.
    Encrypting,
    /// Its default configuration: plaintext-MD5 ETags on (measured on uploads only).
    EncryptingMd5,
    /// `server.worker_threads = 1` (scaling figures).
    Encrypting1T,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::DirectHttp => "direct, http",
            Kind::DirectHttps => "direct, https",
            Kind::Nginx1 => "nginx (TLS), 1 worker",
            Kind::Nginx => "nginx (TLS), auto workers",
            Kind::PassThrough => "s3crypt pass-through",
            Kind::Encrypting => "s3crypt encrypting",
            Kind::EncryptingMd5 => "s3crypt encrypting, MD5 ETags on",
            Kind::Encrypting1T => "s3crypt encrypting, 1 worker thread",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Kind::DirectHttp => "http",
            Kind::DirectHttps => "https",
            Kind::Nginx1 => "nginx1",
            Kind::Nginx => "nginx",
            Kind::PassThrough => "pass",
            Kind::Encrypting => "enc",
            Kind::EncryptingMd5 => "enc-md5",
            Kind::Encrypting1T => "enc-1t",
        }
    }
    /// Whether this system runs workload `w` (MD5 ETags only change uploads).
    fn runs(self, w: Workload) -> bool {
        self != Kind::EncryptingMd5 || w.is_upload()
    }
}

/// One system: how to reach it and which processes are "the proxy" (none for direct access).
struct System {
    kind: Kind,
    s3: S3,
    port: u16,
    tls: bool,
    proxy_pids: Vec<u32>,
    /// s3crypt's admin listener: its upstream latency histogram splits a request's time into store and proxy.
    admin_port: Option<u16>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Workload {
    Put256,
    Get256,
    Put1G,
    Get1G,
    Multipart1G,
    Ranged1M,
    /// Small objects: PUT or GET of `kib` KiB at `conc` requests in flight (latency, CPU per request).
    Small {
        put: bool,
        kib: u64,
        conc: usize,
    },
    /// 64 KiB GETs at concurrency 16 with 1,000 idle client connections open.
    Get64kIdle1000,
}

impl Workload {
    fn label(self, s: &Sizes) -> String {
        match self {
            Workload::Put256 => format!("PUT {}, one stream", human(s.mid)),
            Workload::Get256 => format!("GET {}, one stream", human(s.mid)),
            Workload::Put1G => format!("PUT {}, one stream", human(s.big)),
            Workload::Get1G => format!("GET {}, one stream", human(s.big)),
            Workload::Multipart1G => format!("multipart PUT {}, 8 MiB parts, 8 in parallel", human(s.big)),
            Workload::Ranged1M => {
                format!("ranged GET 1 MiB at random offsets of the {} object, 4 in parallel", human(s.big))
            }
            Workload::Small { put, kib, conc } => {
                format!("{kib} KiB {}, concurrency {conc}", if put { "PUT" } else { "GET" })
            }
            Workload::Get64kIdle1000 => "64 KiB GET, concurrency 16, with 1,000 idle client connections open".into(),
        }
    }
    /// The name `--workloads` selects it by.
    fn short(self) -> String {
        match self {
            Workload::Put256 => "put-mid".into(),
            Workload::Get256 => "get-mid".into(),
            Workload::Put1G => "put-big".into(),
            Workload::Get1G => "get-big".into(),
            Workload::Multipart1G => "multipart".into(),
            Workload::Ranged1M => "ranged".into(),
            Workload::Small { put, kib, conc } => format!("{}{kib}k-c{conc}", if put { "put" } else { "get" }),
            Workload::Get64kIdle1000 => "get64k-idle".into(),
        }
    }
    fn is_latency(self) -> bool {
        matches!(self, Workload::Small { .. } | Workload::Get64kIdle1000)
    }
    fn is_upload(self) -> bool {
        matches!(self, Workload::Put256 | Workload::Put1G | Workload::Multipart1G | Workload::Small { put: true, .. })
    }
    /// The small-request workloads the targets name: 4 and 64 KiB, PUT and GET, concurrency 1 and 16.
    fn small() -> Vec<Workload> {
        let mut v = Vec::new();
        for kib in [4, 64] {
            for conc in [1, 16] {
                for put in [true, false] {
                    v.push(Workload::Small { put, kib, conc });
                }
            }
        }
        v
    }
    fn all() -> Vec<Workload> {
        use Workload::*;
        let mut v = vec![Put256, Get256, Put1G, Get1G, Multipart1G, Ranged1M];
        v.extend(Workload::small());
        v.push(Get64kIdle1000);
        v
    }
}

fn human(n: u64) -> String {
    if n >= GIB && n.is_multiple_of(GIB) { format!("{} GiB", n / GIB) } else { format!("{} MiB", n / MIB) }
}

/// Object sizes and request counts (`--quick` shrinks them for a smoke run).
struct Sizes {
    mid: u64,
    big: u64,
    huge: u64,
    /// Requests per small-object workload at concurrency 1, and at higher concurrency.
    small_c1: usize,
    small_cn: usize,
    ranged: usize,
}

/// One run's measurements.
#[derive(Clone, Default, Debug)]
struct Sample {
    gbps: Option<f64>,
    ops: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cpu_per_gb: Option<f64>,
    cpu_us_per_op: Option<f64>,
    peak_rss: Option<f64>,
    rss_now: Option<f64>,
    /// Mean time the store took per upstream request (from s3crypt's own histogram), and upstream requests per op.
    upstream_ms: Option<f64>,
    upstream_per_op: Option<f64>,
    mean_ms: Option<f64>,
}

/// `s3crypt_upstream_request_duration_seconds` sum and count from the admin listener.
async fn upstream_histogram(port: u16) -> Option<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").await.ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).await.ok()?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))?
            .split_whitespace()
            .last()?
            .parse()
            .ok()
    };
    Some((
        value("s3crypt_upstream_request_duration_seconds_sum")?,
        value("s3crypt_upstream_request_duration_seconds_count")?,
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Random bytes repeated: the data every PUT sends (incompressible, so no store can shortcut it).
fn pattern() -> Bytes {
    let mut v = vec![0u8; MIB as usize];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    Bytes::from(v)
}

struct Ctx {
    /// `--workloads a,b` / `--systems x,y` (short names): run only these (for profiling one path).
    workloads: Option<Vec<String>>,
    systems: Option<Vec<String>>,
    pattern: Bytes,
    sizes: Sizes,
    ca_pem: Vec<u8>,
    /// `--perf DIR`: a `perf record` of each proxy per workload, in DIR (scripts/profile.sh draws the flame graphs).
    perf: Option<std::path::PathBuf>,
}

fn bucket(up: &str, kind: Kind, round: usize) -> String {
    format!("bench-{up}-{}-r{round}", kind.short())
}

/// Measures one workload on one system: wall clock, latencies, and the proxy's CPU and peak RSS.
async fn run_one(ctx: &Ctx, sys: &System, b: &str, w: Workload) -> Result<Sample, String> {
    let s = &ctx.sizes;
    let pids = sys.proxy_pids.clone();
    procs::reset_peak(&pids);
    // The idle connections count in the peak RSS; their handshakes do not count in the load's CPU.
    let mut idle_conns = Vec::new();
    if w == Workload::Get64kIdle1000 {
        idle_conns = open_idle(ctx, sys, 1000).await?;
    }
    let _perf = match &ctx.perf {
        Some(dir) if !pids.is_empty() => {
            procs::Perf::start(&pids, &dir.join(format!("{}-{}.perf.data", w.short(), sys.kind.short())))
        }
        _ => None,
    };
    let cpu0 = procs::cpu_seconds(&pids);
    let up0 = match sys.admin_port {
        Some(p) => upstream_histogram(p).await,
        None => None,
    };
    let started = std::time::Instant::now();
    let (bytes, lat): (u64, Vec<Duration>) = match w {
        Workload::Put256 | Workload::Put1G => {
            let n = if w == Workload::Put256 { s.mid } else { s.big };
            sys.s3.put(b, &format!("obj-{n}"), &ctx.pattern, n).await?;
            (n, vec![])
        }
        Workload::Get256 | Workload::Get1G => {
            let n = if w == Workload::Get256 { s.mid } else { s.big };
            let r = sys.s3.get(b, &format!("obj-{n}"), None, false).await?;
            if r.bytes != n {
                return Err(format!("GET returned {} bytes, expected {n}", r.bytes));
            }
            (n, vec![])
        }
        Workload::Multipart1G => {
            sys.s3.multipart(b, "obj-multipart", &ctx.pattern, s.big, 8 * MIB, 8).await?;
            (s.big, vec![])
        }
        Workload::Ranged1M => {
            let (s3, key, big, pat) = (sys.s3.clone(), format!("obj-{}", s.big), s.big, ctx.pattern.clone());
            let b2 = b.to_owned();
            let (lat, _) = client::run_concurrent(s.ranged, 4, move |i| {
                let (s3, key, b2, pat) = (s3.clone(), key.clone(), b2.clone(), pat.clone());
                async move {
                    let first = random_offset(i as u64, big - MIB);
                    let r = s3.get(&b2, &key, Some((first, first + MIB - 1)), true).await?;
                    check_pattern(&pat, first, r.body.as_deref().unwrap_or_default())
                }
            })
            .await?;
            (s.ranged as u64 * MIB, lat)
        }
        Workload::Small { put, kib, conc } => {
            let n = if conc == 1 { s.small_c1 } else { s.small_cn };
            let len = kib * 1024;
            let (s3, pat, b2) = (sys.s3.clone(), ctx.pattern.clone(), b.to_owned());
            let (lat, _) = client::run_concurrent(n, conc, move |i| {
                let (s3, pat, b2) = (s3.clone(), pat.clone(), b2.clone());
                async move {
                    if put {
                        s3.put(&b2, &format!("put-{kib}k-{}", i % 256), &pat, len).await.map(|_| ())
                    } else {
                        let r = s3.get(&b2, &format!("small-{kib}k-{}", i % 64), None, false).await?;
                        if r.bytes == len { Ok(()) } else { Err(format!("{kib} KiB GET returned {} bytes", r.bytes)) }
                    }
                }
            })
            .await?;
            (n as u64 * len, lat)
        }
        Workload::Get64kIdle1000 => {
            let (s3, b2) = (sys.s3.clone(), b.to_owned());
            let (lat, _) = client::run_concurrent(s.small_cn, 16, move |i| {
                let (s3, b2) = (s3.clone(), b2.clone());
                async move {
                    let r = s3.get(&b2, &format!("small-64k-{}", i % 64), None, false).await?;
                    if r.bytes == 65536 { Ok(()) } else { Err(format!("64 KiB GET returned {} bytes", r.bytes)) }
                }
            })
            .await?;
            (s.small_cn as u64 * 65536, lat)
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let mut sample = Sample::default();
    if !pids.is_empty() {
        let cpu = procs::cpu_seconds(&pids) - cpu0;
        sample.cpu_per_gb = Some(cpu / (bytes as f64 / 1e9));
        if !lat.is_empty() {
            sample.cpu_us_per_op = Some(cpu / lat.len() as f64 * 1e6);
        }
        sample.peak_rss = Some(procs::peak_rss_mib(&pids));
        sample.rss_now = Some(procs::rss_mib(&pids));
    }
    drop(idle_conns);
    if let (Some((s0, c0)), Some(p)) = (up0, sys.admin_port)
        && let Some((s1, c1)) = upstream_histogram(p).await
        && c1 > c0
    {
        sample.upstream_ms = Some((s1 - s0) / (c1 - c0) * 1000.0);
        if !lat.is_empty() {
            sample.upstream_per_op = Some((c1 - c0) / lat.len() as f64);
        }
    }
    sample.gbps = Some(bytes as f64 / wall / 1e9);
    if !lat.is_empty() {
        let mut lat = lat;
        lat.sort();
        sample.ops = Some(lat.len() as f64 / wall);
        sample.mean_ms = Some(lat.iter().map(Duration::as_secs_f64).sum::<f64>() / lat.len() as f64 * 1000.0);
        sample.p50_ms = Some(percentile(&lat, 0.50));
        sample.p99_ms = Some(percentile(&lat, 0.99));
    }
    Ok(sample)
}

/// A deterministic pseudo-random offset in [0, max).
fn random_offset(i: u64, max: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x % max
}

/// The body of a range read equals the pattern at that offset.
fn check_pattern(pattern: &Bytes, offset: u64, got: &[u8]) -> Result<(), String> {
    let p = pattern.len() as u64;
    let mut pos = offset;
    let mut rest = got;
    while !rest.is_empty() {
        let start = (pos % p) as usize;
        let n = (pattern.len() - start).min(rest.len());
        if rest[..n] != pattern[start..start + n] {
            return Err(format!("range at {offset}: wrong bytes"));
        }
        rest = &rest[n..];
        pos += n as u64;
    }
    if got.len() as u64 != MIB {
        return Err(format!("range at {offset}: {} bytes", got.len()));
    }
    Ok(())
}

/// Opens `n` client connections (TLS handshake done where the system speaks TLS) and leaves them idle.
async fn open_idle(ctx: &Ctx, sys: &System, n: usize) -> Result<Vec<Box<dyn std::any::Any + Send>>, String> {
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client::tls_config(&ctx.ca_pem)));
    let mut out: Vec<Box<dyn std::any::Any + Send>> = Vec::with_capacity(n);
    for _ in 0..n {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", sys.port)).await.map_err(|e| format!("idle: {e}"))?;
        if sys.tls {
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            let s = tls.connect(name, tcp).await.map_err(|e| format!("idle TLS: {e}"))?;
            out.push(Box::new(s));
        } else {
            out.push(Box::new(tcp));
        }
    }
    Ok(out)
}

/// Objects the read workloads need besides those written by the PUT workloads.
async fn prepare(ctx: &Ctx, sys: &System, b: &str) -> Result<(), String> {
    sys.s3.create_bucket(b).await?;
    let (s3, pat, b2) = (sys.s3.clone(), ctx.pattern.clone(), b.to_owned());
    client::run_concurrent(128, 8, move |i| {
        let (s3, pat, b2) = (s3.clone(), pat.clone(), b2.clone());
        let kib = if i < 64 { 4 } else { 64 };
        async move { s3.put(&b2, &format!("small-{kib}k-{}", i % 64), &pat, kib * 1024).await.map(|_| ()) }
    })
    .await?;
    Ok(())
}

type Results = BTreeMap<(Workload, Kind), Vec<Sample>>;

/// Runs every round against one store's systems; returns every sample.
async fn run_rounds(ctx: &Ctx, up: &str, systems: &[System], rounds: usize) -> Result<Results, String> {
    let mut results: Results = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("[{up}] round {}/{rounds}", round + 1);
        for sys in systems {
            prepare(ctx, sys, &bucket(up, sys.kind, round)).await?;
        }
        for w in Workload::all() {
            if ctx.workloads.as_ref().is_some_and(|only| !only.iter().any(|o| *o == w.short())) {
                continue;
            }
            for k in 0..systems.len() {
                let sys = &systems[(k + round) % systems.len()];
                if ctx.systems.as_ref().is_some_and(|only| !only.iter().any(|o| o == sys.kind.short()))
                    || !sys.kind.runs(w)
                {
                    continue;
                }
                let b = bucket(up, sys.kind, round);
                let sample = run_one(ctx, sys, &b, w).await.map_err(|e| format!("{up} {:?} {:?}: {e}", sys.kind, w))?;
                eprintln!("  {:<22} {:<60} {:?}", sys.kind.label(), w.label(&ctx.sizes), brief(&sample));
                results.entry((w, sys.kind)).or_default().push(sample);
            }
        }
        for sys in systems {
            sys.s3.remove_bucket(&bucket(up, sys.kind, round)).await?;
        }
    }
    Ok(results)
}

fn brief(s: &Sample) -> String {
    let mut o = String::new();
    if let Some(g) = s.gbps {
        let _ = write!(o, "{g:.3} GB/s");
    }
    if let Some(p) = s.p50_ms {
        let _ = write!(o, " p50 {p:.3} ms p99 {:.3} ms", s.p99_ms.unwrap_or(f64::NAN));
    }
    if let Some(c) = s.cpu_per_gb {
        let _ = write!(o, " cpu {c:.3} s/GB");
    }
    if let Some(r) = s.peak_rss {
        let _ = write!(o, " peak {r:.1} MiB");
    }
    if let Some(u) = s.upstream_ms {
        let _ = write!(o, " store {u:.3} ms/upstream req");
    }
    o
}

fn med(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(samples.iter().filter_map(&f).collect())
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.prec$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_owned(),
    }
}

/// The Markdown report for one store.
fn report(ctx: &Ctx, up_label: &str, baseline: Kind, kinds: &[Kind], results: &Results, rounds: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\n### Upstream: {up_label} (medians of {rounds} rounds)\n");
    let _ = writeln!(
        o,
        "Throughput ratios are against `{}` and against `s3crypt pass-through`; CPU is the proxy process's own \
         utime+stime per GB of object data (nginx: master + workers).\n",
        baseline.label()
    );
    let _ =
        writeln!(o, "| workload | system | GB/s | × direct | × pass-through | proxy CPU-s/GB | proxy peak RSS MiB |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for w in Workload::all().into_iter().filter(|w| !w.is_latency()) {
        let base = results.get(&(w, baseline)).and_then(|s| med(s, |x| x.gbps));
        let pass = results.get(&(w, Kind::PassThrough)).and_then(|s| med(s, |x| x.gbps));
        for &k in kinds {
            let Some(s) = results.get(&(w, k)) else { continue };
            let g = med(s, |x| x.gbps);
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                w.label(&ctx.sizes),
                k.label(),
                fmt(g, 3),
                ratio(g, base),
                ratio(g, pass),
                fmt(med(s, |x| x.cpu_per_gb), 2),
                fmt(med(s, |x| x.peak_rss), 1),
            );
        }
    }
    let _ = writeln!(
        o,
        "\n| workload | system | p50 ms | p99 ms | p50 added over direct ms | p99 added ms | ops/s | proxy CPU µs/op | mean ms | store time per upstream request, mean ms (upstream requests per op) | proxy's own time per op, mean ms | proxy peak RSS MiB |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for w in Workload::all().into_iter().filter(|w| w.is_latency()) {
        let b50 = results.get(&(w, baseline)).and_then(|s| med(s, |x| x.p50_ms));
        let b99 = results.get(&(w, baseline)).and_then(|s| med(s, |x| x.p99_ms));
        for &k in kinds {
            let Some(s) = results.get(&(w, k)) else { continue };
            let (p50, p99) = (med(s, |x| x.p50_ms), med(s, |x| x.p99_ms));
            let add = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if k != baseline => format!("{:+.3}", a - b),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                w.label(&ctx.sizes),
                k.label(),
                fmt(p50, 3),
                fmt(p99, 3),
                add(p50, b50),
                add(p99, b99),
                fmt(med(s, |x| x.ops), 0),
                fmt(med(s, |x| x.cpu_us_per_op), 0),
                fmt(med(s, |x| x.mean_ms), 3),
                match med(s, |x| x.upstream_ms) {
                    Some(u) => format!("{u:.3} ({})", fmt(med(s, |x| x.upstream_per_op), 2)),
                    None => "–".to_owned(),
                },
                fmt(med(s, |x| Some(x.mean_ms? - x.upstream_ms? * x.upstream_per_op?)), 3),
                fmt(med(s, |x| x.peak_rss), 1),
            );
        }
    }
    o
}

/// The median of one figure of one workload on one system.
fn figure(r: &Results, w: Workload, k: Kind, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    r.get(&(w, k)).and_then(|s| med(s, f))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The lower of the two nginx figures (one worker, auto workers): the stricter reference.
fn nginx_best(r: &Results, w: Workload, f: impl Fn(&Sample) -> Option<f64> + Copy) -> Option<f64> {
    match (figure(r, w, Kind::Nginx1, f), figure(r, w, Kind::Nginx, f)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One target row: s3crypt's figure `f` for (workload, system) against nginx's (met when no higher than the lower
/// of the two nginx figures), printed with `prec` decimals and `unit`.
fn against_nginx(
    o: &mut String,
    r: &Results,
    label: &str,
    target: &str,
    (w, k): (Workload, Kind),
    f: impl Fn(&Sample) -> Option<f64> + Copy,
    (prec, unit): (usize, &str),
) {
    let ours = figure(r, w, k, f);
    let best = nginx_best(r, w, f);
    let _ = writeln!(
        o,
        "| {target} | {label} | {}{unit} | nginx 1 worker {}{unit}, auto {}{unit} | {} |",
        fmt(ours, prec),
        fmt(figure(r, w, Kind::Nginx1, f), prec),
        fmt(figure(r, w, Kind::Nginx, f), prec),
        verdict(ours.zip(best).map(|(e, n)| e <= n)),
    );
}

/// Issue 20's targets, each met or missed, from this run's medians (SeaweedFS). No test asserts them: they are
/// read, with the profile, in docs/BENCHMARKS.md.
fn targets(ctx: &Ctx, r: &Results) -> String {
    use Workload::*;
    let mut o = String::new();
    let _ = writeln!(o, "\n### Targets (uploads and small requests against nginx), from this run (SeaweedFS)\n");
    let _ = writeln!(o, "| target | workload | s3crypt encrypting | reference | |");
    let _ = writeln!(o, "|---|---|---|---|---|");
    let cpu = |x: &Sample| x.cpu_per_gb;
    for w in [Put256, Put1G, Multipart1G] {
        let target = "PUT CPU-s/GB ≤ nginx's TLS pass-through (MD5 ETags off)";
        against_nginx(&mut o, r, &w.label(&ctx.sizes), target, (w, Kind::Encrypting), cpu, (2, ""));
    }
    for w in [Put256, Put1G, Multipart1G, Get256, Get1G, Ranged1M] {
        let enc = figure(r, w, Kind::Encrypting, cpu);
        let pass = figure(r, w, Kind::PassThrough, cpu);
        let x = enc.zip(pass).map(|(e, p)| e / p);
        let _ = writeln!(
            o,
            "| CPU-s/GB ≤ 1.1× s3crypt's own pass-through | {} | {} | pass-through {} (× {}) | {} |",
            w.label(&ctx.sizes),
            fmt(enc, 2),
            fmt(pass, 2),
            fmt(x, 2),
            verdict(x.map(|x| x <= 1.1)),
        );
    }
    let us = |x: &Sample| x.cpu_us_per_op;
    let p50 = |x: &Sample| x.p50_ms;
    for w in Workload::small() {
        for k in [Kind::Encrypting, Kind::Encrypting1T] {
            let on = if k == Kind::Encrypting { "" } else { " (1 worker thread)" };
            let target = format!("CPU per request ≤ nginx's{on}");
            against_nginx(&mut o, r, &w.label(&ctx.sizes), &target, (w, k), us, (0, " µs"));
            let added = figure(r, w, k, p50).zip(figure(r, w, Kind::DirectHttps, p50)).map(|(e, d)| e - d);
            let _ = writeln!(
                o,
                "| p50 added over direct https ≤ +0.15 ms{on} | {} | {} ms | nginx 1 worker {} ms, auto {} ms | {} |",
                w.label(&ctx.sizes),
                added.map_or("–".into(), |a| format!("{a:+.3}")),
                figure(r, w, Kind::Nginx1, p50)
                    .zip(figure(r, w, Kind::DirectHttps, p50))
                    .map_or("–".into(), |(n, d)| format!("{:+.3}", n - d)),
                figure(r, w, Kind::Nginx, p50)
                    .zip(figure(r, w, Kind::DirectHttps, p50))
                    .map_or("–".into(), |(n, d)| format!("{:+.3}", n - d)),
                verdict(added.map(|a| a <= 0.15)),
            );
        }
    }
    for w in [Put256, Put1G, Multipart1G] {
        let _ = writeln!(
            o,
            "| (no target) PUT CPU-s/GB with MD5 ETags on (the default) | {} | {} | MD5 off {} | |",
            w.label(&ctx.sizes),
            fmt(figure(r, w, Kind::EncryptingMd5, cpu), 2),
            fmt(figure(r, w, Kind::Encrypting, cpu), 2),
        );
    }
    o
}

/// One figure of a sample, derived.
type Figure = Box<dyn Fn(&Sample) -> Option<f64>>;

/// What a capacity planner needs: CPU per GB and per request, as core-seconds, with two worker threads (one per
/// core here) and with one, next to pass-through and nginx; then cores per unit of load.
fn scaling(ctx: &Ctx, r: &Results) -> String {
    let mut o = String::new();
    let cols =
        [Kind::Encrypting, Kind::Encrypting1T, Kind::EncryptingMd5, Kind::PassThrough, Kind::Nginx1, Kind::Nginx];
    let _ = writeln!(o, "\n### Scaling figures (SeaweedFS; proxy CPU only: utime + stime of its processes)\n");
    let _ = write!(o, "| workload | figure |");
    for k in cols {
        let _ = write!(o, " {} |", k.label());
    }
    let _ = writeln!(o, "\n|---|---|{}", "---|".repeat(cols.len()));
    for w in Workload::all() {
        let rows: [(&str, Figure, usize); 2] = if w.is_latency() {
            [
                ("CPU µs per request", Box::new(|x: &Sample| x.cpu_us_per_op), 0),
                ("requests per core-second", Box::new(|x: &Sample| x.cpu_us_per_op.map(|u| 1e6 / u)), 0),
            ]
        } else {
            [
                ("CPU-s/GB", Box::new(|x: &Sample| x.cpu_per_gb), 2),
                ("GB per core-second", Box::new(|x: &Sample| x.cpu_per_gb.map(|c| 1.0 / c)), 2),
            ]
        };
        for (name, f, prec) in rows {
            let _ = write!(o, "| {} | {name} |", w.label(&ctx.sizes));
            for k in cols {
                let _ = write!(o, " {} |", fmt(figure(r, w, k, &f), prec));
            }
            let _ = writeln!(o);
        }
    }
    let _ = writeln!(
        o,
        "\n#### Sizing: cores of CPU for the proxy alone (TLS, checks, encryption, re-signing), from the medians \
         above; the store and the network are extra\n"
    );
    let _ = writeln!(
        o,
        "| load | s3crypt encrypting | s3crypt encrypting, 1 worker thread | s3crypt, MD5 ETags on | s3crypt \
         pass-through | nginx, 1 worker |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let cpu = |x: &Sample| x.cpu_per_gb;
    for (label, w) in [
        ("1 GB/s of single-stream PUTs", Workload::Put1G),
        ("1 GB/s of multipart PUTs (8 MiB parts)", Workload::Multipart1G),
        ("1 GB/s of GETs", Workload::Get1G),
        ("1 GB/s of 1 MiB ranged GETs", Workload::Ranged1M),
    ] {
        let _ = writeln!(
            o,
            "| {label} | {} | {} | {} | {} | {} |",
            fmt(figure(r, w, Kind::Encrypting, cpu), 2),
            fmt(figure(r, w, Kind::Encrypting1T, cpu), 2),
            fmt(figure(r, w, Kind::EncryptingMd5, cpu), 2),
            fmt(figure(r, w, Kind::PassThrough, cpu), 2),
            fmt(figure(r, w, Kind::Nginx1, cpu), 2),
        );
    }
    let cores = |x: &Sample| x.cpu_us_per_op.map(|u| u * 1000.0 / 1e6);
    for w in Workload::small().into_iter().filter(|w| matches!(w, Workload::Small { conc: 16, .. })) {
        let _ = writeln!(
            o,
            "| 1,000 requests/s: {} | {} | {} | {} | {} | {} |",
            w.label(&ctx.sizes),
            fmt(figure(r, w, Kind::Encrypting, cores), 2),
            fmt(figure(r, w, Kind::Encrypting1T, cores), 2),
            fmt(figure(r, w, Kind::EncryptingMd5, cores), 2),
            fmt(figure(r, w, Kind::PassThrough, cores), 2),
            fmt(figure(r, w, Kind::Nginx1, cores), 2),
        );
    }
    o
}

/// Memory and upstream-traffic checks on the encrypting proxy (SeaweedFS): idle RSS, a huge single upload, 16
/// concurrent large transfers, and the bytes a 1 MiB range read pulls from the store (counted by a relay).
async fn checks(ctx: &Ctx, enc: &System, counted: &System, relay: &systems::Relay) -> Result<String, String> {
    let s = &ctx.sizes;
    let mut o = String::new();
    let pids = &enc.proxy_pids;
    let b = "bench-checks";
    enc.s3.create_bucket(b).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = procs::rss_mib(pids);
    let _ = writeln!(o, "\n### Memory and upstream traffic of the encrypting proxy (SeaweedFS)\n");
    let _ = writeln!(o, "| check | measured | target |");
    let _ = writeln!(o, "|---|---|---|");
    let _ = writeln!(o, "| RSS idle, after all rounds | {idle:.1} MiB | ≤ 64 MiB |");
    procs::reset_peak(pids);
    let base = procs::rss_mib(pids);
    enc.s3.put(b, "huge", &ctx.pattern, s.huge).await?;
    let peak = procs::peak_rss_mib(pids);
    let _ = writeln!(
        o,
        "| one {} PUT: peak RSS {peak:.1} MiB, over the RSS before it | {:+.1} MiB | < 8 MiB |",
        human(s.huge),
        peak - base
    );
    procs::reset_peak(pids);
    let base = procs::rss_mib(pids);
    let (s3, pat, b2, n) = (enc.s3.clone(), ctx.pattern.clone(), b.to_owned(), s.mid / 4);
    client::run_concurrent(16, 16, move |i| {
        let (s3, pat, b2) = (s3.clone(), pat.clone(), b2.clone());
        async move { s3.put(&b2, &format!("par-{i}"), &pat, n).await.map(|_| ()) }
    })
    .await?;
    let peak = procs::peak_rss_mib(pids);
    let _ = writeln!(
        o,
        "| 16 concurrent {} PUTs: (peak − before) / 16 | {:.2} MiB per request | ≤ 1 MiB |",
        human(n),
        (peak - base) / 16.0
    );
    procs::reset_peak(pids);
    let base = procs::rss_mib(pids);
    let (s3, b2) = (enc.s3.clone(), b.to_owned());
    client::run_concurrent(16, 16, move |i| {
        let (s3, b2) = (s3.clone(), b2.clone());
        async move { s3.get(&b2, &format!("par-{i}"), None, false).await.map(|_| ()) }
    })
    .await?;
    let peak = procs::peak_rss_mib(pids);
    let _ = writeln!(
        o,
        "| 16 concurrent {} GETs: (peak − before) / 16 | {:.2} MiB per request | ≤ 1 MiB |",
        human(n),
        (peak - base) / 16.0
    );
    // Memory with 1, 100 and 1,000 transfers in flight at once: every stream a 2 MiB object (32 segments, so all
    // of them are mid-stream together), PUTs then GETs.
    let each = 2 * MIB;
    for n in [1usize, 100, 1000] {
        for put in [true, false] {
            let before = procs::rss_mib(pids);
            procs::reset_peak(pids);
            let (s3, pat, b2) = (enc.s3.clone(), ctx.pattern.clone(), b.to_owned());
            client::run_concurrent(n, n, move |i| {
                let (s3, pat, b2) = (s3.clone(), pat.clone(), b2.clone());
                async move {
                    let key = format!("streams-{i}");
                    if put {
                        s3.put(&b2, &key, &pat, each).await.map(|_| ())
                    } else {
                        s3.get(&b2, &key, None, false).await.map(|_| ())
                    }
                }
            })
            .await?;
            let peak = procs::peak_rss_mib(pids);
            let _ = writeln!(
                o,
                "| {n} concurrent {} {} streams: peak RSS {peak:.1} MiB (before: {before:.1}) | {:.2} MiB per stream | ≤ 1 MiB |",
                human(each),
                if put { "PUT" } else { "GET" },
                (peak - before).max(0.0) / n as f64
            );
        }
    }
    enc.s3.remove_bucket(b).await?;

    // Range reads through the counting relay.
    let b = "bench-range-count";
    counted.s3.create_bucket(b).await?;
    counted.s3.put(b, "big", &ctx.pattern, s.big).await?;
    let reads = 32u64;
    let mut per = Vec::new();
    for i in 0..reads {
        let first = random_offset(i + 1000, s.big - MIB);
        let before = relay.from_upstream.load(std::sync::atomic::Ordering::Relaxed);
        let r = counted.s3.get(b, "big", Some((first, first + MIB - 1)), true).await?;
        check_pattern(&ctx.pattern, first, r.body.as_deref().unwrap_or_default())?;
        per.push((relay.from_upstream.load(std::sync::atomic::Ordering::Relaxed) - before) as f64);
    }
    let max = per.iter().cloned().fold(0.0, f64::max);
    let seg = (s3crypt::crypto::format::DEFAULT_SEGMENT_SIZE as u64 + s3crypt::crypto::format::SEGMENT_OVERHEAD) as f64;
    let _ = writeln!(
        o,
        "| bytes pulled from the store per 1 MiB range read of a {} object ({reads} random offsets; TCP payload \
         incl. response headers) | median {:.0}, max {:.0} = 1 MiB + {:.2} segments | ≤ 1 MiB + 2 segments |",
        human(s.big),
        median(per.clone()).unwrap_or_default(),
        max,
        (max - MIB as f64) / seg,
    );
    counted.s3.remove_bucket(b).await?;
    Ok(o)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} vCPUs, {:.0} GiB RAM, Linux {}", mem as f64 / 1024.0 / 1024.0, kernel.trim())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(if quick { 1 } else { 3 });
    let upstreams = arg("--upstreams").unwrap_or_else(|| "seaweedfs,embedded".into());
    let out = arg("--out");
    let bin = std::env::var("S3CRYPT_BENCH_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/s3crypt", env!("CARGO_MANIFEST_DIR")));
    let weed = std::env::var("S3CRYPT_BENCH_WEED").unwrap_or_else(|_| "weed".into());
    let nginx = std::env::var("S3CRYPT_BENCH_NGINX").unwrap_or_else(|_| "nginx".into());
    let sizes = if quick {
        Sizes { mid: 16 * MIB, big: 64 * MIB, huge: 256 * MIB, small_c1: 100, small_cn: 640, ranged: 32 }
    } else {
        Sizes { mid: 256 * MIB, big: GIB, huge: 4 * GIB, small_c1: 1000, small_cn: 4000, ranged: 256 }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = procs::work_dir();
    let certs = procs::make_certs(&dir);
    let list = |name: &str| arg(name).map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>());
    let ctx = Ctx {
        workloads: list("--workloads"),
        systems: list("--systems"),
        pattern: pattern(),
        sizes,
        ca_pem: certs.ca_pem.clone(),
        perf: arg("--perf").map(std::path::PathBuf::from),
    };
    // The memory and range-traffic checks run in full runs, or when `--workloads` names `checks`.
    let run_checks = ctx.workloads.as_ref().is_none_or(|w| w.iter().any(|x| x == "checks"));

    let mut md = String::new();
    let _ = writeln!(md, "Machine: {}. Load generator, proxies and stores share it.", machine());
    let result: Result<(), String> = rt.block_on(async {
        let sw = upstreams.contains("seaweedfs").then(|| systems::start_seaweedfs(&weed, &dir, &certs));
        let emb = if upstreams.contains("embedded") {
            Some(s3crypt::upstream::embedded::EmbeddedStore::start(&dir.join("embedded"), &[]).await?)
        } else {
            None
        };
        let mut up_ports = Vec::new();
        if let Some(sw) = &sw {
            up_ports.push(sw.http_port);
        }
        if let Some(e) = &emb {
            up_ports.push(e.addr.port());
        }
        let ngx = systems::start_nginx(&nginx, &dir, &certs, &up_ports, "auto");
        let ngx1 = systems::start_nginx(&nginx, &dir, &certs, &up_ports, "1");
        let (ngx_pids, ngx1_pids) = (ngx.proc.pids(), ngx1.proc.pids());
        let pass: Vec<String> =
            ["sw", "emb"].iter().flat_map(|up| (0..rounds).map(move |r| bucket(up, Kind::PassThrough, r))).collect();
        // The encrypting proxy as the targets are set (MD5 ETags off), its default configuration (MD5 ETags on),
        // and one worker thread.
        let md5_off = systems::Tuning { md5_etags: false, ..Default::default() };
        let one_thread = systems::Tuning { worker_threads: 1, md5_etags: false };
        let mut port_idx = 0;
        let mut keep_alive: Vec<systems::S3crypt> = Vec::new();
        let ca = &ctx.ca_pem;
        let via = |kind: Kind, proxy: &systems::S3crypt| System {
            kind,
            s3: S3::new(&format!("https://127.0.0.1:{}", proxy.port), ca, PROXY_AK, PROXY_SK),
            port: proxy.port,
            tls: true,
            proxy_pids: vec![proxy.proc.pid()],
            admin_port: Some(proxy.admin_port),
        };
        let direct = |kind: Kind, scheme: &str, port: u16, ak: &str, sk: &str, pids: Vec<u32>| System {
            kind,
            s3: S3::new(&format!("{scheme}://127.0.0.1:{port}"), ca, ak, sk),
            port,
            tls: scheme == "https",
            proxy_pids: pids,
            admin_port: None,
        };
        if let Some(sw) = &sw {
            let upstream = format!("http://127.0.0.1:{}", sw.http_port);
            let start = |name: &str, pass: &[String], tuning| {
                systems::start_s3crypt_with(&bin, &dir, name, &certs, &upstream, (SW_AK, SW_SK), pass, tuning, "")
            };
            let proxy = start("s3crypt-seaweedfs", &pass, md5_off);
            let proxy_md5 = start("s3crypt-seaweedfs-md5", &[], systems::Tuning::default());
            let proxy_1t = start("s3crypt-seaweedfs-1t", &[], one_thread);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let idle_rss = procs::rss_mib(&[proxy.proc.pid()]);
            let _ = writeln!(
                md,
                "\ns3crypt idle RSS at start (SeaweedFS upstream): {idle_rss:.1} MiB; nginx (master + workers) idle \
                 RSS: {:.1} MiB with auto workers, {:.1} MiB with one.",
                procs::rss_mib(&ngx_pids),
                procs::rss_mib(&ngx1_pids)
            );
            let systems = vec![
                direct(Kind::DirectHttp, "http", sw.http_port, SW_AK, SW_SK, vec![]),
                direct(Kind::DirectHttps, "https", sw.https_port, SW_AK, SW_SK, vec![]),
                direct(Kind::Nginx1, "https", ngx1.ports[port_idx], SW_AK, SW_SK, ngx1_pids.clone()),
                direct(Kind::Nginx, "https", ngx.ports[port_idx], SW_AK, SW_SK, ngx_pids.clone()),
                via(Kind::PassThrough, &proxy),
                via(Kind::Encrypting, &proxy),
                via(Kind::EncryptingMd5, &proxy_md5),
                via(Kind::Encrypting1T, &proxy_1t),
            ];
            port_idx += 1;
            let results = run_rounds(&ctx, "sw", &systems, rounds).await?;
            let kinds: Vec<Kind> = systems.iter().map(|s| s.kind).collect();
            md.push_str(&targets(&ctx, &results));
            md.push_str(&report(
                &ctx,
                "SeaweedFS (`weed mini`, http and https)",
                Kind::DirectHttps,
                &kinds,
                &results,
                rounds,
            ));
            md.push_str(&scaling(&ctx, &results));
            // The checks: a further s3crypt whose upstream connection goes through the counting relay.
            let relay = systems::start_relay(sw.http_port).await;
            let counted_proxy = systems::start_s3crypt(
                &bin,
                &dir,
                "s3crypt-counted",
                &certs,
                &format!("http://127.0.0.1:{}", relay.port),
                (SW_AK, SW_SK),
                &[],
            );
            let counted = via(Kind::Encrypting, &counted_proxy);
            if run_checks {
                md.push_str(&checks(&ctx, &systems[5], &counted, &relay).await?);
            }
            keep_alive.extend([counted_proxy, proxy, proxy_md5, proxy_1t]);
        }
        if let Some(e) = &emb {
            let proxy = systems::start_s3crypt_with(
                &bin,
                &dir,
                "s3crypt-embedded",
                &certs,
                &format!("http://127.0.0.1:{}", e.addr.port()),
                (&e.access_key_id, e.secret_access_key.expose()),
                &pass,
                md5_off,
                "",
            );
            let (ak, sk) = (e.access_key_id.as_str(), e.secret_access_key.expose());
            let port = e.addr.port();
            let systems = vec![
                direct(Kind::DirectHttp, "http", port, ak, sk, vec![]),
                direct(Kind::Nginx1, "https", ngx1.ports[port_idx], ak, sk, ngx1_pids.clone()),
                direct(Kind::Nginx, "https", ngx.ports[port_idx], ak, sk, ngx_pids.clone()),
                via(Kind::PassThrough, &proxy),
                via(Kind::Encrypting, &proxy),
            ];
            let results = run_rounds(&ctx, "emb", &systems, rounds).await?;
            let kinds: Vec<Kind> = systems.iter().map(|s| s.kind).collect();
            md.push_str(&report(
                &ctx,
                "the embedded store (s3s-fs, http only, running in the load generator's process)",
                Kind::DirectHttp,
                &kinds,
                &results,
                rounds,
            ));
            keep_alive.push(proxy);
        }
        drop(keep_alive);
        drop(ngx);
        drop(ngx1);
        drop(sw);
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
    println!("{md}");
    if let Some(out) = out {
        std::fs::write(&out, &md).expect("write --out");
    }
}
