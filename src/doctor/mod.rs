//! `ringflare doctor`: inspects the host it runs on and says what to change.
//!
//! This module reads host facts (it creates a real io_uring through the runtime's own probe,
//! reads `/proc` and `/sys`, asks for resource limits) and prints one line per check with
//! OK/WARN/FAIL and the exact sysctl, ulimit or systemd line to change. The decisions live in
//! [`checks`], which is pure. It never changes anything on the host. Exit code: 0 when
//! nothing blocks ringflare, 1 when a check FAILs.

pub mod checks;

use std::path::Path;
use std::process::ExitCode;

use rustix::process::{Resource, getrlimit};

use crate::runtime::{DriverError, IO_DRIVER_ENV, IoDriver, select_driver};

pub use checks::{Check, HostFacts, Level, evaluate};

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &str) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

fn rlimit(r: Resource) -> (u64, u64) {
    let l = getrlimit(r);
    (l.current.unwrap_or(u64::MAX), l.maximum.unwrap_or(u64::MAX))
}

/// Reads every fact from this host.
pub fn gather(io_driver: IoDriver) -> HostFacts {
    let io_uring = match select_driver(IoDriver::IoUring) {
        Ok(_) => Ok(()),
        Err(DriverError::IoUringUnavailable { reason }) => Err(reason),
        Err(e) => Err(e.to_string()),
    };
    let systemd_container = read("/run/systemd/container");
    let init_env = std::fs::read("/proc/1/environ")
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let cgroup = read("/proc/1/cgroup");
    let hints = checks::ContainerHints {
        systemd_container: systemd_container.as_deref(),
        init_env: init_env.as_deref(),
        dockerenv: Path::new("/.dockerenv").exists(),
        containerenv: Path::new("/run/.containerenv").exists(),
        cgroup: cgroup.as_deref(),
    };
    HostFacts {
        io_uring,
        io_uring_forced: io_driver == IoDriver::IoUring,
        io_uring_disabled: read_u64("/proc/sys/kernel/io_uring_disabled").map(|v| v.min(255) as u8),
        seccomp: read("/proc/self/status")
            .as_deref()
            .and_then(checks::parse_seccomp),
        container: checks::detect_container(&hints),
        memlock: Some(rlimit(Resource::Memlock)),
        nofile: Some(rlimit(Resource::Nofile)),
        rmem_max: read_u64("/proc/sys/net/core/rmem_max"),
        wmem_max: read_u64("/proc/sys/net/core/wmem_max"),
        somaxconn: read_u64("/proc/sys/net/core/somaxconn"),
        syn_backlog: read_u64("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        port_range: read("/proc/sys/net/ipv4/ip_local_port_range")
            .as_deref()
            .and_then(checks::parse_port_range),
        file_max: read_u64("/proc/sys/fs/file-max"),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        governor: read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
            .map(|s| s.trim().to_owned()),
        copy: copy_facts(),
    }
}

/// glibc's copy tuning as applied to this process: the CPU vendor, and the threshold glibc
/// reports for this environment (`GLIBC_TUNABLES` as the start-up re-execution left it).
fn copy_facts() -> Option<checks::CopyFacts> {
    use crate::runtime::copy_tuning::{GLIBC_X86_64, amd_cpu};
    GLIBC_X86_64.then(|| checks::CopyFacts {
        amd: amd_cpu(),
        rep_movsb_threshold: std::process::Command::new("/lib64/ld-linux-x86-64.so.2")
            .arg("--list-tunables")
            .output()
            .ok()
            .and_then(|o| checks::parse_rep_movsb_threshold(&String::from_utf8_lossy(&o.stdout))),
    })
}

/// The doctor's report as printed.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::from("ringflare doctor: host checks (see tuning/README.md)\n");
    for c in checks {
        out += &format!("[{}] {:width$}  {}\n", c.level, c.name, c.detail);
        if let Some(fix) = &c.fix {
            out += &format!("       {:width$}  fix: {fix}\n", "");
        }
    }
    let count = |l: Level| checks.iter().filter(|c| c.level == l).count();
    out += &format!(
        "summary: {} ok, {} warn, {} fail{}\n",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail),
        if count(Level::Fail) > 0 {
            " (ringflare cannot run as configured)"
        } else {
            ""
        }
    );
    out
}

/// Entry point for `ringflare doctor [--io-driver auto|io_uring|poll]`.
pub fn main(args: &[String], env_driver: Option<&str>) -> ExitCode {
    let mut driver = env_driver.and_then(|v| v.parse().ok()).unwrap_or_default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = match a.as_str() {
            "-h" | "--help" | "help" => {
                println!(
                    "Usage: ringflare doctor [--io-driver auto|io_uring|poll]\n\nInspects this host (io_uring, limits, socket buffers, backlog, ports, cores) and prints\nwhat to change. Exit code 0 when nothing blocks ringflare, 1 when something does.\nThe driver also comes from {IO_DRIVER_ENV}."
                );
                return ExitCode::SUCCESS;
            }
            "--io-driver" => it.next().map(String::as_str),
            other => other.strip_prefix("--io-driver="),
        };
        match value.map(str::parse::<IoDriver>) {
            Some(Ok(d)) => driver = d,
            Some(Err(e)) => {
                eprintln!("ringflare doctor: {e}");
                return ExitCode::from(2);
            }
            None => {
                eprintln!("ringflare doctor: unknown argument {a:?}");
                return ExitCode::from(2);
            }
        }
    }
    let checks = evaluate(&gather(driver));
    print!("{}", render(&checks));
    if checks.iter().any(|c| c.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
