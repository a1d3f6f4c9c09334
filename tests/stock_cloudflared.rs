//! Stock cloudflared through ringflare's built-in edge (issue 12 item 5), over `--protocol
//! http2` and `--protocol quic`: registration (the edge records the transport, cloudflared logs
//! it), GET and POST with bodies both ways checked by checksums (a 16 MiB download, uploads
//! with a length and chunked, a 32 MiB streamed echo), WebSocket echo, server-sent events
//! delivered one by one, and a graceful shutdown (SIGTERM with a request in flight: the
//! connection unregisters, the request completes, cloudflared exits 0). Over QUIC also UDP
//! sessions the edge opens through cloudflared, datagram v2 and v3.
//!
//! The stock binary comes from `RINGFLARE_CLOUDFLARED` (e.g. `RINGFLARE_CLOUDFLARED=/root/
//! .cache/cloudflared-ref/cloudflared-2026.8.2 cargo test --test stock_cloudflared`). **When
//! `RINGFLARE_CLOUDFLARED` is unset, every test here prints that it skipped and passes.**
//! Each test runs in its own loopback-only network namespace (`unshare`, as `bench e2e`
//! isolates a third-party connector), with the edge, the origins and the eyeball clients on
//! that namespace's loopback: the binary can reach nothing else. Needs `unshare` and `ip`.
//! These replace the shell scripts that were in tests/quic_edge/.

mod common;

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use common::{
    Client, Connector, GatedOrigin, SseOrigin, TestTunnel, echo_both_ways, in_loopback_netns,
    payload_chunk, stock_cloudflared, streaming_echo_origin,
};
use ringflare::bench::serve::{Origin, ServeConfig};
use ringflare::bench::ws;
use ringflare::edge::{Edge, EdgeOptions, UdpRoute};
use ringflare::runtime::IoDriver;

/// Bound on every wait (registration, a reply, an exit).
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn serves_through_the_edge_over_http2() {
    serves_through_the_edge("serves_through_the_edge_over_http2", "http2");
}

#[test]
fn serves_through_the_edge_over_quic() {
    serves_through_the_edge("serves_through_the_edge_over_quic", "quic");
}

/// The edge on loopback: one tunnel listener (TCP and UDP, one port), two workers.
fn start_edge(dir: &Path, t: &TestTunnel, udp: Option<SocketAddr>) -> Edge {
    let mut opts = EdgeOptions::new(dir);
    opts.tunnel_listen = vec!["127.0.0.1:0".parse().unwrap()];
    opts.eyeball_listen = "127.0.0.1:0".parse().unwrap();
    opts.tunnels = vec![t.edge_tunnel(&["*"])];
    opts.workers = 2;
    opts.no_pinning = true;
    opts.drain_timeout = Duration::from_secs(20);
    opts.udp_routes = udp
        .map(|dest| UdpRoute {
            listen: "127.0.0.1:0".parse().unwrap(),
            dest,
            tunnel: Some(t.id),
        })
        .into_iter()
        .collect();
    Edge::start(opts).expect("edge starts")
}

/// `ringflare bench serve` in-process: `/bytes/N`, `/upload` (byte count and sum), `/ws` echo.
fn bench_origin() -> Origin {
    ringflare::bench::serve::start(&ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tcp_listen: None,
        threads: std::num::NonZeroUsize::new(1),
        io_driver: IoDriver::Auto,
        pin: false,
    })
    .expect("bench origin starts")
}

/// cloudflared against `edge` with `flags` before `run` and `run_flags` after it.
fn stock(
    bin: &Path,
    edge: &Edge,
    t: &TestTunnel,
    cfg: &Path,
    flags: &[&str],
    run_flags: &[&str],
) -> Connector {
    Connector::spawn_stock(
        bin,
        edge.tunnel_addrs(),
        edge.ca_pem_path(),
        &t.token(),
        Some(cfg),
        flags,
        run_flags,
    )
}

