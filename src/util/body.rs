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

/// Request bodies of at most this many bytes are read to their end when a request is answered without reading
/// them (an early error): the connection stays usable, and the client, still sending, is not cut off by a reset
/// before it reads the answer.
pub const DRAIN_LIMIT: u64 = 1024 * 1024;
/// How long such a drain may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// A request body that, dropped unread, reads the rest of itself in the background when that rest is small
/// ([`DRAIN_LIMIT`], [`DRAIN_TIME`]; a chunked body of unknown length until it passes the limit); larger bodies are
/// dropped (the connection then closes).
pub struct DrainOnDrop<B: Body + Send + Unpin + 'static> {
    inner: Option<B>,
    /// How far it was read: a body read from at all is not drained (a handler that failed mid-body, a stalled
    /// client).
    progress: BodyProgress,
}

/// How far a request body got, for the answer to say whether the connection can be reused.
#[derive(Clone, Debug)]
pub struct BodyProgress {
    state: std::sync::Arc<std::sync::atomic::AtomicU8>,
    small: bool,
}

const UNREAD: u8 = 0;
const READING: u8 = 1;
const DONE: u8 = 2;

impl BodyProgress {
    /// Whether the connection stays usable after an answer sent now: the body was read to its end, or it was not
    /// read at all and is small enough to be drained.
    pub fn keeps_connection(&self) -> bool {
        match self.state.load(std::sync::atomic::Ordering::Acquire) {
            DONE => true,
            UNREAD => self.small,
            _ => false,
        }
    }

    /// The body was read to its end.
    pub fn finished(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Acquire) == DONE
    }

    fn set(&self, s: u8) {
        self.state.store(s, std::sync::atomic::Ordering::Release);
    }
}

impl<B: Body + Send + Unpin + 'static> DrainOnDrop<B> {
    pub fn new(inner: B) -> Self {
        // A chunked body (no declared length) is drained too, up to the limit: SDKs send even empty bodies so.
        let small = inner.size_hint().upper().is_none_or(|n| n <= DRAIN_LIMIT);
        let progress = BodyProgress { state: Default::default(), small };
        if inner.is_end_stream() {
            progress.set(DONE);
        }
        DrainOnDrop { inner: Some(inner), progress }
    }

    /// What the answer needs to know about this body.
    pub fn progress(&self) -> BodyProgress {
        self.progress.clone()
    }
}

impl<B: Body + Send + Unpin + 'static> Drop for DrainOnDrop<B> {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else { return };
        if self.progress.state.load(std::sync::atomic::Ordering::Acquire) != UNREAD {
            return;
        }
        let small = body.size_hint().upper().is_none_or(|n| n <= DRAIN_LIMIT);
        if body.is_end_stream() || !small {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    read += frame.data_ref().map_or(0, |d| bytes::Buf::remaining(d) as u64);
                    if read > DRAIN_LIMIT {
                        break; // more than a small body: dropped, the connection closes
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}

impl<B: Body + Send + Unpin + 'static> Body for DrainOnDrop<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let out = match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        };
        self.progress.set(if matches!(out, Poll::Ready(None)) { DONE } else { READING });
        out
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_default()
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

pin_project_lite::pin_project! {
    /// A response body that holds something (a slot under the in-flight request limit) until it has been sent
    /// whole, failed, or been dropped: a streaming response counts as in flight until its last byte.
    pub struct Held<B, T> {
        #[pin]
        inner: B,
        held: Option<T>,
    }
}

impl<B, T> Held<B, T> {
    pub fn new(inner: B, held: T) -> Self {
        Held { inner, held: Some(held) }
    }
}

impl<B: Body, T> Body for Held<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = ready!(this.inner.poll_frame(cx));
        if !matches!(polled, Some(Ok(_))) {
            *this.held = None;
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
