//! `tunnel diag`, as cloudflared 2026.8.2's: finds the local connector's metrics server
//! (`--metrics`, else localhost:20241-20245), collects its tunnel state, system information,
//! metrics, logs, CLI flags and running configuration, traceroutes to the edge's regions, and
//! writes them with a task report into `cloudflared-diag-<time>.zip` in the current directory.
//! Lines go to stderr as cloudflared's logger writes them; the exit code is 0 whatever the jobs
//! found, as in cloudflared.
//!
//! Not collected: the Go goroutine and heap profiles (ringflare has no Go runtime; the
//! `process_*` families in metrics.txt carry its CPU, memory and descriptors), and
//! cloudflared's connectivity pre-checks (`prechecks.json`; `ringflare doctor` runs ringflare's).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime};

use super::Outcome;
use super::other_cmds::go_net_reason;
use super::settings::Settings;

/// cloudflared's collector timeout per request.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response accepted from the metrics server.
const MAX_BODY: u64 = 64 << 20;
/// The addresses a metrics server binds when `--metrics` is not given.
const KNOWN: [&str; 5] = [
    "localhost:20241",
    "localhost:20242",
    "localhost:20243",
    "localhost:20244",
    "localhost:20245",
];

/// `tunnel diag --help`.
const HELP: &str = "NAME:
   ringflare tunnel diag - Creates a diagnostic report from a local cloudflared instance

USAGE:
   ringflare tunnel [tunnel command options] diag [subcommand options]

DESCRIPTION:
   ringflare tunnel diag will create a diagnostic report of a local ringflare or cloudflared instance. The diagnostic procedure collects: logs, metrics, system information, traceroute to Cloudflare Edge, the CLI flags and the running configuration (Go runtime profiles have no equivalent in ringflare). Since there may be multiple instances running the --metrics option may be provided to target a specific instance.

OPTIONS:
   --metrics value            The metrics server address i.e.: 127.0.0.1:12345. If your instance is running in a Docker/Kubernetes environment you need to setup port forwarding for your application.
   --diag-container-id value  Container ID or Name to collect logs from
   --diag-pod-id value        Kubernetes POD to collect logs from
   --no-diag-logs             Log collection will not be performed (default: false)
   --no-diag-metrics          Metric collection will not be performed (default: false)
   --no-diag-system           System information collection will not be performed (default: false)
   --no-diag-runtime          Runtime information collection will not be performed (default: false)
   --no-diag-network          Network diagnostics won't be performed (default: false)
   --help, -h                 show help
";

/// The subcommand's flags.
#[derive(Debug, Default)]
struct Opts {
    metrics: Option<String>,
    container: String,
    pod: String,
    no_logs: bool,
    no_metrics: bool,
    no_system: bool,
    no_runtime: bool,
    no_network: bool,
}

fn parse(args: &[String], settings: &Settings) -> Result<Opts, String> {
    let mut o = Opts {
        metrics: settings.opt_string("metrics"),
        ..Opts::default()
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("Incorrect Usage: unexpected argument '{arg}'"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("Incorrect Usage: flag needs an argument: -{name}"))
        };
        match name {
            "help" | "h" => return Err(String::new()),
            "metrics" => o.metrics = Some(value()?),
            "diag-container-id" => o.container = value()?,
            "diag-pod-id" => o.pod = value()?,
            "no-diag-logs" => o.no_logs = flag_bool(&inline)?,
            "no-diag-metrics" => o.no_metrics = flag_bool(&inline)?,
            "no-diag-system" => o.no_system = flag_bool(&inline)?,
            "no-diag-runtime" => o.no_runtime = flag_bool(&inline)?,
            "no-diag-network" => o.no_network = flag_bool(&inline)?,
            _ => {
                return Err(format!(
                    "Incorrect Usage: flag provided but not defined: -{name}"
                ));
            }
        }
        i += 1;
    }
    Ok(o)
}

