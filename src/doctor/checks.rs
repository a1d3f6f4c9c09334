//! The doctor's decisions: host facts in, one verdict per check out. Pure (no file reads), so
//! every threshold is unit-tested on fixture facts.

use std::fmt;

/// QUIC (quic-go in cloudflared) asks for 7 MiB socket buffers; Cloudflare's docs say 7500000.
pub const QUIC_BUFFER: u64 = 7_500_000;
/// Accept/SYN backlog worth having for bursts of new eyeball connections.
pub const BACKLOG: u64 = 4096;
/// File descriptors: one per visitor connection, origin connection and WebSocket.
pub const NOFILE_WANTED: u64 = 65_536;
/// Below this many descriptors ringflare cannot even serve a modest site.
pub const NOFILE_MIN: u64 = 1024;
/// io_uring rings are charged to RLIMIT_MEMLOCK on kernels before 5.12.
pub const MEMLOCK_WANTED: u64 = 64 << 20;
/// Ephemeral ports: each origin connection from the connector takes one.
pub const PORT_SPAN_WANTED: u32 = 28_000;
/// System-wide open-file ceiling.
pub const FILE_MAX_WANTED: u64 = 1_000_000;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Works, but slower or less robust than it could be.
    Warn,
    /// Blocks ringflare from running as configured.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => " OK ",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        })
    }
}

/// One line of the doctor's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, stable across versions (tests and scripts grep for it).
    pub name: &'static str,
    /// Verdict.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// The exact line to change, when there is something to change.
    pub fix: Option<String>,
}

