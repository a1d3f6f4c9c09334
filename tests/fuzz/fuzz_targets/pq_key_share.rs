//! X25519MLKEM768 key shares from a peer (the edge reads the client's, the connector the
//! server's): arbitrary bytes must complete or fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::tls::X25519MLKEM768;

fuzz_target!(|data: &[u8]| {
    let _ = X25519MLKEM768.start_and_complete(data);
    if let Ok(active) = X25519MLKEM768.start() {
        let _ = active.complete(data);
    }
});
