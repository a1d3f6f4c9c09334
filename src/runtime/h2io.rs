//! Running the `h2` crate on compio.
//!
//! `h2` is written against `tokio::io::{AsyncRead, AsyncWrite}` but needs no tokio runtime,
//! only those two poll-based traits. compio's streams are completion-based (owned buffers).
//!
//! Every TLS connection the product runs (connector to edge, edge to connector, TLS
//! origins, HTTPS eyeballs) is a [`RustlsIo`]: rustls driven straight over the socket with
//! owned buffers, implementing both trait families itself; its documentation says where
//! bytes are copied and why. No `futures-io` adapter sits on any of those paths.
//!
//! [`TokioIo`] ([`tcp`], [`tls`]) is the generic bridge from compio's `futures-io` compat
//! streams (`compio::io::compat::AsyncStream`, what `compio::tls` wraps) to `tokio::io`:
//! it copies nothing itself, but the compat stream below it copies every byte through an
//! internal buffer and a read zero-initialises tokio's `ReadBuf` once. The test suites'
//! protocol peers (mock edges, h2 origins) use it; nothing in the product does.

use std::{
    future::Future,
    io::{self, BufRead as _, Write as _},
    ops::DerefMut,
    os::fd::AsFd,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::BytesMut;
use compio::buf::BufResult;
use compio::io::compat::AsyncStream;
use compio::io::{AsyncReadManaged, AsyncWriteExt as _};
use compio::net::TcpStream;
use compio::tls::TlsStream;
use futures_util::io::{AsyncRead as FuturesRead, AsyncWrite as FuturesWrite};
use rustls::{ConnectionCommon, SideData, pki_types::ServerName};
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

/// A TLS stream for `h2`: rustls driven directly over a compio `TcpStream` with owned
/// buffers, no `futures-io` layer in between.
///
/// # Buffers and copies
/// - Reading: the kernel writes ciphertext into the spare capacity of one reused `Vec`
///   (`READ_BUF` bytes, allocated once, never zeroed). From there it is copied three times in
///   user space: `read_tls` copies it into rustls' deframer buffer, rustls decrypts each record
///   there in place and copies the plaintext into its received-plaintext queue, and h2's
///   `ReadBuf` is filled from that queue's chunks (`BufRead`, so h2's buffer is never zeroed
///   first). The first two are rustls' buffered API: together about 4.5% of the connector's
///   CPU on a one-stream upload (perf with DWARF stacks; the copy into h2's buffer is another
///   4.5%). rustls 0.23's unbuffered API would save only the first: it deframes in the
///   caller's buffer but still queues each decrypted record as a copy (in-place decryption is
///   a TODO in its `ReadTraffic`), not enough to trade this adapter's tested state for.
/// - Writing: `writer().write` encrypts h2's frames into rustls' queue; a flush drains the
///   queue with `write_tls` into one reused `Vec` and submits it as one owned write without
///   waiting for it; what h2 writes meanwhile queues in rustls and goes out in the next write
///   (at most one write in flight, its buffer reused). When no write is in flight and either
///   [`DIRECT_SEND`] or more is queued (a bulk transfer) or the worker has just woken from a
///   wait (`runtime::send`: the one hop of a lone request), the flush first offers rustls' own
///   record buffers to the kernel with a non-blocking `sendmsg`, which skips the copy into the
///   `Vec` (and, for the lone request, the extra return from the kernel for the write's
///   completion); only what the socket does not take then goes the owned way.
///
/// The in-flight read and write are futures held here (boxed: `async fn` types cannot be
/// named) and polled from `poll_read` / `poll_write` / `poll_flush`; each owns its buffer
/// and a clone of the socket handle, so dropping the adapter mid-operation is safe on both
/// drivers. One connection holds at most `READ_BUF` of ciphertext plus rustls' own buffers
/// (its outgoing queue is capped by rustls' buffer limit, `TUNNEL_SEND_QUEUE` on tunnel
/// connections and rustls' default of 64 KiB on the others: when it is full `poll_write`
/// waits for the socket).
///
/// # Origin connections ([`tls_connect_lean`])
/// An origin connection may sit in the keep-alive pool, or under an idle WebSocket, for hours.
/// Such a connection reads *lean*: while no data is flowing a read takes a buffer from the
/// core's io_uring provided-buffer pool (the kernel picks one only when data arrives; its bytes
/// are copied into a `Vec` of exactly their size) and the ciphertext `Vec` is freed as soon as
/// rustls took it all, so a waiting connection holds no read buffer beyond rustls' own state.
/// While data is flowing (the last read filled its buffer) it reads `LEAN_BUSY_READ` at a time
/// into an owned buffer (four records, not a tunnel connection's sixteen: there is one such
/// connection per busy origin stream or HTTPS visitor, not four per process). On the poll
/// driver, or when the pool has no buffer free, a waiting read owns a `LEAN_READ` buffer.
pub struct RustlsIo<C, T = TcpStream> {
    /// The socket (TCP or unix); the field keeps its name for the TCP case.
    tcp: T,
    conn: C,
    /// Ciphertext read but not yet handed to rustls: `rbuf[rpos..]`. `None` while a read
    /// owns the buffer.
    rbuf: Option<Vec<u8>>,
    rpos: usize,
    reading: Option<OpFuture<usize>>,
    /// Reused buffer for outgoing ciphertext; `None` while a write owns it.
    wbuf: Option<Vec<u8>>,
    writing: Option<OpFuture<()>>,
    shutting: Option<Pin<Box<dyn Future<Output = io::Result<()>>>>>,
    /// The peer closed TCP (a read returned 0).
    tcp_eof: bool,
    /// Read lean (origin connections): see the type's documentation.
    lean: bool,
    /// Lean mode: the last read filled its buffer, so more data is probably waiting.
    busy: bool,
    /// Plaintext handed to rustls since its queue was last drained: past [`DIRECT_SEND`] the
    /// queue goes to the kernel from rustls' buffers, not through `wbuf`.
    queued: usize,
}

/// A socket rustls can run over: owned-buffer reads (also from the provided-buffer pool) and
/// writes, and cheap handles to the same descriptor (compio sockets are reference-counted),
/// so in-flight operations own theirs. compio's `TcpStream` and `UnixStream`.
pub trait TlsSocket:
    compio::io::AsyncRead
    + compio::io::AsyncWrite
    + AsyncReadManaged
    + AsFd
    + Clone
    + Unpin
    + std::fmt::Debug
    + 'static
{
}

impl<T> TlsSocket for T where
    T: compio::io::AsyncRead
        + compio::io::AsyncWrite
        + AsyncReadManaged
        + AsFd
        + Clone
        + Unpin
        + std::fmt::Debug
        + 'static
{
}

/// A full TLS record on the wire (16 KiB of plaintext, with room for its header, tag and
/// padding).
const RECORD: usize = 16 * 1024 + 256;
/// A lean read's owned buffer where the provided-buffer pool cannot serve it: one TLS record.
const LEAN_READ: usize = RECORD;
/// A lean read this long filled its buffer (the core's pool buffers are 4 KiB,
/// `runtime::driver`): data is flowing.
const LEAN_FULL: usize = 4 * 1024;

type OpFuture<T> = Pin<Box<dyn Future<Output = BufResult<T, Vec<u8>>>>>;

/// Ciphertext read buffer: sixteen full TLS records, so a bulk transfer takes a quarter of
/// the reads (and wake-ups) per GB that four records took; never zeroed, so a small read
/// costs nothing more.
const READ_BUF: usize = 16 * RECORD;
/// Ciphertext read buffer of a lean connection while data flows: four full TLS records.
const LEAN_BUSY_READ: usize = 4 * RECORD;
/// rustls' queue of outgoing ciphertext on a tunnel connection (its default is 64 KiB): what
/// one write to the kernel carries while data flows.
const TUNNEL_SEND_QUEUE: usize = 256 * 1024;

/// Queued plaintext from which a flush sends rustls' buffers to the kernel directly: a bulk
/// transfer's batches (up to [`TUNNEL_SEND_QUEUE`]) skip one copy of every byte. A smaller
/// flush goes direct only in a quiet turn (`runtime::send::take_direct`); in a busy one it
/// keeps the owned write, which goes out with the turn's other writes in one enter.
const DIRECT_SEND: usize = 32 * 1024;

/// A TLS client (connector side) ready for `h2`.
pub type ClientTlsIo = RustlsIo<rustls::ClientConnection>;
/// A TLS server (built-in edge side) ready for `h2`.
pub type ServerTlsIo = RustlsIo<rustls::ServerConnection>;

impl<C, T: std::fmt::Debug> std::fmt::Debug for RustlsIo<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustlsIo")
            .field("tcp", &self.tcp)
            .field("tcp_eof", &self.tcp_eof)
            .finish_non_exhaustive()
    }
}

