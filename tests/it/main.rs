//! The one integration-test binary: the proxy in-process on ephemeral ports, real clients (aws-sdk-s3 and
//! hand-built requests), real stores (the embedded s3s-fs store and SeaweedFS).

mod common;

mod abuse;
mod auth;
mod bodies;
mod buckets;
mod config;
mod copies;
mod encryption;
mod etags;
mod faults;
mod forged;
mod format_vectors;
mod keys;
mod layering;
mod multipart;
mod operate;
mod roundtrip;
mod s3_answers;
mod secrets;
mod transport;
mod traversal;
mod uploads;
