//! SOCKS5 inside a websocket stream (spec §7.2, cloudflared's `socks` package): the connector is
//! the SOCKS5 server for `service: socks-proxy` (destination chosen by the client, checked
//! against the rule's `ipRules`, default deny) and for stream services with
//! `originRequest.proxyType: socks` (destination fixed: the already dialled origin, whatever the
//! client asks for, no policy — cloudflared's `ConnDialer`).
//!
//! Owns: the SOCKS5 codec (no-auth method only, CONNECT only; IPv4, IPv6 and domain-name
//! addresses), the `ipRules` decision, local resolution and the dial. Never does: websocket
//! framing after the handshake (that is [`super::websocket::bridge_from`]), authentication methods
//! other than "none", BIND or UDP ASSOCIATE (answered "command not supported").
//!
//! Bounds: the handshake parser needs at most 262 bytes, so it never asks for more than that;
//! websocket frames are bounded by [`super::websocket::MAX_FRAME`]. Malformed input ends the stream
//! with a debug line (cloudflared's `Socks stream handler error`), never a panic.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use compio::net::{TcpStream, ToSocketAddrsAsync};

use super::websocket::{
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, decode, send_frame,
};
use super::{BodyReader, BodyWriter, ResponseSender, StreamHead};
use crate::connector::origin::OriginStream;
use crate::ingress::{IpRule, OriginRequest, Rule};
use crate::runtime::{TcpTuning, apply_tuning};

pub const VERSION: u8 = 5;
pub const METHOD_NO_AUTH: u8 = 0;
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;

pub const CMD_CONNECT: u8 = 1;

pub const ATYP_IPV4: u8 = 1;
pub const ATYP_DOMAIN: u8 = 3;
pub const ATYP_IPV6: u8 = 4;

/// RFC 1928 §6 reply codes.
pub const REP_SUCCESS: u8 = 0;
pub const REP_RULE_FAILURE: u8 = 2;
pub const REP_NETWORK_UNREACHABLE: u8 = 3;
pub const REP_HOST_UNREACHABLE: u8 = 4;
pub const REP_CONNECTION_REFUSED: u8 = 5;
pub const REP_COMMAND_NOT_SUPPORTED: u8 = 7;
pub const REP_ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;

/// Malformed or unsupported SOCKS input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    #[error("Unsupported SOCKS version: {0}")]
    Version(u8),
    #[error("Unsupported command version: {0}")]
    RequestVersion(u8),
    #[error("Unrecognized address type {0}")]
    AddressType(u8),
}

/// A request's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// Raw bytes as sent (resolved locally; non-UTF-8 names simply fail to resolve).
    Domain(Vec<u8>),
}

/// A SOCKS5 request (RFC 1928 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksRequest {
    pub command: u8,
    pub host: Host,
    pub port: u16,
}

impl std::fmt::Display for SocksRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Domain(d) => write!(f, "{}:{}", String::from_utf8_lossy(d), self.port),
        }
    }
}

/// The method-selection message: `Ok(None)` while incomplete, else whether "no auth" was
/// offered and the bytes it used.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(bool, usize)>, SocksError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(SocksError::Version(version));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    let end = 2 + usize::from(n);
    Ok(buf
        .get(2..end)
        .map(|methods| (methods.contains(&METHOD_NO_AUTH), end)))
}

/// A request: `Ok(None)` while incomplete, else the request and the bytes it used.
pub fn parse_request(buf: &[u8]) -> Result<Option<(SocksRequest, usize)>, SocksError> {
    let (Some(&version), Some(&command), Some(_), Some(&atyp)) =
        (buf.first(), buf.get(1), buf.get(2), buf.get(3))
    else {
        if let Some(&v) = buf.first().filter(|&&v| v != VERSION) {
            return Err(SocksError::RequestVersion(v));
        }
        return Ok(None);
    };
    if version != VERSION {
        return Err(SocksError::RequestVersion(version));
    }
    let (host, at) = match atyp {
        ATYP_IPV4 => match buf.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(a) => (Host::Ip(IpAddr::from(a)), 8),
            None => return Ok(None),
        },
        ATYP_IPV6 => match buf.get(4..20).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(a) => (Host::Ip(IpAddr::from(a)), 20),
            None => return Ok(None),
        },
        ATYP_DOMAIN => {
            let Some(&len) = buf.get(4) else {
                return Ok(None);
            };
            let end = 5 + usize::from(len);
            match buf.get(5..end) {
                Some(name) => (Host::Domain(name.to_vec()), end),
                None => return Ok(None),
            }
        }
        other => return Err(SocksError::AddressType(other)),
    };
    let Some(port) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    Ok(Some((
        SocksRequest {
            command,
            host,
            port,
        },
        at + 2,
    )))
}

