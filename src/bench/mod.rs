//! `ringflare bench`: the load generator, the trivial benchmark origin and the end-to-end
//! benchmark.
//!
//! This module owns load generation and measurement: turning flags into a [`LoadPlan`],
//! running it thread-per-core ([`run::run`]), the benchmark origin ([`serve`]) and the
//! multi-leg comparison ([`e2e`]). The wire codecs it needs are small and sans-IO
//! ([`response`], [`ws`]); results are plain data ([`stats::Report`]) rendered as text, JSON
//! or SVG. It never touches the tunnel protocol: it only speaks HTTP/1.1, WebSocket and TCP
//! to whatever it is pointed at, so it measures ringflare exactly as a visitor sees it.

pub mod client;
pub mod e2e;
mod io;
pub mod plot;
pub mod procs;
pub mod relay;
pub mod report;
pub mod response;
pub mod run;
pub mod serve;
pub mod soak;
pub mod stats;
mod streams;
pub mod target;
pub mod ws;

use std::io::Write as _;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::duration::parse_go_duration;
use crate::runtime::IoDriver;

pub use run::{LoadPlan, Mode};
pub use stats::Report;

/// `ringflare bench`.
#[derive(Debug, Parser)]
#[command(
    name = "ringflare bench",
    about = "HTTP/1.1, WebSocket and TCP load generator (thread-per-core, HDR latency histograms)",
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  ringflare bench serve --listen 127.0.0.1:8080\n  ringflare bench -c 64 -d 10s http://127.0.0.1:8080/bytes/1024\n  ringflare bench --rate 20000 -c 64 -d 10s --plot lat.svg http://127.0.0.1:8080/bytes/1024\n  ringflare bench -m POST --body-size 1073741824 -c 1 -n 1 http://127.0.0.1:8080/upload\n  ringflare bench --mode ws-idle -c 10000 -d 30s ws://127.0.0.1:8080/ws\n  ringflare bench e2e --quick\n  ringflare bench soak -d 5m\n  ringflare bench relay --listen 127.0.0.1:8081 --to 127.0.0.1:8080"
)]
pub struct BenchCli {
    /// `serve`, `e2e`, `soak` or `relay`; without one, run a load against URL.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// The load to generate.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Subcommands of `ringflare bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Run the trivial benchmark origin (/bytes/N, /upload, /ws, raw TCP echo).
    Serve(ServeArgs),
    /// The end-to-end benchmark: origin direct vs built-in edge + connector(s).
    E2e(e2e::E2eArgs),
    /// The adversarial soak: a normal load through edge + connector while hostile visitors
    /// and a broken origin attack the same tunnel.
    Soak(soak::SoakArgs),
    /// A plain blocking TCP relay (no TLS, no HTTP): two chained between the load and the
    /// origin measure what any two extra processes on the path cost on this machine.
    Relay(RelayArgs),
}

/// Flags of `bench relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Listen address (port 0 = any free port; the chosen one is printed).
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// Where each accepted connection is relayed to.
    #[arg(long)]
    pub to: std::net::SocketAddr,
}

/// Flags of a load run.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Target: http://host:port/path, ws://host:port/path or tcp://host:port.
    pub url: Option<String>,
    /// Concurrent connections (spread over the worker threads).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Run for this long (Go duration syntax: 10s, 1m30s).
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests (round trips) in total.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Open loop: send this many requests per second in total; latency counts from each
    /// request's intended send time (no coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Request body size in bytes (streamed, never held in memory).
    #[arg(long, default_value_t = 0)]
    pub body_size: u64,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Traffic kind; default from the URL scheme (http -> http, ws -> ws, tcp -> tcp).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// WebSocket / TCP message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub message_size: usize,
    /// Worker threads (default: one per core).
    #[arg(short = 't', long)]
    pub threads: Option<NonZeroUsize>,
    /// Pin worker threads to cores.
    #[arg(long)]
    pub pin: bool,
    /// Per-request timeout, connect included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// I/O driver: auto, io_uring or poll.
    #[arg(long, default_value = "auto")]
    pub io_driver: IoDriver,
    /// Print the report as JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG latency-percentile plot to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Flags of `bench serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP listen address (port 0 = any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Also run a raw TCP echo listener here.
    #[arg(long)]
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// Worker threads (default: one per core).
    #[arg(short = 't', long)]
    pub threads: Option<NonZeroUsize>,
    /// Pin worker threads to cores.
    #[arg(long)]
    pub pin: bool,
    /// I/O driver: auto, io_uring or poll.
    #[arg(long, default_value = "auto")]
    pub io_driver: IoDriver,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

