//! Uploads and copies of the proxy's own at the store: the upload a re-encryption writes, and server-side copies
//! that rewrite an object's metadata (a seal, a re-wrap) — in one CopyObject, or part by part (UploadPartCopy) for
//! objects over the store's CopyObject limit.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderValue, Method};

use super::complete::{Sealed, StoredPart, complete_xml};
use crate::crypto::format::MAX_PARTS;
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::proxy::object::header_value;
use crate::s3::Target;
use crate::s3::headers::{
    X_AMZ_COPY_SOURCE, X_AMZ_COPY_SOURCE_IF_MATCH, X_AMZ_COPY_SOURCE_RANGE, X_AMZ_METADATA_DIRECTIVE, X_AMZ_VERSION_ID,
    header_str,
};
use crate::s3::op::S3Op;
use crate::s3::query::{PART_NUMBER, UPLOAD_ID};
use crate::store::{StoreBody, StoreRequest, StoreSse, Xml, result_field};

/// UploadPartCopy requests in flight at once when copying an object larger than the CopyObject limit.
const COPY_CONCURRENCY: usize = 8;

impl Proxy {
    /// Starts an upload of the proxy's own at the store (re-encryption, copies by parts); returns its ID.
    pub(super) async fn create_upstream_upload(
        &self,
        target: &Target,
        headers: HeaderMap,
    ) -> Result<String, ProxyError> {
        let create = StoreRequest::new(S3Op::CreateMultipartUpload, Method::POST, target)
            .param("uploads", "")
            .headers(headers)
            .sse(self.upstream_sse(target).as_ref());
        let (_, body) = self.store().xml(create, Xml::Result).await?;
        result_field(&body, "InitiateMultipartUploadResult", "UploadId")
    }

    /// Aborts an upload of the proxy's own (after a failure; best effort).
    pub(super) async fn abort_upstream_upload(&self, target: &Target, upload_id: &str) {
        let abort = StoreRequest::new(S3Op::AbortMultipartUpload, Method::DELETE, target).param(UPLOAD_ID, upload_id);
        let _ = self.store().send(abort).await;
    }

    /// Completes an upload of the proxy's own with these parts' ETags (part numbers from 1); returns the result's
    /// headers and ETag.
    pub(super) async fn complete_upstream_upload(
        &self,
        target: &Target,
        upload_id: &str,
        etags: impl Iterator<Item = (u32, String)>,
    ) -> Result<(HeaderMap, String), ProxyError> {
        let parts: Vec<(u32, String)> = etags.collect();
        let complete = StoreRequest::new(S3Op::CompleteMultipartUpload, Method::POST, target)
            .param(UPLOAD_ID, upload_id)
            .body(StoreBody::Bytes(complete_xml(&parts)));
        let (h, body) = self.store().xml(complete, Xml::SlowResult).await?;
        let etag = result_field(&body, "CompleteMultipartUploadResult", "ETag")?;
        Ok((h, etag))
    }

    /// The store's own SSE on top, when the policy of the object `target` asks for it.
    pub(in crate::proxy) fn upstream_sse(&self, target: &Target) -> Option<StoreSse> {
        let (bucket, key) = (target.bucket.as_deref().unwrap_or(""), target.key.as_deref().unwrap_or(""));
        self.inner.crypto.policy(bucket, key).upstream_sse.map(StoreSse::Own)
    }

    /// A metadata-replacing server-side copy of `source` (the target itself, maybe a version of it) onto the target,
    /// pinned to `etag`, with the new metadata `headers`: returns the result's headers and the new ETag.
    pub(in crate::proxy) async fn self_copy_request(
        &self,
        target: &Target,
        headers: HeaderMap,
        source: &str,
        etag: &str,
    ) -> Result<(HeaderMap, String), ProxyError> {
        let copy = StoreRequest::new(S3Op::CopyObject, Method::PUT, target)
            .headers(headers)
            .sse(self.upstream_sse(target).as_ref())
            .header(X_AMZ_COPY_SOURCE, header_value(source)?)
            .header(X_AMZ_COPY_SOURCE_IF_MATCH, header_value(etag)?)
            .header(X_AMZ_METADATA_DIRECTIVE, HeaderValue::from_static("REPLACE"));
        let (h, body) = self.store().xml(copy, Xml::SlowResult).await?;
        let etag = result_field(&body, "CopyObjectResult", "ETag")?;
        Ok((h, etag))
    }

