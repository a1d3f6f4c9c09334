//! Measurements: one [`Stats`] per worker on the hot path, merged into a [`Report`] at the end.
//!
//! Each worker owns its `Stats` (an HDR histogram plus plain counters) and updates it without
//! atomics or locks; the only cross-thread traffic while running is [`LiveCounters`], which the
//! owning worker bumps with relaxed atomics so the progress line can read them. This module
//! does no I/O and reads no clock: callers pass durations and instants in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// A transfer whose progress paused longer than this counts as stalled (issue 12's target:
/// "no stream waits more than 1 s with data pending").
pub const STALL_LIMIT: Duration = Duration::from_secs(1);

/// The longest pause in one transfer's progress: from the moment the request starts going
/// out until its response is complete (or the exchange fails), the longest time between two
/// moments bytes moved (a write of request bytes completed, or a read returned response
/// bytes). The first gap is therefore the time to first byte, the last one the wait for the
/// end of the response; a stream that starves while others on the same tunnel connection
/// move shows up here even when its total time looks fine.
#[derive(Debug, Clone, Copy)]
pub struct StallClock {
    /// When bytes last moved (or the exchange began).
    last: Instant,
    /// The longest gap seen so far.
    worst: Duration,
}

impl StallClock {
    /// A clock for an exchange that begins at `now`.
    pub fn start(now: Instant) -> Self {
        Self {
            last: now,
            worst: Duration::ZERO,
        }
    }

    /// Bytes moved at `now`.
    pub fn progress(&mut self, now: Instant) {
        self.worst = self.worst.max(now.saturating_duration_since(self.last));
        self.last = self.last.max(now);
    }

    /// The exchange ended (complete or failed) at `now`: the longest gap, counting the
    /// one that ends here.
    pub fn finish(mut self, now: Instant) -> Duration {
        self.progress(now);
        self.worst
    }
}

/// Highest latency the histogram tracks (larger values are clamped): one hour, in ns.
const MAX_TRACKABLE_NS: u64 = 3_600_000_000_000;
/// Three significant digits: 0.1% relative error on every percentile.
const SIGFIGS: u8 = 3;

/// Why a request or connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect (or TLS/WebSocket handshake) failed.
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// A read or write on an established connection failed, or the peer closed early.
    Io,
    /// The peer sent something that is not valid HTTP/1.1, WebSocket or the expected echo.
    Protocol,
    /// A 4xx response (counted as an error, its latency still recorded).
    Status4xx,
    /// A 5xx response (counted as an error, its latency still recorded).
    Status5xx,
}

/// Error counts by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// See [`ErrorKind::Connect`].
    pub connect: u64,
    /// See [`ErrorKind::Timeout`].
    pub timeout: u64,
    /// See [`ErrorKind::Io`].
    pub io: u64,
    /// See [`ErrorKind::Protocol`].
    pub protocol: u64,
    /// See [`ErrorKind::Status4xx`].
    pub status_4xx: u64,
    /// See [`ErrorKind::Status5xx`].
    pub status_5xx: u64,
}

impl ErrorCounts {
    fn slot(&mut self, kind: ErrorKind) -> &mut u64 {
        match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Io => &mut self.io,
            ErrorKind::Protocol => &mut self.protocol,
            ErrorKind::Status4xx => &mut self.status_4xx,
            ErrorKind::Status5xx => &mut self.status_5xx,
        }
    }

    /// Sum over all kinds.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.io + self.protocol + self.status_4xx + self.status_5xx
    }

    fn merge(&mut self, o: &Self) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.io += o.io;
        self.protocol += o.protocol;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
    }
}

/// Progress counters one worker publishes for the once-a-second line.
///
/// Aligned to a cache line so two workers bumping theirs never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LiveCounters {
    /// Completed requests (or messages, or echo round trips).
    pub done: AtomicU64,
    /// Payload bytes received plus sent.
    pub bytes: AtomicU64,
    /// Errors of any kind.
    pub errors: AtomicU64,
}

