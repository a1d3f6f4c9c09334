//! `ringflare edge` and `ringflare edge init`: argument parsing, help, signal handling.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use super::config::{
    DEFAULT_CONFIG_NAME, apply_file, default_state_dir, init_state_dir, load_edge_file,
};
use super::{Edge, EdgeOptions};
use crate::cli::Outcome;
use crate::runtime::{IO_DRIVER_ENV, IoDriver};

/// `ringflare edge --help`.
pub fn edge_help() -> String {
    format!(
        "NAME:
   ringflare edge - Run a local, built-in Cloudflare edge for demos, tests and benchmarks

USAGE:
   ringflare edge init [--state-dir DIR] [--hostname NAME ...]
   ringflare edge [--state-dir DIR] [--config FILE] [--listen ADDR ...] [--eyeball ADDR]
                  [--eyeball-tls ADDR] [--workers N] [--io-driver auto|io_uring|poll] [--loglevel LEVEL]
                  [--udp-route LISTEN=DEST[@TUNNEL-ID] ...]

DESCRIPTION:
   The edge speaks the edge side of Cloudflare's tunnel protocol over HTTP/2, so an unmodified
   cloudflared (or ringflare tunnel run) registers with it, and forwards HTTP/1.1 requests
   (WebSockets included) from its eyeball listener to the tunnel that owns the Host.

   'edge init' creates the state directory, the edge CA (ca.pem) and one tunnel with a
   cloudflared-format credentials file (<tunnel-id>.json, mode 0400), adds the tunnel to
   {DEFAULT_CONFIG_NAME} and prints its token and the command lines to connect. Run it again
   to add more tunnels.

   Then connect cloudflared with one --edge per HA connection:
      cloudflared tunnel --edge 127.0.0.1:7844 --cacert STATE/ca.pem --protocol http2 \\
          run --token TOKEN
   For four HA connections give four addresses (127.0.0.1:7844 ... 127.0.0.4:7844) to both
   the edge (tunnel-listen in {DEFAULT_CONFIG_NAME}, or --listen) and cloudflared (--edge).

STATE DIRECTORY:
   --state-dir, else $RINGFLARE_EDGE_STATE, else $XDG_STATE_HOME/ringflare/edge, else
   ~/.local/state/ringflare/edge. It holds ca.pem, ca-key.pem, server.pem, server-key.pem,
   <tunnel-id>.json and {DEFAULT_CONFIG_NAME}.

CONFIG FILE ({DEFAULT_CONFIG_NAME} in the state directory unless --config is given):
   tunnel-listen: [127.0.0.1:7844]     # tunnel listeners (one connection per --edge address)
   eyeball-listen: 127.0.0.1:8080      # plain HTTP/1.1 for visitors
   eyeball-tls-listen: 127.0.0.1:8443  # optional HTTPS for visitors (certificate from ca.pem)
   eyeball-tls-hostnames: [app.example.com]  # its names; default localhost + tunnel hostnames
   location: rfl01                     # colo name reported to connectors
   max-eyeball-connections: 16384      # open connections per eyeball listener; more are refused
   tunnels:
     - id: <tunnel uuid>
       credentials-file: <tunnel uuid>.json   # relative to the state directory
       hostnames: [\"*\"]                  # exact names, \"*.suffix\" wildcards, \"*\" = any host

OPTIONS:
   --state-dir DIR     state directory (see above)
   --config FILE       edge config file (default: STATE/{DEFAULT_CONFIG_NAME})
   --listen ADDR       tunnel listener, repeatable; replaces tunnel-listen (default 127.0.0.1:7844)
   --eyeball ADDR      eyeball listener; replaces eyeball-listen (default 127.0.0.1:8080)
   --eyeball-tls ADDR  HTTPS eyeball listener; replaces eyeball-tls-listen (default: none)
   --workers N         worker threads, one per core by default
   --io-driver D       auto (default), io_uring or poll; env {IO_DRIVER_ENV}
   --no-pinning        do not pin workers to cores
   --max-eyeball-connections N  open connections per eyeball listener (default 16384)
   --udp-route LISTEN=DEST[@TUNNEL-ID]  repeatable: every source address sending to udp LISTEN
                       becomes a UDP session toward the private address DEST through a connector
                       registered over QUIC (of TUNNEL-ID, else of any tunnel); replies go back to
                       the source. Datagram v2 or v3 as the connector registered (warp-routing
                       must be enabled on the connector, as with Cloudflare)
   --udp-idle-timeout DURATION  close a UDP session idle this long, both ways (default 60s)
   --udp-max-sessions N  sessions per UDP route; new sources beyond it are dropped (default 1024)
   --loglevel LEVEL    debug, info (default), warn, error
   --hostname NAME     (init) hostname for the new tunnel, repeatable; default \"*\" for the
                       first tunnel
   -h, --help          show this help

   SIGINT or SIGTERM stops the edge: listeners close, connections are closed, workers join.

ERROR PAGES:
   530 (error 1033) no connector registered for the host's tunnel; 404 no tunnel for the
   host; 502 the connector reported an origin failure; 524 no response in time.
"
    )
}

/// Parsed `edge` arguments.
#[derive(Default)]
struct Args {
    init: bool,
    help: bool,
    state_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    listen: Vec<SocketAddr>,
    eyeball: Option<SocketAddr>,
    eyeball_tls: Option<SocketAddr>,
    workers: Option<usize>,
    max_eyeball_connections: Option<usize>,
    io_driver: Option<IoDriver>,
    no_pinning: bool,
    loglevel: Option<String>,
    hostnames: Vec<String>,
    udp_routes: Vec<super::UdpRoute>,
    udp_idle_timeout: Option<Duration>,
    udp_max_sessions: Option<usize>,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = argv.iter().peekable();
    if it.peek().is_some_and(|a| *a == "init") {
        args.init = true;
        it.next();
    }
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let flag = flag.trim_start_matches('-');
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("flag needs an argument: -{name}"))
        };
        match flag {
            "h" | "help" => args.help = true,
            "state-dir" => args.state_dir = Some(PathBuf::from(value(flag)?)),
            "config" => args.config = Some(PathBuf::from(value(flag)?)),
            "listen" => {
                let v = value(flag)?;
                args.listen.push(
                    v.parse()
                        .map_err(|_| format!("invalid --listen address {v:?}"))?,
                );
            }
            "eyeball" => {
                let v = value(flag)?;
                args.eyeball = Some(
                    v.parse()
                        .map_err(|_| format!("invalid --eyeball address {v:?}"))?,
                );
            }
            "eyeball-tls" => {
                let v = value(flag)?;
                args.eyeball_tls = Some(
                    v.parse()
                        .map_err(|_| format!("invalid --eyeball-tls address {v:?}"))?,
                );
            }
            "workers" => {
                let v = value(flag)?;
                args.workers = Some(v.parse().map_err(|_| format!("invalid --workers {v:?}"))?);
            }
            "io-driver" => {
                let v = value(flag)?;
                args.io_driver = Some(v.parse().map_err(|e| format!("{e}"))?);
            }
            "max-eyeball-connections" => {
                let v = value(flag)?;
                args.max_eyeball_connections = Some(
                    v.parse()
                        .map_err(|_| format!("invalid --max-eyeball-connections {v:?}"))?,
                );
            }
            "udp-route" => args.udp_routes.push(value(flag)?.parse()?),
            "udp-idle-timeout" => {
                let v = value(flag)?;
                args.udp_idle_timeout = Some(
                    crate::config::duration::parse_go_duration(&v)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| format!("invalid --udp-idle-timeout {v:?}"))?,
                );
            }
            "udp-max-sessions" => {
                let v = value(flag)?;
                args.udp_max_sessions = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("invalid --udp-max-sessions {v:?}"))?,
                );
            }
            "no-pinning" => args.no_pinning = true,
            "loglevel" => args.loglevel = Some(value(flag)?),
            "hostname" if args.init => args.hostnames.push(value(flag)?),
            _ => {
                return Err(format!(
                    "Incorrect Usage: flag provided but not defined: {arg}"
                ));
            }
        }
    }
    Ok(args)
}

