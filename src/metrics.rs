//! Every metric the proxy exports: names, help texts, label sets and histogram buckets, in one place. Labels are
//! low-cardinality by construction (operation, status class, side, direction, result, reason) — never a bucket,
//! key, access key or address. The Prometheus recorder is process-wide; the admin listener renders it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "s3crypt_requests_total";
pub const REQUEST_SECONDS: &str = "s3crypt_request_duration_seconds";
pub const UPSTREAM_SECONDS: &str = "s3crypt_upstream_request_duration_seconds";
pub const UPSTREAM_ERRORS: &str = "s3crypt_upstream_errors_total";
pub const CRYPTO_SECONDS: &str = "s3crypt_crypto_seconds";
pub const CRYPTO_BYTES: &str = "s3crypt_crypto_bytes_total";
pub const INTEGRITY_FAILURES: &str = "s3crypt_integrity_failures_total";
pub const AUTH_FAILURES: &str = "s3crypt_auth_failures_total";
pub const KMS_REQUESTS: &str = "s3crypt_kms_requests_total";
pub const KMS_SECONDS: &str = "s3crypt_kms_request_duration_seconds";
pub const KEY_CACHE: &str = "s3crypt_key_cache_lookups_total";
pub const TLS_HANDSHAKES: &str = "s3crypt_tls_handshakes_total";
pub const CONNECTIONS_OPEN: &str = "s3crypt_connections_open";
pub const CONNECTIONS: &str = "s3crypt_connections_total";
pub const DRAINING: &str = "s3crypt_draining";
pub const CERT_EXPIRY: &str = "s3crypt_tls_certificate_expiry_timestamp_seconds";
pub const BUILD_INFO: &str = "s3crypt_build_info";
pub const THROTTLED: &str = "s3crypt_throttled_total";

/// The release version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision the binary was built from (build.rs: `S3CRYPT_REVISION`, git, or "unknown").
pub const REVISION: &str = env!("S3CRYPT_REVISION");
/// `s3crypt --version`: version and revision.
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("S3CRYPT_REVISION"), ")");

/// Request and upstream latency: 1 ms .. 5 min.
const LATENCY_BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Time spent encrypting or decrypting one request's body: 10 µs .. 10 s.
const CRYPTO_BUCKETS: [f64; 14] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0, 5.0, 10.0];
/// KMS calls: 1 ms .. 10 s.
const KMS_BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];

/// How often queued histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle). `None` if another recorder
/// was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_SECONDS.into()), &LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(UPSTREAM_SECONDS.into()), &LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CRYPTO_SECONDS.into()), &CRYPTO_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(KMS_SECONDS.into()), &KMS_BUCKETS))
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            // `install_recorder` leaves upkeep to the caller: without it, every histogram sample stays queued until
            // the next scrape, and a proxy nobody scrapes grows by ~90 bytes per request (found by the soak).
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
            describe();
            gauge!(BUILD_INFO, "version" => VERSION, "revision" => REVISION).set(1.0);
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(REQUESTS, "Requests answered, by S3 operation and status class (2xx, 4xx, 5xx).");
    describe_histogram!(REQUEST_SECONDS, "Time to the response head, by S3 operation.");
    describe_histogram!(UPSTREAM_SECONDS, "Time from sending an upstream request to its response head.");
    describe_counter!(
        UPSTREAM_ERRORS,
        "Upstream requests that failed, by kind (connect, timeout, protocol), and failed store credential refreshes (credentials)."
    );
    describe_histogram!(
        CRYPTO_SECONDS,
        "Time spent encrypting or decrypting one request's body, by direction and operation."
    );
    describe_counter!(CRYPTO_BYTES, "Plaintext bytes encrypted or decrypted, by direction.");
    describe_counter!(INTEGRITY_FAILURES, "Stored objects that failed authentication, by what failed.");
    describe_counter!(AUTH_FAILURES, "Requests refused before processing, by reason (the S3 error code).");
    describe_counter!(KMS_REQUESTS, "KMS calls, by operation and result.");
    describe_histogram!(KMS_SECONDS, "KMS call latency, by operation.");
    describe_counter!(KEY_CACHE, "Key cache lookups, by cache (decrypt, bucket_key) and result (hit, miss).");
    describe_counter!(TLS_HANDSHAKES, "TLS handshakes, by result (ok, error, timeout).");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open now.");
    describe_counter!(CONNECTIONS, "Client connections accepted.");
    describe_gauge!(DRAINING, "1 while the proxy drains for shutdown.");
    describe_gauge!(CERT_EXPIRY, "Earliest notAfter of the served TLS certificates (Unix seconds).");
    describe_counter!(
        THROTTLED,
        "Requests answered 503 SlowDown, by source: proxy (client rate limits, capacity) or store. Also counted in \
         s3crypt_requests_total's 5xx: alerts on server errors subtract them."
    );
    describe_gauge!(BUILD_INFO, "Always 1; its labels name the running version and source revision.");
}

