//! The proxy's own records at the store, in the system bucket (`upstream.system_bucket`; clients never reach it,
//! docs/MULTIPART.md "Records of open uploads"). For each open multipart upload of an encrypted bucket:
//!
//! - `u/<upload hash>/id`: the client's upload ID, which ListMultipartUploads shows once it has checked that this
//!   keyring made it for that upload;
//! - `u/<upload hash>/<part, 5 digits>/<b64url store ETag>`: a part's plaintext MD5 and checksum, sealed under the
//!   upload's data key and bound to the object, the upload, the part and the store's ETag of it (FORMAT.md §7).
//!
//! `<upload hash>` is the first 128 bits, in hex, of SHA-256(bucket || 0x00 || the store's upload ID). Keys stay
//! short (the embedded store keeps a key's base64 in one file name). Records go when the upload completes or is
//! aborted through the proxy; those of uploads the store dropped on its own stay (a few hundred bytes each).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use bytes::Bytes;
use http::Method;
use sha2::Digest;

use crate::error::ProxyError;
use crate::s3::Target;
use crate::s3::op::S3Op;
use crate::s3::xml;
use crate::store::{Store, StoreBody, StoreRequest, Xml, read_xml};

/// A part record as listed: not authenticated until its sealed attributes open for exactly this part.
#[derive(Debug, Clone)]
pub struct PartRecord {
    pub part: u32,
    /// The store's ETag of the part, unquoted.
    pub store_etag: String,
    pub sealed: Vec<u8>,
}

/// The records of the system bucket, through the store client.
pub struct Records<'a> {
    pub store: &'a Store,
    pub bucket: &'a str,
    /// Set once the system bucket is known to exist.
    pub ready: &'a tokio::sync::OnceCell<()>,
}

fn upload_prefix(bucket: &str, upstream_id: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(bucket.as_bytes());
    h.update([0]);
    h.update(upstream_id.as_bytes());
    format!("u/{}/", hex::encode(&h.finalize()[..16]))
}

/// At most this many part records are read at once.
const READS: usize = 16;

