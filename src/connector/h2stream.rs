//! Glue between one HTTP/2 stream (`h2`) and byte-oriented code: sending `Bytes` within the
//! peer's flow-control window, and `futures-io` views of a stream for the capnp RPC system.
//!
//! Backpressure lives here: [`send_all`] never queues more than the edge's window allows, and
//! [`recv_chunk`] hands out data whose window is released only by [`release`], after the caller
//! has written it onward. A slow origin therefore stops the edge through h2 flow control.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::io::{AsyncRead, AsyncWrite};
use h2::{RecvStream, SendStream};

/// Most bytes handed to h2 per `send_data`: bounded so one stream's frames interleave with others.
const MAX_SEND_CHUNK: usize = 256 * 1024;

/// Sends `data`, waiting for send capacity as needed (no copy: `data` is split, not cloned).
pub async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len().min(MAX_SEND_CHUNK));
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(cap) => cap?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if granted == 0 {
            continue;
        }
        let n = granted.min(data.len());
        send.send_data(data.split_to(n), false)?;
    }
    Ok(())
}

/// The next DATA chunk, or `None` at end of stream. Release its window with [`release`]
/// once it has been written onward.
pub async fn recv_chunk(recv: &mut RecvStream) -> Option<Result<Bytes, h2::Error>> {
    recv.data().await
}

/// Returns `n` bytes of window to the edge.
pub fn release(recv: &mut RecvStream, n: usize) {
    // Fails only when the stream is already gone, which the next read reports.
    let _ = recv.flow_control().release_capacity(n);
}

/// An h2 request body as `futures-io` `AsyncRead` (for the RPC system on the control stream).
pub struct H2Reader {
    recv: RecvStream,
    /// The unread rest of the last DATA frame.
    pending: Bytes,
}

impl H2Reader {
    pub fn new(recv: RecvStream) -> H2Reader {
        H2Reader {
            recv,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for H2Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    let n = chunk.len();
                    release(&mut self.recv, n);
                    self.pending = chunk;
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Ok(0)),
            }
        }
        let n = self.pending.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.pending.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pending.advance(n);
        Poll::Ready(Ok(n))
    }
}

/// An h2 response body as `futures-io` `AsyncWrite`; each write waits for window. Dropping it
/// ends the stream as Go's server does when a handler returns with the peer's side still open:
/// END_STREAM, then RST_STREAM(NO_ERROR).
pub struct H2Writer {
    send: SendStream<Bytes>,
}

impl H2Writer {
    pub fn new(send: SendStream<Bytes>) -> H2Writer {
        H2Writer { send }
    }
}

impl AsyncWrite for H2Writer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        loop {
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(cap)) => {
                    let n = cap.min(buf.len());
                    let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    return Poll::Ready(
                        self.send
                            .send_data(chunk, false)
                            .map(|()| n)
                            .map_err(io::Error::other),
                    );
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes queued frames as soon as the connection task runs: nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

impl Drop for H2Writer {
    fn drop(&mut self) {
        // Both calls fail harmlessly when the stream is already closed or reset.
        let _ = self.send.send_data(Bytes::new(), true);
        self.send.send_reset(h2::Reason::NO_ERROR);
    }
}
