//! The built-in edge end to end on loopback: a test connector registers, eyeball requests
//! travel over HTTP/1.1 → edge → HTTP/2 tunnel → test connector and back.

mod common;

use std::io::Write;

use common::*;
use ringflare::edge::Edge;
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
    assert_eq!(r.all("server"), vec!["cloudflare"]);
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
    // The origin's Server header passes through alone.
    assert_eq!(r.all("server"), vec!["test-origin"]);
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

/// Sends `body` from a writer thread while this thread reads the response, so an echo can
/// stream both ways at once.
fn post_streaming(
    c: &mut Client,
    host: &str,
    path: &str,
    body: Vec<u8>,
    chunked: bool,
) -> Response {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n");
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    }
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(head.as_bytes()).unwrap();
        for piece in body.chunks(100_000) {
            if chunked {
                w.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .unwrap();
                w.write_all(piece).unwrap();
                w.write_all(b"\r\n").unwrap();
            } else {
                w.write_all(piece).unwrap();
            }
        }
        if chunked {
            w.write_all(b"0\r\n\r\n").unwrap();
        }
    });
    let r = c.read_response(false);
    writer.join().unwrap();
    r
}

#[test]
fn large_bodies_stream_both_ways() {
    let (_dir, edge, _t, _peer) = registered_edge(IoDriver::Poll);
    let mut c = Client::connect(edge.eyeball_addr());
    // 12 MiB up, echoed back as it arrives (no Content-Length: re-chunked to the eyeball).
    let body = pattern(12 << 20, 1);
    let r = post_streaming(&mut c, "a", "/echo", body.clone(), false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), body.len());
    assert_eq!(fnv(&r.body), fnv(&body));
    // Chunked upload, checksum computed by the origin.
    let body = pattern(5 << 20, 2);
    let r = post_streaming(&mut c, "a", "/hash", body.clone(), true);
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        format!("{} {:016x}", body.len(), fnv(&body))
    );
    // 16 MiB download with Content-Length, on the same keep-alive connection.
    let r = c.get("a", "/big?n=16777216");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("16777216"));
    assert_eq!(r.body.len(), 16 << 20);
    assert_eq!(
        r.header("x-sum").unwrap(),
        format!("{:016x}", fnv(&pattern(16 << 20, 7)))
    );
}

#[test]
fn chunked_response_keeps_trailers() {
    let (_dir, edge, _t, _peer) = registered_edge(IoDriver::Poll);
    let mut c = Client::connect(edge.eyeball_addr());
    let r = c.get("a", "/chunked");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, b"part0;part1;part2;part3;part4;");
    assert_eq!(
        r.trailers,
        vec![("x-trailer".to_owned(), "done".to_owned())]
    );
    // HEAD: head only, connection stays usable.
    c.stream
        .write_all(b"HEAD /big?n=10 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let r = c.read_response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("10"));
    let r = c.get("a", "/");
    assert_eq!(r.body, b"hello from p0");
}

#[test]
fn event_stream_arrives_event_by_event() {
    let (_dir, edge, _t, _peer) = registered_edge(IoDriver::Poll);
    let mut sse = Client::connect(edge.eyeball_addr());
    sse.stream
        .write_all(b"GET /sse HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let (status, headers) = sse.read_head();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "text/event-stream")
    );
    // The first event arrives while the origin still holds the second back.
    let first = sse.read_until(b"data: one\n\n");
    assert!(first.ends_with(b"data: one\n\n"));
    // Release the second event through another request.
    let mut other = Client::connect(edge.eyeball_addr());
    assert_eq!(other.get("a", "/sse-next").status, 200);
    sse.read_until(b"data: two\n\n");
    sse.read_until(b"0\r\n\r\n");
}

