//! Legacy SigV2 *presigned URLs* (`?AWSAccessKeyId=…&Expires=…&Signature=…`), which boto3 and the aws CLI
//! v1 still produce by default for custom endpoints. Only the query form is accepted (header SigV2 is
//! refused), expiry is capped at 7 days like SigV4, and the comparison is constant-time. Can be turned off
//! with `server.allow_sigv2_presigned = false`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use subtle::ConstantTimeEq;

use super::MAX_PRESIGNED_EXPIRY_SECS;
use super::error::{AuthError, SignatureMismatch};
use crate::s3::error::RequestError;
use crate::util::uri::{percent_decode, uri_encode_path};

pub const P_ACCESS_KEY: &str = "AWSAccessKeyId";
pub const P_SIGNATURE: &str = "Signature";
pub const P_EXPIRES: &str = "Expires";

/// Query parameters that are part of the SigV2 canonical resource (the list botocore signs).
const SUBRESOURCES: [&str; 38] = [
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "legal-hold",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "retention",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
    "attributes",
];

/// Whether a decoded query carries SigV2 presigned parameters.
pub fn is_presigned_v2(query: &[(String, String)]) -> bool {
    query.iter().any(|(k, _)| k == P_ACCESS_KEY) && query.iter().any(|(k, _)| k == P_SIGNATURE)
}

/// What a verified SigV2 presigned request leaves for forwarding.
pub struct V2Verified {
    pub access_key_id: String,
    /// Query without the auth parameters and without the signed header copies.
    pub query: Vec<(String, String)>,
    /// Signed header values carried in the query (`x-amz-*`, `content-type`, `content-md5`): headers of the request.
    pub hoisted_headers: Vec<(HeaderName, HeaderValue)>,
}

fn canonical_resource(path: &str, vhost_bucket: Option<&str>, query: &[(String, String)]) -> String {
    let mut s = String::new();
    if let Some(b) = vhost_bucket {
        s.push('/');
        s.push_str(b);
    }
    s.push_str(path);
    let mut subs: Vec<&(String, String)> = query.iter().filter(|(k, _)| SUBRESOURCES.contains(&k.as_str())).collect();
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (k, v)) in subs.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        if !v.is_empty() {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// Parts of the request the SigV2 string to sign covers.
pub struct V2Request<'a> {
    pub method: &'a Method,
    pub raw_path: &'a str,
    pub headers: &'a HeaderMap,
    pub query: Vec<(String, String)>,
    pub vhost_bucket: Option<&'a str>,
}

/// The SigV2 presigned parameters, parsed.
struct V2Auth<'a> {
    access_key_id: &'a str,
    signature: &'a str,
    /// As given: the string to sign carries it so.
    expires_text: &'a str,
    expires_at: SystemTime,
}

impl<'a> V2Auth<'a> {
    fn parse(query: &'a [(String, String)]) -> Result<Self, AuthError> {
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let missing = || {
            AuthError::AuthorizationQueryParametersError(
                "Query-string authentication requires the AWSAccessKeyId, Signature and Expires parameters.".into(),
            )
        };
        for p in [P_ACCESS_KEY, P_SIGNATURE, P_EXPIRES] {
            if query.iter().filter(|(k, _)| k == p).count() > 1 {
                return Err(AuthError::AuthorizationQueryParametersError(format!("{p} must appear only once").into()));
            }
        }
        let access_key_id = param(P_ACCESS_KEY).ok_or_else(missing)?;
        let signature = param(P_SIGNATURE).ok_or_else(missing)?;
        let expires_text = param(P_EXPIRES).ok_or_else(missing)?;
        let expires: u64 = expires_text
            .parse()
            .map_err(|_| AuthError::AuthorizationQueryParametersError("Expires must be a number of seconds".into()))?;
        Ok(V2Auth { access_key_id, signature, expires_text, expires_at: UNIX_EPOCH + Duration::from_secs(expires) })
    }

    /// Not expired, and not valid for more than the 7 days SigV4 allows.
    fn admit(&self, now: SystemTime) -> Result<(), AuthError> {
        if now > self.expires_at {
            return Err(AuthError::RequestExpired { expires_secs: 0, expired_at: self.expires_at });
        }
        if self.expires_at > now + Duration::from_secs(MAX_PRESIGNED_EXPIRY_SECS) {
            return Err(AuthError::AuthorizationQueryParametersError(
                "Expires must be less than a week (604800 seconds) in the future".into(),
            ));
        }
        Ok(())
    }
}

/// The query of a SigV2 presigned request, sorted out: the `x-amz-*` values the signature covers (headers and
/// query copies, by name), the signed header copies as headers, and the rest of the query.
struct V2Query {
    amz: std::collections::BTreeMap<String, Vec<String>>,
    hoisted_headers: Vec<(HeaderName, HeaderValue)>,
    rest: Vec<(String, String)>,
}

