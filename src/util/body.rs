//! Shared pieces of the body transforms.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Body;

use crate::error::ProxyError;

/// Polls `inner` until it ends, after all the data a transform expected has arrived: its end-of-stream checks run
/// now. More data is an error (the body is longer than declared), as is an error of `inner`.
pub fn poll_end<B>(mut inner: Pin<&mut B>, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>>
where
    B: Body<Data = Bytes, Error = ProxyError>,
{
    loop {
        match ready!(inner.as_mut().poll_frame(cx)) {
            Some(Ok(f)) => {
                if f.data_ref().is_some_and(|d| !d.is_empty()) {
                    return Poll::Ready(Err(ProxyError::IncompleteBody("body longer than its declared length")));
                }
            }
            Some(Err(e)) => return Poll::Ready(Err(e)),
            None => return Poll::Ready(Ok(())),
        }
    }
}

pin_project_lite::pin_project! {
    /// A client request body that fails with `RequestTimeout` when no byte arrives for `idle` (a stalled or
    /// slowloris upload): the upstream request is then aborted, nothing is stored, and the client gets S3's
    /// `RequestTimeout`. The deadline restarts with every frame.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: tokio::time::Sleep,
        idle: std::time::Duration,
        state: IdleState,
    }
}

enum IdleState {
    Streaming,
    Done,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: std::time::Duration) -> Self {
        IdleTimeout { inner, deadline: tokio::time::sleep(idle), idle, state: IdleState::Streaming }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<ProxyError>,
{
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ProxyError>>> {
        let mut this = self.project();
        match this.state {
            IdleState::Done => Poll::Ready(None),
            IdleState::Streaming => match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.deadline.as_mut().reset(tokio::time::Instant::now() + *this.idle);
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.state = IdleState::Done;
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => {
                    *this.state = IdleState::Done;
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    ready!(this.deadline.poll(cx));
                    *this.state = IdleState::Done;
                    Poll::Ready(Some(Err(ProxyError::RequestTimeout)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, IdleState::Done) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
