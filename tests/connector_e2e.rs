//! The connector binary end to end against an in-test edge and real origin sockets on
//! loopback: registration as cloudflared sends it, HTTP proxying with keep-alive reuse and
//! cloudflared's header rules, 502 on origin failure, fixed statuses, hello_world.

mod common;

use bytes::Bytes;
use common::*;
use ringflare::runtime::DriverKind;

fn write_config(dir: &std::path::Path, ingress: &str) -> std::path::PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(&path, ingress).unwrap();
    path
}

#[test]
fn registers_and_proxies_http_with_keepalive_and_header_rules() {
    let origin = echo_origin();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let config = write_config(
            edge.dir.path(),
            &format!(
                "ingress:\n  - hostname: app.test\n    service: http://{}\n  - hostname: hh.test\n    service: http://{}\n    originRequest:\n      httpHostHeader: origin.internal\n  - hostname: down.test\n    service: http://{dead}\n  - hostname: hello.test\n    service: hello_world\n  - service: http_status:404\n",
                origin.addr, origin.addr
            ),
        );
        let connector = Connector::start(&edge, Some(&config), &["--tag", "env=test"], &[]);
        let mut conn = edge.accept().await;
        {
            let seen = conn.seen.borrow();
            let p = seen.params.as_ref().unwrap();
            assert_eq!(p.conn_index, 0);
            assert_eq!(p.auth.account_tag, "0123456789abcdef0123456789abcdef");
            assert_eq!(p.options.client.client_id.len(), 16);
            assert!(
                p.options
                    .client
                    .features
                    .iter()
                    .any(|f| f == "serialized_headers")
            );
            assert_eq!(p.options.origin_local_ip.len(), 16);
            assert_eq!(p.options.num_previous_attempts, 0);
        }
        for i in 0..5 {
            let mut req = get("app.test", &format!("/p/{i}?q=1"));
            // Names arrive lower case over HTTP/2; the origin sees Go's canonical form, from
            // the connector's table of common names and computed for any other.
            req.headers_mut()
                .insert("user-agent", http::HeaderValue::from_static("e2e"));
            req.headers_mut()
                .insert("x-some-custom-name", http::HeaderValue::from_static("v"));
            let reply = conn.request(req, None).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.meta, r#"{"src":"origin"}"#);
            assert_eq!(reply.header("X-Origin"), Some("echo"));
            let text = String::from_utf8(reply.body).unwrap();
            assert!(
                text.starts_with(&format!("GET /p/{i}?q=1 HTTP/1.1\n")),
                "{text}"
            );
            assert!(text.contains("Host: app.test\n"), "{text}");
            assert!(text.contains("Cf-Warp-Tag-Id: "), "{text}");
            assert!(text.contains("Cf-Warp-Tag-env: test\n"), "{text}");
            assert!(text.contains("User-Agent: e2e\n"), "{text}");
            assert!(text.contains("X-Some-Custom-Name: v\n"), "{text}");
        }
        assert_eq!(
            origin.connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "sequential requests reuse one pooled origin connection"
        );
        let body = Bytes::from(vec![b'x'; 100_000]);
        let reply = conn
            .request(
                http::Request::post("https://app.test/up").body(()).unwrap(),
                Some(body),
            )
            .await;
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            text.contains("Transfer-Encoding: chunked"),
            "unknown length goes chunked"
        );
        assert!(text.ends_with(&"x".repeat(100_000)));

        let reply = conn.request(get("hh.test", "/"), None).await;
        let text = String::from_utf8(reply.body).unwrap();
        assert!(text.contains("Host: origin.internal\n"), "{text}");
        assert!(text.contains("X-Forwarded-Host: hh.test\n"), "{text}");

        let reply = conn.request(get("down.test", "/"), None).await;
        assert_eq!(reply.status, 502);
        assert_eq!(reply.meta, r#"{"src":"cloudflared"}"#);
        assert!(reply.headers.is_empty());

        let reply = conn.request(get("other.test", "/"), None).await;
        assert_eq!((reply.status, reply.body.len()), (404, 0));

        let reply = conn.request(get("hello.test", "/"), None).await;
        assert_eq!(reply.status, 200);
        assert!(String::from_utf8_lossy(&reply.body).contains("Congrats! You created a tunnel!"));
        let log = connector.log_text();
        assert!(
            log.contains("Registered tunnel connection connIndex=0 connection="),
            "{log}"
        );
        assert!(log.contains("location=test01 protocol=http2"), "{log}");
    });
}

