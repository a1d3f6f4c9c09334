//! Origin kinds through the connector binary: https origins verified against a `caPool`
//! (with `originServerName`), `noTLSVerify`, an untrusted certificate (502), `unix:` and
//! `unix+tls:` sockets, all real listeners on loopback or in a temp dir.

mod connector_support;

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use connector_support::*;
use ringflare::runtime::DriverKind;
use ringflare::tls::{EdgeCa, edge_server_config};

/// A TLS echo origin on TCP using the given certificate authority's server certificate
/// (SANs `h2.cftunnel.com`, `quic.cftunnel.com`).
fn tls_origin(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                serve_echo(rustls::StreamOwned::new(conn, stream));
            });
        }
    });
    addr
}

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
