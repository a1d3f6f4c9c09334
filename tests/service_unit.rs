//! `service install` writes cloudflared's systemd unit, and the unit's exact `ExecStart` line
//! runs ringflare against the built-in edge: the connector registers, proxies an eyeball
//! request, and reports readiness on `$NOTIFY_SOCKET` (`Type=notify`).
//!
//! The install root is a temp dir (`RINGFLARE_SERVICE_ROOT`); the only change made to the
//! ExecStart arguments is mapping `/etc/cloudflared/...` into that root. The edge address and CA
//! come from `TUNNEL_EDGE`/`TUNNEL_CACERT`, as `Environment=` lines would give them.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Client;

const BIN: &str = env!("CARGO_BIN_EXE_ringflare");
const WAIT: Duration = Duration::from_secs(30);

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token_from_edge_init(state: &Path) -> String {
    let out = Command::new(BIN)
        .args(["edge", "init", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .skip_while(|l| !l.starts_with("Tunnel token:"))
        .nth(1)
        .unwrap()
        .trim()
        .to_owned()
}

fn start_edge(state: &Path) -> (KillOnDrop, SocketAddr, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["edge", "--state-dir"])
        .arg(state)
        .args(["--listen", "127.0.0.1:0", "--eyeball", "127.0.0.1:0"])
        .args(["--workers", "1", "--no-pinning", "--io-driver", "poll"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr_in = |l: &str| -> Option<SocketAddr> { l.split("addr=").nth(1)?.trim().parse().ok() };
    let (mut tunnel, mut eyeball) = (None, None);
    while tunnel.is_none() || eyeball.is_none() {
        let line = rx.recv_timeout(WAIT).expect("edge start-up log");
        if line.contains("Edge listening for tunnel connections") {
            tunnel = addr_in(&line);
        } else if line.contains("Edge listening for eyeball HTTP requests") {
            eyeball = addr_in(&line);
        }
    }
    (KillOnDrop(child), tunnel.unwrap(), eyeball.unwrap())
}

#[test]
fn installed_unit_exec_start_runs_against_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let root = dir.path().join("root");
    let token = token_from_edge_init(&state);

    let out = Command::new(BIN)
        .args(["service", "install", &token])
        .env_clear()
        .env("HOME", dir.path())
        .env("RINGFLARE_SERVICE_ROOT", &root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/cloudflared.service")).unwrap();
    let token_file = root.join("etc/cloudflared/token");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(unit.contains("\nType=notify\n"), "{unit}");
    assert!(
        unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"),
        "{unit}"
    );
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart line");
    // Exactly cloudflared's line for a token install, with this binary as the program.
    let bin = std::fs::canonicalize(BIN).unwrap();
    assert_eq!(
        exec,
        format!(
            "{} --no-autoupdate tunnel run --token-file /etc/cloudflared/token",
            bin.display()
        )
    );

    let (_edge, tunnel, eyeball) = start_edge(&state);
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let mut argv = exec.split(' ').map(|a| match a.strip_prefix('/') {
        Some(rest) if a.starts_with("/etc/cloudflared/") => root.join(rest).display().to_string(),
        _ => a.to_owned(),
    });
    let program = argv.next().unwrap();
    let connector = Command::new(program)
        .args(argv)
        .env_clear()
        .env("HOME", dir.path())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("TUNNEL_EDGE", tunnel.to_string())
        .env("TUNNEL_CACERT", state.join("ca.pem"))
        .env("RINGFLARE_IO_DRIVER", "poll")
        .env("RINGFLARE_WORKERS", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _connector = KillOnDrop(connector);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on $NOTIFY_SOCKET");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // A token-only connector without ingress answers with cloudflared's default 503.
    let r = Client::connect(eyeball).get("anything.example", "/");
    assert_eq!(r.status, 503);

    let out = Command::new(BIN)
        .args(["service", "uninstall"])
        .env_clear()
        .env("RINGFLARE_SERVICE_ROOT", &root)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!root.join("etc/systemd/system/cloudflared.service").exists());
    assert!(!token_file.exists());
}

#[test]
fn install_without_token_needs_tunnel_and_credentials_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(&cfg, "url: http://localhost:1\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&cfg)
        .args(["service", "install"])
        .env_clear()
        .env("HOME", dir.path())
        .env("RINGFLARE_SERVICE_ROOT", dir.path().join("root"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must contain entries for the tunnel to run"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        &cfg,
        "tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef\ncredentials-file: /x.json\n",
    )
    .unwrap();
    let root = dir.path().join("root");
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&cfg)
        .args(["service", "install"])
        .env_clear()
        .env("HOME", dir.path())
        .env("RINGFLARE_SERVICE_ROOT", &root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/cloudflared.service")).unwrap();
    assert!(unit.contains(" --no-autoupdate --config /etc/cloudflared/config.yml tunnel run\n"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/cloudflared/config.yml")).unwrap(),
        std::fs::read_to_string(&cfg).unwrap()
    );
}