fn flag_bool(inline: &Option<String>) -> Result<bool, String> {
    match inline.as_deref() {
        None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => Ok(true),
        Some("false" | "0" | "f" | "F" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(format!(
            "Incorrect Usage: invalid boolean value \"{v}\" for -flag: parse error"
        )),
    }
}

/// One log line as cloudflared's console logger writes it.
fn log(level: &str, msg: &str) {
    eprintln!(
        "{} {level} {msg}",
        crate::logging::rfc3339_utc(SystemTime::now())
    );
}

/// `tunnel diag [flags]`.
pub fn diag(settings: &Settings, args: &[String]) -> Outcome {
    let opts = match parse(args, settings) {
        Ok(o) => o,
        Err(message) if message.is_empty() => return Outcome::success(HELP.into()),
        // urfave/cli: the error and the command's help on stdout, exit 0.
        Err(message) => return Outcome::success(format!("{message}\n\n{HELP}")),
    };
    if opts.metrics.is_none() {
        log(
            "INF",
            "If your instance is running in a Docker/Kubernetes environment you need to setup port forwarding for your application.",
        );
    }
    let (base, state) = match &opts.metrics {
        Some(addr) => (addr.trim_start_matches("http://").to_owned(), None),
        None => match find_instance() {
            Found::One(addr, state) => (addr, Some(state)),
            Found::None => {
                log("WRN", "No instances found");
                return Outcome::success(String::new());
            }
            Found::Many(list) => {
                log("INF", "Found multiple instances running:");
                for (addr, state) in list {
                    log(
                        "INF",
                        &format!(
                            "Instance: tunnel-id={} connector-id={} metrics-address=http://{addr}",
                            state.tunnel_id, state.connector_id
                        ),
                    );
                }
                log("INF", "To select one instance use the option --metrics");
                return Outcome::success(String::new());
            }
        },
    };
    log(
        "INF",
        &format!("Selected server http://{base} starting diagnostic..."),
    );
    let report = run_jobs(&base, state, &opts);
    let name = zip_name(SystemTime::now());
    match std::fs::write(&name, report.zip()) {
        Ok(()) => log("INF", &format!("Diagnostic file written: {name}")),
        Err(e) => {
            return Outcome::failure(String::new(), format!("error creating file {name}: {e}"));
        }
    }
    if report.logs_invalid {
        log(
            "INF",
            "Couldn't extract logs from the instance. If the instance is running in a containerized environment use the option --diag-container-id or --diag-pod-id. If there is no logging configuration use --no-diag-logs.",
        );
    }
    if report.failed() {
        log("WRN", "Diagnostic completed with one or more errors");
    } else {
        log("INF", "Diagnostic completed");
    }
    Outcome::success(String::new())
}

/// cloudflared's archive name: `cloudflared-diag-<RFC 3339 time with '-' for ':'>.zip`.
pub fn zip_name(now: SystemTime) -> String {
    format!(
        "cloudflared-diag-{}.zip",
        crate::logging::rfc3339_utc(now).replace(':', "-")
    )
}

/// `/diag/tunnel` as the diagnostic re-encodes it (cloudflared's field order).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct TunnelState {
    #[serde(rename = "tunnelID", default)]
    tunnel_id: String,
    #[serde(rename = "connectorID", default)]
    connector_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    connections: Vec<Connection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    icmp_sources: Vec<String>,
}

/// One connection of [`TunnelState`], Go's `omitempty` fields in order.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Connection {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    is_connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edge_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<u8>,
}

enum Found {
    None,
    One(String, TunnelState),
    Many(Vec<(String, TunnelState)>),
}

fn find_instance() -> Found {
    let mut found: Vec<(String, TunnelState)> = KNOWN
        .iter()
        .filter_map(|a| tunnel_state(a).ok().map(|s| ((*a).to_owned(), s)))
        .collect();
    match found.len() {
        0 => Found::None,
        1 => {
            let (a, s) = found.remove(0);
            Found::One(a, s)
        }
        _ => Found::Many(found),
    }
}

fn tunnel_state(base: &str) -> Result<TunnelState, String> {
    let body = get(base, "/diag/tunnel")?;
    serde_json::from_slice(&body).map_err(|e| format!("failed to decode body: {e}"))
}

/// A GET to the metrics server; like cloudflared's client, any status is accepted.
fn get(base: &str, path: &str) -> Result<Vec<u8>, String> {
    let url = format!("http://{base}{path}");
    let fail = |reason: String| format!("error GET request: Get \"{url}\": {reason}");
    let addr = base
        .to_socket_addrs()
        .map_err(|e| fail(format!("dial tcp: lookup {base}: {e}")))?
        .next()
        .ok_or_else(|| fail(format!("dial tcp: lookup {base}: no such host")))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| fail(format!("dial tcp {addr}: connect: {}", go_net_reason(&e))))?;
    let io = |e: std::io::Error| fail(e.to_string());
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {base}\r\nAccept: application/json;version=1\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_BODY).read_to_end(&mut raw).map_err(io)?;
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail("malformed HTTP response".into()))?;
    Ok(raw.split_off(at + 4))
}

