//! Inbound SigV4 verification from the request head alone (so `Expect: 100-continue` costs nothing on a
//! rejection): Authorization-header and presigned-URL forms, S3 canonicalisation, scope, clock skew and
//! expiry checks, unsigned `x-amz-*` headers refused, constant-time comparison.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::MAX_PRESIGNED_EXPIRY_SECS;
use super::canonical::{
    PlusMode, build_canonical_request, canonical_header_value, canonical_query, parse_query, raw_path_is_ambiguous,
    string_to_sign,
};
use super::{
    ALGORITHM, ALGORITHM_ECDSA, STREAMING_ECDSA_PREFIX, STREAMING_SIGNED_PAYLOAD, STREAMING_SIGNED_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER, Signature, SigningKey, UNSIGNED_PAYLOAD,
};
use crate::config::ClientCredential;
use crate::error::{ProxyError, SignatureMismatch};
use crate::s3::headers::{X_AMZ_CONTENT_SHA256, X_AMZ_DATE, X_AMZ_SECURITY_TOKEN};
use crate::util::time::{format_amz_date, parse_amz_date};
use crate::util::uri::{percent_decode, uri_encode_path};

/// Largest clock difference accepted for header auth, and for presigned dates in the future.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

const P_ALGORITHM: &str = "X-Amz-Algorithm";
const P_CREDENTIAL: &str = "X-Amz-Credential";
const P_DATE: &str = "X-Amz-Date";
const P_EXPIRES: &str = "X-Amz-Expires";
const P_SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
const P_SIGNATURE: &str = "X-Amz-Signature";
const P_SECURITY_TOKEN: &str = "X-Amz-Security-Token";
const P_CONTENT_SHA256: &str = "X-Amz-Content-Sha256";
const AUTH_PARAMS: [&str; 8] =
    [P_ALGORITHM, P_CREDENTIAL, P_DATE, P_EXPIRES, P_SIGNED_HEADERS, P_SIGNATURE, P_SECURITY_TOKEN, P_CONTENT_SHA256];

/// What the signed `x-amz-content-sha256` says about the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadMode {
    /// Raw body whose SHA-256 must equal this.
    Sha256([u8; 32]),
    /// Raw body, not covered by the signature.
    Unsigned,
    /// aws-chunked, unsigned chunks, optional checksum trailer.
    StreamingUnsignedTrailer,
    /// aws-chunked, each chunk signed.
    StreamingSigned,
    /// aws-chunked, each chunk signed, then a signed trailer.
    StreamingSignedTrailer,
}

impl PayloadMode {
    pub fn is_aws_chunked(&self) -> bool {
        matches!(
            self,
            PayloadMode::StreamingUnsignedTrailer | PayloadMode::StreamingSigned | PayloadMode::StreamingSignedTrailer
        )
    }
}

/// What signed chunks are checked against (the chain starts at the seed signature).
#[derive(Debug)]
pub struct ChunkSigningContext {
    pub key: SigningKey,
    pub amz_date: String,
    pub scope: String,
    pub seed_signature: Signature,
}

/// A verified request.
#[derive(Debug)]
pub struct Authenticated {
    pub client: Arc<ClientCredential>,
    pub payload: PayloadMode,
    /// Decoded query parameters without the presigned auth parameters and hoisted `x-amz-*` headers.
    pub query: Vec<(String, String)>,
    /// `x-amz-*` parameters of a presigned URL, to be sent upstream as headers.
    pub hoisted_headers: Vec<(HeaderName, HeaderValue)>,
    /// The chain seed for signed aws-chunked bodies (SigV4 header auth only).
    pub chunk_signing: Option<ChunkSigningContext>,
    pub presigned: bool,
}

/// The clients the proxy knows, by access key id, and the region they must sign for.
#[derive(Debug)]
pub struct Verifier {
    clients: HashMap<String, Arc<ClientCredential>>,
    region: String,
    allow_sigv2_presigned: bool,
}

/// The parts of a request head verification reads.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The bucket named by a virtual-hosted-style Host (SigV2 signs it as part of the resource).
    pub vhost_bucket: Option<&'a str>,
}

struct Credential<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
}

impl Verifier {
    pub fn new(clients: &[ClientCredential], region: &str, allow_sigv2_presigned: bool) -> Verifier {
        Verifier {
            clients: clients.iter().map(|c| (c.access_key_id.clone(), Arc::new(c.clone()))).collect(),
            region: region.to_owned(),
            allow_sigv2_presigned,
        }
    }

