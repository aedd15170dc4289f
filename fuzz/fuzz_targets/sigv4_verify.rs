//! Request authentication over arbitrary requests: SigV4 Authorization headers, presigned SigV4 and SigV2 query
//! strings, dates, credential scopes, signed-header lists and canonicalisation of any path and query. The
//! verifier answers with an identity or an S3 error, never a panic; a request the fuzzer did not sign with the
//! secret must never authenticate.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use s3crypt::config::ClientCredential;
use s3crypt::sigv4::verify::{RequestHead, Verifier};
use s3crypt::util::secret::SecretString;

const PREFIXES: [&str; 4] = [
    "",
    "Authorization: AWS4-HMAC-SHA256 Credential=fuzz-client/20261123/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=",
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=fuzz-client%2F20261123%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261123T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=",
    "?AWSAccessKeyId=fuzz-client&Expires=1795392600&Signature=",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let method = match lines.next().unwrap_or("GET").trim() {
        "PUT" => http::Method::PUT,
        "POST" => http::Method::POST,
        "HEAD" => http::Method::HEAD,
        "DELETE" => http::Method::DELETE,
        _ => http::Method::GET,
    };
    let prefix = PREFIXES[usize::from(mode) % PREFIXES.len()];
    let target = lines.next().unwrap_or("/");
    let target = if prefix.starts_with('?') { format!("/b/k{prefix}{target}") } else { target.to_owned() };
    let Ok(uri) = target.parse::<http::Uri>() else { return };
    let mut headers = http::HeaderMap::new();
    let header_lines: Vec<String> = if prefix.starts_with("Authorization") {
        let mut v: Vec<String> = lines.map(str::to_owned).collect();
        let sig = v.pop().unwrap_or_default();
        v.push(format!("{prefix}{sig}"));
        v
    } else {
        lines.map(str::to_owned).collect()
    };
    for line in &header_lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.trim().as_bytes()), http::HeaderValue::from_str(v.trim()))
        {
            headers.append(k, v);
        }
    }
    let clients = [ClientCredential {
        access_key_id: "fuzz-client".into(),
        secret_access_key: SecretString::new("fuzz-secret-the-fuzzer-never-signs-with".into()),
        buckets: None,
        bucket_admin: false,
    }];
    let verifier = Verifier::new(&clients, "us-east-1", true);
    let head = RequestHead { method: &method, uri: &uri, headers: &headers, vhost_bucket: None };
    // 2026-11-23 00:05 UTC: inside the prefixes' credential date, presigned lifetimes and clock-skew window, so
    // inputs reach canonicalisation and the signature comparison.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_300);
    assert!(verifier.verify(&head, now).is_err(), "a request not signed with the secret authenticated");
});
