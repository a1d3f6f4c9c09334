//! UDP sessions end to end through the built-in edge: the real edge with a `--udp-route`
//! (`EdgeOptions::udp_routes`), the real `ringflare` connector registered over QUIC, and a UDP
//! echo origin on loopback. Eyeball sockets send to the route; each source becomes a session
//! the edge opens through the connector (datagram v2: `registerUdpSession` RPC, the default;
//! datagram v3: `--features support_datagram_v3_2`, registration datagram), and the echo comes
//! back to the eyeball. Also: `warp-routing.maxActiveFlows` refusing the next session, and idle
//! sessions closing on both sides (then reopening).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Connector, TestTunnel, http_get};
use ringflare::config::Secret;
use ringflare::config::credentials::{Credentials, encode_token};
use ringflare::edge::{Edge, EdgeOptions, UdpRoute};

const WAIT: Duration = Duration::from_secs(30);
/// Payload sizes echoed per session: one byte to near the datagram limit of the first
/// (pre-PMTU-discovery) QUIC packets.
const SIZES: [usize; 4] = [1, 64, 512, 1100];

/// A UDP echo origin on a std thread (lives as long as the test process).
fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

fn start_edge(dir: &std::path::Path, t: &TestTunnel, dest: SocketAddr, idle: Duration) -> Edge {
    let mut opts = EdgeOptions::new(dir);
    opts.tunnel_listen = vec!["127.0.0.1:0".parse().unwrap()];
    opts.eyeball_listen = "127.0.0.1:0".parse().unwrap();
    opts.tunnels = vec![t.edge_tunnel(&["*"])];
    // Two workers: the route (worker 0) and the QUIC connection may live on different cores.
    opts.workers = 2;
    opts.no_pinning = true;
    opts.udp_routes = vec![UdpRoute {
        listen: "127.0.0.1:0".parse().unwrap(),
        dest,
        tunnel: Some(t.id),
    }];
    opts.udp_idle_timeout = idle;
    Edge::start(opts).unwrap()
}

