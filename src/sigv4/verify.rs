//! Inbound SigV4 verification from the request head alone (so `Expect: 100-continue` costs nothing on a
//! rejection): Authorization-header and presigned-URL forms, S3 canonicalisation, scope, clock skew and
//! expiry checks, unsigned `x-amz-*` headers refused, constant-time comparison.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::MAX_PRESIGNED_EXPIRY_SECS;
use super::canonical::{
    PlusMode, build_canonical_request, canonical_header_value, canonical_query, parse_query, raw_path_is_ambiguous,
    string_to_sign,
};
use super::error::{AuthError, SignatureMismatch};
use super::{
    ALGORITHM, ALGORITHM_ECDSA, STREAMING_ECDSA_PREFIX, STREAMING_SIGNED_PAYLOAD, STREAMING_SIGNED_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_PAYLOAD_TRAILER, Signature, SigningKey, SigningKeys, UNSIGNED_PAYLOAD,
};
use crate::config::ClientCredential;
use crate::s3::error::RequestError;
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
    pub key: Arc<SigningKey>,
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
    /// Clients' signing keys of the day (a reload builds a new verifier, so a changed secret is never stale).
    keys: SigningKeys,
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

/// The `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` form, parsed (the syntax only;
/// what it claims is checked by [`Verifier::admit_header`]).
struct HeaderAuth<'a> {
    credential: Credential<'a>,
    /// Still unparsed: its errors come after the scope's, as S3 orders them.
    signed_headers: &'a str,
    signature: Signature,
    amz_date: &'a str,
    request_time: SystemTime,
}

impl<'a> HeaderAuth<'a> {
    /// `params`: the Authorization value after the algorithm.
    fn parse(params: &'a str, headers: &'a HeaderMap) -> Result<Self, AuthError> {
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
        let credential = parse_credential(credential).ok_or_else(|| {
            malformed("the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
        })?;
        let signature =
            Signature::from_hex(signature).ok_or_else(|| malformed("the Signature is not 64 hex digits"))?;
        let no_date = || AuthError::AccessDenied("AWS authentication requires a valid Date or x-amz-date header");
        let amz_date = header_text(headers, &X_AMZ_DATE)
            .or_else(|| header_text(headers, &http::header::DATE).filter(|d| parse_amz_date(d).is_some()))
            .ok_or_else(no_date)?;
        let request_time = parse_amz_date(amz_date).ok_or_else(no_date)?;
        Ok(HeaderAuth { credential, signed_headers, signature, amz_date, request_time })
    }
}

/// The `X-Amz-*` query parameters of a presigned URL, parsed (the syntax only; what they claim is checked by
/// [`Verifier::admit_presigned`]).
struct PresignedAuth<'a> {
    credential: Credential<'a>,
    amz_date: &'a str,
    request_time: SystemTime,
    expires_secs: u64,
    signed_headers: &'a str,
    signature: Signature,
    /// `X-Amz-Security-Token` was given.
    token: bool,
    /// `X-Amz-Content-Sha256`, when the URL signs a body hash.
    content_sha: Option<&'a str>,
}

