//! aws-chunked request bodies (`x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER`) decoded as a
//! streaming `Body` transform: chunk framing never reaches the store, the decoded length must equal
//! `x-amz-decoded-content-length`, the trailer checksum (if any) is verified over the decoded data, and the
//! last data frame is held back until every end-of-stream check has passed.
//!
//! Memory: data is passed on as slices of the incoming frames (no copy); only a chunk-header line (≤ 4 KiB)
//! and the trailer block (≤ 16 KiB) are buffered.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use sha2::{Digest, Sha256};

use super::error::{AuthError, SignatureMismatch};
use super::verify::ChunkSigningContext;
use super::{EMPTY_SHA256, Signature};
use crate::s3::checksum::{ChecksumAlgorithm, Checksummer};
use crate::s3::error::{BodyError, RequestError};

/// Longest chunk-size line accepted (`<hex>[;ext]\r\n`).
pub const MAX_CHUNK_HEADER: usize = 4096;
/// Largest trailer block accepted.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Largest chunk accepted (minio uses the same cap).
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;

/// Where a verified trailer checksum is left for the response (S3 echoes the checksum it verified).
pub type VerifiedChecksum = std::sync::Arc<std::sync::Mutex<Option<(ChecksumAlgorithm, String)>>>;

/// What the request head declared about the aws-chunked body.
#[derive(Debug)]
pub struct ChunkedSpec {
    /// `x-amz-decoded-content-length`.
    pub decoded_length: u64,
    /// The checksum named by `x-amz-trailer`, if any.
    pub trailer: Option<ChecksumAlgorithm>,
    /// Signed chunks (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`): the chain to verify.
    pub signed: Option<ChunkChain>,
    /// Receives the trailer checksum once it verified.
    pub verified: Option<VerifiedChecksum>,
}

/// The signature chain of signed chunks: each chunk's signature covers the previous one, starting from the
/// request's (seed) signature; with `signed_trailer`, the trailer is signed after the final chunk.
#[derive(Debug)]
pub struct ChunkChain {
    pub ctx: ChunkSigningContext,
    pub signed_trailer: bool,
}

/// How much of a refused body is still read (and discarded) so the client reads the error answer.
pub const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// The smallest chunk S3 accepts before the last one, for signed chunks.
pub const MIN_SIGNED_CHUNK: u64 = 8192;

/// Why an aws-chunked body is refused: its framing, length or checksum (`Body`), a chunk or trailer signature that
/// does not continue the chain (`Signature`), or an unreadable trailer checksum value (`Request`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChunkedError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Signature(#[from] AuthError),
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl ChunkedSpec {
    /// Reads the spec from request headers; errors are the ones S3 answers.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<ChunkedSpec, RequestError> {
        use crate::s3::headers::{X_AMZ_DECODED_CONTENT_LENGTH, X_AMZ_TRAILER, header_str};
        let decoded_length = header_str(headers, &X_AMZ_DECODED_CONTENT_LENGTH)
            .ok_or(RequestError::MissingContentLength)?
            .trim()
            .parse::<u64>()
            .map_err(|_| RequestError::InvalidArgument("x-amz-decoded-content-length is not a number".into()))?;
        let trailer = match header_str(headers, &X_AMZ_TRAILER) {
            None => None,
            Some(name) => Some(ChecksumAlgorithm::from_header_name(name.trim()).ok_or_else(|| {
                RequestError::InvalidRequest("The value specified in the x-amz-trailer header is not supported".into())
            })?),
        };
        Ok(ChunkedSpec { decoded_length, trailer, signed: None, verified: None })
    }
}

enum Phase {
    /// Reading `<hex-size>[;extensions]\r\n`.
    Header,
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Expecting the `\r\n` after chunk data.
    DataEnd,
    /// Reading trailer lines until an empty line.
    Trailer,
    /// Framing complete; end-of-stream checks pending or done.
    Finished,
    /// Terminal: all frames released, or an error was returned.
    Done,
}

