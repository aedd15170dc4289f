//! Bulk key maintenance over a bucket (the `rewrap` and `migrate` commands): list, then for each object either
//! re-wrap its data key under the target key by a metadata-only self-copy (no data re-encryption), or encrypt a
//! legacy plaintext object in place. Idempotent, so an interrupted run simply runs again; bounded concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method};

use super::Proxy;
use super::object::replace_headers;
use crate::crypto::envelope::Envelope;
use crate::crypto::error::CryptoError;
use crate::crypto::format::{KEK_REF_SSE_C, MULTIPART_OPEN};
use crate::crypto::keys::ObjectIdentity;
use crate::crypto::s3ec;
use crate::crypto::{Crypto, Protection};
use crate::error::ProxyError;
use crate::s3::Target;
use crate::s3::headers::header_str;
use crate::s3::op::S3Op;
use crate::s3::xml;
use crate::store::{StoreRequest, Xml};

/// What a maintenance run does.
#[derive(Debug, Clone)]
pub struct BulkOptions {
    pub bucket: String,
    pub prefix: String,
    /// `rewrap`: the target ("keyring", "kms", "kms:<key>"); `None`: each object's policy default.
    pub to: Option<String>,
    pub dry_run: bool,
    pub concurrency: usize,
    /// Stop after this many objects changed (a canary, or a run in slices).
    pub limit: Option<u64>,
    /// `migrate`: also re-encrypt objects of the AWS S3 Encryption Client (else they are skipped).
    pub from_s3ec: bool,
}

/// Counts of a run, updated as it goes (read them for progress).
#[derive(Debug, Default)]
pub struct BulkReport {
    pub listed: AtomicU64,
    pub changed: AtomicU64,
    pub already: AtomicU64,
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
}

impl BulkReport {
    /// Claims one change under `limit`: false once the limit is reached (the change is then not made).
    fn reserve(&self, limit: Option<u64>) -> bool {
        self.changed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| match limit {
                Some(l) if c >= l => None,
                _other => Some(c + 1),
            })
            .is_ok()
    }

    pub fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} listed, {} changed, {} already done, {} skipped, {} failed",
            g(&self.listed),
            g(&self.changed),
            g(&self.already),
            g(&self.skipped),
            g(&self.failed)
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Rewrap,
    Migrate,
}

/// One listed object.
struct Listed {
    key: String,
}

fn parse_target(to: &str) -> Result<Protection, String> {
    match to {
        "keyring" => Ok(Protection::Keyring),
        "kms" => Err("give the key: --to kms:<key id, ARN or alias> (or leave --to out for the policy default)".into()),
        other => other
            .strip_prefix("kms:")
            .filter(|k| !k.is_empty())
            .map(|k| Protection::Kms { key_id: k.to_owned(), context: None, bucket_key: true })
            .ok_or_else(|| format!("--to {other:?}: use \"keyring\" or \"kms:<key>\"")),
    }
}

