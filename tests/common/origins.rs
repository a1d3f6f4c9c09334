//! Small blocking origins on std threads, on loopback: an HTTP/1.1 echo (also behind TLS), a
//! streaming echo, a raw TCP echo, an origin that holds its answer until released, and a
//! server-sent-events origin that sends each event when the test asks. They stop when the
//! test process ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;

/// A blocking HTTP/1.1 origin on a std thread: answers each request with its method, path,
/// headers and body echoed back; counts accepted connections. Stops when the test process ends.
pub struct EchoOrigin {
    pub addr: SocketAddr,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

pub fn echo_origin() -> EchoOrigin {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || serve_echo(stream));
        }
    });
    EchoOrigin { addr, connections }
}

/// Serves keep-alive requests on one connection until the peer closes it.
pub fn serve_echo<S: Read + Write>(stream: S) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_owned();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            headers.push(h);
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(length, 0);
            reader.read_exact(&mut body).unwrap();
        }
        let mut out = format!("{}\n", line.trim_end()).into_bytes();
        for h in &headers {
            out.extend_from_slice(h.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&body);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Origin: echo\r\nContent-Length: {}\r\n\r\n",
            out.len()
        );
        let w = reader.get_mut();
        if w.write_all(head.as_bytes()).is_err() || w.write_all(&out).is_err() {
            return;
        }
    }
}

/// A TCP echo origin (raw bytes back).
pub fn tcp_echo() -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

/// A TLS echo origin on TCP ([`serve_echo`] behind rustls) with the given server config
/// (e.g. `edge_server_config` of an `EdgeCa`: SANs `h2.cftunnel.com`, `quic.cftunnel.com`).
pub fn tls_origin(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    tls_server(config, serve_echo)
}

/// A TLS origin on TCP: each accepted connection, behind rustls with `config`, is served by
/// `serve` on its own thread.
pub fn tls_server(
    config: Arc<rustls::ServerConfig>,
    serve: fn(rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>),
) -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                serve(rustls::StreamOwned::new(conn, stream));
            });
        }
    });
    addr
}

/// An origin that streams each request body straight back (same length) as it arrives, so
/// upload and download run at the same time; serves keep-alive requests.
pub fn streaming_echo_origin() -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::with_capacity(256 * 1024, stream);
                loop {
                    let mut length = 0u64;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = h.trim_end().to_ascii_lowercase();
                        if lower.is_empty() {
                            break;
                        }
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
                    if reader.get_mut().write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let mut left = length;
                    let mut buf = vec![0u8; 256 * 1024];
                    while left > 0 {
                        let want = buf.len().min(left as usize);
                        let n = match reader.read(&mut buf[..want]) {
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if reader.get_mut().write_all(&buf[..n]).is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                }
            });
        }
    });
    addr
}

/// An HTTP origin that holds each response until the test releases it: `arrived` says a
/// request came in, one message on `release` answers it with 200 "released".
pub struct GatedOrigin {
    pub addr: SocketAddr,
    pub arrived: std::sync::mpsc::Receiver<()>,
    pub release: std::sync::mpsc::Sender<()>,
}

impl GatedOrigin {
    pub fn start() -> GatedOrigin {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (arrived_tx, arrived) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            // One request per connection is all the test sends.
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let _ = arrived_tx.send(());
                if release_rx
                    .recv_timeout(std::time::Duration::from_secs(120))
                    .is_err()
                {
                    return;
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nreleased");
            }
        });
        GatedOrigin {
            addr,
            arrived,
            release,
        }
    }
}

/// A server-sent-events origin: its first request gets a `text/event-stream` response (no length,
/// the body ends when the connection closes) whose events `data: event N` go out one at a
/// time, the next only after the test sends `()` on `next`. A proxy that buffers the stream
/// leaves the test waiting for the first event, which the origin already sent.
pub struct SseOrigin {
    pub addr: SocketAddr,
    pub next: std::sync::mpsc::Sender<()>,
}

impl SseOrigin {
    /// Serves one request with `events` events.
    pub fn start(events: usize) -> SseOrigin {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (next, next_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Some(Ok(stream)) = listener.incoming().next() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let w = reader.get_mut();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
            if w.write_all(head.as_bytes()).is_err() {
                return;
            }
            for i in 0..events {
                if i > 0
                    && next_rx
                        .recv_timeout(std::time::Duration::from_secs(60))
                        .is_err()
                {
                    return;
                }
                if w.write_all(format!("data: event {i}\n\n").as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        });
        SseOrigin { addr, next }
    }
}
