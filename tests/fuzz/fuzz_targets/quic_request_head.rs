//! A data stream's ConnectRequest (framed message, preamble already read) interpreted as a
//! request head, both ways the code reads it: decoded into an owned `ConnectRequest` (the edge,
//! tools) and read in place through `RequestMessage`/`RequestView` and `RequestHeadBuilder` (the
//! connector's path for every data stream). Arbitrary bytes must decode and convert, or fail
//! cleanly, never panic; both ways must agree on whether a message is acceptable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::proto::quic_meta::{RequestHeadBuilder, request_head};
use ringflare::proto::{ConnectRequest, FrameLimits, connect::RequestMessage};

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits::default();
    let owned = ConnectRequest::decode_message(&mut &data[..], &limits)
        .ok()
        .map(|req| request_head(&req).is_ok());
    let in_place = RequestMessage::decode(&mut &data[..], &limits)
        .ok()
        .map(|message| in_place_head(&message).is_some());
    if let (Some(a), Some(b)) = (owned, in_place) {
        assert_eq!(a, b, "owned and in-place reads disagree");
    }
});

fn in_place_head(message: &RequestMessage) -> Option<ringflare::proto::quic_meta::QuicRequestHead> {
    let request = message.view().ok()?;
    let entries = request.metadata().ok()?;
    let mut builder = RequestHeadBuilder::with_capacity(entries.len());
    for entry in entries {
        let (key, val) = entry.ok()?;
        builder.push(key, val).ok()?;
    }
    builder
        .finish(request.dest().ok()?, request.kind().ok()?)
        .ok()
}