    /// Verifies a request head at time `now`.
    pub fn verify(&self, req: &RequestHead<'_>, now: SystemTime) -> Result<Authenticated, ProxyError> {
        let raw_query = req.uri.query().unwrap_or("");
        let literal_query = parse_query(raw_query, PlusMode::Literal);
        let is_presigned = literal_query.iter().any(|(k, _)| k == P_ALGORITHM || k == P_SIGNATURE);
        if is_presigned {
            return self.verify_presigned(req, literal_query, now);
        }
        if super::v2::is_presigned_v2(&literal_query) {
            if !self.allow_sigv2_presigned {
                return Err(sigv2_refused());
            }
            return self.verify_presigned_v2(req, literal_query, now);
        }
        let Some(auth) = req.headers.get(http::header::AUTHORIZATION) else {
            return Err(ProxyError::AccessDenied("Anonymous access is not allowed; sign the request with SigV4."));
        };
        let auth = auth.to_str().map_err(|_| malformed("the Authorization header is not ASCII"))?;
        if auth.starts_with(ALGORITHM_ECDSA) {
            return Err(ProxyError::NotImplemented("AWS4-ECDSA-P256-SHA256 (SigV4a) signing is not supported."));
        }
        let Some(rest) = auth.strip_prefix(ALGORITHM).filter(|r| r.starts_with(' ')) else {
            return Err(sigv2_refused());
        };
        self.verify_header(req, rest, literal_query, now)
    }

    fn verify_presigned_v2(
        &self,
        req: &RequestHead<'_>,
        literal_query: Vec<(String, String)>,
        now: SystemTime,
    ) -> Result<Authenticated, ProxyError> {
        if req.headers.contains_key(X_AMZ_SECURITY_TOKEN) {
            return Err(ProxyError::InvalidToken);
        }
        let v = super::v2::verify_presigned_v2(
            super::v2::V2Request {
                method: req.method,
                raw_path: if req.uri.path().is_empty() { "/" } else { req.uri.path() },
                headers: req.headers,
                query: literal_query,
                vhost_bucket: req.vhost_bucket,
            },
            &|akid| self.client(akid).map(|c| c.secret_access_key.expose().to_owned()),
            now,
        )?;
        let payload = match header_text(req.headers, &X_AMZ_CONTENT_SHA256) {
            Some(h) => parse_payload_mode(h)?,
            None => PayloadMode::Unsigned,
        };
        if payload.is_aws_chunked() {
            return Err(ProxyError::NotImplemented("aws-chunked bodies are not supported on presigned URLs."));
        }
        Ok(Authenticated {
            client: Arc::clone(self.client(&v.access_key_id)?),
            payload,
            query: v.query,
            hoisted_headers: v.hoisted_headers,
            chunk_signing: None,
            presigned: true,
        })
    }

    fn client(&self, akid: &str) -> Result<&Arc<ClientCredential>, ProxyError> {
        self.clients.get(akid).ok_or_else(|| ProxyError::InvalidAccessKeyId { access_key_id: akid.to_owned() })
    }

    fn check_scope(&self, cred: &Credential<'_>, amz_date: &str) -> Result<(), ProxyError> {
        if cred.region != self.region {
            return Err(ProxyError::AuthorizationHeaderMalformed {
                message: format!(
                    "The authorization header is malformed; the region '{}' is wrong; expecting '{}'",
                    cred.region, self.region
                )
                .into(),
                region: Some(self.region.clone()),
            });
        }
        if !amz_date.starts_with(cred.date) || cred.date.len() != 8 {
            return Err(malformed("Invalid credential date. Date is not the same as X-Amz-Date."));
        }
        Ok(())
    }

