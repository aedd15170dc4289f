//! The ETags clients see for encrypted objects, and the conditional requests evaluated against them.
//!
//! The store's ETag of an encrypted object describes ciphertext. Clients get S3's contract instead
//! (docs/ENCRYPTION.md "ETags"): an ETag that looks like an MD5 (32 hex digits) is always the MD5 of the
//! plaintext; every other ETag is opaque.
//! - SSE-S3 (the keyring), one part: the plaintext MD5 where the proxy knows it (the PUT's answer always; reads when
//!   the MD5 is sealed in the envelope's attributes).
//! - Otherwise the *opaque form* of the store's ETag: `"<hex>"` becomes `"<hex>-1"`, a multipart `"<hex>-N"` stays.
//!   The mapping is one-to-one, so an opaque ETag a client sends back (If-Match, a Complete's part list) names the
//!   store's ETag again ([`store_form`]).
//!
//! Conditional reads (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since) of encrypted objects are
//! evaluated here, after the envelope is authenticated, against both forms, with S3's precedence.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::error::ProxyError;

/// The bare value of an ETag (no quotes, no weak prefix).
fn bare(etag: &str) -> &str {
    let t = etag.trim();
    t.strip_prefix("W/").unwrap_or(t).trim_matches('"')
}

fn quoted(bare: &str) -> String {
    format!("\"{bare}\"")
}

/// The opaque form of a store ETag, quoted: a single-part `"<hex>"` becomes `"<hex>-1"`; a multipart ETag (with a
/// `-`) is kept.
pub fn opaque(store: &str) -> String {
    let b = bare(store);
    if b.contains('-') { quoted(b) } else { quoted(&format!("{b}-1")) }
}

/// The plaintext MD5 as an ETag.
pub fn md5_etag(md5: &[u8; 16]) -> String {
    quoted(&hex::encode(md5))
}

/// S3's ETag of an object completed from `parts` parts: the MD5 of their MD5s, `"<hex>-<parts>"`.
pub fn multipart_etag(parts: u32, md5_of_md5s: &[u8; 16]) -> String {
    quoted(&format!("{}-{parts}", hex::encode(md5_of_md5s)))
}

/// The MD5 an ETag of MD5 form (32 hex digits) names; `None` for any other form.
pub fn as_md5(etag: &str) -> Option<[u8; 16]> {
    let b = bare(etag);
    if b.len() != 32 {
        return None;
    }
    hex::decode(b).ok()?.try_into().ok()
}

/// A client's ETag in the store's terms: the opaque `"<hex>-1"` back to `"<hex>"`; any other value unchanged.
pub fn store_form(client: &str) -> String {
    let b = bare(client);
    match b.strip_suffix("-1") {
        Some(h) if !h.is_empty() && !h.contains('-') => quoted(h),
        _ => quoted(b),
    }
}

/// Replaces the store's ETag in a response with the client's: the plaintext MD5 if given, else the opaque form.
pub fn present<B>(resp: &mut Response<B>, md5: Option<&[u8; 16]>) {
    let store = resp.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let etag = match (md5, store) {
        (Some(m), _) => md5_etag(m),
        (None, Some(s)) => opaque(&s),
        (None, None) => return,
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
}

/// Whether an ETag list (`If-Match` / `If-None-Match` syntax: `*` or comma-separated tags) names one of `tags`.
pub fn list_names(list: &str, tags: &[&str]) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .any(|w| w == "*" || tags.iter().any(|t| bare(w) == bare(t)))
}

/// The four conditional headers of a read.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    if_match: Option<String>,
    if_none_match: Option<String>,
    if_modified_since: Option<SystemTime>,
    if_unmodified_since: Option<SystemTime>,
}

/// Why a conditional read is not answered with the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmet {
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

const CONDITIONAL: [HeaderName; 4] = [
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_UNMODIFIED_SINCE,
];

impl Conditions {
    /// The conditions of a request (an unparsable date is ignored, as S3 does).
    pub fn of(headers: &HeaderMap) -> Conditions {
        let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let date = |n: &HeaderName| text(n).and_then(|t| httpdate::parse_http_date(t.trim()).ok());
        Conditions {
            if_match: text(&http::header::IF_MATCH),
            if_none_match: text(&http::header::IF_NONE_MATCH),
            if_modified_since: date(&http::header::IF_MODIFIED_SINCE),
            if_unmodified_since: date(&http::header::IF_UNMODIFIED_SINCE),
        }
    }

