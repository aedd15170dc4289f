//! Response bodies, and the upstream response on its way back: hop-by-hop and upstream-identity headers dropped, errors turned into
//! the client's (by the store client's reader), ListBuckets filtered for clients limited to some buckets.

use crate::upstream::UpstreamIncoming;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::config::ClientCredential;
use crate::error::{BoxError, ProxyError};
use crate::s3::headers::{X_AMZ_ID_2, X_AMZ_REQUEST_ID, strip_hop_by_hop};
use crate::s3::op::S3Op;
use crate::s3::xml;

/// Response bodies sent to clients.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full_body(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Headers of a store's answer that a client may see (an allow-list): the representation headers S3 answers with,
/// CORS, and S3's own `x-amz-*`. A store's private headers (SeaweedFS's `Seaweed-*`, MinIO's `X-Minio-*`, ...) never
/// reach a client, whatever they carry.
const CLIENT_HEADERS: [&str; 13] = [
    "accept-ranges",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-range",
    "content-type",
    "etag",
    "expires",
    "last-modified",
    "location",
    "vary",
];

/// Whether a store's response header may reach the client.
fn client_header(name: &str) -> bool {
    CLIENT_HEADERS.contains(&name) || name.starts_with("x-amz-") || name.starts_with("access-control-")
}

/// Removes what belongs to the upstream hop: hop-by-hop headers, the store's identity, its clock, every header not
/// on the allow-list, and the aws-chunked coding some stores (SeaweedFS, moto) keep as the object's
/// Content-Encoding.
pub(super) fn scrub_upstream_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    // Server and Date are off the allow-list; the store's request IDs are x-amz-* and go by name.
    for name in [X_AMZ_REQUEST_ID, X_AMZ_ID_2] {
        headers.remove(name);
    }
    // Most answers carry nothing private: only then is the list of names to drop built (every response passes here).
    if headers.keys().any(|n| !client_header(n.as_str())) {
        let private: Vec<http::HeaderName> = headers.keys().filter(|n| !client_header(n.as_str())).cloned().collect();
        for name in private {
            headers.remove(name);
        }
    }
    crate::store::strip_aws_chunked_encoding(headers);
}

/// Maps the upstream response for the client.
pub(super) async fn map_response(
    resp: Response<UpstreamIncoming>,
    op: S3Op,
    client: &ClientCredential,
    is_head: bool,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    let status = parts.status;
    if (status.is_redirection() && status != StatusCode::NOT_MODIFIED)
        || status.is_client_error()
        || status.is_server_error()
    {
        return Err(crate::store::reply::error(status, &parts.headers, body, is_head).await);
    }
    scrub_upstream_headers(&mut parts.headers);
    let body: ProxyBody = match (&client.buckets, op) {
        (Some(allowed), S3Op::ListBuckets) if status == StatusCode::OK => {
            let raw = crate::store::read_xml(body, crate::store::Xml::Result).await?;
            let filtered = xml::filter_list_buckets(&raw, &|name| allowed.contains(name))
                .ok_or_else(|| ProxyError::UpstreamProtocol("ListBuckets body is not XML".into()))?;
            parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(filtered.len()));
            full_body(Bytes::from(filtered))
        }
        _other => body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync(),
    };
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s3s_headers_of_a_store_answer_reach_the_client() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("etag", "\"e\""),
            ("content-length", "3"),
            ("x-amz-version-id", "v"),
            ("x-amz-meta-color", "blue"),
            ("access-control-allow-origin", "*"),
            ("seaweed-x-amz-etag", "5b3a"),
            ("x-minio-internal", "1"),
            ("server", "store"),
            ("x-amz-request-id", "store-id"),
        ] {
            h.insert(http::HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        scrub_upstream_headers(&mut h);
        let mut kept: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            ["access-control-allow-origin", "content-length", "etag", "x-amz-meta-color", "x-amz-version-id"]
        );
    }
}
