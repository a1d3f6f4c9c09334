//! Registration with the built-in edge: success, refusals, and malformed connector input.
//! Every failure must close the connection (the peer sees the HTTP/2 connection end).

mod common;

use std::{io::Read, net::TcpStream, time::Duration};

use common::*;
use ringflare::runtime::IoDriver;

fn edge_with(t: &TestTunnel) -> (tempfile::TempDir, ringflare::edge::Edge) {
    let dir = tempfile::tempdir().unwrap();
    let edge = start_edge(dir.path(), vec![t.edge_tunnel(&["*"])], 1, IoDriver::Poll);
    (dir, edge)
}

#[test]
fn register_ok_shows_in_registered() {
    let t = TestTunnel::new();
    let (_dir, edge) = edge_with(&t);
    let mut cfg = PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p");
    cfg.conn_index = 3;
    let client_id = cfg.client_id;
    let peer = Peer::start(cfg);
    match peer.next_event() {
        PeerEvent::Registered { location } => assert_eq!(location, "rfl01"),
        other => panic!("{other:?}"),
    }
    assert!(edge.wait_registered(1, WAIT));
    let regs = edge.registered();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].conn_index, 3);
    assert_eq!(regs[0].client_id, client_id);
    assert_eq!(regs[0].arch, "linux_amd64");
    drop(peer);
    // The connector went away: the registration disappears.
    assert!(edge.wait_registered_at_most(0, WAIT));
}

#[test]
fn bad_secret_is_unauthorized_and_closed() {
    let t = TestTunnel::new();
    let (_dir, edge) = edge_with(&t);
    let mut cfg = PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p");
    cfg.secret = b"wrong".to_vec();
    let peer = Peer::start(cfg);
    match peer.next_event() {
        PeerEvent::Refused(cause) => assert!(cause.contains("Unauthorized"), "{cause}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(peer.next_event(), PeerEvent::Closed);
    assert!(edge.registered().is_empty());
}

#[test]
fn wrong_account_is_unauthorized() {
    let t = TestTunnel::new();
    let (_dir, edge) = edge_with(&t);
    let mut cfg = PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p");
    cfg.account = "someone-else".into();
    let peer = Peer::start(cfg);
    match peer.next_event() {
        PeerEvent::Refused(cause) => assert!(cause.contains("Unauthorized"), "{cause}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(peer.next_event(), PeerEvent::Closed);
}

#[test]
fn unknown_tunnel_is_refused_and_closed() {
    let t = TestTunnel::new();
    let (_dir, edge) = edge_with(&t);
    let mut cfg = PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p");
    cfg.tunnel_id = uuid::Uuid::new_v4();
    let peer = Peer::start(cfg);
    match peer.next_event() {
        PeerEvent::Refused(cause) => assert!(cause.contains("Failed to get tunnel"), "{cause}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(peer.next_event(), PeerEvent::Closed);
}

#[test]
fn duplicate_connection_is_refused() {
    let t = TestTunnel::new();
    let (_dir, edge) = edge_with(&t);
    let first = PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "a");
    let client_id = first.client_id;
    let a = Peer::start(first);
    a.expect_registered();
    let mut second = PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "b");
    second.client_id = client_id;
    let b = Peer::start(second);
    match b.next_event() {
        PeerEvent::Refused(cause) => assert_eq!(cause, "EDUPCONN"),
        other => panic!("{other:?}"),
    }
    assert_eq!(edge.registered().len(), 1);
}

fn closed_for(behavior: Behavior) {
    let t = TestTunnel::new();
    let (_dir, edge) = edge_with(&t);
    let mut cfg = PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p");
    cfg.behavior = behavior;
    let peer = Peer::start(cfg);
    assert_eq!(peer.next_event(), PeerEvent::Closed, "{behavior:?}");
    assert!(edge.registered().is_empty());
}

#[test]
fn garbage_on_control_stream_closes() {
    closed_for(Behavior::Garbage);
}

#[test]
fn truncated_capnp_frame_closes() {
    closed_for(Behavior::Truncated);
}

#[test]
fn control_stream_never_answered_times_out() {
    closed_for(Behavior::NeverAnswer);
}

#[test]
fn connector_that_never_registers_times_out() {
    closed_for(Behavior::NeverRegister);
}

#[test]
fn silent_tcp_and_non_tls_bytes_are_closed() {
    let t = TestTunnel::new();
    let (_dir, edge) = edge_with(&t);
    // Never speaks: closed after the handshake timeout.
    let mut silent = TcpStream::connect(edge.tunnel_addrs()[0]).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
    // Plain HTTP instead of TLS: refused at once (TLS alert then close).
    let mut plain = TcpStream::connect(edge.tunnel_addrs()[0]).unwrap();
    std::io::Write::write_all(&mut plain, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    let mut all = Vec::new();
    let _ = plain.read_to_end(&mut all);
    // The edge still works afterwards.
    let peer = Peer::start(PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p"));
    peer.expect_registered();
    std::thread::sleep(Duration::from_millis(1));
}

#[test]
fn shutdown_closes_connections_and_listeners() {
    let t = TestTunnel::new();
    let (_dir, edge) = edge_with(&t);
    let peer = Peer::start(PeerConfig::new(&edge, edge.tunnel_addrs()[0], &t, "p"));
    peer.expect_registered();
    let (tunnel, eyeball) = (edge.tunnel_addrs()[0], edge.eyeball_addr());
    let mut idle_eyeball = Client::connect(eyeball);
    edge.shutdown();
    assert_eq!(peer.next_event(), PeerEvent::Closed);
    assert!(idle_eyeball.is_closed());
    assert!(TcpStream::connect(tunnel).is_err());
    assert!(TcpStream::connect(eyeball).is_err());
}

/// A second edge on a port the first already listens on must fail to start instead of joining
/// the first one's SO_REUSEPORT group and silently taking half of its connections.
#[test]
fn second_edge_on_a_taken_port_is_refused() {
    let t = TestTunnel::new();
    let (_dir, first) = edge_with(&t);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = edge_options(dir.path(), vec![t.edge_tunnel(&["*"])], 1, IoDriver::Poll);
    opts.tunnel_listen = vec![first.tunnel_addrs()[0]];
    let err = match ringflare::edge::Edge::start(opts) {
        Ok(second) => {
            second.shutdown();
            panic!("a second edge joined a tunnel port that was already in use");
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("bind"), "{err}");
    assert!(err.contains(&first.tunnel_addrs()[0].to_string()), "{err}");
    first.shutdown();
}
