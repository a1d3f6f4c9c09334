//! The session manager against a real UDP echo origin on loopback.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::StreamExt;

use super::*;

/// Records what the manager sends toward the edge.
struct Recorder {
    datagrams: mpsc::UnboundedSender<Bytes>,
    closed: mpsc::UnboundedSender<(SessionId, String)>,
}

impl DatagramSink for Recorder {
    fn send_datagram(&self, datagram: Bytes) {
        let _ = self.datagrams.unbounded_send(datagram);
    }
    fn session_closed(&self, id: SessionId, reason: &str) {
        let _ = self.closed.unbounded_send((id, reason.to_owned()));
    }
}

struct Harness {
    manager: UdpSessions,
    datagrams: mpsc::UnboundedReceiver<Bytes>,
    closed: mpsc::UnboundedReceiver<(SessionId, String)>,
    stats: Arc<UdpStats>,
    flows: Arc<FlowLimit>,
}

fn harness(version: DatagramVersion, limit: u64) -> Harness {
    let (dt, dr) = mpsc::unbounded();
    let (ct, cr) = mpsc::unbounded();
    let stats = Arc::new(UdpStats::default());
    let flows = Arc::new(FlowLimit {
        limit,
        ..FlowLimit::default()
    });
    let sink = Rc::new(Recorder {
        datagrams: dt,
        closed: ct,
    });
    Harness {
        manager: UdpSessions::new(0, version, sink, flows.clone(), stats.clone()),
        datagrams: dr,
        closed: cr,
        stats,
        flows,
    }
}

impl Harness {
    async fn next_datagram(&mut self) -> Bytes {
        compio::time::timeout(Duration::from_secs(5), self.datagrams.next())
            .await
            .expect("no datagram from the manager within 5 s")
            .expect("sink closed")
    }

    async fn next_closed(&mut self) -> (SessionId, String) {
        compio::time::timeout(Duration::from_secs(5), self.closed.next())
            .await
            .expect("no session ended within 5 s")
            .expect("sink closed")
    }
}

/// A UDP echo origin on loopback; the task lives as long as the handle.
async fn echo_origin() -> (SocketAddr, JoinHandle<()>) {
    let socket = compio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = compio::runtime::spawn(async move {
        let mut buf = Vec::with_capacity(2048);
        loop {
            buf.clear();
            let BufResult(r, b) = socket.recv_from(buf).await;
            buf = b;
            let Ok((n, from)) = r else { return };
            let reply = buf[..n].to_vec();
            let _ = socket.send_to(reply, from).await;
        }
    });
    (addr, task)
}

use compio::BufResult;

fn id(n: u8) -> SessionId {
    SessionId([n; 16])
}

fn v2_params(n: u8, dest: SocketAddr, idle: Duration) -> RegisterUdpSessionParams {
    let dst_ip = match dest.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    RegisterUdpSessionParams {
        session_id: id(n).0.to_vec(),
        dst_ip,
        dst_port: dest.port(),
        close_after_idle_hint: idle.as_nanos() as i64,
        trace_context: String::new(),
    }
}

fn v2_payload(n: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::new();
    v2::encode_udp(id(n), payload, &mut out).unwrap();
    out.into()
}

fn unregister(n: u8) -> UnregisterUdpSessionParams {
    UnregisterUdpSessionParams {
        session_id: id(n).0.to_vec(),
        message: "edge closed it".into(),
    }
}

#[compio::test]
async fn v2_session_echoes_both_ways_until_unregistered() {
    let (origin, _echo) = echo_origin().await;
    let mut h = harness(DatagramVersion::V2, 0);
    let resp = h
        .manager
        .register_v2(&v2_params(1, origin, Duration::ZERO))
        .unwrap();
    assert_eq!(resp.err, None);
    assert_eq!(h.stats.active_sessions.load(Relaxed), 1);
    assert_eq!(h.stats.total_sessions.load(Relaxed), 1);
    for msg in [&b"hello"[..], b"", &[0xab; 1280]] {
        h.manager.on_datagram(v2_payload(1, msg));
        let back = h.next_datagram().await;
        assert_eq!(
            v2::decode(&back).unwrap(),
            v2::Datagram::Udp {
                session: id(1),
                payload: msg
            }
        );
    }
    h.manager.unregister_v2(&unregister(1)).unwrap();
    assert!(h.manager.is_empty());
    assert_eq!(h.stats.active_sessions.load(Relaxed), 0);
    assert_eq!(h.flows.active.load(Relaxed), 0);
    // A payload for the closed session is dropped and counted.
    let dropped = h.stats.dropped_datagrams.load(Relaxed);
    h.manager.on_datagram(v2_payload(1, b"late"));
    assert_eq!(h.stats.dropped_datagrams.load(Relaxed), dropped + 1);
}

