//! The audit log sink: one JSON line per request, formatted into a reused per-thread buffer and written with one
//! `write` to standard error or a file (created mode 0640). The line keeps the shape `tracing-subscriber`'s JSON
//! formatter gave it (`timestamp`, `level`, `fields`, `target`), at a fifth of the cost (docs/BENCHMARKS.md).
//! Never a secret, a signature, an SSE-C key or object data: the caller passes names and numbers only.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Where audit lines go; unset means auditing is off.
static SINK: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();

/// The tracing-compatible target named in every line.
pub const AUDIT_TARGET: &str = "s3crypt::audit";

/// Sends audit lines to `sink` from now on (the first call wins, like a global logger).
pub fn install(sink: Box<dyn Write + Send>) {
    let _ = SINK.set(Mutex::new(sink));
}

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

/// Writes `record` as one line; a failed write is dropped (auditing never fails a request).
pub fn write(record: &Record<'_>) {
    let Some(sink) = SINK.get() else { return };
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        format_line(&mut line, record, time::OffsetDateTime::now_utc());
        let mut w = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = w.write_all(&line);
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