/// Go's `json.Encoder` with two-space indent: sorted map keys, `<>&` escaped, a final newline.
fn go_pretty<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    let text = text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    Ok(format!("{text}\n").into_bytes())
}

/// A JSON endpoint decoded and re-encoded as cloudflared's `copyJSONToWriter` does.
fn json_endpoint(base: &str, path: &str) -> Result<Vec<u8>, String> {
    let body = get(base, path)?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("diagnostic client error whilst reading response: {e}"))?;
    go_pretty(&v)
}

/// What the jobs produced: files for the archive and each job's result.
#[derive(Default)]
struct Report {
    files: Vec<(String, Vec<u8>)>,
    results: BTreeMap<&'static str, Result<(), String>>,
    logs_invalid: bool,
}

impl Report {
    fn failed(&self) -> bool {
        self.results.values().any(Result::is_err)
    }

    /// The task report (`task-result.json`), then the archive of every file.
    fn zip(&self) -> Vec<u8> {
        let tasks: BTreeMap<&str, BTreeMap<&str, String>> = self
            .results
            .iter()
            .map(|(name, r)| {
                let mut m = BTreeMap::new();
                match r {
                    Ok(()) => m.insert("result", "success".to_owned()),
                    Err(e) => {
                        m.insert("error", e.clone());
                        m.insert("result", "failure".to_owned())
                    }
                };
                (*name, m)
            })
            .collect();
        let mut files = self.files.clone();
        files.push((
            "task-result.json".into(),
            go_pretty(&tasks).unwrap_or_default(),
        ));
        super::zip::stored(&files)
    }

    /// Runs one job: its file (when it made one) and result.
    fn job(&mut self, name: &'static str, file: &str, f: impl FnOnce() -> Result<Vec<u8>, String>) {
        log("INF", &format!("Collecting {name}..."));
        let result = f();
        match &result {
            Ok(_) => log("INF", &format!("Collected {name}.")),
            Err(e) => log(
                "ERR",
                &format!("Job: {name} finished with error. error={e:?}"),
            ),
        }
        match result {
            Ok(bytes) => {
                self.files.push((file.to_owned(), bytes));
                self.results.insert(name, Ok(()));
            }
            Err(e) => {
                self.results.insert(name, Err(e));
            }
        }
    }
}

fn run_jobs(base: &str, state: Option<TunnelState>, o: &Opts) -> Report {
    let mut r = Report::default();
    r.job("tunnel state", "tunnelstate.json", || {
        let state = match state {
            Some(s) => s,
            None => {
                tunnel_state(base).map_err(|e| format!("error retrieving tunnel state: {e}"))?
            }
        };
        go_pretty(&state).map_err(|e| format!("error encoding tunnel state: {e}"))
    });
    if !o.no_system {
        r.job("system information", "systeminformation.json", || {
            json_endpoint(base, "/diag/system").map_err(collector_error)
        });
    }
    if !o.no_runtime {
        log(
            "INF",
            "Skipping goroutine profile and heap profile: ringflare has no Go runtime; the process_* metrics carry its CPU, memory and file descriptors.",
        );
    }
    if !o.no_metrics {
        r.job("metrics", "metrics.txt", || {
            get(base, "/metrics").map_err(collector_error)
        });
    }
    if !o.no_logs {
        let mut invalid = false;
        r.job(
            "log information",
            "cloudflared_logs.txt",
            || match locate_logs(base, &o.container, &o.pod) {
                Ok(Logs::Collected(bytes)) => Ok(bytes),
                Ok(Logs::File(path)) => read_log(&path),
                Ok(Logs::Directory(dir)) => read_log_dir(&dir),
                Err(e) => {
                    invalid = e == LOG_CONFIG_INVALID;
                    Err(format!("error collecting logs: {e}"))
                }
            },
        );
        r.logs_invalid = invalid;
    }
    if !o.no_network {
        let traces = super::diag_net::traceroutes();
        let raw = super::diag_net::raw_text(&traces);
        let json = super::diag_net::json_text(&traces);
        r.job("raw network information", "raw-network.txt", || raw);
        r.job("network information", "network.json", || json);
    }
    r.job("cli configuration", "cli-configuration.json", || {
        json_endpoint(base, "/diag/configuration").map_err(collector_error)
    });
    r.job("configuration", "configuration.json", || {
        json_endpoint(base, "/config").map_err(collector_error)
    });
    r
}

