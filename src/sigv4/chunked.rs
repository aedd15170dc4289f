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

use crate::error::ProxyError;
use crate::s3::checksum::{ChecksumAlgorithm, Checksummer};

/// Longest chunk-size line accepted (`<hex>[;ext]\r\n`).
pub const MAX_CHUNK_HEADER: usize = 4096;
/// Largest trailer block accepted.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Largest chunk accepted (minio uses the same cap).
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;

/// What the request head declared about the aws-chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedSpec {
    /// `x-amz-decoded-content-length`.
    pub decoded_length: u64,
    /// The checksum named by `x-amz-trailer`, if any.
    pub trailer: Option<ChecksumAlgorithm>,
}

impl ChunkedSpec {
    /// Reads the spec from request headers; errors are the ones S3 answers.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<ChunkedSpec, ProxyError> {
        use crate::s3::headers::{X_AMZ_DECODED_CONTENT_LENGTH, X_AMZ_TRAILER, header_str};
        let decoded_length = header_str(headers, &X_AMZ_DECODED_CONTENT_LENGTH)
            .ok_or(ProxyError::MissingContentLength)?
            .trim()
            .parse::<u64>()
            .map_err(|_| ProxyError::InvalidArgument("x-amz-decoded-content-length is not a number".into()))?;
        let trailer = match header_str(headers, &X_AMZ_TRAILER) {
            None => None,
            Some(name) => Some(ChecksumAlgorithm::from_header_name(name.trim()).ok_or_else(|| {
                ProxyError::InvalidRequest("The value specified in the x-amz-trailer header is not supported".into())
            })?),
        };
        Ok(ChunkedSpec { decoded_length, trailer })
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
}

pin_project! {
    /// Decodes an aws-chunked body into the object data.
    pub struct AwsChunkedBody<B> {
        #[pin]
        inner: B,
        framing: Framing,
        input: Bytes,
        held: Option<Bytes>,
    }
}

impl<B> AwsChunkedBody<B> {
    pub fn new(inner: B, spec: ChunkedSpec) -> Self {
        AwsChunkedBody {
            inner,
            framing: Framing {
                phase: Phase::Header,
                checksum: spec.trailer.map(Checksummer::new),
                spec,
                line: BytesMut::new(),
                decoded: 0,
                trailer_value: None,
                trailer_bytes: 0,
            },
            input: Bytes::new(),
            held: None,
        }
    }
}

