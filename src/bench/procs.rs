//! Child processes of the end-to-end benchmark and what `/proc` says about them.
//!
//! The origin, the built-in edge and each connector run as separate processes so their CPU
//! time and memory can be told apart: CPU-seconds from `/proc/PID/stat` (utime + stime),
//! peak RSS from `VmHWM` in `/proc/PID/status` (reset per workload through `clear_refs`).
//! Children are stopped with SIGTERM and killed if they linger; [`Proc`]'s `Drop` makes sure
//! none outlives the benchmark.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// A running child with its log captured to a file.
pub struct Proc {
    /// Short name for messages (`origin`, `edge`, `connector`).
    pub name: String,
    /// The child.
    child: Child,
}

impl Proc {
    /// Spawns `cmd` with stderr (and stdout unless `keep_stdout`) appended to `log`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        keep_stdout: bool,
    ) -> Result<Self, String> {
        let file =
            std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stderr(err);
        if keep_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(file);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes the piped stdout (only with `keep_stdout`).
    pub fn stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Whether the child already exited (and how).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// CPU time used so far.
    pub fn cpu(&self) -> Option<Duration> {
        cpu_time(self.pid())
    }

    /// Peak resident memory since start or the last [`Proc::reset_peak_rss`], in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        parse_status_kib(&status, "VmHWM:")
    }

    /// Resets the peak-RSS watermark (`echo 5 > /proc/PID/clear_refs`), so the next reading
    /// covers one workload. Harmless when the kernel refuses (the peak then spans the leg).
    pub fn reset_peak_rss(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(pid) = i32::try_from(self.pid()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A command that runs `exe` (with the arguments the caller adds) inside a fresh user and
/// network namespace with only `lo` up: no route leaves the machine, so a third-party binary's
/// lookups of outside hosts fail at once. Needs `unshare` (util-linux) and unprivileged user
/// namespaces; `bench e2e` and the tests with stock cloudflared isolate it this way.
pub fn loopback_netns(exe: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--net",
        "--",
        "sh",
        "-c",
        "ip link set lo up && exec \"$0\" \"$@\"",
    ])
    .arg(exe);
    cmd
}

/// The network namespace's `TcpExt ListenOverflows` from `/proc/net/netstat`: SYNs (or
/// final ACKs) dropped because a listener's accept queue was full. Each drop costs the client
/// a retransmit 1 s later (then 3, 7, 15 s after the first try), so a burst of connections
/// that overflows a backlog shows up as a seconds-long tail of open times.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    parse_netstat(&text, "TcpExt:", "ListenOverflows")
}

/// One counter of `/proc/net/netstat` (per prefix, a line of names, then one of values).
pub fn parse_netstat(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// utime + stime of `pid`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    let hz = rustix::param::clock_ticks_per_second();
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// utime + stime (fields 14 and 15) from a `/proc/PID/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11 and stime (15) 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   123 kB` value from `/proc/PID/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reads lines from `out` on a thread until `want` matches one or `timeout` passes.
pub fn wait_for_line(
    out: impl Read + Send + 'static,
    want: impl Fn(&str) -> bool + Send + 'static,
    timeout: Duration,
) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut found = false;
        // Keep draining after the match so the child never blocks on a full pipe.
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if !found && want(&line) {
                found = true;
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(timeout)
        .map_err(|_| format!("no expected output within {timeout:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_netstat_counter_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 3 1246 1250\n\
                    IpExt: InNoRoutes ListenOverflows\n\
                    IpExt: 0 99\n";
        assert_eq!(
            parse_netstat(text, "TcpExt:", "ListenOverflows"),
            Some(1246)
        );
        assert_eq!(parse_netstat(text, "IpExt:", "ListenOverflows"), Some(99));
        assert_eq!(parse_netstat(text, "TcpExt:", "Nope"), None);
        assert_eq!(
            parse_netstat("TcpExt: ListenOverflows\n", "TcpExt:", "ListenOverflows"),
            None
        );
        assert_eq!(
            parse_netstat("TcpExt: A\nTcpExt: x\n", "TcpExt:", "A"),
            None
        );
        // The real file, where there is one (any value parses).
        if let Ok(t) = std::fs::read_to_string("/proc/net/netstat") {
            assert!(parse_netstat(&t, "TcpExt:", "ListenOverflows").is_some());
        }
    }

    #[test]
    fn parses_stat_with_hostile_comm_and_status_values() {
        let stat = "4242 (ring flare) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1"), None);
        let status =
            "Name:\tringflare\nVmPeak:\t  9000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(5120));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn measures_a_real_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo ready; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 30",
        ]);
        let mut p = Proc::spawn("sh", cmd, &dir.path().join("log"), true).unwrap();
        let line = wait_for_line(
            p.stdout().unwrap(),
            |l| l == "ready",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(line, "ready");
        assert!(p.cpu().is_some());
        assert!(p.peak_rss_kib().unwrap() > 0);
        assert!(p.exited().is_none());
        p.stop(Duration::from_secs(5));
        assert!(p.exited().is_some());
    }
}