fn serves_through_the_edge(test: &str, protocol: &str) {
    let Some(bin) = stock_cloudflared(test) else {
        return;
    };
    if !in_loopback_netns(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let bench = bench_origin();
    let echo = streaming_echo_origin();
    let sse = SseOrigin::start(3);
    let gate = GatedOrigin::start();
    let edge = start_edge(dir.path(), &t, None);
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "ingress:
  - hostname: echo.test
    service: http://{echo}
  - hostname: sse.test
    service: http://{}
  - hostname: slow.test
    service: http://{}
  - service: http://{}
",
            sse.addr, gate.addr, bench.http
        ),
    )
    .unwrap();
    let flags = [
        "--ha-connections",
        "1",
        "--protocol",
        protocol,
        "--grace-period",
        "10s",
    ];
    let mut c = stock(&bin, &edge, &t, &cfg, &flags, &[]);
    registered_over(&edge, &c, protocol);
    let eyeball = edge.eyeball_addr();
    get_and_post_with_checksums(eyeball);
    echo_both_ways(eyeball, "echo.test", 32 << 20);
    println!("ok: 32 MiB streamed up and echoed back, checksums match");
    websocket_echo(eyeball);
    server_sent_events(eyeball, &sse);
    sigterm_with_a_request_in_flight(&edge, &mut c, &gate);
    edge.shutdown();
    println!("PASS: stock cloudflared --protocol {protocol} through ringflare's edge");
}

/// The edge registered one connection over `protocol` and cloudflared logged it as such.
fn registered_over(edge: &Edge, c: &Connector, protocol: &str) {
    assert!(edge.wait_registered(1, WAIT), "not registered");
    let regs = edge.registered();
    assert!(
        regs.iter().all(|r| r.protocol == protocol),
        "registered over {:?}, want {protocol}",
        regs.iter().map(|r| r.protocol).collect::<Vec<_>>()
    );
    let want = format!("protocol={protocol}");
    let log = c.log_when(WAIT, |l| {
        l.lines()
            .any(|l| l.contains("Registered tunnel connection") && l.contains(&want))
    });
    assert!(
        log.lines()
            .any(|l| l.contains("Registered tunnel connection") && l.contains(&want)),
        "cloudflared logged no registration with {want}"
    );
    println!(
        "ok: cloudflared {} registered over {protocol}",
        regs[0].version
    );
}

/// A 16 MiB GET, then uploads with a length and chunked whose byte count and sum the origin
/// reports, on one keep-alive eyeball connection.
fn get_and_post_with_checksums(eyeball: SocketAddr) {
    let mut client = Client::connect(eyeball);
    let r = client.get("app.test", "/bytes/1024");
    assert_eq!((r.status, r.body.len()), (200, 1024));
    assert!(r.header("cf-ray").is_some(), "no Cf-Ray: {:?}", r.headers);
    let n = 16 << 20;
    let r = client.get("app.test", &format!("/bytes/{n}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), n);
    assert!(r.body.iter().all(|&b| b == b'x'), "download bytes differ");
    println!("ok: GET 1 KiB (Cf-Ray set) and 16 MiB, bytes as the origin sends them");
    let body = payload_chunk(7, (3 << 20) + 17);
    let want = format!(
        "{{\"bytes\":{},\"sum\":{}}}",
        body.len(),
        body.iter().map(|&b| u64::from(b)).sum::<u64>()
    );
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.stream.write_all(head.as_bytes()).unwrap();
    client.stream.write_all(&body).unwrap();
    let r = client.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        want,
        "Content-Length upload"
    );
    let head = "POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    client.stream.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(100_000) {
        write!(client.stream, "{:x}\r\n", piece.len()).unwrap();
        client.stream.write_all(piece).unwrap();
        client.stream.write_all(b"\r\n").unwrap();
    }
    client.stream.write_all(b"0\r\n\r\n").unwrap();
    let r = client.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), want, "chunked upload");
    println!(
        "ok: POST {} bytes with a length and chunked: the origin's checksum matches",
        body.len()
    );
}

/// Upgrade to the bench origin's `/ws` echo and echo binary frames of every length class.
fn websocket_echo(eyeball: SocketAddr) {
    let mut client = Client::connect(eyeball);
    let key = ws::client_key();
    write!(
        client.stream,
        "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let (status, headers) = client.read_head();
    assert_eq!(status, 101, "{headers:?}");
    let accept = ws::accept_key(key.as_bytes());
    assert!(
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("sec-websocket-accept") && *v == accept),
        "{headers:?}"
    );
    for (i, size) in [5usize, 300, 70_000].into_iter().enumerate() {
        let payload = payload_chunk(100 + i as u64, size);
        let mut frame = BytesMut::new();
        ws::encode_frame(0x2, &payload, Some([1, 2, 3, i as u8]), &mut frame);
        client.stream.write_all(&frame).unwrap();
        let head = client.read_exact_body(2);
        assert_eq!(head[0], 0x82, "a final binary frame back");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes(
                client.read_exact_body(2).try_into().unwrap(),
            )),
            127 => u64::from_be_bytes(client.read_exact_body(8).try_into().unwrap()),
            n => u64::from(n),
        };
        assert_eq!(len, size as u64);
        assert_eq!(
            client.read_exact_body(size),
            &payload[..],
            "echo of {size} bytes"
        );
    }
    println!("ok: WebSocket 101 with the right accept, echo of 5, 300 and 70000 bytes");
}