fn collector_error(e: String) -> String {
    format!("error running collector: {e}")
}

/// Where the logs are: already collected (a command's output), or a file or directory to read.
enum Logs {
    Collected(Vec<u8>),
    File(String),
    Directory(String),
}

const LOG_CONFIG_INVALID: &str = "provided log configuration is invalid";

/// cloudflared's log collection: `docker logs` / `kubectl logs` when asked; otherwise the
/// instance's `--logfile` or `--log-directory` (from `/diag/configuration`), or for a root
/// service journald's `cloudflared.service` unit or /var/log/cloudflared.err.
fn locate_logs(base: &str, container: &str, pod: &str) -> Result<Logs, String> {
    let since = crate::logging::rfc3339_utc(SystemTime::now() - Duration::from_secs(14 * 86_400));
    if !pod.is_empty() {
        let mut args = vec!["logs", pod, "--since-time", &since, "--tail", "10000"];
        if !container.is_empty() {
            args.extend(["-c", container]);
        }
        return command_output("kubectl", &args).map(Logs::Collected);
    }
    if !container.is_empty() {
        let args = ["logs", "--tail", "10000", "--since", &since, container];
        return command_output("docker", &args).map(Logs::Collected);
    }
    let config_error = |e: String| format!("error getting log configuration: {e}");
    let body = get(base, "/diag/configuration").map_err(config_error)?;
    let conf: BTreeMap<String, String> = serde_json::from_slice(&body)
        .map_err(|e| config_error(format!("failed to decode body: {e}")))?;
    let uid: i64 = conf
        .get("uid")
        .ok_or("key not found")?
        .parse()
        .map_err(|e| format!("error convertin pid to int: {e}"))?;
    if uid == 0 {
        if std::path::Path::new("/etc/systemd/system/cloudflared.service").exists() {
            let args = ["--since", "2 weeks ago", "-u", "cloudflared.service"];
            return command_output("journalctl", &args).map(Logs::Collected);
        }
        return Ok(Logs::File("/var/log/cloudflared.err".into()));
    }
    if let Some(file) = conf.get("logfile") {
        return Ok(Logs::File(file.clone()));
    }
    if let Some(dir) = conf.get("log-directory") {
        return Ok(Logs::Directory(dir.clone()));
    }
    Err(LOG_CONFIG_INVALID.into())
}

fn read_log(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            _ => e.to_string(),
        };
        format!("error opening log file while collecting logs: open {path}: {reason}")
    })
}

/// Every file of a log directory, oldest first, one after another.
fn read_log_dir(dir: &str) -> Result<Vec<u8>, String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("error reading directory {dir}: {e}"))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .collect();
    entries.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    let mut out = Vec::new();
    for e in entries {
        out.extend(std::fs::read(e.path()).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A command's stdout then stderr, as cloudflared pipes them into the log file.
fn command_output(cmd: &str, args: &[&str]) -> Result<Vec<u8>, String> {
    let line = format!("{cmd} {}", args.join(" "));
    let out = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("error running command '{line}': {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "error waiting from command '{line}': {}",
            out.status
        ));
    }
    let mut text = out.stdout;
    text.extend(out.stderr);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_name_as_cloudflared() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(zip_name(t), "cloudflared-diag-2027-01-15T08-00-00Z.zip");
    }

    #[test]
    fn tunnel_state_keeps_cloudflareds_order_and_omissions() {
        let s: TunnelState = serde_json::from_str(
            r#"{"tunnelID":"t","connectorID":"c","connections":[{"isConnected":true,"edgeAddress":"127.0.0.1"},{"index":1}]}"#,
        )
        .unwrap();
        let text = String::from_utf8(go_pretty(&s).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\n  \"tunnelID\": \"t\",\n  \"connectorID\": \"c\",\n  \"connections\": [\n    {\n      \"isConnected\": true,\n      \"edgeAddress\": \"127.0.0.1\"\n    },\n    {\n      \"index\": 1\n    }\n  ]\n}\n"
        );
    }

    #[test]
    fn go_pretty_escapes_html() {
        let v = serde_json::json!({"b": "<&>", "a": 1});
        assert_eq!(
            String::from_utf8(go_pretty(&v).unwrap()).unwrap(),
            "{\n  \"a\": 1,\n  \"b\": \"\\u003c\\u0026\\u003e\"\n}\n"
        );
    }
}
