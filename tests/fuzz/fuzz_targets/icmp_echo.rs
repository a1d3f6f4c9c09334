//! Raw IP packets the edge sends for ICMP proxying (v2 IP / v3 ICMP datagrams). No panic; a
//! parsed echo request's reply packet (as the connector builds it) parses as IP with valid
//! lengths and is never itself taken for an echo request; nor is a time-exceeded answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::connector::udp::icmp::{parse_echo, reply_packet, ttl_exceeded_packet};

fuzz_target!(|data: &[u8]| {
    let Ok(e) = parse_echo(data) else { return };
    if let Some(reply) = reply_packet(e.dst, e.src, e.id, e.seq, e.data) {
        assert!(reply.len() >= e.data.len() + 8);
        assert!(parse_echo(&reply).is_err(), "a reply parsed as a request");
    }
    if let Some(t) = ttl_exceeded_packet(data, e.dst, e.src) {
        assert!(parse_echo(&t).is_err(), "a time-exceeded parsed as a request");
    }
});
