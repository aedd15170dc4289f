//! Sizing the proxy to its memory: the memory budget (`server.memory_budget`, else 80 % of the cgroup's memory limit)
//! and the limits derived from it: requests in flight, connections, and the S3 Encryption Client's buffers. Past the
//! in-flight limit requests get 503 `SlowDown` with `Retry-After` instead of memory (docs/OPERATIONS.md,
//! "Capacity"). The per-request and per-connection figures are measured ones with headroom (docs/BENCHMARKS.md:
//! 0.51 MiB per concurrent 2 MiB upload at 1,000 at once).

use super::DEFAULT_MAX_CONNECTIONS;
use super::check::Problems;
use super::keys::{DEFAULT_S3EC_MAX_BUFFERED, S3ecSettings};

/// Memory counted per request in flight (twice the measured peak of an upload stream).
pub const PER_REQUEST: u64 = 1 << 20;
/// Memory counted per open connection (TLS and HTTP state of an idle keep-alive connection, with headroom).
pub const PER_CONNECTION: u64 = 64 << 10;
/// The process's own memory before any request: runtime, clients, caches, code.
pub const BASE: u64 = 32 << 20;
/// Share of the cgroup's limit the budget takes when none is set (the rest: allocator slack, page cache).
pub const CGROUP_SHARE_PERCENT: u64 = 80;
/// Requests in flight without a budget.
pub const UNBUDGETED_INFLIGHT: usize = 4096;
/// The fewest requests in flight a budget derives.
pub const MIN_INFLIGHT: usize = 8;
/// The fewest connections a budget derives.
pub const MIN_CONNECTIONS: usize = 64;

/// What the proxy sizes itself to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub budget: Option<u64>,
    pub max_inflight: usize,
    pub max_connections: usize,
}

/// Derives the limits. `budget`, `inflight` and `connections` are the configured values (0 / `None`: derive);
/// `cgroup` the cgroup's memory limit, if any. S3EC buffers left at their default shrink to a quarter of the
/// budget; set explicitly, they must fit in half of it.
pub(super) fn size(
    budget: u64,
    cgroup: Option<u64>,
    inflight: usize,
    connections: Option<usize>,
    s3ec: &mut S3ecSettings,
    p: &mut Problems,
) -> Sizing {
    let budget = match budget {
        0 => cgroup.map(|limit| limit / 100 * CGROUP_SHARE_PERCENT),
        b => Some(b),
    };
    let Some(b) = budget else {
        return Sizing {
            budget,
            max_inflight: nonzero_or(inflight, UNBUDGETED_INFLIGHT),
            max_connections: connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        };
    };
    if b < 2 * BASE {
        p.push(
            "server.memory_budget",
            format!("{} MiB is too small to serve anything", b >> 20),
            format!(
                "give the proxy at least {} MiB (a pod memory limit of {} MiB)",
                (2 * BASE) >> 20,
                (5 * BASE / 2) >> 20
            ),
        );
    }
    let mut reserved = 0;
    if s3ec.enabled {
        if s3ec.max_buffered == DEFAULT_S3EC_MAX_BUFFERED && s3ec.max_buffered > b / 4 {
            s3ec.max_buffered = b / 4;
            s3ec.max_object_size = s3ec.max_object_size.min(s3ec.max_buffered);
        } else if s3ec.max_buffered > b / 2 {
            p.push(
                "encryption.s3ec.max_buffered",
                format!("{} MiB does not fit the memory budget of {} MiB", s3ec.max_buffered >> 20, b >> 20),
                "set it to at most half the budget, or raise server.memory_budget (or the pod's memory limit)",
            );
        }
        reserved = s3ec.max_buffered;
    }
    let for_requests = b.saturating_sub(BASE + reserved);
    let derived_inflight = usize::try_from(for_requests / PER_REQUEST).unwrap_or(usize::MAX).max(MIN_INFLIGHT);
    let derived_connections =
        usize::try_from(b / PER_CONNECTION).unwrap_or(usize::MAX).clamp(MIN_CONNECTIONS, DEFAULT_MAX_CONNECTIONS);
    Sizing {
        budget,
        max_inflight: nonzero_or(inflight, derived_inflight),
        max_connections: connections.unwrap_or(derived_connections),
    }
}

fn nonzero_or(v: usize, default: usize) -> usize {
    if v == 0 { default } else { v }
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1 `memory.limit_in_bytes`), if one is set.
pub fn cgroup_memory_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|c| {
        let path = c.lines().find_map(|l| l.strip_prefix("0::"))?.trim().to_owned();
        std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max")).ok()
    });
    let text = v2.or_else(|| std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok())?;
    let limit = text.trim().parse::<u64>().ok()?;
    // v1 says "no limit" with a number near the largest page-aligned i64.
    (limit < 1 << 60).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(budget: u64, cgroup: Option<u64>, s3ec: &mut S3ecSettings) -> (Sizing, usize) {
        let mut p = Problems::default();
        let s = size(budget, cgroup, 0, None, s3ec, &mut p);
        (s, p.finish(Some(()), "server").err().map_or(0, |e| e.len()))
    }

    #[test]
    fn without_a_budget_the_limits_are_the_fixed_defaults() {
        let (s, problems) = sized(0, None, &mut S3ecSettings::default());
        assert_eq!((s.budget, s.max_inflight, s.max_connections, problems), (None, 4096, 10_000, 0));
    }

    #[test]
    fn a_cgroup_limit_gives_a_budget_of_80_percent_and_limits_that_fit_it() {
        let (s, _) = sized(0, Some(512 << 20), &mut S3ecSettings::default());
        let b = s.budget.unwrap();
        assert_eq!(b, (512u64 << 20) / 100 * 80);
        assert_eq!(s.max_inflight as u64, (b - BASE) / PER_REQUEST);
        assert!(BASE + s.max_inflight as u64 * PER_REQUEST <= b);
        assert_eq!(s.max_connections as u64, b / PER_CONNECTION);
    }

    #[test]
    fn s3ec_buffers_fit_inside_the_budget_shrunk_by_default_refused_when_set_too_large() {
        let mut s3ec = S3ecSettings { enabled: true, ..S3ecSettings::default() };
        let (s, problems) = sized(128 << 20, None, &mut s3ec);
        assert_eq!((s3ec.max_buffered, s3ec.max_object_size, problems), (32 << 20, 32 << 20, 0));
        assert!(BASE + s3ec.max_buffered + s.max_inflight as u64 * PER_REQUEST <= 128 << 20);
        let mut s3ec = S3ecSettings { enabled: true, max_buffered: 100 << 20, ..S3ecSettings::default() };
        assert_eq!(sized(128 << 20, None, &mut s3ec).1, 1);
        assert_eq!(sized(16 << 20, None, &mut S3ecSettings::default()).1, 1, "too small a budget");
    }
}
