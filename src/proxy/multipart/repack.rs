//! Re-encrypting a completed upload whose parts do not align into a new object of aligned parts, under a new data
//! key, sealed from the start (the layout is known before writing). The source is read part by part (each part is
//! one stream), pinned to its ETag, and verified as it is read; the new parts stream out as they fill.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::complete::{Completed, CompletedAt, Completing, Sealed};
use crate::crypto::body::{DecryptBody, ReadPlan};
use crate::crypto::envelope::Multipart;
use crate::crypto::error::CryptoError;
use crate::crypto::format::{MAX_PARTS, plaintext_len};
use crate::crypto::keys::DataKey;
use crate::crypto::stream::Layout;
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::proxy::object::SseInfo;
use crate::proxy::object::header_value;
use crate::s3::Target;
use crate::s3::headers::{X_AMZ_VERSION_ID, header_str};
use crate::s3::op::S3Op;
use crate::s3::query::{PART_NUMBER, UPLOAD_ID};
use crate::store::StoreRequest;

/// Part size of a re-encrypted (repacked) upload, unless 10000 parts need larger ones.
const REPACK_PART_SIZE: u64 = 16 * 1024 * 1024;

/// Where the re-encrypted parts go: the upload, its data key, its part size.
struct Destination<'a> {
    upload_id: &'a str,
    dek: &'a Arc<DataKey>,
    part_size: u64,
}

impl Proxy {
    /// Re-encrypts the completed object `at` of `c` into an aligned layout (docs/FORMAT.md §7, "Sealing").
    pub(super) async fn repack(&self, c: &Completing, at: &CompletedAt) -> Result<Sealed, ProxyError> {
        let crypto = &self.inner.crypto;
        let s = u64::from(crypto.segment_size);
        let Completed { pin, head_headers, open } = self.head_completed(c, at).await?;
        let (upload, customer) = (&c.upload, c.upload.customer.as_ref());
        let protection =
            crypto.sealing_protection(&open, &c.identity, &upload.dek, &upload.protection, customer).await?;
        // The new layout: parts of REPACK_PART_SIZE (more if 10000 would not hold the object).
        let part_size = REPACK_PART_SIZE.max(c.plain_total.div_ceil(u64::from(MAX_PARTS)).div_ceil(s) * s);
        let parts_out = u32::try_from(c.plain_total.div_ceil(part_size).max(1)).unwrap_or(MAX_PARTS);
        let state = Multipart::Sealed { parts: parts_out, part_size };
        // The upload's own data key (new stream salts keep every stream key fresh): a retried Complete recognises
        // the object by it.
        let mut env = crypto.wrap_for(&upload.dek, &c.identity, &protection, Some(state)).await?;
        if !c.attributes.is_empty() {
            env.attributes = Some(c.attributes.seal(&upload.dek, &c.identity)?);
        }
        let new_dek = Arc::clone(&upload.dek);
        let headers = crate::proxy::object::replace_headers(&head_headers, &env)?;
        let upload_id = self.create_upstream_upload(&c.target, headers).await?;
        let dest = Destination { upload_id: &upload_id, dek: &new_dek, part_size };
        let etags = match self.pump_parts(c, at, &pin, &dest).await {
            Ok(e) => e,
            Err(e) => {
                self.abort_upstream_upload(&c.target, &upload_id).await;
                return Err(e);
            }
        };
        let numbered = etags.into_iter().enumerate().map(|(i, e)| (i as u32 + 1, e));
        let (h, new_etag) = self.complete_upstream_upload(&c.target, &upload_id, numbered).await?;
        let sealed = Sealed {
            etag: new_etag,
            version_id: header_str(&h, &X_AMZ_VERSION_ID).map(str::to_owned),
            sse: Some(SseInfo::of(&env, customer)),
        };
        self.drop_version(&c.target, at.version.as_deref(), &sealed).await;
        Ok(sealed)
    }

