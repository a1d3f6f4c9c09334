//! QUIC datagrams v2 from the edge. No panic; a decoded datagram's parts lie within the input;
//! re-encoding a decoded one gives back the same bytes (within the encoder's size limits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::proto::datagram::v2::{Datagram, DatagramType, decode, encode_packet, encode_udp};

fuzz_target!(|data: &[u8]| {
    let Ok(d) = decode(data) else { return };
    let mut out = Vec::new();
    let encoded = match d {
        Datagram::Udp { session, payload } => encode_udp(session, payload, &mut out),
        Datagram::Ip(p) => encode_packet(DatagramType::Ip, p, &[], &mut out),
        Datagram::IpWithTrace { packet, identity } => {
            encode_packet(DatagramType::IpWithTrace, packet, identity, &mut out)
        }
        Datagram::TracingSpan { spans, identity } => {
            encode_packet(DatagramType::TracingSpan, spans, identity, &mut out)
        }
    };
    if encoded.is_ok() {
        assert_eq!(out, data);
    }
});
