//! Outbound signing: every request the proxy forwards is re-signed for the upstream with the `aws-sigv4`
//! crate, using S3's settings (single URI encoding, no path normalisation, `x-amz-content-sha256`).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::error::ProxyError;
use crate::util::secret::SecretString;

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

/// Signs requests with the proxy's upstream credentials.
#[derive(Debug, Clone)]
pub struct UpstreamSigner {
    identity: Identity,
    region: String,
}

fn s3_settings() -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    s
}

impl UpstreamSigner {
    pub fn new(access_key_id: &str, secret: &SecretString, region: &str) -> UpstreamSigner {
        let creds = Credentials::new(access_key_id, secret.expose(), None, None, "s3crypt-upstream");
        UpstreamSigner { identity: creds.into(), region: region.to_owned() }
    }

    /// Signs `req` in place: adds `authorization`, `x-amz-date` and `x-amz-content-sha256`. The URI must be
    /// absolute and already canonically encoded; every header present is signed (but `user-agent`).
    pub fn sign<B>(
        &self,
        req: &mut http::Request<B>,
        payload: &OutboundPayload,
        now: SystemTime,
    ) -> Result<(), ProxyError> {
        let body = match payload {
            OutboundPayload::Sha256Hex(h) => SignableBody::Precomputed(h.clone()),
            OutboundPayload::Unsigned => SignableBody::UnsignedPayload,
            OutboundPayload::StreamingUnsignedTrailer => SignableBody::StreamingUnsignedPayloadTrailer,
        };
        let mut headers = Vec::with_capacity(req.headers().len());
        for (name, value) in req.headers() {
            let v = std::str::from_utf8(value.as_bytes())
                .map_err(|_| ProxyError::InvalidArgument(format!("header {name} is not valid UTF-8").into()))?;
            headers.push((name.as_str(), v));
        }
        let uri = req.uri().to_string();
        let signable = SignableRequest::new(req.method().as_str(), uri, headers.into_iter(), body)
            .map_err(|e| ProxyError::Internal(format!("signable request: {e}")))?;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(now)
            .settings(s3_settings())
            .build()
            .map_err(|e| ProxyError::Internal(format!("signing params: {e}")))?
            .into();
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| ProxyError::InvalidArgument(format!("request cannot be signed: {e}").into()))?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientCredential;
    use crate::sigv4::verify::{RequestHead, Verifier};

    #[test]
    fn what_the_signer_signs_the_verifier_accepts() {
        // The two halves are independent implementations: aws-sigv4 signs, our canonicaliser verifies.
        let secret = SecretString::new("secret/with+chars".into());
        let signer = UpstreamSigner::new("AKIDTEST", &secret, "eu-west-3");
        let verifier = Verifier::new(
            &[ClientCredential { access_key_id: "AKIDTEST".into(), secret_access_key: secret, buckets: None }],
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
