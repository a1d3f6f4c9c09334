//! QUIC datagrams v3 from the edge. No panic; a decoded registration, payload, ICMP packet or
//! response re-encodes to a datagram that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::proto::datagram::v3::{
    Datagram, decode, encode_icmp, encode_payload, encode_registration, encode_response,
};

fuzz_target!(|data: &[u8]| {
    let Ok(d) = decode(data) else { return };
    let mut out = Vec::new();
    let encoded = match d {
        Datagram::Registration(r) => encode_registration(&r, &mut out),
        Datagram::Payload {
            request_id,
            payload,
        } => encode_payload(request_id, payload, &mut out),
        Datagram::Icmp(p) => encode_icmp(p, &mut out),
        Datagram::RegistrationResponse {
            request_id,
            status,
            message,
        } => match std::str::from_utf8(message) {
            Ok(m) => encode_response(request_id, status, m, &mut out),
            Err(_) => return,
        },
    };
    if encoded.is_ok() {
        assert_eq!(decode(&out).expect("own encoding decodes"), d);
    }
});
