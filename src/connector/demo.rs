//! `ringflare demo`: the whole picture on one machine in one command, in the spirit of
//! cloudflared's `--hello-world` quick tunnel. Starts the built-in edge in-process (state in a
//! temporary directory, a fresh random tunnel routed for every hostname), runs the connector
//! against it with the in-process `hello_world` origin, prints the URL to curl once a
//! connection is registered, and stops cleanly on Ctrl-C (connections unregistered, edge
//! drained, state removed). No token, no network beyond loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use crate::cli::{self, Command, Outcome};
use crate::config::Secret;
use crate::config::credentials::{Credentials, encode_token};
use crate::edge::{Edge, EdgeOptions, EdgeTunnel};

/// Eyeball port tried first (falls back to any free port when taken).
const DEFAULT_PORT: u16 = 8080;

/// Runs the demo; `argv` are the arguments after `demo`.
pub fn run(argv: &[String], env: HashMap<String, String>) -> Outcome {
    let mut port = DEFAULT_PORT;
    let mut ha = 2usize;
    let mut extra: Vec<String> = Vec::new();
    let mut args = argv.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = p,
                None => return Outcome::usage("--port needs a number".into(), "demo"),
            },
            "--ha-connections" => match args.next().and_then(|p| p.parse().ok()) {
                Some(n) if n > 0 => ha = n,
                _ => {
                    return Outcome::usage(
                        "--ha-connections needs a positive number".into(),
                        "demo",
                    );
                }
            },
            "-h" | "--help" => return Outcome::success(HELP.into()),
            other => extra.push(other.to_owned()),
        }
    }
    crate::logging::init(log::LevelFilter::Info, false, None);
    let state = std::env::temp_dir().join(format!("ringflare-demo-{}", Uuid::new_v4()));
    let outcome = run_in(&state, port, ha, &extra, env);
    let _ = std::fs::remove_dir_all(&state);
    outcome
}

const HELP: &str = "Usage: ringflare demo [--port N] [--ha-connections N] [tunnel flags...]\n\n\
Starts the built-in edge, the connector and the hello_world origin on this machine and\n\
prints the URL to curl. Ctrl-C stops everything.\n";

fn run_in(
    state: &PathBuf,
    port: u16,
    ha: usize,
    extra: &[String],
    env: HashMap<String, String>,
) -> Outcome {
    let creds = Credentials {
        account_tag: Uuid::new_v4().simple().to_string(),
        tunnel_secret: Secret::new(Uuid::new_v4().as_bytes().repeat(2)),
        tunnel_id: Uuid::new_v4(),
        endpoint: String::new(),
    };
    let edge = match start_edge(state, port, ha, &creds) {
        Ok(e) => e,
        Err(e) => {
            return Outcome::failure(String::new(), format!("starting the built-in edge: {e}"));
        }
    };
    let mut tunnel_argv: Vec<String> = Vec::new();
    for addr in edge.tunnel_addrs() {
        tunnel_argv.extend(["--edge".into(), addr.to_string()]);
    }
    tunnel_argv.extend([
        "--cacert".into(),
        edge.ca_pem_path().display().to_string(),
        "--ha-connections".into(),
        ha.to_string(),
    ]);
    tunnel_argv.extend(extra.iter().cloned());
    tunnel_argv.extend([
        "run".into(),
        "--token".into(),
        encode_token(&creds),
        "--hello-world".into(),
    ]);
    let run = match cli::tunnel(&tunnel_argv, env) {
        Command::TunnelRun(run) => run,
        Command::Done(outcome) => {
            edge.shutdown();
            return outcome;
        }
    };
    let eyeball = edge.eyeball_addr();
    let outcome = std::thread::scope(|s| {
        s.spawn(|| announce(&edge, eyeball));
        crate::connector::run(*run)
    });
    edge.shutdown();
    outcome
}

fn start_edge(
    state: &PathBuf,
    port: u16,
    ha: usize,
    creds: &Credentials,
) -> Result<Edge, crate::edge::EdgeError> {
    let mut opts = EdgeOptions::new(state);
    opts.tunnel_listen = vec![SocketAddr::from(([127, 0, 0, 1], 0)); ha];
    opts.eyeball_listen = SocketAddr::from(([127, 0, 0, 1], port));
    opts.tunnels = vec![EdgeTunnel {
        account_tag: creds.account_tag.clone(),
        tunnel_id: creds.tunnel_id,
        secret: creds.tunnel_secret.clone(),
        hostnames: vec!["*".into()],
    }];
    // The edge shares this machine with the connector: keep its workers off the pinned cores.
    opts.workers = 1;
    opts.no_pinning = true;
    opts.drain_timeout = Duration::from_secs(10);
    match Edge::start(opts.clone()) {
        Ok(e) => Ok(e),
        Err(_) if port != 0 => {
            opts.eyeball_listen = SocketAddr::from(([127, 0, 0, 1], 0));
            Edge::start(opts)
        }
        Err(e) => Err(e),
    }
}

/// Prints the URL once the first connection is registered.
fn announce(edge: &Edge, eyeball: SocketAddr) {
    if !edge.wait_registered(1, Duration::from_secs(60)) {
        return;
    }
    let url = format!("http://{eyeball}/");
    let line = "+".to_owned() + &"-".repeat(url.len() + 40) + "+";
    println!("{line}");
    println!("|  Your tunnel is up! Visit it at: {url}      |");
    println!("|  e.g.  curl {url:<width$} |", width = url.len() + 26);
    println!(
        "|  Press Ctrl-C to stop.{:width$}|",
        "",
        width = url.len() + 17
    );
    println!("{line}");
}