impl Proxy {
    /// Lists every key under the prefix (ListObjectsV2, all pages).
    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>, ProxyError> {
        let target = Target { bucket: Some(bucket.to_owned()), key: None, virtual_hosted: false };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = StoreRequest::new(S3Op::ListObjectsV2, Method::GET, &target)
                .param("list-type", "2")
                .param("prefix", prefix)
                .param("encoding-type", "url");
            if let Some(t) = &token {
                list = list.param("continuation-token", t);
            }
            let (_, body) = self.store().xml(list, Xml::Result).await?;
            let (records, top) = xml::records(&body, &["ListBucketResult", "Contents"])
                .ok_or_else(|| ProxyError::UpstreamProtocol("listing is not XML".into()))?;
            for r in &records {
                if let Some(k) = xml::field(r, "Key") {
                    let key = String::from_utf8_lossy(&crate::util::uri::percent_decode(k.as_bytes())).into_owned();
                    out.push(Listed { key });
                }
            }
            let truncated = xml::field(&top, "IsTruncated").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            match xml::field(&top, "NextContinuationToken").filter(|t| !t.is_empty()) {
                Some(t) if truncated => token = Some(t.to_owned()),
                _other => return Ok(out),
            }
        }
    }

    /// Re-wraps the data keys of a bucket's objects under the target key (metadata-only server-side copies).
    pub async fn rewrap_bucket(&self, opts: &BulkOptions, report: &Arc<BulkReport>) -> Result<(), String> {
        let target = match opts.to.as_deref().map(parse_target).transpose()? {
            Some(p) => Some(self.inner.crypto.resolve_protection(p).await.map_err(|e| format!("--to: {e}"))?),
            None => None,
        };
        self.bulk(opts, report, Job::Rewrap, target).await
    }

    /// Encrypts a bucket's legacy plaintext objects in place.
    pub async fn migrate_bucket(&self, opts: &BulkOptions, report: &Arc<BulkReport>) -> Result<(), String> {
        self.bulk(opts, report, Job::Migrate, None).await
    }

    async fn bulk(
        &self,
        opts: &BulkOptions,
        report: &Arc<BulkReport>,
        job: Job,
        target: Option<Protection>,
    ) -> Result<(), String> {
        let keys =
            self.list_keys(&opts.bucket, &opts.prefix).await.map_err(|e| format!("listing {}: {e}", opts.bucket))?;
        report.listed.store(keys.len() as u64, Ordering::Relaxed);
        let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for item in keys {
            if opts.limit.is_some_and(|l| report.changed.load(Ordering::Relaxed) >= l) {
                break;
            }
            let permit = Arc::clone(&sem).acquire_owned().await.map_err(|e| e.to_string())?;
            let (this, report, opts, target) = (self.clone(), Arc::clone(report), opts.clone(), target.clone());
            tasks.spawn(async move {
                let _permit = permit;
                if opts.limit.is_some_and(|l| report.changed.load(Ordering::Relaxed) >= l) {
                    return;
                }
                let id = ObjectIdentity { bucket: opts.bucket.clone(), key: item.key.clone() };
                let gate = Gate { report: &report, limit: opts.limit };
                let result = match job {
                    Job::Rewrap => this.rewrap_one(&id, target.as_ref(), opts.dry_run, &gate).await,
                    Job::Migrate => this.migrate_one(&id, &opts, &gate).await,
                };
                let counter = match result {
                    Ok(Outcome::Changed) | Ok(Outcome::Stopped) => return,
                    Ok(Outcome::Already) => &report.already,
                    Ok(Outcome::Skipped(why)) => {
                        tracing::info!(key = %id.key, why, "skipped");
                        &report.skipped
                    }
                    Err(Failed(e)) => {
                        tracing::warn!(key = %id.key, error = %e, "failed");
                        &report.failed
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| format!("task: {e}"))?;
        }
        Ok(())
    }

    pub(super) async fn head_object(&self, id: &ObjectIdentity) -> Result<HeaderMap, ProxyError> {
        self.store().expect_ok(StoreRequest::head(&object_target(id))).await
    }

    async fn rewrap_one(
        &self,
        id: &ObjectIdentity,
        target: Option<&Protection>,
        dry_run: bool,
        gate: &Gate<'_>,
    ) -> Result<Outcome, Failed> {
        let crypto = &self.inner.crypto;
        let head = self.head_object(id).await?;
        let Some(env) = Envelope::from_headers(&head).map_err(|e| CryptoError::Integrity(e.0))? else {
            return Ok(Outcome::Skipped("plaintext (use migrate)"));
        };
        if env.kek_ref == KEK_REF_SSE_C {
            return Ok(Outcome::Skipped("SSE-C: the client's key is needed"));
        }
        if env.multipart.is_some_and(|m| m.encode() == MULTIPART_OPEN) {
            return Ok(Outcome::Skipped("unsealed multipart object"));
        }
        let protection = match target {
            Some(p) => p.clone(),
            None => match crypto.protection(&id.bucket, &id.key, &crate::s3::sse::SseRequest::None).await? {
                Protection::Plaintext => return Ok(Outcome::Skipped("the policy stores it as plaintext")),
                p => p,
            },
        };
        if already_under(crypto, &env, &protection) {
            return Ok(Outcome::Already);
        }
        if !gate.report.reserve(gate.limit) {
            return Ok(Outcome::Stopped);
        }
        if dry_run {
            return Ok(Outcome::Changed);
        }
        let done = async {
            let dek = crypto.open_envelope(&env, id, None).await?;
            let new_env = crypto.wrap_for(&dek, id, &protection, env.multipart).await?;
            self.self_copy(id, &head, &new_env).await
        };
        gate.settle(done.await)
    }

    /// Rewrites an object's metadata with `env` by a server-side copy onto itself, pinned to its ETag.
    async fn self_copy(&self, id: &ObjectIdentity, head: &HeaderMap, env: &Envelope) -> Result<(), ProxyError> {
        let t = object_target(id);
        let etag =
            header_str(head, &http::header::ETAG).ok_or(ProxyError::UpstreamProtocol("HEAD without ETag".into()))?;
        let size: u64 = header_str(head, &http::header::CONTENT_LENGTH).and_then(|v| v.parse().ok()).unwrap_or(0);
        let headers = replace_headers(head, env)?;
        if size > self.inner.settings.max_copy_size {
            return self.copy_in_ranges(&t, headers, &t.upstream_path(false), etag, size).await.map(|_| ());
        }
        self.self_copy_request(&t, headers, &t.upstream_path(false), etag).await.map(|_| ())
    }

    async fn migrate_one(&self, id: &ObjectIdentity, opts: &BulkOptions, gate: &Gate<'_>) -> Result<Outcome, Failed> {
        let crypto = &self.inner.crypto;
        let head = self.head_object(id).await?;
        if Envelope::from_headers(&head).map_err(|e| CryptoError::Integrity(e.0))?.is_some() {
            return Ok(Outcome::Already);
        }
        if id.key.ends_with(super::s3ec::INSTRUCTION_SUFFIX) && crypto.s3ec().instruction_files {
            return Ok(Outcome::Skipped("an S3 Encryption Client instruction file"));
        }
        // Never encrypt an S3EC object's ciphertext as if it were plaintext.
        let s3ec = if s3ec::has_content_metadata(&head) || (opts.from_s3ec && crypto.s3ec().instruction_files) {
            self.s3ec_metadata(crypto, id, &head).await?
        } else {
            None
        };
        if s3ec.is_some() && !opts.from_s3ec {
            return Ok(Outcome::Skipped("an S3 Encryption Client object (use --from-s3ec)"));
        }
        if s3ec.is_some() && !crypto.s3ec().covers(&id.bucket, &id.key) {
            return Ok(Outcome::Skipped("an S3 Encryption Client object outside encryption.s3ec.scope"));
        }
        let protection = crypto.protection(&id.bucket, &id.key, &crate::s3::sse::SseRequest::None).await?;
        if matches!(protection, Protection::Plaintext) {
            return Ok(Outcome::Skipped("the policy stores it as plaintext"));
        }
        if !gate.report.reserve(gate.limit) {
            return Ok(Outcome::Stopped);
        }
        if opts.dry_run {
            return Ok(Outcome::Changed);
        }
        gate.settle(self.encrypt_in_place(id, &head, &protection, s3ec.as_ref()).await)
    }

    /// Reads a plaintext object and writes it back encrypted, keeping its content headers and user metadata; the
    /// read is pinned to the ETag the HEAD saw.
    async fn encrypt_in_place(
        &self,
        id: &ObjectIdentity,
        head: &HeaderMap,
        protection: &Protection,
        s3ec: Option<&s3ec::Metadata>,
    ) -> Result<(), ProxyError> {
        let crypto = &self.inner.crypto;
        let t = object_target(id);
        let mut read = StoreRequest::get(&t);
        if let Some(e) = head.get(http::header::ETAG) {
            read = read.header(http::header::IF_MATCH, e.clone());
        }
        let resp = self.store().send(read).await?;
        if !resp.status().is_success() {
            let (p, b) = resp.into_parts();
            return Err(crate::store::reply::error(p.status, &p.headers, b, false).await);
        }
        let plain = match s3ec {
            // Read whole and verified before anything is written.
            Some(meta) => self.s3ec_decrypt(resp, meta).await?,
            None => {
                let (mut parts, body) = resp.into_parts();
                super::response::scrub_upstream_headers(&mut parts.headers);
                http::Response::from_parts(
                    parts,
                    http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                        body,
                        |e| -> crate::error::BoxError { Box::new(e) },
                    )),
                )
            }
        };
        let mut head = head.clone();
        s3ec::strip_content_metadata(&mut head);
        let head = &head;
        let (dek, env) = crypto.new_object_key(id, protection, None).await?;
        let headers = replace_headers(head, &env)?;
        let sink = super::copy::Sink { dek: Some(Arc::new(dek)), part: crate::crypto::format::SINGLE_PUT_PART };
        let sse = self.upstream_sse(&t);
        let into = super::copy::Into { target: &t, part_of: None, headers, sse: sse.as_ref() };
        self.write_streamed(into, plain, sink).await.map(|_| ())
    }
}