    /// Copies an object of `len` stored bytes onto itself (or `target`) part by part, in 1 GiB ranges, with new
    /// metadata in `headers`: for objects over the CopyObject limit. Returns the new ETag.
    pub(in crate::proxy) async fn copy_in_ranges(
        &self,
        target: &Target,
        headers: HeaderMap,
        source: &str,
        etag: &str,
        len: u64,
    ) -> Result<String, ProxyError> {
        const RANGE: u64 = 1024 * 1024 * 1024;
        let parts: Vec<StoredPart> = (0..len.div_ceil(RANGE))
            .map(|i| StoredPart {
                number: u32::try_from(i + 1).unwrap_or(MAX_PARTS),
                etag: None,
                cipher_size: RANGE.min(len - i * RANGE),
                last_modified: None,
            })
            .collect();
        Ok(self.copy_by_parts(target, headers, source, etag, &parts).await?.etag)
    }

    /// Copies `source` onto the target part by part (one UploadPartCopy per original part): for objects over the
    /// CopyObject limit. `headers` carry the new metadata.
    pub(super) async fn copy_by_parts(
        &self,
        target: &Target,
        headers: HeaderMap,
        source: &str,
        etag: &str,
        parts_list: &[StoredPart],
    ) -> Result<Sealed, ProxyError> {
        let upload_id = self.create_upstream_upload(target, headers).await?;
        let result = self.copy_parts(target, source, etag, parts_list, &upload_id).await;
        match result {
            Ok(sealed) => Ok(sealed),
            Err(e) => {
                self.abort_upstream_upload(target, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn copy_parts(
        &self,
        target: &Target,
        source: &str,
        etag: &str,
        parts_list: &[StoredPart],
        upload_id: &str,
    ) -> Result<Sealed, ProxyError> {
        let mut offset = 0u64;
        let mut jobs = Vec::with_capacity(parts_list.len());
        for (i, p) in parts_list.iter().enumerate() {
            jobs.push((i as u32 + 1, offset, p.cipher_size));
            offset += p.cipher_size;
        }
        let mut etags: BTreeMap<u32, String> = BTreeMap::new();
        let mut set = tokio::task::JoinSet::new();
        let mut pending = jobs.into_iter();
        loop {
            while set.len() < COPY_CONCURRENCY {
                let Some((n, start, len)) = pending.next() else { break };
                let store = self.store().clone();
                let range = format!("bytes={start}-{}", start + len.max(1) - 1);
                let copy = StoreRequest::new(S3Op::UploadPartCopy, Method::PUT, target)
                    .param(PART_NUMBER, &n.to_string())
                    .param(UPLOAD_ID, upload_id)
                    .header(X_AMZ_COPY_SOURCE, header_value(source)?)
                    .header(X_AMZ_COPY_SOURCE_IF_MATCH, header_value(etag)?)
                    .header(X_AMZ_COPY_SOURCE_RANGE, header_value(&range)?);
                set.spawn(async move {
                    let (_, body) = store.xml(copy, Xml::SlowResult).await?;
                    let etag = result_field(&body, "CopyPartResult", "ETag")?;
                    Ok::<_, ProxyError>((n, etag))
                });
            }
            match set.join_next().await {
                None => break,
                Some(Ok(Ok((n, e)))) => {
                    etags.insert(n, e);
                }
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(join)) => return Err(ProxyError::Internal(format!("part copy task: {join}"))),
            }
        }
        let (h, etag) = self.complete_upstream_upload(target, upload_id, etags.into_iter()).await?;
        Ok(Sealed {
            etag: etag.to_owned(),
            version_id: header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned),
            sse: None,
        })
    }
}
