//! Outbound signing: every request the proxy forwards is re-signed for the upstream with S3's SigV4 settings
//! (single URI encoding, no path normalisation, `x-amz-content-sha256`), by the same canonicaliser that verifies
//! clients, with the signing key derived once per UTC day instead of once per request. The tests pin the output
//! byte for byte to the `aws-sigv4` crate's (docs/BENCHMARKS.md: the crate cost 10 % of a small request's CPU).

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{AUTHORIZATION, HOST};
use http::{HeaderName, HeaderValue};

use super::canonical::{
    PlusMode, build_canonical_request, canonical_header_value, canonical_query, parse_query, string_to_sign,
};
use super::credentials::StoreCredentials;
use super::error::SignError;
use super::{STREAMING_UNSIGNED_PAYLOAD_TRAILER, SigningKeys, UNSIGNED_PAYLOAD};
use crate::s3::headers::{X_AMZ_CONTENT_SHA256, X_AMZ_DATE, X_AMZ_SECURITY_TOKEN};
use crate::util::secret::SecretString;
use crate::util::time::format_amz_date;

/// What the upstream request's `x-amz-content-sha256` says.
#[derive(Debug, Clone)]
pub enum OutboundPayload {
    /// The body's SHA-256, hex (lets the upstream verify the body too).
    Sha256Hex(String),
    /// `UNSIGNED-PAYLOAD` (streamed bodies whose hash is not known up front).
    Unsigned,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (aws-chunked with a checksum trailer).
    StreamingUnsignedTrailer,
}

impl OutboundPayload {
    fn as_str(&self) -> &str {
        match self {
            OutboundPayload::Sha256Hex(h) => h,
            OutboundPayload::Unsigned => UNSIGNED_PAYLOAD,
            OutboundPayload::StreamingUnsignedTrailer => STREAMING_UNSIGNED_PAYLOAD_TRAILER,
        }
    }
}

/// Headers left out of the signature, as the AWS SDKs do: proxies may change them.
const UNSIGNED_HEADERS: [&str; 4] = ["authorization", "user-agent", "x-amzn-trace-id", "transfer-encoding"];

/// Signs requests with the proxy's upstream credentials (static, or the AWS chain's, refreshed).
#[derive(Debug, Clone)]
pub struct UpstreamSigner {
    credentials: Arc<StoreCredentials>,
    region: String,
    /// The signing key of the last date signed for (`YYYYMMDD`); it changes at midnight UTC.
    key: Arc<SigningKeys>,
}

impl UpstreamSigner {
    /// A signer with static keys.
    pub fn new(access_key_id: &str, secret: &SecretString, region: &str) -> UpstreamSigner {
        UpstreamSigner::with_credentials(StoreCredentials::fixed(access_key_id, secret), region)
    }

    pub fn with_credentials(credentials: Arc<StoreCredentials>, region: &str) -> UpstreamSigner {
        UpstreamSigner { credentials, region: region.to_owned(), key: Arc::default() }
    }

