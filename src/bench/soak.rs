//! `ringflare bench soak`: the adversarial soak of issue 10. The built-in edge, ringflare's
//! connector and the benchmark origin run as in `bench e2e`; a normal load (closed-loop 1 KiB
//! GETs) runs through the tunnel while hostile visitors and a broken origin attack the same
//! tunnel. The report says what the normal load saw (errors, p50/p99), whether a tunnel
//! connection was lost (the connector's `/metrics`), and both processes' peak RSS and open
//! descriptors (from `/proc`), before, during and after the attacks.
//!
//! The attackers are plain blocking threads with short socket timeouts (they only have to be
//! rude, not fast); the broken origin ([`evil`]) runs in this process too. What must hold on
//! any machine is listed in [`SoakReport::violations`]: no failed normal request, no tunnel
//! connection lost, neither process gone, and descriptors back near their start once the
//! attacks end.

mod attacks;
mod evil;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::e2e::{Tunnel, launch_tunnel, start_origin};
use super::procs::parse_status_kib;
use super::run::{self, LoadPlan, Mode};
use super::stats::ErrorCounts;
use super::target::parse_target;
use crate::runtime::IoDriver;

pub use attacks::AttackStats;

/// Flags of `bench soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the attacks and the normal load run (default 60s, 12s with --quick).
    #[arg(short = 'd', long, value_parser = super::parse_duration)]
    pub duration: Option<Duration>,
    /// The CI version: fewer attackers, a short run.
    #[arg(long)]
    pub quick: bool,
    /// Connections of the normal load (default 16, 4 with --quick).
    #[arg(short = 'c', long)]
    pub connections: Option<usize>,
    /// Slowloris connections held open (default 500, 50 with --quick).
    #[arg(long)]
    pub slowloris: Option<usize>,
    /// Only these attacks (comma-separated names from the README table; `none` for a baseline
    /// run of the normal load alone); default all.
    #[arg(long, value_delimiter = ',')]
    pub attacks: Vec<String>,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Keep the state directory and the children's logs here instead of a temporary one.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// What the normal load saw.
#[derive(Debug, Clone, Serialize)]
pub struct NormalLoad {
    /// Requests sent: completed exchanges plus those that failed without a response.
    pub attempts: u64,
    /// Completed exchanges (any status).
    pub requests: u64,
    /// Failed requests (any error, any non-2xx status).
    pub errors: u64,
    /// Failures by kind.
    pub error_kinds: ErrorCounts,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Largest latency, microseconds.
    pub max_us: f64,
}

/// One process's resources, from `/proc`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcStats {
    /// RSS before the attacks, KiB.
    pub rss_start_kib: u64,
    /// Peak RSS during the run (VmHWM, reset before the attacks), KiB.
    pub rss_peak_kib: u64,
    /// RSS after the attacks ended and the settle wait, KiB.
    pub rss_end_kib: u64,
    /// Open descriptors before the attacks.
    pub fds_start: u64,
    /// Most open descriptors seen during the run (sampled every 200 ms).
    pub fds_peak: u64,
    /// Open descriptors after the attacks ended and the settle wait.
    pub fds_end: u64,
    /// Set when the process exited during the run.
    pub exited: Option<String>,
}

/// The tunnel's connections, from the connector's `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TunnelStats {
    /// `cloudflared_tunnel_ha_connections` before the attacks.
    pub ha_connections_start: u64,
    /// `cloudflared_tunnel_ha_connections` at the end.
    pub ha_connections_end: u64,
    /// Successful registrations during the run: each is a connection that was lost and re-made.
    pub reregistrations: u64,
    /// Tunnel connections lost: re-registrations plus connections missing at the end.
    pub connections_lost: u64,
}

