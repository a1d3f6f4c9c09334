//! The hostile visitors of the soak (issue 10), each a blocking thread against the eyeball
//! listener until `stop`:
//! - `ping_flood`: a WebSocket to a `tcp://` service flooding 125-byte pings, pongs never read;
//! - `big_pings`: 1 MB pings (RFC 6455 allows 125 bytes) at ~10 MB/s, pongs never read;
//! - `trickle_download`: an origin sending 1-byte chunks to a visitor that never reads;
//! - `chunked_upload_1b`: a chunked POST made of 1-byte chunks;
//! - `aborted_uploads`: `Content-Length: 10 MB`, 64 KiB sent, then close;
//! - `slowloris`: connections sending a request head one byte a second, never finishing it;
//! - `hang_origin`: requests to an origin that never answers (abandoned after a few seconds);
//! - `endless_continue`: an origin sending `100 Continue` forever;
//! - `big_head`: an origin sending a 1 MiB response head.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;

use super::evil::{send, timed_out};
use super::{EVIL_HOST, TCP_HOST};
use crate::bench::ws::encode_frame;

/// What one attack did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackStats {
    /// Attack name.
    pub name: &'static str,
    /// Connections opened.
    pub connections: u64,
    /// Units sent (frames, chunks, requests; see `notes`).
    pub sent: u64,
    /// Connections refused or cut early (informational: refusing an attacker is fine).
    pub errors: u64,
    /// What `sent` counts and what the edge answered.
    pub notes: String,
}

/// Counters an attack thread updates.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
    /// Responses seen, by status (index = status / 100).
    statuses: [AtomicU64; 6],
}

impl Counters {
    fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Every attack, in the order they are reported.
pub const NAMES: [&str; 9] = [
    "ping_flood",
    "big_pings",
    "trickle_download",
    "chunked_upload_1b",
    "aborted_uploads",
    "hang_origin",
    "endless_continue",
    "big_head",
    "slowloris",
];

/// How many attackers of each kind.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    ping_floods: usize,
    trickles: usize,
    chunked_uploads: usize,
    hangs: usize,
    slowloris: usize,
}

impl Scale {
    /// The quick (CI) or full scale; `slowloris` overrides the slowloris count.
    pub fn new(quick: bool, slowloris: Option<usize>) -> Scale {
        if quick {
            Scale {
                ping_floods: 1,
                trickles: 1,
                chunked_uploads: 1,
                hangs: 2,
                slowloris: slowloris.unwrap_or(50),
            }
        } else {
            Scale {
                ping_floods: 4,
                trickles: 4,
                chunked_uploads: 2,
                hangs: 8,
                slowloris: slowloris.unwrap_or(500),
            }
        }
    }
}

type Attack = fn(SocketAddr, &Counters, &AtomicBool);

/// The running attackers.
pub struct Attackers {
    threads: Vec<(&'static str, &'static str, Arc<Counters>, JoinHandle<()>)>,
}

/// Starts every attacker.
/// Starts every attacker named in `only` (all when empty).
pub fn start(
    eyeball: SocketAddr,
    scale: Scale,
    only: &[String],
    stop: Arc<AtomicBool>,
) -> Attackers {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut threads = Vec::new();
    let mut add = |name: &'static str, notes: &'static str, n: usize, f: Attack| {
        if !wanted(name) {
            return;
        }
        let counters = Arc::new(Counters::default());
        for _ in 0..n {
            let (c, stop) = (counters.clone(), stop.clone());
            let h = thread::spawn(move || f(eyeball, &c, &stop));
            threads.push((name, notes, counters.clone(), h));
        }
    };
    add(
        "ping_flood",
        "125-byte pings",
        scale.ping_floods,
        ping_flood,
    );
    add("big_pings", "1 MB pings", 1, big_pings);
    add(
        "trickle_download",
        "requests, never read",
        scale.trickles,
        trickle,
    );
    add(
        "chunked_upload_1b",
        "1-byte chunks",
        scale.chunked_uploads,
        chunked_upload,
    );
    add(
        "aborted_uploads",
        "uploads aborted after 64 KiB",
        1,
        aborted_uploads,
    );
    add("hang_origin", "requests", scale.hangs, hang);
    add("endless_continue", "requests", 1, endless_continue);
    add("big_head", "requests", 1, big_head);
    if !wanted("slowloris") {
        return Attackers { threads };
    }
    let n = scale.slowloris;
    let counters = Arc::new(Counters::default());
    let (c, stop2) = (counters.clone(), stop.clone());
    let h = thread::spawn(move || slowloris(eyeball, n, &c, &stop2));
    threads.push(("slowloris", "bytes of never-ending heads", counters, h));
    Attackers { threads }
}