    /// Reads the source parts in order (decrypting each as its own stream) and writes their plaintext, cut into
    /// parts of `dest.part_size` and encrypted under `dest.dek`, to `dest.upload_id`. Returns the new parts' ETags.
    async fn pump_parts(
        &self,
        c: &Completing,
        at: &CompletedAt,
        pin: &HeaderValue,
        dest: &Destination<'_>,
    ) -> Result<Vec<String>, ProxyError> {
        let segment = self.inner.crypto.segment_size;
        let mut etags = Vec::new();
        let mut writer: Option<PartWriter> = None;
        let (mut written, mut offset) = (0u64, 0u64);
        for p in &c.parts {
            let plain = plaintext_len(p.cipher_size, segment, false)
                .ok_or(CryptoError::Integrity("a part has an impossible length"))?;
            let range = format!("bytes={offset}-{}", offset + p.cipher_size - 1);
            offset += p.cipher_size;
            let read = StoreRequest::get(&c.target)
                .version(at.version.as_deref())
                .header(http::header::IF_MATCH, pin.clone())
                .header(http::header::RANGE, header_value(&range)?);
            let resp = self.store().send(read).await?;
            if !resp.status().is_success() {
                let (rp, b) = resp.into_parts();
                return Err(crate::store::reply::error(rp.status, &rp.headers, b, false).await);
            }
            let part = u16::try_from(p.number).map_err(|_| CryptoError::Integrity("part number"))?;
            let plan = ReadPlan::stream(segment, p.cipher_size, plain);
            let mut source = DecryptBody::new(resp.into_body(), Arc::clone(&c.upload.dek), Layout::Part(part), plan);
            while let Some(frame) = source.frame().await {
                let Ok(mut data) = frame?.into_data() else { continue };
                while !data.is_empty() {
                    if writer.is_none() {
                        let n = etags.len() as u32 + 1;
                        let len = dest.part_size.min(c.plain_total - written);
                        writer = Some(self.start_part(&c.target, dest, n, len)?);
                    }
                    let Some(w) = writer.as_mut() else { break };
                    let take = usize::try_from(w.remaining.min(data.len() as u64)).unwrap_or(data.len());
                    w.send(data.split_to(take)).await?;
                    if w.remaining == 0
                        && let Some(done) = writer.take()
                    {
                        written += done.len;
                        etags.push(done.finish().await?);
                    }
                }
            }
        }
        if c.plain_total == 0 {
            etags.push(self.start_part(&c.target, dest, 1, 0)?.finish().await?);
        }
        if writer.is_some() || written != c.plain_total {
            return Err(CryptoError::Integrity("the parts are shorter than listed").into());
        }
        Ok(etags)
    }

    /// Starts uploading part `n` of `len` plaintext bytes, fed through the returned writer.
    fn start_part(&self, target: &Target, dest: &Destination<'_>, n: u32, len: u64) -> Result<PartWriter, ProxyError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let part = u16::try_from(n).map_err(|_| ProxyError::Internal("part number".into()))?;
        let plain = ChannelBody { rx, remaining: len }.boxed_unsync();
        let body =
            crate::proxy::body::encrypted_upload(plain, len, dest.dek, part, self.inner.crypto.segment_size, None)?;
        let put = StoreRequest::new(S3Op::UploadPart, Method::PUT, target)
            .param(PART_NUMBER, &n.to_string())
            .param(UPLOAD_ID, dest.upload_id)
            .body(body);
        let store = self.store().clone();
        let task = tokio::spawn(async move {
            let h = store.expect_ok(put).await?;
            header_str(&h, &http::header::ETAG)
                .map(str::to_owned)
                .ok_or_else(|| ProxyError::UpstreamProtocol("UploadPart without ETag".into()))
        });
        Ok(PartWriter { tx: Some(tx), task, remaining: len, len })
    }
}

/// Feeds one part being written during a repack.
struct PartWriter {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: tokio::task::JoinHandle<Result<String, ProxyError>>,
    /// Plaintext bytes still to send.
    remaining: u64,
    len: u64,
}

impl PartWriter {
    async fn send(&mut self, b: Bytes) -> Result<(), ProxyError> {
        self.remaining -= b.len() as u64;
        let tx = self.tx.as_ref().ok_or_else(|| ProxyError::Internal("part writer closed".into()))?;
        if tx.send(b).await.is_err() {
            // The upload ended early: its own error says why.
            self.tx = None;
            return match (&mut self.task).await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => Err(ProxyError::Internal("part upload ended before its body".into())),
                Err(e) => Err(ProxyError::Internal(format!("part upload task: {e}"))),
            };
        }
        Ok(())
    }

    /// Closes the body and waits for the part's ETag.
    async fn finish(mut self) -> Result<String, ProxyError> {
        self.tx = None;
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ProxyError::Internal(format!("part upload task: {e}"))),
        }
    }
}

/// A request body fed by a channel: exactly `remaining` bytes, or an error if the sender goes away early.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(None) => {
                Poll::Ready(Some(Err(ProxyError::Internal("the repacked part's source ended early".into()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
