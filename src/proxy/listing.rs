//! Listings and attributes of an encrypted bucket: plaintext sizes (from ciphertext sizes alone; objects of the AWS
//! S3 Encryption Client by a HEAD each where configured), and no ciphertext checksums.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::Proxy;
use super::body::{Upload, prepare_body};
use super::front::{Admitted, RequestCtx};
use super::response::ProxyBody;
use crate::crypto::attributes::{Attributes, ShownChecksum};
use crate::crypto::format::plaintext_len;
use crate::error::ProxyError;
use crate::s3::checksum::ChecksumAlgorithm;
use crate::s3::op::S3Op;
use crate::store::{StoreRequest, Xml, read_xml};

impl Proxy {
    /// ListObjects, ListObjectsV2, ListObjectVersions and GetObjectAttributes on an encrypted bucket.
    pub(super) async fn listing(&self, ctx: &mut RequestCtx, r: Admitted) -> Result<Response<ProxyBody>, ProxyError> {
        let Admitted { head, body } = r;
        let (md5, checksum) = match ctx.op {
            S3Op::GetObjectAttributes => self.attributes_allowed(ctx, &head.headers).await?,
            _ => (None, None),
        };
        let upload = Upload::plain(ctx.chunk_signing.take(), Default::default());
        let store_body = prepare_body(ctx.op, &ctx.payload, &head.headers, body, upload).await?;
        let request = StoreRequest::new(ctx.op, head.method.clone(), &ctx.target)
            .client_query(&ctx.query)
            .client_headers(&head.headers)
            .body(store_body);
        let resp = self.store().send(request).await?;
        let ok = resp.status().is_success();
        let r = super::response::map_response(resp, ctx.op, &ctx.client, false).await?;
        let crypto = &self.inner.crypto;
        let bucket = &ctx.identity.bucket;
        match ctx.op {
            S3Op::GetObjectAttributes if ok => object_attributes_response(r, crypto.segment_size, md5, checksum).await,
            S3Op::ListObjects | S3Op::ListObjectsV2
                if crypto.s3ec().enabled && crypto.s3ec().list_buckets.contains(bucket) =>
            {
                self.s3ec_listing(r, bucket, &crypto.plaintext_prefixes(bucket)).await
            }
            _ => listing_response(r, crypto.segment_size, &crypto.plaintext_prefixes(bucket)).await,
        }
    }
}

impl Proxy {
    /// GetObjectAttributes of an SSE-C object needs its key, as a HEAD does (S3: 400 without it): the object's
    /// envelope says whether it is one, and the key given must open it. Answers the plaintext MD5 ETag an SSE-S3
    /// object shows on HEAD, if it has one, for the attributes to show the same, and, when `Checksum` is asked
    /// for, the sealed full-object checksum.
    async fn attributes_allowed(&self, ctx: &RequestCtx, headers: &http::HeaderMap) -> Result<Sealed, ProxyError> {
        let probe = StoreRequest::client_read(S3Op::HeadObject, &ctx.target, &ctx.query, headers);
        let resp = self.store().send(probe).await?;
        if !resp.status().is_success() {
            return Ok((None, None)); // the attributes request answers with the store's own error
        }
        let Ok(Some(env)) = crate::crypto::envelope::Envelope::from_headers(resp.headers()) else {
            return Ok((None, None));
        };
        let wants_checksum = headers
            .get("x-amz-object-attributes")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|a| a.trim().eq_ignore_ascii_case("checksum")));
        // The key is opened once: always for SSE-C (a wrong key is refused); for the sealed attributes when they
        // can show something (the MD5 of an SSE-S3 object, a checksum asked for).
        let crypto = &self.inner.crypto;
        let sse = super::object::SseInfo::of(&env, ctx.customer());
        let dek = if env.kek_ref == crate::crypto::format::KEK_REF_SSE_C || ctx.customer().is_some() {
            Some(crypto.open_envelope(&env, &ctx.identity, ctx.customer()).await?)
        } else if env.attributes.is_some() && (sse.shows_md5() || wants_checksum) {
            crypto.open_envelope(&env, &ctx.identity, None).await.ok()
        } else {
            None
        };
        let attrs = match (&env.attributes, &dek) {
            (Some(sealed), Some(dek)) => Attributes::open(sealed, dek, &ctx.identity).ok(),
            _ => None,
        };
        let etag = attrs.as_ref().and_then(|a| super::object::shown_etag(&env, a));
        let checksum = attrs.and_then(|a| a.shown_checksum()).filter(|_| wants_checksum);
        Ok((etag, checksum))
    }
}

