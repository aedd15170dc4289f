//! POST Object: browser uploads with a signed POST policy (docs/BUCKETS.md "POST Object"). The form is read with
//! multer: the fields before the file (at most 64 KiB) are read whole; the policy's signature names the client
//! (`sigv4::post`), its conditions are checked against every field and the file's length; then the file streams
//! into the same path as a PutObject — admission (rate limit, authorisation, the bucket's policy, SSE from the
//! form's fields or the bucket's default), encryption, the store — with the form's fields as its headers.
//!
//! The store needs the file's exact length before its first byte. It is the request's Content-Length less what
//! precedes the file's data (counted as multer reads it, byte by byte while it reads the fields) and less the
//! closing delimiter (`\r\n--<boundary>--\r\n`, which browsers, curl and the SDKs' helpers send; the file must be
//! the form's last field, as S3 requires). A file that turns out longer or shorter fails the upload; nothing is
//! stored.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::Proxy;
use super::body::{ClientIncoming, ClientStream};
use super::front::{ConnInfo, Parts, RequestRecord, Signed};
use super::response::ProxyBody;
use crate::error::ProxyError;
use crate::s3::error::{BodyError, RequestError};
use crate::s3::op::S3Op;
use crate::s3::query::Query;
use crate::s3::{Target, resolve_target};
use crate::sigv4::post::FormFields;
use crate::sigv4::verify::PayloadMode;
use crate::util::body::DrainOnDrop;

/// Most bytes of form fields before the file.
const FIELDS_LIMIT: u64 = 64 * 1024;

fn malformed(m: &'static str) -> ProxyError {
    RequestError::MalformedPostRequest(m.into()).into()
}

/// A browser upload: a POST of a `multipart/form-data` body to a bucket, signed by its form (no Authorization).
pub(super) fn is_form_post<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST
        && !req.headers().contains_key(http::header::AUTHORIZATION)
        && req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// Form fields that become headers of the upload (names as S3 reads them); `acl` becomes `x-amz-acl`.
fn upload_header(field: &str) -> Option<HeaderName> {
    const NAMED: [&str; 6] =
        ["content-type", "cache-control", "content-disposition", "content-encoding", "expires", "x-amz-storage-class"];
    let name = match field {
        "acl" => "x-amz-acl",
        f if NAMED.contains(&f) => f,
        f if f.starts_with("x-amz-meta-") || f.starts_with("x-amz-server-side-encryption") => f,
        "x-amz-website-redirect-location" => field,
        _ => return None,
    };
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// Feeds the request body to multer, one byte per poll while it reads the fields (so that what it consumed is
/// known exactly when it yields the file), then in whole frames.
struct Feeder {
    body: ClientIncoming,
    pending: Bytes,
    fed: Arc<AtomicU64>,
    whole: Arc<AtomicBool>,
    yielded: bool,
}

impl Stream for Feeder {
    type Item = Result<Bytes, ProxyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let whole = self.whole.load(Ordering::Acquire);
        if !whole && self.yielded {
            // Let multer look at the byte before it asks for the next.
            self.yielded = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if !self.pending.is_empty() {
                let n = if whole { self.pending.len() } else { 1 };
                let chunk = self.pending.split_to(n);
                self.fed.fetch_add(n as u64, Ordering::AcqRel);
                self.yielded = true;
                return Poll::Ready(Some(Ok(chunk)));
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.pending = d;
                    }
                }
            }
        }
    }
}

