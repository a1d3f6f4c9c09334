//! Sends that go to the kernel at once when a worker has just woken up: a non-blocking
//! `sendmsg` first, the owned-buffer write only for what the socket did not take.
//!
//! An io_uring send is submitted with the worker's next `io_uring_enter` and completes there,
//! so that enter returns at once with its completion: the worker comes back to user space,
//! runs the completion, and enters the kernel a second time to wait for the reply it needs.
//! A non-blocking `sendmsg` costs the same one kernel crossing and the same TCP work and
//! leaves nothing to complete, so the next enter sleeps until the reply. With one request at
//! a time that round trip through user space sat on every hop the visitor waits on (two per
//! request in the edge and two in a connector).
//!
//! Under load the same direct sends cost more than they save: each one wakes its receiver
//! right then (which may take the CPU from the sender mid-turn), where the owned writes of a
//! busy turn go out together in one enter, and a tunnel connection's flushes stop batching
//! behind the write in flight. Measured with two tunnels side by side on the 2-core machine,
//! 1 KiB GETs, CPU per request of each process: every send direct was 5-6 us cheaper at
//! c=1 and 3-9 us dearer at c=64. So a worker gets a budget of [`DIRECT_PER_QUIET_TURN`]
//! direct sends only for a turn of its loop that began with a wait in the kernel
//! ([`begin_turn`]); a turn that found work already waiting sends the owned way, as before.
//! A thread that never calls `begin_turn` (tests, tools on compio's own `block_on`) never
//! sends directly.
//!
//! The socket's buffer bounds what a direct send takes; when it is full, or takes part, the
//! rest goes the owned way and the caller waits for it as before, so backpressure and
//! ordering are unchanged. Callers never start a direct send while an owned write to the same
//! socket is in flight.

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;

use bytes::{Buf, Bytes};
use compio::buf::BufResult;
use compio::io::{AsyncWrite, AsyncWriteExt};

/// Direct sends allowed in a turn of a worker's loop that began with a wait: one hop's
/// request or response, plus one more flush (an HTTP/2 WINDOW_UPDATE, say) on the way.
pub const DIRECT_PER_QUIET_TURN: u8 = 2;

thread_local! {
    static DIRECT_BUDGET: Cell<u8> = const { Cell::new(0) };
}

/// Starts a turn of the worker loop on this thread: `quiet` when the driver poll before it
/// waited in the kernel (nothing was ready), which refills the direct-send budget; a busy
/// turn gets none.
pub fn begin_turn(quiet: bool) {
    DIRECT_BUDGET.set(if quiet { DIRECT_PER_QUIET_TURN } else { 0 });
}

/// Takes one direct send from this turn's budget.
pub fn take_direct() -> bool {
    DIRECT_BUDGET.with(|b| {
        let left = b.get();
        b.set(left.saturating_sub(1));
        left > 0
    })
}

