//! The standard `process_*` Prometheus families (as Go's client_golang process collector
//! exposes them, which is what cloudflared serves), read from /proc at scrape time.
//! Parsing is pure (text in, numbers out) so it is tested without a live /proc; [`render`]
//! reads the files and formats values as Go does. Go runtime families (`go_*`) have no meaning
//! for a Rust process and are not emitted.

use std::fmt::Write as _;

/// What `/proc/self/stat` contributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts at field 3 (state); field N is rest[N - 3].
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: num(14)? + num(15)?,
        start_ticks: num(22)?,
        vsize_bytes: num(23)?,
        rss_pages: num(24)?,
    })
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of a `/proc/PID/limits` row (`Max open files`, ...); `unlimited` is
/// u64::MAX, as Go's procfs reads it.
pub fn parse_limit(text: &str, row: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(row))?;
    let soft = line[row.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// Received and transmitted bytes summed over every interface of `/proc/PID/net/dev`.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(_, v)| {
            let f: Vec<u64> = v
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            Some((*f.first()?, *f.get(8)?))
        })
        .fold((0, 0), |(r, t), (a, b)| {
            (r.saturating_add(a), t.saturating_add(b))
        })
}

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (the Prometheus text
/// format's number syntax): shortest digits, exponent form from 1e+06 or below 1e-04.
pub fn go_float(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

/// Renders the families from the live /proc; families whose file cannot be read are left out.
pub fn render(out: &mut String) {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as f64;
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {}", go_float(value));
    };
    if let Some(stat) = read("/proc/self/stat").as_deref().and_then(parse_stat) {
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.cpu_ticks as f64 / ticks,
        );
        let limits = read("/proc/self/limits");
        if let Some(max) = limits
            .as_deref()
            .and_then(|l| parse_limit(l, "Max open files"))
        {
            family(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max as f64,
            );
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            family(
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                fds.count() as f64,
            );
        }
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stat.rss_pages as f64 * page,
        );
        if let Some(btime) = read("/proc/stat").as_deref().and_then(parse_btime) {
            family(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                btime as f64 + stat.start_ticks as f64 / ticks,
            );
        }
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stat.vsize_bytes as f64,
        );
    }
    if let Some(max) = read("/proc/self/limits")
        .as_deref()
        .and_then(|l| parse_limit(l, "Max address space"))
    {
        family(
            "process_virtual_memory_max_bytes",
            "gauge",
            "Maximum amount of virtual memory available in bytes.",
            max as f64,
        );
    }
    if let Some(net) = read("/proc/self/net/dev") {
        let (rx, tx) = parse_net_dev(&net);
        family(
            "process_network_receive_bytes_total",
            "counter",
            "Number of bytes received by the process over the network.",
            rx as f64,
        );
        family(
            "process_network_transmit_bytes_total",
            "counter",
            "Number of bytes sent by the process over the network.",
            tx as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_after_the_command_name() {
        let text = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 50 0 0 20 0 9 0 \
                    123456 104857600 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.cpu_ticks, 200);
        assert_eq!(s.start_ticks, 123456);
        assert_eq!(s.vsize_bytes, 104857600);
        assert_eq!(s.rss_pages, 2500);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn limits_btime_and_net_dev() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limit(limits, "Max open files"), Some(1024));
        assert_eq!(parse_limit(limits, "Max address space"), Some(u64::MAX));
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n\
                   lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n\
                   eth0: 1000 1 0 0 0 0 0 0 3000 2 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev), (1100, 3200));
    }

    #[test]
    fn floats_as_go_writes_them() {
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(100.0), "100");
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(24444928.0), "2.4444928e+07");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(999999.0), "999999");
        assert_eq!(go_float(u64::MAX as f64), "1.8446744073709552e+19");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(1.7e9 + 0.25), "1.70000000025e+09");
    }
}