/// The framing state of an aws-chunked body (everything but the I/O).
struct Framing {
    phase: Phase,
    spec: ChunkedSpec,
    line: BytesMut,
    decoded: u64,
    checksum: Option<Checksummer>,
    trailer_value: Option<String>,
    trailer_bytes: usize,
    /// Signed chunks: the signature the current chunk claims, the running hash of its data, the previous
    /// signature in the chain, whether the last data chunk was short, the trailer signature and lines.
    chunk_signature: Option<Signature>,
    chunk_hash: Option<Sha256>,
    prev_signature: Option<Signature>,
    short_chunk_seen: bool,
    trailer_signature: Option<Signature>,
    trailer_lines: Vec<(String, String)>,
}

pin_project! {
    /// Decodes an aws-chunked body into the object data.
    pub struct AwsChunkedBody<B> {
        #[pin]
        inner: B,
        framing: Framing,
        input: Bytes,
        held: Option<Bytes>,
        failed: Option<ChunkedError>,
        drained: u64,
    }
}

impl<B> AwsChunkedBody<B> {
    pub fn new(inner: B, spec: ChunkedSpec) -> Self {
        AwsChunkedBody {
            inner,
            framing: Framing {
                phase: Phase::Header,
                checksum: spec.trailer.map(Checksummer::new),
                prev_signature: spec.signed.as_ref().map(|c| c.ctx.seed_signature.clone()),
                spec,
                line: BytesMut::new(),
                decoded: 0,
                trailer_value: None,
                trailer_bytes: 0,
                chunk_signature: None,
                chunk_hash: None,
                short_chunk_seen: false,
                trailer_signature: None,
                trailer_lines: Vec::new(),
            },
            input: Bytes::new(),
            held: None,
            failed: None,
            drained: 0,
        }
    }
}

/// Takes bytes from `input` up to and including the next `\n` into `line`. Returns true when the line is
/// complete.
fn take_line(input: &mut Bytes, line: &mut BytesMut, max: usize) -> Result<bool, BodyError> {
    match input.iter().position(|b| *b == b'\n') {
        Some(pos) => {
            line.extend_from_slice(&input[..=pos]);
            input.advance(pos + 1);
            if line.len() > max {
                return Err(BodyError::MalformedChunkedBody("line too long"));
            }
            Ok(true)
        }
        None => {
            line.extend_from_slice(input);
            input.clear();
            if line.len() > max {
                return Err(BodyError::MalformedChunkedBody("line too long"));
            }
            Ok(false)
        }
    }
}

/// `<hex size>[;chunk-signature=<64 hex>]\r\n` → the size and the signature, if any.
fn parse_chunk_header(line: &[u8]) -> Result<(u64, Option<Signature>), BodyError> {
    let line = line.strip_suffix(b"\r\n").ok_or(BodyError::MalformedChunkedBody("chunk header without CRLF"))?;
    let (size_part, ext) = match line.iter().position(|b| *b == b';') {
        Some(p) => (&line[..p], Some(&line[p + 1..])),
        None => (line, None),
    };
    let signature = match ext {
        None => None,
        Some(ext) => {
            let sig = ext
                .strip_prefix(b"chunk-signature=")
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(Signature::from_hex);
            Some(sig.ok_or(BodyError::MalformedChunkedBody("malformed chunk-signature"))?)
        }
    };
    Ok((parse_chunk_size(size_part)?, signature))
}

fn parse_chunk_size(size_part: &[u8]) -> Result<u64, BodyError> {
    if size_part.is_empty() || size_part.len() > 16 || !size_part.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError::MalformedChunkedBody("chunk size is not hexadecimal"));
    }
    let text = std::str::from_utf8(size_part).map_err(|_| BodyError::MalformedChunkedBody("chunk size"))?;
    let size = u64::from_str_radix(text, 16).map_err(|_| BodyError::MalformedChunkedBody("chunk size"))?;
    if size > MAX_CHUNK_SIZE {
        return Err(BodyError::InvalidChunkSize("chunk larger than 16 MiB"));
    }
    Ok(size)
}

