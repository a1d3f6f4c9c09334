//! The stream pipeline ([`super::serve`] and its services) over the in-memory transport
//! ([`super::mem`]) against real loopback origins: backpressure, an early response, a retry on
//! a pooled connection the origin closed, a WebSocket upgrade and trailers. Each test runs on
//! both io drivers; origins are scripted blocking threads on 127.0.0.1.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use http::{HeaderMap, HeaderValue, Method, Uri};

use super::mem::{MemEdge, Outcome, stream};
use super::{StreamHead, serve};
use crate::cli::{Command, tunnel};
use crate::config::credentials::{Credentials, encode_token};
use crate::config::secret::Secret;
use crate::connector::core::Core;
use crate::connector::options::ConnectorOptions;
use crate::connector::origin::{Dial, Target};
use crate::connector::state::Shared;
use crate::ingress::{Ingress, IngressTable, SharedIngress};
use crate::proto::http2::RequestKind;
use crate::runtime::{DriverKind, StopSignal, build_runtime};
use crate::tls::{EdgeRoots, KxPolicy, connector_client_config_with};

/// Every test's bound: a pipeline that deadlocks fails here instead of hanging.
const LIMIT: Duration = Duration::from_secs(20);

/// A connector core whose only ingress rule is `--url url`.
fn core(url: &str) -> (Core, oneshot::Sender<()>) {
    let token = encode_token(&Credentials {
        account_tag: "a".repeat(32),
        tunnel_secret: Secret::new(vec![1; 32]),
        tunnel_id: uuid::Uuid::nil(),
        endpoint: String::new(),
    });
    let argv: Vec<String> = ["run", "--token", &token, "--url", url]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let env = HashMap::from([("HOME".to_owned(), "/nonexistent".to_owned())]);
    let Command::TunnelRun(run) = tunnel(&argv, env) else {
        panic!("not a run");
    };
    let mut options = ConnectorOptions::resolve(&run).expect("options");
    let table = std::mem::replace(
        &mut options.ingress,
        IngressTable::new(Ingress::default_503()),
    );
    let ingress = Arc::new(SharedIngress::new(table));
    let shared = Arc::new(Shared::new(options, uuid::Uuid::nil(), ingress, 1, 1));
    let (keep, stop) = StopSignal::detached();
    let core = Core {
        shared,
        worker: 0,
        edge_tls: connector_client_config_with(EdgeRoots::Cloudflare, KxPolicy::PreferPostQuantum)
            .expect("tls"),
        pool: Default::default(),
        h2_pool: Default::default(),
        origin_tls: Default::default(),
        stop,
    };
    (core, keep)
}

fn head(kind: RequestKind, method: Method, path: &str, headers: &[(&str, &str)]) -> StreamHead {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        map.append(
            http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    StreamHead {
        kind,
        method,
        uri: Uri::try_from(format!("http://tunnel.test{path}")).unwrap(),
        headers: map,
    }
}

/// Runs `f` on each io driver with a fresh core for `url`.
fn on_both_drivers<F, Fut>(url: &str, f: F)
where
    F: Fn(Core) -> Fut,
    Fut: Future<Output = ()>,
{
    for driver in [DriverKind::IoUring, DriverKind::Poll] {
        let Ok(rt) = build_runtime(driver) else {
            // io_uring may be unavailable (seccomp, old kernel): the poll pass still runs.
            continue;
        };
        let (core, _keep) = core(url);
        rt.block_on(async {
            compio::time::timeout(LIMIT, f(core))
                .await
                .unwrap_or_else(|_| panic!("{driver:?}: the pipeline did not finish in time"));
        });
    }
}

/// Serves one in-memory stream alongside the test's edge side. A GET (no body) arrives with
/// its body already ended, as HTTP/2 headers with END_STREAM do.
async fn exchange<E, Fut>(core: &Core, head: StreamHead, window: usize, edge: E) -> Outcome
where
    E: FnOnce(MemEdge) -> Fut,
    Fut: Future<Output = ()>,
{
    let bodiless = head.method == Method::GET && head.kind == RequestKind::Http;
    let (edge_end, conn_end) = stream(head, window);
    if bodiless {
        edge_end.end();
    }
    let probe = edge_end.clone();
    let (_, ()) = futures_util::future::join(serve(core, conn_end, 0), edge(edge_end)).await;
    probe.outcome().await
}

/// Reads an HTTP/1 head (through the blank line); returns it and any bytes read past it.
fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = s.read(&mut chunk).expect("origin read");
        assert!(n > 0, "connection closed before the end of the head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn listener_with_small_buffers() -> (TcpListener, SocketAddr) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // Inherited by accepted sockets: the origin's kernel buffer stays far below a test chunk.
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(16).unwrap();
    let l: TcpListener = sock.into();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// The request body's credit is released only once the origin took the bytes: while the
/// origin reads nothing, a chunk far larger than the socket buffers stays unreleased.
#[test]
fn backpressure_holds_credit_until_the_origin_took_the_bytes() {
    const BIG: usize = 8 << 20;
    const SMALL: usize = 1 << 20;
    let (l, addr) = listener_with_small_buffers();
    let l = &l;
    on_both_drivers(&format!("http://{addr}"), |core| async move {
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let l = l.try_clone().unwrap();
        let origin = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let (head, mut body) = read_head(&mut s);
            assert!(head.contains("Content-Length: 9437184"), "{head}");
            let mut chunk = [0u8; 1];
            while body.is_empty() {
                let n = s.read(&mut chunk).unwrap();
                body.extend_from_slice(&chunk[..n]);
            }
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let mut rest = vec![0u8; BIG + SMALL - body.len()];
            s.read_exact(&mut rest).unwrap();
            body.extend_from_slice(&rest);
            let sum = format!("{:016x}", fnv(&body, FNV_START));
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{sum}",
                sum.len()
            )
            .unwrap();
        });
        let big = pattern(BIG, 1);
        let small = pattern(SMALL, 2);
        let want = format!("{:016x}", fnv(&small, fnv(&big, FNV_START)));
        let h = head(
            RequestKind::Http,
            Method::POST,
            "/upload",
            &[("content-length", &(BIG + SMALL).to_string())],
        );
        let out = exchange(&core, h, BIG, |edge| async move {
            edge.push(big).await.unwrap();
            started_rx.await.unwrap();
            // The origin has the first bytes of the chunk and reads no more: the chunk cannot
            // have gone into its socket yet, so none of its credit may be back.
            assert_eq!(
                edge.released(),
                0,
                "credit released before the origin took the bytes"
            );
            go_tx.send(()).unwrap();
            edge.push(small).await.unwrap();
            edge.end();
        })
        .await;
        origin.join().unwrap();
        let head = out.head.expect("a response head");
        assert_eq!(head.status, 200);
        assert!(out.finished);
        assert_eq!(out.body, want.as_bytes());
    });
}

