//! Running a load plan: workers, per-connection quotas and schedules, the progress line.
//!
//! [`run`] starts one compio runtime per worker ([`Workers`]), spreads the connections over
//! them round-robin and gives each connection its share of `--requests` and of `--rate`.
//! Workers own their [`Stats`] outright; the calling thread prints a progress line once a
//! second from the workers' [`LiveCounters`] and merges the stats when they finish.

use std::num::NonZeroUsize;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::runtime::{IoDriver, WorkerConfig, WorkerCtx, Workers};

use super::client;
use super::stats::{LiveCounters, Report, ReportMeta, Stats};
use super::target::{Scheme, Target};

/// What kind of traffic a run generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// HTTP/1.1 requests on keep-alive connections.
    Http,
    /// WebSocket echo round trips of `--message-size` bytes.
    Ws,
    /// WebSockets opened and held idle for the duration, then checked with one echo each;
    /// `requests` counts those that passed.
    WsIdle,
    /// Raw TCP echo of `--message-size` bytes per round trip (large sizes = bulk transfer).
    Tcp,
}

impl Mode {
    /// Name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Ws => "ws",
            Self::WsIdle => "ws-idle",
            Self::Tcp => "tcp",
        }
    }

    /// The mode a URL scheme implies when `--mode` is absent.
    pub fn for_scheme(s: Scheme) -> Self {
        match s {
            Scheme::Http => Self::Http,
            Scheme::Ws => Self::Ws,
            Scheme::Tcp => Self::Tcp,
        }
    }
}

/// A fully resolved load run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Where to send load.
    pub target: Target,
    /// What to send.
    pub mode: Mode,
    /// Concurrent connections, spread over the workers.
    pub connections: usize,
    /// Worker threads.
    pub threads: NonZeroUsize,
    /// Stop after this long (measured from the start).
    pub duration: Option<Duration>,
    /// Stop after this many requests in total (split evenly over connections).
    pub requests: Option<u64>,
    /// Open loop: total requests per second, latency measured from each intended send time.
    pub rate: Option<f64>,
    /// HTTP method.
    pub method: String,
    /// Request body bytes per request (streamed).
    pub body_size: u64,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// WebSocket / TCP message size.
    pub message_size: usize,
    /// Per-request timeout (connect included).
    pub timeout: Duration,
    /// I/O driver for the workers.
    pub io_driver: IoDriver,
    /// Pin workers to cores (off by default: the generator usually shares the host).
    pub pin: bool,
    /// Print the once-a-second progress line on stderr.
    pub progress: bool,
}

/// What one connection task must do, derived from the plan.
#[derive(Debug, Clone, Copy)]
pub struct ConnJob {
    /// Connection index (0-based, global).
    pub index: usize,
    /// Requests this connection may start; `None` = until the deadline.
    pub quota: Option<u64>,
    /// Open-loop schedule: first intended send time and spacing.
    pub schedule: Option<(Instant, Duration)>,
}

/// Splits the plan into per-connection jobs for worker `worker`.
pub fn jobs_for(plan: &LoadPlan, worker: usize, start: Instant) -> Vec<ConnJob> {
    let threads = plan.threads.get();
    let c = plan.connections.max(1);
    (0..c)
        .filter(|i| i % threads == worker)
        .map(|index| ConnJob {
            index,
            quota: plan.requests.map(|n| {
                let (share, rem) = (n / c as u64, n % c as u64);
                share + u64::from((index as u64) < rem)
            }),
            schedule: plan.rate.filter(|r| *r > 0.0).map(|rate| {
                // Each connection sends every c/rate seconds; offsets spread them evenly.
                let interval = Duration::from_secs_f64(c as f64 / rate);
                (start + interval.mul_f64(index as f64 / c as f64), interval)
            }),
        })
        .collect()
}