/// Connects TLS over `tcp` as a client (the connector dialing the edge) and completes the
/// handshake.
pub async fn tls_connect(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> io::Result<ClientTlsIo> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut io = RustlsIo::new(tcp, conn, false);
    io.handshake().await?;
    Ok(io)
}

/// Connects TLS over `sock` (TCP or unix) as a client to an origin and completes the
/// handshake. The connection reads lean (see [`RustlsIo`]): an idle one holds no read buffer.
pub async fn tls_connect_lean<T: TlsSocket>(
    sock: T,
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
) -> io::Result<RustlsIo<rustls::ClientConnection, T>> {
    let conn = rustls::ClientConnection::new(config, server_name).map_err(io::Error::other)?;
    let mut io = RustlsIo::new(sock, conn, true);
    io.handshake().await?;
    Ok(io)
}

/// Accepts TLS over `tcp` as a server for HTTPS visitors (the built-in edge's eyeball side)
/// and completes the handshake. The connection reads lean (see [`RustlsIo`]): an idle
/// keep-alive connection holds no read buffer.
pub async fn tls_accept_lean(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<ServerTlsIo> {
    accept(tcp, config, true).await
}

/// Accepts TLS over `tcp` as a server (the built-in edge's tunnel side) and completes the
/// handshake.
pub async fn tls_accept(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<ServerTlsIo> {
    accept(tcp, config, false).await
}

async fn accept(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    lean: bool,
) -> io::Result<ServerTlsIo> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut io = RustlsIo::new(tcp, conn, lean);
    io.handshake().await?;
    Ok(io)
}

impl<C, S, T> RustlsIo<C, T>
where
    C: DerefMut<Target = ConnectionCommon<S>> + Unpin,
    S: SideData,
    T: TlsSocket,
{
    /// A tunnel connection (`lean` false) lets rustls queue [`TUNNEL_SEND_QUEUE`] of
    /// ciphertext; a lean one keeps rustls' default, as it keeps smaller reads.
    fn new(tcp: T, mut conn: C, lean: bool) -> Self {
        if !lean {
            conn.set_buffer_limit(Some(TUNNEL_SEND_QUEUE));
        }
        Self {
            tcp,
            conn,
            rbuf: Some(Vec::new()),
            rpos: 0,
            reading: None,
            wbuf: Some(Vec::new()),
            writing: None,
            shutting: None,
            tcp_eof: false,
            lean,
            busy: false,
            queued: 0,
        }
    }

    /// The rustls connection (ALPN, negotiated key exchange, peer certificates).
    pub fn tls(&self) -> &C {
        &self.conn
    }

    /// Bytes of ciphertext read buffer this connection holds now (a read in flight owns its
    /// buffer, counted as 0): what an idle connection costs beyond rustls' own state.
    pub fn read_buf_capacity(&self) -> usize {
        self.rbuf.as_ref().map_or(0, Vec::capacity)
    }

    /// Drives the handshake to completion, sending what rustls queues (including a fatal
    /// alert before an error is returned).
    async fn handshake(&mut self) -> io::Result<()> {
        loop {
            std::future::poll_fn(|cx| self.poll_flush_tls(cx)).await?;
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            match std::future::poll_fn(|cx| self.poll_feed(cx)).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection during the TLS handshake",
                    ));
                }
                Err(e) => {
                    // Best effort: tell the peer why (rustls queued an alert).
                    let _ = std::future::poll_fn(|cx| self.poll_flush_tls(cx)).await;
                    return Err(e);
                }
            }
        }
    }

    /// Hands buffered ciphertext to rustls and processes it, reading from the socket when
    /// none is buffered. `Ok(false)` when the socket is at EOF and nothing is left to feed.
    fn poll_feed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            if let Some(buf) = self.rbuf.as_mut()
                && self.rpos < buf.len()
            {
                let n = self.conn.read_tls(&mut &buf[self.rpos..])?;
                self.rpos += n;
                if self.rpos == buf.len() {
                    if self.lean && !self.busy {
                        // Drained and nothing more is known to be waiting: hold no buffer.
                        *buf = Vec::new();
                    } else {
                        buf.clear();
                    }
                    self.rpos = 0;
                }
                let state = self
                    .conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if state.tls_bytes_to_write() > 0 {
                    // A key update answer, an alert or a session ticket: send it without
                    // waiting for h2's next flush.
                    self.kick_write(cx)?;
                }
                return Poll::Ready(Ok(true));
            }
            if self.tcp_eof {
                return Poll::Ready(Ok(false));
            }
            if self.reading.is_none() {
                let mut buf = self.rbuf.take().unwrap_or_default();
                buf.clear();
                self.rpos = 0;
                let mut tcp = self.tcp.clone();
                if self.lean && !self.busy {
                    self.reading = Some(Box::pin(lean_read(tcp, buf)));
                } else {
                    buf.reserve(if self.lean { LEAN_BUSY_READ } else { READ_BUF });
                    // compio reads into the spare capacity: nothing is zeroed.
                    self.reading = Some(Box::pin(async move { tcp.read(buf).await }));
                }
            }
            let Some(fut) = self.reading.as_mut() else {
                continue;
            };
            let BufResult(res, buf) = ready!(fut.as_mut().poll(cx));
            self.reading = None;
            if let Ok(n) = res {
                // A read that filled its buffer leaves more waiting: read big while it flows.
                let full = if self.lean && !self.busy {
                    LEAN_FULL
                } else {
                    buf.capacity()
                };
                self.busy = n > 0 && n >= full;
            }
            self.rbuf = Some(buf);
            match res {
                Ok(0) => {
                    self.tcp_eof = true;
                    // Tell rustls, so it can tell a clean close from a truncation.
                    let _ = self.conn.read_tls(&mut &[][..]);
                    self.conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    return Poll::Ready(Ok(false));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Polls the write in flight, if any, to completion.
    fn poll_writing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(fut) = self.writing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let BufResult(res, mut buf) = ready!(fut.as_mut().poll(cx));
        self.writing = None;
        buf.clear();
        self.wbuf = Some(buf);
        Poll::Ready(res)
    }

    /// Waits for the write in flight (if any), then starts sending everything rustls has
    /// queued as one owned write, without waiting for that write to complete.
    ///
    /// `Ready` means: no bytes are left in rustls' queue (they are in the kernel or owned by
    /// the write in flight, which was polled once so the driver has it and this task's waker
    /// is woken when it completes).
    fn poll_submit(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_writing(cx))?;
        if !self.conn.wants_write() {
            return Poll::Ready(Ok(()));
        }
        if std::mem::take(&mut self.queued) >= DIRECT_SEND || super::send::take_direct() {
            // Nothing is in flight, and either much is queued or the worker has just woken:
            // hand rustls' own record buffers to the kernel (a non-blocking sendmsg), saving
            // the copy into `wbuf`; whatever the socket does not take now is copied and
            // written below.
            let mut direct = super::send::DirectSend(&self.tcp);
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut direct) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if !self.conn.wants_write() {
                return Poll::Ready(Ok(()));
            }
        }
        let mut buf = self.wbuf.take().unwrap_or_default();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut buf)? == 0 {
                break;
            }
        }
        let mut tcp = self.tcp.clone();
        self.writing = Some(Box::pin(async move { tcp.write_all(buf).await }));
        match self.poll_writing(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Ready(Ok(())),
        }
    }

    /// Sends everything rustls has queued and waits until the kernel has it all (handshake,
    /// shutdown).
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_writing(cx))?;
            if !self.conn.wants_write() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_submit(cx))?;
        }
    }

    /// Starts sending queued ciphertext without waiting for it (h2's flushes, and alerts,
    /// key updates and session tickets produced while reading). While a write is in flight
    /// new ciphertext stays queued in rustls (bounded by its buffer limit) and goes out as one
    /// write when the one in flight completes: its completion wakes this task, and h2 flushes
    /// again on every wakeup (`Connection::poll` ends in `poll_complete` → `flush`).
    fn kick_write(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_submit(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }

    /// Hands at most `room` bytes of plaintext to `put` (chunk by chunk, straight from rustls'
    /// decrypted records: no destination is zeroed first), reading from the socket while
    /// none is decrypted. `Ok(0)` at the end of the stream (close_notify, or a TCP EOF without
    /// it: the protocol above decides whether that was clean) or when `room` is 0.
    fn poll_plaintext(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
        mut put: impl FnMut(&[u8]),
    ) -> Poll<io::Result<usize>> {
        loop {
            // `poll_feed` processes every record it hands rustls: nothing is left to process
            // here.
            let mut reader = self.conn.reader();
            let mut copied = 0;
            let ended = loop {
                if copied == room {
                    break false;
                }
                match reader.fill_buf() {
                    // close_notify received and every byte before it read.
                    Ok([]) => break true,
                    Ok(chunk) => {
                        let n = chunk.len().min(room - copied);
                        put(&chunk[..n]);
                        reader.consume(n);
                        copied += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break true,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            };
            if copied > 0 || ended || room == 0 {
                return Poll::Ready(Ok(copied));
            }
            if !ready!(self.poll_feed(cx))? {
                return Poll::Ready(Ok(0));
            }
        }
    }

    /// Appends at most `want` bytes of plaintext to `buf` (its spare capacity is never
    /// zeroed); `Ok(0)` at the end of the stream. For origin connections, which read into
    /// the `BytesMut` the HTTP decoder splits.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        self.poll_plaintext(cx, want, |chunk| buf.extend_from_slice(chunk))
    }
}

/// Writes all of `data` through `poll_write`, which borrows a connection for one poll: the
/// two halves of one [`RustlsIo`] on a core (a TLS origin's, an HTTPS eyeball's) share it in
/// an `Rc<RefCell>` and must not hold the borrow across an await.
pub async fn write_all_with(
    mut data: &[u8],
    mut poll_write: impl FnMut(&mut Context<'_>, &[u8]) -> Poll<io::Result<usize>>,
) -> io::Result<()> {
    while !data.is_empty() {
        let n = std::future::poll_fn(|cx| poll_write(cx, data)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    Ok(())
}

impl<C, S, T> TokioRead for RustlsIo<C, T>
where
    C: DerefMut<Target = ConnectionCommon<S>> + Unpin,
    S: SideData,
    T: TlsSocket,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Copied into h2's uninitialised buffer: `Reader::read` would need the destination
        // zeroed first, a second pass over every byte received.
        let room = buf.remaining();
        ready!(
            self.get_mut()
                .poll_plaintext(cx, room, |chunk| buf.put_slice(chunk))
        )?;
        Poll::Ready(Ok(()))
    }
}

impl<C, S, T> TokioWrite for RustlsIo<C, T>
where
    C: DerefMut<Target = ConnectionCommon<S>> + Unpin,
    S: SideData,
    T: TlsSocket,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let n = this.conn.writer().write(buf)?;
            this.queued += n;
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
            // rustls' queue is full (its buffer limit): once the write in flight is done,
            // hand the queue to the kernel and encrypt more while it sends.
            ready!(this.poll_submit(cx))?;
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let n = this.conn.writer().write_vectored(bufs)?;
            this.queued += n;
            if n > 0 || bufs.iter().all(|b| b.is_empty()) {
                return Poll::Ready(Ok(n));
            }
            ready!(this.poll_submit(cx))?;
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        // h2 flushes after every frame it writes; waiting here for each write to complete
        // would allow one frame per round trip through the kernel.
        this.kick_write(cx)?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shutting.is_none() {
            this.conn.send_close_notify();
            ready!(this.poll_flush_tls(cx))?;
            let mut tcp = this.tcp.clone();
            this.shutting = Some(Box::pin(async move { tcp.shutdown().await }));
        }
        let Some(fut) = this.shutting.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        // The peer may already be gone; a failed TCP shutdown changes nothing for h2.
        let _ = ready!(fut.as_mut().poll(cx));
        Poll::Ready(Ok(()))
    }
}

