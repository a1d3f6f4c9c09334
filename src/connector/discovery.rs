//! Edge addresses: the static `--edge` list (spec §1.3) or DNS SRV discovery of Cloudflare's
//! edge (§1.1) through a minimal DNS-over-UDP SRV client aimed at the first `nameserver` of
//! `/etc/resolv.conf`. Runs on the control thread with blocking std sockets and bounded
//! timeouts; never touches the data plane. Discovery failure is an error the caller reports.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use super::options::{EdgeSource, IpVersion};

/// How long one DNS query may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no edge address could be found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("edge address {addr:?} could not be resolved: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("SRV lookup of {name} failed: {reason}")]
    Srv { name: String, reason: String },
    #[error("expected at least 2 Cloudflare Regions regions, but SRV only returned {0}")]
    TooFewRegions(usize),
    #[error("no edge address of the requested IP version")]
    NoAddresses,
}

/// All usable edge addresses, in the order connections take them (regions alternate).
pub fn edge_addresses(
    source: &EdgeSource,
    ip_version: IpVersion,
) -> Result<Vec<SocketAddr>, DiscoveryError> {
    match source {
        EdgeSource::Static(list) => list.iter().map(|a| resolve_one(a)).collect(),
        EdgeSource::Srv { service } => discover(service, ip_version),
    }
}

/// One address per `--edge` value, IPv4 preferred for names (Go's ResolveTCPAddr).
fn resolve_one(addr: &str) -> Result<SocketAddr, DiscoveryError> {
    let fail = |reason: String| DiscoveryError::Resolve {
        addr: addr.to_owned(),
        reason,
    };
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or_else(|| all.first())
        .copied()
        .ok_or_else(|| fail("no addresses".into()))
}

fn discover(service: &str, ip_version: IpVersion) -> Result<Vec<SocketAddr>, DiscoveryError> {
    let name = format!("_{service}._tcp.argotunnel.com");
    let srv_fail = |reason: String| DiscoveryError::Srv {
        name: name.clone(),
        reason,
    };
    let resolver = system_resolver().ok_or_else(|| srv_fail("no nameserver".into()))?;
    let records = query_srv(resolver, &name).map_err(srv_fail)?;
    if records.len() < 2 {
        return Err(DiscoveryError::TooFewRegions(records.len()));
    }
    let mut regions: Vec<Vec<SocketAddr>> = Vec::new();
    for (target, port) in records.iter().take(2) {
        let ips: Vec<SocketAddr> = (target.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| DiscoveryError::Resolve {
                addr: target.clone(),
                reason: e.to_string(),
            })?
            .filter(|a| match ip_version {
                IpVersion::V4 => a.is_ipv4(),
                IpVersion::V6 => a.is_ipv6(),
                IpVersion::Auto => true,
            })
            .collect();
        regions.push(preferred_family_first(ips));
    }
    // Alternate regions, as cloudflared's address picker does.
    let mut out = Vec::new();
    let longest = regions.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for region in &regions {
            if let Some(a) = region.get(i) {
                out.push(*a);
            }
        }
    }
    if out.is_empty() {
        return Err(DiscoveryError::NoAddresses);
    }
    Ok(out)
}

/// `--edge-ip-version auto` as cloudflared 2026.8.2: the family of the first address the system
/// resolver returned is the system's preference and is used first; the other family follows
/// as the fallback (reached when connections to the first fail and rotate on).
pub fn preferred_family_first(mut ips: Vec<SocketAddr>) -> Vec<SocketAddr> {
    if let Some(first_v4) = ips.first().map(SocketAddr::is_ipv4) {
        // A stable sort keeps the resolver's order within each family.
        ips.sort_by_key(|a| a.is_ipv4() != first_v4);
    }
    ips
}

/// The first `nameserver` in /etc/resolv.conf.
fn system_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// Sends one SRV query and returns `(target, port)` sorted by priority then weight.
fn query_srv(resolver: SocketAddr, name: &str) -> Result<Vec<(String, u16)>, String> {
    let bind: SocketAddr = if resolver.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| "bind")?
    } else {
        "[::]:0".parse().map_err(|_| "bind")?
    };
    let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(DNS_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let id = (super::backoff::random_unit() * 65535.0) as u16;
    let query = encode_query(id, name)?;
    sock.send_to(&query, resolver).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
    let reply = buf.get(..n).ok_or("short reply")?;
    parse_srv_reply(id, reply)
}

fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let len = u8::try_from(label.len()).map_err(|_| "label too long")?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 33, 0, 1]);
    Ok(q)
}

