//! QUIC between the `ringflare` connector binary and the built-in edge, on a bad network and
//! under many streams, on both io drivers:
//! - a UDP impairment proxy inside the test sits between connector and edge and drops,
//!   duplicates, delays and reorders datagrams (decisions from a seeded PRNG; queues bounded);
//!   a download and an upload of several MiB (checksummed) and a burst of requests complete;
//! - 100 concurrent streams (mixed GET/POST, checksummed) over one QUIC connection, all open
//!   at once: the origin answers none of them until all 100 have arrived.

mod common;

use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Connector, Fnv, TestTunnel, payload_chunk};
use ringflare::config::Secret;
use ringflare::config::credentials::{Credentials, encode_token};
use ringflare::edge::{Edge, EdgeOptions};
use ringflare::runtime::IoDriver;

const WAIT: Duration = Duration::from_secs(60);
/// No thread this file starts outlives this (the test harness may run the tests in one process).
const THREAD_LIFETIME: Duration = Duration::from_secs(300);
/// Bytes per generated payload chunk of a download.
const CHUNK: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// The impairment proxy

/// SplitMix64: a small seeded PRNG, so a failing run can be repeated with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// A uniform value in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// What happens to each datagram, in both directions.
#[derive(Clone, Copy, Debug)]
struct Impairment {
    /// Probability that a datagram is dropped.
    loss: f64,
    /// Probability that a datagram is delivered twice.
    duplicate: f64,
    /// Probability that a datagram is held back `reorder_by` more than the others, so the
    /// ones sent after it overtake it.
    reorder: f64,
    reorder_by: Duration,
    /// One-way delay of every datagram, plus a uniform 0..`jitter` (which reorders too).
    delay: Duration,
    jitter: Duration,
}

const BAD_NETWORK: Impairment = Impairment {
    loss: 0.01,
    duplicate: 0.01,
    reorder: 0.03,
    reorder_by: Duration::from_millis(6),
    delay: Duration::from_millis(2),
    jitter: Duration::from_millis(2),
};

/// Datagrams waiting for their delivery time, both directions together; past this many the
/// proxy drops new ones, as a router's full queue does.
const QUEUE_CAP: usize = 4096;

/// Where a queued datagram goes.
enum Dest {
    /// Toward the edge, on this flow's upstream socket.
    Edge(Arc<UdpSocket>),
    /// Toward the connector at this address, from the proxy's front socket.
    Connector(SocketAddr),
}

struct Queued {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    dest: Dest,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    /// Reversed, so the max-heap pops the earliest delivery first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default, Debug)]
struct Stats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    overflowed: AtomicU64,
}

/// The shared delivery queue and what the proxy threads need to fill it.
struct Shared {
    queue: Mutex<BinaryHeap<Queued>>,
    ready: Condvar,
    seq: AtomicU64,
    stats: Stats,
    stop: AtomicBool,
    impairment: Impairment,
}

impl Shared {
    /// Applies the impairment to one datagram and queues what survives.
    fn offer(&self, rng: &mut Rng, data: &[u8], dest: impl Fn() -> Dest) {
        let im = &self.impairment;
        if rng.chance(im.loss) {
            self.stats.dropped.fetch_add(1, SeqCst);
            return;
        }
        let copies = if rng.chance(im.duplicate) {
            self.stats.duplicated.fetch_add(1, SeqCst);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = Instant::now() + im.delay + im.jitter.mul_f64(rng.unit());
            if rng.chance(im.reorder) {
                self.stats.reordered.fetch_add(1, SeqCst);
                at += im.reorder_by;
            }
            let mut q = self.queue.lock().unwrap();
            if q.len() >= QUEUE_CAP {
                self.stats.overflowed.fetch_add(1, SeqCst);
                continue;
            }
            q.push(Queued {
                at,
                seq: self.seq.fetch_add(1, SeqCst),
                data: data.to_vec(),
                dest: dest(),
            });
            drop(q);
            self.ready.notify_one();
        }
    }

    /// Delivers queued datagrams at their time until stopped.
    fn deliver(&self, front: &UdpSocket) {
        let end = Instant::now() + THREAD_LIFETIME;
        let mut q = self.queue.lock().unwrap();
        while !self.stop.load(SeqCst) && Instant::now() < end {
            let now = Instant::now();
            let wait = match q.peek() {
                Some(first) if first.at <= now => {
                    let item = q.pop().unwrap();
                    drop(q);
                    let _ = match &item.dest {
                        Dest::Edge(up) => up.send(&item.data),
                        Dest::Connector(to) => front.send_to(&item.data, to),
                    };
                    self.stats.forwarded.fetch_add(1, SeqCst);
                    q = self.queue.lock().unwrap();
                    continue;
                }
                Some(first) => first.at - now,
                None => Duration::from_millis(50),
            };
            q = self.ready.wait_timeout(q, wait).unwrap().0;
        }
    }
}

