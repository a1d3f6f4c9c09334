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
