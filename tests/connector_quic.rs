//! `--protocol quic` on loopback: the `ringflare` connector binary registers with the built-in
//! edge over QUIC (UDP on the tunnel listen address), on both io drivers; a bad secret is
//! refused over QUIC and the connector never falls back to http2; `--post-quantum` registers
//! with X25519MLKEM768; SIGTERM unregisters.

mod connector_support;
#[path = "edge_support/mod.rs"]
mod edge_support;

use std::net::SocketAddr;
use std::time::Duration;

use connector_support::Connector;
use edge_support::TestTunnel;
use ringflare::config::Secret;
use ringflare::config::credentials::{Credentials, encode_token};
use ringflare::edge::{Edge, EdgeOptions};

const WAIT: Duration = Duration::from_secs(30);

fn start_edge(dir: &std::path::Path, t: &TestTunnel) -> Edge {
    start_edge_pq(dir, t, true)
}

fn start_edge_pq(dir: &std::path::Path, t: &TestTunnel, post_quantum: bool) -> Edge {
    let mut opts = EdgeOptions::new(dir);
    opts.tunnel_listen = vec!["127.0.0.1:0".parse().unwrap()];
    opts.eyeball_listen = "127.0.0.1:0".parse().unwrap();
    opts.tunnels = vec![t.edge_tunnel(&["*"])];
    opts.workers = 1;
    opts.no_pinning = true;
    opts.post_quantum = post_quantum;
    Edge::start(opts).unwrap()
}

fn token(t: &TestTunnel, secret: &[u8]) -> String {
    encode_token(&Credentials {
        account_tag: t.account.clone(),
        tunnel_secret: Secret::new(secret.to_vec()),
        tunnel_id: t.id,
        endpoint: String::new(),
    })
}

fn quic_connector(edge: &Edge, token: &str, flags: &[&str], driver: &str) -> Connector {
    let mut tunnel_flags: Vec<String> = vec!["--ha-connections".into(), "1".into()];
    tunnel_flags.extend(flags.iter().map(|s| (*s).to_owned()));
    let edges: Vec<SocketAddr> = edge.tunnel_addrs().to_vec();
    Connector::spawn_env(
        &edges,
        edge.ca_pem_path(),
        token,
        None,
        &tunnel_flags,
        &[],
        &[("RINGFLARE_IO_DRIVER", driver)],
    )
}

fn registers_then_unregisters(driver: &str) {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge(dir.path(), &t);
    let mut c = quic_connector(
        &edge,
        &token(&t, &t.secret),
        &["--protocol", "quic"],
        driver,
    );
    assert!(edge.wait_registered(1, WAIT), "log:\n{}", c.log_text());
    let regs = edge.registered();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].protocol, "quic");
    assert_eq!(regs[0].tunnel_id, t.id);
    let log = c.log_when(WAIT, |l| l.contains("protocol=quic"));
    assert!(log.contains("Initial protocol quic"), "{log}");
    assert!(
        log.contains("Registered tunnel connection connIndex=0 connection="),
        "{log}"
    );
    assert!(log.contains("protocol=quic"), "{log}");
    c.signal("TERM");
    assert_eq!(c.wait(WAIT), Some(0), "log:\n{}", c.log_text());
    assert!(edge.wait_registered_at_most(0, WAIT));
    edge.shutdown();
}

#[test]
fn registers_over_quic_poll() {
    registers_then_unregisters("poll");
}

#[test]
fn registers_over_quic_io_uring() {
    if ringflare::runtime::select_driver(ringflare::runtime::IoDriver::IoUring).is_ok() {
        registers_then_unregisters("io_uring");
    }
}

#[test]
fn refused_registration_over_quic_does_not_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge(dir.path(), &t);
    let c = quic_connector(
        &edge,
        &token(&t, b"wrong secret"),
        &["--protocol", "quic"],
        "poll",
    );
    let log = c.log_when(WAIT, |l| {
        l.matches("Register tunnel error from server side").count() >= 2
    });
    assert!(
        log.matches("Register tunnel error from server side")
            .count()
            >= 2,
        "{log}"
    );
    assert!(log.contains("Unauthorized: Invalid tunnel secret"), "{log}");
    assert!(!log.contains("Switching to fallback protocol"), "{log}");
    assert!(edge.registered().is_empty());
    edge.shutdown();
}

#[test]
fn strict_post_quantum_registers_with_an_ml_kem_edge() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge(dir.path(), &t);
    let c = quic_connector(
        &edge,
        &token(&t, &t.secret),
        &["--protocol", "quic", "--post-quantum"],
        "poll",
    );
    assert!(edge.wait_registered(1, WAIT), "log:\n{}", c.log_text());
    let log = c.log_text();
    assert!(log.contains("curve preferences: [X25519MLKEM768]"), "{log}");
    edge.shutdown();
}

#[test]
fn strict_post_quantum_fails_clearly_against_an_edge_without_ml_kem() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge_pq(dir.path(), &t, false);
    let c = quic_connector(
        &edge,
        &token(&t, &t.secret),
        &["--protocol", "quic", "--post-quantum"],
        "poll",
    );
    let log = c.log_when(WAIT, |l| l.contains("Retrying connection"));
    assert!(log.contains("failed to dial to edge with quic"), "{log}");
    assert!(log.contains("offers only X25519MLKEM768"), "{log}");
    assert!(edge.registered().is_empty());
    // The same edge registers a connector that also offers P-256.
    let ok = quic_connector(
        &edge,
        &token(&t, &t.secret),
        &["--protocol", "quic"],
        "poll",
    );
    assert!(edge.wait_registered(1, WAIT), "log:\n{}", ok.log_text());
    edge.shutdown();
}
