//! The built-in edge end to end on loopback: a test connector registers, eyeball requests
//! travel over HTTP/1.1 → edge → HTTP/2 tunnel → test connector and back.

mod edge_support;

use std::io::Write;

use edge_support::*;
use ringflare::runtime::IoDriver;

fn registered_edge(
    driver: IoDriver,
) -> (tempfile::TempDir, ringflare::edge::Edge, TestTunnel, Peer) {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge(dir.path(), vec![t.edge_tunnel(&["*"])], 1, driver);
    let peer = Peer::start(PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p0"));
    peer.expect_registered();
    assert!(edge.wait_registered(1, WAIT));
    (dir, edge, t, peer)
}

fn get_round_trip(driver: IoDriver) {
    let (_dir, edge, t, _peer) = registered_edge(driver);
    let regs = edge.registered();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].tunnel_id, t.id);
    assert_eq!(regs[0].version, "test-peer");
    assert_eq!(regs[0].listener, edge.tunnel_addrs()[0]);

    let mut c = Client::connect(edge.eyeball_addr());
    let r = c.get("app.example.com", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello from p0");
    assert_eq!(r.header("x-peer"), Some("p0"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("cf-ray").is_some());
    // Keep-alive: a second request on the same connection.
    let r = c.get("app.example.com", "/headers?x=1");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.contains(":authority: app.example.com"), "{text}");
    assert!(text.contains(":path: /headers?x=1"), "{text}");
    assert!(text.contains("cf-connecting-ip: 127.0.0.1"), "{text}");
    assert!(text.contains("x-forwarded-for: 127.0.0.1"), "{text}");
    assert!(text.contains("x-forwarded-proto: http"), "{text}");
    assert!(text.contains("cf-visitor: {\"scheme\":\"http\"}"), "{text}");
    assert!(text.contains("cf-ray: "), "{text}");
    assert!(text.contains("user-agent: edge-test"), "{text}");
    assert!(!text.contains("\nhost:"), "{text}");
    assert_eq!(r.all("set-cookie"), vec!["a=1", "b=2"]);
    edge.shutdown();
}

#[test]
fn get_round_trip_on_poll() {
    get_round_trip(IoDriver::Poll);
}

#[test]
fn get_round_trip_on_auto_driver() {
    get_round_trip(IoDriver::Auto);
}

#[test]
fn eyeball_cannot_inject_control_headers() {
    let (_dir, edge, _t, _peer) = registered_edge(IoDriver::Poll);
    let mut c = Client::connect(edge.eyeball_addr());
    let req = "GET /headers HTTP/1.1\r\nHost: a\r\ncf-cloudflared-proxy-connection-upgrade: control-stream\r\nCf-Connecting-Ip: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    c.stream.write_all(req.as_bytes()).unwrap();
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(!text.contains("cf-cloudflared"), "{text}");
    assert!(!text.contains("6.6.6.6"), "{text}");
    assert!(
        text.contains("x-forwarded-for: 10.0.0.1, 127.0.0.1"),
        "{text}"
    );
}
