//! `ringflare tunnel diag` against a live connector on loopback: the archive it writes, its
//! name, the files in it and what they hold, and the lines it prints; then against an address
//! where nothing listens (jobs fail, the archive is still written, exit 0 as cloudflared).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use ringflare::runtime::DriverKind;

/// The entries of a stored ZIP archive (what `tunnel diag` writes), by name.
fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let mut files = BTreeMap::new();
    let mut at = 0;
    while u32_at(at) == 0x0403_4b50 {
        assert_eq!(u16_at(at + 8), 0, "stored entries");
        let size = u32_at(at + 18);
        let (name_len, extra) = (u16_at(at + 26), u16_at(at + 28));
        let name = String::from_utf8(bytes[at + 30..at + 30 + name_len].to_vec()).unwrap();
        let start = at + 30 + name_len + extra;
        files.insert(name, bytes[start..start + size].to_vec());
        at = start + size;
    }
    assert_eq!(
        u32_at(at),
        0x0201_4b50,
        "central directory follows the entries"
    );
    let end = bytes.len() - 22;
    assert_eq!(u32_at(end), 0x0605_4b50, "end of central directory record");
    assert_eq!(
        u16_at(end + 10),
        files.len(),
        "entries in the central directory"
    );
    assert_eq!(u32_at(end + 16), at, "central directory offset");
    files
}

/// Runs `tunnel diag ARGS` in `dir`; returns (exit code, stderr, the archive's name and entries).
fn diag(dir: &Path, args: &[&str]) -> (i32, String, String, BTreeMap<String, Vec<u8>>) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringflare"))
        .args(["tunnel", "diag"])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let zips: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".zip"))
        .collect();
    assert_eq!(zips.len(), 1, "one archive: {zips:?}\n{stderr}");
    let files = unzip(&std::fs::read(dir.join(&zips[0])).unwrap());
    std::fs::remove_file(dir.join(&zips[0])).unwrap();
    (
        out.status.code().unwrap_or(-1),
        stderr,
        zips[0].clone(),
        files,
    )
}

fn json(files: &BTreeMap<String, Vec<u8>>, name: &str) -> serde_json::Value {
    let bytes = files.get(name).unwrap_or_else(|| panic!("{name} missing"));
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn diag_collects_a_live_connector_into_cloudflareds_archive() {
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(&cfg, "ingress:\n  - hostname: a.test\n    service: http_status:204\n  - service: http_status:404\n").unwrap();
        let logfile = edge.dir.path().join("connector.log");
        let logfile_flag = logfile.display().to_string();
        let connector = Connector::start(&edge, Some(&cfg), &["--logfile", &logfile_flag], &[]);
        let mut conn = edge.accept().await;
        let reply = conn.request(get("a.test", "/"), None).await;
        assert_eq!(reply.status, 204);
        assert!(
            eventually(Duration::from_secs(10), || connector
                .metrics_addr()
                .is_some())
            .await,
            "{}",
            connector.log_text()
        );
        let metrics = connector.metrics_addr().unwrap();
        let work = tempfile::tempdir().unwrap();
        let (code, stderr, name, files) =
            diag(work.path(), &["--metrics", &metrics, "--no-diag-network"]);
        assert_eq!(code, 0, "{stderr}");
        // cloudflared-diag-2026-11-28T09-30-00Z.zip
        assert!(
            name.starts_with("cloudflared-diag-") && !name.contains(':'),
            "{name}"
        );
        assert!(
            stderr.contains(&format!(
                "INF Selected server http://{metrics} starting diagnostic..."
            )),
            "{stderr}"
        );
        assert!(stderr.contains("INF Collected tunnel state."), "{stderr}");
        assert!(
            stderr.contains("INF Diagnostic file written: cloudflared-diag-"),
            "{stderr}"
        );
        // As cloudflared: an instance run by root is taken for the managed service, whose logs
        // are journald's `cloudflared.service` or /var/log/cloudflared.err, not `--logfile`.
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
        let managed_logs = std::path::Path::new("/var/log/cloudflared.err").exists()
            || std::path::Path::new("/etc/systemd/system/cloudflared.service").exists();
        let logs_collected = !root || managed_logs;
        if logs_collected {
            assert!(stderr.contains("INF Diagnostic completed"), "{stderr}");
            assert!(!stderr.contains(" ERR "), "{stderr}");
        } else {
            assert!(
                stderr.contains("ERR Job: log information finished with error. error=\"error opening log file while collecting logs: open /var/log/cloudflared.err: no such file or directory\""),
                "{stderr}"
            );
            assert!(stderr.contains("WRN Diagnostic completed with one or more errors"));
        }

        let mut names: Vec<&str> = files.keys().map(String::as_str).collect();
        if !logs_collected {
            names.insert(1, "cloudflared_logs.txt");
        }
        assert_eq!(
            names,
            [
                "cli-configuration.json",
                "cloudflared_logs.txt",
                "configuration.json",
                "metrics.txt",
                "systeminformation.json",
                "task-result.json",
                "tunnelstate.json"
            ]
        );
        let state = json(&files, "tunnelstate.json");
        assert_eq!(state["tunnelID"], "6ff42ae2-765d-4adf-8112-31c55c1551ef");
        assert_eq!(state["connections"][0]["isConnected"], true);
        let tasks = json(&files, "task-result.json");
        for job in [
            "tunnel state",
            "system information",
            "metrics",
            "cli configuration",
            "configuration",
        ] {
            assert_eq!(tasks[job]["result"], "success", "{job}: {tasks}");
        }
        let metrics_txt = String::from_utf8_lossy(&files["metrics.txt"]);
        assert!(
            metrics_txt.contains("cloudflared_tunnel_ha_connections 1"),
            "{metrics_txt}"
        );
        assert!(metrics_txt.contains("process_resident_memory_bytes"));
        if !root {
            assert_eq!(tasks["log information"]["result"], "success");
            let logs = String::from_utf8_lossy(&files["cloudflared_logs.txt"]);
            assert!(logs.contains("Registered tunnel connection"), "{logs}");
        }
        let cli = json(&files, "cli-configuration.json");
        assert_eq!(cli["logfile"], logfile_flag.as_str());
        assert!(cli["uid"].is_string());
        let config = json(&files, "configuration.json");
        assert_eq!(config["config"]["ingress"][0]["hostname"], "a.test");
        let system = json(&files, "systeminformation.json");
        assert!(
            system["info"]["memoryMaximum"].as_u64().unwrap_or(0) > 0,
            "{system}"
        );
        assert!(system["info"]["cloudflaredVersion"].is_string());
    });
}

#[test]
fn diag_with_nothing_listening_still_writes_the_report() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let work = tempfile::tempdir().unwrap();
    let (code, stderr, _, files) = diag(
        work.path(),
        &["--metrics", &addr, "--no-diag-network", "--no-diag-system"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("ERR Job: tunnel state finished with error."),
        "{stderr}"
    );
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(
        stderr.contains("WRN Diagnostic completed with one or more errors"),
        "{stderr}"
    );
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["task-result.json"]);
    let tasks = json(&files, "task-result.json");
    assert_eq!(tasks["tunnel state"]["result"], "failure");
    assert!(
        tasks.get("system information").is_none(),
        "--no-diag-system skips the job"
    );
    let unknown = Command::new(env!("CARGO_BIN_EXE_ringflare"))
        .args(["tunnel", "diag", "--bogus"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(0), "urfave/cli's usage exit");
    let text = String::from_utf8_lossy(&unknown.stdout);
    assert!(
        text.contains("flag provided but not defined: -bogus"),
        "{text}"
    );
}