#[compio::test]
async fn v2_idle_session_closes_and_tells_the_edge() {
    let (origin, _echo) = echo_origin().await;
    let mut h = harness(DatagramVersion::V2, 0);
    h.manager
        .register_v2(&v2_params(2, origin, Duration::from_millis(300)))
        .unwrap();
    h.manager.on_datagram(v2_payload(2, b"ping"));
    h.next_datagram().await;
    let (closed, reason) = h.next_closed().await;
    assert_eq!(closed, id(2));
    assert_eq!(reason, "session idle for 300ms");
    assert!(h.manager.is_empty());
    assert_eq!(h.stats.active_sessions.load(Relaxed), 0);
    assert_eq!(h.flows.active.load(Relaxed), 0);
}

#[compio::test]
async fn v2_origin_refusal_ends_the_session() {
    // A port nobody listens on: the kernel answers the first send with ICMP port unreachable,
    // and the connected socket's next read fails with "connection refused".
    let closed_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dest = closed_port.local_addr().unwrap();
    drop(closed_port);
    let mut h = harness(DatagramVersion::V2, 0);
    assert_eq!(
        h.manager
            .register_v2(&v2_params(3, dest, Duration::ZERO))
            .unwrap()
            .err,
        None
    );
    h.manager.on_datagram(v2_payload(3, b"anyone?"));
    let (closed, reason) = h.next_closed().await;
    assert_eq!(closed, id(3));
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    assert!(h.manager.is_empty());
}

#[compio::test]
async fn max_active_flows_refuses_then_admits_after_a_close() {
    let (origin, _echo) = echo_origin().await;
    let mut h = harness(DatagramVersion::V2, 1);
    let p = |n| v2_params(n, origin, Duration::ZERO);
    assert_eq!(h.manager.register_v2(&p(4)).unwrap().err, None);
    assert_eq!(
        h.manager.register_v2(&p(5)).unwrap().err.as_deref(),
        Some("failed to start udp session due to rate limiting: too many active flows")
    );
    assert_eq!(h.stats.total_sessions.load(Relaxed), 1);
    h.manager.unregister_v2(&unregister(4)).unwrap();
    assert_eq!(h.manager.register_v2(&p(5)).unwrap().err, None);
    h.manager.on_datagram(v2_payload(5, b"second"));
    assert!(matches!(
        v2::decode(&h.next_datagram().await).unwrap(),
        v2::Datagram::Udp {
            payload: b"second",
            ..
        }
    ));
}

#[compio::test]
async fn malformed_registrations_are_refused() {
    let h = harness(DatagramVersion::V2, 0);
    let mut p = v2_params(6, "127.0.0.1:9".parse().unwrap(), Duration::ZERO);
    p.session_id.pop();
    assert_eq!(
        h.manager.register_v2(&p).unwrap_err(),
        "invalid UUID (got 15 bytes)"
    );
    let mut p = v2_params(6, "127.0.0.1:9".parse().unwrap(), Duration::ZERO);
    p.dst_ip = vec![1, 2, 3];
    assert_eq!(
        h.manager.register_v2(&p).unwrap().err.as_deref(),
        Some("unable to parse destination IP")
    );
    assert!(h.manager.is_empty());
    assert_eq!(h.flows.active.load(Relaxed), 0);
    // Garbage datagrams are dropped, never a panic.
    for junk in [&[][..], &[9], &[0; 10], &[1; 40]] {
        h.manager.on_datagram(Bytes::copy_from_slice(junk));
    }
}

#[compio::test]
async fn dropping_the_manager_releases_every_session() {
    let (origin, _echo) = echo_origin().await;
    let h = harness(DatagramVersion::V2, 0);
    for n in 10..14 {
        h.manager
            .register_v2(&v2_params(n, origin, Duration::ZERO))
            .unwrap();
    }
    assert_eq!(h.flows.active.load(Relaxed), 4);
    let Harness {
        manager,
        stats,
        flows,
        ..
    } = h;
    drop(manager);
    assert_eq!(flows.active.load(Relaxed), 0);
    assert_eq!(stats.active_sessions.load(Relaxed), 0);
    assert_eq!(stats.total_sessions.load(Relaxed), 4);
}

fn v3_registration(n: u8, dest: SocketAddr, idle_s: u64, first: &[u8]) -> Bytes {
    let mut out = Vec::new();
    v3::encode_registration(
        &v3::Registration {
            request_id: id(n),
            dest,
            traced: false,
            idle_hint: Duration::from_secs(idle_s),
            payload: first,
        },
        &mut out,
    )
    .unwrap();
    out.into()
}

fn response_of(d: &[u8]) -> (SessionId, v3::ResponseStatus) {
    match v3::decode(d).unwrap() {
        v3::Datagram::RegistrationResponse {
            request_id, status, ..
        } => (request_id, status),
        other => panic!("not a registration response: {other:?}"),
    }
}

