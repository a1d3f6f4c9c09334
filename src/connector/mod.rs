//! The connector: `ringflare tunnel run`, the daemon that replaces cloudflared.
//!
//! The control thread (this module's [`run`]) resolves options, starts the metrics server, the
//! hot reloader and the thread-per-core workers, and handles signals. Each worker owns the HA
//! connections `i` with `i % workers == worker` ([`edge_conn`]), every stream of those
//! connections ([`stream`]) and its own origin pool ([`origin`]); the only things shared with
//! the control thread are in [`state`]. Also here: the metrics server ([`metrics`]), remote
//! configuration pushes ([`remote_config`]) and `ringflare demo` ([`demo`]). This module never
//! parses wire formats (that is `proto`) and never decides ingress semantics (that is
//! `ingress`).
//!
//! Workers: one per core up to the number of HA connections (a worker without a connection
//! would have nothing to do: every stream lives on its connection's core).

pub mod backoff;
pub mod config_json;
pub mod connection_state;
pub mod core;
pub mod demo;
pub mod discovery;
pub mod edge_conn;
pub mod metrics;
pub mod options;
pub mod origin;
pub mod procstat;
pub mod protocol;
pub mod proxy_connect;
pub mod proxy_env;
pub mod quic_conn;
pub mod remote_config;
pub mod state;
pub mod stream;
pub mod sysinfo;
pub mod udp;
// The services moved under stream/; these paths stay for the rest of the crate, tests, benches.
pub use stream::{access, hello, http as proxy, pipe, response, socks, websocket as ws};

use std::num::NonZeroUsize;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use self::core::Core;
use self::edge_conn::FirstRegistered;
use self::options::{ConnectorOptions, EdgeSource};
use self::state::Shared;
use crate::cli::{Outcome, TunnelRun};
use crate::control::reload::{Reloader, TableBuilder};
use crate::ingress::rules::WARN_NO_RULES_CLI;
use crate::ingress::{Ingress, IngressTable, SharedIngress};
use crate::runtime::{PinOutcome, WorkerConfig, Workers};
use crate::tls::{EdgeRoots, connector_client_config_with};

/// How often the control thread looks for the first registration (signals and fatal errors
/// wake it at once).
const CONTROL_TICK: Duration = Duration::from_millis(20);

/// The control thread's tick once registered: a safety net only, since every event it acts on
/// arrives on its channel.
const IDLE_TICK: Duration = Duration::from_secs(60);

/// Runs `tunnel run` to completion and returns the process outcome.
pub fn run(run: TunnelRun) -> Outcome {
    init_logging(&run);
    for warning in &run.warnings {
        log::warn!("{warning}");
    }
    match start(run) {
        Ok(code) => Outcome {
            stdout: String::new(),
            stderr: String::new(),
            code,
        },
        Err(e) => {
            log::error!("{e}");
            Outcome::failure(String::new(), e)
        }
    }
}

fn init_logging(run: &TunnelRun) {
    let s = &run.settings;
    let level =
        crate::logging::parse_level(&s.string("loglevel")).unwrap_or(log::LevelFilter::Info);
    let json = s.string("output").eq_ignore_ascii_case("json");
    // `--logfile` wins; `--log-directory` writes cloudflared.log there, as cloudflared does.
    let path = s
        .opt_string("logfile")
        .map(|p| crate::control::loader::expand_home(&p))
        .or_else(|| {
            s.opt_string("log-directory")
                .map(|d| crate::control::loader::expand_home(&d).join("cloudflared.log"))
        });
    let file = path.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| eprintln!("failed to open log file {}: {e}", p.display()))
            .ok()
    });
    crate::logging::init(level, json, file);
}

/// Signals the control thread watches.
struct Signals {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
}

impl Signals {
    /// A first SIGTERM/SIGINT sets a flag and wakes the control thread through `wake`; a
    /// second one exits at once (as cloudflared, which stops catching after the first).
    fn install(wake: std::sync::mpsc::Sender<edge_conn::Wake>) -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let term = Arc::new(AtomicBool::new(false));
        let int = Arc::new(AtomicBool::new(false));
        let any = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register_conditional_shutdown(sig, 1, any.clone())?;
            signal_hook::flag::register(sig, any.clone())?;
        }
        signal_hook::flag::register(SIGTERM, term.clone())?;
        signal_hook::flag::register(SIGINT, int.clone())?;
        // The flags are set inside the handler, before this thread hears of the signal.
        let mut iter = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        std::thread::Builder::new()
            .name("ringflare-signals".into())
            .spawn(move || {
                for _ in iter.forever() {
                    if wake.send(edge_conn::Wake::Signal).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Signals { term, int })
    }

    fn received(&self) -> Option<&'static str> {
        if self.term.load(Ordering::Relaxed) {
            Some("terminated")
        } else if self.int.load(Ordering::Relaxed) {
            Some("interrupt")
        } else {
            None
        }
    }
}

