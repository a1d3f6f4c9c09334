//! Origin kinds through the connector binary: https origins verified against a `caPool`
//! (with `originServerName`), `noTLSVerify`, an untrusted certificate (502), `unix:` and
//! `unix+tls:` sockets, all real listeners on loopback or in a temp dir.

mod common;

use std::os::unix::net::UnixListener;
use std::sync::Arc;

use common::*;
use ringflare::runtime::DriverKind;
use ringflare::tls::{EdgeCa, edge_server_config};

fn unix_origin(path: &std::path::Path, tls: Option<Arc<rustls::ServerConfig>>) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tls = tls.clone();
            std::thread::spawn(move || match tls {
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    serve_echo(rustls::StreamOwned::new(conn, stream));
                }
                None => serve_echo(stream),
            });
        }
    });
}

#[test]
fn https_unix_and_unix_tls_origins() {
    let certs = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(certs.path()).unwrap();
    let server = edge_server_config(&ca).unwrap();
    let https = tls_origin(server.clone());
    let sock = certs.path().join("plain.sock");
    let tls_sock = certs.path().join("tls.sock");
    unix_origin(&sock, None);
    unix_origin(&tls_sock, Some(server));
    let ca_pem = ca.ca_pem_path().display().to_string();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "ingress:
  - hostname: verified.test
    service: https://{https}
    originRequest:
      caPool: {ca_pem}
      originServerName: h2.cftunnel.com
  - hostname: sni.test
    service: https://{https}
    originRequest:
      caPool: {ca_pem}
      matchSNItoHost: true
  - hostname: insecure.test
    service: https://{https}
    originRequest:
      noTLSVerify: true
  - hostname: untrusted.test
    service: https://{https}
  - hostname: unix.test
    service: unix:{}
  - hostname: unixtls.test
    service: unix+tls:{}
    originRequest:
      caPool: {ca_pem}
      originServerName: quic.cftunnel.com
  - service: http_status:404
",
                sock.display(),
                tls_sock.display()
            ),
        )
        .unwrap();
        let _connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let mut conn = edge.accept().await;
        for host in [
            "verified.test",
            "insecure.test",
            "unix.test",
            "unixtls.test",
        ] {
            let reply = conn.request(get(host, "/x"), None).await;
            assert_eq!(reply.status, 200, "{host}");
            let text = String::from_utf8(reply.body).unwrap();
            assert!(text.starts_with("GET /x HTTP/1.1\n"), "{host}: {text}");
            assert!(text.contains(&format!("Host: {host}\n")), "{host}: {text}");
        }
        // SNI = the request host, which the certificate does not cover; the untrusted origin's
        // certificate is not in any pool: both fail before a response, so 502 from cloudflared.
        for host in ["sni.test", "untrusted.test"] {
            let reply = conn.request(get(host, "/"), None).await;
            assert_eq!(reply.status, 502, "{host}");
            assert_eq!(reply.meta, r#"{"src":"cloudflared"}"#);
        }
    });
}

/// An HTTP/2-over-TLS origin (ALPN h2) on its own thread: answers with the version, method,
/// URI and request-body length it saw; counts connections.
fn h2_origin(
    config: Arc<rustls::ServerConfig>,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = compio::tls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = conns.clone();
    std::thread::spawn(move || {
        let rt = ringflare::runtime::build_runtime(DriverKind::Poll).unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = compio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                compio::runtime::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut conn) =
                        h2::server::handshake(ringflare::runtime::h2io::tls(tls)).await
                    else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        compio::runtime::spawn(async move {
                            let line =
                                format!("{:?} {} {}", req.version(), req.method(), req.uri());
                            let mut body = req.into_body();
                            let mut n = 0;
                            while let Some(Ok(c)) = body.data().await {
                                n += c.len();
                                let _ = body.flow_control().release_capacity(c.len());
                            }
                            let text = format!("{line} body={n}");
                            let resp = http::Response::builder()
                                .header("content-type", "text/plain")
                                .header("x-origin", "h2")
                                .body(())
                                .unwrap();
                            let mut send = respond.send_response(resp, false).unwrap();
                            let _ = send.send_data(bytes::Bytes::from(text), true);
                        })
                        .detach();
                    }
                })
                .detach();
            }
        });
    });
    (addr, conns)
}

