//! Small helpers shared by several modules: time formats, request ids, secret files, XML elements.

pub mod audit;
pub mod body;
pub mod secret;
pub mod time;
pub mod uri;

use rand::Rng;

/// A fresh S3-style request id (16 uppercase hex digits).
pub fn new_request_id() -> String {
    let v: u64 = rand::rng().random();
    format!("{v:016X}")
}

/// hyper's per-connection HTTP/1.1 buffer limit, for the client side (read buffer, and so the largest request
/// head) and the upstream side (what an upload queues towards the store). hyper's default (~400 KB) lets one fast
/// upload hold 400 KB of read-ahead; 128 KiB still reads two segments per syscall and keeps a request's memory
/// under 1 MiB (docs/BENCHMARKS.md).
pub const HTTP1_MAX_BUF: usize = 128 * 1024;

/// Appends `<name>value</name>` to `s`, the value escaped (the writer of every small XML document).
pub fn push_xml_element(s: &mut String, name: &str, value: &str) {
    s.push('<');
    s.push_str(name);
    s.push('>');
    s.push_str(&quick_xml::escape::escape(value));
    s.push_str("</");
    s.push_str(name);
    s.push('>');
}
