//! Stream modes of the generator: WebSocket echo, idle WebSockets and raw TCP echo.
//!
//! WebSocket connections upgrade once, then send one masked binary frame per round trip and
//! wait for the server's echo; idle WebSockets upgrade and then only wait (a read that ends
//! at the deadline), proving at the end that each is still alive with one echo. Raw TCP
//! writes a message and reads the same number of bytes back concurrently, so a message of
//! any size (a bulk transfer) never deadlocks on full socket buffers.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use compio::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;

use super::client::{READ_BUF, Worker};
use super::io::read_append;
use super::run::ConnJob;
use super::stats::ErrorKind;
use super::target::upgrade_head;
use super::ws;

/// Spacing between idle WebSocket connection starts, so 10,000 of them do not hit the
/// listener's backlog in the same millisecond.
const IDLE_STAGGER: Duration = Duration::from_micros(50);
/// How long the final liveness echo of an idle WebSocket may take.
const IDLE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

static FILL: [u8; 64 * 1024] = [b'w'; 64 * 1024];

/// Upgrades `stream`; returns the bytes already read past the 101 response.
async fn handshake(w: &Worker, mut stream: &TcpStream) -> Result<BytesMut, ErrorKind> {
    let key = ws::client_key();
    let BufResult(res, _) = stream.write_all(upgrade_head(&w.plan.target, &key)).await;
    res.map_err(|_| ErrorKind::Connect)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(len) = parse_upgrade(&buf, &key)? {
            buf.advance(len);
            return Ok(buf);
        }
        let (res, b) = read_append(&mut stream, buf, 4096).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return Err(ErrorKind::Connect),
            Ok(_) => {}
        }
    }
}

/// Checks a 101 response with the right `Sec-WebSocket-Accept`; returns the head length.
fn parse_upgrade(buf: &[u8], key: &str) -> Result<Option<usize>, ErrorKind> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => return Ok(None),
        _ => return Err(ErrorKind::Protocol),
    };
    let expected = ws::accept_key(key.as_bytes());
    let accepted = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-accept")
            && h.value.trim_ascii() == expected.as_bytes()
    });
    match resp.code {
        Some(101) if accepted => Ok(Some(len)),
        Some(c) if c >= 400 => Err(if c >= 500 {
            ErrorKind::Status5xx
        } else {
            ErrorKind::Status4xx
        }),
        _ => Err(ErrorKind::Protocol),
    }
}

/// A masked binary frame of `size` bytes, encoded once per connection.
fn message_frame(size: usize) -> Bytes {
    let mut payload = Vec::with_capacity(size);
    while payload.len() < size {
        let n = (size - payload.len()).min(FILL.len());
        payload.extend_from_slice(&FILL[..n]);
    }
    let key = uuid::Uuid::new_v4().as_bytes()[..4]
        .try_into()
        .unwrap_or([7, 7, 7, 7]);
    let mut frame = BytesMut::with_capacity(size + 14);
    ws::encode_frame(ws::OP_BINARY, &payload, Some(key), &mut frame);
    frame.freeze()
}

/// Sends `frame` and reads frames until a data frame comes back (the echo).
async fn ws_round_trip(
    mut stream: &TcpStream,
    frame: Bytes,
    mut buf: BytesMut,
) -> (Result<u64, ErrorKind>, BytesMut) {
    let BufResult(res, _) = stream.write_all(frame).await;
    if res.is_err() {
        return (Err(ErrorKind::Io), buf);
    }
    let mut current: Option<(u8, u64, u64)> = None; // (opcode, total, remaining)
    loop {
        match current {
            Some((op, total, rem)) => {
                let n = rem.min(buf.len() as u64);
                buf.advance(n as usize);
                if rem == n {
                    if matches!(op, 0x0..=0x2) {
                        return (Ok(total), buf);
                    }
                    current = None;
                    continue;
                }
                current = Some((op, total, rem - n));
            }
            None => match ws::parse_head(&buf) {
                Ok(Some(h)) if h.opcode == ws::OP_CLOSE => return (Err(ErrorKind::Io), buf),
                Ok(Some(h)) => {
                    buf.advance(h.head_len);
                    current = Some((h.opcode, h.len, h.len));
                    continue;
                }
                Ok(None) => {}
                Err(_) => return (Err(ErrorKind::Protocol), buf),
            },
        }
        let (res, b) = read_append(&mut stream, buf, READ_BUF / 4).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return (Err(ErrorKind::Io), buf),
            Ok(_) => {}
        }
    }
}

/// WebSocket echo: one connection, round trips until quota or deadline.
pub(super) async fn ws_connection(w: &Worker, mut job: ConnJob) {
    let frame = message_frame(w.plan.message_size);
    let size = w.plan.message_size as u64;
    let mut sent = 0u64;
    'connect: while w.may_send(sent, job.quota) {
        let Some((stream, mut rbuf)) = open(w, &mut sent).await else {
            continue;
        };
        while w.may_send(sent, job.quota) {
            let Some(started) = w.next_start(&mut job.schedule).await else {
                break 'connect;
            };
            sent += 1;
            let rt = ws_round_trip(&stream, frame.clone(), rbuf);
            let (res, b) = match compio::time::timeout(w.plan.timeout, rt).await {
                Ok(r) => r,
                Err(_) => (Err(ErrorKind::Timeout), BytesMut::new()),
            };
            rbuf = b;
            match res {
                Ok(n) if n == size => {
                    w.stats
                        .borrow_mut()
                        .record(started.elapsed(), n, size, w.live());
                }
                Ok(_) => {
                    w.error(ErrorKind::Protocol);
                    continue 'connect;
                }
                Err(kind) => {
                    w.error(kind);
                    continue 'connect;
                }
            }
        }
        break;
    }
}

