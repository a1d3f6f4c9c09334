//! The connector's lifecycle against an in-test edge: graceful SIGTERM with a request in
//! flight, reconnecting with backoff after the edge goes away, misbehaving edges (garbage
//! instead of HTTP/2, a second control stream, a reset control stream), registration refusals
//! (fatal vs retried), hot reload under load, and the metrics server's endpoints.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use ringflare::runtime::DriverKind;
use ringflare::runtime::h2stream::{H2Reader, H2Writer};

fn config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(&path, body).unwrap();
    path
}

/// An origin that holds each response until `release` is set; `arrived` says a request came.
fn gated_origin(arrived: Arc<AtomicBool>, release: Arc<AtomicBool>) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (arrived, release) = (arrived.clone(), release.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) <= 2 {
                        break;
                    }
                }
                arrived.store(true, Ordering::SeqCst);
                // Bounded wait: the test releases it or gives up.
                for _ in 0..3000 {
                    if release.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
            });
        }
    });
    addr
}

#[test]
fn sigterm_unregisters_and_lets_the_in_flight_request_finish() {
    let arrived = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let origin = gated_origin(arrived.clone(), release.clone());
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{origin}\n"),
        );
        let mut connector = Connector::start(&edge, Some(&cfg), &["--grace-period", "20s"], &[]);
        let conn = edge.accept().await;
        let mut slow = conn.handle();
        let request =
            compio::runtime::spawn(async move { slow.request(get("slow.test", "/"), None).await });
        assert!(eventually(TIMEOUT, || arrived.load(Ordering::SeqCst)).await);
        connector.signal("TERM");
        assert!(
            eventually(TIMEOUT, || conn.seen.borrow().unregistered).await,
            "unregisterConnection was not called"
        );
        release.store(true, Ordering::SeqCst);
        let reply = request.await.unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"done"[..]));
        assert_eq!(connector.exited(Duration::from_secs(30)).await, Some(0));
        let log = connector.log_text();
        assert!(
            log.contains("Initiating graceful shutdown due to signal terminated"),
            "{log}"
        );
        assert!(
            log.contains("Unregistered tunnel connection connIndex=0"),
            "{log}"
        );
        // cloudflared's shutdown sequence, in its order.
        let mut at = 0;
        for line in [
            "Initiating graceful shutdown due to signal terminated",
            "Unregistered tunnel connection",
            "no more connections active and exiting",
            "Tunnel server stopped",
            "Metrics server stopped",
        ] {
            let found = log[at..]
                .find(line)
                .unwrap_or_else(|| panic!("{line:?} missing or out of order:\n{log}"));
            at += found + line.len();
        }
    });
}

#[test]
fn reconnects_with_backoff_after_the_edge_restarts() {
    let origin = echo_origin();
    block_on(DriverKind::Poll, async {
        let mut edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{}\n", origin.addr),
        );
        let connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let mut conn = edge.accept().await;
        assert_eq!(conn.request(get("a.test", "/"), None).await.status, 200);
        conn.kill();
        edge.restart(Duration::from_millis(1500)).await;
        let mut again = edge.accept().await;
        assert_eq!(again.request(get("a.test", "/"), None).await.status, 200);
        let attempts = again
            .seen
            .borrow()
            .params
            .as_ref()
            .unwrap()
            .options
            .num_previous_attempts;
        assert!(
            attempts >= 1,
            "numPreviousAttempts should count the failed tries"
        );
        let log = connector.log_when(Duration::from_secs(10), |log| {
            log.matches("Registered tunnel connection").count() >= 2
        });
        assert!(
            log.contains("Retrying connection in up to 2s connIndex=0"),
            "{log}"
        );
        assert_eq!(
            log.matches("Registered tunnel connection").count(),
            2,
            "{log}"
        );
    });
}