impl<'a> PresignedAuth<'a> {
    fn parse(literal_query: &'a [(String, String)]) -> Result<Self, AuthError> {
        let mut found: HashMap<&'static str, &'a str> = HashMap::new();
        for (k, v) in literal_query {
            if let Some(p) = AUTH_PARAMS.iter().find(|p| **p == k.as_str())
                && found.insert(p, v).is_some()
            {
                return Err(query_error(format!("{p} must appear only once")));
            }
        }
        let need = |p: &str| {
            found.get(p).copied().ok_or(query_error(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, \
                 X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
            ))
        };
        let algorithm = need(P_ALGORITHM)?;
        if algorithm == ALGORITHM_ECDSA {
            return Err(sigv4a_refused());
        }
        if algorithm != ALGORITHM {
            return Err(query_error("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\""));
        }
        let (credential, amz_date, expires, signed_headers, signature) =
            (need(P_CREDENTIAL)?, need(P_DATE)?, need(P_EXPIRES)?, need(P_SIGNED_HEADERS)?, need(P_SIGNATURE)?);
        let credential = parse_credential(credential).ok_or_else(|| {
            query_error(
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \
                 \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".",
            )
        })?;
        let request_time = parse_amz_date(amz_date)
            .ok_or_else(|| query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""))?;
        let expires_secs: u64 = expires.parse().map_err(|_| query_error("X-Amz-Expires should be a number"))?;
        if expires_secs > MAX_PRESIGNED_EXPIRY_SECS {
            return Err(query_error("X-Amz-Expires must be less than a week (in seconds) that is 604800"));
        }
        let signature =
            Signature::from_hex(signature).ok_or_else(|| query_error("X-Amz-Signature must be 64 hex digits"))?;
        Ok(PresignedAuth {
            credential,
            amz_date,
            request_time,
            expires_secs,
            signed_headers,
            signature,
            token: found.contains_key(P_SECURITY_TOKEN),
            content_sha: found.get(P_CONTENT_SHA256).copied(),
        })
    }
}

/// What checking a form's claims established: the client, the headers signed, the payload line signed and what it
/// says about the body.
struct Admission<'a> {
    client: &'a Arc<ClientCredential>,
    signed_headers: Vec<&'a str>,
    payload_line: &'a str,
    payload: PayloadMode,
}

/// What a signature covers and the signature given: one check for both forms.
struct SignedParts<'a> {
    signed_headers: &'a [&'a str],
    /// The last line of the canonical request (a body hash or a payload mode).
    payload_line: &'a str,
    /// The query parameter carrying the signature (presigned), left out of the canonical query.
    exclude: Option<&'static str>,
    key: &'a SigningKey,
    amz_date: &'a str,
    scope: &'a str,
    provided: &'a Signature,
    access_key_id: &'a str,
}

impl Verifier {
    pub fn new(clients: &[ClientCredential], region: &str, allow_sigv2_presigned: bool) -> Verifier {
        Verifier {
            clients: clients.iter().map(|c| (c.access_key_id.clone(), Arc::new(c.clone()))).collect(),
            region: region.to_owned(),
            allow_sigv2_presigned,
            keys: SigningKeys::default(),
        }
    }

    /// Verifies a request head at time `now`.
    /// The region clients sign for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether SigV2 presigned requests (and SigV2 POST forms) are accepted.
    pub fn allows_sigv2(&self) -> bool {
        self.allow_sigv2_presigned
    }

    /// A configured client by access key id.
    pub fn client_by_id(&self, access_key_id: &str) -> Option<Arc<ClientCredential>> {
        self.clients.get(access_key_id).cloned()
    }

