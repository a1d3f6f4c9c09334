//! Eyeball traffic through the built-in edge to a connector registered over QUIC (issue 12
//! item 5), on loopback: a minimal QUIC connector peer (compio-quic client, control stream +
//! `RegistrationClient`, data streams answered with `ConnectResponse`) serves what the edge
//! opens. Checks the `ConnectRequest` the edge sends (spec §4.3), bodies both ways (with a
//! length and chunked), a large download, connector errors and hostile responses as 502,
//! a websocket echo, and that an eyeball going away resets the stream. Stock cloudflared over
//! QUIC through the edge is tests/stock_cloudflared.rs.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Client, TestTunnel, WAIT, fnv, pattern, register_params};
use compio::quic::{Endpoint, RecvStream, SendStream};
use futures_channel::mpsc as fmpsc;
use futures_util::StreamExt;
use ringflare::edge::Edge;
use ringflare::proto::{
    ConnectRequest, ConnectResponse, ConnectionResponse, ConnectionType, FrameLimits,
    RegistrationClient,
};
use ringflare::quic::{QuicSettings, bind_udp};
use ringflare::runtime::{DriverKind, IoDriver, build_runtime};
use ringflare::tls::{EdgeRoots, KxPolicy, QUIC_SERVER_NAME, connector_quic_client_config_with};
use uuid::Uuid;

/// What the peer saw.
#[derive(Debug)]
enum Seen {
    Registered,
    Request(ConnectRequest),
    /// The body the peer read on a stream (`/sink`), by length and hash.
    Body(usize, u64),
    /// The edge stopped or reset a stream the peer was still writing (`/hang`).
    WriteStopped,
}

struct QuicPeer {
    seen: mpsc::Receiver<Seen>,
    stop: Option<fmpsc::UnboundedSender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl QuicPeer {
    fn start(edge: &Edge, t: &TestTunnel) -> QuicPeer {
        let addr = edge.tunnel_addrs()[0];
        let ca = edge.ca_pem_path().to_owned();
        let t = t.clone();
        let (seen_tx, seen) = mpsc::channel();
        let (stop, stop_rx) = fmpsc::unbounded();
        let thread = thread::spawn(move || {
            let rt = build_runtime(DriverKind::Poll).unwrap();
            rt.block_on(run_peer(addr, ca, t, seen_tx, stop_rx));
        });
        let peer = QuicPeer {
            seen,
            stop: Some(stop),
            thread: Some(thread),
        };
        match peer.next() {
            Seen::Registered => {}
            other => panic!("expected registration, got {other:?}"),
        }
        peer
    }

    fn next(&self) -> Seen {
        self.seen.recv_timeout(WAIT).expect("peer event in time")
    }

    fn next_request(&self) -> ConnectRequest {
        loop {
            if let Seen::Request(r) = self.next() {
                return r;
            }
        }
    }
}

impl Drop for QuicPeer {
    fn drop(&mut self) {
        if thread::panicking() {
            if let Some(t) = self.thread.take() {
                std::mem::forget(t);
            }
            std::mem::forget(self.stop.take());
            return;
        }
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run_peer(
    addr: SocketAddr,
    ca: std::path::PathBuf,
    t: TestTunnel,
    seen: mpsc::Sender<Seen>,
    mut stop: fmpsc::UnboundedReceiver<()>,
) {
    let tls = connector_quic_client_config_with(EdgeRoots::CaFile(ca), KxPolicy::PreferPostQuantum)
        .unwrap();
    let config = QuicSettings::default().client(tls, addr.ip()).unwrap();
    let (udp, _) = bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)), false).unwrap();
    let endpoint = Endpoint::new(udp, QuicSettings::endpoint(), None, None).unwrap();
    let conn = endpoint
        .connect(addr, QUIC_SERVER_NAME, Some(config))
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().unwrap();
    let (client, driver) = RegistrationClient::connect(recv.into_compat(), send.into_compat());
    compio::runtime::spawn(async move {
        let _ = driver.await;
    })
    .detach();
    let params = register_params(
        &t.account,
        &t.secret,
        t.id,
        0,
        Uuid::new_v4(),
        &[],
        "quic-test-peer",
    );
    match client.register_connection(&params).await {
        Ok(ConnectionResponse::Details(_)) => {
            let _ = seen.send(Seen::Registered);
        }
        other => panic!("registration failed: {other:?}"),
    }
    let accept = {
        let conn = conn.clone();
        let seen = seen.clone();
        async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let seen = seen.clone();
                compio::runtime::spawn(async move {
                    serve_stream(send, recv, seen).await;
                })
                .detach();
            }
        }
    };
    let accepting = compio::runtime::spawn(accept);
    let _ = stop.next().await;
    drop(accepting);
    conn.close(0u32.into(), b"");
    let _ = compio::time::timeout(Duration::from_secs(1), endpoint.shutdown()).await;
}

