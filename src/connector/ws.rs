//! The connector as a websocket *server* (RFC 6455 framing only): for stream services (`tcp://`,
//! `ssh://`, `rdp://`, `smb://`, bastion) the edge's stream carries websocket frames whose
//! payload goes to a TCP origin (spec §3.6, cloudflared's `access` path); `hello_world`'s `/ws`
//! echoes frames back. Frames are decoded from bytes the caller feeds and unmasked in place.
//!
//! Limits: a frame larger than [`MAX_FRAME`] ends the stream.

use std::pin::pin;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use h2::{RecvStream, SendStream};

use super::origin::OriginStream;
use super::origin::http::ReadSize;
use super::pipe::first_of;
use crate::runtime::h2stream::{release, send_all};

/// Largest frame payload accepted from the eyeball.
pub const MAX_FRAME: u64 = 16 << 20;

pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Bytes,
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("websocket: {0}")]
pub struct WsError(&'static str);

/// Decodes one frame from the front of `buf`; `Ok(None)` means more bytes are needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WsError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(WsError("frame too large"));
    }
    let mut mask = [0u8; 4];
    if masked {
        match buf.get(pos..pos + 4) {
            Some(m) => mask.copy_from_slice(m),
            None => return Ok(None),
        }
        pos += 4;
    }
    let len = len as usize;
    if buf.len() < pos + len {
        buf.reserve(pos + len - buf.len());
        return Ok(None);
    }
    buf.advance(pos);
    let mut payload = buf.split_to(len);
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some(Frame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        payload: payload.freeze(),
    }))
}