#[test]
fn websocket_upgrade_is_spliced() {
    let (_dir, edge, _t, _peer) = registered_edge(IoDriver::Poll);
    let mut c = Client::connect(edge.eyeball_addr());
    let req = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
               Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    c.stream.write_all(req.as_bytes()).unwrap();
    let (status, headers) = c.read_head();
    assert_eq!(status, 101);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(get("upgrade").as_deref(), Some("websocket"));
    // Raw frame bytes travel both ways untouched (a masked "hello" text frame, then more).
    let frame = [
        0x81,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    c.stream.write_all(&frame).unwrap();
    assert_eq!(c.read_exact_body(frame.len()), frame);
    let big = pattern(300_000, 9);
    let mut w = c.stream.try_clone().unwrap();
    let data = big.clone();
    let t = std::thread::spawn(move || w.write_all(&data).unwrap());
    assert_eq!(c.read_exact_body(big.len()), big);
    t.join().unwrap();
    // Eyeball closes its side: the edge ends the stream and closes.
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.is_closed());
}

#[test]
fn error_pages_for_missing_connector_unknown_host_and_origin_failure() {
    let dir = tempfile::tempdir().unwrap();
    let served = TestTunnel::new();
    let idle = TestTunnel::new();
    let edge = start_edge(
        dir.path(),
        vec![
            served.edge_tunnel(&["app.example.com", "*.apps.example.com"]),
            idle.edge_tunnel(&["idle.example.com"]),
        ],
        1,
        IoDriver::Poll,
    );
    let mut c = Client::connect(edge.eyeball_addr());
    // Tunnel known, no connector yet: Cloudflare's 530 / error 1033.
    let r = c.get("app.example.com", "/");
    assert_eq!(r.status, 530);
    assert!(String::from_utf8_lossy(&r.body).contains("1033"));
    let peer = Peer::start(PeerConfig::new(
        &edge,
        edge.tunnel_addrs()[0],
        &served,
        "p0",
    ));
    peer.expect_registered();
    assert!(edge.wait_registered(1, WAIT));
    let r = c.get("x.apps.example.com:8080", "/");
    assert_eq!(r.status, 200, "wildcard with port routes");
    let r = c.get("APP.example.com", "/");
    assert_eq!(r.status, 200, "host match is case-insensitive");
    let r = c.get("idle.example.com", "/");
    assert_eq!(r.status, 530);
    let r = c.get("nobody.example.org", "/");
    assert_eq!(r.status, 404);
    // The connector reports an origin failure: 502 page.
    let r = c.get("app.example.com", "/origin-down");
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("Bad gateway"));
    // Still keep-alive after error pages.
    assert_eq!(c.get("app.example.com", "/").status, 200);
    // Malformed request: 400 and close.
    c.stream
        .write_all(b"GET / HTTP/1.1\r\nHost a\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_head().0, 400);
}

#[test]
fn load_spreads_across_connections_and_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    // One edge worker: an eyeball prefers the connections on its own core, so with several
    // workers the spread is over that core's connections only.
    let mut opts = edge_options(dir.path(), vec![t.edge_tunnel(&["*"])], 2, IoDriver::Poll);
    opts.workers = 1;
    let edge = Edge::start(opts).expect("edge starts");
    // Replica A with two HA connections (two listeners), replica B with one.
    let mut peers = Vec::new();
    for (i, (addr, name)) in [
        (edge.tunnel_addrs()[0], "a0"),
        (edge.tunnel_addrs()[1], "a1"),
        (edge.tunnel_addrs()[0], "b0"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cfg = PeerConfig::new(&edge, addr, &t, name);
        cfg.conn_index = (i % 2) as u8;
        peers.push(Peer::start(cfg));
    }
    for p in &peers {
        p.expect_registered();
    }
    assert!(edge.wait_registered(3, WAIT));
    let mut seen = std::collections::HashMap::new();
    let mut c = Client::connect(edge.eyeball_addr());
    for _ in 0..30 {
        let r = c.get("a", "/");
        *seen
            .entry(r.header("x-peer").unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|n| *n >= 5), "{seen:?}");
}

#[test]
fn unregister_drains_in_flight_then_closes() {
    unregister_drains(Leave::Unregister);
}

#[test]
fn unregister_then_control_stream_end_still_drains() {
    unregister_drains(Leave::UnregisterAndClose);
}

#[test]
fn control_stream_end_without_unregister_drains() {
    unregister_drains(Leave::CloseControl);
}

#[derive(PartialEq)]
enum Leave {
    Unregister,
    UnregisterAndClose,
    CloseControl,
}