/// Runs `ringflare edge ...`; `argv` excludes `edge`. Blocks until a signal for the server.
pub fn run_cli(argv: &[String], env: &HashMap<String, String>) -> Outcome {
    let args = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            return Outcome::usage(
                e,
                if argv.first().is_some_and(|a| a == "init") {
                    "edge init"
                } else {
                    "edge"
                },
            );
        }
    };
    if args.help {
        return Outcome::success(edge_help());
    }
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    if args.init {
        return init(&state_dir, args.hostnames);
    }
    let level = args
        .loglevel
        .as_deref()
        .and_then(crate::logging::parse_level)
        .unwrap_or(log::LevelFilter::Info);
    crate::logging::init(level, false, None);

    let mut opts = EdgeOptions::new(&state_dir);
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| state_dir.join(DEFAULT_CONFIG_NAME));
    if config.exists() || args.config.is_some() {
        match load_edge_file(&config, &state_dir) {
            Ok((file, tunnels)) => apply_file(&mut opts, &file, tunnels),
            Err(e) => return Outcome::failure(String::new(), format!("edge config: {e}")),
        }
    } else {
        log::warn!(path:% = config.display();
            "No edge config file: no tunnels are known. Run 'ringflare edge init' first");
    }
    if !args.listen.is_empty() {
        opts.tunnel_listen = args.listen;
    }
    if let Some(e) = args.eyeball {
        opts.eyeball_listen = e;
    }
    if let Some(e) = args.eyeball_tls {
        opts.eyeball_tls_listen = Some(e);
    }
    opts.workers = args.workers.unwrap_or(0);
    if let Some(n) = args.max_eyeball_connections {
        opts.max_eyeball_connections = n;
    }
    opts.no_pinning = args.no_pinning;
    opts.udp_routes = args.udp_routes;
    if let Some(d) = args.udp_idle_timeout {
        opts.udp_idle_timeout = d;
    }
    if let Some(n) = args.udp_max_sessions {
        opts.udp_max_sessions = n;
    }
    opts.io_driver = match args.io_driver {
        Some(d) => d,
        None => match env.get(IO_DRIVER_ENV).map(|v| v.parse::<IoDriver>()) {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Outcome::failure(String::new(), e.to_string()),
            None => IoDriver::Auto,
        },
    };
    for t in &opts.tunnels {
        log::info!(tunnelID:% = t.tunnel_id, hostnames:? = t.hostnames; "Edge tunnel");
    }
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::failure(String::new(), format!("installing signal handlers: {e}"));
        }
    };
    let edge = match Edge::start(opts) {
        Ok(e) => e,
        Err(e) => return Outcome::failure(String::new(), format!("starting the edge: {e}")),
    };
    log::info!(cacert:% = edge.ca_pem_path().display(); "Edge is ready");
    let signal = signals
        .forever()
        .next()
        .unwrap_or(signal_hook::consts::SIGTERM);
    let name = if signal == signal_hook::consts::SIGINT {
        "interrupt"
    } else {
        "terminated"
    };
    log::info!("Initiating shutdown due to signal {name} ...");
    let handle = signals.handle();
    // A second signal while shutting down exits at once.
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            std::process::exit(1);
        }
    });
    edge.shutdown();
    handle.close();
    std::thread::sleep(Duration::from_millis(1));
    log::info!("Edge stopped");
    Outcome::success(String::new())
}

fn init(state_dir: &std::path::Path, hostnames: Vec<String>) -> Outcome {
    match init_state_dir(state_dir, hostnames) {
        Err(e) => Outcome::failure(String::new(), format!("edge init: {e}")),
        Ok(out) => {
            let id = out.credentials.tunnel_id;
            let ca = out.ca_pem.display();
            let cred = out.credentials_file.display();
            let state = out.state_dir.display();
            let token = &out.token;
            Outcome::success(format!(
                "Created tunnel {id} in {state}
  CA certificate (--cacert): {ca}
  credentials file:          {cred}
  edge config:               {config}

Tunnel token:
{token}

Start the edge:
  ringflare edge --state-dir {state}

Connect cloudflared (one --edge per HA connection):
  cloudflared tunnel --no-autoupdate --edge 127.0.0.1:7844 --cacert {ca} --protocol http2 run --token {token}
or with the credentials file:
  cloudflared tunnel --no-autoupdate --edge 127.0.0.1:7844 --cacert {ca} --protocol http2 --credentials-file {cred} run {id}
Connect ringflare:
  ringflare tunnel --edge 127.0.0.1:7844 --cacert {ca} run --token {token}
",
                config = out.config_file.display(),
            ))
        }
    }
}
