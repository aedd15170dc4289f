//! GET and HEAD of objects written by the AWS S3 Encryption Client (S3EC) in an encrypted bucket: the content
//! metadata (object metadata, or `<key>.instruction`), plaintext sizes, and whole-object decryption. An S3EC object
//! is one AES-GCM message, so it is buffered whole (within `encryption.s3ec.max_object_size`, and all such reads
//! within `max_buffered`) and released only after its tag verified; ranges are cut from the verified plaintext.
//! docs/S3EC.md.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::sync::OwnedSemaphorePermit;

use super::Proxy;
use super::object::{ReadCtx, scrub_object_headers, stored_extent};
use super::range::ClientRange;
use super::response::ProxyBody;
use crate::crypto::envelope::Envelope;
use crate::crypto::error::CryptoError;
use crate::crypto::s3ec::{self, Metadata};
use crate::crypto::{Crypto, keys::ObjectIdentity};
use crate::error::{BoxError, ProxyError};
use crate::s3::Target;
use crate::s3::error::RequestError;
use crate::s3::op::S3Op;
use crate::store::StoreRequest;
use crate::upstream::UpstreamIncoming;

/// Largest instruction file read.
const MAX_INSTRUCTION_FILE: usize = 64 * 1024;
/// The suffix of an instruction file's key.
pub const INSTRUCTION_SUFFIX: &str = ".instruction";

/// Most HEADs in flight for one listing of an S3EC bucket.
const LIST_HEADS: usize = 16;

/// What a stored object is, from its metadata.
enum StoredKind {
    /// An s3crypt object with this segment size.
    S3crypt(u32),
    S3ec,
    Plain,
}

impl StoredKind {
    fn of(headers: &HeaderMap) -> StoredKind {
        if let Ok(Some(env)) = Envelope::from_headers(headers) {
            return StoredKind::S3crypt(env.segment_size);
        }
        if s3ec::has_content_metadata(headers) { StoredKind::S3ec } else { StoredKind::Plain }
    }
}

/// What an S3EC read turned into.
pub enum S3ecRead {
    Done(Response<ProxyBody>),
    /// Not an S3EC object: the upstream response, untouched.
    NotS3ec(Response<UpstreamIncoming>),
}

/// Whether a successful GET/HEAD of the object `id` without an s3crypt envelope may be an S3EC object: S3EC reading
/// is on and `id` lies in its scope.
pub fn candidate(crypto: &Crypto, id: &ObjectIdentity, headers: &HeaderMap) -> bool {
    let s = crypto.s3ec();
    s.covers(&id.bucket, &id.key)
        && matches!(Envelope::from_headers(headers), Ok(None))
        && (s3ec::has_content_metadata(headers) || s.instruction_files)
}

fn integrity(e: s3ec::S3ecError) -> ProxyError {
    CryptoError::Integrity(e.0).into()
}

/// Reads a body of exactly `len` bytes into memory.
async fn read_exact(body: UpstreamIncoming, len: usize) -> Result<Vec<u8>, ProxyError> {
    let mut buf = Vec::with_capacity(len);
    let mut body = Limited::new(body, len);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.downcast::<ProxyError>() {
            Ok(p) => *p,
            Err(_too_long) => CryptoError::Integrity("the stored object is longer than it said").into(),
        })?;
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
        }
    }
    if buf.len() != len {
        return Err(CryptoError::Integrity("the stored object is shorter than it said").into());
    }
    Ok(buf)
}

/// Frames of a buffered S3EC plaintext: small enough that hyper takes the next one only after writing the last,
/// so the buffer's share of the budget is held until the data has nearly all left.
const FRAME: usize = 64 * 1024;

/// A buffered plaintext sent frame by frame, holding its share of the S3EC buffer budget until the last frame.
struct Holding {
    data: Bytes,
    permit: Option<OwnedSemaphorePermit>,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.data.is_empty() {
            self.permit = None;
            return std::task::Poll::Ready(None);
        }
        let n = self.data.len().min(FRAME);
        let chunk = self.data.split_to(n);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() as u64)
    }
}

fn holding(data: Bytes, permit: OwnedSemaphorePermit) -> ProxyBody {
    Holding { data, permit: Some(permit) }.boxed_unsync()
}

/// Reads a whole stored S3EC object (`cipher_total` bytes) within the buffer budget, unwraps its data key and
/// decrypts it: the plaintext only once the tag verified.
async fn decrypt_whole(
    crypto: &Crypto,
    meta: &Metadata,
    body: UpstreamIncoming,
    cipher_total: u64,
) -> Result<(Bytes, OwnedSemaphorePermit), ProxyError> {
    let limit = crypto.s3ec().max_object_size;
    if meta.plaintext_len(cipher_total).map_err(integrity)? > limit {
        return Err(ProxyError::S3ecTooLarge { limit });
    }
    let len = usize::try_from(cipher_total).map_err(|_| ProxyError::S3ecTooLarge { limit })?;
    let permit = crypto.s3ec_buffer(cipher_total, crypto.s3ec().buffer_wait).await?;
    let dek = crypto.open_s3ec(meta).await?;
    let mut buf = read_exact(body, len).await?;
    let started = std::time::Instant::now();
    meta.decrypt_in_place(&dek, &mut buf).map_err(integrity)?;
    crate::metrics::crypto_done("decrypt", "GetObject", started.elapsed(), cipher_total);
    Ok((Bytes::from(buf), permit))
}

