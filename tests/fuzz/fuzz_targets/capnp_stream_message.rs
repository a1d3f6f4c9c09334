//! Stream framing plus ConnectRequest/ConnectResponse decoding, with and without the preamble.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::proto::{ConnectRequest, ConnectResponse, FrameLimits, StreamSignature};

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits::default();
    let _ = ConnectRequest::decode_message(&mut &data[..], &limits);
    let _ = ConnectRequest::decode(&mut &data[..], &limits);
    let _ = ConnectResponse::decode(&mut &data[..], &limits);
    let mut rest = data;
    if StreamSignature::decode(&mut rest).is_ok() {
        let _ = ConnectRequest::decode_message(&mut rest, &limits);
    }
});