/// A reply; `bound` absent is `0.0.0.0:0` (cloudflared's failure replies).
pub fn encode_reply(code: u8, bound: Option<SocketAddr>) -> Bytes {
    let bound = bound.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[VERSION, code, 0]);
    match canonical(bound.ip()) {
        IpAddr::V4(a) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    Bytes::from(out)
}

/// IPv4-mapped IPv6 as IPv4, as Go's `To4` treats it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Go's `IPNet.Contains`: families compare after mapping IPv4-in-IPv6 to IPv4 (a mapped
/// network keeps only the low 32 bits of its mask); IPv4 never matches an IPv6 network.
fn contains(rule: &IpRule, ip: IpAddr) -> bool {
    let (net, len) = match rule.network {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), rule.prefix_len.saturating_sub(96)),
            None => (rule.network, rule.prefix_len),
        },
        v4 => (v4, rule.prefix_len),
    };
    match (net, canonical(ip)) {
        (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
        (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
        _ => false,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    a.iter().zip(b).enumerate().all(|(i, (x, y))| {
        let keep = bits.saturating_sub(i * 8).min(8);
        let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        x & mask == y & mask
    })
}

/// cloudflared's `ipaccess.Policy.Allowed` with default deny: the first rule whose prefix
/// contains `ip` and whose ports (none = all) include `port` decides.
pub fn allowed(rules: &[IpRule], ip: IpAddr, port: u16) -> (bool, Option<&IpRule>) {
    rules
        .iter()
        .find(|r| contains(r, ip) && (r.ports.is_empty() || r.ports.binary_search(&port).is_ok()))
        .map_or((false, None), |r| (r.allow, Some(r)))
}

/// The SOCKS reply for a failed dial, as cloudflared picks it from the error.
pub fn dial_failure_code(e: &std::io::Error) -> u8 {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => REP_CONNECTION_REFUSED,
        std::io::ErrorKind::NetworkUnreachable => REP_NETWORK_UNREACHABLE,
        _ => REP_HOST_UNREACHABLE,
    }
}

/// `service: socks-proxy`: acknowledge, run the SOCKS5 handshake with `rules` as the policy,
/// dial, then bridge.
pub async fn serve_proxy<B: BodyReader, R: ResponseSender>(
    req: &StreamHead,
    mut recv: B,
    respond: &mut R,
    rule: &Rule,
    rules: &[IpRule],
) -> Result<u16, String> {
    let mut send = acknowledge(req, respond)?;
    let mut ws = WsIn::default();
    let dialer = Dialer::Net {
        rules,
        options: &rule.options,
    };
    run(&mut recv, &mut send, &mut ws, dialer).await;
    Ok(101)
}

/// A stream service with `proxyType: socks`: dial the service's origin first (a failure is the
/// usual 502), acknowledge, then SOCKS5 whose CONNECT always gets that origin.
pub async fn serve_fixed<B: BodyReader, R: ResponseSender>(
    req: &StreamHead,
    mut recv: B,
    respond: &mut R,
    rule: &Rule,
    dest: &str,
) -> Result<u16, String> {
    let (host, port) = dest
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().ok()?,
            ))
        })
        .ok_or_else(|| format!("invalid destination {dest:?}"))?;
    let connect = TcpStream::connect((host, port));
    let tcp = match timeout(rule.options.connect_timeout, connect).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(format!("dial tcp {dest}: {e}")),
        None => return Err(format!("dial tcp {dest}: i/o timeout")),
    };
    let origin = wrap(tcp, &rule.options);
    let mut send = acknowledge(req, respond)?;
    let mut ws = WsIn::default();
    run(&mut recv, &mut send, &mut ws, Dialer::Fixed(origin)).await;
    Ok(101)
}

/// Where CONNECT goes.
enum Dialer<'a> {
    /// Dial the requested destination after checking the policy.
    Net {
        rules: &'a [IpRule],
        options: &'a OriginRequest,
    },
    /// The origin already dialled, and its local address.
    Fixed((OriginStream, Option<SocketAddr>)),
}

/// The 101 (sent as 200) that accepts the websocket, as for other stream services.
fn acknowledge<R: ResponseSender>(req: &StreamHead, respond: &mut R) -> Result<R::Writer, String> {
    super::tcp::acknowledge(req, respond).map_err(|e| e.to_string())
}

/// Websocket input during the handshake: undecoded frame bytes and decoded payload bytes.
#[derive(Default)]
struct WsIn {
    raw: BytesMut,
    payload: BytesMut,
}