impl Proxy {
    /// `<key>.instruction`, if it exists.
    async fn instruction_file(&self, id: &ObjectIdentity) -> Result<Option<Bytes>, ProxyError> {
        let t = Target {
            bucket: Some(id.bucket.clone()),
            key: Some(format!("{}{INSTRUCTION_SUFFIX}", id.key)),
            virtual_hosted: false,
        };
        let resp = self.store().send(StoreRequest::get(&t)).await?;
        let (parts, body) = resp.into_parts();
        if parts.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !parts.status.is_success() {
            return Err(crate::store::reply::error(parts.status, &parts.headers, body, false).await);
        }
        let bytes = Limited::new(body, MAX_INSTRUCTION_FILE)
            .collect()
            .await
            .map_err(|_| CryptoError::Integrity("the S3EC instruction file is unreadable or too large"))?
            .to_bytes();
        Ok(Some(bytes))
    }

    /// The S3EC metadata of an object from its headers and, where needed, its instruction file; `None` if it is
    /// not an S3EC object.
    pub(super) async fn s3ec_metadata(
        &self,
        crypto: &Crypto,
        id: &ObjectIdentity,
        headers: &HeaderMap,
    ) -> Result<Option<Metadata>, ProxyError> {
        let mut map = s3ec::metadata_map(headers);
        if map.is_empty() || s3ec::needs_instruction_file(headers) {
            if !crypto.s3ec().instruction_files {
                if map.is_empty() {
                    return Ok(None);
                }
                return Err(CryptoError::Integrity(
                    "the S3EC object keeps its key in an instruction file, and instruction files are not read",
                )
                .into());
            }
            match self.instruction_file(id).await? {
                Some(file) => map = s3ec::merge_instruction_file(&map, &file).map_err(integrity)?,
                None if map.is_empty() => return Ok(None),
                None => return Err(CryptoError::Integrity("the S3EC instruction file is missing").into()),
            }
        }
        Metadata::parse(&map).map_err(integrity)
    }