/// Connects and upgrades, recording failures; `None` after a failure (already counted).
async fn open(w: &Worker, sent: &mut u64) -> Option<(TcpStream, BytesMut)> {
    let stream = match w.connect().await {
        Ok(s) => s,
        Err(kind) => {
            *sent += 1;
            w.error(kind);
            w.pause_after_connect_error().await;
            return None;
        }
    };
    let kind = match compio::time::timeout(w.plan.timeout, handshake(w, &stream)).await {
        Ok(Ok(rest)) => return Some((stream, rest)),
        Ok(Err(kind)) => kind,
        Err(_) => ErrorKind::Timeout,
    };
    *sent += 1;
    w.error(kind);
    // A refused upgrade (404, 502) would otherwise be retried in a tight loop.
    w.pause_after_connect_error().await;
    None
}

/// Idle WebSocket: upgrade, hold until the deadline, then prove liveness with one echo.
/// Counts one request per WebSocket that passed (so `requests` = WebSockets held), with
/// the handshake time as its latency; every failure is an error by kind.
pub(super) async fn ws_idle_connection(w: &Worker, job: ConnJob) {
    compio::time::sleep(IDLE_STAGGER * (job.index as u32)).await;
    let Some(deadline) = w.deadline else { return };
    let mut attempts = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        let Some((stream, _)) = open(w, &mut attempts).await else {
            continue;
        };
        let handshake = started.elapsed();
        w.stats.borrow_mut().record_status(101, w.live());
        let mut reader = &stream;
        let hold = compio::time::timeout_at(deadline, reader.read(BytesMut::with_capacity(1024)));
        match hold.await {
            // Still open at the deadline: the point of this mode.
            Err(_) => {}
            // The server or something in between dropped an idle connection.
            Ok(BufResult(Ok(0) | Err(_), _)) => {
                w.error(ErrorKind::Io);
                continue;
            }
            Ok(BufResult(Ok(_), _)) => {
                w.error(ErrorKind::Protocol);
                continue;
            }
        }
        let check = ws_round_trip(&stream, message_frame(w.plan.message_size), BytesMut::new());
        match compio::time::timeout(IDLE_CHECK_TIMEOUT, check).await {
            // One "request" per WebSocket held to the end and still echoing; its latency
            // is the upgrade handshake's.
            Ok((Ok(_), _)) => w.stats.borrow_mut().record(handshake, 0, 0, w.live()),
            Ok((Err(kind), _)) => w.error(kind),
            Err(_) => w.error(ErrorKind::Timeout),
        }
        return;
    }
}

/// Raw TCP echo: write `message_size` bytes while reading as many back.
pub(super) async fn tcp_connection(w: &Worker, mut job: ConnJob) {
    let size = w.plan.message_size as u64;
    let mut sent = 0u64;
    'connect: while w.may_send(sent, job.quota) {
        let stream = match w.connect().await {
            Ok(s) => s,
            Err(kind) => {
                sent += 1;
                w.error(kind);
                w.pause_after_connect_error().await;
                continue;
            }
        };
        let mut rbuf = Vec::with_capacity(READ_BUF);
        while w.may_send(sent, job.quota) {
            let Some(started) = w.next_start(&mut job.schedule).await else {
                break 'connect;
            };
            sent += 1;
            let echo = futures_util::future::join(
                write_bytes(&stream, size),
                read_bytes(&stream, size, rbuf),
            );
            let (wres, (rres, b)) = match compio::time::timeout(w.plan.timeout, echo).await {
                Ok(r) => r,
                Err(_) => (
                    Err(ErrorKind::Timeout),
                    (Err(ErrorKind::Timeout), Vec::new()),
                ),
            };
            rbuf = b;
            match wres.and(rres) {
                Ok(()) => w
                    .stats
                    .borrow_mut()
                    .record(started.elapsed(), size, size, w.live()),
                Err(kind) => {
                    w.error(kind);
                    continue 'connect;
                }
            }
        }
        break;
    }
}

async fn write_bytes(mut stream: &TcpStream, mut remaining: u64) -> Result<(), ErrorKind> {
    while remaining > 0 {
        let n = remaining.min(FILL.len() as u64) as usize;
        let BufResult(res, _) = stream.write_all(&FILL[..n]).await;
        res.map_err(|_| ErrorKind::Io)?;
        remaining -= n as u64;
    }
    Ok(())
}

async fn read_bytes(
    mut stream: &TcpStream,
    mut remaining: u64,
    mut buf: Vec<u8>,
) -> (Result<(), ErrorKind>, Vec<u8>) {
    while remaining > 0 {
        buf.clear();
        let BufResult(res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return (Err(ErrorKind::Io), buf),
            Ok(n) if n as u64 > remaining => return (Err(ErrorKind::Protocol), buf),
            Ok(n) => remaining -= n as u64,
        }
    }
    (Ok(()), buf)
}