/// A UDP proxy from the connector to the edge that impairs both directions: one upstream
/// socket per connector source address (each QUIC connection is its own flow).
struct ImpairProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ImpairProxy {
    fn start(edge: SocketAddr, impairment: Impairment, seed: u64) -> ImpairProxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = front.local_addr().unwrap();
        let shared = Arc::new(Shared {
            queue: Mutex::new(BinaryHeap::new()),
            ready: Condvar::new(),
            seq: AtomicU64::new(0),
            stats: Stats::default(),
            stop: AtomicBool::new(false),
            impairment,
        });
        let (s, f) = (shared.clone(), front.clone());
        std::thread::spawn(move || s.deliver(&f));
        let s = shared.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + THREAD_LIFETIME;
            let mut rng = Rng(seed);
            let mut flows: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
                std::collections::HashMap::new();
            let mut buf = vec![0u8; 65536];
            while !s.stop.load(SeqCst) && Instant::now() < end {
                let Ok((n, from)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let flow_seed = seed ^ (flows.len() as u64 + 1).wrapping_mul(0x5851f42d4c957f2d);
                let up = flows
                    .entry(from)
                    .or_insert_with(|| upstream(edge, from, &s, flow_seed));
                s.offer(&mut rng, &buf[..n], || Dest::Edge(up.clone()));
            }
        });
        ImpairProxy { addr, shared }
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

/// Opens the upstream socket of a new flow and starts its edge -> connector reader.
fn upstream(edge: SocketAddr, client: SocketAddr, s: &Arc<Shared>, seed: u64) -> Arc<UdpSocket> {
    let up = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    up.connect(edge).unwrap();
    up.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (r, s) = (up.clone(), s.clone());
    std::thread::spawn(move || {
        let end = Instant::now() + THREAD_LIFETIME;
        let mut rng = Rng(seed);
        let mut buf = vec![0u8; 65536];
        while !s.stop.load(SeqCst) && Instant::now() < end {
            if let Ok(n) = r.recv(&mut buf) {
                s.offer(&mut rng, &buf[..n], || Dest::Connector(client));
            }
        }
    });
    up
}

impl Drop for ImpairProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.shared.ready.notify_all();
    }
}

// ---------------------------------------------------------------------------------------
// The origin

/// Counts requests that arrived, and holds each answer until `target` have arrived (or
/// [`GATE_LIMIT`] passed: then `gave_up` counts it).
#[derive(Default)]
struct Gate {
    arrived: Mutex<usize>,
    all_in: Condvar,
    target: usize,
    gave_up: AtomicUsize,
}

/// Below the eyeball clients' read timeout, so a stuck stream shows up here first.
const GATE_LIMIT: Duration = Duration::from_secs(15);

impl Gate {
    fn pass(&self) {
        let mut n = self.arrived.lock().unwrap();
        *n += 1;
        self.all_in.notify_all();
        let end = Instant::now() + GATE_LIMIT;
        while *n < self.target {
            let now = Instant::now();
            if now >= end {
                self.gave_up.fetch_add(1, SeqCst);
                return;
            }
            n = self.all_in.wait_timeout(n, end - now).unwrap().0;
        }
    }

    fn arrived(&self) -> usize {
        *self.arrived.lock().unwrap()
    }
}

/// An HTTP/1.1 origin (keep-alive) for transfers:
/// - `GET /dl/<n>`: `n` bytes of [`payload_chunk`]s of [`CHUNK`] bytes;
/// - `POST /ul` with Content-Length: reads the body, answers `<length> <fnv hex>`;
/// - `GET /small/<k>`: `small <k>`.
///
/// Every request passes the gate before it is answered (before its body is read).
fn bulk_origin(gate: Arc<Gate>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(WAIT));
                let _ = serve_bulk(stream, &gate);
            });
        }
    });
    addr
}

fn serve_bulk(stream: std::net::TcpStream, gate: &Gate) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0u64;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let lower = h.trim_end().to_ascii_lowercase();
            if lower.is_empty() {
                break;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        if let Some(n) = path.strip_prefix("/dl/") {
            let n: usize = n.parse().unwrap_or(0);
            gate.pass();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
            reader.get_mut().write_all(head.as_bytes())?;
            let (mut sent, mut i) = (0, 0);
            while sent < n {
                let len = CHUNK.min(n - sent);
                reader.get_mut().write_all(&payload_chunk(i, len))?;
                sent += len;
                i += 1;
            }
        } else {
            // Held before the body is read: a stream counts as open once its head arrived.
            gate.pass();
            let body = if path == "/ul" {
                let mut sum = Fnv::default();
                let mut left = length;
                let mut buf = vec![0u8; 256 * 1024];
                while left > 0 {
                    let want = buf.len().min(left as usize);
                    let n = reader.read(&mut buf[..want])?;
                    if n == 0 {
                        return Ok(());
                    }
                    sum.update(&buf[..n]);
                    left -= n as u64;
                }
                format!("{length} {:016x}", sum.0)
            } else {
                format!("small {}", path.trim_start_matches("/small/"))
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            reader.get_mut().write_all(resp.as_bytes())?;
        }
    }
}