impl Attackers {
    /// Waits for every attacker (set `stop` first) and sums their counters per attack.
    pub fn join(self) -> Vec<AttackStats> {
        let mut out: Vec<AttackStats> = Vec::new();
        let mut seen: Vec<(&'static str, Arc<Counters>)> = Vec::new();
        for (name, notes, counters, h) in self.threads {
            let _ = h.join();
            if seen.iter().any(|(n, _)| *n == name) {
                continue;
            }
            seen.push((name, counters.clone()));
            let c = &counters;
            let statuses: Vec<String> = c
                .statuses
                .iter()
                .enumerate()
                .filter(|(_, n)| n.load(Ordering::Relaxed) > 0)
                .map(|(i, n)| format!("{}xx: {}", i, n.load(Ordering::Relaxed)))
                .collect();
            let notes = if statuses.is_empty() {
                notes.to_owned()
            } else {
                format!("{notes}; answers {}", statuses.join(", "))
            };
            out.push(AttackStats {
                name,
                connections: c.connections.load(Ordering::Relaxed),
                sent: c.sent.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                notes,
            });
        }
        out
    }
}

/// A connection to the eyeball with short timeouts; counts it.
fn connect(eyeball: SocketAddr, c: &Counters) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&eyeball, Duration::from_secs(2)) {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            Counters::bump(&c.connections, 1);
            Some(s)
        }
        Err(_) => {
            Counters::bump(&c.errors, 1);
            thread::sleep(Duration::from_millis(100));
            None
        }
    }
}

/// Reads a response head within `limit`; returns its status (0 when none came).
fn read_status(s: &mut TcpStream, limit: Duration, stop: &AtomicBool) -> u16 {
    let deadline = Instant::now() + limit;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) && head.len() < 16 * 1024 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => break,
        }
    }
    head.get(9..12)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn record_status(c: &Counters, status: u16) {
    if let Some(slot) = c.statuses.get(usize::from(status / 100)) {
        Counters::bump(slot, 1);
    }
    if status == 0 {
        Counters::bump(&c.errors, 1);
    }
}

/// Sleeps `d` in small steps; false when `stop` was set.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    !stop.load(Ordering::Relaxed)
}

/// Opens a WebSocket to the `tcp://` service; `None` when refused.
fn websocket(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) -> Option<TcpStream> {
    let mut s = connect(eyeball, c)?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {TCP_HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        crate::bench::ws::client_key()
    );
    if !send(&mut s, req.as_bytes(), stop) {
        Counters::bump(&c.errors, 1);
        return None;
    }
    let status = read_status(&mut s, Duration::from_secs(5), stop);
    record_status(c, status);
    if status == 101 {
        Some(s)
    } else {
        pause(Duration::from_millis(200), stop);
        None
    }
}

/// Pings of `size` bytes, `per_write` to a write, a pause between writes; pongs never read.
fn flood(
    eyeball: SocketAddr,
    c: &Counters,
    stop: &AtomicBool,
    size: usize,
    per_write: usize,
    gap: Duration,
) {
    let mut frames = BytesMut::new();
    let payload = vec![0x5a; size];
    for _ in 0..per_write {
        encode_frame(0x9, &payload, Some([1, 2, 3, 4]), &mut frames);
    }
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = websocket(eyeball, c, stop) else {
            continue;
        };
        while send(&mut s, &frames, stop) {
            Counters::bump(&c.sent, per_write as u64);
            if !gap.is_zero() && !pause(gap, stop) {
                break;
            }
        }
        if !stop.load(Ordering::Relaxed) {
            Counters::bump(&c.errors, 1);
        }
    }
}