    fn verify_header(
        &self,
        req: &RequestHead<'_>,
        params: &str,
        literal_query: Vec<(String, String)>,
        now: SystemTime,
    ) -> Result<Authenticated, ProxyError> {
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in params.split(',') {
            let part = part.trim();
            let (k, v) = part.split_once('=').ok_or_else(|| malformed("malformed Authorization component"))?;
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(malformed("unknown Authorization component")),
            };
            if slot.replace(v).is_some() {
                return Err(malformed("duplicate Authorization component"));
            }
        }
        let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
            return Err(malformed("the Authorization header needs Credential, SignedHeaders and Signature"));
        };
        let cred = parse_credential(credential).ok_or_else(|| {
            malformed("the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
        })?;
        let provided = Signature::from_hex(signature).ok_or_else(|| malformed("the Signature is not 64 hex digits"))?;
        let amz_date = header_text(req.headers, &X_AMZ_DATE)
            .or_else(|| header_text(req.headers, &http::header::DATE).filter(|d| parse_amz_date(d).is_some()))
            .ok_or(ProxyError::AccessDenied("AWS authentication requires a valid Date or x-amz-date header"))?;
        let request_time = parse_amz_date(amz_date)
            .ok_or(ProxyError::AccessDenied("AWS authentication requires a valid Date or x-amz-date header"))?;
        self.check_scope(&cred, amz_date)?;
        let client = self.client(cred.access_key_id)?;
        let skew = now.duration_since(request_time).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
        if skew > MAX_CLOCK_SKEW {
            return Err(ProxyError::RequestTimeTooSkewed { request_time });
        }
        if req.headers.contains_key(X_AMZ_SECURITY_TOKEN) {
            return Err(ProxyError::InvalidToken);
        }
        let signed = parse_signed_headers(signed_headers)?;
        check_headers_signed(req.headers, &signed)?;
        let content_sha = header_text(req.headers, &X_AMZ_CONTENT_SHA256).ok_or_else(|| {
            ProxyError::InvalidRequest("Missing required header for this request: x-amz-content-sha256".into())
        })?;
        let payload = parse_payload_mode(content_sha)?;

        let key = SigningKey::derive(client.secret_access_key.expose(), request_time, &self.region);
        let scope = format!("{}/{}/s3/aws4_request", cred.date, cred.region);
        let query = self.check_signature(
            req,
            &signed,
            content_sha,
            literal_query,
            None,
            &key,
            amz_date,
            &scope,
            &provided,
            cred.access_key_id,
        )?;
        Ok(Authenticated {
            client: Arc::clone(client),
            payload,
            query,
            hoisted_headers: Vec::new(),
            chunk_signing: Some(ChunkSigningContext {
                key,
                amz_date: amz_date.to_owned(),
                scope,
                seed_signature: provided,
            }),
            presigned: false,
        })
    }

    fn verify_presigned(
        &self,
        req: &RequestHead<'_>,
        literal_query: Vec<(String, String)>,
        now: SystemTime,
    ) -> Result<Authenticated, ProxyError> {
        let mut found: HashMap<&'static str, String> = HashMap::new();
        for (k, v) in &literal_query {
            if let Some(p) = AUTH_PARAMS.iter().find(|p| **p == k.as_str())
                && found.insert(p, v.clone()).is_some()
            {
                return Err(ProxyError::AuthorizationQueryParametersError(format!("{p} must appear only once").into()));
            }
        }
        let need = |p: &str| {
            found.get(p).map(String::as_str).ok_or(ProxyError::AuthorizationQueryParametersError(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, \
                 X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
                    .into(),
            ))
        };
        let algorithm = need(P_ALGORITHM)?;
        if algorithm == ALGORITHM_ECDSA {
            return Err(ProxyError::NotImplemented("AWS4-ECDSA-P256-SHA256 (SigV4a) signing is not supported."));
        }
        if algorithm != ALGORITHM {
            return Err(ProxyError::AuthorizationQueryParametersError(
                "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"".into(),
            ));
        }
        let (credential, amz_date, expires, signed_headers, signature) =
            (need(P_CREDENTIAL)?, need(P_DATE)?, need(P_EXPIRES)?, need(P_SIGNED_HEADERS)?, need(P_SIGNATURE)?);
        let cred = parse_credential(credential).ok_or_else(|| {
            ProxyError::AuthorizationQueryParametersError(
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \
                 \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\"."
                    .into(),
            )
        })?;
        let request_time = parse_amz_date(amz_date).ok_or_else(|| {
            ProxyError::AuthorizationQueryParametersError(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"".into(),
            )
        })?;
        let expires_secs: u64 = expires
            .parse()
            .map_err(|_| ProxyError::AuthorizationQueryParametersError("X-Amz-Expires should be a number".into()))?;
        if expires_secs == 0 {
            return Err(ProxyError::AuthorizationQueryParametersError("X-Amz-Expires must be non-negative".into()));
        }
        if expires_secs > MAX_PRESIGNED_EXPIRY_SECS {
            return Err(ProxyError::AuthorizationQueryParametersError(
                "X-Amz-Expires must be less than a week (in seconds) that is 604800".into(),
            ));
        }
        let provided = Signature::from_hex(signature).ok_or_else(|| {
            ProxyError::AuthorizationQueryParametersError("X-Amz-Signature must be 64 hex digits".into())
        })?;
        self.check_scope(&cred, amz_date).map_err(|e| match e {
            ProxyError::AuthorizationHeaderMalformed { message, .. } => {
                ProxyError::AuthorizationQueryParametersError(message)
            }
            other => other,
        })?;
        let client = self.client(cred.access_key_id)?;
        if request_time > now + MAX_CLOCK_SKEW {
            return Err(ProxyError::AccessDenied("Request is not valid yet"));
        }
        let expired_at = request_time + Duration::from_secs(expires_secs);
        if now > expired_at {
            return Err(ProxyError::RequestExpired { expires_secs, expired_at });
        }
        if found.contains_key(P_SECURITY_TOKEN) || req.headers.contains_key(X_AMZ_SECURITY_TOKEN) {
            return Err(ProxyError::InvalidToken);
        }
        let signed = parse_signed_headers(signed_headers)?;
        check_headers_signed(req.headers, &signed)?;

        // The body: presigned URLs sign UNSIGNED-PAYLOAD unless a hash was put in the query; a hex
        // x-amz-content-sha256 header is still checked against the body.
        // A hash signed in the query binds the body: an (unsigned) header may not replace it with another value
        // or with UNSIGNED-PAYLOAD.
        let payload_line = found.get(P_CONTENT_SHA256).map_or(UNSIGNED_PAYLOAD, String::as_str);
        let header_hash = header_text(req.headers, &X_AMZ_CONTENT_SHA256);
        if payload_line != UNSIGNED_PAYLOAD
            && let Some(h) = header_hash
            && h != payload_line
        {
            return Err(ProxyError::InvalidArgument(
                "x-amz-content-sha256 is given as a header and a query parameter with different values".into(),
            ));
        }
        let body_hash =
            if payload_line == UNSIGNED_PAYLOAD { header_hash.unwrap_or(payload_line) } else { payload_line };
        let payload = parse_payload_mode(body_hash)?;
        if payload.is_aws_chunked() {
            return Err(ProxyError::NotImplemented("aws-chunked bodies are not supported on presigned URLs."));
        }

        let key = SigningKey::derive(client.secret_access_key.expose(), request_time, &self.region);
        let scope = format!("{}/{}/s3/aws4_request", cred.date, cred.region);
        let query = self.check_signature(
            req,
            &signed,
            payload_line,
            literal_query,
            Some(P_SIGNATURE),
            &key,
            amz_date,
            &scope,
            &provided,
            cred.access_key_id,
        )?;
        let mut hoisted_headers = Vec::new();
        let mut rest = Vec::with_capacity(query.len());
        for (k, v) in query {
            if AUTH_PARAMS.contains(&k.as_str()) {
                continue;
            }
            let lower = k.to_ascii_lowercase();
            if lower.starts_with("x-amz-") {
                let name = HeaderName::from_bytes(lower.as_bytes())
                    .map_err(|_| ProxyError::InvalidArgument("invalid x-amz-* query parameter".into()))?;
                let value = HeaderValue::from_str(&v)
                    .map_err(|_| ProxyError::InvalidArgument("invalid x-amz-* query parameter value".into()))?;
                if let Some(existing) = req.headers.get(&name)
                    && existing != value
                {
                    return Err(ProxyError::InvalidArgument(
                        format!("{lower} is given as a header and a query parameter with different values").into(),
                    ));
                }
                hoisted_headers.push((name, value));
            } else {
                rest.push((k, v));
            }
        }
        Ok(Authenticated {
            client: Arc::clone(client),
            payload,
            query: rest,
            hoisted_headers,
            chunk_signing: None,
            presigned: true,
        })
    }

    /// Builds the canonical request and compares signatures, trying the decoded-then-re-encoded path
    /// first and the raw path second, and a raw `+` in the query as `+` first and as a space second.
    /// Returns the decoded query in the interpretation that verified.
    #[allow(clippy::too_many_arguments)]
    fn check_signature(
        &self,
        req: &RequestHead<'_>,
        signed: &[&str],
        payload_line: &str,
        literal_query: Vec<(String, String)>,
        exclude: Option<&str>,
        key: &SigningKey,
        amz_date: &str,
        scope: &str,
        provided: &Signature,
        access_key_id: &str,
    ) -> Result<Vec<(String, String)>, ProxyError> {
        let raw_path = req.uri.path();
        let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
        let mut paths = vec![{
            let mut p = String::with_capacity(raw_path.len() + 16);
            uri_encode_path(&percent_decode(raw_path.as_bytes()), &mut p);
            p
        }];
        if raw_path_is_ambiguous(raw_path) && paths[0] != raw_path {
            paths.push(raw_path.to_owned());
        }
        let raw_query = req.uri.query().unwrap_or("");
        let mut queries = vec![literal_query];
        if raw_query.contains('+') {
            queries.push(parse_query(raw_query, PlusMode::Space));
        }
        let headers_block = canonical_headers(req, signed);
        let mut first_attempt = None;
        for query in &queries {
            let cq = canonical_query(query, exclude);
            for path in &paths {
                let creq = build_canonical_request(req.method, path, &cq, &headers_block, signed, payload_line);
                let sts = string_to_sign(amz_date, scope, &creq);
                if key.sign(sts.as_bytes()).ct_eq(provided) {
                    return Ok(query.clone());
                }
                first_attempt.get_or_insert((creq, sts));
            }
        }
        let (canonical_request, string_to_sign) = first_attempt.unwrap_or_default();
        Err(ProxyError::SignatureDoesNotMatch(Box::new(SignatureMismatch {
            access_key_id: access_key_id.to_owned(),
            string_to_sign,
            canonical_request,
            signature_provided: provided.to_hex(),
        })))
    }
}

