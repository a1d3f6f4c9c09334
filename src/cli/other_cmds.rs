//! The short cloudflared commands besides `tunnel run` and `tunnel ingress`: `version`,
//! `tunnel ready`, `service install|uninstall`, bare `tunnel`, and the commands that need
//! Cloudflare's API (ringflare runs tunnels; it never talks to the API), each with
//! cloudflared's messages and exit codes where cloudflared has them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::args::Invocation;
use super::help;
use super::settings::Settings;
use super::{Outcome, flag_notices};
use crate::control::loader::{expand_home, find_default_config, load_config};
use crate::service::{Installer, ROOT_ENV};

/// `version [--short|-s]`.
pub fn version(argv: &[String]) -> Outcome {
    match argv.first().map(String::as_str) {
        None => Outcome::success(format!("{}\n", help::version_line())),
        Some("--short" | "-short" | "-s" | "--s") => {
            Outcome::success(format!("{}\n", help::VERSION))
        }
        Some(other) => Outcome::success(format!(
            "Incorrect Usage: flag provided but not defined: -{}\n\n",
            other.trim_start_matches('-')
        )),
    }
}

/// `tunnel ready`: exits 0 when the metrics server's `/ready` answers 200.
pub fn ready(settings: &Settings) -> Outcome {
    let Some(addr) = settings.opt_string("metrics") else {
        return Outcome::failure(String::new(), "--metrics has to be provided".into());
    };
    match get_ready(&addr) {
        Ok((200, _)) => Outcome::success(String::new()),
        Ok((code, body)) => Outcome::failure(
            String::new(),
            format!("http://{addr}/ready endpoint returned status code {code}\n{body}"),
        ),
        Err(e) => Outcome::failure(String::new(), format!("Get \"http://{addr}/ready\": {e}")),
    }
}

/// A plain HTTP/1.1 GET of `/ready`: (status, body). Bounded: 10 s, 64 KiB.
fn get_ready(addr: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(10);
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("dial tcp: lookup {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("dial tcp: lookup {addr}: no such host"))?;
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("dial tcp {target}: connect: {}", go_net_reason(&e)))?;
    let io = |e: std::io::Error| e.to_string();
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let request = format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "malformed HTTP response".to_owned())?;
    Ok((code, body.to_owned()))
}

pub(super) fn go_net_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => e.to_string(),
    }
}

/// `tunnel` with no subcommand: cloudflared's quick/ad-hoc/classic paths all need the API.
pub fn bare_tunnel(settings: &Settings) -> Outcome {
    if let Err(refused) = flag_notices(settings) {
        return Outcome::failure(String::new(), refused);
    }
    if let Some(id) = settings.opt_string("tunnel").filter(|t| !t.is_empty()) {
        return Outcome::failure(
            String::new(),
            format!("use `cloudflared tunnel run` to start tunnel {id}"),
        );
    }
    if settings.is_set("url") || settings.is_set("hello-world") {
        return api_only("tunnel --url (a Quick Tunnel)");
    }
    if settings
        .opt_string("hostname")
        .is_some_and(|h| !h.is_empty())
    {
        return Outcome::failure(
            String::new(),
            "Classic tunnels have been deprecated, please use Named Tunnels. (https://developers.cloudflare.com/cloudflare-one/connections/connect-apps/install-and-setup/tunnel-guide/)".into(),
        );
    }
    Outcome::failure(
        String::new(),
        "You did not specify any valid additional argument to the cloudflared tunnel command.\n\n\
         ringflare runs existing named tunnels: `ringflare tunnel run --token TOKEN`, or\n\
         `ringflare tunnel --config FILE run [TUNNEL]` with a credentials file."
            .into(),
    )
}

/// A command that needs Cloudflare's API: say what to use instead; exit 1.
pub fn api_only(command: &str) -> Outcome {
    Outcome::failure(
        String::new(),
        format!(
            "`{command}` needs Cloudflare's API, which ringflare does not use: ringflare runs tunnels only.\n\
             Do this in the Cloudflare dashboard (https://one.dash.cloudflare.com) or with cloudflared, \
             then run the tunnel with `ringflare tunnel run`."
        ),
    )
}

/// `update`: ringflare never replaces its own binary.
pub fn update() -> Outcome {
    Outcome::failure(
        String::new(),
        "ringflare does not update itself: install new versions with your package manager or from the release page.".into(),
    )
}

/// Commands cloudflared removed and keeps only for their error message.
pub fn removed(command: &str) -> Outcome {
    match command {
        "proxy-dns" => Outcome::failure(
            String::new(),
            "dns-proxy feature is no longer supported".into(),
        ),
        _ => Outcome {
            stdout: String::new(),
            stderr: format!(
                "{command} command is no longer supported by cloudflared. Consult Cloudflare Tunnel documentation for possible alternative solutions.\n"
            ),
            code: 255,
        },
    }
}

/// `service install [--no-update-service] [TOKEN]` / `service uninstall`.
pub fn service(argv: &[String], inv: &Invocation, env: &HashMap<String, String>) -> Outcome {
    let root = env.get(ROOT_ENV).map(PathBuf::from);
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return Outcome::failure(
                String::new(),
                format!("error determining executable path: {e}"),
            );
        }
    };
    let installer = Installer::new(root, exe);
    let mut args = argv.iter().map(String::as_str);
    let result = match args.next() {
        Some("install") => {
            let rest: Vec<&str> = args
                .filter(|a| !matches!(*a, "--no-update-service" | "-no-update-service"))
                .collect();
            if rest.is_empty() {
                let config = match config_for_install(inv, env) {
                    Ok(c) => c,
                    Err(e) => return Outcome::failure(String::new(), e),
                };
                installer.install(None, config.as_ref().map(|(p, t, c)| (p.as_path(), *t, *c)))
            } else {
                installer.install(Some(rest[0]), None)
            }
        }
        Some("uninstall") => installer.uninstall(),
        _ => {
            return Outcome::success(
                "NAME:\n   ringflare service - Manages the cloudflared system service\n\nCOMMANDS:\n   install    Install cloudflared as a system service\n   uninstall  Uninstall the cloudflared service\n".into(),
            );
        }
    };
    match result {
        Ok(lines) => Outcome {
            stdout: String::new(),
            stderr: lines.iter().map(|l| format!("INF {l}\n")).collect(),
            code: 0,
        },
        Err(e) => Outcome::failure(String::new(), e),
    }
}

/// The config file `service install` (without a token) copies: `--config`, or the default.
fn config_for_install(
    inv: &Invocation,
    env: &HashMap<String, String>,
) -> Result<Option<(PathBuf, bool, bool)>, String> {
    let settings = Settings::new(inv, env.clone());
    let path = match settings.opt_string("config") {
        Some(p) => Some(expand_home(&p)),
        None => find_default_config(),
    };
    let Some(path) = path else {
        return Ok(None);
    };
    let file = load_config(&path).map_err(|e| e.to_string())?;
    let has_tunnel = file
        .raw
        .tunnel
        .as_ref()
        .is_some_and(|t| !t.value.is_empty());
    let has_creds = file
        .raw
        .settings
        .get("credentials-file")
        .is_some_and(|s| s.value.as_str().is_some_and(|v| !v.is_empty()));
    Ok(Some((path, has_tunnel, has_creds)))
}