fn unregister_drains(how: Leave) {
    // One edge worker: both tunnel connections live on the core that accepts every eyeball, so
    // routing is round robin over the less loaded of the two and the overlapping slow requests
    // are bound to land on p0 too. With two workers, an eyeball prefers the connection on its
    // own core, and all four could land on p1's.
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let mut opts = edge_options(dir.path(), vec![t.edge_tunnel(&["*"])], 1, IoDriver::Poll);
    opts.workers = 1;
    let edge = ringflare::edge::Edge::start(opts).expect("edge starts");
    let peer = Peer::start(PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p0"));
    peer.expect_registered();
    assert!(edge.wait_registered(1, WAIT));
    let second = Peer::start(PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p1"));
    second.expect_registered();
    assert!(edge.wait_registered(2, WAIT));
    // Four slow requests, in flight on both connections.
    let addr = edge.eyeball_addr();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.get("a", "/slow?ms=700")
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    match how {
        Leave::Unregister => peer.unregister(),
        Leave::UnregisterAndClose => peer.unregister_and_close(),
        Leave::CloseControl => peer.close_control(),
    }
    if how != Leave::CloseControl {
        assert_eq!(peer.next_event(), PeerEvent::Unregistered);
    }
    assert!(edge.wait_registered_at_most(1, WAIT));
    // New work goes to the remaining connection only.
    let mut c = Client::connect(addr);
    for _ in 0..4 {
        assert_eq!(c.get("a", "/").header("x-peer"), Some("p1"));
    }
    // In-flight requests on the unregistered connection still complete.
    let peers: Vec<String> = slow
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"slow");
            r.header("x-peer").unwrap().to_owned()
        })
        .collect();
    assert!(peers.iter().any(|p| p == "p0"), "{peers:?}");
    // Then the edge closes the drained connection.
    assert_eq!(peer.next_event(), PeerEvent::Closed);
    assert_eq!(edge.registered().len(), 1);
}

