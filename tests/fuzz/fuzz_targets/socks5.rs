//! SOCKS5 from a visitor: the greeting and the request. No panic; the bytes reported used are
//! within the input; a reply the connector encodes parses back (same layout) to its address.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use ringflare::connector::socks::{Host, encode_reply, parse_greeting, parse_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, used))) = parse_greeting(data) {
        assert!(used <= data.len());
        if let Ok(Some((request, used2))) = parse_request(&data[used..]) {
            assert!(used2 <= data.len() - used);
            let _ = request.to_string();
        }
    }
    if let Ok(Some((request, used))) = parse_request(data) {
        assert!(used <= data.len());
        let _ = request.to_string();
    }

    // Round trip: the first 19 bytes as a reply code, port and address.
    if data.len() >= 19 {
        let code = data[0];
        let port = u16::from_be_bytes([data[1], data[2]]);
        let ip = if data[3] & 1 == 0 {
            IpAddr::from(<[u8; 4]>::try_from(&data[3..7]).expect("4 bytes"))
        } else {
            IpAddr::from(<[u8; 16]>::try_from(&data[3..19]).expect("16 bytes"))
        };
        let reply = encode_reply(code, Some(SocketAddr::new(ip, port)));
        let (parsed, used) = parse_request(&reply).expect("own reply").expect("complete");
        assert_eq!(used, reply.len());
        assert_eq!(parsed.command, code);
        assert_eq!(parsed.port, port);
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        assert_eq!(parsed.host, Host::Ip(canonical));
    }
});
