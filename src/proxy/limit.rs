//! Per-client request rates (`[[clients]] requests_per_second`): a token bucket per access key id, refilled
//! continuously, holding at most one second's worth. A request over the rate is answered 503 `SlowDown` right
//! after authentication, before any upstream or KMS work, so one client's flood costs little and others keep
//! their share. Buckets start full and are rebuilt on reload.
//!
//! Per-address authentication failures (`server.auth_failures_per_address`): the same bucket per client IP
//! address, drawn by failed authentications only; while it is empty, every request from that address gets
//! `SlowDown` before any signature work (unauthenticated floods, key guessing). At most [`MAX_ADDRESSES`] addresses
//! are tracked; past that, addresses whose buckets have refilled are forgotten first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

/// The buckets of the clients that have a limit.
#[derive(Default)]
pub struct RateLimits {
    buckets: HashMap<String, Mutex<Bucket>>,
}

impl RateLimits {
    pub fn new(rates: &HashMap<String, u32>) -> RateLimits {
        let now = Instant::now();
        let buckets = rates
            .iter()
            .map(|(k, &r)| (k.clone(), Mutex::new(Bucket { rate: f64::from(r), tokens: f64::from(r), last: now })))
            .collect();
        RateLimits { buckets }
    }

    /// Takes one token from the client's bucket; false when it is empty. Clients without a limit always pass.
    pub fn allow(&self, access_key_id: &str, now: Instant) -> bool {
        let Some(bucket) = self.buckets.get(access_key_id) else { return true };
        let mut b = bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(b.rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Most client addresses tracked for authentication failures.
pub const MAX_ADDRESSES: usize = 65_536;

/// Failed authentications by client address.
pub struct FailureLimits {
    rate: f64,
    buckets: Mutex<HashMap<std::net::IpAddr, Bucket>>,
}

impl FailureLimits {
    /// `rate` failures per second (and as a burst) per address; 0 turns the limit off.
    pub fn new(rate: u32) -> FailureLimits {
        FailureLimits { rate: f64::from(rate), buckets: Mutex::new(HashMap::new()) }
    }

    fn refill(b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(b.rate);
        b.last = now;
    }

    /// Whether `ip` has used up its failures (its requests are refused unverified).
    pub fn blocked(&self, ip: std::net::IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return false;
        }
        let mut map = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(&ip) {
            Some(b) => {
                Self::refill(b, now);
                b.tokens < 1.0
            }
            None => false,
        }
    }

    /// Records a failed authentication from `ip`.
    pub fn failed(&self, ip: std::net::IpAddr, now: Instant) {
        if self.rate == 0.0 {
            return;
        }
        let mut map = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, b| {
                Self::refill(b, now);
                b.tokens < b.rate
            });
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
        }
        let rate = self.rate;
        let b = map.entry(ip).or_insert(Bucket { rate, tokens: rate, last: now });
        Self::refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_keeps_failing_is_blocked_until_its_bucket_refills_and_others_are_not() {
        let limits = FailureLimits::new(5);
        let (bad, good): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..4 {
            limits.failed(bad, t0);
        }
        assert!(!limits.blocked(bad, t0), "within the burst");
        limits.failed(bad, t0);
        assert!(limits.blocked(bad, t0), "the burst is used up");
        assert!(!limits.blocked(good, t0));
        assert!(!limits.blocked(bad, t0 + std::time::Duration::from_millis(250)), "one failure's worth refilled");
        assert!(!FailureLimits::new(0).blocked(bad, t0));
    }

    #[test]
    fn the_address_table_stays_bounded() {
        let limits = FailureLimits::new(1);
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            limits.failed(std::net::IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(limits.buckets.lock().unwrap().len() <= MAX_ADDRESSES);
    }
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_and_others_are_unlimited() {
        let limits = RateLimits::new(&HashMap::from([("slow".to_owned(), 10)]));
        let t0 = Instant::now();
        assert_eq!((0..25).filter(|_| limits.allow("slow", t0)).count(), 10, "a burst of one second's worth");
        assert!(!limits.allow("slow", t0 + Duration::from_millis(50)), "half a token");
        assert!(limits.allow("slow", t0 + Duration::from_millis(150)), "one token after 100 ms");
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..25).filter(|_| limits.allow("slow", later)).count(), 10, "never more than the burst");
        assert!((0..1000).all(|_| limits.allow("anyone-else", t0)));
    }
}