/// The FNV of a `GET /dl/<n>` body.
fn download_sum(n: usize) -> u64 {
    let mut sum = Fnv::default();
    let (mut done, mut i) = (0, 0);
    while done < n {
        let len = CHUNK.min(n - done);
        sum.update(&payload_chunk(i, len));
        done += len;
        i += 1;
    }
    sum.0
}

/// The FNV of an upload of `n` bytes made of `payload_chunk(seed + i, CHUNK)`.
fn upload_body(n: usize, seed: u64) -> (Vec<Vec<u8>>, u64) {
    let mut sum = Fnv::default();
    let mut chunks = Vec::new();
    let (mut done, mut i) = (0, 0);
    while done < n {
        let len = CHUNK.min(n - done);
        let c = payload_chunk(seed + i, len).to_vec();
        sum.update(&c);
        chunks.push(c);
        done += len;
        i += 1;
    }
    (chunks, sum.0)
}

// ---------------------------------------------------------------------------------------
// Eyeball side

fn download(eyeball: SocketAddr, n: usize) {
    let r = Client::connect(eyeball).get("bulk.test", &format!("/dl/{n}"));
    assert_eq!(r.status, 200, "download of {n} bytes");
    assert_eq!(r.body.len(), n, "download length");
    let mut sum = Fnv::default();
    sum.update(&r.body);
    assert_eq!(
        sum.0,
        download_sum(n),
        "download of {n} bytes: checksum differs"
    );
}

fn upload(eyeball: SocketAddr, n: usize, seed: u64) {
    let (chunks, want) = upload_body(n, seed);
    let mut c = Client::connect(eyeball);
    let head = format!("POST /ul HTTP/1.1\r\nHost: bulk.test\r\nContent-Length: {n}\r\n\r\n");
    c.stream.write_all(head.as_bytes()).unwrap();
    for chunk in &chunks {
        c.stream.write_all(chunk).unwrap();
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "upload of {n} bytes");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("{n} {want:016x}"),
        "upload of {n} bytes: the origin saw other bytes"
    );
}

// ---------------------------------------------------------------------------------------
// The test bed

struct Bed {
    edge: Option<Edge>,
    connector: Connector,
    _dir: tempfile::TempDir,
}

impl Bed {
    /// The built-in edge on `driver`, and a `--protocol quic` connector on `driver` that
    /// reaches it at `via(edge tunnel address)` and serves every hostname from `origin`.
    fn start(driver: &str, origin: SocketAddr, via: impl FnOnce(SocketAddr) -> SocketAddr) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let t = TestTunnel::new();
        let mut opts = EdgeOptions::new(dir.path());
        opts.tunnel_listen = vec!["127.0.0.1:0".parse().unwrap()];
        opts.eyeball_listen = "127.0.0.1:0".parse().unwrap();
        opts.tunnels = vec![t.edge_tunnel(&["*"])];
        opts.workers = 1;
        opts.no_pinning = true;
        opts.io_driver = match driver {
            "poll" => IoDriver::Poll,
            _ => IoDriver::IoUring,
        };
        let edge = Edge::start(opts).unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, format!("ingress:\n  - service: http://{origin}\n")).unwrap();
        let token = encode_token(&Credentials {
            account_tag: t.account.clone(),
            tunnel_secret: Secret::new(t.secret.clone()),
            tunnel_id: t.id,
            endpoint: String::new(),
        });
        let connector = Connector::spawn_env(
            &[via(edge.tunnel_addrs()[0])],
            edge.ca_pem_path(),
            &token,
            Some(&cfg),
            &[
                "--ha-connections".into(),
                "1".into(),
                "--protocol".into(),
                "quic".into(),
            ],
            &[],
            &[("RINGFLARE_IO_DRIVER", driver)],
        );
        assert!(
            edge.wait_registered(1, WAIT),
            "no registration: {}",
            connector.log_text()
        );
        assert_eq!(edge.registered()[0].protocol, "quic");
        Bed {
            edge: Some(edge),
            connector,
            _dir: dir,
        }
    }

    fn edge(&self) -> &Edge {
        self.edge.as_ref().unwrap()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(edge) = self.edge.take() {
            if std::thread::panicking() {
                // A failed test: a second panic in the shutdown would abort the whole binary.
                std::mem::forget(edge);
            } else {
                edge.shutdown();
            }
        }
    }
}

fn io_uring_available() -> bool {
    ringflare::runtime::select_driver(IoDriver::IoUring).is_ok()
}

