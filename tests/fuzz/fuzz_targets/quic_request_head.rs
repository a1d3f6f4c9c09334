//! A data stream's ConnectRequest (preamble + framed message) interpreted as a request head:
//! arbitrary bytes must decode and convert, or fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::proto::quic_meta::request_head;
use ringflare::proto::{ConnectRequest, FrameLimits};

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits::default();
    if let Ok(req) = ConnectRequest::decode_message(&mut &data[..], &limits) {
        let _ = request_head(&req);
    }
});
