//! The broken origin of the soak, one blocking thread per connection:
//! - `/trickle`: a chunked response of 1-byte chunks, written as fast as the socket takes them;
//! - `/hang`: reads the request and never answers;
//! - `/continue`: `100 Continue` interim responses, forever;
//! - `/bighead`: a response head of about 1 MiB;
//! - anything else: `200 OK`, empty.
//!
//! And a TCP sink for the `tcp://` service the WebSocket attackers reach. Everything stops
//! when `stop` is set (socket timeouts are short so each thread notices within ~100 ms).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often blocked threads look at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Size of the oversized response head.
const BIG_HEAD: usize = 1 << 20;

/// The running broken origin.
pub struct Evil {
    /// Where it listens.
    pub addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl Evil {
    /// Waits for the acceptor (call after setting the stop flag).
    pub fn join(self) {
        let _ = self.acceptor.join();
    }
}

/// Starts the broken origin on a free loopback port.
pub fn start(stop: Arc<AtomicBool>) -> Result<Evil, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding broken origin: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let acceptor = accept_loop(listener, stop, serve);
    Ok(Evil { addr, acceptor })
}

/// A TCP service that reads and discards everything.
pub fn sink(listener: TcpListener, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    accept_loop(listener, stop, |mut s, stop| {
        let mut buf = [0u8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(_) => return,
            }
        }
    })
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handler: fn(TcpStream, &AtomicBool),
) -> JoinHandle<()> {
    thread::spawn(move || {
        let _ = listener.set_nonblocking(true);
        let mut conns = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(TICK));
                    let _ = s.set_write_timeout(Some(TICK));
                    let stop = stop.clone();
                    conns.push(thread::spawn(move || handler(s, &stop)));
                    conns.retain(|h: &JoinHandle<()>| !h.is_finished());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(_) => thread::sleep(TICK),
            }
        }
        for c in conns {
            let _ = c.join();
        }
    })
}

pub(super) fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Writes all of `data`, retrying on timeouts until `stop`; false when the peer is gone.
pub(super) fn send(s: &mut TcpStream, data: &[u8], stop: &AtomicBool) -> bool {
    let mut off = 0;
    while off < data.len() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match s.write(&data[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if timed_out(&e) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Reads one request head (up to 64 KiB); returns its request line.
fn read_head(s: &mut TcpStream, stop: &AtomicBool) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if stop.load(Ordering::Relaxed) || head.len() > 64 * 1024 {
            return None;
        }
        match s.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if timed_out(&e) => {}
            Err(_) => return None,
        }
    }
    let line = head.split(|b| *b == b'\n').next()?;
    Some(String::from_utf8_lossy(line).into_owned())
}

/// Whether the peer closed (or `stop`), waiting one tick.
fn gone(s: &mut TcpStream, stop: &AtomicBool) -> bool {
    let mut buf = [0u8; 4096];
    if stop.load(Ordering::Relaxed) {
        return true;
    }
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !timed_out(&e),
    }
}

fn serve(mut s: TcpStream, stop: &AtomicBool) {
    // Keep-alive: the connector may reuse the connection for the next request.
    while let Some(line) = read_head(&mut s, stop) {
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        match path {
            "/trickle" => {
                if !send(&mut s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n", stop) {
                    return;
                }
                while send(&mut s, b"1\r\nx\r\n", stop) {}
                return;
            }
            "/hang" => {
                while !gone(&mut s, stop) {}
                return;
            }
            "/continue" => {
                while send(&mut s, b"HTTP/1.1 100 Continue\r\n\r\n", stop) {}
                return;
            }
            "/bighead" => {
                let mut head = Vec::with_capacity(BIG_HEAD + 128);
                head.extend_from_slice(b"HTTP/1.1 200 OK\r\nX-Big: ");
                head.resize(head.len() + BIG_HEAD, b'a');
                head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
                send(&mut s, &head, stop);
                return;
            }
            _ => {
                if !send(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                    stop,
                ) {
                    return;
                }
            }
        }
    }
}