// ---------------------------------------------------------------------------------------
// The tests

/// Seed of the impairment proxy's PRNG: `RINGFLARE_IMPAIR_SEED` repeats a failing run.
fn seed() -> u64 {
    let seed = std::env::var("RINGFLARE_IMPAIR_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x2026_1128);
    println!("impairment seed {seed} ({BAD_NETWORK:?})");
    seed
}

/// Bytes of the impaired download and of the upload.
const IMPAIRED_BYTES: usize = 4 << 20;

fn transfers_complete_on_a_bad_network(driver: &str) {
    let origin = bulk_origin(Arc::new(Gate::default()));
    let mut proxy = None;
    let bed = Bed::start(driver, origin, |edge| {
        let p = ImpairProxy::start(edge, BAD_NETWORK, seed());
        let addr = p.addr;
        proxy = Some(p);
        addr
    });
    let proxy = proxy.unwrap();
    let eyeball = bed.edge().eyeball_addr();
    let start = Instant::now();
    download(eyeball, IMPAIRED_BYTES);
    upload(eyeball, IMPAIRED_BYTES, 7);
    // A burst: 8 eyeball connections, 6 keep-alive requests each, all at once.
    let burst: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(eyeball);
                for i in 0..6 {
                    let k = t * 100 + i;
                    let r = c.get("bulk.test", &format!("/small/{k}"));
                    assert_eq!(r.status, 200, "burst request {k}");
                    assert_eq!(r.body, format!("small {k}").into_bytes());
                }
            })
        })
        .collect();
    for b in burst {
        b.join().unwrap();
    }
    let s = proxy.stats();
    println!(
        "{driver}: {IMPAIRED_BYTES} bytes down and up + 48 requests in {:.2}s; proxy {s:?}",
        start.elapsed().as_secs_f64()
    );
    // The proxy really impaired the traffic (the PRNG decides, so check it did something).
    assert!(s.dropped.load(SeqCst) > 0, "{s:?}");
    assert!(s.duplicated.load(SeqCst) > 0, "{s:?}");
    assert!(s.reordered.load(SeqCst) > 0, "{s:?}");
    // The connection survived: still one registration, no redial.
    assert_eq!(bed.edge().registered().len(), 1);
    let log = bed.connector.log_text();
    assert_eq!(
        log.matches("Registered tunnel connection").count(),
        1,
        "{log}"
    );
}

#[test]
fn transfers_complete_on_a_bad_network_poll() {
    transfers_complete_on_a_bad_network("poll");
}

#[test]
fn transfers_complete_on_a_bad_network_io_uring() {
    if io_uring_available() {
        transfers_complete_on_a_bad_network("io_uring");
    }
}

/// Streams held open at once over the one QUIC connection.
const STREAMS: usize = 100;

fn hundred_concurrent_streams_over_one_connection(driver: &str) {
    let gate = Arc::new(Gate {
        target: STREAMS,
        ..Gate::default()
    });
    let origin = bulk_origin(gate.clone());
    let bed = Bed::start(driver, origin, |edge| edge);
    let eyeball = bed.edge().eyeball_addr();
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..STREAMS)
        .map(|i| {
            let done = done.clone();
            std::thread::spawn(move || {
                // 4 KiB to ~200 KiB, alternating GET and POST.
                let n = 4 * 1024 + i * 2 * 1024;
                if i % 2 == 0 {
                    download(eyeball, n);
                } else {
                    upload(eyeball, n, i as u64 * 1000);
                }
                done.fetch_add(1, SeqCst);
            })
        })
        .collect();
    let failed = clients
        .into_iter()
        .map(|c| c.join())
        .filter(Result::is_err)
        .count();
    println!(
        "{driver}: {STREAMS} streams in {:.2}s",
        start.elapsed().as_secs_f64()
    );
    // The origin held every answer until all had arrived: all were open at once.
    assert_eq!(
        gate.gave_up.load(SeqCst),
        0,
        "only {} of {STREAMS} streams were open at once; log:\n{}",
        gate.arrived(),
        bed.connector.log_text()
    );
    assert_eq!(failed, 0, "{failed} of {STREAMS} streams failed");
    assert_eq!(done.load(SeqCst), STREAMS);
    assert_eq!(gate.arrived(), STREAMS);
    let regs = bed.edge().registered();
    assert_eq!(regs.len(), 1, "one QUIC connection carried them all");
    assert_eq!(regs[0].protocol, "quic");
}

#[test]
fn hundred_concurrent_streams_over_one_connection_poll() {
    hundred_concurrent_streams_over_one_connection("poll");
}

#[test]
fn hundred_concurrent_streams_over_one_connection_io_uring() {
    if io_uring_available() {
        hundred_concurrent_streams_over_one_connection("io_uring");
    }
}