/// An origin that answers before the request body ended: the head reaches the edge while the
/// body is still open, and the rest of the body still reaches the origin.
#[test]
fn early_response_flows_while_the_upload_continues() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let l = &l;
    on_both_drivers(&format!("http://{addr}"), |core| async move {
        let l = l.try_clone().unwrap();
        let origin = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let (_, mut body) = read_head(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
                .unwrap();
            let mut rest = vec![0u8; 5 - body.len()];
            s.read_exact(&mut rest).unwrap();
            body.extend_from_slice(&rest);
            s.write_all(b"got:").unwrap();
            s.write_all(&body).unwrap();
        });
        let h = head(
            RequestKind::Http,
            Method::POST,
            "/",
            &[("content-length", "5")],
        );
        let out = exchange(&core, h, 1 << 16, |edge| async move {
            // Nothing of the body was sent: the head must come anyway.
            let head = edge.head().await.expect("an early head");
            assert_eq!(head.status, 200);
            edge.push(Bytes::from_static(b"hello")).await.unwrap();
            edge.end();
        })
        .await;
        origin.join().unwrap();
        assert!(out.finished);
        assert_eq!(out.body, &b"got:hello"[..]);
    });
}

/// A pooled keep-alive connection that the origin closed meanwhile: a bodiless request is
/// retried once on a fresh connection instead of failing with 502.
#[test]
fn closed_pooled_connection_is_retried_on_a_fresh_one() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let l = &l;
    on_both_drivers(&format!("http://{addr}"), |core| async move {
        let (closed_tx, closed_rx) = oneshot::channel::<()>();
        let l = l.try_clone().unwrap();
        let origin = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            read_head(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
                .unwrap();
            // Wait until the connector is done with the response (it reads nothing more),
            // then close the kept-alive connection.
            s.shutdown(std::net::Shutdown::Both).unwrap();
            drop(s);
            closed_tx.send(()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            read_head(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
                .unwrap();
        });
        let first = exchange(
            &core,
            head(RequestKind::Http, Method::GET, "/", &[]),
            1024,
            |_| async {},
        )
        .await;
        assert_eq!(first.body, &b"one"[..]);
        let key = Dial {
            target: Target::Tcp {
                host: "127.0.0.1".into(),
                port: addr.port(),
            },
            tls: None,
            connect_timeout: Duration::ZERO,
            tls_timeout: Duration::ZERO,
            tcp_keep_alive: Duration::ZERO,
        }
        .key();
        assert_eq!(
            core.pool.idle_count(&key),
            1,
            "the first connection was pooled"
        );
        closed_rx.await.unwrap();
        let second = exchange(
            &core,
            head(RequestKind::Http, Method::GET, "/", &[]),
            1024,
            |_| async {},
        )
        .await;
        assert_eq!(second.failed, None, "the stale connection was not retried");
        assert_eq!(second.head.map(|h| h.status), Some(200));
        assert_eq!(second.body, &b"two"[..]);
        origin.join().unwrap();
    });
}