/// Parses a DNS reply, keeping SRV answers. Every read is bounds-checked: a reply is peer input.
pub fn parse_srv_reply(id: u16, msg: &[u8]) -> Result<Vec<(String, u16)>, String> {
    let u16_at = |i: usize| -> Result<u16, String> {
        msg.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated reply".to_owned())
    };
    if u16_at(0)? != id {
        return Err("reply id mismatch".into());
    }
    let rcode = u16_at(2)? & 0x000f;
    if rcode != 0 {
        return Err(format!("resolver answered rcode {rcode}"));
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        pos = skip_name(msg, pos)?;
        let (rtype, rdlen) = (u16_at(pos)?, usize::from(u16_at(pos + 8)?));
        let rdata = pos + 10;
        if rtype == 33 {
            let (prio, weight, port) = (u16_at(rdata)?, u16_at(rdata + 2)?, u16_at(rdata + 4)?);
            let target = read_name(msg, rdata + 6)?;
            out.push((prio, std::cmp::Reverse(weight), target, port));
        }
        pos = rdata + rdlen;
    }
    out.sort();
    Ok(out.into_iter().map(|(_, _, t, p)| (t, p)).collect())
}

fn skip_name(msg: &[u8], mut pos: usize) -> Result<usize, String> {
    loop {
        let len = *msg.get(pos).ok_or("truncated name")?;
        if len & 0xc0 == 0xc0 {
            return Ok(pos + 2);
        }
        if len == 0 {
            return Ok(pos + 1);
        }
        pos += 1 + usize::from(len);
    }
}

fn read_name(msg: &[u8], mut pos: usize) -> Result<String, String> {
    let mut labels = Vec::new();
    // Bounded: a pointer loop in a hostile reply must not spin forever.
    for _ in 0..128 {
        let len = *msg.get(pos).ok_or("truncated name")?;
        if len & 0xc0 == 0xc0 {
            let lo = *msg.get(pos + 1).ok_or("truncated pointer")?;
            pos = (usize::from(len & 0x3f) << 8) | usize::from(lo);
            continue;
        }
        if len == 0 {
            return Ok(labels.join("."));
        }
        let label = msg
            .get(pos + 1..pos + 1 + usize::from(len))
            .ok_or("truncated label")?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + usize::from(len);
    }
    Err("name too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_puts_the_system_preferred_family_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mixed = vec![
            a("[2606::1]:7844"),
            a("1.1.1.1:7844"),
            a("[2606::2]:7844"),
            a("2.2.2.2:7844"),
        ];
        assert_eq!(
            preferred_family_first(mixed),
            [
                a("[2606::1]:7844"),
                a("[2606::2]:7844"),
                a("1.1.1.1:7844"),
                a("2.2.2.2:7844")
            ]
        );
        let v4_first = vec![a("1.1.1.1:7844"), a("[2606::1]:7844"), a("2.2.2.2:7844")];
        assert_eq!(
            preferred_family_first(v4_first),
            [a("1.1.1.1:7844"), a("2.2.2.2:7844"), a("[2606::1]:7844")]
        );
        assert!(preferred_family_first(Vec::new()).is_empty());
    }

    #[test]
    fn static_edges_resolve_one_address_each() {
        let src = EdgeSource::Static(vec!["127.0.0.1:7844".into(), "localhost:7845".into()]);
        let addrs = edge_addresses(&src, IpVersion::V4).unwrap();
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0], "127.0.0.1:7844".parse().unwrap());
        assert_eq!(addrs[1].port(), 7845);
        let bad = EdgeSource::Static(vec!["no-port".into()]);
        assert!(edge_addresses(&bad, IpVersion::V4).is_err());
    }

    #[test]
    fn srv_reply_parses_and_garbage_does_not_panic() {
        let mut reply = encode_query(7, "_v2-origintunneld._tcp.argotunnel.com").unwrap();
        reply[2] = 0x81;
        reply[7] = 1; // one answer
        reply.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
        let target = b"\x07region1\x02v2\x0aargotunnel\x03com\x00";
        let rdlen = (6 + target.len()) as u16;
        reply.extend_from_slice(&rdlen.to_be_bytes());
        reply.extend_from_slice(&[0, 1, 0, 1, 0x1e, 0xa4]);
        reply.extend_from_slice(target);
        let got = parse_srv_reply(7, &reply).unwrap();
        assert_eq!(got, vec![("region1.v2.argotunnel.com".to_owned(), 7844)]);
        for cut in 0..reply.len() {
            let _ = parse_srv_reply(7, &reply[..cut]);
        }
        assert!(parse_srv_reply(8, &reply).is_err());
    }
}