/// Each event reaches the eyeball before the origin sends the next (nothing buffers it).
fn server_sent_events(eyeball: SocketAddr, sse: &SseOrigin) {
    let mut client = Client::connect(eyeball);
    client
        .stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: sse.test\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let (status, headers) = client.read_head();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("content-type")
                && v.starts_with("text/event-stream")),
        "{headers:?}"
    );
    for i in 0..3 {
        if i > 0 {
            sse.next.send(()).unwrap();
        }
        client.read_until(format!("event {i}").as_bytes());
    }
    println!("ok: SSE: 3 events, each delivered before the origin sent the next");
}

/// SIGTERM while the gated origin holds a request: cloudflared unregisters, stays up until
/// the request completes (200), then exits 0.
fn sigterm_with_a_request_in_flight(edge: &Edge, c: &mut Connector, gate: &GatedOrigin) {
    let eyeball = edge.eyeball_addr();
    let in_flight = std::thread::spawn(move || Client::connect(eyeball).get("slow.test", "/"));
    gate.arrived
        .recv_timeout(WAIT)
        .expect("the slow request never reached the origin");
    c.signal("TERM");
    assert!(
        edge.wait_registered_at_most(0, WAIT),
        "no unregistration after SIGTERM"
    );
    assert_eq!(
        c.child.try_wait().unwrap(),
        None,
        "cloudflared exited with a request in flight"
    );
    gate.release.send(()).unwrap();
    let reply = in_flight.join().unwrap();
    assert_eq!((reply.status, &reply.body[..]), (200, &b"released"[..]));
    assert_eq!(c.wait(WAIT), Some(0), "exit status after SIGTERM");
    println!("ok: SIGTERM drained: unregistered, the in-flight request completed (200), exit 0");
}

/// UDP sessions the edge opens through stock cloudflared over QUIC (`--udp-route`), datagram
/// v2 (the default) and v3 (`--features support_datagram_v3_2`): two eyeball sources each get
/// their payloads echoed by a UDP origin.
#[test]
fn carries_udp_sessions_v2_and_v3() {
    let test = "carries_udp_sessions_v2_and_v3";
    let Some(bin) = stock_cloudflared(test) else {
        return;
    };
    if !in_loopback_netns(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let edge = start_edge(dir.path(), &t, Some(udp_echo()));
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "ingress:\n  - service: http_status:404\n").unwrap();
    for (label, features) in [("v2", None), ("v3", Some("support_datagram_v3_2"))] {
        let flags = ["--ha-connections", "1", "--protocol", "quic"];
        // `--features` is a flag of `tunnel run`.
        let run_flags: &[&str] = match features {
            Some(f) => &["--features", f],
            None => &[],
        };
        let mut c = stock(&bin, &edge, &t, &cfg, &flags, run_flags);
        assert!(edge.wait_registered(1, WAIT), "{label}: not registered");
        let regs = edge.registered();
        if let Some(f) = features {
            assert!(
                regs[0].features.iter().any(|x| x == f),
                "{:?}",
                regs[0].features
            );
        }
        udp_echo_through(edge.udp_route_addrs()[0], label);
        println!("ok: {label}: 2 sources x 4 sizes echoed through stock cloudflared");
        c.signal("TERM");
        assert_eq!(c.wait(WAIT), Some(0), "{label}: exit status after SIGTERM");
        assert!(
            edge.wait_registered_at_most(0, WAIT),
            "{label}: still registered"
        );
    }
    edge.shutdown();
    println!("PASS: stock cloudflared carries the edge's UDP sessions, v2 and v3");
}

/// A UDP echo origin on a std thread.
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

/// Two sources, payloads of 1 to 1100 bytes: each comes back. UDP may lose a datagram (the
/// first ones race the session's registration): each is resent, up to 10 times a second apart.
fn udp_echo_through(route: SocketAddr, label: &str) {
    for src in 0..2u8 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.connect(route).unwrap();
        for n in [1usize, 64, 512, 1100] {
            let msg = payload_chunk(u64::from(src) * 10_000 + n as u64, n);
            let mut buf = [0u8; 2048];
            let echoed = (0..10).any(|_| {
                s.send(&msg).unwrap();
                matches!(s.recv(&mut buf), Ok(got) if buf[..got] == msg[..])
            });
            assert!(echoed, "{label}: no echo of {n} bytes from source {src}");
        }
    }
}