fn sigv2_refused() -> ProxyError {
    ProxyError::InvalidRequest(
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.".into(),
    )
}

fn malformed(msg: &'static str) -> ProxyError {
    ProxyError::AuthorizationHeaderMalformed { message: msg.into(), region: None }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `AKID/YYYYMMDD/region/s3/aws4_request`.
fn parse_credential(s: &str) -> Option<Credential<'_>> {
    let mut it = s.rsplitn(5, '/');
    let terminator = it.next()?;
    let service = it.next()?;
    let region = it.next()?;
    let date = it.next()?;
    let access_key_id = it.next()?;
    if terminator != "aws4_request" || service != "s3" || access_key_id.is_empty() || region.is_empty() {
        return None;
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Credential { access_key_id, date, region })
}

fn parse_signed_headers(s: &str) -> Result<Vec<&str>, ProxyError> {
    let list: Vec<&str> = s.split(';').collect();
    if list.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(malformed("SignedHeaders must be a ';'-separated list of lowercase header names"));
    }
    if !list.contains(&"host") {
        return Err(ProxyError::HeadersNotSigned(vec!["host".to_owned()]));
    }
    Ok(list)
}

/// Every `x-amz-*` header present must be signed (an unsigned one could have been injected on the way and
/// would then be re-signed by the proxy). `x-amz-content-sha256` is tolerated: its value is signed anyway.
fn check_headers_signed(headers: &HeaderMap, signed: &[&str]) -> Result<(), ProxyError> {
    let mut unsigned: Vec<String> = headers
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| n.starts_with("x-amz-") && *n != X_AMZ_CONTENT_SHA256.as_str() && !signed.contains(n))
        .map(str::to_owned)
        .collect();
    if unsigned.is_empty() {
        Ok(())
    } else {
        unsigned.sort();
        unsigned.dedup();
        Err(ProxyError::HeadersNotSigned(unsigned))
    }
}