/// "2xx", "4xx" or "5xx" (and "1xx"/"3xx").
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Handles of the metrics every request touches, per thread: the recorder's registry lookup (building the key,
/// hashing it, a shared lock) once per label set instead of once per request. Used only once this module's
/// recorder is installed (a handle taken before would record nowhere).
#[derive(Default)]
struct Hot {
    requests: HashMap<(&'static str, &'static str), Counter>,
    request_seconds: HashMap<&'static str, Histogram>,
    upstream_seconds: Option<Histogram>,
    crypto_seconds: HashMap<(&'static str, &'static str), Histogram>,
    crypto_bytes: HashMap<&'static str, Counter>,
}

thread_local! {
    static HOT: RefCell<Hot> = RefCell::default();
}

/// Runs `f` on this thread's handles, or returns `None` while no recorder of this module's is installed.
fn hot<R>(f: impl FnOnce(&mut Hot) -> R) -> Option<R> {
    if !matches!(HANDLE.get(), Some(Some(_))) {
        return None;
    }
    HOT.try_with(|h| f(&mut h.borrow_mut())).ok()
}

pub fn request_done(op: &'static str, status: u16, elapsed: Duration) {
    let class = status_class(status);
    let cached = hot(|h| {
        h.requests.entry((op, class)).or_insert_with(|| counter!(REQUESTS, "op" => op, "status" => class)).increment(1);
        h.request_seconds
            .entry(op)
            .or_insert_with(|| histogram!(REQUEST_SECONDS, "op" => op))
            .record(elapsed.as_secs_f64());
    });
    if cached.is_none() {
        counter!(REQUESTS, "op" => op, "status" => class).increment(1);
        histogram!(REQUEST_SECONDS, "op" => op).record(elapsed.as_secs_f64());
    }
}

pub fn upstream_done(elapsed: Duration) {
    let cached =
        hot(|h| h.upstream_seconds.get_or_insert_with(|| histogram!(UPSTREAM_SECONDS)).record(elapsed.as_secs_f64()));
    if cached.is_none() {
        histogram!(UPSTREAM_SECONDS).record(elapsed.as_secs_f64());
    }
}

pub fn upstream_error(kind: &'static str) {
    counter!(UPSTREAM_ERRORS, "kind" => kind).increment(1);
}

/// One request body's crypto: `direction` is "encrypt" or "decrypt".
pub fn crypto_done(direction: &'static str, op: &'static str, busy: Duration, bytes: u64) {
    let cached = hot(|h| {
        h.crypto_seconds
            .entry((direction, op))
            .or_insert_with(|| histogram!(CRYPTO_SECONDS, "direction" => direction, "op" => op))
            .record(busy.as_secs_f64());
        h.crypto_bytes
            .entry(direction)
            .or_insert_with(|| counter!(CRYPTO_BYTES, "direction" => direction))
            .increment(bytes);
    });
    if cached.is_none() {
        histogram!(CRYPTO_SECONDS, "direction" => direction, "op" => op).record(busy.as_secs_f64());
        counter!(CRYPTO_BYTES, "direction" => direction).increment(bytes);
    }
}

/// A request answered 503 SlowDown; `source` is "proxy" or "store".
pub fn throttled(source: &'static str) {
    counter!(THROTTLED, "source" => source).increment(1);
}

pub fn integrity_failure(what: &'static str) {
    counter!(INTEGRITY_FAILURES, "what" => what).increment(1);
}

pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

pub fn kms_call(op: &'static str, ok: bool, elapsed: Duration) {
    counter!(KMS_REQUESTS, "op" => op, "result" => if ok { "ok" } else { "error" }).increment(1);
    histogram!(KMS_SECONDS, "op" => op).record(elapsed.as_secs_f64());
}

pub fn key_cache(cache: &'static str, hit: bool) {
    counter!(KEY_CACHE, "cache" => cache, "result" => if hit { "hit" } else { "miss" }).increment(1);
}

pub fn tls_handshake(result: &'static str) {
    counter!(TLS_HANDSHAKES, "result" => result).increment(1);
}

pub fn connection_opened() {
    counter!(CONNECTIONS).increment(1);
    gauge!(CONNECTIONS_OPEN).increment(1.0);
}

pub fn connection_closed() {
    gauge!(CONNECTIONS_OPEN).decrement(1.0);
}

pub fn certificate_expiry(unix_seconds: i64) {
    gauge!(CERT_EXPIRY).set(unix_seconds as f64);
}

pub fn draining(on: bool) {
    gauge!(DRAINING).set(if on { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_are_the_five_prometheus_friendly_labels() {
        assert_eq!(
            [status_class(200), status_class(404), status_class(503), status_class(304)],
            ["2xx", "4xx", "5xx", "3xx"]
        );
    }
}
