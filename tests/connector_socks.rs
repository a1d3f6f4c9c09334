//! `service: socks-proxy` and `proxyType: socks` end to end on loopback: a websocket eyeball ->
//! built-in edge -> the `ringflare` connector binary (the SOCKS5 server) -> real TCP origins.
//! Covers CONNECT by IPv4 and by name, `ipRules` deny (nothing dialled), refused port,
//! unsupported command and address type, garbage instead of a greeting, and a fixed origin.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{Connector, TestTunnel, tcp_echo};
use ringflare::config::Secret;
use ringflare::config::credentials::{Credentials, encode_token};
use ringflare::edge::{Edge, EdgeOptions};

const WAIT: Duration = Duration::from_secs(30);

/// A websocket client speaking raw frames over the edge's eyeball listener.
struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Payload bytes received but not yet consumed.
    data: Vec<u8>,
}

impl Ws {
    fn open(eyeball: SocketAddr, host: &str) -> Ws {
        let stream = TcpStream::connect(eyeball).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut ws = Ws {
            stream,
            buf: Vec::new(),
            data: Vec::new(),
        };
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        ws.stream.write_all(req.as_bytes()).unwrap();
        let end = loop {
            if let Some(p) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(ws.fill(), "closed before the response head");
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        ws.buf.drain(..end);
        ws
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return n > 0;
                }
                Err(e) => panic!("eyeball read: {e}"),
            }
        }
    }

    /// Sends `payload` as one masked binary frame.
    fn send(&mut self, payload: &[u8]) {
        let mask = [0x5au8, 0x11, 0xc3, 0x7e];
        let mut frame = vec![0x82];
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// The next server frame (opcode, payload), or `None` at end of connection.
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (op, len7) = (self.buf[0] & 0x0f, self.buf[1] & 0x7f);
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                let (len, at) = match len7 {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if at > 0 && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((op, payload));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Exactly `n` data payload bytes.
    fn read_data(&mut self, n: usize) -> Vec<u8> {
        while self.data.len() < n {
            let (op, payload) = self.frame().expect("stream ended before the data");
            assert!(op == 2 || op == 0, "unexpected opcode {op}");
            self.data.extend_from_slice(&payload);
        }
        self.data.drain(..n).collect()
    }

    /// Asserts that the server ends the stream (a close frame at most, no data).
    fn expect_end(&mut self) {
        assert!(self.data.is_empty(), "unread data {:?}", self.data);
        while let Some((op, payload)) = self.frame() {
            assert_eq!(op, 8, "data after the end: {payload:?}");
        }
    }

    /// Greeting with "no auth" offered; checks the method choice.
    fn greet(&mut self) {
        self.send(&[5, 2, 2, 0]);
        assert_eq!(self.read_data(2), [5, 0]);
    }

    /// Sends a request and returns the reply code and bound address (type, address, port).
    fn request(&mut self, cmd: u8, addr: &[u8], port: u16) -> (u8, Vec<u8>) {
        let mut req = vec![5, cmd, 0];
        req.extend_from_slice(addr);
        req.extend_from_slice(&port.to_be_bytes());
        self.send(&req);
        let reply = self.read_data(4);
        assert_eq!(&reply[..1], &[5]);
        let rest = match reply[3] {
            1 => 6,
            4 => 18,
            other => panic!("reply address type {other}"),
        };
        let mut reply = reply;
        reply.extend(self.read_data(rest));
        (reply[1], reply[3..].to_vec())
    }
}

fn v4(addr: SocketAddr) -> Vec<u8> {
    match addr.ip() {
        std::net::IpAddr::V4(a) => [&[1u8][..], &a.octets()].concat(),
        std::net::IpAddr::V6(_) => panic!("IPv4 expected"),
    }
}

fn echo_through(ws: &mut Ws, text: &[u8]) {
    ws.send(text);
    assert_eq!(ws.read_data(text.len()), text);
}

#[test]
fn socks5_over_websocket_with_ip_rules() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let echo = tcp_echo();
    // A listener whose port no rule allows: nothing may ever connect to it.
    let guarded = TcpListener::bind("127.0.0.1:0").unwrap();
    guarded.set_nonblocking(true).unwrap();
    let guarded_addr = guarded.local_addr().unwrap();
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut opts = EdgeOptions::new(dir.path());
    opts.tunnel_listen = vec!["127.0.0.1:0".parse().unwrap()];
    opts.eyeball_listen = "127.0.0.1:0".parse().unwrap();
    opts.tunnels = vec![t.edge_tunnel(&["*"])];
    opts.workers = 1;
    opts.no_pinning = true;
    let edge = Edge::start(opts).unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "ingress:
  - hostname: socks.test
    service: socks-proxy
    originRequest:
      connectTimeout: 5s
      ipRules:
        - prefix: 127.0.0.2/32
          allow: false
        - prefix: 127.0.0.0/8
          ports: [{}, {}]
          allow: true
  - hostname: fixed.test
    service: tcp://{echo}
    originRequest:
      proxyType: socks
  - service: http_status:404
",
            echo.port(),
            refused.port()
        ),
    )
    .unwrap();
    let token = encode_token(&Credentials {
        account_tag: t.account.clone(),
        tunnel_secret: Secret::new(t.secret.clone()),
        tunnel_id: t.id,
        endpoint: String::new(),
    });
    let c = Connector::spawn(
        edge.tunnel_addrs(),
        edge.ca_pem_path(),
        &token,
        Some(&cfg),
        &[
            "--ha-connections".into(),
            "1".into(),
            "--loglevel".into(),
            "debug".into(),
        ],
        &[],
    );
    assert!(edge.wait_registered(1, WAIT), "{}", c.log_text());
    let eyeball = edge.eyeball_addr();

    // Garbage instead of a greeting: the stream ends, nothing is answered.
    let mut ws = Ws::open(eyeball, "socks.test");
    ws.send(b"GET / HTTP/1.1\r\n\r\n");
    ws.expect_end();

    // CONNECT by IPv4 to the allowed echo origin.
    let mut ws = Ws::open(eyeball, "socks.test");
    ws.greet();
    let (code, bound) = ws.request(1, &v4(echo), echo.port());
    assert_eq!(code, 0, "{}", c.log_text());
    assert_eq!(
        &bound[..5],
        &[1, 127, 0, 0, 1],
        "bound address is the dialled socket's"
    );
    assert_ne!(&bound[5..], &[0, 0], "bound port is the dialled socket's");
    echo_through(&mut ws, b"hello through socks");
    let big: Vec<u8> = (0..60_000u32).map(|i| (i * 7) as u8).collect();
    for chunk in big.chunks(30_000) {
        ws.send(chunk);
    }
    assert_eq!(ws.read_data(big.len()), big);
    drop(ws);

    // CONNECT by name, greeting, request and data in one frame: the name is resolved
    // locally, the policy applies to the address, the data goes through after the reply.
    let mut ws = Ws::open(eyeball, "socks.test");
    let mut msg = vec![5u8, 1, 0, 5, 1, 0, 3, 9];
    msg.extend_from_slice(b"localhost");
    msg.extend_from_slice(&echo.port().to_be_bytes());
    msg.extend_from_slice(b"pipelined by name");
    ws.send(&msg);
    let got = ws.read_data(2 + 10 + 17);
    assert_eq!(&got[..4], &[5, 0, 5, 0], "{}", c.log_text());
    assert_eq!(&got[12..], b"pipelined by name");
    echo_through(&mut ws, b"by name");
    drop(ws);

    // Denied by ipRules: a port not listed, and an address denied by the first rule.
    for dest in [
        guarded_addr,
        SocketAddr::new([127, 0, 0, 2].into(), echo.port()),
    ] {
        let mut ws = Ws::open(eyeball, "socks.test");
        ws.greet();
        let (code, _) = ws.request(1, &v4(dest), dest.port());
        assert_eq!(code, 2, "{dest}");
        ws.expect_end();
    }
    // An IPv6 destination no rule covers: default deny.
    let mut ws = Ws::open(eyeball, "socks.test");
    ws.greet();
    let loopback6 = [&[4u8][..], &std::net::Ipv6Addr::LOCALHOST.octets()].concat();
    assert_eq!(ws.request(1, &loopback6, guarded_addr.port()).0, 2);
    ws.expect_end();
    assert_eq!(
        guarded.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "a denied destination was dialled"
    );

    // A refused port: allowed, dialled, refused.
    let mut ws = Ws::open(eyeball, "socks.test");
    ws.greet();
    assert_eq!(ws.request(1, &v4(refused), refused.port()).0, 5);
    ws.expect_end();

    // BIND is not supported; neither is address type 9.
    let mut ws = Ws::open(eyeball, "socks.test");
    ws.greet();
    assert_eq!(ws.request(2, &v4(echo), echo.port()).0, 7);
    ws.expect_end();
    let mut ws = Ws::open(eyeball, "socks.test");
    ws.greet();
    ws.send(&[5, 1, 0, 9, 0, 0]);
    let reply = ws.read_data(10);
    assert_eq!(&reply[..2], &[5, 8]);
    ws.expect_end();

    // Only "no auth" is offered by the server.
    let mut ws = Ws::open(eyeball, "socks.test");
    ws.send(&[5, 1, 2]);
    assert_eq!(ws.read_data(2), [5, 0xff]);
    ws.expect_end();

    // proxyType: socks on a tcp service: CONNECT always reaches the service's origin.
    let mut ws = Ws::open(eyeball, "fixed.test");
    ws.greet();
    let (code, _) = ws.request(1, &[1, 192, 0, 2, 1], 9);
    assert_eq!(code, 0, "{}", c.log_text());
    echo_through(&mut ws, b"fixed origin");
    drop(ws);

    // Still serving after all of that.
    let mut ws = Ws::open(eyeball, "socks.test");
    ws.greet();
    assert_eq!(ws.request(1, &v4(echo), echo.port()).0, 0);
    echo_through(&mut ws, b"still here");
    drop(ws);

    let log = c.log_text();
    assert!(
        log.contains("Socks stream handler error") && log.contains("Unsupported SOCKS version: 71"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    drop(c);
    edge.shutdown();
}
