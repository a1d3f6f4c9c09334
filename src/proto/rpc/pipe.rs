//! An in-memory, unbounded byte pipe implementing `futures::AsyncRead`/`AsyncWrite`.
//!
//! It exists so RPC clients and servers (and the edge simulator's tests) can talk to each other
//! deterministically on one thread, without sockets. It is not a production transport: it has no
//! backpressure, and writes never block.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::{AsyncRead, AsyncWrite, Stream};

/// Write half of a pipe. Dropping or closing it gives the reader EOF.
pub struct PipeWriter(mpsc::UnboundedSender<Vec<u8>>);

/// Read half of a pipe.
pub struct PipeReader {
    /// Chunks written by the other half, in order.
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    /// The chunk being read and how far into it we are; a read may take less than a whole chunk.
    current: Vec<u8>,
    /// Read position in `current`.
    pos: usize,
}

/// A one-directional pipe.
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = mpsc::unbounded();
    let reader = PipeReader {
        rx,
        current: Vec::new(),
        pos: 0,
    };
    (PipeWriter(tx), reader)
}

/// Two pipes wired as a duplex: returns `((a_reader, a_writer), (b_reader, b_writer))`.
pub fn duplex() -> ((PipeReader, PipeWriter), (PipeReader, PipeWriter)) {
    let (a_to_b_w, a_to_b_r) = pipe();
    let (b_to_a_w, b_to_a_r) = pipe();
    ((b_to_a_r, a_to_b_w), (a_to_b_r, b_to_a_w))
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.unbounded_send(buf.to_vec()) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.close_channel();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        while self.pos >= self.current.len() {
            match Pin::new(&mut self.rx).poll_next(cx) {
                Poll::Ready(Some(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let available = self.current.get(self.pos..).unwrap_or_default();
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}