/// The result of a soak run.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Whether this was the `--quick` version.
    pub quick: bool,
    /// Attack duration, seconds.
    pub duration_s: f64,
    /// How long the descriptors took to come back after the attacks, seconds (capped).
    pub settle_s: f64,
    /// The normal load.
    pub normal: NormalLoad,
    /// Tunnel connections.
    pub tunnel: TunnelStats,
    /// The built-in edge.
    pub edge: ProcStats,
    /// ringflare's connector.
    pub connector: ProcStats,
    /// What each attacker did.
    pub attacks: Vec<AttackStats>,
    /// What must hold and did not; empty on success.
    pub violations: Vec<String>,
}

/// Descriptors a process may keep above its start once the attacks ended (pooled origin
/// connections of the normal load, timers, the odd late close).
fn fd_slack(start: u64) -> u64 {
    (start / 4).max(24)
}

impl SoakReport {
    fn judge(&mut self) {
        let mut v = Vec::new();
        if self.normal.errors > 0 {
            v.push(format!(
                "{} of {} normal requests failed ({:?})",
                self.normal.errors, self.normal.attempts, self.normal.error_kinds
            ));
        }
        if self.normal.requests == 0 {
            v.push("the normal load completed no request".into());
        }
        if self.tunnel.connections_lost > 0 {
            v.push(format!(
                "{} tunnel connection(s) lost",
                self.tunnel.connections_lost
            ));
        }
        for (name, p) in [("edge", &self.edge), ("connector", &self.connector)] {
            if let Some(e) = &p.exited {
                v.push(format!("the {name} exited: {e}"));
            }
            if p.fds_end > p.fds_start + fd_slack(p.fds_start) {
                v.push(format!(
                    "{name} descriptors not released: {} at start, {} after the attacks",
                    p.fds_start, p.fds_end
                ));
            }
        }
        self.violations = v;
    }

    /// The human-readable table.
    pub fn render_text(&self) -> String {
        let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
        let mut s = String::new();
        s.push_str(&format!(
            "soak: {:.0}s of attacks{}\n\n",
            self.duration_s,
            if self.quick { " (quick)" } else { "" }
        ));
        let n = &self.normal;
        s.push_str(&format!(
            "normal load   {} requests ({:.0}/s completed), {} failed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
            n.attempts,
            n.requests_per_s,
            n.errors,
            n.p50_us / 1e3,
            n.p99_us / 1e3,
            n.max_us / 1e3
        ));
        let t = &self.tunnel;
        s.push_str(&format!(
            "tunnel        {} connection(s) lost (ha_connections {} -> {}, {} re-registrations)\n\n",
            t.connections_lost, t.ha_connections_start, t.ha_connections_end, t.reregistrations
        ));
        s.push_str(&format!(
            "{:<10} {:>12} {:>12} {:>12} {:>8} {:>8} {:>8}\n",
            "process", "rss start", "rss peak", "rss end", "fd start", "fd peak", "fd end"
        ));
        for (name, p) in [("edge", &self.edge), ("connector", &self.connector)] {
            s.push_str(&format!(
                "{:<10} {:>12} {:>12} {:>12} {:>8} {:>8} {:>8}{}\n",
                name,
                mib(p.rss_start_kib),
                mib(p.rss_peak_kib),
                mib(p.rss_end_kib),
                p.fds_start,
                p.fds_peak,
                p.fds_end,
                p.exited
                    .as_ref()
                    .map(|e| format!("  EXITED: {e}"))
                    .unwrap_or_default()
            ));
        }
        s.push_str(&format!(
            "(descriptors settled after {:.1}s)\n\n{:<20} {:>6} {:>12} {:>8}  notes\n",
            self.settle_s, "attack", "conns", "sent", "errors"
        ));
        for a in &self.attacks {
            s.push_str(&format!(
                "{:<20} {:>6} {:>12} {:>8}  {}\n",
                a.name, a.connections, a.sent, a.errors, a.notes
            ));
        }
        if self.violations.is_empty() {
            s.push_str(
                "\nOK: no failed normal request, no tunnel connection lost, descriptors released\n",
            );
        } else {
            s.push_str("\nFAILED:\n");
            for v in &self.violations {
                s.push_str(&format!("  - {v}\n"));
            }
        }
        s
    }
}