    /// The request's headers without its conditions (the proxy evaluates them); borrowed when it has none.
    pub fn strip(headers: &HeaderMap) -> std::borrow::Cow<'_, HeaderMap> {
        if !CONDITIONAL.iter().any(|n| headers.contains_key(n)) {
            return std::borrow::Cow::Borrowed(headers);
        }
        let mut h = headers.clone();
        for n in &CONDITIONAL {
            h.remove(n);
        }
        std::borrow::Cow::Owned(h)
    }

    /// S3's evaluation: If-Match first (when it holds, If-Unmodified-Since is not looked at), then
    /// If-Unmodified-Since; If-None-Match (when it fails, If-Modified-Since is not looked at), then
    /// If-Modified-Since. `tags` are the forms of the object's ETag a client may hold.
    pub fn evaluate(&self, tags: &[&str], last_modified: Option<SystemTime>) -> Result<(), Unmet> {
        // HTTP dates have one-second resolution.
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let modified_after = |since: SystemTime| last_modified.is_some_and(|m| secs(m) > secs(since));
        match &self.if_match {
            Some(list) if !list_names(list, tags) => return Err(Unmet::PreconditionFailed),
            Some(_) => {}
            None => {
                if self.if_unmodified_since.is_some_and(modified_after) {
                    return Err(Unmet::PreconditionFailed);
                }
            }
        }
        match &self.if_none_match {
            Some(list) if list_names(list, tags) => return Err(Unmet::NotModified),
            Some(_) => {}
            None => {
                if self.if_modified_since.is_some_and(|since| !modified_after(since)) {
                    return Err(Unmet::NotModified);
                }
            }
        }
        Ok(())
    }
}

/// S3's 412.
pub fn precondition_failed() -> ProxyError {
    ProxyError::Upstream {
        status: StatusCode::PRECONDITION_FAILED,
        code: "PreconditionFailed".into(),
        message: "At least one of the pre-conditions you specified did not hold".into(),
        headers: Vec::new(),
    }
}

/// The Last-Modified of a store answer.
pub fn last_modified(headers: &HeaderMap) -> Option<SystemTime> {
    headers
        .get(http::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| httpdate::parse_http_date(t.trim()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_opaque_form_is_one_to_one_with_the_store_etag() {
        assert_eq!(opaque("\"abc\""), "\"abc-1\"");
        assert_eq!(opaque("abc"), "\"abc-1\"");
        assert_eq!(opaque("\"abc-3\""), "\"abc-3\"");
        assert_eq!(store_form("\"abc-1\""), "\"abc\"");
        assert_eq!(store_form("abc-1"), "\"abc\"");
        assert_eq!(store_form("\"abc-3\""), "\"abc-3\"");
        assert_eq!(store_form("\"abc\""), "\"abc\"");
        for s in ["\"0123\"", "\"ff-2\""] {
            assert_eq!(store_form(&opaque(s)), s);
        }
    }

    #[test]
    fn conditions_follow_s3_precedence() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let before = httpdate::fmt_http_date(t0 - Duration::from_secs(60));
        let after = httpdate::fmt_http_date(t0 + Duration::from_secs(60));
        let c = |pairs: &[(HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.insert(n.clone(), HeaderValue::from_str(v).unwrap());
            }
            Conditions::of(&h)
        };
        let tags = ["\"md5\"", "\"abc-1\""];
        let m = Some(t0);
        use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};
        assert_eq!(c(&[(IF_MATCH, "\"abc-1\"")]).evaluate(&tags, m), Ok(()));
        assert_eq!(c(&[(IF_MATCH, "\"md5\"")]).evaluate(&tags, m), Ok(()));
        assert_eq!(c(&[(IF_MATCH, "\"x\", *")]).evaluate(&tags, m), Ok(()));
        assert_eq!(c(&[(IF_MATCH, "\"x\"")]).evaluate(&tags, m), Err(Unmet::PreconditionFailed));
        // If-Match holds: If-Unmodified-Since is not looked at.
        assert_eq!(c(&[(IF_MATCH, "\"md5\""), (IF_UNMODIFIED_SINCE, &before)]).evaluate(&tags, m), Ok(()));
        assert_eq!(c(&[(IF_UNMODIFIED_SINCE, &before)]).evaluate(&tags, m), Err(Unmet::PreconditionFailed));
        assert_eq!(c(&[(IF_UNMODIFIED_SINCE, &after)]).evaluate(&tags, m), Ok(()));
        assert_eq!(c(&[(IF_NONE_MATCH, "\"abc-1\"")]).evaluate(&tags, m), Err(Unmet::NotModified));
        assert_eq!(c(&[(IF_NONE_MATCH, "*")]).evaluate(&tags, m), Err(Unmet::NotModified));
        // If-None-Match fails to match: If-Modified-Since is not looked at.
        assert_eq!(c(&[(IF_NONE_MATCH, "\"x\""), (IF_MODIFIED_SINCE, &after)]).evaluate(&tags, m), Ok(()));
        assert_eq!(c(&[(IF_MODIFIED_SINCE, &after)]).evaluate(&tags, m), Err(Unmet::NotModified));
        assert_eq!(c(&[(IF_MODIFIED_SINCE, &before)]).evaluate(&tags, m), Ok(()));
        assert_eq!(c(&[(IF_MODIFIED_SINCE, "not a date")]).evaluate(&tags, m), Ok(()));
    }
}
