//! Serialized-headers decoder: arbitrary bytes must decode or fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::proto::headers::{DecodedHeaders, deserialize_headers, deserialize_headers_into};

fuzz_target!(|data: &[u8]| {
    let mut decoded = DecodedHeaders::default();
    let _ = deserialize_headers_into(data, &mut decoded);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = deserialize_headers(text);
    }
});