/// Reads the `ConnectRequest`; returns it and the body bytes read with it.
async fn read_request(recv: &mut RecvStream) -> Option<(ConnectRequest, BytesMut)> {
    let mut buf = BytesMut::new();
    loop {
        let mut view = &buf[..];
        match ConnectRequest::decode(&mut view, &FrameLimits::default()) {
            Ok(req) => {
                let used = buf.len() - view.len();
                let _ = buf.split_to(used);
                return Some((req, buf));
            }
            Err(e) if e.is_incomplete() => {}
            Err(e) => panic!("bad ConnectRequest from the edge: {e}"),
        }
        let chunk = recv.read_chunk(64 * 1024, true).await.ok()??;
        buf.extend_from_slice(&chunk.bytes);
    }
}

fn ok_head(status: u16, headers: &[(&str, &str)]) -> Bytes {
    let mut metadata = vec![("HttpStatus".to_owned(), status.to_string())];
    for (n, v) in headers {
        metadata.push((format!("HttpHeader:{n}"), (*v).to_owned()));
    }
    let mut out = BytesMut::new();
    ConnectResponse {
        error: String::new(),
        metadata,
    }
    .encode(&mut out);
    out.freeze()
}

async fn write(send: &mut SendStream, data: Bytes) -> bool {
    send.write_all_chunks(&mut [data]).await.is_ok()
}

