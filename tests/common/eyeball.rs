//! Blocking HTTP/1.1 clients: a keep-alive eyeball connection that parses responses
//! (Content-Length, chunked with trailers, to EOF), a one-shot GET, and a streamed upload
//! checked against its echo ([`echo_both_ways`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcp};
use std::time::Duration;

use super::hashing::{Fnv, payload_chunk};
use super::wait::WAIT;

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `read`, retried on EINTR: a socket read with a timeout is not restarted after a signal
/// (signal(7)), and other tests in the same binary may signal the process.
fn read_retrying(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A keep-alive eyeball connection with a read buffer: plain TCP, or any other byte stream
/// (a TLS one for the HTTPS eyeball side).
pub struct Client<S = StdTcp> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = StdTcp::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client::over(stream)
    }
}

impl<S: Read + Write> Client<S> {
    /// A client over an established stream (its read timeout already set).
    pub fn over(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends a GET for `path` with `Host: host`.
    pub fn get(&mut self, host: &str, path: &str) -> Response {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edge-test\r\n\r\n");
        self.stream.write_all(req.as_bytes()).unwrap();
        self.read_response(false)
    }

    /// POSTs `body` to `path` with `Host: host` (Content-Length framing) and reads the response.
    pub fn post(&mut self, host: &str, path: &str, body: &[u8]) -> Response {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).unwrap();
        self.stream.write_all(body).unwrap();
        self.read_response(false)
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 64 * 1024];
        let n = read_retrying(&mut self.stream, &mut tmp).unwrap_or(0);
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    /// Reads a response head.
    pub fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = resp.parse(&self.buf).unwrap() {
                let status = resp.code.unwrap();
                let hs = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                self.buf.drain(..len);
                return (status, hs);
            }
            assert!(
                self.fill() > 0,
                "connection closed before the response head"
            );
        }
    }

    /// Reads and discards exactly `n` body bytes.
    pub fn discard_body(&mut self, n: usize) {
        let mut left = n;
        let have = self.buf.len().min(left);
        self.buf.drain(..have);
        left -= have;
        let mut tmp = vec![0u8; 256 * 1024];
        while left > 0 {
            let got = read_retrying(&mut self.stream, &mut tmp).unwrap();
            assert!(got > 0, "connection closed mid-body");
            let used = got.min(left);
            self.buf.extend_from_slice(&tmp[used..got]);
            left -= used;
        }
    }

    /// Reads exactly `n` body bytes.
    pub fn read_exact_body(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until `needle` appears in the buffer; returns everything up to and including it.
    pub fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        loop {
            if let Some(pos) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return self.buf.drain(..pos + needle.len()).collect();
            }
            assert!(
                self.fill() > 0,
                "connection closed before {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }

    fn read_line(&mut self) -> String {
        String::from_utf8(self.read_until(b"\r\n")).unwrap()
    }

    /// Reads a whole response (body by Content-Length, chunked, or to EOF).
    pub fn read_response(&mut self, head_request: bool) -> Response {
        let (status, headers) = self.read_head();
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if head_request || status == 101 || status == 204 || status == 304 {
            return r;
        }
        if let Some(cl) = r.header("content-length") {
            let n: usize = cl.trim().parse().unwrap();
            r.body = self.read_exact_body(n);
        } else if r
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            loop {
                let line = self.read_line();
                let size =
                    usize::from_str_radix(line.trim_end().split(';').next().unwrap(), 16).unwrap();
                if size == 0 {
                    loop {
                        let line = self.read_line();
                        if line == "\r\n" {
                            break;
                        }
                        let (n, v) = line.trim_end().split_once(':').unwrap();
                        r.trailers.push((n.to_owned(), v.trim().to_owned()));
                    }
                    break;
                }
                let data = self.read_exact_body(size + 2);
                r.body.extend_from_slice(&data[..size]);
            }
        } else {
            while self.fill() > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    /// True when the server closed the connection (EOF) within the timeout.
    pub fn is_closed(&mut self) -> bool {
        self.fill() == 0
    }
}

/// A blocking HTTP GET to the metrics server: (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// POSTs `total` pseudo-random bytes to `host` through `eyeball` and checks that the response
/// body (from [`super::streaming_echo_origin`]) is the same bytes: a writer thread streams the
/// upload while this thread reads and hashes the echo, so nothing is held in memory and both
/// directions are busy at once.
pub fn echo_both_ways(eyeball: SocketAddr, host: &str, total: u64) {
    let mut stream = StdTcp::connect(eyeball).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let head = format!("POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {total}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let up = std::thread::spawn(move || {
        let mut sum = Fnv::default();
        let (mut sent, mut i) = (0u64, 0u64);
        while sent < total {
            let len = (1usize << 20).min((total - sent) as usize);
            let chunk = payload_chunk(i, len);
            sum.update(&chunk);
            writer.write_all(&chunk).unwrap();
            sent += len as u64;
            i += 1;
        }
        sum.0
    });
    // Read the head, then exactly `total` body bytes, hashing as they arrive.
    let mut buf = vec![0u8; 1 << 20];
    let mut head_buf = Vec::new();
    let body_start = loop {
        let n = read_retrying(&mut stream, &mut buf).unwrap();
        assert!(n > 0, "edge closed before the response head");
        head_buf.extend_from_slice(&buf[..n]);
        if let Some(pos) = head_buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&head_buf[..body_start]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut sum = Fnv::default();
    let mut got = (head_buf.len() - body_start) as u64;
    sum.update(&head_buf[body_start..]);
    while got < total {
        let n = read_retrying(&mut stream, &mut buf).unwrap();
        assert!(n > 0, "connection closed after {got} of {total} bytes");
        sum.update(&buf[..n]);
        got += n as u64;
    }
    assert_eq!(got, total);
    assert_eq!(up.join().unwrap(), sum.0, "echoed bytes differ");
}