fn start(run: TunnelRun) -> Result<i32, String> {
    let mut options = ConnectorOptions::resolve(&run).map_err(|e| e.to_string())?;
    let connector_id = options::new_connector_id();
    hello::start_time();
    log::info!(tunnelID = options.credentials.tunnel_id.to_string().as_str(); "Starting tunnel");
    log::info!("Version {} (ringflare)", env!("CARGO_PKG_VERSION"));
    log::info!(
        "GOOS: {}, GOVersion: rust, GoArch: {}",
        std::env::consts::OS,
        edge_conn::arch()
    );
    log::info!("Settings: {}", options.settings_line);
    log::info!("Generated Connector ID: {connector_id}");
    log::info!("Initial protocol {}", options.protocol.initial);
    // ICMP proxying: probes ping sockets once, logging as cloudflared does when they are not allowed.
    let _ = udp::icmp::availability();
    log::info!(
        "Tunnel connection curve preferences: {}",
        quic_conn::kx_policy(&options).log_names()
    );
    if options.default_503 && !options.from_token {
        log::warn!("{WARN_NO_RULES_CLI}");
    }
    let addrs = discovery::edge_addresses(&options.edge, options.ip_version).map_err(|e| {
        if matches!(options.edge, EdgeSource::Srv { .. }) {
            log::error!("If you are behind a firewall, make sure DNS lookups of argotunnel.com and outbound TCP to port 7844 are allowed; or pass --edge host:port");
        }
        e.to_string()
    })?;
    let ha = options.ha_connections.min(addrs.len());
    if ha < options.ha_connections {
        // cloudflared logs this notice at INF.
        log::info!(
            "You requested {} HA connections but I can give you at most {ha}.",
            options.ha_connections
        );
    }
    let roots = match &options.cacert {
        Some(p) => EdgeRoots::CaFile(p.clone()),
        None => EdgeRoots::Cloudflare,
    };
    let edge_tls = connector_client_config_with(roots, quic_conn::kx_policy(&options))
        .map_err(|e| e.to_string())?;
    let threads = options
        .workers
        .map(NonZeroUsize::get)
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(NonZeroUsize::get)
        })
        .unwrap_or(1)
        .min(ha)
        .max(1);
    let table = std::mem::replace(
        &mut options.ingress,
        IngressTable::new(Ingress::default_503()),
    );
    let ingress = Arc::new(SharedIngress::new(table));
    let (io_driver, poll, config_path, config_text) = (
        options.io_driver,
        options.config_poll,
        options.config_path.clone(),
        options.config_text.clone(),
    );
    let shared = Arc::new(Shared::new(
        options,
        connector_id,
        ingress.clone(),
        threads,
        ha,
    ));
    let listener = metrics::bind(shared.options.metrics.as_deref())
        .map_err(|e| format!("failed to bind the metrics server: {e}"))?;
    if let Ok(addr) = listener.local_addr() {
        log::info!("Starting metrics server on {addr}/metrics");
    }
    metrics::spawn(listener, shared.clone()).map_err(|e| e.to_string())?;
    let reload_stop = Arc::new(AtomicBool::new(false));
    if let Some(path) = config_path {
        let reloader = Reloader::new(path, ingress, config_text.as_deref(), table_builder());
        if let Err(e) = reloader.spawn(poll, reload_stop.clone()) {
            log::warn!(error = e.to_string().as_str(); "hot reload is off");
        }
    }
    let (fatal_tx, fatal_rx) = std::sync::mpsc::channel::<edge_conn::Wake>();
    let signals = Signals::install(fatal_tx.clone())
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    let first = FirstRegistered::default();
    let factory_shared = shared.clone();
    let factory_first = first.clone();
    let config = WorkerConfig {
        threads: NonZeroUsize::new(threads),
        io_driver,
        no_pinning: false,
    };
    let workers = Workers::spawn(config, move |ctx| {
        let core = Rc::new(Core {
            shared: factory_shared.clone(),
            worker: ctx.index,
            edge_tls: edge_tls.clone(),
            pool: Default::default(),
            h2_pool: Default::default(),
            origin_tls: Default::default(),
            stop: ctx.stop.clone(),
        });
        let mine: Vec<u8> = (0..ha)
            .filter(|i| i % threads == ctx.index)
            .map(|i| u8::try_from(i).unwrap_or(u8::MAX))
            .collect();
        let edge_addrs = edge_conn::EdgeAddrs {
            all: addrs.clone().into(),
            ha,
        };
        let first = factory_first.clone();
        let fatal = fatal_tx.clone();
        async move {
            let tasks: Vec<_> = mine
                .into_iter()
                .map(|i| {
                    compio::runtime::spawn(edge_conn::run(
                        core.clone(),
                        i,
                        edge_addrs.clone(),
                        first.clone(),
                        fatal.clone(),
                    ))
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        }
    })
    .map_err(|e| e.to_string())?;
    log::info!("{}", workers.driver_report().log_line());
    for (i, pin) in workers.pinning().iter().enumerate() {
        if let PinOutcome::Failed(why) = pin {
            log::warn!(worker = i, reason = why.as_str(); "could not pin worker to a core; it runs unpinned");
        }
    }
    let code = supervise(workers, &shared, &signals, &first, &fatal_rx);
    reload_stop.store(true, Ordering::Relaxed);
    log::info!("Tunnel server stopped");
    log::info!("Metrics server stopped");
    Ok(code)
}

/// The reload path builds tables exactly as startup does for file rules.
fn table_builder() -> TableBuilder {
    Box::new(|file| Ok(IngressTable::new(Ingress::from_config(&file.raw)?)))
}

/// Waits for a signal or a fatal error, then drains: stop, unregister, grace, exit.
fn supervise(
    mut workers: Workers<()>,
    shared: &Arc<Shared>,
    signals: &Signals,
    first: &FirstRegistered,
    wake: &std::sync::mpsc::Receiver<edge_conn::Wake>,
) -> i32 {
    use std::sync::mpsc::RecvTimeoutError;
    let mut notified = false;
    let code = loop {
        if let Some(sig) = signals.received() {
            log::info!("Initiating graceful shutdown due to signal {sig} ...");
            break 0;
        }
        if !notified && first.is_set() {
            notified = true;
            on_first_connection(shared);
        }
        // Signals and fatal errors wake this thread; only the first registration is looked
        // for on a tick, so a running connector's control thread sleeps.
        let tick = if notified { IDLE_TICK } else { CONTROL_TICK };
        match wake.recv_timeout(tick) {
            Ok(edge_conn::Wake::Fatal(reason)) => {
                log::error!("{reason}");
                break 1;
            }
            Ok(edge_conn::Wake::Signal) | Err(RecvTimeoutError::Timeout) => {}
            // `start` keeps a sender until this returns; sleep rather than spin regardless.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(CONTROL_TICK),
        }
    };
    workers.stop();
    // Workers finish once their connections closed or the grace period ran out; the extra
    // margin covers the unregister RPC and the close itself.
    let deadline = Instant::now() + shared.options.grace_period + Duration::from_secs(5);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(workers.join());
    });
    match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(results) => {
            if code == 0 {
                // cloudflared's supervisor line once every connection ended after the signal
                // (its connection-aware logger: ERR when no connection is active).
                log::error!("no more connections active and exiting");
            }
            for r in results {
                if let Err(e) = r {
                    log::error!(error = e.to_string().as_str(); "worker failed");
                }
            }
        }
        Err(_) => log::warn!("connections did not close within the grace period; exiting"),
    }
    code
}

/// Pidfile and systemd readiness, once the first connection is registered.
fn on_first_connection(shared: &Shared) {
    if let Some(path) = &shared.options.pidfile
        && let Err(e) = std::fs::write(path, format!("{}\n", std::process::id()))
    {
        log::error!(error = e.to_string().as_str(), path = path.display().to_string().as_str(); "failed to write pidfile");
    }
    sd_notify_ready();
}

/// `READY=1` to `$NOTIFY_SOCKET` (a unix datagram socket; `@` names the abstract namespace).
fn sd_notify_ready() {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(b"READY=1", &addr))
    } else {
        sock.send_to(b"READY=1", &path)
    };
    if let Err(e) = result {
        log::warn!(error = e.to_string().as_str(); "systemd readiness notification failed");
    }
}
