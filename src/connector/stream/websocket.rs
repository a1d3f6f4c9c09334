//! The connector as a websocket *server* (RFC 6455 framing only): for stream services (`tcp://`,
//! `ssh://`, `rdp://`, `smb://`, bastion) the edge's stream carries websocket frames whose
//! payload goes to a TCP origin (spec §3.6, cloudflared's `access` path); `hello_world`'s `/ws`
//! echoes frames back. Frames are decoded from bytes the caller feeds and unmasked in place.
//!
//! Framing is [`crate::proto::ws`]: control frames of at most 125 bytes, never fragmented;
//! reserved bits and opcodes end the stream with close code 1002.
//!
//! # Memory per stream
//! At rest: the bridge's state and at most one pending pong (125 bytes): a newer ping replaces
//! a pong not yet sent, so a visitor flooding pings and never reading holds no more. In flight:
//! one received DATA frame and the frame being reassembled (at most `MAX_FRAME`, window-paced),
//! whose window is released only after its payload went into the origin socket; downstream one
//! origin read. A frame's header travels in the same DATA frame as its payload.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};

use super::{BodyReader, BodyWriter, StreamError};

use crate::connector::origin::http::{ReadSize, fill_sized};
use crate::connector::origin::{OriginRead, OriginStream, OriginWrite};
pub use crate::proto::ws::{
    Error as WsError, Frame, MAX_FRAME, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
    decode, header,
};
use crate::proto::ws::{close_payload, encode};

/// Sends one unmasked frame: header and (the start of) the payload in one DATA frame.
pub async fn send_frame<W: BodyWriter>(
    send: &mut W,
    opcode: u8,
    payload: Bytes,
) -> Result<(), StreamError> {
    let (head, rest) = encode(true, opcode, payload);
    send.write(head).await?;
    if !rest.is_empty() {
        send.write(rest).await?;
    }
    Ok(())
}

/// Bridges websocket frames on the h2 stream with a TCP origin until either side ends. Pings
/// from the eyeball are answered (cloudflared's access client drops a connection whose pings
/// go unanswered); the answering goes through the origin->edge task, which owns the send half.
pub async fn bridge<B: BodyReader, W: BodyWriter>(
    recv: &mut B,
    send: &mut W,
    origin: OriginStream,
) {
    let (rd, wr) = origin.split();
    bridge_from(recv, send, rd, wr, BytesMut::new()).await;
}