/// The header of an unmasked server frame carrying `len` payload bytes.
pub fn header(fin: bool, opcode: u8, len: usize) -> Bytes {
    let mut h = BytesMut::with_capacity(10);
    h.put_u8(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    if len < 126 {
        h.put_u8(len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        h.put_u8(126);
        h.put_u16(l);
    } else {
        h.put_u8(127);
        h.put_u64(len as u64);
    }
    h.freeze()
}

/// Sends one unmasked frame (header and payload as separate DATA, so the payload is not copied).
pub async fn send_frame(
    send: &mut SendStream<Bytes>,
    opcode: u8,
    payload: Bytes,
) -> Result<(), h2::Error> {
    send_all(send, header(true, opcode, payload.len())).await?;
    if !payload.is_empty() {
        send_all(send, payload).await?;
    }
    Ok(())
}

/// Bridges websocket frames on the h2 stream with a TCP origin until either side ends. Pings
/// from the eyeball are answered (cloudflared's access client drops a connection whose pings
/// go unanswered); the answering goes through the origin->edge task, which owns the send half.
pub async fn bridge(recv: &mut RecvStream, send: &mut SendStream<Bytes>, origin: OriginStream) {
    bridge_from(recv, send, origin, BytesMut::new()).await;
}

/// [`bridge`] with `pending`: edge bytes already received but not yet decoded as frames (a
/// SOCKS handshake read past its last message).
pub async fn bridge_from(
    recv: &mut RecvStream,
    send: &mut SendStream<Bytes>,
    origin: OriginStream,
    pending: BytesMut,
) {
    let (mut rd, mut wr) = origin.split();
    let (ctrl_tx, mut ctrl_rx) = futures_channel::mpsc::unbounded::<(u8, Bytes)>();
    {
        let down = pin!(async {
            let mut buf = BytesMut::new();
            let mut size = ReadSize::new();
            loop {
                match next_down(&mut rd, &mut buf, &mut size, &mut ctrl_rx).await {
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
                    None => match recv.data().await {
                        Some(Ok(chunk)) => chunk,
                        _ => return,
                    },
                };
                let n = chunk.len();
                buf.extend_from_slice(&chunk);
                release(recv, n);
                loop {
                    match decode(&mut buf) {
                        Ok(Some(f)) if f.opcode == OP_CLOSE => return,
                        Ok(Some(f)) if f.opcode == OP_PING => {
                            let _ = ctrl_tx.unbounded_send((OP_PONG, f.payload));
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
                            return;
                        }
                    }
                }
            }
        });
        first_of(down, up).await;
    }
    let _ = wr.close().await;
    let _ = send_frame(send, OP_CLOSE, Bytes::from_static(&[0x03, 0xe8])).await;
    let _ = send.send_data(Bytes::new(), true);
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

/// Waits for a queued control frame or origin bytes, whichever comes first. The read happens
/// inside one poll, so a pending read never leaves the buffer half-resized.
async fn next_down(
    rd: &mut futures_util::io::ReadHalf<OriginStream>,
    buf: &mut BytesMut,
    size: &mut ReadSize,
    ctrl: &mut futures_channel::mpsc::UnboundedReceiver<(u8, Bytes)>,
) -> Down {
    use futures_util::StreamExt;
    use futures_util::io::AsyncRead;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(Some((op, payload))) = ctrl.poll_next_unpin(cx) {
            return std::task::Poll::Ready(Down::Control(op, payload));
        }
        let start = buf.len();
        buf.resize(start + size.get(), 0);
        let res = std::pin::Pin::new(&mut *rd).poll_read(cx, &mut buf[start..]);
        match res {
            std::task::Poll::Ready(Ok(n)) if n > 0 => {
                size.update(n);
                buf.truncate(start + n);
                std::task::Poll::Ready(Down::Data)
            }
            std::task::Poll::Ready(_) => {
                buf.truncate(start);
                std::task::Poll::Ready(Down::End)
            }
            std::task::Poll::Pending => {
                buf.truncate(start);
                std::task::Poll::Pending
            }
        }
    })
    .await
}

/// Echoes every data frame back and answers pings (hello_world's `/ws`).
pub async fn echo(recv: &mut RecvStream, send: &mut SendStream<Bytes>) {
    let mut buf = BytesMut::new();
    'outer: while let Some(Ok(chunk)) = recv.data().await {
        let n = chunk.len();
        buf.extend_from_slice(&chunk);
        release(recv, n);
        loop {
            let res = match decode(&mut buf) {
                Ok(Some(f)) if f.opcode == OP_CLOSE => {
                    let _ = send_frame(send, OP_CLOSE, f.payload).await;
                    break 'outer;
                }
                Ok(Some(f)) if f.opcode == OP_PING => send_frame(send, OP_PONG, f.payload).await,
                Ok(Some(f)) if f.opcode == OP_PONG => Ok(()),
                Ok(Some(f)) => send_all(send, header(f.fin, f.opcode, f.payload.len()))
                    .await
                    .and(send_all(send, f.payload).await),
                Ok(None) => break,
                Err(_) => break 'outer,
            };
            if res.is_err() {
                break 'outer;
            }
        }
    }
    let _ = send.send_data(Bytes::new(), true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, payload: &[u8]) -> BytesMut {
        let mask = [1u8, 2, 3, 4];
        let mut b = BytesMut::new();
        b.put_u8(0x80 | opcode);
        if payload.len() < 126 {
            b.put_u8(0x80 | payload.len() as u8);
        } else {
            b.put_u8(0x80 | 126);
            b.put_u16(payload.len() as u16);
        }
        b.put_slice(&mask);
        b.extend(payload.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]));
        b
    }

    #[test]
    fn decodes_masked_frames_incrementally() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let whole = masked(OP_BINARY, &payload);
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let got = decode(&mut buf).unwrap();
            if i + 1 < whole.len() {
                assert!(got.is_none());
            } else {
                let f = got.unwrap();
                assert_eq!((f.fin, f.opcode), (true, OP_BINARY));
                assert_eq!(&f.payload[..], &payload[..]);
            }
        }
        let mut huge = BytesMut::from(&[0x82u8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(decode(&mut huge).is_err());
        assert_eq!(&header(true, OP_BINARY, 5)[..], &[0x82, 5]);
        assert_eq!(&header(true, OP_TEXT, 300)[..], &[0x81, 126, 1, 44]);
    }
}
