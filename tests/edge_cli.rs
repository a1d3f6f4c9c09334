//! `ringflare edge` as a process: `--help`, `edge init`, serving with the state it created,
//! and a clean stop on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::*;
use ringflare::config::credentials::{parse_credentials_file, parse_token};

const BIN: &str = env!("CARGO_BIN_EXE_ringflare");

#[test]
fn help_documents_init_config_and_cloudflared_usage() {
    let out = Command::new(BIN).args(["edge", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "ringflare edge init",
        "--state-dir",
        "edge.yml",
        "--cacert",
        "127.0.0.4:7844",
        "tunnel-listen",
        "hostnames",
    ] {
        assert!(text.contains(needle), "help lacks {needle:?}:\n{text}");
    }
    let bad = Command::new(BIN)
        .args(["edge", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--bogus"));
}

#[test]
fn init_then_serve_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = Command::new(BIN)
        .args(["edge", "init", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .skip_while(|l| !l.starts_with("Tunnel token:"))
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let creds = parse_token(&token).unwrap();
    assert!(text.contains("cloudflared tunnel --no-autoupdate --edge 127.0.0.1:7844 --cacert"));
    assert!(text.contains(&format!("{}.json", creds.tunnel_id)));
    let cred_path = state.join(format!("{}.json", creds.tunnel_id));
    let mode = std::fs::metadata(&cred_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o400);
    let from_file =
        parse_credentials_file(&std::fs::read_to_string(&cred_path).unwrap(), "creds").unwrap();
    assert_eq!(from_file, creds);
    assert!(state.join("ca.pem").exists());
    assert!(state.join("edge.yml").exists());

    let mut child = Command::new(BIN)
        .args(["edge", "--state-dir"])
        .arg(&state)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--eyeball",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--no-pinning",
            "--io-driver",
            "poll",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr_in =
        |line: &str| -> Option<SocketAddr> { line.split("addr=").nth(1)?.trim().parse().ok() };
    let (mut tunnel, mut eyeball) = (None, None);
    while tunnel.is_none() || eyeball.is_none() {
        let line = lines.recv_timeout(WAIT).expect("edge start-up log");
        if line.contains("Edge listening for tunnel connections") {
            tunnel = addr_in(&line);
        } else if line.contains("Edge listening for eyeball HTTP requests") {
            eyeball = addr_in(&line);
        }
        log.push(line);
    }
    assert!(
        log.iter().any(|l| l.contains("Using poll driver")),
        "{log:?}"
    );
    let (tunnel, eyeball) = (tunnel.unwrap(), eyeball.unwrap());

    let t = TestTunnel {
        account: creds.account_tag.clone(),
        id: creds.tunnel_id,
        secret: creds.tunnel_secret.expose().to_vec(),
    };
    let cfg = PeerConfig {
        edge: tunnel,
        ca: state.join("ca.pem"),
        account: t.account.clone(),
        tunnel_id: t.id,
        secret: t.secret.clone(),
        conn_index: 0,
        client_id: uuid::Uuid::new_v4(),
        name: "cli-peer".into(),
        behavior: Behavior::Register,
    };
    let peer = Peer::start(cfg);
    peer.expect_registered();
    // The default edge.yml routes every host to the first tunnel.
    let mut c = Client::connect(eyeball);
    let r = c.get("anything.example", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello from cli-peer");

    // SIGTERM: clean exit, the connector sees its connection closed.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "edge did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "{code:?}");
    assert_eq!(peer.next_event(), PeerEvent::Closed);
    reader.join().unwrap();
    log.extend(lines.try_iter());
    let all = log.join("\n");
    assert!(all.contains("Registered tunnel connection"), "{all}");
    assert!(
        all.contains(&format!("tunnelID={}", creds.tunnel_id)),
        "{all}"
    );
    assert!(
        all.contains("Initiating shutdown due to signal terminated"),
        "{all}"
    );
    assert!(all.contains("Edge stopped"), "{all}");
    assert!(
        !all.contains(&token) && !all.contains(&from_file_secret_b64(&cred_path)),
        "secret in log"
    );
}

fn from_file_secret_b64(path: &std::path::Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["TunnelSecret"].as_str().unwrap().to_owned()
}