/// Runs the session to its end; every failure is logged and ends the stream.
async fn run<B: BodyReader, W: BodyWriter>(
    recv: &mut B,
    send: &mut W,
    ws: &mut WsIn,
    dialer: Dialer<'_>,
) {
    match handshake(recv, send, ws, dialer).await {
        Ok(origin) => {
            let (rd, mut wr) = origin.split();
            let early = ws.payload.split();
            if !early.is_empty()
                && (wr.write_bytes(early.freeze()).await.is_err() || wr.flush().await.is_err())
            {
                let _ = wr.close().await;
                end(send).await;
                return;
            }
            super::websocket::bridge_from(recv, send, rd, wr, ws.raw.split()).await;
        }
        Err(e) => {
            log::debug!(error = e.as_str(); "Socks stream handler error");
            end(send).await;
        }
    }
}

async fn end<W: BodyWriter>(send: &mut W) {
    let _ = send_frame(send, OP_CLOSE, Bytes::from_static(&[0x03, 0xe8])).await;
    let _ = send.finish(None);
}

async fn reply<W: BodyWriter>(
    send: &mut W,
    code: u8,
    bound: Option<SocketAddr>,
) -> Result<(), String> {
    send_frame(send, OP_BINARY, encode_reply(code, bound))
        .await
        .map_err(|e| format!("Failed to send reply: {e}"))
}

/// Greeting, method choice, request, policy and dial; the connected origin on success.
async fn handshake<B: BodyReader, W: BodyWriter>(
    recv: &mut B,
    send: &mut W,
    ws: &mut WsIn,
    dialer: Dialer<'_>,
) -> Result<OriginStream, String> {
    let no_auth = next(recv, send, ws, parse_greeting)
        .await
        .map_err(|e| e.to_string())?;
    if !no_auth {
        let _ = send_frame(
            send,
            OP_BINARY,
            Bytes::from_static(&[VERSION, METHOD_NONE_ACCEPTABLE]),
        )
        .await;
        return Err("Failed to authenticate: unknown authentication type".into());
    }
    send_frame(
        send,
        OP_BINARY,
        Bytes::from_static(&[VERSION, METHOD_NO_AUTH]),
    )
    .await
    .map_err(|e| e.to_string())?;
    let request = match next(recv, send, ws, parse_request).await {
        Ok(r) => r,
        Err(e) => {
            // RFC 1928's answer; cloudflared closes without one.
            if matches!(e, Failure::Socks(SocksError::AddressType(_))) {
                let _ = reply(send, REP_ADDRESS_TYPE_NOT_SUPPORTED, None).await;
            }
            return Err(e.to_string());
        }
    };
    if request.command != CMD_CONNECT {
        reply(send, REP_COMMAND_NOT_SUPPORTED, None).await?;
        return Err(format!("Unsupported command: {}", request.command));
    }
    match dialer {
        Dialer::Fixed((origin, local)) => {
            reply(send, REP_SUCCESS, local).await?;
            Ok(origin)
        }
        Dialer::Net { rules, options } => {
            let ip = match &request.host {
                Host::Ip(ip) => *ip,
                Host::Domain(name) => match resolve(name).await {
                    Some(ip) => ip,
                    None => {
                        let _ = reply(send, REP_RULE_FAILURE, None).await;
                        return Err(format!(
                            "unable to resolve host to confirm access: {request}"
                        ));
                    }
                },
            };
            let dest = SocketAddr::new(ip, request.port);
            if let (false, rule) = allowed(rules, ip, request.port) {
                let _ = reply(send, REP_RULE_FAILURE, None).await;
                return Err(match rule {
                    Some(r) => format!(
                        "Connect to {request} ({dest}) denied due to iprule: prefix:{}/{}/port:{:?}/allow:{}",
                        r.network, r.prefix_len, r.ports, r.allow
                    ),
                    None => format!("Connect to {request} ({dest}) denied"),
                });
            }
            let connected = match timeout(options.connect_timeout, TcpStream::connect(dest)).await {
                Some(r) => r,
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "i/o timeout",
                )),
            };
            match connected {
                Ok(tcp) => {
                    let (origin, local) = wrap(tcp, options);
                    reply(send, REP_SUCCESS, local).await?;
                    Ok(origin)
                }
                Err(e) => {
                    reply(send, dial_failure_code(&e), None).await?;
                    Err(format!("Connect to {request} failed: dial tcp {dest}: {e}"))
                }
            }
        }
    }
}

