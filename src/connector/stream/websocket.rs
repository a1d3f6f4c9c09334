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
use futures_util::io::{AsyncReadExt, AsyncWriteExt};

use super::{BodyReader, BodyWriter, StreamError};

use crate::connector::origin::OriginStream;
use crate::connector::origin::http::ReadSize;
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
    bridge_from(recv, send, origin, BytesMut::new()).await;
}

/// [`bridge`] with `pending`: edge bytes already received but not yet decoded as frames (a
/// SOCKS handshake read past its last message).
pub async fn bridge_from<B: BodyReader, W: BodyWriter>(
    recv: &mut B,
    send: &mut W,
    origin: OriginStream,
    pending: BytesMut,
) {
    let (mut rd, mut wr) = origin.into_compat().split();
    // At most one pong waits to be sent; a newer ping replaces it (RFC 6455 §5.5.3 allows
    // answering only the most recent ping).
    let pong: RefCell<Option<Bytes>> = RefCell::new(None);
    let close_code: RefCell<Option<u16>> = RefCell::new(None);
    {
        let down = pin!(async {
            let mut buf = BytesMut::new();
            let mut size = ReadSize::new();
            loop {
                match next_down(&mut rd, &mut buf, &mut size, &pong).await {
                    Down::Control(op, payload) => {
                        if send_frame(send, op, payload).await.is_err() {
                            return;
                        }
                    }
                    Down::Data => {
                        if send_frame(send, OP_BINARY, buf.split().freeze())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Down::End => return,
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
                            if wr.write_all(&f.payload).await.is_err() || wr.flush().await.is_err()
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
    /// A control frame (pong) to send.
    Control(u8, Bytes),
    /// New origin bytes are in the buffer.
    Data,
    /// The origin closed or failed.
    End,
}

/// Waits for a pending pong or origin bytes, whichever comes first. The read happens inside
/// one poll, so a pending read never leaves the buffer half-resized.
async fn next_down(
    rd: &mut futures_util::io::ReadHalf<crate::connector::origin::CompatStream>,
    buf: &mut BytesMut,
    size: &mut ReadSize,
    pong: &RefCell<Option<Bytes>>,
) -> Down {
    use futures_util::io::AsyncRead;
    poll_fn(|cx| {
        if let Some(payload) = pong.borrow_mut().take() {
            return Poll::Ready(Down::Control(OP_PONG, payload));
        }
        let start = buf.len();
        buf.resize(start + size.get(), 0);
        let res = std::pin::Pin::new(&mut *rd).poll_read(cx, &mut buf[start..]);
        match res {
            Poll::Ready(Ok(n)) if n > 0 => {
                size.update(n);
                buf.truncate(start + n);
                Poll::Ready(Down::Data)
            }
            Poll::Ready(_) => {
                buf.truncate(start);
                Poll::Ready(Down::End)
            }
            Poll::Pending => {
                buf.truncate(start);
                if start == 0 {
                    // Idle: hold no read buffer while waiting (the next poll takes a new one).
                    *buf = BytesMut::new();
                }
                Poll::Pending
            }
        }
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