/// Takes bytes from `input` up to and including the next `\n` into `line`. Returns true when the line is
/// complete.
fn take_line(input: &mut Bytes, line: &mut BytesMut, max: usize) -> Result<bool, ProxyError> {
    match input.iter().position(|b| *b == b'\n') {
        Some(pos) => {
            line.extend_from_slice(&input[..=pos]);
            input.advance(pos + 1);
            if line.len() > max {
                return Err(ProxyError::MalformedChunkedBody("line too long"));
            }
            Ok(true)
        }
        None => {
            line.extend_from_slice(input);
            input.clear();
            if line.len() > max {
                return Err(ProxyError::MalformedChunkedBody("line too long"));
            }
            Ok(false)
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ProxyError> {
    let line = line.strip_suffix(b"\r\n").ok_or(ProxyError::MalformedChunkedBody("chunk header without CRLF"))?;
    let size_part = match line.iter().position(|b| *b == b';') {
        Some(p) => &line[..p],
        None => line,
    };
    if size_part.is_empty() || size_part.len() > 16 || !size_part.iter().all(u8::is_ascii_hexdigit) {
        return Err(ProxyError::MalformedChunkedBody("chunk size is not hexadecimal"));
    }
    let text = std::str::from_utf8(size_part).map_err(|_| ProxyError::MalformedChunkedBody("chunk size"))?;
    let size = u64::from_str_radix(text, 16).map_err(|_| ProxyError::MalformedChunkedBody("chunk size"))?;
    if size > MAX_CHUNK_SIZE {
        return Err(ProxyError::InvalidChunkSize("chunk larger than 16 MiB"));
    }
    Ok(size)
}

impl Framing {
    /// Advances the framing over buffered input; returns decoded data when some is available.
    fn step(&mut self, input: &mut Bytes) -> Result<Option<Bytes>, ProxyError> {
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            match &mut self.phase {
                Phase::Header => {
                    if !take_line(input, &mut self.line, MAX_CHUNK_HEADER)? {
                        return Ok(None);
                    }
                    let size = parse_chunk_size(&self.line)?;
                    self.line.clear();
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
                        return Err(ProxyError::IncompleteBody("more data than x-amz-decoded-content-length"));
                    }
                    if let Some(c) = self.checksum.as_mut() {
                        c.update(&data);
                    }
                    return Ok(Some(data));
                }
                Phase::DataEnd => {
                    let n = (2 - self.line.len()).min(input.len());
                    self.line.extend_from_slice(&input.split_to(n));
                    if self.line.len() == 2 {
                        if &self.line[..] != b"\r\n" {
                            return Err(ProxyError::MalformedChunkedBody("chunk data not followed by CRLF"));
                        }
                        self.line.clear();
                        self.phase = Phase::Header;
                    }
                }
                Phase::Trailer => {
                    let before = input.len();
                    let complete = take_line(input, &mut self.line, MAX_TRAILER_BYTES)?;
                    self.trailer_bytes += before - input.len();
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(ProxyError::MalformedTrailer("trailer block too large".into()));
                    }
                    if !complete {
                        return Ok(None);
                    }
                    let this_line = std::mem::take(&mut self.line);
                    self.trailer_line(&this_line)?;
                }
                Phase::Finished | Phase::Done => {
                    return Err(ProxyError::MalformedChunkedBody("data after the final chunk"));
                }
            }
        }
    }

    /// One complete trailer line (with its line ending); an empty line ends the trailer block.
    fn trailer_line(&mut self, line: &[u8]) -> Result<(), ProxyError> {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            self.phase = Phase::Finished;
            return Ok(());
        }
        let text =
            std::str::from_utf8(content).map_err(|_| ProxyError::MalformedTrailer("trailer is not text".into()))?;
        let (name, value) =
            text.split_once(':').ok_or_else(|| ProxyError::MalformedTrailer("trailer line without ':'".into()))?;
        let declared = self.spec.trailer.map(ChecksumAlgorithm::header_name);
        if declared.is_none_or(|d| !d.eq_ignore_ascii_case(name.trim())) || self.trailer_value.is_some() {
            return Err(ProxyError::MalformedTrailer(
                "The request contained trailing data that was not well-formed or did not conform to our published \
                 schema."
                    .into(),
            ));
        }
        self.trailer_value = Some(value.trim().to_owned());
        Ok(())
    }

    /// Checks run when the body has ended: framing complete, length, trailer checksum.
    fn finish(&mut self) -> Result<(), ProxyError> {
        let finished = matches!(self.phase, Phase::Finished);
        self.phase = Phase::Done;
        if !finished {
            return Err(ProxyError::IncompleteBody("aws-chunked body ended before its final chunk"));
        }
        if self.decoded != self.spec.decoded_length {
            return Err(ProxyError::IncompleteBody("decoded length differs from x-amz-decoded-content-length"));
        }
        match (self.checksum.take(), self.trailer_value.take()) {
            (Some(c), Some(value)) => {
                let alg = c.algorithm();
                let expected = alg.decode_value(&value)?;
                if c.finalize() != expected {
                    return Err(ProxyError::BadDigest { algorithm: alg.display_name() });
                }
                Ok(())
            }
            (Some(_), None) => Err(ProxyError::MalformedTrailer(
                "The x-amz-trailer header names a checksum the body does not carry.".into(),
            )),
            (None, _) => Ok(()),
        }
    }
}

impl<B> Body for AwsChunkedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<ProxyError>,
{
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let mut this = self.project();
        loop {
            if matches!(this.framing.phase, Phase::Done) {
                return Poll::Ready(None);
            }
            match this.framing.step(this.input) {
                Err(e) => {
                    this.framing.phase = Phase::Done;
                    this.held.take();
                    return Poll::Ready(Some(Err(e)));
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
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    return match this.framing.finish() {
                        Ok(()) => Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b)))),
                        Err(e) => {
                            this.held.take();
                            Poll::Ready(Some(Err(e)))
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
    use crate::test_util::{body_from_iter, body_in_frames, failing_body};
    use http_body_util::BodyExt;

    fn spec(len: u64, trailer: Option<ChecksumAlgorithm>) -> ChunkedSpec {
        ChunkedSpec { decoded_length: len, trailer }
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
