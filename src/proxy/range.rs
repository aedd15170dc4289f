//! A client's Range (and `x-amz-copy-source-range`) as S3 reads it, what it asks of an object of a known size, and
//! the ciphertext range that covers it (one upstream request, whatever the segment layout).

use http::HeaderMap;

use crate::crypto::format::SEGMENT_OVERHEAD;
use crate::error::ProxyError;

/// A client Range, as S3 reads it: one `bytes=` range; anything else is ignored (whole object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRange {
    Whole,
    /// `bytes=a-b` or `bytes=a-`.
    From(u64, Option<u64>),
    /// `bytes=-n`.
    Suffix(u64),
}

impl ClientRange {
    pub fn parse(headers: &HeaderMap) -> ClientRange {
        let Some(v) = headers.get(http::header::RANGE).and_then(|v| v.to_str().ok()) else {
            return ClientRange::Whole;
        };
        let Some(spec) = v.trim().strip_prefix("bytes=") else { return ClientRange::Whole };
        if spec.contains(',') {
            return ClientRange::Whole;
        }
        let Some((a, b)) = spec.split_once('-') else { return ClientRange::Whole };
        let (a, b) = (a.trim(), b.trim());
        let num = |s: &str| if s.bytes().all(|c| c.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
        match (a.is_empty(), b.is_empty()) {
            (true, false) => num(b).map_or(ClientRange::Whole, ClientRange::Suffix),
            (false, true) => num(a).map_or(ClientRange::Whole, |a| ClientRange::From(a, None)),
            (false, false) => match (num(a), num(b)) {
                (Some(a), Some(b)) if b >= a => ClientRange::From(a, Some(b)),
                _other => ClientRange::Whole,
            },
            (true, true) => ClientRange::Whole,
        }
    }

    /// The plaintext bytes to return of an object of `total` bytes, inclusive, or `None` for the whole (possibly
    /// empty) object; InvalidRange if it starts past the end.
    pub fn resolve(self, total: u64) -> Result<Option<(u64, u64)>, ProxyError> {
        match self {
            ClientRange::Whole => Ok(None),
            ClientRange::From(a, b) => {
                if a >= total {
                    return Err(ProxyError::InvalidRange { size: total });
                }
                Ok(Some((a, b.unwrap_or(u64::MAX).min(total - 1))))
            }
            ClientRange::Suffix(n) => {
                if n == 0 || total == 0 {
                    return Err(ProxyError::InvalidRange { size: total });
                }
                Ok(Some((total - n.min(total), total - 1)))
            }
        }
    }

    /// An `x-amz-copy-source-range` value: only `bytes=first-last` is allowed.
    pub fn parse_copy_range(v: &str) -> Option<ClientRange> {
        let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
        let num = |s: &str| {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten()
        };
        match (num(a), num(b)) {
            (Some(a), Some(b)) if b >= a => Some(ClientRange::From(a, Some(b))),
            _other => None,
        }
    }

    /// This range as a Range header for a plaintext object (`None` for the whole object).
    pub fn as_header(self) -> Option<String> {
        match self {
            ClientRange::Whole => None,
            ClientRange::From(a, None) => Some(format!("bytes={a}-")),
            ClientRange::From(a, Some(b)) => Some(format!("bytes={a}-{b}")),
            ClientRange::Suffix(n) => Some(format!("bytes=-{n}")),
        }
    }

    /// The upstream Range covering the segments this range needs (without knowing the object's size). The client's
    /// numbers may be anything up to 2^64 − 1, stores take offsets up to 2^63 − 1: a start past that asks for
    /// `bytes=<2^63 − 1>-` (the store answers 416), an end past it reads to the end, a suffix longer than any object
    /// reads it whole.
    pub fn upstream_range(self, segment: u32) -> Option<String> {
        const MAX_OFFSET: u64 = i64::MAX as u64;
        let s = u64::from(segment);
        let full = s + SEGMENT_OVERHEAD;
        let start_of = |a: u64| (a / s).saturating_mul(full).min(MAX_OFFSET);
        match self {
            ClientRange::Whole => None,
            ClientRange::From(a, None) => Some(format!("bytes={}-", start_of(a))),
            ClientRange::From(a, Some(b)) => match (b / s + 1).checked_mul(full).filter(|e| *e <= MAX_OFFSET) {
                Some(end) => Some(format!("bytes={}-{}", start_of(a), end - 1)),
                None => Some(format!("bytes={}-", start_of(a))),
            },
            // The last n plaintext bytes lie within the last ceil(n/S) + 1 segments.
            ClientRange::Suffix(n) => {
                (n.div_ceil(s) + 1).checked_mul(full).filter(|c| *c <= MAX_OFFSET).map(|c| format!("bytes=-{c}"))
            }
        }
    }
}

/// `bytes x-y/total` → (x, total); `bytes */total` → (None, total).
pub(super) fn parse_content_range(v: &str) -> Option<(Option<u64>, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok()?;
    if range.trim() == "*" {
        return Some((None, total));
    }
    let (x, _y) = range.split_once('-')?;
    Some((Some(x.trim().parse().ok()?), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str) -> ClientRange {
        let mut h = HeaderMap::new();
        h.insert(http::header::RANGE, v.parse().unwrap());
        ClientRange::parse(&h)
    }

    #[test]
    fn ranges_are_read_as_s3_reads_them() {
        assert_eq!(range("bytes=0-9"), ClientRange::From(0, Some(9)));
        assert_eq!(range("bytes=10-"), ClientRange::From(10, None));
        assert_eq!(range("bytes=-5"), ClientRange::Suffix(5));
        for ignored in ["bytes=5-1", "bytes=0-1,4-5", "items=0-1", "bytes=a-b", "bytes=-", "bytes=+1-2"] {
            assert_eq!(range(ignored), ClientRange::Whole, "{ignored}");
        }
    }

    #[test]
    fn upstream_ranges_cover_exactly_the_needed_segments() {
        let s = 65_536u32;
        let full = 65_536 + 32;
        assert_eq!(ClientRange::From(0, Some(9)).upstream_range(s).unwrap(), format!("bytes=0-{}", full - 1));
        assert_eq!(
            ClientRange::From(65_536, Some(65_536 * 2)).upstream_range(s).unwrap(),
            format!("bytes={full}-{}", 3 * full - 1)
        );
        assert_eq!(ClientRange::From(70_000, None).upstream_range(s).unwrap(), format!("bytes={full}-"));
        assert_eq!(ClientRange::Suffix(10).upstream_range(s).unwrap(), format!("bytes=-{}", 2 * full));
        // Client numbers up to 2^64 - 1 never overflow.
        assert_eq!(ClientRange::From(0, Some(u64::MAX)).upstream_range(s).unwrap(), "bytes=0-");
        assert_eq!(ClientRange::From(u64::MAX, None).upstream_range(s).unwrap(), format!("bytes={}-", i64::MAX));
        assert_eq!(
            ClientRange::From(u64::MAX - 1, Some(u64::MAX)).upstream_range(s).unwrap(),
            format!("bytes={}-", i64::MAX)
        );
        assert_eq!(ClientRange::Suffix(u64::MAX).upstream_range(s), None);
        assert_eq!(ClientRange::Suffix(u64::MAX).resolve(100).unwrap(), Some((0, 99)));
        assert_eq!(ClientRange::From(0, Some(u64::MAX)).resolve(100).unwrap(), Some((0, 99)));
        assert!(ClientRange::From(u64::MAX, None).resolve(100).is_err());
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((Some(10), 100)));
        assert_eq!(parse_content_range("bytes */100"), Some((None, 100)));
        assert_eq!(parse_content_range("junk"), None);
    }
}