/// Answers one data stream by its path (see each arm).
async fn serve_stream(mut send: SendStream, mut recv: RecvStream, seen: mpsc::Sender<Seen>) {
    let Some((req, mut early)) = read_request(&mut recv).await else {
        return;
    };
    let path = req
        .dest
        .parse::<http::Uri>()
        .ok()
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let kind = req.kind;
    let query_n = req
        .dest
        .split_once("n=")
        .and_then(|(_, n)| n.parse::<usize>().ok());
    let _ = seen.send(Seen::Request(req));
    if kind == ConnectionType::Websocket {
        // 101 then echo every byte until the edge ends its side.
        if !write(&mut send, ok_head(101, &[("Upgrade", "websocket")])).await {
            return;
        }
        if !early.is_empty() && !write(&mut send, early.split().freeze()).await {
            return;
        }
        while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
            if !write(&mut send, chunk.bytes).await {
                return;
            }
        }
        let _ = send.finish();
        return;
    }
    match path.as_str() {
        "/hello" => {
            let head = ok_head(
                200,
                &[
                    ("Content-Type", "text/plain"),
                    ("X-Multi", "a"),
                    ("X-Multi", "b"),
                    ("Content-Length", "5"),
                ],
            );
            let _ = write(&mut send, head).await && write(&mut send, "hello".into()).await;
            let _ = send.finish();
        }
        "/echo" => {
            // Streams the body back as it arrives (no Content-Length: chunked to the eyeball).
            if !write(&mut send, ok_head(200, &[])).await {
                return;
            }
            if !early.is_empty() && !write(&mut send, early.split().freeze()).await {
                return;
            }
            while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
                if !write(&mut send, chunk.bytes).await {
                    return;
                }
            }
            let _ = send.finish();
        }
        "/sink" => {
            let mut body = early.to_vec();
            while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
                body.extend_from_slice(&chunk.bytes);
            }
            let _ = seen.send(Seen::Body(body.len(), fnv(&body)));
            let _ = write(&mut send, ok_head(204, &[])).await;
            let _ = send.finish();
        }
        "/bytes" => {
            let n = query_n.unwrap_or(0);
            let len = n.to_string();
            if !write(&mut send, ok_head(200, &[("Content-Length", &len)])).await {
                return;
            }
            let data = Bytes::from(pattern(n, 7));
            let _ = write(&mut send, data).await;
            let _ = send.finish();
        }
        "/error" => {
            let mut out = BytesMut::new();
            ConnectResponse {
                error: "dial tcp 127.0.0.1:1: connect: connection refused".into(),
                metadata: vec![("HttpStatus".into(), "502".into())],
            }
            .encode(&mut out);
            let _ = write(&mut send, out.freeze()).await;
            let _ = send.finish();
        }
        "/many-headers" => {
            let many: Vec<(String, String)> = (0..2000)
                .map(|i| (format!("HttpHeader:X-H{i}"), "v".to_owned()))
                .collect();
            let mut out = BytesMut::new();
            ConnectResponse {
                error: String::new(),
                metadata: many,
            }
            .encode(&mut out);
            let _ = write(&mut send, out.freeze()).await;
            let _ = send.finish();
        }
        "/garbage" => {
            let _ = write(&mut send, Bytes::from_static(&[0x42; 64])).await;
            let _ = send.finish();
        }
        "/bad-value" => {
            let head = ok_head(200, &[("X-Split", "a\r\nInjected: yes")]);
            let _ = write(&mut send, head).await;
            let _ = send.finish();
        }
        "/hang" => {
            // A response that never ends: written until the edge stops the stream.
            if !write(&mut send, ok_head(200, &[])).await {
                return;
            }
            loop {
                let data = Bytes::from(vec![b'x'; 16 * 1024]);
                if !write(&mut send, data).await {
                    let _ = seen.send(Seen::WriteStopped);
                    return;
                }
            }
        }
        _ => {
            let _ = write(&mut send, ok_head(404, &[("Content-Length", "0")])).await;
            let _ = send.finish();
        }
    }
}

fn edge_and_peer(dir: &std::path::Path) -> (Edge, QuicPeer) {
    let t = TestTunnel::new();
    let edge = common::start_edge(dir, vec![t.edge_tunnel(&["*"])], 1, IoDriver::Poll);
    let peer = QuicPeer::start(&edge, &t);
    assert!(edge.wait_registered(1, WAIT));
    assert_eq!(edge.registered()[0].protocol, "quic");
    (edge, peer)
}

fn meta<'a>(req: &'a ConnectRequest, key: &str) -> Vec<&'a str> {
    req.metadata
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn get_reaches_a_quic_connector_with_cloudflares_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, peer) = edge_and_peer(dir.path());
    let mut c = Client::connect(edge.eyeball_addr());
    c.stream
        .write_all(
            b"GET /hello?x=1 HTTP/1.1\r\nHost: App.Example.com\r\nAccept: a\r\nAccept: b\r\n\
              X-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\r\n",
        )
        .unwrap();
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.all("x-multi"), ["a", "b"]);
    assert!(r.header("cf-ray").is_some());
    let req = peer.next_request();
    assert_eq!(req.kind, ConnectionType::Http);
    assert_eq!(req.dest, "http://App.Example.com/hello?x=1");
    assert_eq!(meta(&req, "HttpMethod"), ["GET"]);
    assert_eq!(meta(&req, "HttpHost"), ["App.Example.com"]);
    assert_eq!(meta(&req, "HttpHeader:Accept"), ["a", "b"]);
    assert_eq!(
        meta(&req, "HttpHeader:X-Forwarded-For"),
        ["10.0.0.1, 127.0.0.1"]
    );
    assert_eq!(meta(&req, "HttpHeader:Cf-Connecting-Ip"), ["127.0.0.1"]);
    assert_eq!(
        meta(&req, "HttpHeader:Cf-Visitor"),
        [r#"{"scheme":"http"}"#]
    );
    assert_eq!(meta(&req, "HttpHeader:Cf-Ray").len(), 1);
    // Hop-by-hop headers (and those Connection names) are not forwarded.
    assert!(meta(&req, "HttpHeader:X-Hop").is_empty());
    assert!(meta(&req, "HttpHeader:Connection").is_empty());
    // The same keep-alive connection carries the next request.
    let r = c.get("app.example.com", "/nothing");
    assert_eq!(r.status, 404);
}