fn connector(
    edge: &Edge,
    t: &TestTunnel,
    v3: bool,
    driver: &str,
    config: Option<&std::path::Path>,
) -> Connector {
    let token = encode_token(&Credentials {
        account_tag: t.account.clone(),
        tunnel_secret: Secret::new(t.secret.clone()),
        tunnel_id: t.id,
        endpoint: String::new(),
    });
    let flags: Vec<String> = ["--ha-connections", "1", "--protocol", "quic"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let run_flags: &[&str] = if v3 {
        &["--features", "support_datagram_v3_2"]
    } else {
        &[]
    };
    let c = Connector::spawn_env(
        edge.tunnel_addrs(),
        edge.ca_pem_path(),
        &token,
        config,
        &flags,
        run_flags,
        &[("RINGFLARE_IO_DRIVER", driver)],
    );
    assert!(edge.wait_registered(1, WAIT), "log:\n{}", c.log_text());
    c
}

/// An eyeball: a connected UDP socket toward the route.
fn eyeball(edge: &Edge) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(edge.udp_route_addrs()[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Sends `msg` until its echo comes back (UDP is best effort; a bounded number of tries).
fn echo(s: &UdpSocket, msg: &[u8]) -> bool {
    let mut buf = vec![0u8; 2048];
    for _ in 0..10 {
        s.send(msg).unwrap();
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            match s.recv(&mut buf) {
                Ok(n) if &buf[..n] == msg => return true,
                // An echo of an earlier try: keep reading.
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    false
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Polls `cond` every 20 ms up to `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn metric(c: &Connector, name: &str) -> Option<f64> {
    let addr = c.metrics_addr()?;
    let (_, body) = http_get(&addr, "/metrics");
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

fn sessions_echo(v3: bool, driver: &str) {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge(dir.path(), &t, udp_echo(), Duration::from_secs(60));
    let c = connector(&edge, &t, v3, driver, None);
    let eyeballs = [eyeball(&edge), eyeball(&edge)];
    for (i, s) in eyeballs.iter().enumerate() {
        for len in SIZES {
            let msg = pattern(len, i as u8);
            assert!(
                echo(s, &msg),
                "no echo of {len} bytes (eyeball {i}); stats {:?}; log:\n{}",
                edge.udp_stats(),
                c.log_text()
            );
        }
    }
    let stats = edge.udp_stats();
    assert_eq!(stats.opened, 2, "{stats:?}");
    assert_eq!(stats.active, 2, "{stats:?}");
    assert_eq!(stats.refused, 0, "{stats:?}");
    // Counted once the reply's send completed, which may be just after the eyeball read it.
    let replies = 2 * SIZES.len() as u64;
    assert!(
        eventually(WAIT, || edge.udp_stats().to_eyeball >= replies),
        "{:?}",
        edge.udp_stats()
    );
    if v3 {
        // v3 flows count per connection, as cloudflared 2026.8.2's quic/v3 vectors.
        assert_eq!(
            metric(&c, "cloudflared_udp_active_flows{conn_index=\"0\"}"),
            Some(2.0)
        );
        assert_eq!(
            metric(&c, "cloudflared_udp_total_flows{conn_index=\"0\"}"),
            Some(2.0)
        );
        assert_eq!(metric(&c, "cloudflared_udp_active_sessions"), Some(0.0));
    } else {
        // v2 sessions are what cloudflared's session gauge counts.
        assert_eq!(metric(&c, "cloudflared_udp_active_sessions"), Some(2.0));
        assert_eq!(
            metric(&c, "cloudflared_udp_total_flows{conn_index=\"0\"}"),
            None
        );
    }
}

#[test]
fn v2_sessions_echo_through_the_edge() {
    sessions_echo(false, "io_uring");
}

#[test]
fn v2_sessions_echo_through_the_edge_on_poll() {
    sessions_echo(false, "poll");
}

#[test]
fn v3_flows_echo_through_the_edge() {
    sessions_echo(true, "io_uring");
}

#[test]
fn v3_flows_echo_through_the_edge_on_poll() {
    sessions_echo(true, "poll");
}

fn max_active_flows_refuses(v3: bool) {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge(dir.path(), &t, udp_echo(), Duration::from_secs(60));
    let config = dir.path().join("connector.yml");
    std::fs::write(
        &config,
        "warp-routing:\n  maxActiveFlows: 1\ningress:\n  - service: http_status:404\n",
    )
    .unwrap();
    let c = connector(&edge, &t, v3, "io_uring", Some(&config));
    let first = eyeball(&edge);
    assert!(echo(&first, b"first"), "log:\n{}", c.log_text());
    let second = eyeball(&edge);
    second.send(b"second").unwrap();
    assert!(
        eventually(WAIT, || edge.udp_stats().refused == 1),
        "{:?}; log:\n{}",
        edge.udp_stats(),
        c.log_text()
    );
    let mut buf = [0u8; 64];
    assert!(second.recv(&mut buf).is_err(), "a refused session echoed");
    // The refused source is forgotten; the first session still works.
    assert!(eventually(WAIT, || edge.udp_stats().active == 1));
    assert!(echo(&first, b"first again"));
    let log = c.log_text();
    assert!(
        log.contains("Too many concurrent sessions being handled, rejecting udp proxy"),
        "{log}"
    );
}

#[test]
fn max_active_flows_refuses_the_next_v2_session() {
    max_active_flows_refuses(false);
}

#[test]
fn max_active_flows_refuses_the_next_v3_flow() {
    max_active_flows_refuses(true);
}

fn idle_sessions_close(v3: bool) {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge(dir.path(), &t, udp_echo(), Duration::from_secs(1));
    let c = connector(&edge, &t, v3, "io_uring", None);
    let s = eyeball(&edge);
    assert!(echo(&s, b"before idle"), "log:\n{}", c.log_text());
    // Both ends close it after 1 s without traffic: whichever is first, it is gone from both.
    assert!(
        eventually(WAIT, || edge.udp_stats().active == 0),
        "{:?}",
        edge.udp_stats()
    );
    let stats = edge.udp_stats();
    assert_eq!(stats.idle_closed + stats.connector_closed, 1, "{stats:?}");
    if !v3 {
        assert!(
            eventually(WAIT, || metric(&c, "cloudflared_udp_active_sessions")
                == Some(0.0)),
            "log:\n{}",
            c.log_text()
        );
    }
    // The same source opens a new session.
    assert!(echo(&s, b"after idle"), "log:\n{}", c.log_text());
    assert_eq!(edge.udp_stats().opened, 2);
}

#[test]
fn idle_v2_session_closes_then_reopens() {
    idle_sessions_close(false);
}

#[test]
fn idle_v3_flow_closes_then_reopens() {
    idle_sessions_close(true);
}