impl V2Query {
    fn split(req: &V2Request<'_>) -> Result<V2Query, AuthError> {
        let mut q = V2Query { amz: Default::default(), hoisted_headers: Vec::new(), rest: Vec::new() };
        for (k, v) in req.headers {
            if k.as_str().starts_with("x-amz-") {
                q.amz.entry(k.as_str().to_owned()).or_default().push(v.to_str().unwrap_or("").trim().to_owned());
            }
        }
        for (k, v) in &req.query {
            let lower = k.to_ascii_lowercase();
            if [P_ACCESS_KEY, P_SIGNATURE, P_EXPIRES].contains(&k.as_str()) {
                continue;
            }
            // Signed header values carried in the query (botocore puts content-type, content-md5 and x-amz-* there)
            // become headers of the request (the caller merges them and refuses a header that says otherwise), so
            // a signed Content-MD5 is checked even if the header is absent.
            let signed_header_copy = lower == "content-type" || lower == "content-md5";
            if !signed_header_copy && !lower.starts_with("x-amz-") {
                q.rest.push((k.clone(), v.clone()));
                continue;
            }
            if !signed_header_copy && !req.headers.contains_key(lower.as_str()) {
                q.amz.entry(lower.clone()).or_default().push(v.trim().to_owned());
            }
            let name = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| RequestError::InvalidArgument("invalid x-amz-* query parameter".into()))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| RequestError::InvalidArgument("invalid x-amz-* query parameter value".into()))?;
            q.hoisted_headers.push((name, value));
        }
        Ok(q)
    }
}

/// Verifies a SigV2 presigned request; `secret_for` looks up a client's secret.
pub fn verify_presigned_v2(
    req: V2Request<'_>,
    secret_for: &dyn Fn(&str) -> Result<String, AuthError>,
    now: SystemTime,
) -> Result<V2Verified, AuthError> {
    let auth = V2Auth::parse(&req.query)?;
    auth.admit(now)?;
    let secret = secret_for(auth.access_key_id)?;
    let query = V2Query::split(&req)?;
    let header_or_query = |name: &str| -> String {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_owned())
            .or_else(|| req.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .unwrap_or_default()
    };
    let mut head = format!(
        "{}\n{}\n{}\n{}\n",
        req.method.as_str(),
        header_or_query("content-md5"),
        header_or_query("content-type"),
        auth.expires_text,
    );
    for (k, vs) in &query.amz {
        head.push_str(&format!("{k}:{}\n", vs.join(",")));
    }
    check_v2_signature(&req, &head, &secret, &auth)?;
    let V2Query { hoisted_headers, rest, .. } = query;
    Ok(V2Verified { access_key_id: auth.access_key_id.to_owned(), query: rest, hoisted_headers })
}

/// HMAC-SHA1 of the string to sign (`head` and the canonical resource, the path as sent or re-encoded) against the
/// signature given, in constant time.
fn check_v2_signature(req: &V2Request<'_>, head: &str, secret: &str, auth: &V2Auth<'_>) -> Result<(), AuthError> {
    let provided_bytes = B64.decode(auth.signature).unwrap_or_default();
    let mut paths = vec![req.raw_path.to_owned()];
    let mut reencoded = String::new();
    uri_encode_path(&percent_decode(req.raw_path.as_bytes()), &mut reencoded);
    if reencoded != req.raw_path {
        paths.push(reencoded);
    }
    let mut first = None;
    for path in &paths {
        let sts = format!("{head}{}", canonical_resource(path, req.vhost_bucket, &req.query));
        // HMAC takes keys of any length: this cannot fail, and if it did the signature could not match.
        let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else { continue };
        mac.update(sts.as_bytes());
        let computed = mac.finalize().into_bytes();
        if computed.len() == provided_bytes.len() && bool::from(computed.as_slice().ct_eq(&provided_bytes)) {
            return Ok(());
        }
        first.get_or_insert(sts);
    }
    Err(AuthError::SignatureDoesNotMatch(Box::new(SignatureMismatch {
        access_key_id: auth.access_key_id.to_owned(),
        string_to_sign: first.unwrap_or_default(),
        canonical_request: String::new(),
        signature_provided: auth.signature.to_owned(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::canonical::{PlusMode, parse_query};
    use crate::test_util::AtBoundary;

    // The SigV2 query-string example of the S3 documentation ("Query String Request Authentication").
    #[test]
    fn the_aws_documentation_presigned_v2_example_verifies() {
        let query = parse_query(
            "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D",
            PlusMode::Literal,
        );
        let headers = HeaderMap::new();
        let req = V2Request {
            method: &Method::GET,
            raw_path: "/photos/puppy.jpg",
            headers: &headers,
            query,
            vhost_bucket: Some("johnsmith"),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_175_139_000);
        let v = verify_presigned_v2(req, &|_| Ok("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()), now).unwrap();
        assert_eq!(v.access_key_id, "AKIAIOSFODNN7EXAMPLE");
        assert!(v.query.is_empty());
    }

    #[test]
    fn an_expired_v2_url_is_refused() {
        let query = parse_query("AWSAccessKeyId=A&Expires=100&Signature=x", PlusMode::Literal);
        let headers = HeaderMap::new();
        let req = V2Request { method: &Method::GET, raw_path: "/b/k", headers: &headers, query, vhost_bucket: None };
        let e = verify_presigned_v2(req, &|_| Ok("s".into()), UNIX_EPOCH + Duration::from_secs(101))
            .err()
            .map(|e| e.code().to_owned());
        assert_eq!(e.as_deref(), Some("AccessDenied"));
    }
}
