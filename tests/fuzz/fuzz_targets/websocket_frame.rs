//! WebSocket frames from a peer: the connector's frame decoder (src/connector/ws.rs) and the
//! bench client's frame-head parser (src/bench/ws.rs). No panic; a decoded frame re-encoded with
//! the same codec decodes to the same frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringflare::bench::ws::{apply_mask, encode_frame, parse_head};
use ringflare::connector::ws::{decode, header};

fuzz_target!(|data: &[u8]| {
    // Connector side: every frame in the input, then each one round-tripped.
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode(&mut buf) {
        let mut again = BytesMut::from(&header(frame.fin, frame.opcode, frame.payload.len())[..]);
        again.extend_from_slice(&frame.payload);
        let back = decode(&mut again)
            .expect("own frame")
            .expect("complete frame");
        assert_eq!(back, frame);
        assert!(again.is_empty());
    }

    // Bench side: a head, its payload unmasked, and the same frame encoded again.
    if let Ok(Some(head)) = parse_head(data) {
        assert!(head.head_len <= data.len() && head.head_len <= 14);
        let rest = &data[head.head_len..];
        let Some(payload) = usize::try_from(head.len).ok().and_then(|n| rest.get(..n)) else {
            return;
        };
        let mut plain = payload.to_vec();
        if let Some(key) = head.mask {
            apply_mask(&mut plain, key, 0);
        }
        let mut encoded = BytesMut::new();
        encode_frame(head.opcode, &plain, head.mask, &mut encoded);
        let again = parse_head(&encoded)
            .expect("own head")
            .expect("complete head");
        assert_eq!(
            (again.opcode, again.mask, again.len),
            (head.opcode, head.mask, head.len)
        );
        assert!(again.fin);
        let mut back = encoded[again.head_len..].to_vec();
        if let Some(key) = again.mask {
            apply_mask(&mut back, key, 0);
        }
        assert_eq!(back, plain);
    }
});
