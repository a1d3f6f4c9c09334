//! cloudflared's `/diag/system` answer: memory, file descriptors, disks and OS of the host, as
//! its Linux collector gathers them (`/proc/meminfo`, `fs.file-nr`, `df -k`, `uname -a`), in
//! its JSON (`{"info":{...},"errors":{...}}`, a failed part named in `errors` with its raw
//! text). Parsing is pure; [`collect`] reads the files and runs the two commands.
//! `goVersion` is left out (no Go runtime); `goArch` names the binary's architecture as Go does.

use std::collections::BTreeMap;

use serde::Serialize;

/// One filesystem of `df -k`, in KiB.
#[derive(Debug, Serialize, PartialEq)]
pub struct Disk {
    name: String,
    #[serde(rename = "sizeMaximum")]
    size_maximum: u64,
    #[serde(rename = "sizeCurrent")]
    size_current: u64,
}

/// The `info` object, in cloudflared's field order, each left out when empty as Go's
/// `omitempty` does.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemInformation {
    #[serde(skip_serializing_if = "is_zero")]
    memory_maximum: u64,
    #[serde(skip_serializing_if = "is_zero")]
    memory_current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    file_descriptor_maximum: u64,
    #[serde(skip_serializing_if = "is_zero")]
    file_descriptor_current: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    os_system: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    host_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    os_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    os_release: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    cloudflared_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    go_arch: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    disk: Vec<Disk>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A part that failed: its error and the raw text it came from.
#[derive(Debug, Serialize)]
struct PartError {
    error: String,
    #[serde(rename = "rawInfo")]
    raw_info: String,
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in KiB: (total, available). cloudflared
/// reports total - available as the memory in use.
pub fn parse_meminfo(text: &str) -> Result<(u64, u64), String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| format!("parsing memory information: key not found, key={key}"))
    };
    Ok((field("MemTotal")?, field("MemAvailable")?))
}

/// `fs.file-nr` (`open unused max`): (maximum, current).
pub fn parse_file_nr(text: &str) -> Result<(u64, u64), String> {
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 3 {
        return Err(format!(
            "expected file descriptor information to have 3 fields got {}: insufficient fields",
            f.len()
        ));
    }
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|e| format!("error parsing '{s}': {e}"))
    };
    Ok((num(f[2])?, num(f[0])?))
}

/// `df -k` after its header: name, size, used. Lines whose numbers do not parse are skipped.
pub fn parse_df(text: &str) -> Result<Vec<Disk>, String> {
    let mut disks = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            return Err(format!(
                "expected disk volume to have 3 fields got {}: insufficient fields",
                f.len()
            ));
        }
        if let (Ok(max), Ok(cur)) = (f[1].parse(), f[2].parse()) {
            disks.push(Disk {
                name: f[0].to_owned(),
                size_maximum: max,
                size_current: cur,
            });
        }
    }
    if disks.is_empty() {
        return Err("no disk volume information found".into());
    }
    Ok(disks)
}

/// `uname -a`: system, host name, kernel release, the words up to the machine, the machine.
pub fn parse_uname(text: &str) -> Result<[String; 5], String> {
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() < 6 {
        return Err(format!(
            "expected system information to have 6 fields got {}: insufficient fields",
            f.len()
        ));
    }
    let arch = f.len() - 2;
    Ok([
        f[0].to_owned(),
        f[1].to_owned(),
        f[2].to_owned(),
        f[3..arch].join(" "),
        f[arch].to_owned(),
    ])
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("error retrieving output from command '{cmd}': {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "error retrieving output from command '{cmd}': {}",
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Go's name for this binary's architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The `/diag/system` body for a connector of `version`.
pub fn collect(version: &str) -> String {
    let mut info = SystemInformation {
        cloudflared_version: version.to_owned(),
        go_arch: go_arch().to_owned(),
        ..SystemInformation::default()
    };
    let mut errors = BTreeMap::new();
    let mut fail = |key: &str, error: String, raw: String| {
        errors.insert(
            key.to_owned(),
            PartError {
                error,
                raw_info: raw,
            },
        );
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    match parse_meminfo(&meminfo) {
        Ok((max, available)) => {
            (info.memory_maximum, info.memory_current) = (max, max.saturating_sub(available))
        }
        Err(e) => fail("memoryInformationError", e, meminfo),
    }
    let file_nr = std::fs::read_to_string("/proc/sys/fs/file-nr").unwrap_or_default();
    match parse_file_nr(&file_nr) {
        Ok((max, cur)) => (info.file_descriptor_maximum, info.file_descriptor_current) = (max, cur),
        Err(e) => fail("fileDescriptorsInformationError", e, file_nr),
    }
    match run("df", &["-k"]) {
        Ok(raw) => match parse_df(&raw) {
            Ok(disks) => info.disk = disks,
            Err(e) => fail("diskVolumeInformationError", e, raw),
        },
        Err(e) => fail("diskVolumeInformationError", e, String::new()),
    }
    let uname = run("uname", &["-a"]);
    match uname.as_deref().map_err(Clone::clone).and_then(parse_uname) {
        Ok([sys, host, version, release, arch]) => {
            info.os_system = sys;
            info.host_name = host;
            info.os_version = version;
            info.os_release = release;
            info.architecture = arch;
        }
        Err(e) => fail(
            "operatingSystemInformationError",
            e,
            uname.unwrap_or_default(),
        ),
    }
    /// The answer, in cloudflared's field order.
    #[derive(Serialize)]
    struct Response {
        info: SystemInformation,
        errors: BTreeMap<String, PartError>,
    }
    let body = serde_json::to_string(&Response { info, errors }).unwrap_or_default();
    format!("{body}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_linux_collector_reads() {
        let mem = "MemTotal:       16310396 kB\nMemFree:  1 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(parse_meminfo(mem).unwrap(), (16310396, 12000000));
        assert!(parse_meminfo("MemFree: 1 kB\n").is_err());
        assert_eq!(
            parse_file_nr("2080\t0\t9223372036854775807\n").unwrap(),
            (9223372036854775807, 2080)
        );
        assert!(parse_file_nr("1 2").is_err());
        let df = "Filesystem 1K-blocks Used Available Use% Mounted on\n\
                  /dev/sda1 100 40 60 40% /\ntmpfs - - - - /x\n";
        assert_eq!(
            parse_df(df).unwrap(),
            vec![Disk {
                name: "/dev/sda1".into(),
                size_maximum: 100,
                size_current: 40
            }]
        );
        let u = "Linux host 6.8.0-40-generic #40-Ubuntu SMP PREEMPT_DYNAMIC Fri Jul 5 10:34:03 UTC 2024 x86_64 x86_64 x86_64 GNU/Linux";
        let [sys, host, ver, rel, arch] = parse_uname(u).unwrap();
        assert_eq!(
            (sys.as_str(), host.as_str(), ver.as_str()),
            ("Linux", "host", "6.8.0-40-generic")
        );
        assert_eq!(
            rel,
            "#40-Ubuntu SMP PREEMPT_DYNAMIC Fri Jul 5 10:34:03 UTC 2024 x86_64 x86_64"
        );
        assert_eq!(arch, "x86_64");
    }

    #[test]
    fn collect_gives_cloudflareds_shape() {
        let v: serde_json::Value = serde_json::from_str(&collect("1.2.3")).unwrap();
        assert_eq!(v["info"]["cloudflaredVersion"], "1.2.3");
        assert!(v["errors"].is_object());
        assert!(v["info"].get("goVersion").is_none());
    }
}
