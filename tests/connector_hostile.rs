//! Hostile visitors and broken origins through the connector binary and the test edge (issue
//! 10, items 1-3 and the origin/WebSocket parts of 7), each reproducing the attack on loopback:
//! an origin streaming 1-byte chunks, a WebSocket frame's header split from its payload, a
//! visitor flooding pings and never reading pongs, edge resets while the origin is silent or an
//! upload is half done, endless 1xx responses, oversized control frames, aborted downloads.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use ringflare::runtime::DriverKind;

fn config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(&path, body).unwrap();
    path
}

/// Reads a request head (through the blank line); false at EOF.
fn read_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// An origin that runs `serve` on each connection after reading its request head.
fn origin(serve: impl Fn(TcpStream) + Send + Sync + Clone + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || {
                if read_head(&mut s) {
                    serve(s);
                }
            });
        }
    });
    addr
}

/// Reads until EOF or error (bounded by a generous timeout); true when the peer closed.
fn wait_closed(mut s: TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut sink = [0u8; 16 * 1024];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn masked(b0: u8, payload: &[u8]) -> Bytes {
    let mask = [7u8, 1, 2, 3];
    let mut b = BytesMut::new();
    b.put_u8(b0);
    if payload.len() < 126 {
        b.put_u8(0x80 | payload.len() as u8);
    } else {
        b.put_u8(0x80 | 126);
        b.put_u16(payload.len() as u16);
    }
    b.put_slice(&mask);
    b.extend(payload.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]));
    b.freeze()
}

fn ws_request(host: &str) -> http::Request<()> {
    http::Request::get(format!("https://{host}/"))
        .header("cf-cloudflared-proxy-connection-upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap()
}

#[test]
fn one_byte_chunks_from_the_origin_are_batched_into_few_data_frames() {
    const CHUNKS: usize = 4000;
    let addr = origin(|mut s| {
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..CHUNKS {
            resp.extend_from_slice(b"1\r\nx\r\n");
        }
        resp.extend_from_slice(b"0\r\n\r\n");
        let _ = s.write_all(&resp);
        let _ = wait_closed(s);
    });
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{addr}\n"),
        );
        let _connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let conn = edge.accept().await;
        let mut client = conn.client.clone().ready().await.unwrap();
        let (resp, _send) = client.send_request(get("chunks.test", "/"), true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let (mut frames, mut bytes) = (0usize, 0usize);
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            if !chunk.is_empty() {
                frames += 1;
                bytes += chunk.len();
            }
        }
        assert_eq!(bytes, CHUNKS);
        // One frame per chunk before the fix; now one per origin read.
        assert!(
            frames <= 64,
            "{CHUNKS} one-byte chunks went out as {frames} DATA frames"
        );
    });
}

#[test]
fn websocket_frame_header_travels_with_its_payload_and_pings_are_bounded() {
    let echo = tcp_echo();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: tcp://{echo}\n"),
        );
        let _connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let conn = edge.accept().await;
        let mut client = conn.client.clone().ready().await.unwrap();
        let (resp, mut send) = client.send_request(ws_request("ws.test"), false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        ringflare::runtime::h2stream::send_all(&mut send, masked(0x82, b"hello"))
            .await
            .unwrap();
        let chunk = body.data().await.unwrap().unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        // Before the fix the 2-byte header was a DATA frame of its own.
        assert_eq!(&chunk[..], b"\x82\x05hello");

        // 3,000 maximal pings, pongs never read: the connector keeps at most one pong waiting
        // (it used to queue every one without bound).
        const PINGS: usize = 3000;
        let ping = masked(0x89, &[0x55; 125]);
        for _ in 0..PINGS {
            ringflare::runtime::h2stream::send_all(&mut send, ping.clone())
                .await
                .unwrap();
        }
        // A data frame after the pings marks where they end in the reply.
        ringflare::runtime::h2stream::send_all(&mut send, masked(0x82, b"end"))
            .await
            .unwrap();
        let mut got = BytesMut::new();
        let mut pongs = 0usize;
        'read: loop {
            let chunk = compio::time::timeout(Duration::from_secs(20), body.data())
                .await
                .expect("the bridge stopped answering")
                .unwrap()
                .unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
            while let Some(f) = ringflare::proto::ws::decode(&mut got).unwrap() {
                match f.opcode {
                    0x0a => pongs += 1,
                    0x02 if &f.payload[..] == b"end" => break 'read,
                    _ => {}
                }
            }
        }
        assert!(
            pongs < PINGS / 2,
            "{pongs} of {PINGS} pongs were queued while the visitor was not reading"
        );
    });
}

