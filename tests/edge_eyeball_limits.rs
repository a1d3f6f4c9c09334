//! Issue 10 item 6 on the built-in edge's eyeball side: slow or idle visitors are closed at the
//! head timeout and never stop the edge serving others, and each eyeball listener caps its open
//! connections, refusing more cleanly and taking new ones again when old ones close.
//! (Memory per connection is measured in benchmarks, not here.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use ringflare::edge::Edge;
use ringflare::runtime::IoDriver;

fn edge_with(
    driver: IoDriver,
    head_timeout: Duration,
    cap: usize,
) -> (tempfile::TempDir, Edge, TestTunnel, Peer) {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let mut opts = edge_options(dir.path(), vec![t.edge_tunnel(&["*"])], 1, driver);
    opts.eyeball_head_timeout = head_timeout;
    opts.max_eyeball_connections = cap;
    let edge = Edge::start(opts).expect("edge starts");
    let peer = Peer::start(PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p0"));
    peer.expect_registered();
    assert!(edge.wait_registered(1, WAIT));
    (dir, edge, t, peer)
}

/// True once the edge closed `s` (EOF or reset); `s` is non-blocking.
fn closed_by_edge(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

fn slowloris(driver: IoDriver) {
    const N: usize = 1000;
    let head_timeout = Duration::from_secs(2);
    let (_dir, edge, _t, _peer) = edge_with(driver, head_timeout, 16_384);
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..N)
        .map(|_| {
            let mut s = TcpStream::connect(edge.eyeball_addr()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n")
                .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Trickle one header byte to each, as slowloris does, while normal visitors are served.
    let mut open = vec![true; N];
    let end = Instant::now() + WAIT;
    while open.iter().any(|o| *o) && Instant::now() < end {
        for (s, o) in slow.iter_mut().zip(open.iter_mut()) {
            if *o && (s.write_all(b"X").is_err() || closed_by_edge(s)) {
                *o = false;
            }
        }
        let r = Client::connect(edge.eyeball_addr()).get("app.example.com", "/");
        assert_eq!(
            r.status, 200,
            "a normal visitor is served beside the slow ones"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_open = open.iter().filter(|o| **o).count();
    assert_eq!(
        still_open, 0,
        "slow heads must be closed at the head timeout"
    );
    assert!(
        started.elapsed() >= head_timeout,
        "closed before the head timeout: the test measured nothing"
    );
    let r = Client::connect(edge.eyeball_addr()).get("app.example.com", "/");
    assert_eq!(r.status, 200);
    drop(slow);
    edge.shutdown();
}

#[test]
fn slowloris_heads_are_closed_at_the_head_timeout_poll() {
    slowloris(IoDriver::Poll);
}

#[test]
fn slowloris_heads_are_closed_at_the_head_timeout_auto() {
    slowloris(IoDriver::Auto);
}

/// A connection that sends nothing at all is closed at the head timeout too.
#[test]
fn a_silent_connection_is_closed_at_the_head_timeout() {
    let (_dir, edge, _t, _peer) = edge_with(IoDriver::Poll, Duration::from_secs(1), 16_384);
    let mut s = TcpStream::connect(edge.eyeball_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the edge closes without an answer");
    edge.shutdown();
}

fn connection_cap(driver: IoDriver) {
    const CAP: usize = 3;
    let (_dir, edge, _t, _peer) = edge_with(driver, Duration::from_secs(30), CAP);
    // CAP keep-alive visitors, each served once and then idle on its connection.
    let mut held: Vec<Client> = (0..CAP)
        .map(|_| {
            let mut c = Client::connect(edge.eyeball_addr());
            assert_eq!(c.get("app.example.com", "/").status, 200);
            c
        })
        .collect();
    // One more is refused cleanly, with a 503 and a close.
    let mut extra = TcpStream::connect(edge.eyeball_addr()).unwrap();
    extra.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = Vec::new();
    let _ = extra.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.starts_with("HTTP/1.1 503 "),
        "over the cap: expected a 503, got {text:?}"
    );
    // The held ones keep working.
    assert_eq!(held[0].get("app.example.com", "/").status, 200);
    // Closing one gives its slot back.
    drop(held.pop());
    let end = Instant::now() + WAIT;
    let status = loop {
        let mut s = TcpStream::connect(edge.eyeball_addr()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ =
            s.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n");
        let mut text = Vec::new();
        let _ = s.read_to_end(&mut text);
        let status = String::from_utf8_lossy(&text)
            .chars()
            .skip(9)
            .take(3)
            .collect::<String>();
        if status != "503" || Instant::now() > end {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, "200", "a closed connection's slot is reused");
    drop(held);
    edge.shutdown();
}

#[test]
fn eyeball_connections_over_the_cap_are_refused_poll() {
    connection_cap(IoDriver::Poll);
}

#[test]
fn eyeball_connections_over_the_cap_are_refused_auto() {
    connection_cap(IoDriver::Auto);
}
