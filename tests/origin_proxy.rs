//! Origin requests through `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`, as Go's
//! `ProxyFromEnvironment` routes them for cloudflared: the connector binary runs with the
//! variables set against a tiny proxy on loopback that records what it was asked and forwards
//! every request to a real origin (plain http in absolute form, https through CONNECT).
//! Loopback origins and `NO_PROXY` names never reach the proxy.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::*;
use ringflare::runtime::DriverKind;
use ringflare::tls::{EdgeCa, edge_server_config};

/// What the proxy was asked: the request line and the Proxy-Authorization header, if any.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Copies bytes one way until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// An HTTP proxy: CONNECT tunnels go to `tls_origin`, absolute-form requests to `plain_origin`
/// (whatever host they name, since those names do not resolve here).
fn proxy(plain_origin: SocketAddr, tls_origin: SocketAddr) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut head = String::new();
                let mut auth = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.strip_prefix("Proxy-Authorization: ") {
                        auth = Some(v.trim_end().to_owned());
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let request_line = head.lines().next().unwrap_or_default().to_owned();
                let connect = request_line.starts_with("CONNECT ");
                log.lock().unwrap().push((request_line, auth));
                let target = if connect { tls_origin } else { plain_origin };
                let mut upstream = TcpStream::connect(target).unwrap();
                let mut client = client;
                if connect {
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                } else {
                    upstream.write_all(head.as_bytes()).unwrap();
                }
                upstream.write_all(reader.buffer()).unwrap();
                pipe(upstream.try_clone().unwrap(), client.try_clone().unwrap());
                let _ = std::io::copy(&mut client, &mut upstream);
                let _ = upstream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, seen)
}

#[test]
fn origins_go_through_the_environment_proxy_as_in_go() {
    let certs = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(certs.path()).unwrap();
    let tls = tls_origin(edge_server_config(&ca).unwrap());
    let plain = echo_origin();
    let direct = echo_origin();
    let (proxy_addr, seen) = proxy(plain.addr, tls);
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "ingress:
  - hostname: plain.test
    service: http://plain.invalid:8080
  - hostname: secure.test
    service: https://secure.invalid:8443
    originRequest:
      noTLSVerify: true
  - hostname: bypass.test
    service: http://bypass.invalid:8080
    originRequest:
      connectTimeout: 3s
  - hostname: loop.test
    service: http://127.0.0.1:{}
  - service: http_status:404
",
                direct.addr.port()
            ),
        )
        .unwrap();
        let http_proxy = format!("http://user:pass@{proxy_addr}");
        let https_proxy = proxy_addr.to_string();
        let env = [
            ("HTTP_PROXY", http_proxy.as_str()),
            ("HTTPS_PROXY", https_proxy.as_str()),
            ("NO_PROXY", "bypass.invalid"),
        ];
        let flags: Vec<String> = vec!["--ha-connections".into(), "1".into()];
        let connector = Connector::spawn_env(
            &[edge.addr()],
            &edge.ca,
            &token(),
            Some(&cfg),
            &flags,
            &[],
            &env,
        );
        let mut conn = edge.accept().await;

        // Plain http: absolute form on the proxy connection, with the proxy's credentials.
        let reply = conn.request(get("plain.test", "/x?q=1"), None).await;
        assert_eq!(reply.status, 200, "{}", connector.log_text());
        let text = String::from_utf8(reply.body).unwrap();
        assert!(
            text.starts_with("GET http://plain.invalid:8080/x?q=1 HTTP/1.1\n"),
            "{text}"
        );
        assert!(text.contains("Host: plain.test\n"), "{text}");

        // https: a CONNECT tunnel, TLS inside it, origin-form request.
        let reply = conn.request(get("secure.test", "/y"), None).await;
        assert_eq!(reply.status, 200, "{}", connector.log_text());
        let text = String::from_utf8(reply.body).unwrap();
        assert!(text.starts_with("GET /y HTTP/1.1\n"), "{text}");

        // Loopback is never proxied: the request reaches the origin directly.
        let reply = conn.request(get("loop.test", "/z"), None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            direct.connections.load(std::sync::atomic::Ordering::SeqCst),
            1
        );

        // NO_PROXY: dialled directly, and the name does not resolve: cloudflared's 502.
        let reply = conn.request(get("bypass.test", "/"), None).await;
        assert_eq!(reply.status, 502);

        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (
                    "GET http://plain.invalid:8080/x?q=1 HTTP/1.1".to_owned(),
                    Some("Basic dXNlcjpwYXNz".to_owned())
                ),
                ("CONNECT secure.invalid:8443 HTTP/1.1".to_owned(), None),
            ],
            "what the proxy was asked"
        );
    });
}

/// A proxy that refuses: the request fails with cloudflared's 502 and the log names the
/// proxy's answer, as Go's `proxyconnect` error does.
#[test]
fn a_refusing_proxy_gives_502() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = client.read(&mut buf);
            let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        }
    });
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let cfg = edge.dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            "ingress:
  - service: https://secure.invalid:8443
",
        )
        .unwrap();
        let https_proxy = format!("http://{proxy_addr}");
        let env = [("HTTPS_PROXY", https_proxy.as_str())];
        let flags: Vec<String> = vec!["--ha-connections".into(), "1".into()];
        let connector = Connector::spawn_env(
            &[edge.addr()],
            &edge.ca,
            &token(),
            Some(&cfg),
            &flags,
            &[],
            &env,
        );
        let mut conn = edge.accept().await;
        let reply = conn.request(get("any.test", "/"), None).await;
        assert_eq!(reply.status, 502);
        let log = connector.log_when(std::time::Duration::from_secs(10), |l| {
            l.contains("403 Forbidden")
        });
        assert!(log.contains("proxyconnect tcp: 403 Forbidden"), "{log}");
    });
}
