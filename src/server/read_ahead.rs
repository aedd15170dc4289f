//! `ReadAhead`: large socket reads under a TLS layer that asks for small ones.
//!
//! rustls reads at most 4 KiB per `read` (its deframer's fixed read size), so every 16 KiB TLS record of an upload
//! cost four `recvfrom` system calls: under a stream of uploads, the largest part of the proxy's kernel time
//! (docs/BENCHMARKS.md, "Where the CPU of a PUT goes"). Once a read fills what the reader asked for, `ReadAhead`
//! fills a buffer of its own with one read of up to [`READ_AHEAD`] bytes and hands it out from memory; until then
//! (a connection's first read, a small request) reads go straight to the reader's buffer and allocate nothing. The buffer lives only while data streams in: when the
//! socket has nothing more to give and its last read was short (small requests, an idle keep-alive connection) it
//! is freed; after a long read (mid-upload, the client merely slower than the proxy) it is kept for the next one,
//! so an upload reuses one allocation instead of faulting in fresh pages per read. Writes pass straight through
//! (vectored, as rustls writes its records).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes asked of the socket per read.
pub const READ_AHEAD: usize = 64 * 1024;

pin_project! {
    /// A socket read in chunks of up to [`READ_AHEAD`] bytes, whatever size its reader asks for.
    pub struct ReadAhead<T> {
        #[pin]
        inner: T,
        buf: BytesMut,
        // Bytes the last socket read returned.
        last_fill: usize,
    }
}

/// A read at least this long means data is streaming: the buffer is kept while the socket is momentarily empty.
const STREAMING: usize = 16 * 1024;

impl<T> ReadAhead<T> {
    pub fn new(inner: T) -> Self {
        ReadAhead { inner, buf: BytesMut::new(), last_fill: 0 }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Bytes of buffer held now (0 when idle).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl<T: AsyncRead> AsyncRead for ReadAhead<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if this.buf.is_empty() {
            if this.buf.capacity() == 0 && *this.last_fill < STREAMING {
                // Idle until now: most requests arrive whole in the reader's own buffer, so read into it directly
                // and allocate nothing. A read that fills it may be the start of a stream: read ahead from then.
                let asked = out.remaining();
                let before = out.filled().len();
                let read = this.inner.poll_read(cx, out);
                if let Poll::Ready(Ok(())) = read {
                    let n = out.filled().len() - before;
                    *this.last_fill = if n == asked && n > 0 { STREAMING } else { n };
                }
                return read;
            }
            if out.remaining() >= READ_AHEAD {
                // A reader asking for this much gains nothing from a copy.
                *this.buf = BytesMut::new();
                return this.inner.poll_read(cx, out);
            }
            // Reuses the drained allocation when there is one (the buffer is its only owner).
            this.buf.clear();
            this.buf.reserve(READ_AHEAD);
            match tokio_util::io::poll_read_buf(this.inner.as_mut(), cx, this.buf) {
                Poll::Pending => {
                    if *this.last_fill < STREAMING {
                        // Nothing to read now and nothing streaming: hold no memory while waiting.
                        *this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    *this.buf = BytesMut::new();
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n)) => *this.last_fill = n,
            }
        }
        let n = out.remaining().min(this.buf.len());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite> AsyncWrite for ReadAhead<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pin_project! {
        /// Counts the reads that reach the "socket".
        struct Counted<R> {
            #[pin]
            inner: R,
            reads: usize,
        }
    }

    impl<R: AsyncRead> AsyncRead for Counted<R> {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let this = self.project();
            *this.reads += 1;
            this.inner.poll_read(cx, out)
        }
    }

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_from_few_large_socket_reads() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = ReadAhead::new(Counted { inner: &data[..], reads: 0 });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        // 300,000 bytes in 4 KiB asks: 74 reads without read-ahead; with it the first direct, then one per 64 KiB,
        // plus the EOF.
        assert!(r.get_ref().reads <= 300_000 / READ_AHEAD + 3, "{} socket reads", r.get_ref().reads);
    }

    #[tokio::test]
    async fn a_small_request_is_read_into_the_readers_buffer_without_an_allocation() {
        let request = [5u8; 500];
        let mut r = ReadAhead::new(Counted { inner: &request[..], reads: 0 });
        let mut got = [0u8; 4096];
        let n = r.read(&mut got).await.unwrap();
        assert_eq!((n, r.get_ref().reads, r.buffered_capacity()), (500, 1, 0));
        assert_eq!(r.read(&mut got).await.unwrap(), 0);
        assert_eq!(r.buffered_capacity(), 0);
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer_a_streaming_one_keeps_it_and_writes_pass_through() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut r = ReadAhead::new(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        // A stream of data: the buffer outlives a momentarily empty socket.
        cw.write_all(&[7u8; 40_000]).await.unwrap();
        let mut rest = vec![0u8; 40_000];
        r.read_exact(&mut rest).await.unwrap();
        assert!(rest.iter().all(|&b| b == 7));
        let mut small = [0u8; 1000];
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), r.read(&mut small)).await;
        assert!(pending.is_err());
        assert!(r.buffered_capacity() >= READ_AHEAD, "kept mid-stream");
        // A small request, then nothing: the poll is pending and the buffer is released.
        cw.write_all(&[8u8; 2_000]).await.unwrap();
        r.read_exact(&mut small).await.unwrap();
        assert!(r.buffered_capacity() >= 1_000, "the rest is buffered");
        r.read_exact(&mut small).await.unwrap();
        assert!(small.iter().all(|&b| b == 8));
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), r.read(&mut small)).await;
        assert!(pending.is_err());
        assert_eq!(r.buffered_capacity(), 0);
        r.write_all(b"reply").await.unwrap();
        let mut reply = [0u8; 5];
        cr.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
    }
}
