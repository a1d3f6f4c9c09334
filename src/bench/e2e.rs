//! `ringflare bench e2e`: the same workloads through (a) the origin directly, (b) the built-in
//! edge + ringflare's connector and (c) the built-in edge + any other connector binary, in one
//! run on one machine.
//!
//! Why a subcommand rather than a `benches/` target: it drives the very binary a user runs
//! (edge, connector and origin are that binary's subcommands), it needs no cargo to run on a
//! Proxmox host, and the CI smoke (`--quick`) is a plain integration test of the same code.
//!
//! Every piece runs as its own process (origin, edge, each connector) so the connector's
//! CPU-seconds and peak RSS can be read from `/proc` alone; the load generator runs in this
//! process. Each leg starts a fresh edge and connector; the origin is shared. The results go
//! to one table (each leg's ratio to the origin) and to a JSON file.
//!
//! Between the origin leg and the connectors, a `relays` leg runs the 1 KiB workloads through
//! two chained `bench relay` processes (plain blocking copies: no TLS, no HTTP). That is what
//! any two extra processes on the path cost on this machine, the floor under the latency and
//! CPU the edge and a connector add, so the table can be read on any machine.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::procs::{Proc, wait_for_line};
use super::report::{LegResult, Machine, RELAYS_LEG, Results, WorkloadResult, render_table};
use super::run::{self, LoadPlan, Mode};
use super::target::parse_target;
use crate::runtime::IoDriver;

/// Flags of `bench e2e`.
#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Tiny sizes, a few seconds per leg (the CI smoke); the numbers mean little.
    #[arg(long)]
    pub quick: bool,
    /// Another connector binary to compare (e.g. cloudflared), repeatable. It is started as
    /// `PATH tunnel --no-autoupdate --config CONFIG --edge ADDR... --ha-connections N --metrics ADDR --cacert CA --protocol P run --token TOKEN`.
    #[arg(long = "connector", value_name = "PATH")]
    pub connectors: Vec<PathBuf>,
    /// Skip the ringflare connector leg (b).
    #[arg(long)]
    pub no_ringflare: bool,
    /// Only these workloads (comma-separated names, see the table), default all.
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Duration of each fixed-concurrency workload (default 10s, 1s with --quick).
    #[arg(long, value_parser = super::parse_duration)]
    pub duration: Option<Duration>,
    /// Where to write the raw results.
    #[arg(long, default_value = "bench-e2e.json")]
    pub out: PathBuf,
    /// Also write an SVG latency plot of the 1 KiB c=64 workload, one curve per leg.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Generator worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<std::num::NonZeroUsize>,
    /// Keep the state directory and the children's logs here instead of a temporary one.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Do not move the run into a loopback-only network namespace. By default, when a
    /// third-party `--connector` is given, the whole run (origin, edge, every connector and
    /// the generator) re-executes under `unshare --user --map-root-user --net` so that binary
    /// can reach nothing but this benchmark's loopback.
    #[arg(long)]
    pub no_netns: bool,
    /// HA connections per connector: the edge listens on 127.0.0.1 .. 127.0.0.N (same port) and
    /// each connector gets one `--edge` per address and `--ha-connections N`, as production has
    /// four connections to four edge addresses.
    #[arg(long = "ha", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub ha: u8,
    /// Tunnel transport of the connector legs: each connector runs once per transport, and
    /// the legs are labelled `NAME/quic`, `NAME/http2`.
    #[arg(long, value_enum, default_value_t = ProtocolChoice::Both)]
    pub protocol: ProtocolChoice,
    /// Pin the edge's workers to cores (one per core) instead of letting them float. Pinned,
    /// a one-stream transfer runs at half speed whenever its edge worker and connector worker
    /// share a core (about half the time), and 64 concurrent QUIC transfers run faster (the
    /// kernel cannot stack the edge's threads); see the README's benchmark section.
    #[arg(long)]
    pub pin_edge: bool,
    /// Skip the `relays` leg (the 1 KiB workloads through two plain relay processes, this
    /// machine's floor for two extra processes on the path).
    #[arg(long)]
    pub no_relays: bool,
}

/// `bench e2e --protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolChoice {
    Quic,
    Http2,
    Both,
}