/// `Some(result)`, or `None` when `limit` (non-zero) passed first; zero means no limit (Go).
async fn timeout<F: Future>(limit: Duration, f: F) -> Option<F::Output> {
    if limit.is_zero() {
        return Some(f.await);
    }
    compio::time::timeout(limit, f).await.ok()
}

/// The first IPv4 address of `name`, else its first address (Go's `ResolveIPAddr("ip", ..)`).
async fn resolve(name: &[u8]) -> Option<IpAddr> {
    let name = std::str::from_utf8(name).ok().filter(|n| !n.is_empty())?;
    let addrs: Vec<IpAddr> = (name, 0u16)
        .to_socket_addrs_async()
        .await
        .ok()?
        .map(|a| a.ip())
        .collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

/// Tunes a dialled socket and wraps it as an origin stream, keeping its local address.
fn wrap(tcp: TcpStream, o: &OriginRequest) -> (OriginStream, Option<SocketAddr>) {
    let keepalive = (!o.tcp_keep_alive.is_zero()).then_some(o.tcp_keep_alive);
    // Tuning failures only cost latency; the connection is still usable.
    let _ = apply_tuning(
        &tcp,
        TcpTuning {
            nodelay: true,
            keepalive,
        },
    );
    let local = tcp.local_addr().ok();
    // A bare socket: the bridge reads it from the core's buffer pool (no stream buffers).
    (OriginStream::Tcp(tcp), local)
}

/// Why a handshake message could not be read.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Socks(SocksError),
    /// The websocket or h2 stream failed or ended.
    #[error("{0}")]
    Stream(String),
}