/// What GetObjectAttributes shows from the sealed attributes: the ETag, the checksum.
type Sealed = (Option<String>, Option<ShownChecksum>);

/// GetObjectAttributes of an encrypted bucket's object: plaintext sizes, no ciphertext checksums.
pub async fn object_attributes_response(
    resp: Response<ProxyBody>,
    segment: u32,
    md5: Option<String>,
    checksum: Option<ShownChecksum>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Ok(Response::from_parts(parts, body));
    }
    let raw = read_xml(body, Xml::Result).await?;
    let out =
        crate::s3::xml::rewrite_object_attributes(&raw, &|c| plaintext_len(c, segment, true).unwrap_or(c), &|c| {
            plaintext_len(c, segment, false).unwrap_or(c)
        })
        .ok_or_else(|| ProxyError::UpstreamProtocol("GetObjectAttributes result is not XML".into()))?;
    // The ETag HEAD shows (the sealed MD5 or the opaque form), unquoted as this document has it.
    let etag = crate::s3::xml::records(&out, &["GetObjectAttributesResponse", "-"])
        .and_then(|(_, top)| crate::s3::xml::field(&top, "ETag").map(str::to_owned));
    let out = match etag {
        Some(e) if !e.is_empty() => {
            let shown = md5.unwrap_or_else(|| super::etag::opaque(&e));
            crate::s3::xml::replace_text(&out, &["GetObjectAttributesResponse", "ETag"], shown.trim_matches('"'))
                .ok_or_else(|| ProxyError::UpstreamProtocol("GetObjectAttributes result is not XML".into()))?
        }
        _ => out,
    };
    // The sealed checksum, where the client asked for checksums (the store's, of ciphertext, were removed).
    let out = match checksum {
        Some(c) => {
            let name = format!("Checksum{}", c.algorithm.display_name());
            let (value, kind) = (c.value, c.kind);
            let element = format!("<Checksum><{name}>{value}</{name}><ChecksumType>{kind}</ChecksumType></Checksum>");
            crate::s3::xml::insert_before_end(&out, element.as_bytes())
                .ok_or_else(|| ProxyError::UpstreamProtocol("GetObjectAttributes result is not XML".into()))?
        }
        None => out,
    };
    let drop: Vec<HeaderName> =
        parts.headers.keys().filter(|n| ChecksumAlgorithm::from_header_name(n.as_str()).is_some()).cloned().collect();
    for n in drop {
        parts.headers.remove(n);
    }
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, super::response::full_body(Bytes::from(out))))
}

/// A listing of an encrypted bucket → plaintext sizes (from ciphertext sizes alone), ciphertext checksums dropped.
/// Keys under `plaintext_prefixes` (policies that store plaintext) keep their listed size.
pub async fn listing_response(
    resp: Response<ProxyBody>,
    segment: u32,
    plaintext_prefixes: &[String],
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Ok(Response::from_parts(parts, body));
    }
    let collected = read_xml(body, Xml::Result).await?;
    let size = |key: &str, c: u64| {
        if plaintext_prefixes.iter().any(|p| key.starts_with(p.as_str())) {
            c
        } else {
            plaintext_len(c, segment, true).unwrap_or(c)
        }
    };
    // ETags of encrypted objects in their opaque form (HEAD and GET may show an SSE-S3 object's plaintext MD5,
    // which a listing cannot know).
    let etag = |key: &str, e: &str| {
        if plaintext_prefixes.iter().any(|p| key.starts_with(p.as_str())) {
            e.to_owned()
        } else {
            super::etag::opaque(e)
        }
    };
    let rewritten = crate::s3::xml::rewrite_listing(&collected, &size, &etag)
        .ok_or_else(|| ProxyError::UpstreamProtocol("listing is not XML".into()))?;
    parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
    Ok(Response::from_parts(parts, super::response::full_body(Bytes::from(rewritten))))
}
