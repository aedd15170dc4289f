//! Helpers for unit tests: bodies with chosen frame boundaries and scripted errors, and the S3 code a module's
//! own error becomes at the boundary.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::error::ProxyError;

/// A body that yields the given frames, in order; `None` entries yield a `ClientBody` error.
pub struct FramesBody {
    frames: VecDeque<Option<Bytes>>,
}

impl Body for FramesBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        Poll::Ready(self.frames.pop_front().map(|f| match f {
            Some(b) => Ok(Frame::data(b)),
            None => Err(crate::s3::error::BodyError::ClientBody("scripted failure".into()).into()),
        }))
    }
}

/// A body made of the given byte slices, one frame each.
pub fn body_from_iter<T: AsRef<[u8]>>(parts: Vec<T>) -> FramesBody {
    FramesBody { frames: parts.into_iter().map(|p| Some(Bytes::copy_from_slice(p.as_ref()))).collect() }
}

/// Splits `data` into frames of `size` bytes.
pub fn body_in_frames(data: &[u8], size: usize) -> FramesBody {
    FramesBody { frames: data.chunks(size.max(1)).map(|c| Some(Bytes::copy_from_slice(c))).collect() }
}

/// A body that fails after the given frames.
pub fn failing_body<T: AsRef<[u8]>>(parts: Vec<T>) -> FramesBody {
    let mut b = body_from_iter(parts);
    b.frames.push_back(None);
    b
}

/// What a module's own error becomes at the request boundary: the S3 code a client would see.
pub trait AtBoundary {
    fn code(&self) -> String;
}

impl<E: Clone + Into<ProxyError>> AtBoundary for E {
    fn code(&self) -> String {
        self.clone().into().code().to_owned()
    }
}