    /// Signs `req` in place: sets `authorization`, `x-amz-date` and `x-amz-content-sha256` (`host` is signed from
    /// the URI if the request has none). The URI must be absolute and already canonically encoded (as `Upstream::uri_for` builds
    /// it); every header present is signed but those in [`UNSIGNED_HEADERS`].
    pub fn sign<B>(
        &self,
        req: &mut http::Request<B>,
        payload: &OutboundPayload,
        now: SystemTime,
    ) -> Result<(), SignError> {
        let amz_date = format_amz_date(now);
        let date = amz_date.get(..8).ok_or(SignError::Unsignable("the clock is out of range"))?;
        let payload_line = payload.as_str();
        let creds = self.credentials.current();
        let headers = req.headers_mut();
        headers.remove(AUTHORIZATION);
        // Temporary credentials: the session token goes with the request, signed like every other header.
        match &creds.session_token {
            Some(token) => {
                headers.insert(X_AMZ_SECURITY_TOKEN, header_value(token.expose())?);
            }
            None => {
                headers.remove(X_AMZ_SECURITY_TOKEN);
            }
        }
        headers.insert(X_AMZ_DATE, header_value(&amz_date)?);
        headers.insert(X_AMZ_CONTENT_SHA256, header_value(payload_line)?);
        // Signed from the URI if absent, but left for the HTTP client to write (as `aws-sigv4` does).
        let host_from_uri = !req.headers().contains_key(HOST);
        if host_from_uri {
            let host = default_host(req.uri()).ok_or(SignError::NoHost)?;
            req.headers_mut().insert(HOST, header_value(&host)?);
        }

        let mut names: Vec<&HeaderName> =
            req.headers().keys().filter(|n| !UNSIGNED_HEADERS.contains(&n.as_str())).collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut block = Vec::with_capacity(512);
        for name in &names {
            let values = req.headers().get_all(*name);
            for v in values.iter() {
                if std::str::from_utf8(v.as_bytes()).is_err() {
                    return Err(SignError::HeaderNotText(name.to_string()));
                }
            }
            block.extend_from_slice(name.as_str().as_bytes());
            block.push(b':');
            canonical_header_value(values.iter().map(HeaderValue::as_bytes), &mut block);
            block.push(b'\n');
        }
        let signed: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        let query =
            req.uri().query().map_or_else(String::new, |q| canonical_query(&parse_query(q, PlusMode::Space), None));
        let creq = build_canonical_request(req.method(), req.uri().path(), &query, &block, &signed, payload_line);
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let sts = string_to_sign(&amz_date, &scope, &creq);
        let signature =
            self.key.get(&creds.access_key_id, creds.secret.expose(), date, now, &self.region).sign(sts.as_bytes());
        let authorization = format!(
            "{} Credential={}/{scope}, SignedHeaders={}, Signature={}",
            super::ALGORITHM,
            creds.access_key_id,
            signed.join(";"),
            signature.to_hex()
        );
        req.headers_mut().insert(AUTHORIZATION, header_value(&authorization)?);
        if host_from_uri {
            req.headers_mut().remove(HOST);
        }
        Ok(())
    }
}

fn header_value(s: &str) -> Result<HeaderValue, SignError> {
    HeaderValue::from_str(s).map_err(|_| SignError::Unsignable("a signing header value"))
}