impl ProtocolChoice {
    /// The `--protocol` values the connector legs run with, in table order.
    pub fn transports(self) -> &'static [&'static str] {
        match self {
            ProtocolChoice::Quic => &["quic"],
            ProtocolChoice::Http2 => &["http2"],
            ProtocolChoice::Both => &["http2", "quic"],
        }
    }
}

/// Set in the re-executed child so it does not try to isolate itself again.
const NETNS_ENV: &str = "RINGFLARE_E2E_NETNS";

/// Re-runs this command inside a fresh user + network namespace with only `lo` up.
/// `Ok(None)` when isolation is not wanted or not possible (then the caller runs in place).
fn run_isolated(args: &E2eArgs) -> Result<Option<std::process::ExitStatus>, String> {
    if args.connectors.is_empty() || args.no_netns || std::env::var_os(NETNS_ENV).is_some() {
        return Ok(None);
    }
    let usable = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!(
            "e2e: cannot create a network namespace (unshare failed); running the third-party connector without isolation"
        );
        return Ok(None);
    }
    eprintln!(
        "e2e: running inside a loopback-only network namespace (third-party connector given)"
    );
    let status = super::procs::loopback_netns(&self_exe()?)
        .args(std::env::args_os().skip(1))
        .env(NETNS_ENV, "1")
        .status()
        .map_err(|e| format!("re-running under unshare: {e}"))?;
    Ok(Some(status))
}

/// What kind of traffic a workload is, and what it is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Requests per second.
    RequestsPerS,
    /// Megabytes per second.
    MbPerS,
    /// WebSockets still open and echoing at the end.
    Held,
}

/// One workload of the suite.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Stable name (used by `--workloads` and in the JSON).
    pub name: &'static str,
    /// Path on the origin.
    pub path: String,
    /// Traffic kind.
    pub mode: Mode,
    /// Method.
    pub method: &'static str,
    /// Upload size.
    pub body_size: u64,
    /// Connections.
    pub connections: usize,
    /// Fixed duration, or
    pub duration: Option<Duration>,
    /// a fixed number of requests.
    pub requests: Option<u64>,
    /// How the ratio to the origin is computed.
    pub metric: Metric,
}

/// The suite: full sizes, or tiny ones with `quick`.
pub fn workloads(quick: bool, duration: Option<Duration>) -> Vec<Workload> {
    let d = duration.unwrap_or(if quick {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(10)
    });
    let (big, each, n, idle) = if quick {
        (16u64 << 20, 1u64 << 20, 8usize, 200usize)
    } else {
        (1u64 << 30, 64u64 << 20, 64, 10_000)
    };
    let http = |name, c| Workload {
        name,
        path: "/bytes/1024".into(),
        mode: Mode::Http,
        method: "GET",
        body_size: 0,
        connections: c,
        duration: Some(d),
        requests: None,
        metric: Metric::RequestsPerS,
    };
    vec![
        http("1k_c1", 1),
        http("1k_c64", 64),
        http("1k_c512", 512),
        Workload {
            name: "download_1_stream",
            path: format!("/bytes/{big}"),
            connections: 1,
            duration: None,
            requests: Some(1),
            metric: Metric::MbPerS,
            ..http("", 1)
        },
        Workload {
            name: "upload_1_stream",
            path: "/upload".into(),
            method: "POST",
            body_size: big,
            connections: 1,
            duration: None,
            requests: Some(1),
            metric: Metric::MbPerS,
            ..http("", 1)
        },
        Workload {
            name: "download_64_streams",
            path: format!("/bytes/{each}"),
            connections: n,
            duration: None,
            requests: Some(n as u64),
            metric: Metric::MbPerS,
            ..http("", 1)
        },
        Workload {
            name: "ws_idle",
            path: "/ws".into(),
            mode: Mode::WsIdle,
            connections: idle,
            duration: Some(if quick { Duration::from_secs(1) } else { d }),
            metric: Metric::Held,
            ..http("", 1)
        },
    ]
}

