//! Streaming through the connector binary: large bodies both ways at once with checksums (on
//! the io_uring and the poll driver), many concurrent streams over one connection, websocket
//! stream services and private-network TCP streams against real echo sockets.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use ringflare::runtime::DriverKind;

fn config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(&path, body).unwrap();
    path
}

fn transfer_on(io_driver: &str) {
    let origin = streaming_echo_origin();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{origin}\n"),
        );
        let _connector = Connector::start(&edge, Some(&cfg), &["--io-driver", io_driver], &[]);
        let mut conn = edge.accept().await;
        echo_transfer(&mut conn, "big.test", 64 << 20).await;
        // Many concurrent streams over the one connection.
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let mut c = conn.handle();
            tasks.push(compio::runtime::spawn(async move {
                echo_transfer(&mut c, "many.test", 256 << 10).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn large_echo_and_concurrent_streams_on_io_uring() {
    if ringflare::runtime::select_driver(ringflare::runtime::IoDriver::IoUring).is_err() {
        println!("SKIPPED: io_uring unavailable here");
        return;
    }
    transfer_on("io_uring");
}

#[test]
fn large_echo_and_concurrent_streams_on_poll() {
    transfer_on("poll");
}

fn masked_frame(payload: &[u8]) -> Bytes {
    let mask = [7u8, 1, 2, 3];
    let mut b = BytesMut::new();
    b.put_u8(0x82);
    b.put_u8(0x80 | 126);
    b.put_u16(payload.len() as u16);
    b.put_slice(&mask);
    b.extend(payload.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]));
    b.freeze()
}

#[test]
fn websocket_tcp_service_and_private_tcp_stream_echo() {
    let echo = tcp_echo();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = config(
            edge.dir.path(),
            &format!(
                "ingress:\n  - hostname: ssh.test\n    service: tcp://{echo}\n  - hostname: hello.test\n    service: hello_world\n  - service: http_status:503\n"
            ),
        );
        let _connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let conn = edge.accept().await;
        // websocket-wrapped TCP (cloudflared access): frames in, payload to TCP, frames back.
        let mut client = conn.client.clone().ready().await.unwrap();
        let req = http::Request::get("https://ssh.test/")
            .header("cf-cloudflared-proxy-connection-upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let headers = ringflare::proto::headers::deserialize_headers(
            resp.headers()["cf-cloudflared-response-headers"]
                .to_str()
                .unwrap(),
        )
        .unwrap();
        assert!(headers.contains(&(
            "Sec-Websocket-Accept".to_owned(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned()
        )));
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        ringflare::runtime::h2stream::send_all(&mut send, masked_frame(&payload))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let mut got = BytesMut::new();
        let mut echoed = Vec::new();
        while echoed.len() < payload.len() {
            let chunk = body.data().await.unwrap().unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
            while let Some(f) = ringflare::connector::ws::decode(&mut got).unwrap() {
                assert_eq!(f.opcode, ringflare::connector::ws::OP_BINARY);
                echoed.extend_from_slice(&f.payload);
            }
        }
        assert_eq!(echoed, payload);
        // A ping from the eyeball is answered with a pong carrying the same payload.
        let mut ping = BytesMut::new();
        ping.put_u8(0x89);
        ping.put_u8(0x80 | 4);
        ping.put_slice(&[0, 0, 0, 0]);
        ping.put_slice(b"png!");
        ringflare::runtime::h2stream::send_all(&mut send, ping.freeze())
            .await
            .unwrap();
        let pong = loop {
            if let Some(f) = ringflare::connector::ws::decode(&mut got).unwrap() {
                break f;
            }
            let chunk = body.data().await.unwrap().unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        };
        assert_eq!(pong.opcode, ringflare::connector::ws::OP_PONG);
        assert_eq!(&pong.payload[..], b"png!");
        drop(send);

        // Private-network TCP stream: raw bytes both ways.
        let mut client = conn.client.clone().ready().await.unwrap();
        let req = http::Request::get(format!("https://{echo}/"))
            .header("cf-cloudflared-proxy-src", "10.0.0.1:1234")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["cf-cloudflared-response-meta"],
            r#"{"src":"origin"}"#
        );
        ringflare::runtime::h2stream::send_all(&mut send, Bytes::from_static(b"ping over tcp"))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while got.len() < 13 {
            let chunk = body.data().await.unwrap().unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, b"ping over tcp");

        // hello_world's websocket echo.
        let mut client = conn.client.clone().ready().await.unwrap();
        let req = http::Request::get("https://hello.test/ws")
            .header("cf-cloudflared-proxy-connection-upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        ringflare::runtime::h2stream::send_all(&mut send, masked_frame(b"hello ws"))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let mut got = BytesMut::new();
        let frame = loop {
            let chunk = body.data().await.unwrap().unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
            if let Some(f) = ringflare::connector::ws::decode(&mut got).unwrap() {
                break f;
            }
        };
        assert_eq!(&frame.payload[..], b"hello ws");
    });
}