impl LiveCounters {
    fn add(field: &AtomicU64, n: u64) {
        // Single writer (the owning worker): a relaxed add never contends.
        field.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads (done, bytes, errors).
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// One worker's measurements.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of every completed request, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Completed requests (any status).
    pub requests: u64,
    /// Response payload bytes received (bodies, WebSocket payloads, echoed TCP bytes).
    pub rx_bytes: u64,
    /// Request payload bytes sent (bodies, WebSocket payloads, TCP bytes).
    pub tx_bytes: u64,
    /// Responses by status class: index 1 = 1xx ... 5 = 5xx, 0 = anything else.
    pub status: [u64; 6],
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Connections (or WebSockets) successfully established.
    pub connections: u64,
    /// Longest progress gap of any measured transfer ([`StallClock`]), nanoseconds.
    pub max_stall_ns: u64,
    /// Transfers whose longest gap was measured (HTTP exchanges, complete or failed).
    pub stall_samples: u64,
    /// Of those, the ones whose longest gap exceeded [`STALL_LIMIT`].
    pub stalled: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        // Invariant: the bounds are constants hdrhistogram accepts (low >= 1,
        // high >= 2 * low, sigfig <= 5), so this cannot fail.
        let hist = Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, SIGFIGS)
            .expect("constant histogram bounds are valid");
        Self {
            hist,
            requests: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            status: [0; 6],
            errors: ErrorCounts::default(),
            connections: 0,
            max_stall_ns: 0,
            stall_samples: 0,
            stalled: 0,
        }
    }

    /// Records one transfer's longest progress gap ([`StallClock::finish`]).
    pub fn record_stall(&mut self, gap: Duration) {
        let ns = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
        self.max_stall_ns = self.max_stall_ns.max(ns);
        self.stall_samples += 1;
        self.stalled += u64::from(gap > STALL_LIMIT);
    }

    /// Records one completed exchange.
    pub fn record(&mut self, latency: Duration, rx: u64, tx: u64, live: &LiveCounters) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(ns.min(MAX_TRACKABLE_NS));
        self.requests += 1;
        self.rx_bytes += rx;
        self.tx_bytes += tx;
        LiveCounters::add(&live.done, 1);
        LiveCounters::add(&live.bytes, rx + tx);
    }

    /// Records the status class of a response; 4xx and 5xx also count as errors.
    pub fn record_status(&mut self, status: u16, live: &LiveCounters) {
        let class = usize::from(status / 100);
        self.status[if (1..=5).contains(&class) { class } else { 0 }] += 1;
        match class {
            4 => self.record_error(ErrorKind::Status4xx, live),
            5 => self.record_error(ErrorKind::Status5xx, live),
            _ => {}
        }
    }

    /// Records a failure.
    pub fn record_error(&mut self, kind: ErrorKind, live: &LiveCounters) {
        *self.errors.slot(kind) += 1;
        LiveCounters::add(&live.errors, 1);
    }

    /// Adds another worker's statistics into this one.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides, so `add` cannot fail; a failure would only lose samples.
        let _ = self.hist.add(&other.hist);
        self.requests += other.requests;
        self.rx_bytes += other.rx_bytes;
        self.tx_bytes += other.tx_bytes;
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        self.errors.merge(&other.errors);
        self.connections += other.connections;
        self.max_stall_ns = self.max_stall_ns.max(other.max_stall_ns);
        self.stall_samples += other.stall_samples;
        self.stalled += other.stalled;
    }
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Smallest sample.
    pub min_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

/// Response counts by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    /// 1xx (only 101 reaches here, for WebSockets).
    #[serde(rename = "1xx")]
    pub s1xx: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub s5xx: u64,
    /// Anything outside 100-599.
    pub other: u64,
}

/// One point of the latency-percentile curve (for the plot and the JSON).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PercentilePoint {
    /// Percentile, 0-100.
    pub percentile: f64,
    /// Latency at that percentile, microseconds.
    pub latency_us: f64,
}