/// [`bridge`] on an origin's halves, with `pending`: edge bytes already received but not yet
/// decoded as frames (a SOCKS handshake read past its last message). A bare origin socket is
/// read as [`pipe::pipe_raw`](super::pipe::pipe_raw) reads it: from the core's buffer pool
/// while the stream is idle or interactive, so an idle bridge holds no read buffer.
pub async fn bridge_from<B: BodyReader, W: BodyWriter>(
    recv: &mut B,
    send: &mut W,
    mut rd: OriginRead,
    mut wr: OriginWrite,
    pending: BytesMut,
) {
    // At most one pong waits to be sent; a newer ping replaces it (RFC 6455 §5.5.3 allows
    // answering only the most recent ping).
    let pong: RefCell<Option<Bytes>> = RefCell::new(None);
    let close_code: RefCell<Option<u16>> = RefCell::new(None);
    {
        let down = pin!(async {
            let mut buf = BytesMut::new();
            let mut size = ReadSize::new();
            loop {
                let read = {
                    // One read stays in flight while pongs go out (dropping a completed read
                    // would lose its bytes).
                    let mut read = pin!(read_down(&mut rd, &mut buf, &mut size));
                    loop {
                        match next_down(read.as_mut(), &pong).await {
                            Down::Pong(payload) => {
                                if send_frame(send, OP_PONG, payload).await.is_err() {
                                    return;
                                }
                            }
                            Down::Read(r) => break r,
                        }
                    }
                };
                match read {
                    Ok(n) if n > 0 => {
                        if send_frame(send, OP_BINARY, buf.split().freeze())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        let up = pin!(async {
            let mut buf = pending;
            let mut first = Some(Bytes::new());
            loop {
                // The pending bytes are decoded before the first read.
                let chunk = match first.take() {
                    Some(empty) => empty,
                    None => match recv.chunk().await {
                        Ok(Some(chunk)) => chunk,
                        _ => return,
                    },
                };
                let n = chunk.len();
                buf.extend_from_slice(&chunk);
                loop {
                    match decode(&mut buf) {
                        Ok(Some(f)) if f.opcode == OP_CLOSE => return,
                        Ok(Some(f)) if f.opcode == OP_PING => {
                            *pong.borrow_mut() = Some(f.payload);
                        }
                        Ok(Some(f)) if matches!(f.opcode, OP_CONT | OP_TEXT | OP_BINARY) => {
                            if f.payload.is_empty() {
                                continue;
                            }
                            // Boxed: the write's state exists only while data flows, not in
                            // every idle bridge's task (one allocation per frame).
                            if Box::pin(wr.write_bytes(f.payload)).await.is_err()
                                || wr.flush().await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            log::debug!(error = e.to_string().as_str(); "websocket stream ended");
                            *close_code.borrow_mut() = Some(e.close_code());
                            return;
                        }
                    }
                }
                // An idle stream keeps no reassembly buffer.
                if buf.is_empty() {
                    buf = BytesMut::new();
                }
                // The chunk's window goes back only now that its payload is in the origin
                // socket (or buffered as the start of a frame, bounded by MAX_FRAME).
                recv.release(n);
            }
        });
        both_until_first(up, down).await;
    }
    let _ = wr.close().await;
    let code = close_code.borrow_mut().take().unwrap_or(1000);
    let _ = send_frame(send, OP_CLOSE, close_payload(code)).await;
    let _ = send.finish(None);
}

/// Polls `up` then `down` until either completes; `up` first, so a pong it records is seen by
/// `down` in the same round.
async fn both_until_first<A: Future, B: Future>(
    mut up: std::pin::Pin<&mut A>,
    mut down: std::pin::Pin<&mut B>,
) {
    poll_fn(|cx| {
        if up.as_mut().poll(cx).is_ready() || down.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// What the origin->edge direction does next.
enum Down {
    /// A pong to send (the read stays in flight).
    Pong(Bytes),
    /// The origin read completed: bytes appended to the buffer, 0 at EOF, or an error.
    Read(std::io::Result<usize>),
}

/// One origin read for the origin->edge direction: from the core's buffer pool until a read
/// fills its buffer (idle or interactive), then straight into `buf`, growing.
async fn read_down(
    rd: &mut OriginRead,
    buf: &mut BytesMut,
    size: &mut ReadSize,
) -> std::io::Result<usize> {
    if size.is_min() {
        let n = rd.read_idle(buf, size.get()).await?;
        size.update(n);
        Ok(n)
    } else {
        // Boxed: only a busy stream reads this way (one allocation per bulk read).
        Box::pin(fill_sized(rd, buf, size)).await
    }
}

/// Waits for a pending pong or the origin read, whichever comes first; a pong does not
/// disturb the read in flight. `up` is polled before `down` in every round
/// ([`both_until_first`]), so a pong it records needs no wake-up of its own.
async fn next_down<F: Future<Output = std::io::Result<usize>>>(
    mut read: std::pin::Pin<&mut F>,
    pong: &RefCell<Option<Bytes>>,
) -> Down {
    poll_fn(|cx| {
        if let Some(payload) = pong.borrow_mut().take() {
            return Poll::Ready(Down::Pong(payload));
        }
        read.as_mut().poll(cx).map(Down::Read)
    })
    .await
}

/// Echoes every data frame back and answers pings (hello_world's `/ws`). A protocol error is
/// answered with close 1002.
pub async fn echo<B: BodyReader, W: BodyWriter>(recv: &mut B, send: &mut W) {
    let mut buf = BytesMut::new();
    'outer: while let Ok(Some(chunk)) = recv.chunk().await {
        let n = chunk.len();
        buf.extend_from_slice(&chunk);
        loop {
            let res = match decode(&mut buf) {
                Ok(Some(f)) if f.opcode == OP_CLOSE => {
                    let _ = send_frame(send, OP_CLOSE, f.payload).await;
                    break 'outer;
                }
                Ok(Some(f)) if f.opcode == OP_PING => send_frame(send, OP_PONG, f.payload).await,
                Ok(Some(f)) if f.opcode == OP_PONG => Ok(()),
                Ok(Some(f)) => {
                    let (head, rest) = crate::proto::ws::encode(f.fin, f.opcode, f.payload);
                    match send.write(head).await {
                        Ok(()) if !rest.is_empty() => send.write(rest).await,
                        r => r,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = send_frame(send, OP_CLOSE, close_payload(e.close_code())).await;
                    break 'outer;
                }
            };
            if res.is_err() {
                break 'outer;
            }
        }
        // Released once echoed: the echo's own send window paces the visitor.
        recv.release(n);
    }
    let _ = send.finish(None);
}
