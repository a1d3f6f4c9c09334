//! Arbitrary bytes as config.yml: parsing, validation and table building must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::config::parse_config;
use ringflare::ingress::{Ingress, IngressTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = parse_config(text, std::path::Path::new("fuzz.yml")) else { return };
    let _ = file.raw.unknown_keys();
    if let Ok(ingress) = Ingress::from_config(&file.raw) {
        let _ = IngressTable::new(ingress).find("a.example.com:443", "/");
    }
});