fn parse_payload_mode(v: &str) -> Result<PayloadMode, ProxyError> {
    Ok(match v {
        UNSIGNED_PAYLOAD => PayloadMode::Unsigned,
        STREAMING_UNSIGNED_PAYLOAD_TRAILER => PayloadMode::StreamingUnsignedTrailer,
        STREAMING_SIGNED_PAYLOAD => PayloadMode::StreamingSigned,
        STREAMING_SIGNED_PAYLOAD_TRAILER => PayloadMode::StreamingSignedTrailer,
        v if v.starts_with(STREAMING_ECDSA_PREFIX) => {
            return Err(ProxyError::NotImplemented("SigV4a (ECDSA) streaming payloads are not supported."));
        }
        v => {
            let mut b = [0u8; 32];
            if v.len() != 64 || hex::decode_to_slice(v, &mut b).is_err() {
                return Err(ProxyError::InvalidArgument(
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, \
                     STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid \
                     sha256 value."
                        .into(),
                ));
            }
            PayloadMode::Sha256(b)
        }
    })
}

/// `name:value\n` for each signed header, in the order the client listed them.
fn canonical_headers(req: &RequestHead<'_>, signed: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for name in signed {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut values = req.headers.get_all(*name).iter().map(HeaderValue::as_bytes).peekable();
        if values.peek().is_some() {
            canonical_header_value(values, &mut out);
        } else if *name == "host" {
            // HTTP/2 carries the host in :authority.
            if let Some(a) = req.uri.authority() {
                out.extend_from_slice(a.as_str().as_bytes());
            }
        }
        out.push(b'\n');
    }
    out
}