/// The final result of one run, as printed and as `--json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What ran: `http`, `ws`, `ws-idle`, `tcp-echo`, `tcp-bulk`.
    pub mode: String,
    /// Target URL.
    pub url: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Worker threads of the generator.
    pub threads: usize,
    /// I/O driver of the generator.
    pub driver: String,
    /// Target rate for open-loop runs, requests/s.
    pub rate: Option<f64>,
    /// Wall time from start to the last worker's end, seconds.
    pub elapsed_s: f64,
    /// Completed requests (or round trips).
    pub requests: u64,
    /// Completed requests per second.
    pub requests_per_s: f64,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Payload bytes sent.
    pub tx_bytes: u64,
    /// (rx + tx) payload megabytes (10^6) per second.
    pub mb_per_s: f64,
    /// Connections established.
    pub connections_opened: u64,
    /// Latency summary.
    pub latency: Latency,
    /// Responses by status class.
    pub status: StatusCounts,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Total errors.
    pub error_total: u64,
    /// Latency at [`curve_percentiles`] (for plots).
    pub percentiles: Vec<PercentilePoint>,
    /// The longest progress gap of any transfer, ms ([`StallClock`]); `None` when the mode
    /// does not measure it (only HTTP exchanges do).
    pub max_stall_ms: Option<f64>,
    /// Transfers whose longest gap exceeded [`STALL_LIMIT`].
    pub stalled: u64,
}

