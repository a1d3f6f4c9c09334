//! The generator's per-worker driver: connection tasks and the HTTP/1.1 exchange loop.
//!
//! One worker runs all of its connections as tasks on its own compio runtime and owns one
//! [`Stats`] (in a `RefCell`: tasks on one thread never borrow it across an await). Each
//! connection keeps its socket alive across requests, reconnects after an error or a
//! `Connection: close`, and stops at its quota or at the deadline. In open-loop mode each
//! request's latency starts at its *intended* send time, so a stalled server shows up as
//! latency instead of silently lowering the offered load (no coordinated omission).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use compio::BufResult;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;

use super::io::read_append;
use super::response::{Response, ResponseReader};
use super::run::{ConnJob, LoadPlan, Mode, jobs_for};
use super::stats::{ErrorKind, LiveCounters, StallClock, Stats};
use super::streams;
use super::target::request_head;

/// Upload bodies are written from this static buffer, so a 1 GiB upload allocates nothing.
static FILL: [u8; 64 * 1024] = [b'x'; 64 * 1024];
/// Read buffer per connection: large enough that a bulk download needs few reads.
pub(super) const READ_BUF: usize = 128 * 1024;
/// Pause before reconnecting after a failed connect, so a dead target is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// State shared by every connection task of one worker.
pub(super) struct Worker {
    /// The plan, shared with the other workers.
    pub plan: Arc<LoadPlan>,
    /// When the run stops, if duration-bounded.
    pub deadline: Option<Instant>,
    /// This worker's statistics.
    pub stats: RefCell<Stats>,
    /// Progress counters for the watcher thread.
    pub live: Arc<Vec<LiveCounters>>,
    /// Index into `live`.
    pub index: usize,
    /// The request head (and the whole body when it is small).
    pub request: Bytes,
    /// Body bytes still to stream after `request`.
    pub streamed_body: u64,
}

impl Worker {
    pub(super) fn live(&self) -> &LiveCounters {
        // `live` has one entry per worker by construction; fall back to a dummy otherwise.
        self.live.get(self.index).unwrap_or(&self.live[0])
    }

    pub(super) fn error(&self, kind: ErrorKind) {
        self.stats.borrow_mut().record_error(kind, self.live());
    }

    pub(super) fn past_deadline(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Whether a connection that started `sent` requests may start another.
    pub(super) fn may_send(&self, sent: u64, quota: Option<u64>) -> bool {
        quota.is_none_or(|q| sent < q) && !self.past_deadline(Instant::now())
    }

    /// Waits for the next intended send time (open loop) and returns the latency origin.
    pub(super) async fn next_start(
        &self,
        schedule: &mut Option<(Instant, Duration)>,
    ) -> Option<Instant> {
        let Some((next, interval)) = schedule else {
            return Some(Instant::now());
        };
        let intended = *next;
        *next += *interval;
        if self.past_deadline(intended) {
            return None;
        }
        if intended > Instant::now() {
            compio::time::sleep_until(intended).await;
        }
        Some(intended)
    }

    pub(super) async fn connect(&self) -> Result<TcpStream, ErrorKind> {
        let addr = self.plan.target.addr;
        match compio::time::timeout(self.plan.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                // Small requests must not wait for Nagle.
                let _ = s.set_nodelay(true);
                self.stats.borrow_mut().connections += 1;
                Ok(s)
            }
            Ok(Err(_)) => Err(ErrorKind::Connect),
            Err(_) => Err(ErrorKind::Timeout),
        }
    }

    pub(super) async fn pause_after_connect_error(&self) {
        compio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// Runs worker `index`'s connections until they are done and returns its statistics.
pub async fn run_worker(
    plan: Arc<LoadPlan>,
    index: usize,
    live: Arc<Vec<LiveCounters>>,
    start: Instant,
) -> Stats {
    let jobs = jobs_for(&plan, index, start);
    let (request, streamed_body) = match build_request(&plan) {
        Ok(r) => r,
        // Validated before the run; an error here leaves the worker with no work.
        Err(_) => return Stats::new(),
    };
    let worker = Rc::new(Worker {
        deadline: plan.duration.map(|d| start + d),
        plan,
        stats: RefCell::new(Stats::new()),
        live,
        index,
        request,
        streamed_body,
    });
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let w = worker.clone();
            compio::runtime::spawn(async move {
                match w.plan.mode {
                    Mode::Http => http_connection(&w, job).await,
                    Mode::Ws => streams::ws_connection(&w, job).await,
                    Mode::WsIdle => streams::ws_idle_connection(&w, job).await,
                    Mode::Tcp => streams::tcp_connection(&w, job).await,
                }
            })
        })
        .collect();
    for t in tasks {
        // A panicking connection task loses only its own future samples.
        let _ = t.await;
    }
    worker.stats.borrow().clone()
}

