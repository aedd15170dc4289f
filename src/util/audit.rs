//! The audit log sink: one JSON line per request, formatted into a reused per-thread buffer and handed to one
//! writer thread, which writes what has gathered in writes of at most [`PIPE_BUF`] bytes that end on a line end
//! (so a line is never split, and never interleaved with other writers' lines on a pipe), to standard error or a
//! file (created mode 0640). Under load a write carries many lines instead of one system call per request; a
//! writer that cannot keep up holds requests back once [`MAX_PENDING`] bytes wait ([`flush`] at shutdown writes
//! the rest). The line keeps the shape `tracing-subscriber`'s JSON formatter gave it (`timestamp`, `level`,
//! `fields`, `target`), at a fifth of the cost (docs/BENCHMARKS.md).
//! Never a secret, a signature, an SSE-C key or object data: the caller passes names and numbers only.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};

/// Where audit lines go; unset means auditing is off.
static SINK: OnceLock<Sink> = OnceLock::new();

/// Lines written but not yet out, and the writer thread's signals.
struct Sink {
    pending: Mutex<Pending>,
    /// Lines arrived (the writer waits on it when idle).
    arrived: Condvar,
    /// Lines went out (requests held back and [`flush`] wait on it).
    written: Condvar,
    /// Where lines go: written by the writer thread, or by the requests themselves if it could not start.
    out: Mutex<Box<dyn Write + Send>>,
    /// Set only if the writer thread could not be started.
    direct: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// The writer has taken lines it has not finished writing.
    writing: bool,
}

/// Largest write: POSIX makes pipe writes up to this size atomic.
pub const PIPE_BUF: usize = 4096;

/// Bytes of lines that may wait for the writer before requests wait for it.
pub const MAX_PENDING: usize = 4 << 20;

/// The tracing-compatible target named in every line.
pub const AUDIT_TARGET: &str = "s3crypt::audit";