/// Entry point of `ringflare bench soak`.
pub fn main(args: &SoakArgs) -> Result<(), String> {
    let report = run_soak(args)?;
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}

/// Samples a process's RSS and descriptors.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS:")
}

fn fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

/// The connector's tunnel counters from its `/metrics`: (ha_connections, registrations).
fn tunnel_metrics(addr: SocketAddr) -> Option<(u64, u64)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let value = |prefix: &str| -> Option<u64> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .reduce(|a, b| a + b)
    };
    Some((
        value("cloudflared_tunnel_ha_connections").unwrap_or(0),
        value("cloudflared_tunnel_tunnel_register_success").unwrap_or(0),
    ))
}

/// Peaks seen by the sampler thread.
#[derive(Default)]
struct Peaks {
    edge_fds: u64,
    connector_fds: u64,
}

/// Runs the whole soak and returns the report.
pub fn run_soak(args: &SoakArgs) -> Result<SoakReport, String> {
    if let Some(bad) = args
        .attacks
        .iter()
        .find(|a| *a != "none" && !attacks::NAMES.contains(&a.as_str()))
    {
        return Err(format!(
            "unknown attack {bad:?}; known: none, {}",
            attacks::NAMES.join(", ")
        ));
    }
    super::raise_nofile_limit();
    let quick = args.quick;
    let duration = args
        .duration
        .unwrap_or(Duration::from_secs(if quick { 12 } else { 60 }));
    let dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ringflare-soak-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    let (mut origin, origin_addr) = start_origin(&dir, 2)?;
    let evil = evil::start(stop.clone())?;
    let sink = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding sink: {e}"))?;
    let sink_addr = sink.local_addr().map_err(|e| e.to_string())?;
    let sink_thread = evil::sink(sink, stop.clone());
    let config = format!(
        "ingress:\n  - hostname: {TCP_HOST}\n    service: tcp://{sink_addr}\n  - hostname: {EVIL_HOST}\n    service: http://{}\n  - service: http://{origin_addr}\n",
        evil.addr
    );
    // One HA connection, as in issue 10: a lost connection is then a tunnel outage.
    let mut tunnel = launch_tunnel(&dir, None, &config, 1, false, &["--loglevel", "info"])?;
    let metrics = tunnel.metrics;
    let result = soak_with(&mut tunnel, metrics, duration, args, &stop);
    stop.store(true, Ordering::Relaxed);
    tunnel.connector.stop(Duration::from_secs(5));
    tunnel.edge.stop(Duration::from_secs(5));
    origin.stop(Duration::from_secs(5));
    evil.join();
    let _ = sink_thread.join();
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else if let Ok(r) = &result {
        let json = serde_json::to_string_pretty(r).unwrap_or_default();
        let _ = std::fs::write(dir.join("soak.json"), json + "\n");
    }
    result
}

/// Host names the ingress routes to the attack services.
pub const TCP_HOST: &str = "tcp.soak.localhost";
/// The broken origin's host name.
pub const EVIL_HOST: &str = "evil.soak.localhost";

