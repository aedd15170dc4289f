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
