//! The systems under test as child processes (SeaweedFS, nginx, s3crypt), and what `/proc` says about them: CPU
//! time (utime + stime) and resident memory (current and peak, with the peak reset between runs).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This process and its direct children (nginx: the master and its workers).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid()];
        pids.extend(children_of(self.pid()));
        pids
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free right now on 127.0.0.1 (the OS picks it; we release it for the child to bind).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not listen on {port}; log:\n{tail}");
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Some(fields) = stat_fields(p)
            && fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(pid)
        {
            out.push(p);
        }
    }
    out
}

/// The fields of /proc/PID/stat after the command name: index 0 is the state, 1 the parent pid, 11 utime, 12
/// stime (field 3 is field 1 of this slice: see proc(5)).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn clock_ticks() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) used so far by these processes.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let mut ticks = 0u64;
    for &p in pids {
        if let Some(f) = stat_fields(p) {
            let u: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
            let s: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            ticks += u + s;
        }
    }
    ticks as f64 / clock_ticks()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let Ok(f) = std::fs::File::open(format!("/proc/{pid}/status")) else { return 0 };
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        if let Some(v) = line.strip_prefix(field) {
            return v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    0
}

/// Resident memory now, MiB, summed over the processes.
pub fn rss_mib(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| status_kib(p, "VmRSS:")).sum::<u64>() as f64 / 1024.0
}

/// Peak resident memory since the last [`reset_peak`], MiB, summed over the processes.
pub fn peak_rss_mib(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| status_kib(p, "VmHWM:")).sum::<u64>() as f64 / 1024.0
}

/// Resets the peak-RSS counters (`echo 5 > /proc/PID/clear_refs`).
pub fn reset_peak(pids: &[u32]) {
    for &p in pids {
        let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
    }
}

/// Where the bench keeps its processes' files.
pub fn work_dir() -> PathBuf {
    let dir = std::env::var_os("S3CRYPT_BENCH_WORK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-work"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench work dir");
    dir
}

/// A self-signed CA and a server certificate for 127.0.0.1 / localhost, as PEM files in `dir`.
pub struct Certs {
    pub ca_pem: Vec<u8>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

pub fn make_certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let cert_file = dir.join("tls.crt");
    let key_file = dir.join("tls.key");
    std::fs::write(&cert_file, cert.pem()).expect("write cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    Certs { ca_pem: ca.pem().into_bytes(), cert_file, key_file }
}

/// `perf record` of processes while a workload runs (`--perf DIR`): sampled call stacks (DWARF unwinding, so the
/// release binary's line tables suffice) for a flame graph. Stopped, and its file written, on drop.
pub struct Perf {
    child: Child,
}

impl Perf {
    /// Starts sampling `pids` into `out`; `None` (with a note on stderr) when perf cannot run here.
    pub fn start(pids: &[u32], out: &Path) -> Option<Perf> {
        let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = Command::new("perf")
            .args(["record", "-q", "-F", "999", "--call-graph", "dwarf,32768", "-p", &list, "-o"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        match child {
            Ok(child) => {
                // perf needs a moment to attach before the load starts.
                std::thread::sleep(Duration::from_millis(300));
                Some(Perf { child })
            }
            Err(e) => {
                eprintln!("perf record not started: {e}");
                None
            }
        }
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}