/// A WebSocket upgrade: 101 from the origin, then raw bytes both ways until the edge ends.
#[test]
fn websocket_upgrade_pipes_both_ways() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let l = &l;
    on_both_drivers(&format!("http://{addr}"), |core| async move {
        let l = l.try_clone().unwrap();
        let origin = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let (head, early) = read_head(&mut s);
            assert!(head.contains("Upgrade: websocket"), "{head}");
            assert!(early.is_empty());
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-Websocket-Accept: x\r\n\r\n",
            )
            .unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        let h = head(
            RequestKind::Websocket,
            Method::GET,
            "/ws",
            &[
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
            ],
        );
        let out = exchange(&core, h, 1 << 16, |edge| async move {
            let head = edge.head().await.expect("a head");
            assert_eq!(head.status, 101);
            edge.push(Bytes::from_static(b"frame-bytes")).await.unwrap();
            assert_eq!(edge.read(11).await, &b"frame-bytes"[..]);
            assert_eq!(edge.released(), 11, "echoed bytes were taken by the origin");
            edge.end();
        })
        .await;
        origin.join().unwrap();
        assert!(out.finished, "{out:?}");
    });
}

/// A chunked response with trailers: the body and then the trailers reach the edge.
#[test]
fn trailers_follow_the_body() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let l = &l;
    on_both_drivers(&format!("http://{addr}"), |core| async move {
        let l = l.try_clone().unwrap();
        let origin = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            read_head(&mut s);
            s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
            )
            .unwrap();
        });
        let out = exchange(
            &core,
            head(RequestKind::Http, Method::GET, "/t", &[]),
            1024,
            |_| async {},
        )
        .await;
        origin.join().unwrap();
        assert!(out.finished);
        assert_eq!(out.body, &b"hello world"[..]);
        let trailers = out.trailers.expect("trailers");
        assert_eq!(
            trailers.get("x-sum").map(|v| v.as_bytes()),
            Some(&b"42"[..])
        );
    });
}

/// An idle upgraded WebSocket's task is the `serve` future, held whole for hours: everything
/// up to the response head (the request, ingress match, dialing, the HTTP exchange) lives in a
/// box that is freed before piping, so the future itself stays small. With that state inline
/// it was about 5 KB (quickbench build, http2 transport); 1.2 KB with it boxed.
#[test]
fn serve_future_holds_no_request_state() {
    let (core, _keep) = core("http://127.0.0.1:1");
    let h = head(
        RequestKind::Websocket,
        Method::GET,
        "/ws",
        &[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")],
    );
    let (_edge, conn_end) = stream(h, 1 << 16);
    let fut = serve(&core, conn_end, 0);
    let size = std::mem::size_of_val(&fut);
    println!("serve future: {size} bytes");
    assert!(size <= 2048, "the serve future grew to {size} bytes");
}

/// The head the origin gets (spec §8.1), byte for byte: our headers as written, the edge's
/// in Go's canonical form and in arrival order, hop-by-hop ones and the tunnel's own dropped,
/// the framing from the body, the host moved to `X-Forwarded-Host` under `httpHostHeader`.
#[test]
fn origin_request_head_is_written_from_the_edge_request() {
    let (core, _keep) = core("http://127.0.0.1:1");
    let req = head(
        RequestKind::Http,
        Method::POST,
        "/upload?x=1",
        &[
            ("cf-ray", "8f00-AMS"),
            ("connection", "close"),
            ("x-custom-header", "a b"),
            ("content-length", "5"),
            ("upgrade", "h2c"),
            (crate::proto::headers::TRACE_ID, "t"),
            ("x-custom-header", "second"),
            ("user-agent", "probe"),
        ],
    );
    let id = String::from_utf8(core.shared.connector_id_text.to_vec()).unwrap();
    let opts = crate::ingress::OriginRequest {
        http_host_header: "origin.internal".into(),
        ..Default::default()
    };
    let written = super::http::outgoing(&core, &req, false, &opts, false).encode();
    assert_eq!(
        std::str::from_utf8(&written).unwrap(),
        format!(
            "POST /upload?x=1 HTTP/1.1\r\nHost: origin.internal\r\n\
             X-Forwarded-Host: tunnel.test\r\nCf-Ray: 8f00-AMS\r\nX-Custom-Header: a b\r\n\
             X-Custom-Header: second\r\nUser-Agent: probe\r\nCf-Warp-Tag-Id: {id}\r\n\
             Connection: keep-alive\r\nContent-Length: 5\r\n\r\n"
        )
    );
    // No length and a body still coming: chunked, unless chunked encoding is disabled, when
    // the body runs to the close.
    let req = head(RequestKind::Http, Method::PUT, "", &[]);
    let chunked = super::http::outgoing(&core, &req, false, &Default::default(), false).encode();
    assert!(
        std::str::from_utf8(&chunked)
            .unwrap()
            .starts_with("PUT / HTTP/1.1\r\nHost: tunnel.test\r\n"),
    );
    assert!(chunked.ends_with(b"\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"));
    let raw = crate::ingress::OriginRequest {
        disable_chunked_encoding: true,
        ..Default::default()
    };
    let until_close = super::http::outgoing(&core, &req, false, &raw, false).encode();
    let text = std::str::from_utf8(&until_close).unwrap();
    assert!(
        text.ends_with(&format!(
            "Cf-Warp-Tag-Id: {id}\r\nConnection: close\r\n\r\n"
        )),
        "{text}"
    );
    assert!(!text.contains("keep-alive"), "{text}");
}
