//! One HTTP/2 stream (`h2`) as bytes: sending `Bytes` within the peer's flow-control window,
//! releasing received window only once the data has been written onward, and `futures-io`
//! views of a stream for the capnp RPC system on the control stream. Used by both the edge
//! (h2 client) and the connector (h2 server).
//!
//! Backpressure lives here: [`send_all`] never queues more than the peer's window allows, and
//! data taken with `RecvStream::data` keeps its window until [`release`]. Nothing here buffers
//! more than one received DATA frame, so memory per stream stays bounded whatever the peer sends.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::io::{AsyncRead, AsyncWrite};
use h2::{RecvStream, SendStream};

/// Most bytes handed to h2 per `send_data`: bounded so one stream's frames interleave with others.
const MAX_SEND_CHUNK: usize = 256 * 1024;

/// Sends `data` as DATA frames, waiting for window as needed (no copy: `data` is split, not
/// cloned).
pub async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        let want = data.len().min(MAX_SEND_CHUNK);
        let granted = poll_fn(|cx| poll_capacity(send, want, cx)).await?;
        let n = granted.min(data.len());
        send.send_data(data.split_to(n), false)?;
    }
    Ok(())
}

/// [`send_all`], with END_STREAM on the frame carrying the last bytes (an empty `data` sends
/// one empty END_STREAM frame): the body's end leaves with its data, not in a frame (and, once
/// h2 has flushed the data, a TLS record and a write) of its own.
pub async fn send_all_last(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    loop {
        if data.is_empty() {
            return send.send_data(data, true);
        }
        let want = data.len().min(MAX_SEND_CHUNK);
        let granted = poll_fn(|cx| poll_capacity(send, want, cx)).await?;
        let n = granted.min(data.len());
        let chunk = data.split_to(n);
        if data.is_empty() {
            return send.send_data(chunk, true);
        }
        send.send_data(chunk, false)?;
    }
}

/// Returns `n` bytes of window to the peer, once they have been written onward.
pub fn release(recv: &mut RecvStream, n: usize) {
    // Fails only when the stream is already gone, which the next read reports.
    let _ = recv.flow_control().release_capacity(n);
}

/// Waits for send capacity for up to `want` bytes.
fn poll_capacity(
    send: &mut SendStream<Bytes>,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<usize, h2::Error>> {
    loop {
        if send.capacity() > 0 {
            return Poll::Ready(Ok(send.capacity()));
        }
        send.reserve_capacity(want);
        match ready!(send.poll_capacity(cx)) {
            None => return Poll::Ready(Err(h2::Error::from(h2::Reason::CANCEL))),
            Some(Err(e)) => return Poll::Ready(Err(e)),
            // Capacity was assigned and taken back (a SETTINGS change): ask again.
            Some(Ok(0)) => continue,
            Some(Ok(n)) => return Poll::Ready(Ok(n)),
        }
    }
}

/// A stream's DATA frames as `futures-io` `AsyncRead`; window is released as frames are taken.
pub struct H2Reader {
    recv: RecvStream,
    /// The unread rest of the last DATA frame.
    pending: Bytes,
}

impl H2Reader {
    /// Wraps the receiving half of a stream.
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
                    // The frame is now ours; let the peer send the next one.
                    release(&mut self.recv, chunk.len());
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

/// Bytes written as DATA frames within the peer's window (`futures-io` `AsyncWrite`).
pub struct H2Writer {
    send: SendStream<Bytes>,
    closed: bool,
    reset_on_drop: bool,
}

impl H2Writer {
    /// Wraps the sending half of a stream; closing it sends END_STREAM.
    pub fn new(send: SendStream<Bytes>) -> H2Writer {
        H2Writer {
            send,
            closed: false,
            reset_on_drop: false,
        }
    }

    /// Like [`H2Writer::new`], and dropping it ends the stream as Go's HTTP/2 server does when
    /// a handler returns with the peer's side still open: END_STREAM, then RST_STREAM(NO_ERROR).
    /// The connector's control stream needs this (cloudflared does it after unregistering).
    pub fn resetting_on_drop(send: SendStream<Bytes>) -> H2Writer {
        H2Writer {
            send,
            closed: false,
            reset_on_drop: true,
        }
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
        let granted =
            ready!(poll_capacity(&mut self.send, buf.len(), cx)).map_err(io::Error::other)?;
        let n = granted.min(buf.len());
        // Copy: the RPC system hands out borrowed slices; control-stream messages are small.
        let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
        self.send
            .send_data(chunk, false)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes queued frames as soon as the connection task runs: nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.closed {
            self.closed = true;
            self.send
                .send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for H2Writer {
    fn drop(&mut self) {
        if self.reset_on_drop {
            // Both calls fail harmlessly when the stream is already closed or reset.
            if !self.closed {
                let _ = self.send.send_data(Bytes::new(), true);
            }
            self.send.send_reset(h2::Reason::NO_ERROR);
        }
    }
}