#[test]
fn notifies_systemd_and_writes_the_pidfile_once_connected() {
    use std::os::unix::net::UnixDatagram;
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let sock_path = edge.dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_nonblocking(true).unwrap();
        let pidfile = edge.dir.path().join("ringflare.pid");
        let flags: Vec<String> = vec![
            "--ha-connections".into(),
            "1".into(),
            "--pidfile".into(),
            pidfile.display().to_string(),
            "--edge-bind-address".into(),
            "127.0.0.2".into(),
        ];
        let connector = Connector::spawn_env(
            &[edge.addr()],
            &edge.ca,
            &token(),
            None,
            &flags,
            &["--url", "http://127.0.0.1:9"],
            &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
        );
        let conn = edge.accept().await;
        // originLocalIp is the bound local address, in 16-byte form (spec §5.3).
        let local = conn
            .seen
            .borrow()
            .params
            .as_ref()
            .unwrap()
            .options
            .origin_local_ip
            .clone();
        let want: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(local, ringflare::proto::ConnectionOptions::ip_bytes(want));
        let mut buf = [0u8; 64];
        let mut got = None;
        assert!(
            eventually(TIMEOUT, || {
                if let Ok(n) = sock.recv(&mut buf) {
                    got = Some(buf[..n].to_vec());
                }
                got.is_some()
            })
            .await
        );
        assert_eq!(got.unwrap(), b"READY=1");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        assert_eq!(pid.trim(), connector.child.id().to_string());
    });
}

/// `auto` with a token starts on QUIC; TestEdge has nothing on its UDP port, so the QUIC
/// handshake times out, the connector logs cloudflared's blocked-UDP warning, switches to
/// http2 and serves over it (issue 12 item 2).
#[test]
fn auto_falls_back_to_http2_when_udp_is_blocked() {
    let origin = echo_origin();
    block_on(DriverKind::Poll, async {
        let edge = TestEdge::new().await;
        let config = write_config(
            edge.dir.path(),
            &format!("ingress:\n  - service: http://{}\n", origin.addr),
        );
        let connector = Connector::start(&edge, Some(&config), &["--protocol", "auto"], &[]);
        // A 5 s QUIC idle timeout and a backoff under 2 s come before the http2 dial.
        let mut conn = compio::time::timeout(std::time::Duration::from_secs(30), edge.accept())
            .await
            .unwrap_or_else(|_| panic!("no http2 fallback:\n{}", connector.log_text()));
        let reply = conn.request(get("app.test", "/after-fallback"), None).await;
        assert_eq!(reply.status, 200);
        let text = String::from_utf8(reply.body).unwrap();
        assert!(text.starts_with("GET /after-fallback HTTP/1.1\n"), "{text}");
        let log = connector.log_when(std::time::Duration::from_secs(10), |l| {
            l.contains("protocol=http2")
        });
        assert!(log.contains("Initial protocol quic"), "{log}");
        assert!(
            log.contains("failed to dial to edge with quic: timeout: no recent network activity"),
            "{log}"
        );
        assert!(
            log.contains("most likely your machine/network is getting its egress UDP to port 7844 (or others) blocked or dropped"),
            "{log}"
        );
        assert!(
            log.contains("Switching to fallback protocol http2"),
            "{log}"
        );
        assert!(log.contains("location=test01 protocol=http2"), "{log}");
    });
}
