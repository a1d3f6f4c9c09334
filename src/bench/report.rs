//! End-to-end results: the JSON shape, the derived per-connector costs, and the printed table.
//!
//! Pure: takes measured numbers, returns data and text. Ratios compare each leg with the
//! origin leg on the workload's own metric (requests/s, MB/s, or WebSockets held).

use std::time::Duration;

use serde::Serialize;

use super::e2e::{Metric, Workload};
use super::plot::{Series, render_svg};
use super::stats::{Report, STALL_LIMIT};

/// Name of the leg through two plain relays (see `e2e`), the machine's floor.
pub const RELAYS_LEG: &str = "relays";

/// The workload whose added latency the table sums up under it.
const LATENCY_WORKLOAD: &str = "1k_c1";

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to the benchmark.
    pub cores: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory.
    pub memory_kib: Option<u64>,
}

/// Everything one `bench e2e` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Where it ran.
    pub machine: Machine,
    /// Whether the tiny `--quick` sizes were used.
    pub quick: bool,
    /// Leg (a) first, then the connectors.
    pub legs: Vec<LegResult>,
}

/// One leg: the origin directly, or the edge with one connector.
#[derive(Debug, Clone, Serialize)]
pub struct LegResult {
    /// `origin`, `ringflare`, `other1`, ...
    pub name: String,
    /// `direct`, `ringflare` or the connector binary's path.
    pub connector: String,
    /// Why the leg did not run, if it did not.
    pub skipped: Option<String>,
    /// One entry per workload.
    pub results: Vec<WorkloadResult>,
    /// Edge connections the connector reported ready (`/ready`) after it started.
    pub connections: Option<u32>,
    /// Edge connections it was asked for (`--ha`).
    pub connections_wanted: Option<u32>,
}

impl LegResult {
    /// An empty leg.
    pub fn new(name: &str, connector: &str) -> Self {
        Self {
            name: name.to_owned(),
            connector: connector.to_owned(),
            skipped: None,
            results: Vec::new(),
            connections: None,
            connections_wanted: None,
        }
    }
}

/// One workload on one leg.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    /// Workload name.
    pub workload: String,
    /// What the ratio uses.
    pub metric: Metric,
    /// The generator's report, or why the run failed.
    pub report: Option<Report>,
    /// Error if the generator could not run at all.
    pub error: Option<String>,
    /// Wall time of the workload, seconds.
    pub wall_s: f64,
    /// Connector CPU-seconds (utime + stime) spent during the workload.
    pub connector_cpu_s: Option<f64>,
    /// Connector CPU-seconds per GB (10^9 bytes) of payload moved.
    pub cpu_s_per_gb: Option<f64>,
    /// Connector CPU-seconds per 100,000 requests.
    pub cpu_s_per_100k_requests: Option<f64>,
    /// Connector peak RSS during the workload (VmHWM), KiB.
    pub connector_peak_rss_kib: Option<u64>,
    /// The built-in edge's CPU-seconds (utime + stime) during the workload: the edge sits in
    /// every leg's path, and should cost less than the connector it serves.
    pub edge_cpu_s: Option<f64>,
    /// Edge CPU-seconds per GB of payload moved.
    pub edge_cpu_s_per_gb: Option<f64>,
    /// Edge CPU-seconds per 100,000 requests.
    pub edge_cpu_s_per_100k_requests: Option<f64>,
    /// Anything the harness had to do (e.g. restart a wedged tunnel).
    pub note: Option<String>,
    /// Connections dropped by full accept queues during the workload (the namespace's
    /// `TcpExt ListenOverflows` delta: the generator's, the edge's and the origin's
    /// listeners together; host-wide when the run is not in its own namespace).
    pub listen_overflows: Option<u64>,
}

