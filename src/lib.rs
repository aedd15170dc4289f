//! s3crypt: a transparent encrypting reverse proxy in front of S3.
//!
//! Clients speak plain S3 to the proxy over TLS; the proxy verifies their SigV4 signatures, re-signs each
//! request for the upstream store and streams bodies through. Dependencies point down, layer by layer (ARCHITECTURE.md,
//! checked by `tests/it/layering.rs`): `cli → server → proxy → store → upstream → error → {sigv4, crypto} → config →
//! s3 → {util, metrics, signal}`.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod s3;
pub mod server;
pub mod signal;
pub mod sigv4;
pub mod store;
pub mod upstream;
pub mod util;

#[cfg(test)]
mod test_util;

pub use config::Config;
pub use server::Server;
