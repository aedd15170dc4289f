//! Raw (not aws-chunked) request bodies: the signed SHA-256 is checked as the body streams, and the last
//! data frame is held back until the check has passed, so the upstream never receives the declared
//! `Content-Length` of a body that turns out to be wrong and stores nothing.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};

use crate::error::ProxyError;

/// Maps a transport error of the client's body.
pub fn client_body_error(e: hyper::Error) -> ProxyError {
    if e.is_timeout() {
        ProxyError::RequestTimeout
    } else {
        ProxyError::ClientBody(e.to_string())
    }
}

enum State {
    Streaming,
    Done,
}

pin_project! {
    /// A raw body checked against an expected SHA-256 (or just passed through when `expected` is `None`),
    /// releasing its final frame only after the check.
    pub struct VerifiedBody<B> {
        #[pin]
        inner: B,
        state: State,
        hasher: Option<Sha256>,
        expected: Option<[u8; 32]>,
        held: Option<Bytes>,
    }
}

impl<B> VerifiedBody<B> {
    pub fn new(inner: B, expected_sha256: Option<[u8; 32]>) -> Self {
        VerifiedBody {
            inner,
            state: State::Streaming,
            hasher: expected_sha256.map(|_| Sha256::new()),
            expected: expected_sha256,
            held: None,
        }
    }
}

impl<B> Body for VerifiedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<ProxyError>,
{
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let mut this = self.project();
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Streaming => match ready!(this.inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        }; // HTTP trailers are not object data
                        if data.is_empty() {
                            continue;
                        }
                        if let Some(h) = this.hasher.as_mut() {
                            h.update(&data);
                        }
                        if let Some(prev) = this.held.replace(data) {
                            return Poll::Ready(Some(Ok(Frame::data(prev))));
                        }
                    }
                    Some(Err(e)) => {
                        *this.state = State::Done;
                        this.held.take();
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    None => {
                        *this.state = State::Done;
                        if let (Some(h), Some(expected)) =
                            (this.hasher.take(), this.expected.as_ref())
                        {
                            let computed: [u8; 32] = h.finalize().into();
                            if &computed != expected {
                                this.held.take();
                                return Poll::Ready(Some(Err(ProxyError::ContentSha256Mismatch {
                                    client: hex::encode(expected),
                                    computed: hex::encode(computed),
                                })));
                            }
                        }
                        return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let held = self.held.as_ref().map_or(0, |b| b.len() as u64);
        hint.set_lower(hint.lower().saturating_add(held));
        if let Some(u) = hint.upper() {
            hint.set_upper(u.saturating_add(held));
        }
        hint
    }
}

impl From<hyper::Error> for ProxyError {
    fn from(e: hyper::Error) -> Self {
        client_body_error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::body_from_iter;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_matching_its_hash_passes_through_whole() {
        let h: [u8; 32] = Sha256::digest(b"hello world").into();
        let b = VerifiedBody::new(body_from_iter(vec![&b"hello"[..], b" ", b"world"]), Some(h));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "hello world");
    }

    #[tokio::test]
    async fn a_body_not_matching_its_hash_fails_before_its_last_bytes() {
        let h: [u8; 32] = Sha256::digest(b"hello world").into();
        let mut b = VerifiedBody::new(body_from_iter(vec![&b"hello"[..], b" ", b"wxrld"]), Some(h));
        let mut seen = Vec::new();
        loop {
            match b.frame().await {
                Some(Ok(f)) => seen.extend_from_slice(&f.into_data().unwrap()),
                Some(Err(e)) => {
                    assert_eq!(e.code(), "XAmzContentSHA256Mismatch");
                    break;
                }
                None => panic!("mismatch not detected"),
            }
        }
        assert_eq!(seen, b"hello ", "the final frame was held back");
    }
}