#[compio::test]
async fn v3_flow_registers_by_datagram_and_echoes() {
    let (origin, _echo) = echo_origin().await;
    let mut h = harness(DatagramVersion::V3, 1);
    h.manager
        .on_datagram(v3_registration(7, origin, 0, b"bundled"));
    assert_eq!(
        response_of(&h.next_datagram().await),
        (id(7), v3::ResponseStatus::Ok)
    );
    // The bundled first payload reached the origin and came back.
    assert_eq!(
        v3::decode(&h.next_datagram().await).unwrap(),
        v3::Datagram::Payload {
            request_id: id(7),
            payload: b"bundled"
        }
    );
    let mut d = Vec::new();
    v3::encode_payload(id(7), b"again", &mut d).unwrap();
    h.manager.on_datagram(d.into());
    assert!(matches!(
        v3::decode(&h.next_datagram().await).unwrap(),
        v3::Datagram::Payload {
            payload: b"again",
            ..
        }
    ));
    // A retried registration is answered again; a second flow is over the limit.
    h.manager.on_datagram(v3_registration(7, origin, 0, b""));
    assert_eq!(
        response_of(&h.next_datagram().await),
        (id(7), v3::ResponseStatus::Ok)
    );
    assert_eq!(h.stats.retry_flow_responses.load(Relaxed), 1);
    h.manager.on_datagram(v3_registration(8, origin, 0, b""));
    assert_eq!(
        response_of(&h.next_datagram().await),
        (id(8), v3::ResponseStatus::TooManyActiveFlows)
    );
    assert_eq!(h.stats.active_flows.load(Relaxed), 1);
    assert_eq!(h.stats.total_flows.load(Relaxed), 1);
    // The session RPCs are refused under v3, with cloudflared's text.
    assert_eq!(
        h.manager
            .register_v2(&v2_params(9, origin, Duration::ZERO))
            .unwrap()
            .err
            .as_deref(),
        Some(V3_REGISTER_RPC_ERR)
    );
    assert_eq!(
        h.manager.unregister_v2(&unregister(7)).unwrap_err(),
        V3_UNREGISTER_RPC_ERR
    );
}

#[compio::test]
async fn v3_idle_flow_closes_without_an_rpc() {
    let (origin, _echo) = echo_origin().await;
    let mut h = harness(DatagramVersion::V3, 0);
    h.manager.on_datagram(v3_registration(9, origin, 1, b""));
    assert_eq!(
        response_of(&h.next_datagram().await),
        (id(9), v3::ResponseStatus::Ok)
    );
    // Bounded wait for the 1 s idle close, by polling the table on the runtime's timer.
    let mut waited = Duration::ZERO;
    while !h.manager.is_empty() && waited < Duration::from_secs(5) {
        compio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert!(h.manager.is_empty(), "flow still open after 5 s");
    assert_eq!(h.stats.active_flows.load(Relaxed), 0);
    assert!(h.closed.try_recv().is_err(), "v3 must not call unregister");
}

/// The session half of the connector's RPC server, as `quic_conn`'s delegates it.
struct SessionRpc(UdpSessions);

impl crate::proto::CloudflaredServer for SessionRpc {
    async fn update_configuration(
        &self,
        _: i32,
        _: Vec<u8>,
    ) -> Result<crate::proto::UpdateConfigurationResponse, crate::proto::RpcError> {
        Err(crate::proto::RpcError::failed("not here"))
    }
    async fn register_udp_session(
        &self,
        p: RegisterUdpSessionParams,
    ) -> Result<RegisterUdpSessionResponse, crate::proto::RpcError> {
        self.0.rpc_register(p)
    }
    async fn unregister_udp_session(
        &self,
        p: UnregisterUdpSessionParams,
    ) -> Result<(), crate::proto::RpcError> {
        self.0.rpc_unregister(p)
    }
}

#[compio::test]
async fn v2_session_rpcs_over_capnp_reach_the_manager() {
    use crate::proto::rpc::pipe::duplex;
    use crate::proto::{CloudflaredClient, serve_cloudflared};

    let (origin, _echo) = echo_origin().await;
    let mut h = harness(DatagramVersion::V2, 0);
    let ((conn_r, conn_w), (edge_r, edge_w)) = duplex();
    let server = SessionRpc(h.manager.clone());
    let _server = compio::runtime::spawn(serve_cloudflared(server, conn_r, conn_w));
    let (client, driver) = CloudflaredClient::connect(edge_r, edge_w);
    let _driver = compio::runtime::spawn(driver);
    let r = client
        .register_udp_session(&v2_params(20, origin, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(r.err, None);
    h.manager.on_datagram(v2_payload(20, b"via rpc"));
    assert!(matches!(
        v2::decode(&h.next_datagram().await).unwrap(),
        v2::Datagram::Udp {
            payload: b"via rpc",
            ..
        }
    ));
    let mut bad = v2_params(21, origin, Duration::ZERO);
    bad.session_id = vec![1; 3];
    let err = client.register_udp_session(&bad).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid UUID (got 3 bytes)"),
        "{err}"
    );
    client
        .unregister_udp_session(&unregister(20))
        .await
        .unwrap();
    assert!(h.manager.is_empty());
}