#[test]
fn https_eyeball_with_a_certificate_from_the_edge_ca() {
    use std::io::Read;
    use std::sync::Arc;

    use rustls_pki_types::{CertificateDer, pem::PemObject};

    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let mut opts = edge_options(
        dir.path(),
        vec![t.edge_tunnel(&["app.example.com"])],
        1,
        IoDriver::Auto,
    );
    opts.eyeball_tls_listen = Some("127.0.0.1:0".parse().unwrap());
    let edge = ringflare::edge::Edge::start(opts).unwrap();
    let peer = Peer::start(PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p0"));
    peer.expect_registered();

    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(edge.ca_pem_path())
        .unwrap()
        .map(Result::unwrap);
    roots.add_parsable_certificates(certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = "app.example.com".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(edge.eyeball_tls_addr().unwrap()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut client = Client::over(rustls::StreamOwned::new(conn, sock));

    // Bodies both ways on the one keep-alive TLS connection: an echo (the response streams
    // back while the request body is still going up), an upload, a download.
    let up = pattern(128 * 1024, 3);
    let echo = client.post("app.example.com", "/echo", &up);
    assert_eq!(echo.status, 200);
    assert!(
        echo.body == up,
        "echo differs: {} bytes back",
        echo.body.len()
    );

    let up = pattern(3 << 20, 5);
    let hashed = client.post("app.example.com", "/hash", &up);
    assert_eq!(
        String::from_utf8_lossy(&hashed.body),
        format!("{} {:016x}", up.len(), fnv(&up))
    );

    let down = client.get("app.example.com", "/big?n=3000000");
    assert_eq!(down.status, 200);
    assert_eq!(down.body.len(), 3_000_000);
    assert_eq!(
        down.header("x-sum"),
        Some(format!("{:016x}", fnv(&down.body)).as_str())
    );

    client
        .stream
        .write_all(b"GET /headers HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = client.stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("x-forwarded-proto: https"), "{text}");
    assert!(
        text.contains("cf-visitor: {\"scheme\":\"https\"}"),
        "{text}"
    );
    assert!(text.contains("connection: close"), "{text}");
}

#[test]
fn expect_100_continue_is_answered_by_the_edge() {
    let (_dir, edge, _t, _peer) = registered_edge(IoDriver::Poll);
    let mut c = Client::connect(edge.eyeball_addr());
    let body = pattern(3 << 20, 4);
    let head = format!(
        "POST /hash HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    c.stream.write_all(head.as_bytes()).unwrap();
    // The interim response comes before any body byte is sent.
    let (status, _) = c.read_head();
    assert_eq!(status, 100);
    c.stream.write_all(&body).unwrap();
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        format!("{} {:016x}", body.len(), fnv(&body))
    );
    // The connector never sees Expect.
    c.stream
        .write_all(b"POST /headers HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_head().0, 100);
    c.stream.write_all(b"hello").unwrap();
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains(":method: POST"), "{text}");
    assert!(!text.contains("expect"), "{text}");
}

#[test]
fn response_timeout_starts_after_the_request_body() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let mut opts = edge_options(dir.path(), vec![t.edge_tunnel(&["*"])], 1, IoDriver::Poll);
    opts.response_timeout = std::time::Duration::from_millis(300);
    let edge = ringflare::edge::Edge::start(opts).unwrap();
    let peer = Peer::start(PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p0"));
    peer.expect_registered();
    let mut c = Client::connect(edge.eyeball_addr());
    // A slow upload (longer than the response timeout) is not a timeout.
    let body = pattern(50_000, 5);
    let head = format!(
        "POST /hash HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.stream.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(10_000) {
        std::thread::sleep(std::time::Duration::from_millis(150));
        c.stream.write_all(piece).unwrap();
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        format!("{} {:016x}", body.len(), fnv(&body))
    );
    // An origin slower than the timeout after the request was sent: 524.
    let r = c.get("a", "/slow?ms=2000");
    assert_eq!(r.status, 524);
}

#[test]
fn malformed_connector_responses_never_reach_the_eyeball() {
    let (_dir, edge, _t, _peer) = registered_edge(IoDriver::Poll);
    let mut c = Client::connect(edge.eyeball_addr());
    // Undecodable serialized headers: 502 page.
    let r = c.get("a", "/bad-serialized");
    assert_eq!(r.status, 502);
    // A header value that would split the response: 502 page, nothing injected.
    let mut c = Client::connect(edge.eyeball_addr());
    let r = c.get("a", "/crlf-header");
    assert_eq!(r.status, 502);
    assert!(r.header("set-cookie").is_none());
    // Reset mid-body: the eyeball connection closes before the announced length.
    let mut c = Client::connect(edge.eyeball_addr());
    c.stream
        .write_all(b"GET /truncate HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let (status, _) = c.read_head();
    assert_eq!(status, 200);
    let mut got = 0;
    let mut buf = [0u8; 4096];
    loop {
        use std::io::Read;
        match c.stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 100_000, "{got}");
    // The edge and the connection are fine afterwards.
    let mut c = Client::connect(edge.eyeball_addr());
    assert_eq!(c.get("a", "/").status, 200);
}

/// Issue 10 item 7: two `Host` fields are a 400 (RFC 9112 §3.2), before anything is sent to
/// the tunnel; the edge keeps serving.
#[test]
fn two_host_headers_are_a_bad_request() {
    let (_dir, edge, _t, _peer) = registered_edge(IoDriver::Poll);
    let mut c = Client::connect(edge.eyeball_addr());
    c.stream
        .write_all(b"GET /headers HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).status, 400);
    let r = Client::connect(edge.eyeball_addr()).get("a.test", "/headers");
    assert_eq!(r.status, 200);
}

/// Issue 10 item 7: a visitor's malformed chunked body is the visitor's error (400), not a
/// tunnel failure (502 "1033"); the edge keeps serving.
#[test]
fn invalid_chunked_body_is_a_bad_request() {
    for driver in [IoDriver::Poll, IoDriver::Auto] {
        let (_dir, edge, _t, _peer) = registered_edge(driver);
        let mut c = Client::connect(edge.eyeball_addr());
        c.stream
            .write_all(
                b"POST /hash HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            )
            .unwrap();
        let r = c.read_response(false);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        let r = Client::connect(edge.eyeball_addr()).get("a.test", "/headers");
        assert_eq!(r.status, 200);
    }
}
