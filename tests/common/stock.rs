//! A third-party connector binary (stock cloudflared) in tests: where it comes from
//! (`RINGFLARE_CLOUDFLARED`), the loopback-only network namespace it may only run in, and the
//! child process itself (a [`Connector`], so the log and signal helpers apply).
//!
//! The namespace is made as `bench e2e` makes it for a third-party `--connector`: the test
//! re-executes its own test binary, filtered to itself, under `unshare --user --map-root-user
//! --net` with `lo` brought up; inside, the body runs (edge, origins, cloudflared and the
//! eyeball clients all on that namespace's loopback), outside, the test passes or fails with
//! the re-executed run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::connector::{Connector, tunnel_command};

/// Where the stock cloudflared binary is; the tests that need it skip when it is unset.
pub const CLOUDFLARED_ENV: &str = "RINGFLARE_CLOUDFLARED";
/// Set in the re-executed test so it runs its body instead of isolating itself again.
const NETNS_ENV: &str = "RINGFLARE_TEST_NETNS";

/// The stock cloudflared binary from [`CLOUDFLARED_ENV`], or `None` after printing that the
/// test `test` skipped.
pub fn stock_cloudflared(test: &str) -> Option<PathBuf> {
    match std::env::var_os(CLOUDFLARED_ENV) {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "{CLOUDFLARED_ENV}={} is not a file",
                p.display()
            );
            Some(p)
        }
        _ => {
            println!("{test}: skipped ({CLOUDFLARED_ENV} is not set)");
            None
        }
    }
}

/// Runs test `test` of this test binary inside a fresh loopback-only network namespace.
///
/// Returns `true` in the re-executed process (the caller runs its body: it is inside the
/// namespace); in the calling process it runs the re-execution, prints its output, panics
/// when it failed (or no namespace can be made) and returns `false` (the caller returns).
pub fn in_loopback_netns(test: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = ringflare::bench::procs::loopback_netns(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(NETNS_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .expect("running unshare (util-linux) for a loopback-only network namespace");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("---- {test} in a loopback-only network namespace ----\n{text}");
    assert!(
        out.status.success(),
        "{test} failed inside its network namespace ({}); output above",
        out.status
    );
    // The filter must have matched: a renamed test would otherwise pass without running.
    assert!(
        text.contains("1 passed"),
        "{test} did not run inside the namespace"
    );
    false
}

impl Connector {
    /// Starts a third-party connector binary (cloudflared's command line) against `edges`:
    /// [`tunnel_command`] with `--no-autoupdate` first among the tunnel flags, stderr and
    /// stdout to the log.
    pub fn spawn_stock(
        bin: &Path,
        edges: &[SocketAddr],
        ca: &Path,
        token: &str,
        config: Option<&Path>,
        tunnel_flags: &[&str],
        run_flags: &[&str],
    ) -> Connector {
        let mut flags = vec!["--no-autoupdate"];
        flags.extend(tunnel_flags);
        let (mut cmd, log) =
            tunnel_command(bin, "stock", edges, ca, token, config, &flags, run_flags);
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        Connector {
            child: cmd.spawn().unwrap(),
            log,
        }
    }
}