fn ping_flood(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) {
    flood(eyeball, c, stop, 125, 64, Duration::ZERO);
}

fn big_pings(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) {
    flood(eyeball, c, stop, 1_000_000, 1, Duration::from_millis(100));
}

/// A GET whose response the visitor never reads; the connection is held until `stop`.
fn trickle(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = connect(eyeball, c) else {
            continue;
        };
        let req = format!("GET /trickle HTTP/1.1\r\nHost: {EVIL_HOST}\r\n\r\n");
        if send(&mut s, req.as_bytes(), stop) {
            Counters::bump(&c.sent, 1);
        }
        // Never read; notice a close by the edge only through a failing write of nothing
        // useful, so just hold until the end.
        while pause(Duration::from_millis(500), stop) {}
    }
}

fn chunked_upload(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = connect(eyeball, c) else {
            continue;
        };
        let head =
            "POST /upload HTTP/1.1\r\nHost: soak.localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
        if !send(&mut s, head.as_bytes(), stop) {
            Counters::bump(&c.errors, 1);
            continue;
        }
        // One write per chunk (TCP_NODELAY: mostly one segment each).
        while send(&mut s, b"1\r\nx\r\n", stop) {
            Counters::bump(&c.sent, 1);
        }
        if !stop.load(Ordering::Relaxed) {
            Counters::bump(&c.errors, 1);
        }
    }
}

fn aborted_uploads(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) {
    let body = vec![b'u'; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if let Some(mut s) = connect(eyeball, c) {
            let head =
                "POST /upload HTTP/1.1\r\nHost: soak.localhost\r\nContent-Length: 10485760\r\n\r\n";
            if send(&mut s, head.as_bytes(), stop) && send(&mut s, &body, stop) {
                Counters::bump(&c.sent, 1);
            }
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        pause(Duration::from_millis(50), stop);
    }
}

/// One thread holding `n` connections, each sending one more byte of its head per second.
fn slowloris(eyeball: SocketAddr, n: usize, c: &Counters, stop: &AtomicBool) {
    let head = b"GET / HTTP/1.1\r\nHost: soak.localhost\r\nX-Slow: ";
    let mut conns: Vec<(TcpStream, usize)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // Open up to 50 new connections per round until `n` are held.
        for _ in 0..50.min(n - conns.len().min(n)) {
            if let Some(s) = connect(eyeball, c) {
                conns.push((s, 0));
            }
        }
        let before = conns.len();
        conns.retain_mut(|(s, at)| {
            let byte = head.get(*at).copied().unwrap_or(b'a');
            match s.write(&[byte]) {
                Ok(1) => {
                    *at += 1;
                    Counters::bump(&c.sent, 1);
                    true
                }
                Err(e) if timed_out(&e) => true,
                _ => false,
            }
        });
        Counters::bump(&c.errors, (before - conns.len()) as u64);
        if !pause(Duration::from_secs(1), stop) {
            break;
        }
    }
}

/// Sends `GET path` to the broken origin, waits up to `wait` for an answer, then closes.
fn evil_get(eyeball: SocketAddr, path: &str, wait: Duration, c: &Counters, stop: &AtomicBool) {
    let Some(mut s) = connect(eyeball, c) else {
        return;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {EVIL_HOST}\r\nConnection: close\r\n\r\n");
    if !send(&mut s, req.as_bytes(), stop) {
        Counters::bump(&c.errors, 1);
        return;
    }
    Counters::bump(&c.sent, 1);
    let status = read_status(&mut s, wait, stop);
    if !stop.load(Ordering::Relaxed) {
        record_status(c, status);
    }
    let _ = s.flush();
}

fn hang(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        evil_get(eyeball, "/hang", Duration::from_secs(3), c, stop);
    }
}

fn endless_continue(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        evil_get(eyeball, "/continue", Duration::from_secs(2), c, stop);
        pause(Duration::from_millis(100), stop);
    }
}

fn big_head(eyeball: SocketAddr, c: &Counters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        evil_get(eyeball, "/bighead", Duration::from_secs(2), c, stop);
        pause(Duration::from_millis(200), stop);
    }
}
