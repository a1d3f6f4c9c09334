//! `ringflare bench` against `ringflare bench serve`, both as real processes on loopback:
//! every mode's JSON report must account for exactly the traffic that was asked for, and the
//! origin must answer uploads with the right byte count and checksum.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringflare");

/// The origin child; killed on drop so a failing test leaves nothing running.
struct Origin {
    child: Child,
    http: String,
    tcp: String,
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn origin() -> Origin {
    let mut child = Command::new(BIN)
        .args([
            "bench",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
        ])
        .args(["--threads", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn bench serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            .to_owned()
    };
    Origin {
        http: field("http="),
        tcp: field("tcp="),
        child,
    }
}

fn bench(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["bench", "--json", "--quiet", "--timeout", "20s"])
        .args(args)
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench --json prints JSON")
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

fn assert_latency_sane(v: &Value) {
    let l = |k: &str| v["latency"][k].as_f64().unwrap();
    assert!(l("min_us") > 0.0, "{v}");
    assert!(
        l("p50_us") <= l("p99_us") && l("p99_us") <= l("p999_us") && l("p999_us") <= l("max_us")
    );
    assert!(v["requests_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn closed_loop_http_counts_every_byte() {
    let o = origin();
    let v = bench(&[
        "-c",
        "4",
        "-n",
        "400",
        &format!("http://{}/bytes/1024", o.http),
    ]);
    assert_eq!(u(&v, "/requests"), 400);
    assert_eq!(u(&v, "/status/2xx"), 400);
    assert_eq!(u(&v, "/rx_bytes"), 400 * 1024);
    assert_eq!(u(&v, "/error_total"), 0);
    assert_eq!(
        u(&v, "/connections_opened"),
        4,
        "keep-alive reuses connections"
    );
    assert_latency_sane(&v);
    let v = bench(&["-c", "2", "-n", "10", &format!("http://{}/nope", o.http)]);
    assert_eq!(u(&v, "/status/4xx"), 10);
    assert_eq!(u(&v, "/errors/status_4xx"), 10);
}

#[test]
fn open_loop_uploads_and_large_downloads() {
    let o = origin();
    let v = bench(&[
        "--rate",
        "2000",
        "-c",
        "4",
        "-n",
        "200",
        &format!("http://{}/bytes/100", o.http),
    ]);
    assert_eq!(u(&v, "/requests"), 200);
    assert_eq!(v["rate"].as_f64(), Some(2000.0));
    let body = 3 * 1024 * 1024 + 7;
    let v = bench(&[
        "-m",
        "POST",
        "--body-size",
        &body.to_string(),
        "-c",
        "2",
        "-n",
        "4",
        &format!("http://{}/upload", o.http),
    ]);
    assert_eq!(u(&v, "/status/2xx"), 4);
    assert_eq!(u(&v, "/tx_bytes"), 4 * body);
    let big = 64 * 1024 * 1024;
    let v = bench(&[
        "-c",
        "2",
        "-n",
        "2",
        &format!("http://{}/bytes/{big}", o.http),
    ]);
    assert_eq!(u(&v, "/rx_bytes"), 2 * big);
}

#[test]
fn websocket_echo_idle_and_tcp_modes() {
    let o = origin();
    let v = bench(&[
        "-c",
        "4",
        "-n",
        "300",
        "--message-size",
        "200",
        &format!("ws://{}/ws", o.http),
    ]);
    assert_eq!(u(&v, "/requests"), 300);
    assert_eq!(u(&v, "/rx_bytes"), 300 * 200);
    assert_eq!(u(&v, "/error_total"), 0);
    let v = bench(&[
        "--mode",
        "ws-idle",
        "-c",
        "200",
        "-d",
        "1s",
        &format!("ws://{}/ws", o.http),
    ]);
    assert_eq!(u(&v, "/connections_opened"), 200);
    assert_eq!(u(&v, "/status/1xx"), 200);
    assert_eq!(
        u(&v, "/requests"),
        200,
        "requests counts WebSockets held to the end"
    );
    assert_eq!(
        u(&v, "/error_total"),
        0,
        "every idle websocket still echoes at the end"
    );
    let v = bench(&[
        "-c",
        "2",
        "-n",
        "6",
        "--message-size",
        "5000000",
        &format!("tcp://{}", o.tcp),
    ]);
    assert_eq!(u(&v, "/rx_bytes"), 6 * 5_000_000);
    assert_eq!(u(&v, "/error_total"), 0);
}

#[test]
fn upload_checksum_bad_requests_and_dead_targets() {
    let o = origin();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let mut s = TcpStream::connect(&o.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    );
    // Tiny writes so the origin sees partial heads and must keep what it already buffered.
    for piece in head.as_bytes().chunks(3) {
        s.write_all(piece).unwrap();
    }
    s.write_all(&body).unwrap();
    s.write_all(b"\r\n0\r\n\r\nGARBAGE\r\n\r\n").unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.contains(&format!("{{\"bytes\":{},\"sum\":{sum}}}", body.len())),
        "{resp}"
    );
    assert!(
        resp.contains("400 Bad Request"),
        "garbage after a request gets a 400: {resp}"
    );
    drop(o);
    // Nothing listens any more: every attempt is a connect error, and the run still ends.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let v = bench(&["-c", "2", "-n", "6", &format!("http://{dead}/")]);
    assert_eq!(u(&v, "/requests"), 0);
    assert_eq!(u(&v, "/errors/connect"), 6);
}

#[test]
fn plot_and_usage_errors() {
    let o = origin();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("lat.svg");
    let out = Command::new(BIN)
        .args(["bench", "-q", "-c", "2", "-n", "50", "--plot"])
        .arg(&svg)
        .arg(format!("http://{}/bytes/1", o.http))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("50 requests") && text.contains("p99.9"),
        "{text}"
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    let out = Command::new(BIN)
        .args(["bench", "http://127.0.0.1:1/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration or --requests"));
    let out = Command::new(BIN)
        .args(["bench", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--rate"));
}

/// The CI smoke of the end-to-end benchmark: the origin leg and the built-in edge + ringflare
/// connector leg must move real traffic with no errors, and the JSON must hold one result per
/// workload per leg with the connector's CPU time and peak RSS.
#[test]
fn e2e_quick_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e2e.json");
    let out = Command::new(BIN)
        // http2 only: ringflare's connector does not serve QUIC data streams yet, so its
        // QUIC leg would wait out the readiness timeout and be skipped.
        .args(["bench", "e2e", "--quick", "--protocol", "http2", "--out"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("leg ") && stdout.contains("ratio") && stdout.contains("stall ms"),
        "{stdout}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let legs = v["legs"].as_array().unwrap();
    assert_eq!(legs[0]["name"], "origin");
    assert_eq!(legs[1]["name"], "relays");
    assert!(legs[1]["skipped"].is_null(), "{}", legs[1]);
    // Under the table: the latency each leg adds at 1k_c1, the relays' floor among them.
    let added = stdout
        .lines()
        .skip_while(|l| !l.starts_with("latency added at 1k_c1"))
        .collect::<Vec<_>>();
    assert!(
        added.iter().any(|l| l.trim_start().starts_with("relays ")),
        "{stdout}"
    );
    assert!(
        added
            .iter()
            .any(|l| l.trim_start().starts_with("ringflare/http2 ")),
        "{stdout}"
    );
    let mut ran = 0;
    for leg in legs {
        if leg["skipped"].is_string() {
            continue;
        }
        ran += 1;
        let results = leg["results"].as_array().unwrap();
        // The relays leg (the machine's floor) runs the three 1 KiB workloads only.
        let want = if leg["name"] == "relays" { 3 } else { 7 };
        assert_eq!(results.len(), want, "{leg}");
        for r in results {
            let rep = &r["report"];
            assert_eq!(
                u(rep, "/error_total"),
                0,
                "{} {}: {r}",
                leg["name"],
                r["workload"]
            );
            assert!(u(rep, "/requests") > 0, "{r}");
            if leg["name"] != "origin" {
                assert!(r["connector_cpu_s"].as_f64().is_some(), "{r}");
                assert!(r["edge_cpu_s"].as_f64().is_some(), "{r}");
                assert!(u(r, "/connector_peak_rss_kib") > 0, "{r}");
            }
        }
        // The stall figure (issue 12): every transfer workload measures the longest pause
        // between bytes of any one transfer; the 1 KiB and WebSocket rows show none.
        for r in results {
            let stall = r["report"]["max_stall_ms"].as_f64();
            let transfer = r["metric"] == "mb_per_s";
            assert_eq!(stall.is_some(), r["report"]["mode"] == "http", "{r}");
            if transfer {
                assert!(stall.is_some_and(|ms| ms > 0.0), "{r}");
                let row = stdout
                    .lines()
                    .find(|l| {
                        l.starts_with(leg["name"].as_str().unwrap())
                            && l.contains(r["workload"].as_str().unwrap())
                    })
                    .unwrap_or_else(|| panic!("no row for {r} in {stdout}"));
                let shown = row.split_whitespace().last().unwrap();
                assert!(shown.parse::<f64>().is_ok(), "stall ms column empty: {row}");
            }
        }
        if leg["name"] != "relays" {
            let idle = results.iter().find(|r| r["workload"] == "ws_idle").unwrap();
            assert_eq!(
                u(idle, "/report/requests"),
                200,
                "every idle WebSocket held"
            );
        }
    }
    // Origin and the edge + ringflare connector leg both ran (1k_c512 through the edge is
    // also the regression test for the cross-core wake deadlock).
    let tunnel = &legs[2];
    assert_eq!(tunnel["name"], "ringflare/http2");
    assert!(tunnel["skipped"].is_null(), "{}", tunnel["skipped"]);
    assert_eq!(ran, 3);
    // Four HA connections by default, one per edge address 127.0.0.1-4.
    assert_eq!(tunnel["connections_wanted"], 4, "{}", tunnel);
    assert_eq!(tunnel["connections"], 4, "{}", tunnel);
    assert!(
        stdout.contains("ringflare/http2: 4 of 4 HA connections registered"),
        "{stdout}"
    );
    for r in tunnel["results"].as_array().unwrap() {
        assert!(r["note"].is_null(), "the tunnel had to be restarted: {r}");
    }
}
