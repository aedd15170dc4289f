//! aws-chunked *encoding* of upstream request bodies (`STREAMING-UNSIGNED-PAYLOAD-TRAILER` with a CRC32
//! trailer). The store then rejects any upload whose body does not end with the final chunk and a matching
//! checksum: an upload the proxy aborts (a client check failed) can never be stored, even by stores that keep
//! whatever arrived before a connection closed (SeaweedFS stores an empty object when a plain PUT is cut before
//! its first body byte). It also protects the proxy→store leg with a checksum of what was sent.
//!
//! Chunks have a fixed size, so the encoded length is known up front and sent as `Content-Length`. Data is
//! passed on as slices of the incoming frames (no copy); only the chunk framing is generated.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::s3::checksum::{ChecksumAlgorithm, Checksummer, encode_value};
use crate::s3::error::BodyError;

/// Plaintext bytes per upstream aws-chunked chunk.
pub const UPSTREAM_CHUNK: u64 = 64 * 1024;
const TRAILER_NAME: &str = "x-amz-checksum-crc32";
/// `x-amz-checksum-crc32:` + 8 base64 characters + CRLF + the final CRLF.
const TRAILER_LEN: u64 = (TRAILER_NAME.len() + 1 + 8 + 2 + 2) as u64;

fn hex_len(n: u64) -> u64 {
    let mut digits = 1;
    let mut v = n >> 4;
    while v > 0 {
        digits += 1;
        v >>= 4;
    }
    digits
}

/// The encoded length of `decoded` bytes.
pub fn encoded_length(decoded: u64) -> u64 {
    let full = decoded / UPSTREAM_CHUNK;
    let rem = decoded % UPSTREAM_CHUNK;
    let mut len = full * (hex_len(UPSTREAM_CHUNK) + 2 + UPSTREAM_CHUNK + 2);
    if rem > 0 {
        len += hex_len(rem) + 2 + rem + 2;
    }
    len + 3 + TRAILER_LEN
}

/// The trailer header name the encoder writes (for `x-amz-trailer`).
pub fn trailer_header() -> &'static str {
    TRAILER_NAME
}

enum State {
    /// Before the next chunk header.
    ChunkStart,
    /// Inside a chunk with this many data bytes left.
    InChunk { left: u64 },
    /// Everything sent.
    Done,
}

pin_project! {
    /// Encodes exactly `decoded` bytes of `inner` as aws-chunked with a CRC32 trailer.
    pub struct AwsChunkedEncoder<B> {
        #[pin]
        inner: B,
        state: State,
        pending: Bytes,
        decoded: u64,
        sent: u64,
        crc: Option<Checksummer>,
        inner_done: bool,
    }
}

impl<B> AwsChunkedEncoder<B> {
    pub fn new(inner: B, decoded: u64) -> Self {
        AwsChunkedEncoder {
            inner,
            state: State::ChunkStart,
            pending: Bytes::new(),
            decoded,
            sent: 0,
            crc: Some(Checksummer::new(ChecksumAlgorithm::Crc32)),
            inner_done: false,
        }
    }
}

impl<B> Body for AwsChunkedEncoder<B>
where
    B: Body<Data = Bytes>,
    B::Error: From<BodyError>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::ChunkStart => {
                    let left = *this.decoded - *this.sent;
                    if left == 0 {
                        // All data sent: wait for the inner body to end cleanly (its end-of-stream checks),
                        // then send the final chunk and the trailer.
                        if !*this.inner_done {
                            if let Err(e) =
                                ready!(crate::util::body::poll_end(this.inner.as_mut(), cx, || BodyError::too_long()
                                    .into()))
                            {
                                *this.state = State::Done;
                                return Poll::Ready(Some(Err(e)));
                            }
                            *this.inner_done = true;
                        }
                        let crc = this.crc.take().map(Checksummer::finalize).unwrap_or_default();
                        *this.state = State::Done;
                        let tail = format!("0\r\n{TRAILER_NAME}:{}\r\n\r\n", encode_value(&crc));
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
                    }
                    let size = left.min(UPSTREAM_CHUNK);
                    *this.state = State::InChunk { left: size };
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!("{size:x}\r\n"))))));
                }
                State::InChunk { left } => {
                    if *left == 0 {
                        *this.state = State::ChunkStart;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"\r\n")))));
                    }
                    if this.pending.is_empty() {
                        match ready!(this.inner.as_mut().poll_frame(cx)) {
                            Some(Ok(f)) => {
                                if let Ok(d) = f.into_data() {
                                    *this.pending = d;
                                }
                                continue;
                            }
                            Some(Err(e)) => {
                                *this.state = State::Done;
                                return Poll::Ready(Some(Err(e)));
                            }
                            None => {
                                *this.state = State::Done;
                                let short = BodyError::IncompleteBody("body shorter than its declared length");
                                return Poll::Ready(Some(Err(short.into())));
                            }
                        }
                    }
                    let n = usize::try_from((*left).min(this.pending.len() as u64)).unwrap_or(this.pending.len());
                    // The last slice of a frame takes the frame itself (its memory is released with it).
                    let data =
                        if n == this.pending.len() { std::mem::take(this.pending) } else { this.pending.split_to(n) };
                    *left -= n as u64;
                    *this.sent += n as u64;
                    if let Some(c) = this.crc.as_mut() {
                        c.update(&data);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::chunked::{AwsChunkedBody, ChunkedSpec};
    use crate::test_util::{body_in_frames, failing_body};
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn what_the_encoder_writes_the_decoder_reads_back_with_the_announced_length() {
        for len in [0usize, 1, 65_535, 65_536, 65_537, 200_000, 3 * 65_536] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let wire =
                AwsChunkedEncoder::new(body_in_frames(&data, 10_000), len as u64).collect().await.unwrap().to_bytes();
            assert_eq!(wire.len() as u64, encoded_length(len as u64), "length of {len}");
            let spec = ChunkedSpec {
                decoded_length: len as u64,
                trailer: Some(ChecksumAlgorithm::Crc32),
                signed: None,
                verified: None,
            };
            let back = AwsChunkedBody::new(body_in_frames(&wire, 4_097), spec).collect().await.unwrap().to_bytes();
            assert_eq!(back, data, "round trip of {len}");
        }
    }

    #[tokio::test]
    async fn a_failing_inner_body_never_gets_its_final_chunk_written() {
        let mut e = AwsChunkedEncoder::new(failing_body(vec![&b"hello"[..]]), 10);
        let mut wire = Vec::new();
        while let Some(f) = e.frame().await {
            match f {
                Ok(f) => wire.extend_from_slice(&f.into_data().unwrap()),
                Err(_) => break,
            }
        }
        assert!(!String::from_utf8_lossy(&wire).contains("0\r\nx-amz-checksum"), "{wire:?}");
    }
}