fn chunk_mismatch(sts: String, provided: &Signature) -> ChunkedError {
    AuthError::SignatureDoesNotMatch(Box::new(SignatureMismatch {
        access_key_id: String::new(),
        string_to_sign: sts,
        canonical_request: String::new(),
        signature_provided: provided.to_hex(),
    }))
    .into()
}

impl Framing {
    /// Advances the framing over buffered input; returns decoded data when some is available.
    fn step(&mut self, input: &mut Bytes) -> Result<Option<Bytes>, ChunkedError> {
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            match &mut self.phase {
                Phase::Header => {
                    if !take_line(input, &mut self.line, MAX_CHUNK_HEADER)? {
                        return Ok(None);
                    }
                    let (size, signature) = parse_chunk_header(&self.line)?;
                    self.line.clear();
                    self.start_chunk(size, signature)?;
                    self.phase = if size == 0 { Phase::Trailer } else { Phase::Data { remaining: size } };
                }
                Phase::Data { remaining } => {
                    let n = usize::try_from((*remaining).min(input.len() as u64)).unwrap_or(input.len());
                    let data = input.split_to(n);
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.phase = Phase::DataEnd;
                    }
                    self.decoded += n as u64;
                    if self.decoded > self.spec.decoded_length {
                        return Err(BodyError::IncompleteBody("more data than x-amz-decoded-content-length").into());
                    }
                    if let Some(c) = self.checksum.as_mut() {
                        c.update(&data);
                    }
                    if let Some(h) = self.chunk_hash.as_mut() {
                        h.update(&data);
                    }
                    return Ok(Some(data));
                }
                Phase::DataEnd => {
                    let n = (2 - self.line.len()).min(input.len());
                    self.line.extend_from_slice(&input.split_to(n));
                    if self.line.len() == 2 {
                        if &self.line[..] != b"\r\n" {
                            return Err(BodyError::MalformedChunkedBody("chunk data not followed by CRLF").into());
                        }
                        self.line.clear();
                        self.end_chunk()?;
                        self.phase = Phase::Header;
                    }
                }
                Phase::Trailer => {
                    let before = input.len();
                    let complete = take_line(input, &mut self.line, MAX_TRAILER_BYTES)?;
                    self.trailer_bytes += before - input.len();
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(BodyError::MalformedTrailer("trailer block too large".into()).into());
                    }
                    if !complete {
                        return Ok(None);
                    }
                    let this_line = std::mem::take(&mut self.line);
                    self.trailer_line(&this_line)?;
                }
                Phase::Finished | Phase::Done => {
                    return Err(BodyError::MalformedChunkedBody("data after the final chunk").into());
                }
            }
        }
    }

    /// A chunk header was read: check the signature rules and start hashing its data.
    fn start_chunk(&mut self, size: u64, signature: Option<Signature>) -> Result<(), ChunkedError> {
        let Some(_) = &self.spec.signed else { return Ok(()) };
        let signature = signature.ok_or(BodyError::MalformedChunkedBody("chunk without chunk-signature"))?;
        if size > 0 && self.short_chunk_seen {
            return Err(BodyError::InvalidChunkSize("only the last chunk may be smaller than 8192 bytes").into());
        }
        self.short_chunk_seen = size < MIN_SIGNED_CHUNK;
        self.chunk_signature = Some(signature);
        self.chunk_hash = Some(Sha256::new());
        if size == 0 {
            self.end_chunk()?;
        }
        Ok(())
    }

    /// A chunk's data ended: its signature must continue the chain.
    fn end_chunk(&mut self) -> Result<(), ChunkedError> {
        let Some(chain) = &self.spec.signed else { return Ok(()) };
        let (Some(provided), Some(hash), Some(prev)) =
            (self.chunk_signature.take(), self.chunk_hash.take(), self.prev_signature.take())
        else {
            // Every chunk starts with its signature and the chain with the seed: a gap cannot verify.
            return Err(BodyError::MalformedChunkedBody("chunk signature out of sequence").into());
        };
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{}\n{}",
            chain.ctx.amz_date,
            chain.ctx.scope,
            prev.to_hex(),
            hex::encode(EMPTY_SHA256),
            hex::encode(hash.finalize())
        );
        if !chain.ctx.key.sign(sts.as_bytes()).ct_eq(&provided) {
            return Err(chunk_mismatch(sts, &provided));
        }
        self.prev_signature = Some(provided);
        Ok(())
    }

    /// The signed trailer: `x-amz-trailer-signature` over the sorted, canonical trailer lines.
    fn check_trailer_signature(&mut self) -> Result<(), ChunkedError> {
        let Some(chain) = &self.spec.signed else { return Ok(()) };
        if !chain.signed_trailer {
            return Ok(());
        }
        let provided = self
            .trailer_signature
            .take()
            .ok_or_else(|| BodyError::MalformedTrailer("x-amz-trailer-signature missing".into()))?;
        let prev =
            self.prev_signature.take().ok_or(BodyError::MalformedChunkedBody("trailer signature out of sequence"))?;
        let mut lines = std::mem::take(&mut self.trailer_lines);
        lines.sort();
        let mut canonical = String::new();
        for (name, value) in &lines {
            canonical.push_str(name);
            canonical.push(':');
            canonical.push_str(value);
            canonical.push('\n');
        }
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            chain.ctx.amz_date,
            chain.ctx.scope,
            prev.to_hex(),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        if !chain.ctx.key.sign(sts.as_bytes()).ct_eq(&provided) {
            return Err(chunk_mismatch(sts, &provided));
        }
        Ok(())
    }

    /// One complete trailer line (with its line ending); an empty line ends the trailer block.
    fn trailer_line(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            self.phase = Phase::Finished;
            return Ok(());
        }
        let text =
            std::str::from_utf8(content).map_err(|_| BodyError::MalformedTrailer("trailer is not text".into()))?;
        let (name, value) =
            text.split_once(':').ok_or_else(|| BodyError::MalformedTrailer("trailer line without ':'".into()))?;
        let signed_trailer = self.spec.signed.as_ref().is_some_and(|c| c.signed_trailer);
        if signed_trailer && name.trim().eq_ignore_ascii_case("x-amz-trailer-signature") {
            let sig = Signature::from_hex(value.trim())
                .ok_or_else(|| BodyError::MalformedTrailer("malformed x-amz-trailer-signature".into()))?;
            if self.trailer_signature.replace(sig).is_some() {
                return Err(BodyError::MalformedTrailer("x-amz-trailer-signature given twice".into()).into());
            }
            return Ok(());
        }
        if signed_trailer {
            self.trailer_lines.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let declared = self.spec.trailer.map(ChecksumAlgorithm::header_name);
        if declared.is_none_or(|d| !d.eq_ignore_ascii_case(name.trim())) || self.trailer_value.is_some() {
            return Err(BodyError::MalformedTrailer(
                "The request contained trailing data that was not well-formed or did not conform to our published \
                 schema."
                    .into(),
            )
            .into());
        }
        self.trailer_value = Some(value.trim().to_owned());
        Ok(())
    }

    /// Checks run when the body has ended: framing complete, length, trailer checksum.
    fn finish(&mut self) -> Result<(), ChunkedError> {
        let finished = matches!(self.phase, Phase::Finished);
        self.phase = Phase::Done;
        if !finished {
            return Err(BodyError::IncompleteBody("aws-chunked body ended before its final chunk").into());
        }
        if self.decoded != self.spec.decoded_length {
            return Err(BodyError::IncompleteBody("decoded length differs from x-amz-decoded-content-length").into());
        }
        self.check_trailer_signature()?;
        match (self.checksum.take(), self.trailer_value.take()) {
            (Some(c), Some(value)) => {
                let alg = c.algorithm();
                let expected = alg.decode_value(&value)?;
                if c.finalize() != expected {
                    return Err(BodyError::BadDigest { algorithm: alg.display_name() }.into());
                }
                if let Some(slot) = &self.spec.verified
                    && let Ok(mut g) = slot.lock()
                {
                    *g = Some((alg, value));
                }
                Ok(())
            }
            (Some(_), None) => Err(BodyError::MalformedTrailer(
                "The x-amz-trailer header names a checksum the body does not carry.".into(),
            )
            .into()),
            (None, _) => Ok(()),
        }
    }
}