#[test]
fn misbehaving_edge_ends_the_connection_and_the_connector_reconnects() {
    let origin = echo_origin();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{}\n", origin.addr),
        );
        let mut connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        // 1. Garbage instead of the HTTP/2 preface.
        let mut raw = edge.accept_raw().await;
        let _ =
            futures_util::AsyncWriteExt::write_all(&mut raw, b"GARBAGE GARBAGE GARBAGE\r\n\r\n")
                .await;
        let _ = futures_util::AsyncWriteExt::flush(&mut raw).await;
        // 2. Then a proper connection on which the edge opens a second control stream.
        let mut conn = edge.accept().await;
        let mut client = conn.client.clone().ready().await.unwrap();
        let second = http::Request::get("https://h2.cftunnel.com/")
            .header("cf-cloudflared-proxy-connection-upgrade", "control-stream")
            .body(())
            .unwrap();
        let (resp, _send) = client.send_request(second, false).unwrap();
        let refused = resp.await.expect_err("a second control stream is refused");
        assert_eq!(refused.reason(), Some(h2::Reason::REFUSED_STREAM));
        // Unknown upgrade values are plain HTTP (spec §3.2) and still work.
        let odd = http::Request::get("https://odd.test/")
            .header("cf-cloudflared-proxy-connection-upgrade", "bogus")
            .body(())
            .unwrap();
        assert_eq!(conn.request(odd, None).await.status, 200);
        drop(raw);
        conn.kill();
        // 3. A connection whose control stream the edge resets before any RPC.
        let mut reset = edge.open_control().await;
        reset.control.send_reset(h2::Reason::CANCEL);
        // 4. A fresh connection still registers and serves: the connector gave up the reset
        // connection and dialled again.
        let mut third = edge.accept().await;
        assert_eq!(third.request(get("a.test", "/"), None).await.status, 200);
        assert!(connector.child.try_wait().unwrap().is_none(), "no crash");
        let log = connector.log_text();
        assert!(log.contains("Connection terminated connIndex=0"), "{log}");
        assert!(log.contains("second control stream"), "{log}");
        assert!(
            log.contains("Connection terminated connIndex=0 error=\"control stream failed"),
            "the reset control stream ends its connection with a log line: {log}"
        );
        drop(reset);
        assert!(!log.contains("panicked"), "{log}");
        connector.signal("KILL");
    });
}

#[test]
fn permanent_registration_error_on_first_connection_is_fatal() {
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        *edge.refuse.borrow_mut() = Some(("tunnel is deleted".into(), false));
        let mut connector = Connector::start(&edge, None, &[], &["--url", "http://127.0.0.1:9"]);
        let open = edge.open_control().await;
        let rpc = ringflare::proto::serve_registration(
            Refuser,
            H2Reader::new(open.response.into_body()),
            H2Writer::new(open.control),
        );
        let _rpc = compio::runtime::spawn(async move {
            let _ = rpc.await;
        });
        assert_eq!(connector.exited(Duration::from_secs(30)).await, Some(1));
        let log = connector.log_text();
        assert!(
            log.contains("Register tunnel error from server side"),
            "{log}"
        );
        assert!(log.contains("tunnel is deleted"), "{log}");
        drop(open.task);
    });
}

struct Refuser;

impl ringflare::proto::RegistrationServer for Refuser {
    async fn register_connection(
        &self,
        _: ringflare::proto::RegisterConnectionParams,
    ) -> Result<ringflare::proto::ConnectionResponse, ringflare::proto::RpcError> {
        Ok(ringflare::proto::ConnectionResponse::Error(
            ringflare::proto::ConnectionError {
                cause: "tunnel is deleted".into(),
                retry_after: 0,
                should_retry: false,
            },
        ))
    }
    async fn unregister_connection(&self) -> Result<(), ringflare::proto::RpcError> {
        Ok(())
    }
    async fn update_local_configuration(
        &self,
        _: Vec<u8>,
    ) -> Result<(), ringflare::proto::RpcError> {
        Ok(())
    }
}

