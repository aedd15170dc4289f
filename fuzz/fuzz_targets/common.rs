//! Shared by the fuzz targets: a body of the fuzzer's frames, and polling a body to its end without a runtime
//! (every inner body here is always ready).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame};
use s3crypt::error::ProxyError;

/// Frames handed over one by one.
pub struct Frames(pub VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = ProxyError; // never produced; the transforms expect the proxy's error type
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// Splits `data` into frames whose sizes come from `sizes` (cycled; 0 means 1).
pub fn frames(data: &[u8], sizes: &[u8]) -> Frames {
    let data = Bytes::copy_from_slice(data);
    let mut out = VecDeque::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let s = sizes.get(i % sizes.len().max(1)).map_or(4096, |&b| usize::from(b).max(1) * 97);
        let end = (at + s).min(data.len());
        out.push_back(data.slice(at..end));
        at = end;
        i += 1;
    }
    Frames(out)
}

/// Polls `body` to its end: the data, or the first error. Panics if the body stalls (it must not: its input is
/// always ready).
pub fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Result<Vec<u8>, B::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    for _ in 0..10_000_000 {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Ok(out),
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Poll::Pending => panic!("a body over ready input returned Pending"),
        }
    }
    panic!("a body did not end");
}