impl Records<'_> {
    fn target(&self, key: Option<String>) -> Target {
        Target { bucket: Some(self.bucket.to_owned()), key, virtual_hosted: false }
    }

    /// Records the client's ID of an upload.
    pub async fn put_upload_id(&self, bucket: &str, upstream_id: &str, client_id: &str) -> Result<(), ProxyError> {
        let key = format!("{}id", upload_prefix(bucket, upstream_id));
        self.put(key, Bytes::copy_from_slice(client_id.as_bytes())).await
    }

    /// The client's ID of an upload, as recorded (unauthenticated: the caller checks it).
    pub async fn upload_id(&self, bucket: &str, upstream_id: &str) -> Result<Option<String>, ProxyError> {
        let key = format!("{}id", upload_prefix(bucket, upstream_id));
        Ok(self.get(key).await?.and_then(|b| String::from_utf8(b.to_vec()).ok()))
    }

    async fn get(&self, key: String) -> Result<Option<Bytes>, ProxyError> {
        let resp = self.store.send(StoreRequest::get(&self.target(Some(key)))).await?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        Ok(Some(read_xml(resp.into_body(), Xml::Result).await?))
    }

    /// Records a part's sealed attributes.
    pub async fn put_part(
        &self,
        bucket: &str,
        upstream_id: &str,
        part: u32,
        store_etag: &str,
        sealed: &[u8],
    ) -> Result<(), ProxyError> {
        let etag = B64URL.encode(store_etag.trim().trim_matches('"'));
        let key = format!("{}{part:05}/{etag}", upload_prefix(bucket, upstream_id));
        self.put(key, Bytes::copy_from_slice(sealed)).await
    }

    /// Every part record of an upload (unauthenticated), read `READS` at a time.
    pub async fn parts(&self, bucket: &str, upstream_id: &str) -> Result<Vec<PartRecord>, ProxyError> {
        let prefix = upload_prefix(bucket, upstream_id);
        let keys = self.list(&prefix).await?;
        let named: Vec<(String, u32, String)> = keys
            .into_iter()
            .filter_map(|k| {
                let (part, etag) = parse_part_key(k.strip_prefix(&prefix)?)?;
                Some((k, part, etag))
            })
            .collect();
        let mut out = Vec::with_capacity(named.len());
        for chunk in named.chunks(READS) {
            let mut reads = Vec::with_capacity(chunk.len());
            for (key, _, _) in chunk {
                reads.push(self.get(key.clone()));
            }
            let bodies = join_all(reads).await;
            for ((_, part, store_etag), body) in chunk.iter().zip(bodies) {
                if let Some(sealed) = body? {
                    out.push(PartRecord { part: *part, store_etag: store_etag.clone(), sealed: sealed.to_vec() });
                }
            }
        }
        Ok(out)
    }

    /// Deletes an upload's ID record (its token wraps the data key under the keyring: for KMS uploads the record
    /// must not outlive the upload). A failure is logged.
    pub async fn forget_id(&self, bucket: &str, upstream_id: &str) {
        let key = format!("{}id", upload_prefix(bucket, upstream_id));
        let delete = StoreRequest::new(S3Op::DeleteObject, Method::DELETE, &self.target(Some(key)));
        if let Err(e) = self.store.expect_ok(delete).await {
            tracing::warn!(error = %e, "could not delete the ID record of a finished upload");
        }
    }

    /// Deletes every record of an upload (best effort: a part record left behind only costs its bytes).
    pub async fn forget(&self, bucket: &str, upstream_id: &str) {
        let prefix = upload_prefix(bucket, upstream_id);
        let keys = match self.list(&prefix).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the records of a finished upload");
                return;
            }
        };
        for key in keys {
            let delete = StoreRequest::new(S3Op::DeleteObject, Method::DELETE, &self.target(Some(key)));
            if let Err(e) = self.store.expect_ok(delete).await {
                tracing::warn!(error = %e, "could not delete a record of a finished upload");
            }
        }
    }

    /// Checks (once per process) that the system bucket exists, creating it if it is missing.
    pub async fn ensure_bucket_once(&self) -> Result<(), ProxyError> {
        self.ready.get_or_try_init(|| self.ensure_bucket()).await.map(drop)
    }

    /// PUTs a record, once the system bucket is known to exist (created the first time it is missing).
    async fn put(&self, key: String, body: Bytes) -> Result<(), ProxyError> {
        self.ensure_bucket_once().await?;
        let put = StoreRequest::new(S3Op::PutObject, Method::PUT, &self.target(Some(key))).body(StoreBody::Bytes(body));
        self.store.expect_ok(put).await.map(drop)
    }

    async fn ensure_bucket(&self) -> Result<(), ProxyError> {
        let head = StoreRequest::new(S3Op::HeadBucket, Method::HEAD, &self.target(None));
        match self.store.expect_ok(head).await {
            Ok(_) => return Ok(()),
            Err(ProxyError::Upstream { status, .. }) if status == http::StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
        let create = StoreRequest::new(S3Op::CreateBucket, Method::PUT, &self.target(None));
        match self.store.expect_ok(create).await {
            Ok(_) => Ok(()),
            Err(ProxyError::Upstream { code, .. }) if code == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every key under `prefix` (ListObjectsV2, all pages). A missing system bucket holds nothing.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ProxyError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = StoreRequest::new(S3Op::ListObjectsV2, Method::GET, &self.target(None))
                .param("list-type", "2")
                .param("prefix", prefix);
            if let Some(t) = &token {
                list = list.param("continuation-token", t);
            }
            let body = match self.store.xml(list, Xml::Result).await {
                Ok((_, body)) => body,
                Err(ProxyError::Upstream { code, .. }) if code == "NoSuchBucket" => return Ok(keys),
                Err(e) => return Err(e),
            };
            let (records, top) = xml::records(&body, &["ListBucketResult", "Contents"])
                .ok_or_else(|| ProxyError::UpstreamProtocol("ListObjectsV2 result is not XML".into()))?;
            keys.extend(records.iter().filter_map(|r| xml::field(r, "Key")).map(str::to_owned));
            let truncated = xml::field(&top, "IsTruncated").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            match xml::field(&top, "NextContinuationToken").filter(|t| !t.is_empty()) {
                Some(next) if truncated && token.as_deref() != Some(next) => token = Some(next.to_owned()),
                _ => return Ok(keys),
            }
        }
    }
}

/// `<part>/<b64url store ETag>` → (part, store ETag).
fn parse_part_key(rest: &str) -> Option<(u32, String)> {
    let (part, etag) = rest.split_once('/')?;
    let part = part.parse().ok().filter(|_| part.len() == 5)?;
    Some((part, String::from_utf8(B64URL.decode(etag).ok()?).ok()?))
}

/// Runs futures concurrently, in this task, and returns their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_keys_read_back_what_was_written_and_junk_is_skipped() {
        let prefix = upload_prefix("b", "up/1+2");
        assert!(prefix.starts_with("u/") && prefix.len() == 35, "{prefix}");
        assert_ne!(prefix, upload_prefix("c", "up/1+2"), "bound to the bucket");
        let rest = format!("00042/{}", B64URL.encode("abc-2"));
        assert_eq!(parse_part_key(&rest), Some((42, "abc-2".to_owned())));
        for junk in ["x/YQ", "00001/%%", "00001", "id", "1/YQ"] {
            assert!(parse_part_key(junk).is_none(), "{junk}");
        }
    }

    #[tokio::test]
    async fn joined_futures_answer_in_order() {
        let slow = async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            1
        };
        let fast = async { 2 };
        let futures: Vec<std::pin::Pin<Box<dyn Future<Output = i32>>>> = vec![Box::pin(slow), Box::pin(fast)];
        assert_eq!(join_all(futures).await, vec![1, 2]);
    }
}