impl WorkloadResult {
    /// Derives the per-GB and per-request costs from the raw numbers.
    pub fn new(
        w: &Workload,
        report: Result<Report, String>,
        cpu: Option<Duration>,
        peak_rss_kib: Option<u64>,
        wall: Duration,
    ) -> Self {
        let cpu_s = cpu.map(|c| c.as_secs_f64());
        let (report, error) = match report {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        let (per_gb, per_100k) = per_unit(report.as_ref(), cpu_s);
        Self {
            workload: w.name.to_owned(),
            metric: w.metric,
            cpu_s_per_gb: per_gb,
            cpu_s_per_100k_requests: per_100k,
            report,
            error,
            wall_s: wall.as_secs_f64(),
            connector_cpu_s: cpu_s,
            connector_peak_rss_kib: peak_rss_kib,
            edge_cpu_s: None,
            edge_cpu_s_per_gb: None,
            edge_cpu_s_per_100k_requests: None,
            note: None,
            listen_overflows: None,
        }
    }

    /// Adds the built-in edge's CPU time during the workload, and its per-GB and per-request
    /// costs.
    pub fn with_edge_cpu(mut self, cpu: Option<Duration>) -> Self {
        let cpu_s = cpu.map(|c| c.as_secs_f64());
        let (per_gb, per_100k) = per_unit(self.report.as_ref(), cpu_s);
        self.edge_cpu_s = cpu_s;
        self.edge_cpu_s_per_gb = per_gb;
        self.edge_cpu_s_per_100k_requests = per_100k;
        self
    }

    /// The longest pause of any transfer, ms: shown for the transfer workloads (MB/s), where
    /// it is issue 12's stall figure; for 1 KiB requests it would only repeat the latency.
    pub fn stall_ms(&self) -> Option<f64> {
        match self.metric {
            Metric::MbPerS => self.report.as_ref()?.max_stall_ms,
            Metric::RequestsPerS | Metric::Held => None,
        }
    }

    /// The value the ratio compares.
    pub fn metric_value(&self) -> Option<f64> {
        let r = self.report.as_ref()?;
        Some(match self.metric {
            Metric::RequestsPerS => r.requests_per_s,
            Metric::MbPerS => r.mb_per_s,
            Metric::Held => r.requests as f64,
        })
    }
}

/// `cpu_s` per GB (10^9 bytes, both directions) and per 100,000 requests of `report`.
fn per_unit(report: Option<&Report>, cpu_s: Option<f64>) -> (Option<f64>, Option<f64>) {
    let per = |amount: Option<f64>| match (cpu_s, amount) {
        (Some(c), Some(a)) if a > 0.0 => Some(c / a),
        _ => None,
    };
    let bytes = report.map(|r| (r.rx_bytes + r.tx_bytes) as f64 / 1e9);
    let requests = report.map(|r| r.requests as f64 / 1e5);
    (per(bytes), per(requests))
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

/// A line under a table row, aligned past its leg and workload columns.
fn under_row(text: std::fmt::Arguments<'_>) -> String {
    format!("{:<15} {:<20} {text}\n", "", "")
}

/// The one table: a row per leg and workload, with the ratio to the origin leg.
pub fn render_table(res: &Results) -> String {
    let m = &res.machine;
    let mut out = format!(
        "end-to-end benchmark{}: {} cores ({}), kernel {}\n",
        if res.quick {
            " (--quick: tiny sizes, not a measurement)"
        } else {
            ""
        },
        m.cores,
        m.cpu,
        m.kernel
    );
    out += &format!(
        "{:<15} {:<20} {:>11} {:>9} {:>9} {:>9} {:>7} {:>8} {:>10} {:>9} {:>11} {:>9} {:>6} {:>9}\n",
        "leg",
        "workload",
        "req/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "cpu s/GB",
        "cpu s/100k",
        "edge s/GB",
        "edge s/100k",
        "RSS MiB",
        "errors",
        "stall ms"
    );
    let origin = res.legs.first();
    for leg in &res.legs {
        if let Some(why) = &leg.skipped {
            out += &format!("{:<15} skipped: {why}\n", leg.name);
            continue;
        }
        for w in &leg.results {
            let base = origin
                .and_then(|o| o.results.iter().find(|b| b.workload == w.workload))
                .and_then(WorkloadResult::metric_value);
            let ratio = match (w.metric_value(), base) {
                (Some(v), Some(b)) if b > 0.0 => Some(v / b),
                _ => None,
            };
            let Some(r) = &w.report else {
                out += &format!(
                    "{:<15} {:<20} failed: {}\n",
                    leg.name,
                    w.workload,
                    w.error.as_deref().unwrap_or("?")
                );
                continue;
            };
            out += &format!(
                "{:<15} {:<20} {:>11.0} {:>9.1} {:>9.3} {:>9.3} {:>7} {:>8} {:>10} {:>9} {:>11} {:>9} {:>6} {:>9}\n",
                leg.name,
                w.workload,
                r.requests_per_s,
                r.mb_per_s,
                r.latency.p50_us / 1000.0,
                r.latency.p99_us / 1000.0,
                opt(ratio, 2),
                opt(w.cpu_s_per_gb, 2),
                opt(w.cpu_s_per_100k_requests, 2),
                opt(w.edge_cpu_s_per_gb, 2),
                opt(w.edge_cpu_s_per_100k_requests, 2),
                opt(w.connector_peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
                r.error_total,
                opt(w.stall_ms(), 0)
            );
            if w.stall_ms().is_some() && r.stalled > 0 {
                out += &under_row(format_args!(
                    "stalled: {} of {} transfers paused over {} s",
                    r.stalled,
                    r.requests + r.error_total,
                    STALL_LIMIT.as_secs()
                ));
            }
            if let Some(n) = w.listen_overflows.filter(|n| *n > 0) {
                out += &under_row(format_args!(
                    "listen overflows: {n} (connections dropped by full accept queues, each retried by the client 1 s+ later)"
                ));
            }
            if let Some(note) = &w.note {
                out += &under_row(format_args!("note: {note}"));
            }
        }
    }
    for leg in res.legs.iter().filter(|l| l.connections_wanted.is_some()) {
        out += &format!(
            "{}: {} of {} HA connections registered\n",
            leg.name,
            leg.connections
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            leg.connections_wanted.unwrap_or(0)
        );
    }
    out += &added_latency(res);
    out += "ratio: leg / origin on requests/s (1k_*), MB/s (transfers) or WebSockets held (ws_idle).\n";
    out += "cpu and RSS: the connector process only (utime+stime from /proc/PID/stat, VmHWM); edge: the built-in edge process, same source.\n";
    out += "stall ms: transfers only, the longest pause between bytes of any one transfer while it was unfinished.\n";
    if res
        .legs
        .iter()
        .any(|l| l.name == RELAYS_LEG && l.skipped.is_none())
    {
        out += "relays: the relay next to the origin in the cpu/RSS columns, the one next to the load in the edge columns.\n";
    }
    out
}

/// One line per leg: its p50 at `LATENCY_WORKLOAD` minus the origin's, the latency the extra
/// processes on its path add. Empty without an origin figure to subtract.
fn added_latency(res: &Results) -> String {
    let p50 = |leg: &LegResult| {
        leg.results
            .iter()
            .find(|w| w.workload == LATENCY_WORKLOAD)
            .and_then(|w| w.report.as_ref())
            .map(|r| r.latency.p50_us / 1000.0)
    };
    let Some(origin) = res.legs.first().and_then(p50) else {
        return String::new();
    };
    let mut out = format!("latency added at {LATENCY_WORKLOAD} (leg p50 - origin p50):\n");
    for leg in &res.legs[1..] {
        let Some(ms) = p50(leg) else { continue };
        let what = if leg.name == RELAYS_LEG {
            "  (two processes that only copy bytes: this machine's floor for any two)"
        } else {
            ""
        };
        out += &format!("  {:<15} {:>7.3} ms{what}\n", leg.name, ms - origin);
    }
    out
}

/// An SVG with one latency curve per leg for `workload`.
pub fn plot_legs(res: &Results, workload: &str) -> String {
    let curves: Vec<(String, Vec<super::stats::PercentilePoint>)> = res
        .legs
        .iter()
        .filter_map(|leg| {
            let r = leg
                .results
                .iter()
                .find(|w| w.workload == workload)?
                .report
                .as_ref()?;
            Some((leg.name.clone(), r.percentiles.clone()))
        })
        .collect();
    let series: Vec<Series<'_>> = curves
        .iter()
        .map(|(label, points)| Series { label, points })
        .collect();
    render_svg(&format!("{workload}: latency by percentile"), &series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::e2e::workloads;
    use crate::bench::stats::{LiveCounters, ReportMeta, Stats};

    fn test_machine() -> Machine {
        Machine {
            cores: 2,
            cpu: "test cpu".into(),
            kernel: "6.1".into(),
            memory_kib: None,
        }
    }

    fn report(requests: u64, bytes: u64, secs: u64) -> Report {
        report_at(requests, bytes, secs, Duration::from_micros(100))
    }

    /// `requests` that each took `latency`.
    fn report_at(requests: u64, bytes: u64, secs: u64, latency: Duration) -> Report {
        let live = LiveCounters::default();
        let mut s = Stats::new();
        for _ in 0..requests {
            s.record(latency, bytes / requests.max(1), 0, &live);
        }
        s.connections = 1;
        s.report(ReportMeta::default(), Duration::from_secs(secs))
    }

    #[test]
    fn costs_and_ratios_are_derived_from_measurements() {
        let suite = workloads(true, None);
        let w = &suite[1];
        let origin = WorkloadResult::new(
            w,
            Ok(report(200_000, 0, 2)),
            None,
            None,
            Duration::from_secs(2),
        );
        let leg = WorkloadResult::new(
            w,
            Ok(report(100_000, 2_000_000_000, 2)),
            Some(Duration::from_secs(3)),
            Some(20480),
            Duration::from_secs(2),
        )
        .with_edge_cpu(Some(Duration::from_millis(2_500)));
        assert_eq!(leg.cpu_s_per_100k_requests, Some(3.0));
        assert_eq!(leg.cpu_s_per_gb, Some(1.5));
        assert_eq!(leg.edge_cpu_s_per_100k_requests, Some(2.5));
        assert_eq!(leg.edge_cpu_s_per_gb, Some(1.25));
        assert_eq!(origin.cpu_s_per_gb, None);
        assert_eq!(origin.edge_cpu_s_per_gb, None);
        let res = Results {
            machine: test_machine(),
            quick: true,
            legs: vec![
                LegResult {
                    results: vec![origin],
                    ..LegResult::new("origin", "direct")
                },
                LegResult {
                    results: vec![leg],
                    connections: Some(3),
                    connections_wanted: Some(4),
                    ..LegResult::new("ringflare", "ringflare")
                },
                LegResult {
                    skipped: Some("no such binary".into()),
                    ..LegResult::new("other1", "/x")
                },
            ],
        };
        let table = render_table(&res);
        let header = table.lines().nth(1).unwrap();
        let row = table.lines().find(|l| l.starts_with("ringflare")).unwrap();
        assert!(row.contains(" 0.50 "), "{row}");
        assert!(row.contains("20.0"), "{row}");
        // Each figure sits under its own column: the header names end where the values do.
        for (name, value) in [
            ("cpu s/GB", "1.50"),
            ("cpu s/100k", "3.00"),
            ("edge s/GB", "1.25"),
            ("edge s/100k", "2.50"),
        ] {
            let end = header.find(name).unwrap() + name.len();
            assert_eq!(
                &row[end - value.len()..end],
                value,
                "{name}\n{header}\n{row}"
            );
        }
        assert!(table.contains("other1          skipped: no such binary"));
        assert!(table.contains("ringflare: 3 of 4 HA connections registered"));
        let svg = plot_legs(&res, w.name);
        assert_eq!(svg.matches("<polyline").count(), 2);
        let json = serde_json::to_value(&res).unwrap();
        assert_eq!(json["legs"][1]["results"][0]["metric"], "requests_per_s");
    }

    #[test]
    fn transfer_rows_show_the_longest_stall_and_count_the_stalled() {
        let suite = workloads(true, None);
        let (one_k, dl64) = (&suite[1], &suite[5]);
        assert_eq!(dl64.name, "download_64_streams");
        let live = LiveCounters::default();
        let mut s = Stats::new();
        for gap_ms in [40, 1_700, 300] {
            s.record(Duration::from_secs(2), 1 << 20, 0, &live);
            s.record_stall(Duration::from_millis(gap_ms));
        }
        let rep = s.report(ReportMeta::default(), Duration::from_secs(2));
        let mut dl = WorkloadResult::new(dl64, Ok(rep.clone()), None, None, Duration::ZERO);
        dl.listen_overflows = Some(42);
        let mut small = WorkloadResult::new(one_k, Ok(rep), None, None, Duration::ZERO);
        small.listen_overflows = Some(0);
        let leg = LegResult {
            results: vec![small, dl],
            ..LegResult::new("ringflare/quic", "ringflare")
        };
        let res = Results {
            machine: test_machine(),
            quick: false,
            legs: vec![leg],
        };
        let table = render_table(&res);
        let header = table.lines().nth(1).unwrap();
        assert!(header.trim_end().ends_with("errors  stall ms"), "{header}");
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.contains(name))
                .unwrap()
                .split_whitespace()
                .last()
                .unwrap()
                .to_owned()
        };
        assert_eq!(row("download_64_streams"), "1700");
        assert_eq!(row("1k_c64"), "-", "no stall figure for 1 KiB requests");
        assert!(
            table.contains("stalled: 1 of 3 transfers paused over 1 s"),
            "{table}"
        );
        assert_eq!(
            table.matches("listen overflows: 42 (").count(),
            1,
            "only a workload that overflowed says so: {table}"
        );
        let json = serde_json::to_value(&res).unwrap();
        assert_eq!(
            json["legs"][0]["results"][1]["report"]["max_stall_ms"],
            1700.0
        );
        assert_eq!(json["legs"][0]["results"][1]["listen_overflows"], 42);
    }

    /// Under the table, each leg's p50 at 1k_c1 minus the origin's: the relays' floor first,
    /// then the connectors; a leg without that workload gets no line.
    #[test]
    fn added_latency_is_each_legs_p50_minus_the_origins() {
        let suite = workloads(true, None);
        let (c1, c64) = (&suite[0], &suite[1]);
        assert_eq!(c1.name, LATENCY_WORKLOAD);
        let at = |w, us| {
            let rep = report_at(1_000, 1_024_000, 1, Duration::from_micros(us));
            WorkloadResult::new(w, Ok(rep), None, None, Duration::ZERO)
        };
        let leg = |name: &str, results| LegResult {
            results,
            ..LegResult::new(name, "x")
        };
        let res = Results {
            machine: test_machine(),
            quick: false,
            legs: vec![
                leg("origin", vec![at(c1, 40), at(c64, 500)]),
                leg(RELAYS_LEG, vec![at(c1, 100), at(c64, 900)]),
                leg("ringflare/http2", vec![at(c1, 240), at(c64, 3_000)]),
                leg("other1/http2", vec![at(c64, 9_000)]),
            ],
        };
        let table = render_table(&res);
        let lines: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.starts_with("latency added at 1k_c1"))
            .take(4)
            .collect();
        assert_eq!(lines.len(), 4, "{table}");
        let figure =
            |line: &str| -> f64 { line.split_whitespace().nth(1).unwrap().parse().unwrap() };
        assert!(lines[1].trim_start().starts_with("relays "), "{table}");
        assert!((figure(lines[1]) - 0.060).abs() < 0.002, "{table}");
        assert!(lines[1].contains("floor"), "{table}");
        assert!(
            lines[2].trim_start().starts_with("ringflare/http2 "),
            "{table}"
        );
        assert!((figure(lines[2]) - 0.200).abs() < 0.003, "{table}");
        assert!(
            !lines[3].contains("other1"),
            "no 1k_c1 result, no line: {table}"
        );
        assert!(
            table.contains("relays: the relay next to the origin"),
            "{table}"
        );
    }
}
