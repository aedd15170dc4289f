//! Per-client request rates (`[[clients]] requests_per_second`): a token bucket per access key id, refilled
//! continuously, holding at most one second's worth. A request over the rate is answered 503 `SlowDown` right
//! after authentication, before any upstream or KMS work, so one client's flood costs little and others keep
//! their share. Buckets start full and are rebuilt on reload.

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

#[cfg(test)]
mod tests {
    use super::*;
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