/// The file field as a request body of exactly `len` bytes: more or fewer is an error (the upload fails).
struct FileBody {
    field: multer::Field<'static>,
    remaining: u64,
    done: bool,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.field).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => {
                let n = b.len() as u64;
                if n > self.remaining {
                    self.done = true;
                    return Poll::Ready(Some(Err(BodyError::too_long().into())));
                }
                self.remaining -= n;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(_))) => {
                self.done = true;
                Poll::Ready(Some(Err(malformed(
                    "The body of your POST request is not well-formed multipart/form-data.",
                ))))
            }
            Poll::Ready(None) => {
                self.done = true;
                if self.remaining != 0 {
                    return Poll::Ready(Some(Err(malformed(
                        "The file must be the last field of the form, followed only by the closing boundary.",
                    ))));
                }
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Proxy {
    /// POST Object: the form's fields, its signed policy, then the file as a PutObject of the key it names.
    pub(super) async fn post_object(
        &self,
        req: Request<ClientIncoming>,
        conn: &ConnInfo,
        record: &mut RequestRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        record.op = Some(S3Op::PutObject);
        let host =
            super::front::request_host(&req).ok_or(RequestError::InvalidArgument("missing Host header".into()))?;
        let target = resolve_target(&host, req.uri().path(), &self.inner.settings.base_domains)?;
        record.resource = target.resource();
        let Some(bucket) = target.bucket.clone().filter(|_| target.key.is_none()) else {
            return Err(RequestError::MethodNotAllowed.into());
        };
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let boundary = multer::parse_boundary(content_type).map_err(|_| malformed("no multipart boundary"))?;
        let total: u64 = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .ok_or(RequestError::MissingContentLength)?;
        let (head, body) = req.into_parts();
        let fed = Arc::new(AtomicU64::new(0));
        let whole = Arc::new(AtomicBool::new(false));
        let feeder =
            Feeder { body, pending: Bytes::new(), fed: Arc::clone(&fed), whole: Arc::clone(&whole), yielded: false };
        let mut form = multer::Multipart::new(feeder, boundary.clone());
        let bad_form = || malformed("The body of your POST request is not well-formed multipart/form-data.");
        let mut fields = FormFields::new();
        let mut file = None;
        while let Some(mut field) = form.next_field().await.map_err(|_| bad_form())? {
            let name = field.name().unwrap_or("").to_ascii_lowercase();
            if name == "file" {
                file = Some(field);
                break;
            }
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|_| bad_form())? {
                value.extend_from_slice(&chunk);
                if fed.load(Ordering::Acquire) > FIELDS_LIMIT {
                    return Err(malformed("The form fields before the file exceed 64 KiB."));
                }
            }
            let value = String::from_utf8(value).map_err(|_| bad_form())?;
            fields.entry(name).or_insert(value);
        }
        let file = file.ok_or_else(|| malformed("POST requires exactly one file upload per request."))?;
        let before_file = fed.load(Ordering::Acquire);
        whole.store(true, Ordering::Release);
        let closing = boundary.len() as u64 + 8;
        let file_len = total.checked_sub(before_file + closing).ok_or_else(bad_form)?;
        let filename = file.file_name().unwrap_or("").to_owned();

        let (client, policy) = self.inner.verifier.verify_post(&fields, SystemTime::now())?;
        policy.check(&fields, &bucket, file_len)?;
        let key = fields
            .get("key")
            .ok_or_else(|| RequestError::InvalidArgument("Bucket POST must contain a field named 'key'.".into()))?
            .replace("${filename}", &filename);
        if key.is_empty() {
            return Err(RequestError::InvalidArgument("User key must have a length greater than 0.".into()).into());
        }
        if fields.contains_key("tagging") {
            return Err(RequestError::NotImplemented("Tags in POST forms are not supported by the gateway.").into());
        }

        // The upload: a PUT of the key with the form's fields as its headers.
        let mut headers = HeaderMap::new();
        for (name, value) in &fields {
            if let (Some(h), Ok(v)) = (upload_header(name), HeaderValue::from_str(value)) {
                headers.insert(h, v);
            }
        }
        if let Some(h) = head.headers.get(http::header::HOST) {
            headers.insert(http::header::HOST, h.clone());
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(file_len));
        let mut put = Request::new(());
        *put.method_mut() = Method::PUT;
        *put.uri_mut() = head.uri.clone();
        *put.headers_mut() = headers;
        let (put_head, ()) = put.into_parts();
        let file_body: ClientStream = FileBody { field: file, remaining: file_len, done: false }.boxed_unsync();
        let object =
            Target { bucket: Some(bucket.clone()), key: Some(key.clone()), virtual_hosted: target.virtual_hosted };
        let parts = Parts {
            head: put_head,
            body: DrainOnDrop::new(file_body),
            target: object,
            query: Query::default(),
            op: Some(S3Op::PutObject),
        };
        let signed = Signed { client, payload: PayloadMode::Unsigned, chunk_signing: None };
        let (mut ctx, admitted) = self.admit(parts, signed, conn, record).await?;
        let span = tracing::Span::current();
        span.record("principal", ctx.client.access_key_id.as_str());
        span.record("s3.op", "PostObject");
        span.record("s3.bucket", bucket.as_str());
        let result = self.dispatch(&mut ctx, admitted).await;
        *record = ctx.record;
        let uploaded = result?;
        post_answer(uploaded, &fields, &bucket, &key, &host)
    }
}

/// S3's answer to a POST upload: a redirect (`success_action_redirect`), `201` with a `PostResponse` document,
/// `200`, or by default `204`; with the upload's ETag, version and SSE headers.
fn post_answer(
    uploaded: Response<ProxyBody>,
    fields: &FormFields,
    bucket: &str,
    key: &str,
    host: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, _) = uploaded.into_parts();
    let etag = parts.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let enc = |s: &str| {
        let mut out = String::new();
        crate::util::uri::uri_encode(s.as_bytes(), true, &mut out);
        out
    };
    let redirect = fields.get("success_action_redirect").or_else(|| fields.get("redirect")).filter(|r| !r.is_empty());
    let (status, body) = match (redirect, fields.get("success_action_status").map(String::as_str)) {
        (Some(url), _) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            let location = format!("{url}{sep}bucket={}&key={}&etag={}", enc(bucket), enc(key), enc(&etag));
            let mut r = Response::new(super::response::empty_body());
            *r.status_mut() = StatusCode::SEE_OTHER;
            r.headers_mut().insert(
                http::header::LOCATION,
                HeaderValue::from_str(&location).map_err(|_| RequestError::InvalidArgument("redirect".into()))?,
            );
            *r.extensions_mut() = parts.extensions;
            return Ok(with_object_headers(r, &parts.headers));
        }
        (None, Some("201")) => {
            let location = format!("https://{host}/{}/{}", enc(bucket), enc(key));
            let doc = crate::s3::xml::document(
                "PostResponse",
                &[("Location", location), ("Bucket", bucket.to_owned()), ("Key", key.to_owned()), ("ETag", etag)],
                &[],
            );
            (StatusCode::CREATED, doc)
        }
        (None, Some("200")) => (StatusCode::OK, Bytes::new()),
        _ => (StatusCode::NO_CONTENT, Bytes::new()),
    };
    let mut r = Response::new(super::response::full_body(body.clone()));
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    }
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    *r.extensions_mut() = parts.extensions;
    Ok(with_object_headers(r, &parts.headers))
}

/// The upload's ETag, version and SSE headers on the POST's answer.
fn with_object_headers(mut r: Response<ProxyBody>, uploaded: &HeaderMap) -> Response<ProxyBody> {
    for (name, value) in uploaded {
        let n = name.as_str();
        if n == "etag" || n == "x-amz-version-id" || n.starts_with("x-amz-server-side-encryption") {
            r.headers_mut().insert(name.clone(), value.clone());
        }
    }
    r
}