/// `host[:port]` of an absolute URI, the default port left out.
fn default_host(uri: &http::Uri) -> Option<String> {
    let host = uri.host()?;
    let default = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 };
    Some(match uri.port_u16() {
        Some(p) if p != default => format!("{host}:{p}"),
        _other => host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientCredential;
    use crate::sigv4::verify::{RequestHead, Verifier};

    /// The reference: the `aws-sigv4` crate with S3's settings, as the proxy signed before.
    fn sign_with_aws_sigv4<B>(req: &mut http::Request<B>, payload: &OutboundPayload, now: SystemTime, secret: &str) {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
            UriPathNormalizationMode, sign,
        };
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let body = match payload {
            OutboundPayload::Sha256Hex(h) => SignableBody::Precomputed(h.clone()),
            OutboundPayload::Unsigned => SignableBody::UnsignedPayload,
            OutboundPayload::StreamingUnsignedTrailer => SignableBody::StreamingUnsignedPayloadTrailer,
        };
        let identity = aws_credential_types::Credentials::new("AKIDTEST", secret, None, None, "t").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-3")
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let headers: Vec<(String, String)> =
            req.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.uri().to_string(),
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            body,
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(req);
    }

    #[test]
    fn signatures_match_the_aws_sigv4_crate_byte_for_byte() {
        let secret = "secret/with+chars";
        let signer = UpstreamSigner::new("AKIDTEST", &SecretString::new(secret.into()), "eu-west-3");
        let payloads = [
            OutboundPayload::Unsigned,
            OutboundPayload::StreamingUnsignedTrailer,
            OutboundPayload::Sha256Hex(hex::encode(super::super::EMPTY_SHA256)),
        ];
        let uris = [
            "http://127.0.0.1:9000/b/plain.txt",
            "https://store.example:8443/b/sp%20ace%2Bplus%3D%40%21%28%29%5E%C3%A9?prefix=a%2Fb&max-keys=5",
            "http://127.0.0.1:9000/b//double//slash/..?uploads=",
            "https://bucket.s3.eu-west-3.amazonaws.com/k%7E?list-type=2&prefix=%20x&continuation-token=a%2Bb%3D%3D",
            "http://127.0.0.1:9000/b/k?uploadId=abc&partNumber=10",
            "http://127.0.0.1:9000/?x-id=ListBuckets",
        ];
        let mut checked = 0;
        for (i, uri) in uris.iter().enumerate() {
            for (j, payload) in payloads.iter().enumerate() {
                let now =
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_392_300 + (i * 40_000 + j) as u64);
                let build = || {
                    let authority = uri.split('/').nth(2).unwrap();
                    let host = authority.trim_end_matches(":443").to_owned();
                    http::Request::builder()
                        .method(if j == 1 { "PUT" } else { "GET" })
                        .uri(*uri)
                        .header("host", host)
                        .header("x-amz-meta-a", "  spaced   value ")
                        .header("x-amz-meta-a", "second")
                        .header("content-type", "text/plain")
                        .header("content-length", "4")
                        .header("user-agent", "not signed")
                        .header("range", "bytes=0-9")
                        .body(())
                        .unwrap()
                };
                let (mut ours, mut theirs) = (build(), build());
                if i == 0 {
                    // no Host header: signed from the URI
                    ours.headers_mut().remove("host");
                    theirs.headers_mut().remove("host");
                }
                signer.sign(&mut ours, payload, now).unwrap();
                sign_with_aws_sigv4(&mut theirs, payload, now, secret);
                for h in ["authorization", "x-amz-date", "x-amz-content-sha256"] {
                    assert_eq!(ours.headers().get(h), theirs.headers().get(h), "{uri} {payload:?} {h}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, uris.len() * payloads.len());
    }

    #[test]
    fn what_the_signer_signs_the_verifier_accepts() {
        // Both halves share the canonicaliser; `signatures_match_the_aws_sigv4_crate_byte_for_byte` pins the signer
        // to an independent implementation.
        let secret = SecretString::new("secret/with+chars".into());
        let signer = UpstreamSigner::new("AKIDTEST", &secret, "eu-west-3");
        let verifier = Verifier::new(
            &[ClientCredential {
                access_key_id: "AKIDTEST".into(),
                secret_access_key: secret,
                buckets: None,
                bucket_admin: false,
            }],
            "eu-west-3",
            false,
        );
        let now = SystemTime::now();
        for (path, query) in [
            ("/b/plain.txt", ""),
            ("/b/sp%20ace%2Bplus%3D%40%21%28%29%5E%C3%A9", "prefix=a%2Fb&max-keys=5"),
            ("/b//double//slash/..", "uploads="),
            ("/b/k", "list-type=2&prefix=%20x"),
        ] {
            let uri = if query.is_empty() {
                format!("http://127.0.0.1:9000{path}")
            } else {
                format!("http://127.0.0.1:9000{path}?{query}")
            };
            let mut req = http::Request::builder()
                .method("PUT")
                .uri(&uri)
                .header("host", "127.0.0.1:9000")
                .header("x-amz-meta-a", "  spaced   value ")
                .header("content-type", "text/plain")
                .body(())
                .unwrap();
            signer.sign(&mut req, &OutboundPayload::Unsigned, now).unwrap();
            let head = RequestHead { method: req.method(), uri: req.uri(), headers: req.headers(), vhost_bucket: None };
            let a = verifier.verify(&head, now).unwrap_or_else(|e| panic!("{uri}: {e:?}"));
            assert_eq!(a.payload, crate::sigv4::verify::PayloadMode::Unsigned);
        }
    }
}
