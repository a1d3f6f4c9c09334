//! The real `ringflare` connector binary as a child process, killed on drop; its stderr goes
//! to a log file that a failing test prints.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use uuid::Uuid;

use super::mock_edge::TestEdge;
use super::tunnel::token;

thread_local! {
    static LAST_LOG: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// The log of the connector this thread started last (empty when none or unreadable).
pub fn last_log() -> String {
    LAST_LOG
        .with(|l| l.borrow().clone())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// The connector binary as a child process; killed on drop. stderr goes to `log`.
pub struct Connector {
    pub child: Child,
    pub log: PathBuf,
}

impl Connector {
    /// `tunnel_flags` come before `run`, `run_flags` after it.
    pub fn start(
        edge: &TestEdge,
        config: Option<&Path>,
        tunnel_flags: &[&str],
        run_flags: &[&str],
    ) -> Connector {
        let mut flags: Vec<String> = vec!["--ha-connections".into(), "1".into()];
        flags.extend(tunnel_flags.iter().map(|s| (*s).to_owned()));
        Connector::spawn(
            &[edge.addr()],
            &edge.ca,
            &token(),
            config,
            &flags,
            run_flags,
        )
    }

    /// Starts the binary against any edge addresses with the given token.
    pub fn spawn(
        edges: &[SocketAddr],
        ca: &Path,
        token: &str,
        config: Option<&Path>,
        tunnel_flags: &[String],
        run_flags: &[&str],
    ) -> Connector {
        Connector::spawn_env(edges, ca, token, config, tunnel_flags, run_flags, &[])
    }

    /// Like [`Connector::spawn`] with extra environment variables.
    pub fn spawn_env(
        edges: &[SocketAddr],
        ca: &Path,
        token: &str,
        config: Option<&Path>,
        tunnel_flags: &[String],
        run_flags: &[&str],
        env: &[(&str, &str)],
    ) -> Connector {
        // The default `auto` starts on QUIC with a token, and TestEdge speaks only http2:
        // pass `--protocol http2` unless the test chose a protocol (`--protocol auto` too).
        let mut flags = vec!["--metrics", "127.0.0.1:0"];
        if !tunnel_flags.iter().any(|f| f == "--protocol") {
            flags.extend(["--protocol", "http2"]);
        }
        flags.extend(tunnel_flags.iter().map(String::as_str));
        let (mut cmd, log) = tunnel_command(
            Path::new(env!("CARGO_BIN_EXE_ringflare")),
            "connector",
            edges,
            ca,
            token,
            config,
            &flags,
            run_flags,
        );
        cmd.envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        LAST_LOG.with(|l| *l.borrow_mut() = Some(log.clone()));
        Connector {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `done` holds for it, or as it is after `limit`: the connector writes a
    /// line after the event the test observed (e.g. the registration reply reaches the edge
    /// before the connector logs it).
    pub fn log_when(&self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let log = self.log_text();
            if done(&log) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// CPU seconds (user + system) the connector process used so far, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        // USER_HZ is 100 on Linux.
        Some(ticks / 100.0)
    }

    /// The metrics address from the `Starting metrics server on ...` line.
    pub fn metrics_addr(&self) -> Option<String> {
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("Starting metrics server on "))?;
        let rest = line.split("Starting metrics server on ").nth(1)?;
        Some(rest.trim_end_matches("/metrics").to_owned())
    }

    /// Polls for exit without blocking the async runtime; returns the exit code.
    pub async fn exited(&mut self, limit: Duration) -> Option<i32> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            compio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits for exit with a bound; returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- connector log ----\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `BIN tunnel [--config C] --edge A... --cacert CA TUNNEL_FLAGS run --token T RUN_FLAGS`, with
/// `HOME` in the log directory and `TUNNEL_TOKEN` unset, and the path of its log (outside any
/// test's temp dir, so a failing test can still print it), named `<log_name>-<uuid>.log`.
#[allow(clippy::too_many_arguments)]
pub(super) fn tunnel_command(
    bin: &Path,
    log_name: &str,
    edges: &[SocketAddr],
    ca: &Path,
    token: &str,
    config: Option<&Path>,
    tunnel_flags: &[&str],
    run_flags: &[&str],
) -> (Command, PathBuf) {
    let logs = std::env::temp_dir().join("ringflare-test-logs");
    let _ = std::fs::create_dir_all(&logs);
    let log = logs.join(format!("{log_name}-{}.log", Uuid::new_v4()));
    let mut cmd = Command::new(bin);
    cmd.arg("tunnel");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    for e in edges {
        cmd.args(["--edge", &e.to_string()]);
    }
    cmd.arg("--cacert")
        .arg(ca)
        .args(tunnel_flags)
        .arg("run")
        .args(["--token", token])
        .args(run_flags)
        .env_remove("TUNNEL_TOKEN")
        .env("HOME", &logs);
    (cmd, log)
}
