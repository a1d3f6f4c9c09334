//! Raw byte piping between an HTTP/2 stream and an origin socket, both directions at once:
//! upgraded websockets (spec §3.6) and private-network TCP streams (§3.7). Either side ending
//! ends both (cloudflared does no half-close here). Every write is flushed at once: these are
//! interactive streams.

#![forbid(unsafe_code)]

use std::future::poll_fn;
use std::pin::pin;
use std::task::Poll;

use bytes::BytesMut;

use super::{BodyReader, BodyWriter};
use crate::connector::origin::http::{ReadSize, fill_sized};
use crate::connector::origin::{OriginRead, OriginWrite};

/// An upgraded stream, answered and ready to pipe: the origin's halves, origin bytes already
/// read past the 101 head, and the stream's request body and response writer. Everything the
/// request needed up to the 101 is gone by the time this exists: the stream's task holds only
/// this and the piping future while the stream idles (the memory budget in the module docs of
/// `stream`).
pub struct Upgraded<B, W> {
    pub rd: OriginRead,
    pub wr: OriginWrite,
    /// Origin bytes read past the response head.
    pub leftover: BytesMut,
    pub recv: B,
    pub send: W,
}

impl<B: BodyReader, W: BodyWriter> Upgraded<B, W> {
    /// [`pipe_raw`] until either side ends. The parts are piped where they are (a future
    /// keeps its arguments for its whole life: moving them on would store them twice).
    pub async fn pipe(mut self) {
        let s = &mut self;
        pipe_raw(
            &mut s.rd,
            &mut s.wr,
            &mut s.leftover,
            &mut s.recv,
            &mut s.send,
        )
        .await;
    }
}

/// Pipes until either direction ends, then ends the h2 stream. `leftover` holds origin bytes
/// already read (e.g. after a 101 response head).
pub async fn pipe_raw<B: BodyReader, W: BodyWriter>(
    rd: &mut OriginRead,
    wr: &mut OriginWrite,
    leftover: &mut BytesMut,
    recv: &mut B,
    send: &mut W,
) {
    {
        let down = pin!(async {
            if !leftover.is_empty() {
                send.write(leftover.split().freeze()).await.ok()?;
            }
            // Let go of the head buffer's allocation: this stream may now sit idle for hours.
            *leftover = BytesMut::new();
            let mut size = ReadSize::new();
            loop {
                // Until a read fills its buffer the stream is interactive or idle: read from
                // the core's buffer pool so that a waiting read holds no buffer; bulk
                // transfers then read straight into `leftover`, growing.
                let read = if size.is_min() {
                    rd.read_idle(leftover, size.get())
                        .await
                        .inspect(|&n| size.update(n))
                } else {
                    // Boxed: only a busy stream reads this way, and its state is not part of
                    // every idle stream's task (one allocation per bulk read).
                    Box::pin(fill_sized(rd, leftover, &mut size)).await
                };
                match read {
                    Ok(0) | Err(_) => return Some(()),
                    Ok(_) => send.write(leftover.split().freeze()).await.ok()?,
                }
            }
        });
        let up = pin!(edge_to_origin(recv, wr));
        first_of(down, up).await;
    }
    let _ = wr.close().await;
    let _ = send.finish(None);
}

/// Copies request DATA into `wr`, releasing window after each write.
pub async fn edge_to_origin<B: BodyReader>(recv: &mut B, wr: &mut OriginWrite) -> Option<()> {
    while let Some(chunk) = recv.chunk().await.ok()? {
        let n = chunk.len();
        // Boxed: the write's state (most of this future's) exists only while data flows, not
        // while the stream idles waiting for the next chunk (one allocation per chunk).
        Box::pin(wr.write_bytes(chunk)).await.ok()?;
        wr.flush().await.ok()?;
        recv.release(n);
    }
    Some(())
}

/// Completes when either future does.
pub async fn first_of<A, B>(mut a: std::pin::Pin<&mut A>, mut b: std::pin::Pin<&mut B>)
where
    A: Future,
    B: Future,
{
    poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