/// Decodes websocket frames until `parse` finds a complete message in the payload; answers
/// pings meanwhile.
async fn next<T, B: BodyReader, W: BodyWriter>(
    recv: &mut B,
    send: &mut W,
    ws: &mut WsIn,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, SocksError>,
) -> Result<T, Failure> {
    loop {
        if let Some((msg, used)) = parse(&ws.payload).map_err(Failure::Socks)? {
            let _ = ws.payload.split_to(used);
            return Ok(msg);
        }
        // Frames already buffered first, then more bytes from the edge.
        match decode(&mut ws.raw).map_err(|e| Failure::Stream(e.to_string()))? {
            Some(f) if f.opcode == OP_CLOSE => {
                return Err(Failure::Stream("websocket closed by the client".into()));
            }
            Some(f) if f.opcode == OP_PING => send_frame(send, OP_PONG, f.payload)
                .await
                .map_err(|e| Failure::Stream(e.to_string()))?,
            Some(f) if matches!(f.opcode, OP_CONT | OP_TEXT | OP_BINARY) => {
                ws.payload.extend_from_slice(&f.payload)
            }
            Some(_) => {}
            None => match recv.chunk().await {
                Ok(Some(chunk)) => {
                    let n = chunk.len();
                    ws.raw.extend_from_slice(&chunk);
                    recv.release(n);
                }
                Err(e) => return Err(Failure::Stream(e.to_string())),
                Ok(None) => return Err(Failure::Stream("EOF".into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawIpRule;

    fn rule(prefix: &str, ports: &[i64], allow: bool) -> IpRule {
        IpRule::from_raw(&RawIpRule {
            prefix: Some(prefix.into()),
            ports: Some(ports.to_vec()),
            allow: Some(allow),
            unknown: vec![],
        })
        .unwrap()
    }

    #[test]
    fn greeting_is_parsed_incrementally() {
        let msg = [5u8, 2, 2, 0, 0xaa];
        for i in 0..4 {
            assert_eq!(parse_greeting(&msg[..i]), Ok(None), "{i}");
        }
        assert_eq!(parse_greeting(&msg), Ok(Some((true, 4))));
        assert_eq!(parse_greeting(&[5, 1, 2]), Ok(Some((false, 3))));
        assert_eq!(parse_greeting(&[5, 0]), Ok(Some((false, 2))));
        assert_eq!(
            parse_greeting(b"GET / HTTP/1.1"),
            Err(SocksError::Version(b'G'))
        );
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(SocksError::Version(4)));
    }

    #[test]
    fn requests_of_every_address_type() {
        let v4 = [5u8, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 0xee];
        for i in 0..10 {
            assert_eq!(parse_request(&v4[..i]), Ok(None), "{i}");
        }
        let (r, used) = parse_request(&v4).unwrap().unwrap();
        assert_eq!(used, 10);
        assert_eq!(r.command, CMD_CONNECT);
        assert_eq!(r.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(r.port, 8080);
        assert_eq!(r.to_string(), "127.0.0.1:8080");

        let mut v6 = vec![5u8, 2, 0, 4];
        v6.extend_from_slice(&"::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 22]);
        let (r, used) = parse_request(&v6).unwrap().unwrap();
        assert_eq!((r.command, used, r.port), (2, 22, 22));
        assert_eq!(r.to_string(), "[::1]:22");
        assert_eq!(parse_request(&v6[..21]), Ok(None));

        let mut name = vec![5u8, 1, 0, 3, 9];
        name.extend_from_slice(b"localhost");
        name.extend_from_slice(&[0, 80]);
        for i in 0..name.len() {
            assert_eq!(parse_request(&name[..i]), Ok(None), "{i}");
        }
        let (r, used) = parse_request(&name).unwrap().unwrap();
        assert_eq!(used, name.len());
        assert_eq!(r.host, Host::Domain(b"localhost".to_vec()));
        assert_eq!(r.to_string(), "localhost:80");

        assert_eq!(
            parse_request(&[5, 1, 0, 9, 1, 2]),
            Err(SocksError::AddressType(9))
        );
        assert_eq!(parse_request(&[4]), Err(SocksError::RequestVersion(4)));
        assert_eq!(
            parse_request(&[1, 1, 0, 1]),
            Err(SocksError::RequestVersion(1))
        );
    }

    #[test]
    fn replies_carry_the_bound_address() {
        assert_eq!(
            &encode_reply(REP_RULE_FAILURE, None)[..],
            &[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        let a: SocketAddr = "10.1.2.3:4660".parse().unwrap();
        assert_eq!(
            &encode_reply(0, Some(a))[..],
            &[5, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34]
        );
        let a: SocketAddr = "[::ffff:10.1.2.3]:1".parse().unwrap();
        assert_eq!(
            &encode_reply(0, Some(a))[..],
            &[5, 0, 0, 1, 10, 1, 2, 3, 0, 1]
        );
        let a: SocketAddr = "[::1]:2".parse().unwrap();
        let r = encode_reply(REP_SUCCESS, Some(a));
        assert_eq!(r.len(), 22);
        assert_eq!(&r[..4], &[5, 0, 0, 4]);
        assert_eq!(r[19], 1);
        assert_eq!(&r[20..], &[0, 2]);
    }

    #[test]
    fn policy_first_match_decides_and_default_denies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!allowed(&[], ip("127.0.0.1"), 80).0);
        let rules = vec![
            rule("127.0.0.1/32", &[22], false),
            rule("127.0.0.0/8", &[80, 22, 443], true),
            rule("10.0.0.0/8", &[], true),
            rule("::1/128", &[], true),
        ];
        assert!(!allowed(&rules, ip("127.0.0.1"), 22).0);
        assert!(allowed(&rules, ip("127.0.0.1"), 80).0);
        assert!(allowed(&rules, ip("127.9.9.9"), 443).0);
        assert!(!allowed(&rules, ip("127.9.9.9"), 444).0, "port not listed");
        assert!(allowed(&rules, ip("10.200.0.1"), 1).0);
        assert!(
            allowed(&rules, ip("::ffff:10.0.0.1"), 1).0,
            "mapped is IPv4"
        );
        assert!(!allowed(&rules, ip("11.0.0.1"), 1).0);
        assert!(allowed(&rules, ip("::1"), 9).0);
        assert!(!allowed(&rules, ip("::2"), 9).0);
        let (ok, matched) = allowed(&rules, ip("127.0.0.1"), 22);
        assert!(!ok && matched == Some(&rules[0]));
        // An IPv6 network never holds IPv4 addresses; a mapped one is an IPv4 network.
        assert!(!allowed(&[rule("::/0", &[], true)], ip("1.2.3.4"), 1).0);
        assert!(allowed(&[rule("::ffff:10.0.0.0/104", &[], true)], ip("10.9.9.9"), 1).0);
        assert!(!allowed(&[rule("::ffff:10.0.0.0/104", &[], true)], ip("11.9.9.9"), 1).0);
        // Odd prefix lengths compare partial bytes.
        let r = [rule("192.168.0.0/23", &[], true)];
        assert!(allowed(&r, ip("192.168.1.255"), 1).0);
        assert!(!allowed(&r, ip("192.168.2.0"), 1).0);
    }

    #[test]
    fn dial_errors_map_to_reply_codes() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            dial_failure_code(&Error::from(ErrorKind::ConnectionRefused)),
            REP_CONNECTION_REFUSED
        );
        assert_eq!(
            dial_failure_code(&Error::from(ErrorKind::NetworkUnreachable)),
            REP_NETWORK_UNREACHABLE
        );
        assert_eq!(
            dial_failure_code(&Error::from(ErrorKind::TimedOut)),
            REP_HOST_UNREACHABLE
        );
    }
}