#[test]
fn http2_origin_multiplexes_requests_over_one_connection() {
    let certs = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(certs.path()).unwrap();
    let (h2addr, conns) = h2_origin(edge_server_config(&ca).unwrap());
    let ca_pem = ca.ca_pem_path().display().to_string();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "ingress:
  - hostname: h2.test
    service: https://{h2addr}
    originRequest:
      caPool: {ca_pem}
      originServerName: h2.cftunnel.com
      http2Origin: true
  - service: http_status:404
"
            ),
        )
        .unwrap();
        let _connector = Connector::start(&edge, Some(&cfg), &[], &[]);
        let mut conn = edge.accept().await;
        for i in 0..3 {
            let reply = conn
                .request(get("h2.test", &format!("/r{i}?a=b")), None)
                .await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("X-Origin"), Some("h2"));
            let text = String::from_utf8(reply.body).unwrap();
            assert_eq!(
                text,
                format!("HTTP/2.0 GET https://h2.test/r{i}?a=b body=0")
            );
        }
        let post = http::Request::post("https://h2.test/up").body(()).unwrap();
        let reply = conn
            .request(post, Some(bytes::Bytes::from(vec![1u8; 300_000])))
            .await;
        assert_eq!(
            String::from_utf8(reply.body).unwrap(),
            "HTTP/2.0 POST https://h2.test/up body=300000"
        );
        assert_eq!(
            conns.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one multiplexed connection"
        );
    });
}

/// A TLS origin that answers one WebSocket upgrade per connection with 101 and then echoes
/// raw bytes (what the connector relays after an upgrade).
fn wss_origin(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    tls_server(config, |mut s| {
        use std::io::{Read, Write};
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        if s.write_all(resp.as_bytes())
            .and_then(|()| s.flush())
            .is_err()
        {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).and_then(|()| s.flush()).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// A WebSocket through an https origin (rustls over owned buffers on the origin side): the
/// upgrade is answered and bytes flow both ways after it, on both io drivers.
#[test]
fn websocket_to_https_origin() {
    let certs = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(certs.path()).unwrap();
    let wss = wss_origin(edge_server_config(&ca).unwrap());
    for driver in ["io_uring", "poll"] {
        block_on(DriverKind::Poll, async {
            let edge = TestEdge::new().await;
            let cfg = edge.dir.path().join("config.yml");
            std::fs::write(
                &cfg,
                format!(
                    "ingress:\n  - hostname: wss.test\n    service: https://{wss}\n    originRequest:\n      noTLSVerify: true\n  - service: http_status:404\n"
                ),
            )
            .unwrap();
            let _connector = Connector::start(&edge, Some(&cfg), &["--io-driver", driver], &[]);
            let conn = edge.accept().await;
            let mut client = conn.client.clone().ready().await.unwrap();
            let req = http::Request::get("https://wss.test/ws")
                .header("cf-cloudflared-proxy-connection-upgrade", "websocket")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .body(())
                .unwrap();
            let (resp, mut send) = client.send_request(req, false).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200, "{driver}");
            let mut body = resp.into_body();
            for round in 0..3 {
                let msg = format!("round {round} over wss");
                ringflare::runtime::h2stream::send_all(
                    &mut send,
                    bytes::Bytes::from(msg.clone().into_bytes()),
                )
                .await
                .unwrap();
                let mut got = Vec::new();
                while got.len() < msg.len() {
                    let chunk = body.data().await.unwrap().unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                    got.extend_from_slice(&chunk);
                }
                assert_eq!(got, msg.as_bytes(), "{driver}");
            }
            // 4 MiB both ways at once: the origin's read and write halves share one rustls
            // connection and run concurrently, under backpressure on both sides.
            let bulk: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
            let up = async {
                for chunk in bulk.chunks(64 * 1024) {
                    ringflare::runtime::h2stream::send_all(
                        &mut send,
                        bytes::Bytes::copy_from_slice(chunk),
                    )
                    .await
                    .unwrap();
                }
            };
            let down = async {
                let mut got = Vec::with_capacity(bulk.len());
                while got.len() < bulk.len() {
                    let chunk = body.data().await.unwrap().unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                    got.extend_from_slice(&chunk);
                }
                got
            };
            let ((), got) = futures_util::future::join(up, down).await;
            assert!(
                got == bulk,
                "{driver}: 4 MiB echoed through the wss origin changed"
            );
        });
    }
}
