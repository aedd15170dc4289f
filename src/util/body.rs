//! Shared pieces of the body transforms.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Body;

/// Polls `inner` until it ends, after all the data a transform expected has arrived: its end-of-stream checks run
/// now. More data is an error (the body is longer than declared: `too_long`), as is an error of `inner`.
pub fn poll_end<B, E>(mut inner: Pin<&mut B>, cx: &mut Context<'_>, too_long: impl FnOnce() -> E) -> Poll<Result<(), E>>
where
    B: Body<Data = Bytes, Error = E>,
{
    loop {
        match ready!(inner.as_mut().poll_frame(cx)) {
            Some(Ok(f)) => {
                if f.data_ref().is_some_and(|d| !d.is_empty()) {
                    return Poll::Ready(Err(too_long()));
                }
            }
            Some(Err(e)) => return Poll::Ready(Err(e)),
            None => return Poll::Ready(Ok(())),
        }
    }
}

pin_project_lite::pin_project! {
    /// A body that fails when its source sends nothing for `idle` while it is being waited on: a stalled or
    /// slowloris upload (`RequestTimeout`), a store that stops mid-response (`UpstreamTimeout`). Only the time
    /// spent waiting counts: while the consumer is not asking (backpressure from the other side) the clock is
    /// stopped, and it restarts when the consumer asks again.
    pub struct IdleTimeout<B, E> {
        #[pin]
        inner: B,
        // Boxed so the body stays `Unpin` when `B` is (callers `.frame().await` it).
        deadline: Pin<Box<tokio::time::Sleep>>,
        idle: std::time::Duration,
        error: E,
        state: IdleState,
    }
}

enum IdleState {
    /// The last poll got a frame: the next one starts a new wait.
    Ready,
    /// The last poll was pending: the deadline runs.
    Waiting,
    Done,
}

impl<B, E> IdleTimeout<B, E> {
    /// `error` is what the body fails with at the deadline.
    pub fn new(inner: B, idle: std::time::Duration, error: E) -> Self {
        IdleTimeout { inner, deadline: Box::pin(tokio::time::sleep(idle)), idle, error, state: IdleState::Ready }
    }
}

impl<B, E> Body for IdleTimeout<B, E>
where
    B: Body<Data = Bytes>,
    B::Error: Into<E>,
    E: Clone,
{
    type Data = Bytes;
    type Error = E;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, E>>> {
        let mut this = self.project();
        if matches!(this.state, IdleState::Done) {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.state = IdleState::Ready;
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
                if matches!(this.state, IdleState::Ready) {
                    *this.state = IdleState::Waiting;
                    this.deadline.as_mut().reset(tokio::time::Instant::now() + *this.idle);
                }
                ready!(this.deadline.as_mut().poll(cx));
                *this.state = IdleState::Done;
                Poll::Ready(Some(Err(this.error.clone())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, IdleState::Done) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