#[test]
fn hundred_reloads_under_load_fail_no_request_and_metrics_report() {
    let origin = echo_origin();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let v1 = format!(
            "ingress:\n  - hostname: a.test\n    service: http://{}\n  - service: http_status:404\n",
            origin.addr
        );
        let v2 = format!(
            "ingress:\n  - hostname: b.test\n    service: http_status:418\n  - hostname: a.test\n    service: http://{}\n  - service: http_status:404\n",
            origin.addr
        );
        let cfg = config(edge.dir.path(), &v1);
        let connector = Connector::start(&edge, Some(&cfg), &["--config-poll-interval", "0s"], &[]);
        let mut conn = edge.accept().await;
        let mut load = conn.handle();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let load_task = compio::runtime::spawn(async move {
            let mut n = 0u32;
            while !stop2.load(Ordering::SeqCst) {
                let reply = load.request(get("a.test", "/"), None).await;
                assert_eq!(reply.status, 200, "request {n} failed during reloads");
                n += 1;
            }
            n
        });
        for i in 0..100 {
            let text = if i % 2 == 0 { &v2 } else { &v1 };
            std::fs::write(&cfg, text).unwrap();
            connector.signal("HUP");
            compio::time::sleep(Duration::from_millis(15)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let served = load_task.await.unwrap();
        assert!(served > 0);
        // The last write was v1; make the final state v2 and check it takes effect.
        std::fs::write(&cfg, &v2).unwrap();
        connector.signal("HUP");
        let mut status = 0;
        for _ in 0..200 {
            status = conn.request(get("b.test", "/"), None).await.status;
            if status == 418 {
                break;
            }
            compio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status, 418);
        let metrics = connector.metrics_addr().expect("metrics line");
        let (line, body) = http_get(&metrics, "/ready");
        assert!(line.contains("200"), "{line}");
        assert!(
            body.starts_with("{\"status\":200,\"readyConnections\":1,\"connectorId\":\""),
            "{body}"
        );
        let (_, body) = http_get(&metrics, "/metrics");
        assert!(
            body.contains("cloudflared_tunnel_ha_connections 1"),
            "{body}"
        );
        assert!(
            body.contains("cloudflared_tunnel_response_by_code{status_code=\"418\"}"),
            "{body}"
        );
        // cloudflared keys locations by connection index, not the edge's connection UUID.
        assert!(
            body.contains(
                "cloudflared_tunnel_server_locations{connection_id=\"0\",edge_location=\""
            ),
            "{body}"
        );
        // No registration failed: cloudflared shows no register_fail family at all.
        assert!(!body.contains("tunnel_register_fail"), "{body}");
        for family in [
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_max_fds ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "process_virtual_memory_bytes ",
            "process_network_receive_bytes_total ",
            "cloudflared_orchestration_config_version ",
        ] {
            assert!(body.contains(&format!("\n{family}")), "{family}: {body}");
        }
        assert!(
            body.contains("cloudflared_tunnel_total_requests "),
            "{body}"
        );
        let (_, body) = http_get(&metrics, "/healthcheck");
        assert_eq!(body, "OK\n");
        // cloudflared's diagnostic endpoints (what `cloudflared tunnel diag` collects).
        let (line, body) = http_get(&metrics, "/diag/tunnel");
        assert!(line.contains("200"), "{line}");
        assert!(body.starts_with("{\"tunnelID\":\""), "{body}");
        assert!(
            body.contains("\"connections\":[{\"isConnected\":true,\"edgeAddress\":\"127.0.0.1\"}]"),
            "{body}"
        );
        let (line, body) = http_get(&metrics, "/diag/configuration");
        assert!(line.contains("200"), "{line}");
        assert!(body.contains("\"ha-connections\":\"1\""), "{body}");
        assert!(body.contains("\"uid\":\""), "{body}");
        assert!(!body.contains("token"), "no secrets: {body}");
        assert!(connector.log_text().contains("Updated ingress rules"));
    });
}