/// What happened to one object.
enum Outcome {
    /// Changed (counted when reserved).
    Changed,
    Already,
    Skipped(&'static str),
    /// Not changed: the limit was reached.
    Stopped,
}

/// A failure for one object.
struct Failed(ProxyError);

impl<E: Into<ProxyError>> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed(e.into())
    }
}

/// The limit on changes, shared by the tasks of a run.
struct Gate<'a> {
    report: &'a BulkReport,
    limit: Option<u64>,
}

impl Gate<'_> {
    /// A reserved change that failed gives its reservation back.
    fn settle(&self, r: Result<(), ProxyError>) -> Result<Outcome, Failed> {
        match r {
            Ok(()) => Ok(Outcome::Changed),
            Err(e) => {
                self.report.changed.fetch_sub(1, Ordering::SeqCst);
                Err(Failed(e))
            }
        }
    }
}

fn object_target(id: &ObjectIdentity) -> Target {
    Target { bucket: Some(id.bucket.clone()), key: Some(id.key.clone()), virtual_hosted: false }
}

/// Whether `env` is already wrapped the way `protection` would wrap it.
fn already_under(crypto: &Crypto, env: &Envelope, protection: &Protection) -> bool {
    match protection {
        Protection::Keyring => env.kek_ref == crypto.keyring().current().reference(),
        // Resolved to its ARN beforehand: compared exactly.
        Protection::Kms { key_id, .. } => env.kek_ref.strip_prefix("kms:") == Some(key_id.as_str()),
        Protection::Customer(_) | Protection::Plaintext => false,
    }
}

/// How often the command line prints progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
