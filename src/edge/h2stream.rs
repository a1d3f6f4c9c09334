//! h2 stream halves as byte streams: `futures-io` adapters for the control stream's RPC, and
//! a flow-control-respecting `send_all` for bodies.
//!
//! Nothing here buffers more than one received DATA frame or queues more than the peer's
//! window allows, so memory per stream stays bounded whatever the peer sends.

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use futures_util::io::{AsyncRead, AsyncWrite};
use h2::{RecvStream, SendStream};

/// Reads a stream's DATA frames as bytes; capacity is released as bytes are consumed.
pub struct H2Reader {
    recv: RecvStream,
    chunk: Bytes,
}

impl H2Reader {
    /// Wraps the receiving half of a stream.
    pub fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            chunk: Bytes::new(),
        }
    }
}

impl AsyncRead for H2Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        while self.chunk.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(0)),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(data)) => {
                    let len = data.len();
                    self.chunk = data;
                    // The frame is now ours; let the peer send the next one.
                    let _ = self.recv.flow_control().release_capacity(len);
                }
            }
        }
        let n = self.chunk.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.chunk.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.chunk.advance(n);
        Poll::Ready(Ok(n))
    }
}

/// Writes bytes as DATA frames within the peer's flow-control window.
pub struct H2Writer {
    send: SendStream<Bytes>,
    closed: bool,
}

impl H2Writer {
    /// Wraps the sending half of a stream.
    pub fn new(send: SendStream<Bytes>) -> Self {
        Self {
            send,
            closed: false,
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
        let granted = ready!(poll_capacity(&mut self.send, buf.len(), cx))?;
        let n = granted.min(buf.len());
        let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
        self.send.send_data(data, false).map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes queued frames as soon as the connection task runs.
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

/// Waits for send capacity for up to `want` bytes; an error when the stream is gone.
fn poll_capacity(
    send: &mut SendStream<Bytes>,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        if send.capacity() > 0 {
            return Poll::Ready(Ok(send.capacity()));
        }
        send.reserve_capacity(want);
        match ready!(send.poll_capacity(cx)) {
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            Some(Ok(0)) => {
                // Capacity was assigned and taken back (a SETTINGS change); ask again.
                if send.capacity() == 0 {
                    continue;
                }
            }
            Some(Ok(n)) => return Poll::Ready(Ok(n)),
        }
    }
}

/// Sends `data` as DATA frames, never queueing more than the peer's window allows.
pub async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> io::Result<()> {
    while !data.is_empty() {
        let granted = poll_fn(|cx| poll_capacity(send, data.len(), cx)).await?;
        let n = granted.min(data.len());
        send.send_data(data.split_to(n), false)
            .map_err(io::Error::other)?;
    }
    Ok(())
}