/// A free loopback port (bound and released: a tiny race, acceptable for a benchmark).
pub(super) fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// The edge's tunnel listen addresses: 127.0.0.1 .. 127.0.0.`n`, one port free on all of them
/// (all of 127.0.0.0/8 is loopback on Linux).
fn edge_addrs(n: u8) -> Result<Vec<SocketAddr>, String> {
    for _ in 0..50 {
        let first = free_port()?;
        let addrs: Vec<SocketAddr> = (1..=n)
            .map(|i| SocketAddr::from(([127, 0, 0, i], first.port())))
            .collect();
        // Held together so the check covers every address at once, then released.
        let held: Result<Vec<TcpListener>, _> = addrs.iter().map(TcpListener::bind).collect();
        if held.is_ok() {
            return Ok(addrs);
        }
    }
    Err(format!("no port free on 127.0.0.1..127.0.0.{n}"))
}

fn self_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("locating the ringflare binary: {e}"))
}

/// The benchmark origin, shared by every leg.
pub(super) fn start_origin(dir: &Path, threads: usize) -> Result<(Proc, SocketAddr), String> {
    let mut cmd = Command::new(self_exe()?);
    cmd.args([
        "bench",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        &threads.to_string(),
    ]);
    let mut p = Proc::spawn("origin", cmd, &dir.join("origin.log"), true)?;
    let out = p.stdout().ok_or("origin stdout not captured")?;
    let line = wait_for_line(out, |l| l.contains("http="), Duration::from_secs(20))
        .map_err(|e| format!("origin did not start: {e}"))?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("origin printed no address: {line}"))?;
    Ok((p, addr))
}

/// `ringflare bench relay --listen 127.0.0.1:0 --to TO`; returns it with its address.
fn start_relay(dir: &Path, name: &str, to: SocketAddr) -> Result<(Proc, SocketAddr), String> {
    let mut cmd = Command::new(self_exe()?);
    cmd.args(["bench", "relay", "--listen", "127.0.0.1:0", "--to"])
        .arg(to.to_string());
    let mut p = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")), true)?;
    let out = p.stdout().ok_or("relay stdout not captured")?;
    let line = wait_for_line(
        out,
        |l| l.starts_with("bench relay listening"),
        Duration::from_secs(20),
    )
    .map_err(|e| format!("{name} did not start: {e}"))?;
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{name} printed no address: {line}"))?;
    Ok((p, addr))
}

/// The `relays` leg: the 1 KiB workloads through two chained relays. The relay next to the
/// origin fills the connector's columns, the one next to the load the edge's.
fn relays_leg(origin: SocketAddr, dir: &Path, suite: &[Workload], args: &E2eArgs) -> LegResult {
    let mut leg = LegResult::new(RELAYS_LEG, "two `bench relay` processes (no TLS, no HTTP)");
    let requests: Vec<&Workload> = suite
        .iter()
        .filter(|w| w.mode == Mode::Http && w.metric == Metric::RequestsPerS)
        .collect();
    if requests.is_empty() {
        leg.skipped = Some("no 1 KiB workload selected".into());
        return leg;
    }
    match run_through_relays(origin, dir, &requests, args) {
        Ok(results) => leg.results = results,
        Err(e) => leg.skipped = Some(e),
    }
    leg
}

/// Starts the two relays and runs `requests` through them. A relay that started is stopped
/// on every way out (a `Proc` is killed when dropped).
fn run_through_relays(
    origin: SocketAddr,
    dir: &Path,
    requests: &[&Workload],
    args: &E2eArgs,
) -> Result<Vec<WorkloadResult>, String> {
    let (mut near, near_addr) = start_relay(dir, "relay-origin", origin)?;
    let (mut far, entry) = start_relay(dir, "relay-load", near_addr)?;
    let results = requests
        .iter()
        .map(|w| run_measured(RELAYS_LEG, entry, Some(&near), Some(&far), w, args))
        .collect();
    far.stop(Duration::from_secs(5));
    near.stop(Duration::from_secs(5));
    Ok(results)
}

/// A running edge + connector pair.
pub(super) struct Tunnel {
    pub(super) edge: Proc,
    pub(super) connector: Proc,
    pub(super) eyeball: SocketAddr,
    /// The connector's metrics server (its `/ready` counts registered connections).
    pub(super) metrics: SocketAddr,
}

/// `ringflare edge init`, then the edge, then the connector; waits until a request through
/// the eyeball reaches the origin.
fn start_tunnel(
    dir: &Path,
    connector: Option<&Path>,
    origin: SocketAddr,
    ha: u8,
    protocol: &str,
    pin_edge: bool,
) -> Result<Tunnel, String> {
    let ingress = format!("ingress:\n  - service: http://{origin}\n");
    launch_tunnel(
        dir,
        connector,
        &ingress,
        ha,
        pin_edge,
        &["--loglevel", "warn", "--protocol", protocol],
    )
}