/// One lean read (see [`RustlsIo`]): from the core's provided-buffer pool where the driver
/// has one (io_uring), the bytes copied into `buf` (empty on entry) at their exact size;
/// else an owned read of at most [`LEAN_READ`] into `buf`'s spare capacity.
async fn lean_read<T: TlsSocket>(mut sock: T, mut buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
    let take = |data: &[u8]| {
        buf.reserve_exact(data.len());
        buf.extend_from_slice(data);
    };
    if let Some(r) = super::read_pooled(&mut sock, 0, take).await {
        return BufResult(r, buf);
    }
    buf.reserve(LEAN_READ);
    sock.read(buf).await
}

/// `futures-io` faces of the same stream, for the origin code that splits a connection into
/// halves for the keep-alive pool (`futures_util::io::split`) and the stream services. A flush
/// here waits until the kernel has every byte (an HTTP/1.1 request must be out before its
/// response is awaited); the rest is the `tokio::io` implementation above.
impl<C, S, T> FuturesRead for RustlsIo<C, T>
where
    C: DerefMut<Target = ConnectionCommon<S>> + Unpin,
    S: SideData,
    T: TlsSocket,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        ready!(TokioRead::poll_read(self, cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }
}

impl<C, S, T> FuturesWrite for RustlsIo<C, T>
where
    C: DerefMut<Target = ConnectionCommon<S>> + Unpin,
    S: SideData,
    T: TlsSocket,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        TokioWrite::poll_write(self, cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        TokioWrite::poll_write_vectored(self, cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        this.poll_flush_tls(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TokioWrite::poll_shutdown(self, cx)
    }
}