/// Sends audit lines to `sink` from now on, through a writer thread (the first call wins, like a global logger).
pub fn install(sink: Box<dyn Write + Send>) {
    let fresh = Sink {
        pending: Mutex::default(),
        arrived: Condvar::new(),
        written: Condvar::new(),
        out: Mutex::new(sink),
        direct: std::sync::atomic::AtomicBool::new(false),
    };
    if SINK.set(fresh).is_err() {
        return;
    }
    if std::thread::Builder::new().name("s3crypt-audit".into()).spawn(writer).is_err() {
        eprintln!("s3crypt: cannot start the audit writer thread; audit lines are written by each request");
        if let Some(s) = SINK.get() {
            s.direct.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

fn writer() {
    let Some(sink) = SINK.get() else { return };
    let mut out = sink.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut batch = Vec::new();
    loop {
        {
            let mut p = lock(&sink.pending);
            p.writing = false;
            sink.written.notify_all();
            while p.lines.is_empty() {
                p = sink.arrived.wait(p).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            std::mem::swap(&mut p.lines, &mut batch);
            p.writing = true;
        }
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let n = write_size(rest);
            // A failed write is dropped: auditing never fails a request.
            let _ = out.write_all(&rest[..n]);
            rest = &rest[n..];
        }
        let _ = out.flush();
        batch.clear();
    }
}

/// The longest prefix of `lines` of at most [`PIPE_BUF`] bytes that ends a line (a longer line goes whole).
fn write_size(lines: &[u8]) -> usize {
    if lines.len() <= PIPE_BUF {
        return lines.len();
    }
    match lines[..PIPE_BUF].iter().rposition(|&b| b == b'\n') {
        Some(end) => end + 1,
        None => lines.iter().position(|&b| b == b'\n').map_or(lines.len(), |end| end + 1),
    }
}

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until every line handed over so far is written (at shutdown), for at most [`FLUSH_WAIT`]: a sink that
/// blocks (a full pipe nobody reads) does not hold the exit.
pub fn flush() {
    let Some(sink) = SINK.get() else { return };
    let deadline = std::time::Instant::now() + FLUSH_WAIT;
    let mut p = lock(&sink.pending);
    while !p.lines.is_empty() || p.writing {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        p = sink.written.wait_timeout(p, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
    }
}

/// The longest [`flush`] waits.
pub const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens an audit file for appending, creating it readable by owner and group only.
pub fn open_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o640);
    o.open(path)
}

/// Whether lines are written at all (callers skip gathering fields when not).
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// One request's audit record.
pub struct Record<'a> {
    pub request_id: &'a str,
    pub principal: &'a str,
    pub op: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub version: &'a str,
    pub sse: &'a str,
    pub key_id: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency_ms: u64,
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Hands `record` to the writer as one line.
pub fn write(record: &Record<'_>) {
    let Some(sink) = SINK.get() else { return };
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        format_line(&mut line, record, time::OffsetDateTime::now_utc());
        if sink.direct.load(std::sync::atomic::Ordering::Acquire) {
            let _ = sink.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write_all(&line);
            return;
        }
        let mut p = lock(&sink.pending);
        while p.lines.len() >= MAX_PENDING {
            p = sink.written.wait(p).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        // The writer waits only when it has nothing: one wake-up per batch, not per line.
        let idle = p.lines.is_empty() && !p.writing;
        p.lines.extend_from_slice(&line);
        drop(p);
        if idle {
            sink.arrived.notify_one();
        }
    });
}

/// Formats one line (with its newline) into `out`; public for the micro-bench.
pub fn format_line(out: &mut Vec<u8>, r: &Record<'_>, now: time::OffsetDateTime) {
    let ts = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    out.extend_from_slice(b"{\"timestamp\":");
    string(out, &ts);
    out.extend_from_slice(b",\"level\":\"INFO\",\"fields\":{\"message\":\"audit\"");
    for (name, value) in [
        ("request_id", r.request_id),
        ("principal", r.principal),
        ("op", r.op),
        ("bucket", r.bucket),
        ("key", r.key),
        ("version", r.version),
        ("sse", r.sse),
        ("key_id", r.key_id),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        string(out, value);
    }
    for (name, value) in [
        ("status", u64::from(r.status)),
        ("bytes_in", r.bytes_in),
        ("bytes_out", r.bytes_out),
        ("latency_ms", r.latency_ms),
    ] {
        let _ = write!(out, ",\"{name}\":{value}");
    }
    out.extend_from_slice(b"},\"target\":\"");
    out.extend_from_slice(AUDIT_TARGET.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// A JSON string literal (quotes and escapes by serde_json).
fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_end_on_a_line_end_within_pipe_buf_and_a_longer_line_goes_whole() {
        let line = |n: usize| [vec![b'x'; n - 1], vec![b'\n']].concat();
        let lines = [line(3000), line(1000), line(500)].concat();
        assert_eq!(write_size(&lines), 4000);
        assert_eq!(write_size(&lines[4000..]), 500);
        let long = [line(9000), line(10)].concat();
        assert_eq!(write_size(&long), 9000);
        assert_eq!(write_size(b"no end"), 6);
    }

    #[test]
    fn a_line_is_one_json_object_with_the_tracing_shape_and_escaped_names() {
        let r = Record {
            request_id: "ABC",
            principal: "AKID",
            op: "PutObject",
            bucket: "b",
            key: "we\"ird\nkey\u{1}é",
            version: "-",
            sse: "aws:kms",
            key_id: "keyring:k1",
            status: 200,
            bytes_in: 4096,
            bytes_out: 0,
            latency_ms: 3,
        };
        let mut out = Vec::new();
        format_line(&mut out, &r, time::macros::datetime!(2026-11-23 08:30:00.123456 UTC));
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line whatever the key");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["target"], AUDIT_TARGET);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["timestamp"], "2026-11-23T08:30:00.123456Z");
        let f = &v["fields"];
        assert_eq!(f["message"], "audit");
        assert_eq!(f["key"], "we\"ird\nkey\u{1}é");
        assert_eq!(
            (f["status"].as_u64(), f["bytes_in"].as_u64(), f["latency_ms"].as_u64()),
            (Some(200), Some(4096), Some(3))
        );
        assert_eq!((f["op"].as_str(), f["key_id"].as_str()), (Some("PutObject"), Some("keyring:k1")));
    }
}
