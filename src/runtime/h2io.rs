//! Running the `h2` crate on compio: a `futures-io` → `tokio::io` trait adapter.
//!
//! `h2` is written against `tokio::io::{AsyncRead, AsyncWrite}` but needs no tokio runtime,
//! only those two poll-based traits. compio's streams are completion-based (owned buffers);
//! compio already bridges them to `futures-io` poll traits with an internal buffer
//! (`compio::io::compat::AsyncStream`, also what `compio::tls` wraps for rustls). This module
//! adds the last, copy-free step from `futures-io` to `tokio::io`, plus constructors for plain
//! TCP and TLS streams. It never spawns and never touches HTTP/2 state.
//!
//! # Where bytes are copied, and why
//! Reading (kernel → h2), plain TCP:
//! 1. the kernel fills `AsyncStream`'s owned read buffer (the only way to read with
//!    io_uring: the kernel writes into memory the runtime owns until completion, so a
//!    cancelled read can never scribble on memory h2 has freed);
//! 2. `AsyncStream::poll_read` copies from that buffer into h2's read buffer.
//!
//! With TLS, step 2 copies the ciphertext into rustls instead; rustls decrypts in place and
//! copies the plaintext into h2's read buffer. [`TokioIo`] itself copies nothing: it hands
//! the unfilled part of tokio's `ReadBuf` straight to the inner stream (zero-initialising it
//! once when it is uninitialised, since `futures-io` reads into `&mut [u8]`).
//!
//! Writing (h2 → kernel) mirrors this: h2's encoded frames are copied into `AsyncStream`'s
//! owned write buffer (after rustls encrypts them into its own buffer, for TLS), and that
//! buffer is submitted to the kernel. The copy is the price of owned-buffer I/O; an
//! `unsafe` zero-copy path would need a benchmark first (STYLE.md §10).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use compio::io::compat::AsyncStream;
use compio::net::TcpStream;
use compio::tls::TlsStream;
use futures_util::io::{AsyncRead as FuturesRead, AsyncWrite as FuturesWrite};
use tokio::io::{AsyncRead as TokioRead, AsyncWrite as TokioWrite, ReadBuf};

/// Buffer size for the plain-TCP `AsyncStream`: one TLS record plus headroom, and large
/// enough that a 1 MiB HTTP/2 DATA frame needs few syscalls.
const COMPAT_BUF_SIZE: usize = 64 * 1024;

/// Implements `tokio::io` traits for any `futures-io` stream.
#[derive(Debug)]
pub struct TokioIo<S> {
    /// The `futures-io` stream; `Unpin` so the adapter needs no pin projection.
    inner: S,
}

impl<S> TokioIo<S> {
    /// Wraps a `futures-io` stream.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// A plain compio TCP stream, ready for `h2`.
pub type TcpIo = TokioIo<Pin<Box<AsyncStream<TcpStream>>>>;

/// A compio TLS-over-TCP stream (client or server side), ready for `h2`.
pub type TlsIo = TokioIo<TlsStream<TcpStream>>;

/// Adapts a plain TCP stream. The `AsyncStream` is boxed because it is self-referential.
pub fn tcp(stream: TcpStream) -> TcpIo {
    TokioIo::new(Box::pin(AsyncStream::with_capacity(
        COMPAT_BUF_SIZE,
        stream,
    )))
}

/// Adapts a TLS stream produced by `compio::tls::{TlsConnector, TlsAcceptor}`.
pub fn tls(stream: TlsStream<TcpStream>) -> TlsIo {
    TokioIo::new(stream)
}

impl<S: FuturesRead + Unpin> TokioRead for TokioIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut self.inner).poll_read(cx, buf.initialize_unfilled()))?;
        // A misbehaving inner stream must not make `advance` panic.
        if n > buf.remaining() {
            return Poll::Ready(Err(io::Error::other("inner stream over-reported a read")));
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: FuturesWrite + Unpin> TokioWrite for TokioIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// HTTP/2 SETTINGS the connector (the HTTP/2 *server*) announces, as cloudflared's Go
/// server does (spec §3.1). HEADER_TABLE_SIZE stays at h2's default of 4096.
pub fn connector_h2_server() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_frame_size(1 << 20)
        .max_concurrent_streams(u32::MAX)
        .max_header_list_size((1 << 20) + 320)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 20);
    b
}