    pub fn verify(&self, req: &RequestHead<'_>, now: SystemTime) -> Result<Authenticated, AuthError> {
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
            return Err(AuthError::AccessDenied("Anonymous access is not allowed; sign the request with SigV4."));
        };
        let auth = auth.to_str().map_err(|_| malformed("the Authorization header is not ASCII"))?;
        if auth.starts_with(ALGORITHM_ECDSA) {
            return Err(sigv4a_refused());
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
    ) -> Result<Authenticated, AuthError> {
        if req.headers.contains_key(X_AMZ_SECURITY_TOKEN) {
            return Err(AuthError::InvalidToken);
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
            return Err(chunked_presigned_refused());
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

    fn client(&self, akid: &str) -> Result<&Arc<ClientCredential>, AuthError> {
        self.clients.get(akid).ok_or_else(|| AuthError::InvalidAccessKeyId { access_key_id: akid.to_owned() })
    }

    fn check_scope(&self, cred: &Credential<'_>, amz_date: &str) -> Result<(), AuthError> {
        if cred.region != self.region {
            return Err(AuthError::AuthorizationHeaderMalformed {
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
    ) -> Result<Authenticated, AuthError> {
        let auth = HeaderAuth::parse(params, req.headers)?;
        let Admission { client, signed_headers, payload_line, payload } = self.admit_header(&auth, req.headers, now)?;
        let key = self.signing_key(client, &auth.credential, auth.request_time);
        let scope = format!("{}/{}/s3/aws4_request", auth.credential.date, auth.credential.region);
        let parts = SignedParts {
            signed_headers: &signed_headers,
            payload_line,
            exclude: None,
            key: &key,
            amz_date: auth.amz_date,
            scope: &scope,
            provided: &auth.signature,
            access_key_id: auth.credential.access_key_id,
        };
        let query = check_signature(req, literal_query, &parts)?;
        Ok(Authenticated {
            client: Arc::clone(client),
            payload,
            query,
            hoisted_headers: Vec::new(),
            chunk_signing: Some(ChunkSigningContext {
                key,
                amz_date: auth.amz_date.to_owned(),
                scope,
                seed_signature: auth.signature,
            }),
            presigned: false,
        })
    }

    /// The client's signing key for the credential's date (derived once per day, [`SigningKeys`]).
    fn signing_key(&self, client: &ClientCredential, credential: &Credential<'_>, time: SystemTime) -> Arc<SigningKey> {
        self.keys.get(&client.access_key_id, client.secret_access_key.expose(), credential.date, time, &self.region)
    }

    /// What header auth claims, checked: scope, client, clock, no token, every `x-amz-*` header signed, a body
    /// hash given (`x-amz-content-sha256`, the payload line).
    fn admit_header<'h>(
        &'h self,
        auth: &HeaderAuth<'h>,
        headers: &'h HeaderMap,
        now: SystemTime,
    ) -> Result<Admission<'h>, AuthError> {
        self.check_scope(&auth.credential, auth.amz_date)?;
        let client = self.client(auth.credential.access_key_id)?;
        let skew = now.duration_since(auth.request_time).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
        if skew > MAX_CLOCK_SKEW {
            return Err(AuthError::RequestTimeTooSkewed { request_time: auth.request_time });
        }
        if headers.contains_key(X_AMZ_SECURITY_TOKEN) {
            return Err(AuthError::InvalidToken);
        }
        let signed = parse_signed_headers(auth.signed_headers)?;
        check_headers_signed(headers, &signed)?;
        let content_sha = header_text(headers, &X_AMZ_CONTENT_SHA256).ok_or_else(|| {
            RequestError::InvalidRequest("Missing required header for this request: x-amz-content-sha256".into())
        })?;
        let payload = parse_payload_mode(content_sha)?;
        Ok(Admission { client, signed_headers: signed, payload_line: content_sha, payload })
    }

    fn verify_presigned(
        &self,
        req: &RequestHead<'_>,
        literal_query: Vec<(String, String)>,
        now: SystemTime,
    ) -> Result<Authenticated, AuthError> {
        let auth = PresignedAuth::parse(&literal_query)?;
        let Admission { client, signed_headers, payload_line, payload } =
            self.admit_presigned(&auth, req.headers, now)?;
        let key = self.signing_key(client, &auth.credential, auth.request_time);
        let scope = format!("{}/{}/s3/aws4_request", auth.credential.date, auth.credential.region);
        let parts = SignedParts {
            signed_headers: &signed_headers,
            payload_line,
            exclude: Some(P_SIGNATURE),
            key: &key,
            amz_date: auth.amz_date,
            scope: &scope,
            provided: &auth.signature,
            access_key_id: auth.credential.access_key_id,
        };
        let query = check_signature(req, literal_query.clone(), &parts)?;
        let (query, hoisted_headers) = hoist_headers(query, req.headers)?;
        Ok(Authenticated {
            client: Arc::clone(client),
            payload,
            query,
            hoisted_headers,
            chunk_signing: None,
            presigned: true,
        })
    }

    /// What a presigned URL claims, checked: scope, client, validity window, no token, every `x-amz-*` header
    /// signed, and the body: presigned URLs sign UNSIGNED-PAYLOAD unless a hash was put in the query; a hex
    /// `x-amz-content-sha256` header is still checked against the body, but a hash signed in the query binds the
    /// body: an (unsigned) header may not replace it with another value or with UNSIGNED-PAYLOAD.
    fn admit_presigned<'q>(
        &'q self,
        auth: &PresignedAuth<'q>,
        headers: &'q HeaderMap,
        now: SystemTime,
    ) -> Result<Admission<'q>, AuthError> {
        self.check_scope(&auth.credential, auth.amz_date).map_err(|e| match e {
            AuthError::AuthorizationHeaderMalformed { message, .. } => {
                AuthError::AuthorizationQueryParametersError(message)
            }
            other => other,
        })?;
        let client = self.client(auth.credential.access_key_id)?;
        if auth.request_time > now + MAX_CLOCK_SKEW {
            return Err(AuthError::AccessDenied("Request is not valid yet"));
        }
        let expired_at = auth.request_time + Duration::from_secs(auth.expires_secs);
        // A URL valid for 0 seconds has expired when it is used (S3: 403, not a parameter error).
        if now > expired_at || auth.expires_secs == 0 {
            return Err(AuthError::RequestExpired { expires_secs: auth.expires_secs, expired_at });
        }
        if auth.token || headers.contains_key(X_AMZ_SECURITY_TOKEN) {
            return Err(AuthError::InvalidToken);
        }
        let signed = parse_signed_headers(auth.signed_headers)?;
        check_headers_signed(headers, &signed)?;
        let payload_line = auth.content_sha.unwrap_or(UNSIGNED_PAYLOAD);
        let header_hash = header_text(headers, &X_AMZ_CONTENT_SHA256);
        if payload_line != UNSIGNED_PAYLOAD
            && let Some(h) = header_hash
            && h != payload_line
        {
            return Err(RequestError::InvalidArgument(
                "x-amz-content-sha256 is given as a header and a query parameter with different values".into(),
            )
            .into());
        }
        let body_hash =
            if payload_line == UNSIGNED_PAYLOAD { header_hash.unwrap_or(payload_line) } else { payload_line };
        let payload = parse_payload_mode(body_hash)?;
        if payload.is_aws_chunked() {
            return Err(chunked_presigned_refused());
        }
        Ok(Admission { client, signed_headers: signed, payload_line, payload })
    }
}

/// Builds the canonical request and compares signatures, trying the decoded-then-re-encoded path first and the raw
/// path second, and a raw `+` in the query as `+` first and as a space second. Returns the decoded query in the
/// interpretation that verified.
fn check_signature(
    req: &RequestHead<'_>,
    literal_query: Vec<(String, String)>,
    parts: &SignedParts<'_>,
) -> Result<Vec<(String, String)>, AuthError> {
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
    let signed = parts.signed_headers;
    let headers_block = canonical_headers(req, signed);
    let mut first_attempt = None;
    for query in &mut queries {
        let cq = canonical_query(query, parts.exclude);
        for path in &paths {
            let creq = build_canonical_request(req.method, path, &cq, &headers_block, signed, parts.payload_line);
            let sts = string_to_sign(parts.amz_date, parts.scope, &creq);
            if parts.key.sign(sts.as_bytes()).ct_eq(parts.provided) {
                return Ok(std::mem::take(query));
            }
            first_attempt.get_or_insert((creq, sts));
        }
    }
    let (canonical_request, string_to_sign) = first_attempt.unwrap_or_default();
    Err(AuthError::SignatureDoesNotMatch(Box::new(SignatureMismatch {
        access_key_id: parts.access_key_id.to_owned(),
        string_to_sign,
        canonical_request,
        signature_provided: parts.provided.to_hex(),
    })))
}

/// Splits a verified presigned query: the auth parameters dropped, `x-amz-*` parameters returned as headers (to be
/// sent upstream as such; one that contradicts a header present is refused), the rest kept as the query.
fn hoist_headers(
    query: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<(Vec<(String, String)>, Hoisted), AuthError> {
    let mut hoisted = Vec::new();
    let mut rest = Vec::with_capacity(query.len());
    for (k, v) in query {
        if AUTH_PARAMS.contains(&k.as_str()) {
            continue;
        }
        let lower = k.to_ascii_lowercase();
        if !lower.starts_with("x-amz-") {
            rest.push((k, v));
            continue;
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| RequestError::InvalidArgument("invalid x-amz-* query parameter".into()))?;
        let value = HeaderValue::from_str(&v)
            .map_err(|_| RequestError::InvalidArgument("invalid x-amz-* query parameter value".into()))?;
        if let Some(existing) = headers.get(&name)
            && existing != value
        {
            return Err(RequestError::InvalidArgument(
                format!("{lower} is given as a header and a query parameter with different values").into(),
            )
            .into());
        }
        hoisted.push((name, value));
    }
    Ok((rest, hoisted))
}

/// `x-amz-*` parameters of a presigned URL, as headers.
type Hoisted = Vec<(HeaderName, HeaderValue)>;

fn query_error(msg: impl Into<Cow<'static, str>>) -> AuthError {
    AuthError::AuthorizationQueryParametersError(msg.into())
}

fn sigv4a_refused() -> AuthError {
    RequestError::NotImplemented("AWS4-ECDSA-P256-SHA256 (SigV4a) signing is not supported.").into()
}

fn chunked_presigned_refused() -> AuthError {
    RequestError::NotImplemented("aws-chunked bodies are not supported on presigned URLs.").into()
}

fn sigv2_refused() -> AuthError {
    RequestError::InvalidRequest(
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.".into(),
    )
    .into()
}

fn malformed(msg: &'static str) -> AuthError {
    AuthError::AuthorizationHeaderMalformed { message: msg.into(), region: None }
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

fn parse_signed_headers(s: &str) -> Result<Vec<&str>, AuthError> {
    let list: Vec<&str> = s.split(';').collect();
    if list.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(malformed("SignedHeaders must be a ';'-separated list of lowercase header names"));
    }
    if !list.contains(&"host") {
        return Err(AuthError::HeadersNotSigned(vec!["host".to_owned()]));
    }
    Ok(list)
}

/// Every `x-amz-*` header present must be signed (an unsigned one could have been injected on the way and
/// would then be re-signed by the proxy). `x-amz-content-sha256` is tolerated: its value is signed anyway.
fn check_headers_signed(headers: &HeaderMap, signed: &[&str]) -> Result<(), AuthError> {
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
        Err(AuthError::HeadersNotSigned(unsigned))
    }
}

fn parse_payload_mode(v: &str) -> Result<PayloadMode, RequestError> {
    Ok(match v {
        UNSIGNED_PAYLOAD => PayloadMode::Unsigned,
        STREAMING_UNSIGNED_PAYLOAD_TRAILER => PayloadMode::StreamingUnsignedTrailer,
        STREAMING_SIGNED_PAYLOAD => PayloadMode::StreamingSigned,
        STREAMING_SIGNED_PAYLOAD_TRAILER => PayloadMode::StreamingSignedTrailer,
        v if v.starts_with(STREAMING_ECDSA_PREFIX) => {
            return Err(RequestError::NotImplemented("SigV4a (ECDSA) streaming payloads are not supported."));
        }
        v => {
            let mut b = [0u8; 32];
            if v.len() != 64 || hex::decode_to_slice(v, &mut b).is_err() {
                return Err(RequestError::InvalidArgument(
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
    use crate::test_util::AtBoundary;
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
                bucket_admin: false,
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
        let AuthError::SignatureDoesNotMatch(m) = e else { panic!("{e:?}") };
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
        assert!(matches!(e, AuthError::HeadersNotSigned(ref v) if v == &["x-amz-acl"]), "{e:?}");
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
        assert!(matches!(e, AuthError::RequestExpired { .. }), "{e:?}");
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