/// Runs the plan to completion and returns the merged report.
pub fn run(plan: LoadPlan) -> Result<Report, String> {
    if plan.duration.is_none() && plan.requests.is_none() {
        return Err("give --duration or --requests".to_owned());
    }
    let threads = plan.threads.get();
    let live: Arc<Vec<LiveCounters>> =
        Arc::new((0..threads).map(|_| LiveCounters::default()).collect());
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let start = Instant::now();
    let plan = Arc::new(plan);
    let shared = (plan.clone(), live.clone(), done_tx);
    let config = WorkerConfig {
        threads: Some(plan.threads),
        io_driver: plan.io_driver,
        no_pinning: !plan.pin,
    };
    let workers = Workers::spawn(config, move |ctx: WorkerCtx| {
        let (plan, live, done) = shared.clone();
        async move {
            let stats = client::run_worker(plan, ctx.index, live, start).await;
            let _ = done.send(ctx.index);
            stats
        }
    })
    .map_err(|e| format!("starting the load workers: {e}"))?;
    let driver = workers.driver_report().driver.to_string();
    let finished_at = watch_progress(&plan, &live, &done_rx, threads, start);
    let mut total = Stats::new();
    for r in workers.join() {
        total.merge(&r.map_err(|e| format!("load worker failed: {e}"))?);
    }
    let meta = ReportMeta {
        mode: plan.mode.as_str().to_owned(),
        url: plan.target.url.clone(),
        connections: plan.connections,
        threads,
        driver,
        rate: plan.rate,
    };
    Ok(total.report(meta, finished_at.duration_since(start)))
}

/// Prints a line every second until every worker reported done; returns when the last did.
fn watch_progress(
    plan: &LoadPlan,
    live: &[LiveCounters],
    done_rx: &mpsc::Receiver<usize>,
    threads: usize,
    start: Instant,
) -> Instant {
    let mut remaining = threads;
    let mut last = (0u64, 0u64);
    let mut next_tick = start + Duration::from_secs(1);
    while remaining > 0 {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(wait) {
            Ok(_) => remaining -= 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (done, bytes, errors) = live
                    .iter()
                    .map(LiveCounters::read)
                    .fold((0, 0, 0), |(a, b, c), (x, y, z)| (a + x, b + y, c + z));
                if plan.progress {
                    eprintln!(
                        "[{:>4.0}s] {done} done, {} /s, {:.1} MB/s, {errors} errors",
                        start.elapsed().as_secs_f64(),
                        done - last.0,
                        (bytes - last.1) as f64 / 1e6,
                    );
                }
                last = (done, bytes);
                next_tick += Duration::from_secs(1);
            }
        }
    }
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::target::parse_target;

    fn plan(connections: usize, threads: usize) -> LoadPlan {
        LoadPlan {
            target: parse_target("http://127.0.0.1:1/").unwrap(),
            mode: Mode::Http,
            connections,
            threads: NonZeroUsize::new(threads).unwrap(),
            duration: None,
            requests: Some(10),
            rate: Some(100.0),
            method: "GET".into(),
            body_size: 0,
            headers: vec![],
            message_size: 64,
            timeout: Duration::from_secs(1),
            io_driver: IoDriver::Poll,
            pin: false,
            progress: false,
        }
    }

    #[test]
    fn jobs_split_quota_and_rate_over_all_connections() {
        let p = plan(4, 3);
        let start = Instant::now();
        let jobs: Vec<ConnJob> = (0..3).flat_map(|w| jobs_for(&p, w, start)).collect();
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs.iter().map(|j| j.quota.unwrap()).sum::<u64>(), 10);
        assert_eq!(
            jobs_for(&p, 0, start)
                .iter()
                .map(|j| j.index)
                .collect::<Vec<_>>(),
            [0, 3]
        );
        for j in &jobs {
            let (first, interval) = j.schedule.unwrap();
            assert_eq!(interval, Duration::from_millis(40));
            assert_eq!(first - start, Duration::from_millis(10 * j.index as u64));
        }
    }

    #[test]
    fn refuses_unbounded_runs() {
        let mut p = plan(1, 1);
        p.requests = None;
        assert!(run(p).unwrap_err().contains("--duration"));
    }
}