/// Everything the doctor looked at. `None` means "could not be read".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Result of actually creating an io_uring (the runtime's probe): `Err(reason)` if refused.
    pub io_uring: Result<(), String>,
    /// Whether the operator forces io_uring (`--io-driver io_uring`): then a refusal blocks.
    pub io_uring_forced: bool,
    /// `/proc/sys/kernel/io_uring_disabled` (0 = allowed, 1 = privileged only, 2 = off).
    pub io_uring_disabled: Option<u8>,
    /// `Seccomp:` from `/proc/self/status` (0 = none, 1 = strict, 2 = filter).
    pub seccomp: Option<u8>,
    /// Container technology, if detected (`lxc`, `docker`, `podman`, ...).
    pub container: Option<String>,
    /// RLIMIT_MEMLOCK (soft, hard); `u64::MAX` = unlimited.
    pub memlock: Option<(u64, u64)>,
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: Option<(u64, u64)>,
    /// `net.core.rmem_max`.
    pub rmem_max: Option<u64>,
    /// `net.core.wmem_max`.
    pub wmem_max: Option<u64>,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`.
    pub syn_backlog: Option<u64>,
    /// `net.ipv4.ip_local_port_range`.
    pub port_range: Option<(u32, u32)>,
    /// `fs.file-max`.
    pub file_max: Option<u64>,
    /// Cores this process may run on.
    pub cores: usize,
    /// `scaling_governor` of cpu0, if exposed.
    pub governor: Option<String>,
    /// glibc's copy routine on x86_64 (`None` on other targets and libcs).
    pub copy: Option<CopyFacts>,
}

/// What decides whether glibc copies with `rep movsb` (see `runtime::copy_tuning`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFacts {
    /// `/proc/cpuinfo` names an AMD CPU.
    pub amd: bool,
    /// `glibc.cpu.x86_rep_movsb_threshold` as glibc applies it to this process (from
    /// `ld.so --list-tunables` under this environment); `None` if that could not be read.
    pub rep_movsb_threshold: Option<u64>,
}

/// Names of every check, in output order.
pub const CHECK_NAMES: [&str; 13] = [
    "io_uring",
    "container",
    "cores",
    "cpu governor",
    "glibc copy routine",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "fs.file-max",
];

fn check(name: &'static str, level: Level, detail: String, fix: Option<String>) -> Check {
    Check {
        name,
        level,
        detail,
        fix,
    }
}

fn unreadable(name: &'static str) -> Check {
    check(name, Level::Warn, "could not be read".into(), None)
}

/// Where a global (non-namespaced) sysctl must be set, for the fix line.
fn host_note(f: &HostFacts) -> &'static str {
    if f.container.is_some() {
        " (on the host, e.g. the Proxmox node: not settable per container)"
    } else {
        ""
    }
}

/// All verdicts for `f`, in [`CHECK_NAMES`] order.
pub fn evaluate(f: &HostFacts) -> Vec<Check> {
    vec![
        io_uring(f),
        container(f),
        cores(f),
        governor(f),
        copy_routine(f),
        nofile(f),
        memlock(f),
        buffer("net.core.rmem_max", f.rmem_max, f),
        buffer("net.core.wmem_max", f.wmem_max, f),
        backlog("net.core.somaxconn", f.somaxconn),
        backlog("net.ipv4.tcp_max_syn_backlog", f.syn_backlog),
        port_range(f),
        file_max(f),
    ]
}

fn io_uring(f: &HostFacts) -> Check {
    let reason = match &f.io_uring {
        Ok(()) => {
            return check(
                "io_uring",
                Level::Ok,
                "available (a ring was created)".into(),
                None,
            );
        }
        Err(r) => r,
    };
    let (why, fix) = match (f.io_uring_disabled, f.seccomp, &f.container) {
        (Some(v @ 1..), _, _) => (
            format!("kernel.io_uring_disabled={v}"),
            format!("sysctl -w kernel.io_uring_disabled=0{}", host_note(f)),
        ),
        (_, Some(2), Some(c)) => (
            format!("the {c} container's seccomp profile refuses io_uring_setup"),
            match c.as_str() {
                "lxc" => "allow io_uring in the container's seccomp policy (lxc.seccomp.profile) or run ringflare on the host/in a VM".to_owned(),
                _ => "run the container with a seccomp profile that allows io_uring_setup/io_uring_enter/io_uring_register".to_owned(),
            },
        ),
        (_, Some(2), None) => (
            "a seccomp filter refuses io_uring_setup".into(),
            "drop SystemCallFilter entries that exclude io_uring (see tuning/ringflare.service)".into(),
        ),
        _ => (
            "the kernel refused a ring".into(),
            "LimitMEMLOCK=infinity (kernels before 5.12 charge rings to memlock), or a kernel >= 5.19".into(),
        ),
    };
    let level = if f.io_uring_forced {
        Level::Fail
    } else {
        Level::Warn
    };
    let tail = if f.io_uring_forced {
        "; --io-driver io_uring will refuse to start"
    } else {
        "; ringflare falls back to the poll driver"
    };
    check(
        "io_uring",
        level,
        format!("unavailable: {why} ({reason}){tail}"),
        Some(fix),
    )
}

fn container(f: &HostFacts) -> Check {
    match &f.container {
        None => check(
            "container",
            Level::Ok,
            "none detected (bare host or VM)".into(),
            None,
        ),
        Some(c) => check(
            "container",
            Level::Ok,
            format!(
                "running in {c}: net.core.* buffers, fs.file-max and kernel.io_uring_disabled come from the host"
            ),
            None,
        ),
    }
}

fn cores(f: &HostFacts) -> Check {
    match f.cores {
        0 | 1 => check(
            "cores",
            Level::Warn,
            format!(
                "{} core: one worker; thread-per-core gains nothing",
                f.cores.max(1)
            ),
            Some("give the guest more vCPUs (Proxmox: Hardware > Processors)".into()),
        ),
        n => check("cores", Level::Ok, format!("{n} cores: {n} workers"), None),
    }
}

fn governor(f: &HostFacts) -> Check {
    match f.governor.as_deref() {
        None => check(
            "cpu governor",
            Level::Ok,
            "not exposed (VM or container; the host decides)".into(),
            None,
        ),
        Some(g @ ("performance" | "schedutil")) => {
            check("cpu governor", Level::Ok, g.to_owned(), None)
        }
        Some(g) => check(
            "cpu governor",
            Level::Warn,
            format!("{g}: cores clock down between bursts, adding latency"),
            Some("cpupower frequency-set -g performance (on the host)".into()),
        ),
    }
}

fn copy_routine(f: &HostFacts) -> Check {
    use crate::runtime::copy_tuning::{THRESHOLD, TUNABLE};
    const NAME: &str = "glibc copy routine";
    let Some(c) = &f.copy else {
        return check(
            NAME,
            Level::Ok,
            "not glibc on x86_64: nothing to tune".into(),
            None,
        );
    };
    if !c.amd {
        return check(
            NAME,
            Level::Ok,
            "not an AMD CPU: glibc's default kept".into(),
            None,
        );
    }
    match c.rep_movsb_threshold {
        Some(t) if t >= THRESHOLD => check(
            NAME,
            Level::Ok,
            format!("AMD: rep movsb off for copies under {t} bytes (set at start)"),
            None,
        ),
        Some(t) => check(
            NAME,
            Level::Warn,
            format!(
                "AMD: copies over {t} bytes use rep movsb, slow on these CPUs (connector \
                 CPU per GB downloaded, measured on AMD EPYC: 2.1 s with it, 1.4 s without)"
            ),
            Some(format!(
                "drop {TUNABLE} from GLIBC_TUNABLES (ringflare sets {TUNABLE}={THRESHOLD} at start)"
            )),
        ),
        None => check(
            NAME,
            Level::Warn,
            "AMD: could not read glibc's tunables (ld.so --list-tunables)".into(),
            None,
        ),
    }
}

/// `glibc.cpu.x86_rep_movsb_threshold` from `ld.so --list-tunables` output (hex or decimal).
pub fn parse_rep_movsb_threshold(list: &str) -> Option<u64> {
    let key = crate::runtime::copy_tuning::TUNABLE;
    let v = list
        .lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))?;
    let v = v.split_whitespace().next()?;
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn nofile(f: &HostFacts) -> Check {
    let Some((soft, hard)) = f.nofile else {
        return unreadable("RLIMIT_NOFILE");
    };
    let detail = format!("soft {} hard {}", limit(soft), limit(hard));
    let fix = Some(format!(
        "LimitNOFILE={NOFILE_WANTED} in the systemd unit (or ulimit -n {NOFILE_WANTED})"
    ));
    if soft < NOFILE_MIN {
        check(
            "RLIMIT_NOFILE",
            Level::Fail,
            format!("{detail}: too few descriptors to serve"),
            fix,
        )
    } else if soft < NOFILE_WANTED {
        check(
            "RLIMIT_NOFILE",
            Level::Warn,
            format!("{detail}: caps concurrent connections"),
            fix,
        )
    } else {
        check("RLIMIT_NOFILE", Level::Ok, detail, None)
    }
}

fn memlock(f: &HostFacts) -> Check {
    let Some((soft, hard)) = f.memlock else {
        return unreadable("RLIMIT_MEMLOCK");
    };
    let detail = format!("soft {} hard {}", limit(soft), limit(hard));
    if soft < MEMLOCK_WANTED {
        check(
            "RLIMIT_MEMLOCK",
            Level::Warn,
            format!("{detail}: kernels before 5.12 charge io_uring rings here"),
            Some("LimitMEMLOCK=infinity in the systemd unit (or ulimit -l unlimited)".into()),
        )
    } else {
        check("RLIMIT_MEMLOCK", Level::Ok, detail, None)
    }
}

fn buffer(name: &'static str, v: Option<u64>, f: &HostFacts) -> Check {
    match v {
        None => unreadable(name),
        Some(v) if v < QUIC_BUFFER => check(
            name,
            Level::Warn,
            format!(
                "{v} bytes: QUIC wants {QUIC_BUFFER} (quic-go logs 'failed to sufficiently increase buffer size')"
            ),
            Some(format!("sysctl -w {name}={QUIC_BUFFER}{}", host_note(f))),
        ),
        Some(v) => check(name, Level::Ok, format!("{v} bytes"), None),
    }
}

fn backlog(name: &'static str, v: Option<u64>) -> Check {
    match v {
        None => unreadable(name),
        Some(v) if v < BACKLOG => check(
            name,
            Level::Warn,
            format!("{v}: connection bursts overflow the accept queue"),
            Some(format!("sysctl -w {name}={BACKLOG}")),
        ),
        Some(v) => check(name, Level::Ok, v.to_string(), None),
    }
}

fn port_range(f: &HostFacts) -> Check {
    const NAME: &str = "net.ipv4.ip_local_port_range";
    match f.port_range {
        None => unreadable(NAME),
        Some((lo, hi)) if hi.saturating_sub(lo) < PORT_SPAN_WANTED => check(
            NAME,
            Level::Warn,
            format!("{lo}-{hi}: few ephemeral ports for origin connections"),
            Some(format!("sysctl -w {NAME}=\"1024 65535\"")),
        ),
        Some((lo, hi)) => check(NAME, Level::Ok, format!("{lo}-{hi}"), None),
    }
}

fn file_max(f: &HostFacts) -> Check {
    match f.file_max {
        None => unreadable("fs.file-max"),
        Some(v) if v < FILE_MAX_WANTED => check(
            "fs.file-max",
            Level::Warn,
            v.to_string(),
            Some(format!(
                "sysctl -w fs.file-max={FILE_MAX_WANTED}{}",
                host_note(f)
            )),
        ),
        Some(v) => check("fs.file-max", Level::Ok, v.to_string(), None),
    }
}

/// `Seccomp:` mode from the text of `/proc/self/status`.
pub fn parse_seccomp(status: &str) -> Option<u8> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `lo hi` from `ip_local_port_range`.
pub fn parse_port_range(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split_whitespace().map(str::parse::<u32>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) => Some((lo, hi)),
        _ => None,
    }
}

/// Inputs for container detection, each read from the host by the caller.
#[derive(Debug, Clone, Default)]
pub struct ContainerHints<'a> {
    /// `/run/systemd/container`, written by systemd-nspawn, LXC and podman.
    pub systemd_container: Option<&'a str>,
    /// `container=` from PID 1's environment (`/proc/1/environ`).
    pub init_env: Option<&'a str>,
    /// `/.dockerenv` exists.
    pub dockerenv: bool,
    /// `/run/.containerenv` exists (podman).
    pub containerenv: bool,
    /// `/proc/1/cgroup`.
    pub cgroup: Option<&'a str>,
}

/// The container technology the hints point to, if any.
pub fn detect_container(h: &ContainerHints<'_>) -> Option<String> {
    let named = |s: &str| Some(s.trim().trim_matches('\0').to_owned()).filter(|s| !s.is_empty());
    if let Some(c) = h.systemd_container.and_then(named) {
        return Some(c);
    }
    if let Some(c) = h.init_env.and_then(|env| {
        env.split('\0')
            .find_map(|kv| kv.strip_prefix("container="))
            .and_then(named)
    }) {
        return Some(c);
    }
    if h.dockerenv {
        return Some("docker".into());
    }
    if h.containerenv {
        return Some("podman".into());
    }
    let cg = h.cgroup.unwrap_or_default();
    ["lxc", "docker", "kubepods", "containerd"]
        .into_iter()
        .find(|m| cg.contains(m))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuned() -> HostFacts {
        HostFacts {
            io_uring: Ok(()),
            io_uring_forced: false,
            io_uring_disabled: Some(0),
            seccomp: Some(0),
            container: None,
            memlock: Some((u64::MAX, u64::MAX)),
            nofile: Some((1 << 20, 1 << 20)),
            rmem_max: Some(7_500_000),
            wmem_max: Some(7_500_000),
            somaxconn: Some(4096),
            syn_backlog: Some(8192),
            port_range: Some((1024, 65535)),
            file_max: Some(9_223_372_036_854_775_807),
            cores: 8,
            governor: Some("performance".into()),
            copy: Some(CopyFacts {
                amd: true,
                rep_movsb_threshold: Some(crate::runtime::copy_tuning::THRESHOLD),
            }),
        }
    }

    #[test]
    fn the_copy_routine_warns_only_on_amd_with_rep_movsb_on() {
        let on = |t: Option<u64>, amd: bool| HostFacts {
            copy: Some(CopyFacts {
                amd,
                rep_movsb_threshold: t,
            }),
            ..tuned()
        };
        assert_eq!(
            level(&evaluate(&on(Some(0x840), true)), "glibc copy routine"),
            Level::Warn
        );
        let user = evaluate(&on(Some(2048), true));
        let c = user
            .iter()
            .find(|c| c.name == "glibc copy routine")
            .unwrap();
        assert!(
            c.fix.as_deref().unwrap().contains("GLIBC_TUNABLES"),
            "{c:?}"
        );
        assert_eq!(
            level(&evaluate(&on(Some(0x840), false)), "glibc copy routine"),
            Level::Ok
        );
        assert_eq!(
            level(&evaluate(&on(None, true)), "glibc copy routine"),
            Level::Warn
        );
        let musl = HostFacts {
            copy: None,
            ..tuned()
        };
        assert_eq!(level(&evaluate(&musl), "glibc copy routine"), Level::Ok);
    }

    #[test]
    fn reads_the_threshold_from_ld_so() {
        let out = "glibc.cpu.x86_shared_cache_size: 0x10000000 (min: 0x0, max: 0xffffffffffffffff)\n\
                   glibc.cpu.x86_rep_movsb_threshold: 0x1000000 (min: 0x100, max: 0xffffffffffffffff)\n";
        assert_eq!(parse_rep_movsb_threshold(out), Some(0x1000000));
        assert_eq!(
            parse_rep_movsb_threshold("glibc.cpu.x86_rep_movsb_threshold: 2112\n"),
            Some(2112)
        );
        assert_eq!(parse_rep_movsb_threshold("nothing\n"), None);
    }

    fn level(checks: &[Check], name: &str) -> Level {
        checks.iter().find(|c| c.name == name).unwrap().level
    }

    #[test]
    fn a_tuned_host_is_all_ok_and_every_check_is_present() {
        let checks = evaluate(&tuned());
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(names, CHECK_NAMES);
        assert!(
            checks
                .iter()
                .all(|c| c.level == Level::Ok && c.fix.is_none()),
            "{checks:?}"
        );
    }

    #[test]
    fn default_distro_values_warn_with_exact_fixes() {
        let f = HostFacts {
            memlock: Some((8 << 20, 8 << 20)),
            nofile: Some((1024, 524_288)),
            rmem_max: Some(212_992),
            wmem_max: Some(212_992),
            somaxconn: Some(4096),
            syn_backlog: Some(512),
            port_range: Some((32768, 60999)),
            file_max: Some(9_223_372_036_854_775_807),
            governor: Some("powersave".into()),
            ..tuned()
        };
        let checks = evaluate(&f);
        for name in [
            "RLIMIT_NOFILE",
            "RLIMIT_MEMLOCK",
            "net.core.rmem_max",
            "net.ipv4.tcp_max_syn_backlog",
            "cpu governor",
        ] {
            assert_eq!(level(&checks, name), Level::Warn, "{name}");
        }
        assert_eq!(level(&checks, "net.core.somaxconn"), Level::Ok);
        // The distro default port range (28k ports) is enough; a narrow one is not.
        assert_eq!(level(&checks, "net.ipv4.ip_local_port_range"), Level::Ok);
        let narrow = HostFacts {
            port_range: Some((40000, 50000)),
            ..f.clone()
        };
        assert_eq!(
            level(&evaluate(&narrow), "net.ipv4.ip_local_port_range"),
            Level::Warn
        );
        let rmem = checks
            .iter()
            .find(|c| c.name == "net.core.rmem_max")
            .unwrap();
        assert_eq!(
            rmem.fix.as_deref(),
            Some("sysctl -w net.core.rmem_max=7500000")
        );
        assert!(checks.iter().all(|c| c.level != Level::Fail));
    }

    #[test]
    fn io_uring_refusals_are_explained_and_only_block_when_forced() {
        let f = HostFacts {
            io_uring: Err("io_uring_setup: Operation not permitted (os error 1)".into()),
            io_uring_disabled: Some(2),
            container: Some("lxc".into()),
            ..tuned()
        };
        let c = &evaluate(&f)[0];
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.detail.contains("kernel.io_uring_disabled=2") && c.detail.contains("poll driver")
        );
        assert!(c.fix.as_deref().unwrap().contains("Proxmox node"));
        let forced = HostFacts {
            io_uring_forced: true,
            ..f.clone()
        };
        assert_eq!(evaluate(&forced)[0].level, Level::Fail);
        let seccomp = HostFacts {
            io_uring_disabled: Some(0),
            seccomp: Some(2),
            ..f
        };
        let c = &evaluate(&seccomp)[0];
        assert!(c.detail.contains("lxc container's seccomp"), "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("lxc.seccomp.profile"));
    }

    #[test]
    fn tiny_fd_limit_blocks_and_unreadable_values_warn() {
        let f = HostFacts {
            nofile: Some((256, 256)),
            rmem_max: None,
            cores: 1,
            ..tuned()
        };
        let checks = evaluate(&f);
        assert_eq!(level(&checks, "RLIMIT_NOFILE"), Level::Fail);
        assert_eq!(level(&checks, "net.core.rmem_max"), Level::Warn);
        assert_eq!(level(&checks, "cores"), Level::Warn);
    }

    #[test]
    fn parsers_read_proc_formats() {
        let status = "Name:\tringflare\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(parse_seccomp(status), Some(2));
        assert_eq!(parse_seccomp("Name: x\n"), None);
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1 2 3"), None);
        assert_eq!(parse_port_range("x y"), None);
    }

    #[test]
    fn container_detection_from_each_hint() {
        assert_eq!(detect_container(&ContainerHints::default()), None);
        let h = ContainerHints {
            systemd_container: Some("lxc\n"),
            ..Default::default()
        };
        assert_eq!(detect_container(&h).as_deref(), Some("lxc"));
        let h = ContainerHints {
            init_env: Some("PATH=/bin\0container=lxc\0"),
            ..Default::default()
        };
        assert_eq!(detect_container(&h).as_deref(), Some("lxc"));
        let h = ContainerHints {
            dockerenv: true,
            ..Default::default()
        };
        assert_eq!(detect_container(&h).as_deref(), Some("docker"));
        let h = ContainerHints {
            cgroup: Some("0::/system.slice/docker-abc.scope\n"),
            ..Default::default()
        };
        assert_eq!(detect_container(&h).as_deref(), Some("docker"));
        let h = ContainerHints {
            cgroup: Some("0::/init.scope\n"),
            ..Default::default()
        };
        assert_eq!(detect_container(&h), None);
    }
}