/// Percentiles of the latency curve: 1 - 10^(-i/10) for i = 0..=50 (0% to 99.999%), then 100%.
///
/// Log-spaced towards the tail, as HdrHistogram's own percentile plots are.
pub fn curve_percentiles() -> Vec<f64> {
    (0..=50)
        .map(|i| 100.0 * (1.0 - 10f64.powf(-f64::from(i) / 10.0)))
        .chain([100.0])
        .collect()
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Stats {
    /// Summarises merged statistics over `elapsed`.
    pub fn report(&self, meta: ReportMeta, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = &self.hist;
        let empty = h.is_empty();
        let q = |p: f64| {
            if empty {
                0.0
            } else {
                us(h.value_at_quantile(p))
            }
        };
        let latency = Latency {
            min_us: if empty { 0.0 } else { us(h.min()) },
            mean_us: if empty { 0.0 } else { h.mean() / 1000.0 },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if empty { 0.0 } else { us(h.max()) },
        };
        let [other, s1xx, s2xx, s3xx, s4xx, s5xx] = self.status;
        Report {
            mode: meta.mode,
            url: meta.url,
            connections: meta.connections,
            threads: meta.threads,
            driver: meta.driver,
            rate: meta.rate,
            elapsed_s: secs,
            requests: self.requests,
            requests_per_s: self.requests as f64 / secs,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            mb_per_s: (self.rx_bytes + self.tx_bytes) as f64 / secs / 1e6,
            connections_opened: self.connections,
            latency,
            status: StatusCounts {
                s1xx,
                s2xx,
                s3xx,
                s4xx,
                s5xx,
                other,
            },
            errors: self.errors,
            error_total: self.errors.total(),
            percentiles: curve_percentiles()
                .into_iter()
                .map(|p| PercentilePoint {
                    percentile: p,
                    latency_us: q(p / 100.0),
                })
                .collect(),
            max_stall_ms: (self.stall_samples > 0).then(|| self.max_stall_ns as f64 / 1e6),
            stalled: self.stalled,
        }
    }
}

/// Run parameters copied into the report.
#[derive(Debug, Clone, Default)]
pub struct ReportMeta {
    /// Mode name.
    pub mode: String,
    /// Target URL.
    pub url: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// I/O driver name.
    pub driver: String,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
}

impl Report {
    /// The human-readable summary printed at the end of a run.
    pub fn render_text(&self) -> String {
        let l = &self.latency;
        let e = &self.errors;
        let s = &self.status;
        let mut out = format!(
            "{} {}: {} connections on {} threads ({} driver){}\n",
            self.mode,
            self.url,
            self.connections,
            self.threads,
            self.driver,
            self.rate
                .map(|r| format!(", open loop at {r} req/s"))
                .unwrap_or_default()
        );
        out += &format!(
            "  {} requests in {:.2}s: {:.0} req/s, {:.2} MB/s (rx {} B, tx {} B)\n",
            self.requests,
            self.elapsed_s,
            self.requests_per_s,
            self.mb_per_s,
            self.rx_bytes,
            self.tx_bytes
        );
        out += &format!(
            "  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1}, min {:.1})\n",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us, l.min_us
        );
        out += &format!(
            "  status: 1xx {} 2xx {} 3xx {} 4xx {} 5xx {} other {}; connections opened {}\n",
            s.s1xx, s.s2xx, s.s3xx, s.s4xx, s.s5xx, s.other, self.connections_opened
        );
        out += &format!(
            "  errors: {} (connect {}, timeout {}, io {}, protocol {}, 4xx {}, 5xx {})\n",
            self.error_total, e.connect, e.timeout, e.io, e.protocol, e.status_4xx, e.status_5xx
        );
        if let Some(ms) = self.max_stall_ms {
            out += &format!(
                "  longest pause in any transfer: {ms:.1} ms ({} transfers paused over {} s)\n",
                self.stalled,
                STALL_LIMIT.as_secs()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_histograms() {
        let live = LiveCounters::default();
        let mut a = Stats::new();
        let mut b = Stats::new();
        for i in 1..=100u64 {
            a.record(Duration::from_micros(i), 10, 1, &live);
        }
        b.record(Duration::from_millis(50), 5, 0, &live);
        b.record_status(503, &live);
        b.record_error(ErrorKind::Connect, &live);
        a.merge(&b);
        assert_eq!(a.requests, 101);
        assert_eq!(a.rx_bytes, 1005);
        assert_eq!(a.errors.status_5xx, 1);
        assert_eq!(a.errors.connect, 1);
        assert_eq!(live.read(), (101, 1105, 2));
        let r = a.report(ReportMeta::default(), Duration::from_secs(2));
        assert!((r.requests_per_s - 50.5).abs() < 1e-9);
        assert!((r.latency.p50_us - 51.0).abs() < 0.1, "{:?}", r.latency);
        assert!((r.latency.max_us - 50_000.0).abs() < 50.0);
        assert_eq!(r.status.s5xx, 1);
        assert_eq!(r.error_total, 2);
        assert_eq!(r.percentiles.len(), 52);
        assert_eq!(r.percentiles[0].percentile, 0.0);
        assert!((r.percentiles[50].percentile - 99.999).abs() < 1e-9);
        assert!(r.render_text().contains("errors: 2"));
    }

    #[test]
    fn stall_clock_keeps_the_longest_gap_including_the_first_and_last() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = StallClock::start(t0);
        // Time to first byte 30 ms, then 10 ms steps, a 1.5 s pause, steps again.
        for at in [30, 40, 50, 1550, 1560] {
            c.progress(ms(at));
        }
        assert_eq!(c.finish(ms(1570)), Duration::from_millis(1500));
        // The wait for the end of the response counts too.
        let mut c = StallClock::start(t0);
        c.progress(ms(5));
        assert_eq!(c.finish(ms(2005)), Duration::from_millis(2000));
        // The time to first byte alone.
        assert_eq!(
            StallClock::start(t0).finish(ms(700)),
            Duration::from_millis(700)
        );
        // An instant out of order never makes a negative gap or moves the clock back.
        let mut c = StallClock::start(ms(100));
        c.progress(ms(50));
        assert_eq!(c.finish(ms(120)), Duration::from_millis(20));
    }

    #[test]
    fn stalls_merge_as_the_worst_and_count_those_over_the_limit() {
        let live = LiveCounters::default();
        let (mut a, mut b) = (Stats::new(), Stats::new());
        a.record_stall(Duration::from_millis(200));
        a.record_stall(STALL_LIMIT);
        b.record_stall(Duration::from_millis(1_250));
        b.record(Duration::from_millis(1), 1, 0, &live);
        a.merge(&b);
        let r = a.report(ReportMeta::default(), Duration::from_secs(1));
        assert_eq!(r.max_stall_ms, Some(1250.0));
        assert_eq!(r.stalled, 1, "exactly the limit is not a stall");
        assert!(
            r.render_text()
                .contains("longest pause in any transfer: 1250.0 ms (1 transfers")
        );
        assert_eq!(
            Stats::new()
                .report(ReportMeta::default(), Duration::ZERO)
                .max_stall_ms,
            None
        );
    }

    #[test]
    fn empty_report_has_zero_latency() {
        let r = Stats::new().report(ReportMeta::default(), Duration::ZERO);
        assert_eq!(r.latency, Latency::default());
        assert_eq!(r.requests, 0);
    }
}