#[test]
fn oversized_or_fragmented_control_frames_close_with_1002() {
    let echo = tcp_echo();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: tcp://{echo}\n"),
        );
        let _connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let conn = edge.accept().await;
        for bad in [
            masked(0x89, &[1u8; 200]),
            masked(0x09, b"frag"),
            masked(0x83, b"x"),
        ] {
            let mut client = conn.client.clone().ready().await.unwrap();
            let (resp, mut send) = client.send_request(ws_request("ws.test"), false).unwrap();
            let resp = resp.await.unwrap();
            let mut body = resp.into_body();
            ringflare::runtime::h2stream::send_all(&mut send, bad)
                .await
                .unwrap();
            let mut got = BytesMut::new();
            let close = loop {
                let chunk = compio::time::timeout(Duration::from_secs(20), body.data())
                    .await
                    .expect("no close frame")
                    .expect("stream ended without a close frame")
                    .unwrap();
                got.extend_from_slice(&chunk);
                if let Some(f) = ringflare::proto::ws::decode(&mut got).unwrap() {
                    break f;
                }
            };
            assert_eq!(
                close.opcode, 0x08,
                "a control frame violation is answered by close"
            );
            assert_eq!(&close.payload[..], &1002u16.to_be_bytes());
        }
    });
}

#[test]
fn an_edge_reset_closes_the_origin_connection_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    // Each origin connection counts its request head, then its close by the connector.
    let heads = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (h, c) = (heads.clone(), closed.clone());
    let addr = origin(move |s| {
        h.fetch_add(1, SeqCst);
        // Never answers; reads (an upload, if any) until the connector lets go.
        if wait_closed(s) {
            c.fetch_add(1, SeqCst);
        }
    });
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{addr}\n"),
        );
        let _connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let conn = edge.accept().await;
        // A GET the origin never answers, and an upload aborted after 64 KiB of 10 MB.
        let mut client = conn.client.clone().ready().await.unwrap();
        let (_resp, mut get_send) = client.send_request(get("silent.test", "/"), false).unwrap();
        get_send.send_data(Bytes::new(), true).unwrap();
        let upload = http::Request::post("https://silent.test/up")
            .header("content-length", "10000000")
            .body(())
            .unwrap();
        let mut client = conn.client.clone().ready().await.unwrap();
        let (_resp2, mut up_send) = client.send_request(upload, false).unwrap();
        ringflare::runtime::h2stream::send_all(&mut up_send, Bytes::from(vec![7u8; 64 * 1024]))
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(15), || heads.load(SeqCst) == 2).await,
            "both requests reach the origin"
        );
        // Reset both, as the edge does when the visitor goes away or it gives up (524).
        get_send.send_reset(h2::Reason::CANCEL);
        up_send.send_reset(h2::Reason::CANCEL);
        assert!(
            eventually(Duration::from_secs(15), || closed.load(SeqCst) == 2).await,
            "the origin connections stayed open after the edge reset their streams ({} closed)",
            closed.load(SeqCst)
        );
    });
}

#[test]
fn endless_interim_responses_are_a_502() {
    let addr = origin(|mut s| {
        let mut resp = Vec::new();
        for _ in 0..100 {
            resp.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        resp.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let _ = s.write_all(&resp);
        let _ = wait_closed(s);
    });
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{addr}\n"),
        );
        let _connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let mut conn = edge.accept().await;
        let reply = conn.request(get("interim.test", "/"), None).await;
        assert_eq!(reply.status, 502);
        assert_eq!(reply.meta, r#"{"src":"cloudflared"}"#);
    });
}

#[test]
fn an_aborted_download_is_logged_as_aborted() {
    let addr = origin(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nonly this");
        // Closes with most of the body missing.
    });
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{addr}\n"),
        );
        let connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let conn = edge.accept().await;
        let mut client = conn.client.clone().ready().await.unwrap();
        let (resp, _send) = client.send_request(get("abort.test", "/"), true).unwrap();
        // The reset may reach the client together with the head (then the response itself
        // fails) or after some of the body: either way the body never ends cleanly.
        let ended_cleanly = match resp.await {
            Err(e) => {
                assert!(e.is_reset(), "{e}");
                false
            }
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                let mut body = resp.into_body();
                let mut clean = true;
                while let Some(chunk) = body.data().await {
                    if chunk.is_err() {
                        clean = false;
                        break;
                    }
                }
                clean
            }
        };
        assert!(!ended_cleanly, "a truncated body must not end as complete");
        let log = connector.log_when(Duration::from_secs(10), |l| l.contains("aborted"));
        assert!(log.contains("aborted"), "{log}");
    });
}