impl<B> Body for AwsChunkedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: From<ChunkedError>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            if matches!(this.framing.phase, Phase::Done) {
                return Poll::Ready(None);
            }
            if let Some(e) = this.failed.take() {
                // Read (and discard) what the client is still sending, up to a bound, so it gets to read the
                // error answer instead of a reset connection; S3 also reads a refused body to its end.
                match this.inner.as_mut().poll_frame(cx) {
                    Poll::Pending => {
                        *this.failed = Some(e);
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        *this.drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if *this.drained <= DRAIN_LIMIT {
                            *this.failed = Some(e);
                            continue;
                        }
                    }
                    Poll::Ready(_) => {}
                }
                this.framing.phase = Phase::Done;
                return Poll::Ready(Some(Err(e.into())));
            }
            match this.framing.step(this.input) {
                Err(e) => {
                    this.held.take();
                    this.input.clear();
                    *this.failed = Some(e);
                    continue;
                }
                Ok(Some(data)) => {
                    if let Some(prev) = this.held.replace(data) {
                        return Poll::Ready(Some(Ok(Frame::data(prev))));
                    }
                    continue;
                }
                Ok(None) => {}
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        *this.input = data;
                    }
                }
                Some(Err(e)) => {
                    this.framing.phase = Phase::Done;
                    this.held.take();
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    return match this.framing.finish() {
                        Ok(()) => Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b)))),
                        Err(e) => {
                            this.held.take();
                            Poll::Ready(Some(Err(e.into())))
                        }
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing.phase, Phase::Done) && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let remaining = self.framing.spec.decoded_length.saturating_sub(self.framing.decoded)
            + self.held.as_ref().map_or(0, |b| b.len() as u64);
        SizeHint::with_exact(remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyError;
    use crate::test_util::{body_from_iter, body_in_frames, failing_body};
    use http_body_util::BodyExt;

    fn spec(len: u64, trailer: Option<ChecksumAlgorithm>) -> ChunkedSpec {
        ChunkedSpec { decoded_length: len, trailer, signed: None, verified: None }
    }

    async fn decode(wire: &[u8], frame: usize, s: ChunkedSpec) -> Result<Bytes, ProxyError> {
        AwsChunkedBody::new(body_in_frames(wire, frame), s).collect().await.map(|c| c.to_bytes())
    }

    const BOTO3_SMALL: &[u8] = b"c\r\nhello world\n\r\n0\r\nx-amz-checksum-crc32:rwg7LQ==\r\n\r\n";

    #[tokio::test]
    async fn the_body_boto3_sends_decodes_at_every_frame_boundary() {
        for frame in 1..=BOTO3_SMALL.len() {
            let out = decode(BOTO3_SMALL, frame, spec(12, Some(ChecksumAlgorithm::Crc32))).await.unwrap();
            assert_eq!(out, "hello world\n", "frame size {frame}");
        }
    }

    #[tokio::test]
    async fn a_wrong_trailer_checksum_is_bad_digest() {
        let wire = b"c\r\nhello world\n\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
        let e = decode(wire, 7, spec(12, Some(ChecksumAlgorithm::Crc32))).await.unwrap_err();
        assert_eq!(e.code(), "BadDigest");
    }

    #[tokio::test]
    async fn length_and_framing_errors_are_caught() {
        let crc = Some(ChecksumAlgorithm::Crc32);
        let cases: Vec<(&[u8], u64, &str)> = vec![
            (BOTO3_SMALL, 11, "IncompleteBody"),
            (BOTO3_SMALL, 13, "IncompleteBody"),
            (b"c\r\nhello world\n\r\n", 12, "IncompleteBody"),
            (b"zz\r\nhello\r\n0\r\n\r\n", 5, "IncompleteBody"),
            (b"5\r\nhelloXX0\r\n\r\n", 5, "IncompleteBody"),
            (b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32c:AAAAAA==\r\n\r\n", 5, "MalformedTrailerError"),
            (b"5\r\nhello\r\n0\r\n\r\n", 5, "MalformedTrailerError"),
            (b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\nEXTRA", 5, "IncompleteBody"),
            (b"2000000\r\n", 5, "InvalidChunkSizeError"),
        ];
        for (wire, len, code) in cases {
            let e = decode(wire, 3, spec(len, crc)).await.unwrap_err();
            assert_eq!(e.code(), code, "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[tokio::test]
    async fn a_body_without_trailer_is_accepted_when_none_was_declared() {
        let out = decode(b"5\r\nhello\r\n0\r\n\r\n", 4, spec(5, None)).await.unwrap();
        assert_eq!(out, "hello");
    }

    #[tokio::test]
    async fn the_last_data_is_held_back_until_the_checks_pass() {
        let mut b = AwsChunkedBody::new(
            body_from_iter(vec![
                &b"5\r\nhello\r\n"[..],
                b"5\r\nworld\r\n",
                b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
            ]),
            spec(10, Some(ChecksumAlgorithm::Crc32)),
        );
        let first = b.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "hello");
        assert_eq!(b.frame().await.unwrap().unwrap_err().code(), "BadDigest");
        assert!(b.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_client_disconnect_is_an_error_not_an_end() {
        let e = AwsChunkedBody::new(failing_body(vec![&b"5\r\nhel"[..]]), spec(5, None)).collect().await.unwrap_err();
        assert_eq!(e.code(), "IncompleteBody");
    }
}

#[cfg(test)]
mod signed_tests {
    //! Signed chunks against the AWS documentation's example ("Signature Calculations for the Authorization
    //! Header: Transferring Payload in Multiple Chunks"), and signed trailers cross-checked with aws-sigv4.
    use super::*;
    use crate::config::ClientCredential;
    use crate::error::ProxyError;
    use crate::sigv4::verify::{PayloadMode, RequestHead, Verifier};
    use crate::test_util::body_in_frames;
    use crate::util::secret::SecretString;
    use http::{HeaderMap, HeaderValue, Method, Uri};
    use http_body_util::BodyExt;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    const SIGS: [&str; 3] = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ];

    fn verifier() -> Verifier {
        Verifier::new(
            &[ClientCredential {
                access_key_id: AKID.into(),
                secret_access_key: SecretString::new(SECRET.into()),
                buckets: None,
                bucket_admin: false,
            }],
            "us-east-1",
            false,
        )
    }

    /// The example request head; its signature is the seed of the chain.
    fn example_context(
        payload: &str,
        signed_headers: &str,
        signature: &str,
        extra: &[(&str, &str)],
    ) -> ChunkSigningContext {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("content-length", "66824"),
            ("x-amz-content-sha256", payload),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed_headers},Signature={signature}"
        );
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        let uri: Uri = "/examplebucket/chunkObject.txt".parse().unwrap();
        let now = crate::util::time::parse_amz_date("20130524T000100Z").unwrap();
        let a = verifier()
            .verify(&RequestHead { method: &Method::PUT, uri: &uri, headers: &h, vhost_bucket: None }, now)
            .unwrap();
        assert!(matches!(a.payload, PayloadMode::StreamingSigned | PayloadMode::StreamingSignedTrailer));
        a.chunk_signing.unwrap()
    }

    fn example_body(sigs: &[&str]) -> Vec<u8> {
        let mut w = Vec::new();
        for (size, sig) in [(65536usize, sigs[0]), (1024, sigs[1])] {
            w.extend_from_slice(format!("{size:x};chunk-signature={sig}\r\n").as_bytes());
            w.extend(std::iter::repeat_n(b'a', size));
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(format!("0;chunk-signature={}\r\n\r\n", sigs[2]).as_bytes());
        w
    }

    const SIGNED_HEADERS: &str = "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class";

    async fn decode(
        wire: &[u8],
        ctx: ChunkSigningContext,
        trailer: Option<ChecksumAlgorithm>,
        signed_trailer: bool,
    ) -> Result<Bytes, ProxyError> {
        let spec = ChunkedSpec {
            decoded_length: 66560,
            trailer,
            signed: Some(ChunkChain { ctx, signed_trailer }),
            verified: None,
        };
        AwsChunkedBody::new(body_in_frames(wire, 9000), spec).collect().await.map(|c| c.to_bytes())
    }

    #[tokio::test]
    async fn the_aws_signed_chunk_example_verifies_chunk_by_chunk() {
        let ctx = example_context("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", SIGNED_HEADERS, SEED, &[]);
        let out = decode(&example_body(&SIGS), ctx, None, false).await.unwrap();
        assert_eq!(out.len(), 66560);
        assert!(out.iter().all(|b| *b == b'a'));
    }

    #[tokio::test]
    async fn a_wrong_chunk_signature_or_altered_data_breaks_the_chain() {
        let mut sigs = SIGS;
        let wrong = SIGS[1].replace('0', "1");
        sigs[1] = &wrong;
        let ctx = example_context("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", SIGNED_HEADERS, SEED, &[]);
        assert_eq!(decode(&example_body(&sigs), ctx, None, false).await.unwrap_err().code(), "SignatureDoesNotMatch");

        let mut wire = example_body(&SIGS);
        wire[100] = b'b'; // same length, different data
        let ctx = example_context("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", SIGNED_HEADERS, SEED, &[]);
        assert_eq!(decode(&wire, ctx, None, false).await.unwrap_err().code(), "SignatureDoesNotMatch");

        let unsigned =
            String::from_utf8_lossy(&example_body(&SIGS)).replacen(&format!(";chunk-signature={}", SIGS[0]), "", 1);
        let ctx = example_context("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", SIGNED_HEADERS, SEED, &[]);
        assert_eq!(decode(unsigned.as_bytes(), ctx, None, false).await.unwrap_err().code(), "IncompleteBody");
    }

    /// Signs a chain with aws-sigv4 (an independent implementation) and checks the decoder accepts it, trailer
    /// included, and refuses a wrong trailer signature or a wrong trailer value.
    #[tokio::test]
    async fn signed_trailers_signed_by_aws_sigv4_verify() {
        use aws_credential_types::Credentials;
        use aws_sigv4::sign::v4;
        use aws_smithy_runtime_api::client::identity::Identity;
        let identity: Identity = Credentials::new(AKID, SECRET, None, None, "t").into();
        let time = crate::util::time::parse_amz_date("20130524T000000Z").unwrap();
        let params = v4::SigningParams::<()>::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(time)
            .settings(())
            .build()
            .unwrap();
        // Seed: sign the request head as an SDK would, with our verifier's view of it.
        let signed_headers = format!("{SIGNED_HEADERS};x-amz-trailer");
        let payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
        let seed = {
            // The string to sign the verifier builds for this head (it reports it on a mismatch) gives the seed.
            let mut h = HeaderMap::new();
            for (k, v) in [
                ("host", "s3.amazonaws.com"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("content-encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", "66560"),
                ("content-length", "66824"),
                ("x-amz-content-sha256", payload),
                ("x-amz-trailer", "x-amz-checksum-crc32c"),
                (
                    "authorization",
                    &format!(
                        "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed_headers},Signature={}",
                        "0".repeat(64)
                    ),
                ),
            ] {
                h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            let uri: Uri = "/examplebucket/chunkObject.txt".parse().unwrap();
            let e = verifier()
                .verify(&RequestHead { method: &Method::PUT, uri: &uri, headers: &h, vhost_bucket: None }, time)
                .unwrap_err();
            let AuthError::SignatureDoesNotMatch(m) = e else { panic!() };
            let key = crate::sigv4::SigningKey::derive(SECRET, time, "us-east-1");
            key.sign(m.string_to_sign.as_bytes()).to_hex()
        };
        let ctx = example_context(payload, &signed_headers, &seed, &[("x-amz-trailer", "x-amz-checksum-crc32c")]);

        let data = vec![b'a'; 66560];
        let mut prev = seed.clone();
        let mut wire = Vec::new();
        for chunk in [&data[..65536], &data[65536..]] {
            let sig = v4::sign_chunk(&Bytes::copy_from_slice(chunk), &prev, &params).unwrap().signature().to_owned();
            wire.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
            prev = sig;
        }
        let final_sig = v4::sign_chunk(&Bytes::new(), &prev, &params).unwrap().signature().to_owned();
        let mut crc = Checksummer::new(ChecksumAlgorithm::Crc32c);
        crc.update(&data);
        let crc = crate::s3::checksum::encode_value(&crc.finalize());
        let mut trailers = aws_smithy_runtime_api::http::Headers::new();
        trailers.insert("x-amz-checksum-crc32c", crc.clone());
        let trailer_sig = v4::sign_trailer(&trailers, &final_sig, &params).unwrap().signature().to_owned();
        let build = |crc: &str, tsig: &str| {
            let mut w = wire.clone();
            w.extend_from_slice(format!("0;chunk-signature={final_sig}\r\nx-amz-checksum-crc32c:{crc}\r\nx-amz-trailer-signature:{tsig}\r\n\r\n").as_bytes());
            w
        };
        let out = decode(&build(&crc, &trailer_sig), ctx, Some(ChecksumAlgorithm::Crc32c), true).await.unwrap();
        assert_eq!(out.len(), 66560);

        let ctx = example_context(payload, &signed_headers, &seed, &[("x-amz-trailer", "x-amz-checksum-crc32c")]);
        let bad_sig = trailer_sig.replace('a', "b");
        let e = decode(&build(&crc, &bad_sig), ctx, Some(ChecksumAlgorithm::Crc32c), true).await.unwrap_err();
        assert_eq!(e.code(), "SignatureDoesNotMatch");
        let ctx = example_context(payload, &signed_headers, &seed, &[("x-amz-trailer", "x-amz-checksum-crc32c")]);
        let e = decode(&build("AAAAAA==", &trailer_sig), ctx, Some(ChecksumAlgorithm::Crc32c), true).await.unwrap_err();
        assert_eq!(e.code(), "SignatureDoesNotMatch", "the trailer value is signed");
    }

    #[tokio::test]
    async fn small_chunks_before_the_last_are_refused_for_signed_bodies() {
        use aws_credential_types::Credentials;
        use aws_sigv4::sign::v4;
        use aws_smithy_runtime_api::client::identity::Identity;
        let identity: Identity = Credentials::new(AKID, SECRET, None, None, "t").into();
        let time = crate::util::time::parse_amz_date("20130524T000000Z").unwrap();
        let params = v4::SigningParams::<()>::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(time)
            .settings(())
            .build()
            .unwrap();
        let mut prev = SEED.to_owned();
        let mut wire = Vec::new();
        for chunk in [vec![b'a'; 1000], vec![b'a'; 65560]] {
            let sig = v4::sign_chunk(&Bytes::from(chunk.clone()), &prev, &params).unwrap().signature().to_owned();
            wire.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(&chunk);
            wire.extend_from_slice(b"\r\n");
            prev = sig;
        }
        let ctx = example_context("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", SIGNED_HEADERS, SEED, &[]);
        assert_eq!(decode(&wire, ctx, None, false).await.unwrap_err().code(), "InvalidChunkSizeError");
    }
}