fn soak_with(
    t: &mut Tunnel,
    metrics: SocketAddr,
    duration: Duration,
    args: &SoakArgs,
    stop: &Arc<AtomicBool>,
) -> Result<SoakReport, String> {
    let (edge_pid, conn_pid) = (t.edge.pid(), t.connector.pid());
    // Let the connector finish registering every HA connection before the baseline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = tunnel_metrics(metrics);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(500));
        let now = tunnel_metrics(metrics);
        if now.is_some() && now == before {
            break;
        }
        before = now;
    }
    let (ha_start, reg_start) = before.ok_or("the connector's /metrics does not answer")?;
    let mut edge = ProcStats::default();
    let mut connector = ProcStats::default();
    for (p, pid, proc_) in [
        (&mut edge, edge_pid, &t.edge),
        (&mut connector, conn_pid, &t.connector),
    ] {
        p.rss_start_kib = rss_kib(pid).unwrap_or(0);
        p.fds_start = fds(pid).unwrap_or(0);
        proc_.reset_peak_rss();
    }

    // Sampler: descriptor peaks every 200 ms until the attacks and the settle wait end.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        thread::spawn(move || {
            let mut peaks = Peaks::default();
            while sampling.load(Ordering::Relaxed) {
                peaks.edge_fds = peaks.edge_fds.max(fds(edge_pid).unwrap_or(0));
                peaks.connector_fds = peaks.connector_fds.max(fds(conn_pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(200));
            }
            peaks
        })
    };

    let scale = attacks::Scale::new(args.quick, args.slowloris);
    let attackers = attacks::start(t.eyeball, scale, &args.attacks, stop.clone());
    let load = run::run(LoadPlan {
        target: parse_target(&format!("http://{}/bytes/1024", t.eyeball))?,
        mode: Mode::Http,
        connections: args.connections.unwrap_or(if args.quick { 4 } else { 16 }),
        threads: std::num::NonZeroUsize::MIN,
        duration: Some(duration),
        requests: None,
        rate: None,
        method: "GET".into(),
        body_size: 0,
        headers: Vec::new(),
        message_size: 64,
        timeout: Duration::from_secs(10),
        io_driver: IoDriver::Auto,
        pin: false,
        progress: false,
    });
    stop.store(true, Ordering::Relaxed);
    let attacks = attackers.join();
    let load = load?;

    // Settle: wait for the descriptors to come back near where they started.
    let settle_started = Instant::now();
    let settle_limit = Duration::from_secs(if args.quick { 15 } else { 30 });
    while settle_started.elapsed() < settle_limit {
        let back = [(edge_pid, edge.fds_start), (conn_pid, connector.fds_start)]
            .iter()
            .all(|&(pid, start)| fds(pid).is_none_or(|n| n <= start + fd_slack(start)));
        if back {
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    let settle_s = settle_started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let peaks = sampler.join().unwrap_or_default();

    for (p, pid, proc_, peak_fds) in [
        (&mut edge, edge_pid, &mut t.edge, peaks.edge_fds),
        (
            &mut connector,
            conn_pid,
            &mut t.connector,
            peaks.connector_fds,
        ),
    ] {
        p.rss_end_kib = rss_kib(pid).unwrap_or(0);
        p.fds_end = fds(pid).unwrap_or(0);
        p.fds_peak = peak_fds.max(p.fds_start).max(p.fds_end);
        p.rss_peak_kib = proc_.peak_rss_kib().unwrap_or(0).max(p.rss_end_kib);
        p.exited = proc_.exited();
    }
    let (ha_end, reg_end) = tunnel_metrics(metrics).unwrap_or((0, reg_start));
    let reregistrations = reg_end.saturating_sub(reg_start);
    let tunnel = TunnelStats {
        ha_connections_start: ha_start,
        ha_connections_end: ha_end,
        reregistrations,
        connections_lost: reregistrations + ha_start.saturating_sub(ha_end),
    };
    let non_2xx = load.status.s1xx
        + load.status.s3xx
        + load.status.s4xx
        + load.status.s5xx
        + load.status.other;
    let e = &load.errors;
    let no_response = e.connect + e.timeout + e.io + e.protocol;
    let mut report = SoakReport {
        quick: args.quick,
        duration_s: duration.as_secs_f64(),
        settle_s,
        normal: NormalLoad {
            attempts: load.requests + no_response,
            requests: load.requests,
            errors: no_response + non_2xx,
            error_kinds: load.errors,
            requests_per_s: load.requests_per_s,
            p50_us: load.latency.p50_us,
            p99_us: load.latency.p99_us,
            max_us: load.latency.max_us,
        },
        tunnel,
        edge,
        connector,
        attacks,
        violations: Vec::new(),
    };
    report.judge();
    Ok(report)
}