/// The request bytes sent first, and how much body must be streamed after them.
pub fn build_request(plan: &LoadPlan) -> Result<(Bytes, u64), String> {
    let head = request_head(&plan.target, &plan.method, plan.body_size, &plan.headers)?;
    if plan.body_size as usize <= FILL.len() {
        let mut all = BytesMut::from(&head[..]);
        all.extend_from_slice(&FILL[..plan.body_size as usize]);
        Ok((all.freeze(), 0))
    } else {
        Ok((head, plan.body_size))
    }
}

async fn http_connection(w: &Worker, mut job: ConnJob) {
    let mut sent = 0u64;
    let head_only = w.plan.method.eq_ignore_ascii_case("HEAD");
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
        let mut buf = BytesMut::with_capacity(READ_BUF);
        let mut reader = ResponseReader::new();
        while w.may_send(sent, job.quota) {
            let Some(started) = w.next_start(&mut job.schedule).await else {
                break 'connect;
            };
            sent += 1;
            let mut clock = StallClock::start(Instant::now());
            let exchange = exchange(w, &stream, buf, &mut reader, head_only, &mut clock);
            let (result, returned) = match compio::time::timeout(w.plan.timeout, exchange).await {
                Ok(r) => r,
                Err(_) => (Err(ErrorKind::Timeout), BytesMut::new()),
            };
            buf = returned;
            // A failed or timed-out exchange counts too: its gap runs until it was given up.
            w.stats
                .borrow_mut()
                .record_stall(clock.finish(Instant::now()));
            match result {
                Ok(resp) => {
                    record_response(w, started, &resp);
                    if !resp.keep_alive {
                        continue 'connect;
                    }
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

fn record_response(w: &Worker, started: Instant, resp: &Response) {
    let mut stats = w.stats.borrow_mut();
    let tx = w.plan.body_size;
    stats.record(started.elapsed(), resp.body_bytes, tx, w.live());
    stats.record_status(resp.status, w.live());
}

/// Sends one request and reads its response, telling `clock` each time bytes move. Hands
/// the read buffer back in every case.
async fn exchange(
    w: &Worker,
    stream: &TcpStream,
    buf: BytesMut,
    reader: &mut ResponseReader,
    head_only: bool,
    clock: &mut StallClock,
) -> (Result<Response, ErrorKind>, BytesMut) {
    if let Err(kind) = send_request(w, stream, clock).await {
        return (Err(kind), buf);
    }
    read_response(stream, buf, reader, head_only, clock).await
}

/// Writes the request; each completed write is progress (a tunnel that stops taking an
/// upload fills the socket buffer, and the next write waits).
async fn send_request(
    w: &Worker,
    mut stream: &TcpStream,
    clock: &mut StallClock,
) -> Result<(), ErrorKind> {
    let BufResult(res, _) = stream.write_all(w.request.clone()).await;
    res.map_err(|_| ErrorKind::Io)?;
    clock.progress(Instant::now());
    let mut remaining = w.streamed_body;
    while remaining > 0 {
        let n = remaining.min(FILL.len() as u64) as usize;
        let BufResult(res, _) = stream.write_all(&FILL[..n]).await;
        res.map_err(|_| ErrorKind::Io)?;
        clock.progress(Instant::now());
        remaining -= n as u64;
    }
    Ok(())
}

/// Reads until `reader` has a whole response; each read that returns bytes is progress.
pub(super) async fn read_response(
    mut stream: &TcpStream,
    mut buf: BytesMut,
    reader: &mut ResponseReader,
    head_only: bool,
    clock: &mut StallClock,
) -> (Result<Response, ErrorKind>, BytesMut) {
    loop {
        match reader.feed(&mut buf, head_only) {
            Ok(Some(resp)) => return (Ok(resp), buf),
            Ok(None) => {}
            Err(_) => return (Err(ErrorKind::Protocol), buf),
        }
        let (res, b) = read_append(&mut stream, buf, READ_BUF / 4).await;
        buf = b;
        match res {
            Ok(0) => {
                let r = reader.eof().map_err(|_| ErrorKind::Io);
                return (r, buf);
            }
            Ok(_) => clock.progress(Instant::now()),
            Err(_) => return (Err(ErrorKind::Io), buf),
        }
    }
}