    /// A successful upstream GET or HEAD of a possible S3EC object → the client's plaintext response.
    pub(super) async fn s3ec_read(
        &self,
        resp: Response<UpstreamIncoming>,
        op: S3Op,
        range: ClientRange,
        ctx: &ReadCtx<'_>,
    ) -> Result<S3ecRead, ProxyError> {
        let crypto = ctx.crypto;
        let Some(meta) = self.s3ec_metadata(crypto, ctx.id, resp.headers()).await? else {
            return Ok(S3ecRead::NotS3ec(resp));
        };
        if ctx.customer.is_some() {
            return Err(RequestError::InvalidRequest(
                "The encryption parameters are not applicable to this object.".into(),
            )
            .into());
        }
        let (mut parts, body) = resp.into_parts();
        let (start, cipher_total) = stored_extent(parts.status, &parts.headers)?;
        let plain_total = meta.plaintext_len(cipher_total).map_err(integrity)?;
        scrub_object_headers(&mut parts.headers, None);
        s3ec::strip_content_metadata(&mut parts.headers);
        parts.headers.remove(http::header::CONTENT_RANGE);
        if op == S3Op::HeadObject {
            parts.status = StatusCode::OK;
            parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(plain_total));
            return Ok(S3ecRead::Done(Response::from_parts(parts, super::response::empty_body())));
        }
        let wanted = range.resolve(plain_total)?;
        let body = if parts.status == StatusCode::OK && start == 0 {
            body
        } else {
            // The first response was a ciphertext range: read the whole object, the same version.
            drop(body);
            self.whole_object(ctx.id, &parts.headers, cipher_total).await?
        };
        let (plain, permit) = decrypt_whole(crypto, &meta, body, cipher_total).await?;
        let out = match wanted {
            None => {
                parts.status = StatusCode::OK;
                plain
            }
            Some((a, b)) => {
                parts.status = StatusCode::PARTIAL_CONTENT;
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{plain_total}")) {
                    parts.headers.insert(http::header::CONTENT_RANGE, v);
                }
                // `resolve` keeps a..=b within the plaintext.
                plain.slice(a as usize..=b as usize)
            }
        };
        parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        Ok(S3ecRead::Done(Response::from_parts(parts, holding(out, permit))))
    }

    /// A whole S3EC object (an upstream 200) → its verified plaintext as a response (`migrate --from-s3ec`).
    pub(super) async fn s3ec_decrypt(
        &self,
        resp: Response<UpstreamIncoming>,
        meta: &Metadata,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = resp.into_parts();
        let (start, cipher_total) = stored_extent(parts.status, &parts.headers)?;
        if start != 0 || parts.status != StatusCode::OK {
            return Err(ProxyError::UpstreamProtocol("a partial response to a whole-object read".into()));
        }
        let (plain, permit) = decrypt_whole(&self.inner.crypto, meta, body, cipher_total).await?;
        s3ec::strip_content_metadata(&mut parts.headers);
        parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(plain.len()));
        Ok(Response::from_parts(parts, holding(plain, permit)))
    }

    /// A listing of a bucket in `encryption.s3ec.list_buckets`: every listed object is classified by a HEAD (at most
    /// [`LIST_HEADS`] at once), so that s3crypt objects, S3EC objects and plaintext objects each report their own
    /// plaintext size.
    pub(super) async fn s3ec_listing(
        &self,
        resp: Response<ProxyBody>,
        bucket: &str,
        plaintext_prefixes: &[String],
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = resp.into_parts();
        if parts.status != StatusCode::OK {
            return Ok(Response::from_parts(parts, body));
        }
        let collected = crate::store::read_xml(body, crate::store::Xml::Result).await?;
        let (records, _) = crate::s3::xml::records(&collected, &["ListBucketResult", "Contents"])
            .ok_or_else(|| ProxyError::UpstreamProtocol("listing is not XML".into()))?;
        let listed: Vec<String> = records
            .iter()
            .filter_map(|r| crate::s3::xml::field(r, "Key"))
            .map(|k| String::from_utf8_lossy(&crate::util::uri::percent_decode(k.as_bytes())).into_owned())
            .collect();
        // An object whose key material is in an instruction file has no metadata of its own: it is an S3EC object
        // if its instruction file is listed on the same page.
        let instructed: std::collections::HashSet<String> = if self.inner.crypto.s3ec().instruction_files {
            listed.iter().filter_map(|k| k.strip_suffix(INSTRUCTION_SUFFIX)).map(str::to_owned).collect()
        } else {
            Default::default()
        };
        let keys: Vec<String> =
            listed.into_iter().filter(|k| !plaintext_prefixes.iter().any(|p| k.starts_with(p.as_str()))).collect();
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(LIST_HEADS));
        let mut tasks = tokio::task::JoinSet::new();
        for key in keys {
            let (this, sem) = (self.clone(), std::sync::Arc::clone(&sem));
            let id = ObjectIdentity { bucket: bucket.to_owned(), key };
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let kind = this.head_object(&id).await.map(|h| StoredKind::of(&h));
                (id.key, kind)
            });
        }
        let mut kinds = std::collections::HashMap::new();
        while let Some(r) = tasks.join_next().await {
            let (key, kind) = r.map_err(|e| ProxyError::Internal(format!("listing task: {e}")))?;
            // An object deleted since the listing keeps the listed size.
            match kind {
                Ok(StoredKind::Plain) if instructed.contains(&key) => kinds.insert(key, StoredKind::S3ec),
                Ok(kind) => kinds.insert(key, kind),
                Err(_gone) => None,
            };
        }
        let size = |key: &str, c: u64| match kinds.get(key) {
            Some(StoredKind::S3crypt(segment)) => crate::crypto::format::plaintext_len(c, *segment, true).unwrap_or(c),
            Some(StoredKind::S3ec) => c.saturating_sub(s3ec::TAG_LEN as u64),
            Some(StoredKind::Plain) | None => c,
        };
        let etag = |key: &str, e: &str| match kinds.get(key) {
            Some(StoredKind::S3crypt(_)) => super::etag::opaque(e),
            _ => e.to_owned(),
        };
        let rewritten = crate::s3::xml::rewrite_listing(&collected, &size, &etag)
            .ok_or_else(|| ProxyError::UpstreamProtocol("listing is not XML".into()))?;
        parts.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
        Ok(Response::from_parts(parts, super::response::full_body(Bytes::from(rewritten))))
    }

    /// GET of the whole object whose (ranged) response carried `headers`, pinned to its ETag.
    async fn whole_object(
        &self,
        id: &ObjectIdentity,
        headers: &HeaderMap,
        cipher_total: u64,
    ) -> Result<UpstreamIncoming, ProxyError> {
        let t = Target { bucket: Some(id.bucket.clone()), key: Some(id.key.clone()), virtual_hosted: false };
        let mut read = StoreRequest::get(&t);
        if let Some(e) = headers.get(http::header::ETAG) {
            read = read.header(http::header::IF_MATCH, e.clone());
        }
        let resp = self.store().send(read).await?;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            return Err(crate::store::reply::error(parts.status, &parts.headers, body, false).await);
        }
        if stored_extent(parts.status, &parts.headers)? != (0, cipher_total) {
            return Err(ProxyError::UpstreamProtocol("the object changed while it was read".into()));
        }
        Ok(body)
    }
}