/// Re-exported for the signed-chunk decoder and tests.
pub fn format_date(t: SystemTime) -> String {
    format_amz_date(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::secret::SecretString;

    // The examples of the AWS documentation "Signature Calculations for the Authorization Header".
    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn verifier() -> Verifier {
        Verifier::new(
            &[ClientCredential {
                access_key_id: AKID.into(),
                secret_access_key: SecretString::new(SECRET.into()),
                buckets: None,
            }],
            "us-east-1",
            true,
        )
    }

    fn at(s: &str) -> SystemTime {
        parse_amz_date(s).unwrap()
    }

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn get_object_headers(sig: &str) -> HeaderMap {
        head(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                &format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request,\
                     SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature={sig}"
                ),
            ),
        ])
    }

    const GET_SIG: &str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    #[test]
    fn the_aws_get_object_example_verifies() {
        let h = get_object_headers(GET_SIG);
        let uri: Uri = "/test.txt".parse().unwrap();
        let a = verifier()
            .verify(
                &RequestHead { method: &Method::GET, uri: &uri, headers: &h, vhost_bucket: None },
                at("20130524T000500Z"),
            )
            .unwrap();
        assert_eq!(a.payload, PayloadMode::Sha256(super::super::EMPTY_SHA256));
        assert!(!a.presigned);
    }

    #[test]
    fn the_aws_put_object_example_verifies_with_a_dollar_in_the_key() {
        let h = head(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"),
            (
                "authorization",
                &format!(
                    "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request, \
                     SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, \
                     Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
                ),
            ),
        ]);
        let uri: Uri = "/test$file.text".parse().unwrap();
        verifier()
            .verify(
                &RequestHead { method: &Method::PUT, uri: &uri, headers: &h, vhost_bucket: None },
                at("20130524T000000Z"),
            )
            .unwrap();
    }

    #[test]
    fn a_wrong_signature_is_refused_with_the_canonical_request() {
        let h = get_object_headers(&GET_SIG.replace('f', "e"));
        let uri: Uri = "/test.txt".parse().unwrap();
        let e = verifier()
            .verify(
                &RequestHead { method: &Method::GET, uri: &uri, headers: &h, vhost_bucket: None },
                at("20130524T000000Z"),
            )
            .unwrap_err();
        let ProxyError::SignatureDoesNotMatch(m) = e else { panic!("{e:?}") };
        assert!(m.canonical_request.starts_with("GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\n"));
    }

    #[test]
    fn a_request_more_than_fifteen_minutes_off_is_too_skewed() {
        let h = get_object_headers(GET_SIG);
        let uri: Uri = "/test.txt".parse().unwrap();
        for now in ["20130524T001501Z", "20130523T234459Z"] {
            let e = verifier()
                .verify(&RequestHead { method: &Method::GET, uri: &uri, headers: &h, vhost_bucket: None }, at(now))
                .unwrap_err();
            assert_eq!(e.code(), "RequestTimeTooSkewed");
        }
    }

    #[test]
    fn an_unsigned_x_amz_header_is_refused() {
        let mut h = get_object_headers(GET_SIG);
        h.insert("x-amz-acl", HeaderValue::from_static("public-read"));
        let uri: Uri = "/test.txt".parse().unwrap();
        let e = verifier()
            .verify(
                &RequestHead { method: &Method::GET, uri: &uri, headers: &h, vhost_bucket: None },
                at("20130524T000000Z"),
            )
            .unwrap_err();
        assert!(matches!(e, ProxyError::HeadersNotSigned(ref v) if v == &["x-amz-acl"]), "{e:?}");
    }

    #[test]
    fn unknown_keys_wrong_regions_and_bad_credentials_are_told_apart() {
        let uri: Uri = "/test.txt".parse().unwrap();
        let v = verifier();
        let now = at("20130524T000000Z");
        let mk = |cred: &str| {
            let mut h = get_object_headers(GET_SIG);
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!(
                    "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                     Signature={GET_SIG}"
                ))
                .unwrap(),
            );
            h
        };
        let code = |h: &HeaderMap| {
            v.verify(&RequestHead { method: &Method::GET, uri: &uri, headers: h, vhost_bucket: None }, now)
                .unwrap_err()
                .code()
                .to_owned()
        };
        assert_eq!(code(&mk("OTHERKEY/20130524/us-east-1/s3/aws4_request")), "InvalidAccessKeyId");
        assert_eq!(code(&mk(&format!("{AKID}/20130524/eu-west-1/s3/aws4_request"))), "AuthorizationHeaderMalformed");
        assert_eq!(code(&mk(&format!("{AKID}/20130524/us-east-1/ec2/aws4_request"))), "AuthorizationHeaderMalformed");
        assert_eq!(code(&mk(&format!("{AKID}/20130525/us-east-1/s3/aws4_request"))), "AuthorizationHeaderMalformed");
        let mut anon = get_object_headers(GET_SIG);
        anon.remove("authorization");
        assert_eq!(code(&anon), "AccessDenied");
    }

    #[test]
    fn the_aws_presigned_example_verifies_within_its_lifetime_only() {
        let uri: Uri = format!(
            "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AKID}%2F20130524%2Fus-east-1%2Fs3%2F\
             aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=\
             aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        )
        .parse()
        .unwrap();
        let h = head(&[("host", "examplebucket.s3.amazonaws.com")]);
        let v = verifier();
        let req = RequestHead { method: &Method::GET, uri: &uri, headers: &h, vhost_bucket: None };
        let a = v.verify(&req, at("20130524T120000Z")).unwrap();
        assert!(a.presigned);
        assert!(a.query.is_empty(), "auth parameters are not forwarded: {:?}", a.query);
        assert_eq!(a.payload, PayloadMode::Unsigned);
        let e = v.verify(&req, at("20130525T000001Z")).unwrap_err();
        assert!(matches!(e, ProxyError::RequestExpired { .. }), "{e:?}");
        let e = v.verify(&req, at("20130523T234000Z")).unwrap_err();
        assert_eq!(e.code(), "AccessDenied");
    }

    #[test]
    fn presigned_urls_longer_than_seven_days_are_refused() {
        let uri: Uri = format!(
            "/t?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AKID}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=604801&X-Amz-SignedHeaders=host&X-Amz-Signature={GET_SIG}"
        )
        .parse()
        .unwrap();
        let h = head(&[("host", "h")]);
        let e = verifier()
            .verify(
                &RequestHead { method: &Method::GET, uri: &uri, headers: &h, vhost_bucket: None },
                at("20130524T000000Z"),
            )
            .unwrap_err();
        assert_eq!(e.code(), "AuthorizationQueryParametersError");
    }

    #[test]
    fn a_body_hash_signed_in_a_presigned_url_cannot_be_replaced_by_a_header() {
        let hash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        let uri: Uri = format!(
            "/t?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AKID}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Content-Sha256={hash}\
             &X-Amz-Signature={GET_SIG}"
        )
        .parse()
        .unwrap();
        for replacement in ["UNSIGNED-PAYLOAD", &hex::encode(super::super::EMPTY_SHA256)] {
            let h = head(&[("host", "h"), ("x-amz-content-sha256", replacement as &str)]);
            let e = verifier()
                .verify(
                    &RequestHead { method: &Method::PUT, uri: &uri, headers: &h, vhost_bucket: None },
                    at("20130524T000100Z"),
                )
                .unwrap_err();
            assert_eq!(e.code(), "InvalidArgument", "{replacement}: {e:?}");
        }
    }

    #[test]
    fn credentials_parse_from_the_right() {
        let c = parse_credential("AK/20130524/us-east-1/s3/aws4_request").unwrap();
        assert_eq!((c.access_key_id, c.date, c.region), ("AK", "20130524", "us-east-1"));
        assert!(parse_credential("AK/2013/us-east-1/s3/aws4_request").is_none());
        assert!(parse_credential("20130524/us-east-1/s3/aws4_request").is_none());
    }
}