#[test]
fn bodies_stream_both_ways_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, peer) = edge_and_peer(dir.path());
    let mut c = Client::connect(edge.eyeball_addr());
    // With a length: echoed back, byte for byte.
    let body = pattern(3 * 1024 * 1024 + 5, 3);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.stream.write_all(head.as_bytes()).unwrap();
    let writer = {
        let mut s = c.stream.try_clone().unwrap();
        let body = body.clone();
        thread::spawn(move || s.write_all(&body).unwrap())
    };
    let r = c.read_response(false);
    writer.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert_eq!(fnv(&r.body), fnv(&body));
    let req = peer.next_request();
    assert_eq!(
        meta(&req, "HttpHeader:Content-Length"),
        [body.len().to_string().as_str()]
    );
    // Chunked: the connector is told (it reads no body without a length or this).
    let mut chunked = Vec::new();
    for piece in body.chunks(100_000).take(5) {
        write!(chunked, "{:x}\r\n", piece.len()).unwrap();
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /sink HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    c.stream.write_all(head.as_bytes()).unwrap();
    c.stream.write_all(&chunked).unwrap();
    let r = c.read_response(false);
    assert_eq!(r.status, 204);
    let req = peer.next_request();
    assert_eq!(meta(&req, "HttpHeader:Transfer-Encoding"), ["chunked"]);
    match peer.next() {
        Seen::Body(n, h) => {
            assert_eq!(n, 500_000);
            assert_eq!(h, fnv(&body[..500_000]));
        }
        other => panic!("expected the body, got {other:?}"),
    }
    // A large download.
    let n = 32 * 1024 * 1024;
    let r = c.get("a.test", &format!("/bytes?n={n}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), n);
    assert_eq!(fnv(&r.body), fnv(&pattern(n, 7)));
}

#[test]
fn connector_errors_and_hostile_responses_are_502() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, _peer) = edge_and_peer(dir.path());
    for path in ["/error", "/many-headers", "/garbage", "/bad-value"] {
        let mut c = Client::connect(edge.eyeball_addr());
        let r = c.get("a.test", path);
        assert_eq!(r.status, 502, "{path}");
    }
    // The connection still serves.
    let mut c = Client::connect(edge.eyeball_addr());
    assert_eq!(c.get("a.test", "/hello").status, 200);
}

#[test]
fn websocket_echo_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, peer) = edge_and_peer(dir.path());
    let mut c = Client::connect(edge.eyeball_addr());
    c.stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let (status, headers) = c.read_head();
    assert_eq!(status, 101, "{headers:?}");
    let req = peer.next_request();
    assert_eq!(req.kind, ConnectionType::Websocket);
    assert_eq!(
        meta(&req, "HttpHeader:Sec-Websocket-Key"),
        ["dGhlIHNhbXBsZSBub25jZQ=="]
    );
    for size in [1usize, 1000, 200_000] {
        let data = pattern(size, 9);
        c.stream.write_all(&data).unwrap();
        assert_eq!(c.read_exact_body(size), data);
    }
}

#[test]
fn eyeball_going_away_stops_the_quic_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, peer) = edge_and_peer(dir.path());
    let mut c = Client::connect(edge.eyeball_addr());
    c.stream
        .write_all(b"GET /hang HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let (status, _) = c.read_head();
    assert_eq!(status, 200);
    let _ = peer.next_request();
    drop(c);
    loop {
        match peer.next() {
            Seen::WriteStopped => break,
            Seen::Request(_) | Seen::Body(..) | Seen::Registered => {}
        }
    }
    // Nothing is left in flight on the connection.
    assert!(common::eventually_blocking(WAIT, || {
        let mut c = Client::connect(edge.eyeball_addr());
        c.get("a.test", "/hello").status == 200
    }));
}