/// Offers `bufs`, in order, to the socket with one non-blocking `sendmsg` (no `SIGPIPE`):
/// the number of bytes it took, `Ok(0)` when its send buffer is full.
pub fn send_now(socket: &impl AsFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
    let mut no_control = rustix::net::SendAncillaryBuffer::default();
    match rustix::net::sendmsg(socket, bufs, &mut no_control, flags) {
        Ok(n) => Ok(n),
        Err(rustix::io::Errno::AGAIN) => Ok(0),
        Err(rustix::io::Errno::INTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// `io::Write` over [`send_now`], for rustls' `write_tls`: its queued records go to the
/// kernel from rustls' own buffers. A full socket buffer is `WouldBlock`, and rustls keeps
/// what was not sent.
pub struct DirectSend<'a, T>(pub &'a T);

impl<T: AsFd> io::Write for DirectSend<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match send_now(self.0, bufs)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes all of `data`: directly what the socket takes now when this turn's budget allows
/// ([`take_direct`]), the rest (or all of it) as an owned write.
pub async fn write_all<S>(socket: &mut S, mut data: Bytes) -> io::Result<()>
where
    S: AsyncWrite + AsFd,
{
    if data.is_empty() {
        return Ok(());
    }
    if !take_direct() {
        return socket.write_all(data).await.0;
    }
    let sent = send_now(socket, &[IoSlice::new(&data)])?;
    if sent == data.len() {
        return Ok(());
    }
    data.advance(sent);
    socket.write_all(data).await.0
}

/// Writes all of `bufs` in order: directly what the socket takes now (one `sendmsg` of up to
/// [`MAX_DIRECT_SLICES`] of them) when this turn's budget allows ([`take_direct`]), the rest
/// (or all of them) as one owned vectored write. `bufs` comes back emptied, its capacity
/// kept, whatever the outcome.
pub async fn write_vectored_all<S>(
    socket: &mut S,
    mut bufs: Vec<Bytes>,
) -> (io::Result<()>, Vec<Bytes>)
where
    S: AsyncWrite + AsFd,
{
    bufs.retain(|b| !b.is_empty());
    if bufs.is_empty() {
        return (Ok(()), bufs);
    }
    if !take_direct() {
        let BufResult(result, mut bufs) = socket.write_vectored_all(bufs).await;
        bufs.clear();
        return (result, bufs);
    }
    let mut sent = {
        let mut slices = [IoSlice::new(&[]); MAX_DIRECT_SLICES];
        let n = bufs.len().min(MAX_DIRECT_SLICES);
        for (slot, b) in slices.iter_mut().zip(&bufs) {
            *slot = IoSlice::new(b);
        }
        match send_now(socket, &slices[..n]) {
            Ok(sent) => sent,
            Err(e) => {
                bufs.clear();
                return (Err(e), bufs);
            }
        }
    };
    // Drop what went out: whole chunks, then the front of a partly sent one.
    let whole = bufs
        .iter()
        .take_while(|b| {
            let taken = sent >= b.len();
            if taken {
                sent -= b.len();
            }
            taken
        })
        .count();
    bufs.drain(..whole);
    if let Some(first) = bufs.first_mut() {
        first.advance(sent);
    }
    if bufs.is_empty() {
        return (Ok(()), bufs);
    }
    let BufResult(result, mut bufs) = socket.write_vectored_all(bufs).await;
    bufs.clear();
    (result, bufs)
}

/// The most chunks one direct `sendmsg` offers (an eyeball's write queue holds at most 16).
pub const MAX_DIRECT_SLICES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn only_a_quiet_turn_allows_direct_sends_and_only_its_budget() {
        begin_turn(true);
        for _ in 0..DIRECT_PER_QUIET_TURN {
            assert!(take_direct());
        }
        assert!(!take_direct());
        begin_turn(false);
        assert!(!take_direct());
        begin_turn(true);
        assert!(take_direct());
        begin_turn(false);
        assert!(
            !take_direct(),
            "a busy turn keeps no budget left over from a quiet one"
        );
    }

    #[test]
    fn send_now_takes_what_fits_and_reports_a_full_buffer_as_zero() {
        let (a, mut b) = pair();
        a.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 1 << 20];
        let mut total = 0usize;
        let mut zero_seen = false;
        // Nothing reads yet: the buffers fill, then the send takes nothing (no error).
        for _ in 0..256 {
            match send_now(&a, &[IoSlice::new(&chunk)]).unwrap() {
                0 => {
                    zero_seen = true;
                    break;
                }
                n => total += n,
            }
        }
        assert!(zero_seen, "a loopback socket never filled after 256 MiB");
        assert!(total > 0);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), total);
        assert!(got.iter().all(|&x| x == 7));
    }

    #[test]
    fn send_now_reports_a_reset_peer_as_an_error_without_a_signal() {
        let (a, b) = pair();
        let _ = socket2::SockRef::from(&b).set_linger(Some(std::time::Duration::ZERO));
        drop(b);
        let mut failed = false;
        for _ in 0..100 {
            match send_now(&a, &[IoSlice::new(b"x")]) {
                Err(_) => {
                    failed = true;
                    break;
                }
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        assert!(failed, "a send to a reset peer kept succeeding");
    }

    /// Chunks written through the direct path, some of them after the socket filled up (so
    /// the rest goes the owned way), arrive whole and in order on both drivers.
    #[test]
    fn vectored_writes_keep_order_across_direct_and_owned_parts() {
        for driver in [
            crate::runtime::DriverKind::Poll,
            crate::runtime::DriverKind::IoUring,
        ] {
            let Ok(rt) = crate::runtime::build_runtime(driver) else {
                continue;
            };
            let (a, mut b) = pair();
            let expect: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
            let reader = std::thread::spawn(move || {
                // Stall first so the sender's socket fills and the owned path is taken.
                std::thread::sleep(std::time::Duration::from_millis(200));
                let mut got = Vec::new();
                b.read_to_end(&mut got).unwrap();
                got
            });
            let data = Bytes::from(expect.clone());
            rt.block_on(async {
                a.set_nonblocking(true).unwrap();
                let mut s = compio::net::TcpStream::from_std(a).unwrap();
                // Uneven chunks, 16 per vectored write, then single writes.
                let mut at = 0;
                let mut queue = Vec::new();
                let mut size = 1;
                let mut turn = 0u32;
                while at < data.len() / 2 {
                    let end = (at + size).min(data.len() / 2);
                    queue.push(data.slice(at..end));
                    at = end;
                    size = size * 3 % 70_001 + 1;
                    if queue.len() == MAX_DIRECT_SLICES {
                        // Alternate quiet and busy turns: direct and owned writes interleave.
                        turn += 1;
                        begin_turn(turn.is_multiple_of(2));
                        let (r, q) = write_vectored_all(&mut s, queue).await;
                        r.unwrap();
                        assert!(q.is_empty());
                        queue = q;
                    }
                }
                let (r, _) = write_vectored_all(&mut s, queue).await;
                r.unwrap();
                while at < data.len() {
                    let end = (at + 100_000).min(data.len());
                    turn += 1;
                    begin_turn(!turn.is_multiple_of(3));
                    write_all(&mut s, data.slice(at..end)).await.unwrap();
                    at = end;
                }
                s.shutdown().await.unwrap();
            });
            let got = reader.join().unwrap();
            assert_eq!(got.len(), expect.len(), "{driver:?}");
            assert!(got == expect, "{driver:?}: bytes differ");
        }
    }
}
