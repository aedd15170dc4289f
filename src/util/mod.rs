//! Small helpers shared by several modules: time formats, request ids, secret files.

pub mod body;
pub mod secret;
pub mod time;

use rand::Rng;

/// A fresh S3-style request id (16 uppercase hex digits).
pub fn new_request_id() -> String {
    let v: u64 = rand::rng().random();
    format!("{v:016X}")
}