/// Raises the soft open-file limit to the hard one: 10,000 idle WebSockets need 10,000
/// descriptors and the usual soft default is 1024. Best effort; the doctor reports limits.
pub fn raise_nofile_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: l.maximum,
                maximum: l.maximum,
            },
        );
    }
}

impl LoadArgs {
    /// Resolves the flags into a plan (resolving the host, validating the request).
    pub fn plan(&self) -> Result<LoadPlan, String> {
        let url = self.url.as_deref().ok_or("missing URL (see --help)")?;
        let target = target::parse_target(url)?;
        let mode = self.mode.unwrap_or(Mode::for_scheme(target.scheme));
        if mode == Mode::WsIdle && self.duration.is_none() {
            return Err("--mode ws-idle needs --duration (how long to hold them)".into());
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number".into());
        }
        let threads = self
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN);
        let plan = LoadPlan {
            target,
            mode,
            connections: self.connections.max(1),
            threads: threads
                .min(NonZeroUsize::new(self.connections.max(1)).unwrap_or(NonZeroUsize::MIN)),
            duration: self.duration,
            requests: self.requests,
            rate: self.rate,
            method: self.method.to_ascii_uppercase(),
            body_size: self.body_size,
            headers: self.headers.clone(),
            message_size: self.message_size.max(1),
            timeout: self.timeout,
            io_driver: self.io_driver,
            pin: self.pin,
            progress: !self.quiet,
        };
        client::build_request(&plan)?;
        Ok(plan)
    }
}

/// Entry point for `ringflare bench ...` (arguments after `bench`).
pub fn main(args: &[String]) -> ExitCode {
    let argv = std::iter::once("ringflare bench".to_owned()).chain(args.iter().cloned());
    let cli = match BenchCli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Some(BenchCommand::Serve(a)) => serve_main(&a),
        Some(BenchCommand::E2e(a)) => e2e::main(&a),
        Some(BenchCommand::Soak(a)) => soak::main(&a),
        Some(BenchCommand::Relay(a)) => relay_main(&a),
        None => load_main(&cli.load),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringflare bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_main(args: &LoadArgs) -> Result<(), String> {
    let plan = args.plan()?;
    raise_nofile_limit();
    let report = run::run(plan)?;
    if let Some(path) = &args.plot {
        let svg = plot::render_svg(
            &format!("{} {}", report.mode, report.url),
            &[plot::Series {
                label: &format!("c={}", report.connections),
                points: &report.percentiles,
            }],
        );
        std::fs::write(path, svg).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let out = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n"
    } else {
        report.render_text()
    };
    print!("{out}");
    Ok(())
}

fn relay_main(a: &RelayArgs) -> Result<(), String> {
    let relay = relay::start(a.listen, a.to)?;
    println!("bench relay listening {} -> {}", relay.listen, a.to);
    let _ = std::io::stdout().flush();
    wait_for_stop()
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_stop() -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("installing signal handlers: {e}"))?;
    let _ = signals.forever().next();
    Ok(())
}

fn serve_main(a: &ServeArgs) -> Result<(), String> {
    let origin = serve::start(&serve::ServeConfig {
        listen: a.listen,
        tcp_listen: a.tcp_listen,
        threads: a.threads,
        io_driver: a.io_driver,
        pin: a.pin,
    })?;
    let tcp = origin.tcp.map(|t| format!(" tcp={t}")).unwrap_or_default();
    println!(
        "bench origin listening http={}{tcp} workers={} {}",
        origin.http,
        origin.workers.len(),
        origin.workers.driver_report().log_line()
    );
    let _ = std::io::stdout().flush();
    wait_for_stop()?;
    let mut workers = origin.workers;
    workers.stop();
    workers.join();
    Ok(())
}