/// [`start_tunnel`] with any config.yml text (whose catch-all must serve `GET /bytes/1`) and
/// extra connector flags placed before `run` (`--loglevel`, ...; `--protocol http2` unless
/// they name one); the connector always gets `--metrics` (see [`Tunnel::metrics`]).
pub(super) fn launch_tunnel(
    dir: &Path,
    connector: Option<&Path>,
    config_text: &str,
    ha: u8,
    pin_edge: bool,
    connector_flags: &[&str],
) -> Result<Tunnel, String> {
    let exe = self_exe()?;
    let state = dir.join("edge-state");
    let _ = std::fs::remove_dir_all(&state);
    let init = Command::new(&exe)
        .args(["edge", "init", "--state-dir"])
        .arg(&state)
        .output()
        .map_err(|e| format!("ringflare edge init: {e}"))?;
    let text = String::from_utf8_lossy(&init.stdout).into_owned();
    if !init.status.success() {
        return Err(format!(
            "ringflare edge init failed: {}{}",
            text,
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let token = text
        .lines()
        .skip_while(|l| !l.starts_with("Tunnel token"))
        .nth(1)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("ringflare edge init printed no token")?
        .to_owned();
    let (tunnel_addrs, eyeball, metrics) = (edge_addrs(ha)?, free_port()?, free_port()?);
    let mut cmd = Command::new(&exe);
    cmd.args(["edge", "--state-dir"]).arg(&state);
    for a in &tunnel_addrs {
        cmd.args(["--listen", &a.to_string()]);
    }
    cmd.args(["--eyeball", &eyeball.to_string(), "--loglevel", "warn"]);
    // The edge stands in for Cloudflare's, which runs on other machines: by default it floats
    // (no core pinning), like the bench client and origin, so the kernel keeps its work off
    // the cores the connector under test is busy on. Pinned (`--pin-edge`), an edge worker and
    // a connector worker shared a core for about half the one-stream transfers (each side
    // places a stream's connection independently), and those ran at half speed.
    if !pin_edge {
        cmd.arg("--no-pinning");
    }
    let edge = Proc::spawn("edge", cmd, &dir.join("edge.log"), false)?;
    let config = dir.join("config.yml");
    std::fs::write(&config, config_text)
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
    let (bin, name) = match connector {
        Some(p) => (p.to_owned(), "connector"),
        None => (exe, "ringflare"),
    };
    let mut cmd = Command::new(&bin);
    cmd.arg("tunnel");
    if connector.is_some() {
        cmd.arg("--no-autoupdate");
    }
    cmd.arg("--config").arg(&config);
    for a in &tunnel_addrs {
        cmd.args(["--edge", &a.to_string()]);
    }
    cmd.args(["--ha-connections", &ha.to_string()]);
    cmd.args(["--metrics", &metrics.to_string()]);
    cmd.arg("--cacert");
    cmd.arg(state.join("ca.pem"));
    if !connector_flags.contains(&"--protocol") {
        cmd.args(["--protocol", "http2"]);
    }
    cmd.args(connector_flags).args(["run", "--token", &token]);
    let connector = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")), false)?;
    let mut t = Tunnel {
        edge,
        connector,
        eyeball,
        metrics,
    };
    wait_ready(&mut t, Duration::from_secs(30))?;
    Ok(t)
}

/// Polls `GET /bytes/1` on the eyeball until the origin answers through the tunnel.
fn wait_ready(t: &mut Tunnel, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        for p in [&mut t.edge, &mut t.connector] {
            if let Some(status) = p.exited() {
                return Err(format!("{} exited early ({status}); see its log", p.name));
            }
        }
        match probe(t.eyeball) {
            Ok(200) => return Ok(()),
            Ok(code) => last = format!("status {code}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("tunnel not ready after {limit:?}: {last}"))
}

/// Waits (bounded) until the connector's `/ready` reports `want` connections and returns the
/// last count it reported: what the table shows as "HA connections registered".
fn registered_connections(t: &Tunnel, want: u8, limit: Duration) -> Option<u32> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Ok(body) = http_get(t.metrics, "/ready") {
            last = ready_connections(&body).or(last);
        }
        if last.is_some_and(|n| n >= u32::from(want)) || Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `readyConnections` of a `/ready` body (cloudflared's and ringflare's JSON).
fn ready_connections(body: &str) -> Option<u32> {
    let json_start = body.find('{')?;
    let v: serde_json::Value = serde_json::from_str(body[json_start..].trim()).ok()?;
    v.get("readyConnections")?.as_u64()?.try_into().ok()
}

/// A one-shot `GET path` returning the whole response (head and body) as text.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.take(64 * 1024)
        .read_to_string(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

pub(super) fn probe(addr: SocketAddr) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /bytes/1 HTTP/1.1\r\nHost: bench.localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP response".to_owned())
}

/// Runs every workload against `base`, sampling `measured` (the connector) around each.
fn run_workloads(
    leg: &str,
    base: SocketAddr,
    measured: Option<&Proc>,
    suite: &[Workload],
    args: &E2eArgs,
) -> Vec<WorkloadResult> {
    suite
        .iter()
        .map(|w| run_measured(leg, base, measured, None, w, args))
        .collect()
}

/// One workload, with the measured process's CPU time and peak RSS around it, and the
/// edge's CPU time when there is one.
fn run_measured(
    leg: &str,
    base: SocketAddr,
    measured: Option<&Proc>,
    edge: Option<&Proc>,
    w: &Workload,
    args: &E2eArgs,
) -> WorkloadResult {
    eprintln!("e2e: {leg} / {} ...", w.name);
    if let Some(p) = measured {
        p.reset_peak_rss();
    }
    let cpu0 = measured.and_then(Proc::cpu);
    let edge0 = edge.and_then(Proc::cpu);
    let overflows0 = super::procs::listen_overflows();
    let started = Instant::now();
    let result = run_one(base, w, args);
    let wall = started.elapsed();
    // CPU time a process spent since `start` (its reading before the workload).
    let spent = |p: Option<&Proc>, start: Option<Duration>| {
        Some(p.and_then(Proc::cpu)?.saturating_sub(start?))
    };
    let mut r = WorkloadResult::new(
        w,
        result,
        spent(measured, cpu0),
        measured.and_then(Proc::peak_rss_kib),
        wall,
    )
    .with_edge_cpu(spent(edge, edge0));
    r.listen_overflows = overflows0
        .zip(super::procs::listen_overflows())
        .map(|(a, b)| b.saturating_sub(a));
    r
}

fn run_one(base: SocketAddr, w: &Workload, args: &E2eArgs) -> Result<super::Report, String> {
    let scheme = if w.mode == Mode::WsIdle { "ws" } else { "http" };
    let target = parse_target(&format!("{scheme}://{base}{}", w.path))?;
    let plan = LoadPlan {
        target,
        mode: w.mode,
        connections: w.connections,
        threads: args
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(std::num::NonZeroUsize::MIN),
        duration: w.duration,
        requests: w.requests,
        rate: None,
        method: w.method.to_owned(),
        body_size: w.body_size,
        headers: Vec::new(),
        message_size: 64,
        timeout: Duration::from_secs(if args.quick { 30 } else { 120 }),
        io_driver: IoDriver::Auto,
        pin: false,
        progress: false,
    };
    run::run(plan)
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        memory_kib: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| super::procs::parse_status_kib(&m, "MemTotal:")),
    }
}

/// Runs one edge+connector leg; a leg that cannot start is recorded with the reason.
fn tunnel_leg(
    name: String,
    bin: Option<&Path>,
    protocol: &str,
    origin: SocketAddr,
    dir: &Path,
    suite: &[Workload],
    args: &E2eArgs,
) -> LegResult {
    let name = format!("{name}/{protocol}");
    let label = bin.map_or_else(|| "ringflare".to_owned(), |b| b.display().to_string());
    let label = format!("{label} --protocol {protocol}");
    let mut leg = LegResult::new(&name, &label);
    let leg_dir = dir.join(name.replace('/', "-"));
    if let Err(e) = std::fs::create_dir_all(&leg_dir) {
        leg.skipped = Some(format!("creating {}: {e}", leg_dir.display()));
        return leg;
    }
    let mut tunnel = start_tunnel(&leg_dir, bin, origin, args.ha, protocol, args.pin_edge);
    if let Ok(t) = &tunnel {
        leg.connections = registered_connections(t, args.ha, Duration::from_secs(15));
        leg.connections_wanted = Some(args.ha.into());
    }
    for w in suite {
        let t = match &mut tunnel {
            Ok(t) => t,
            Err(e) => {
                let e = e.lines().next().unwrap_or_default().to_owned();
                eprintln!("e2e: leg {name} skipped: {e}");
                if leg.results.is_empty() {
                    leg.skipped = Some(e);
                }
                break;
            }
        };
        let mut result = run_measured(&name, t.eyeball, Some(&t.connector), Some(&t.edge), w, args);
        // A wedged edge or connector would fail every later workload: say so, start afresh.
        if probe(t.eyeball) != Ok(200) {
            result.note = Some("the tunnel stopped answering after this workload; edge and connector were restarted".into());
            eprintln!(
                "e2e: {name}: tunnel stopped answering after {}; restarting it",
                w.name
            );
            t.connector.stop(Duration::from_secs(5));
            t.edge.stop(Duration::from_secs(5));
            tunnel = start_tunnel(&leg_dir, bin, origin, args.ha, protocol, args.pin_edge);
        }
        leg.results.push(result);
    }
    if let Ok(t) = &mut tunnel {
        t.connector.stop(Duration::from_secs(5));
        t.edge.stop(Duration::from_secs(5));
    }
    leg
}

/// Entry point of `ringflare bench e2e`.
pub fn main(args: &E2eArgs) -> Result<(), String> {
    if let Some(status) = run_isolated(args)? {
        return if status.success() {
            Ok(())
        } else {
            Err(format!("isolated run failed: {status}"))
        };
    }
    let results = run_e2e(args)?;
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, json + "\n")
        .map_err(|e| format!("writing {}: {e}", args.out.display()))?;
    if let Some(path) = &args.plot {
        std::fs::write(path, super::report::plot_legs(&results, "1k_c64"))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    print!("{}", render_table(&results));
    println!("raw results: {}", args.out.display());
    Ok(())
}

/// Runs every leg and returns the results.
pub fn run_e2e(args: &E2eArgs) -> Result<Results, String> {
    super::raise_nofile_limit();
    let dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ringflare-e2e-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut suite = workloads(args.quick, args.duration);
    if !args.workloads.is_empty() {
        suite.retain(|w| args.workloads.iter().any(|n| n == w.name));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut origin, origin_addr) = start_origin(&dir, cores)?;
    let mut legs = vec![LegResult::new("origin", "direct")];
    legs[0].results = run_workloads("origin", origin_addr, None, &suite, args);
    if !args.no_relays {
        legs.push(relays_leg(origin_addr, &dir, &suite, args));
    }
    for protocol in args.protocol.transports() {
        if !args.no_ringflare {
            legs.push(tunnel_leg(
                "ringflare".into(),
                None,
                protocol,
                origin_addr,
                &dir,
                &suite,
                args,
            ));
        }
        for (i, bin) in args.connectors.iter().enumerate() {
            legs.push(tunnel_leg(
                format!("other{}", i + 1),
                Some(bin),
                protocol,
                origin_addr,
                &dir,
                &suite,
                args,
            ));
        }
    }
    origin.stop(Duration::from_secs(5));
    if args.work_dir.is_none() {
        // Logs and the throwaway edge state (with its test credentials) go with the run.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Results {
        machine: machine(),
        quick: args.quick,
        legs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_connections_reads_cloudflared_ready_json() {
        let resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n\
                    {\"status\":200,\"readyConnections\":4,\"connectorId\":\"x\"}\n";
        assert_eq!(ready_connections(resp), Some(4));
        assert_eq!(
            ready_connections("HTTP/1.1 503 x\r\n\r\n{\"status\":503}"),
            None
        );
        assert_eq!(ready_connections("garbage"), None);
    }

    #[test]
    fn edge_addrs_share_one_port_over_consecutive_loopback_addresses() {
        let a = edge_addrs(4).unwrap();
        assert_eq!(a.len(), 4);
        assert!(a.iter().all(|x| x.port() == a[0].port()));
        assert_eq!(a[3].ip().to_string(), "127.0.0.4");
    }
}
