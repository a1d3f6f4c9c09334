//! Arbitrary bytes as config.yml: parsing, validation and table building must never panic.
//! The same bytes also go to the Go-dialect readers the config relies on: the yaml.v3-style
//! node decoder, a path regex (Go's regexp/syntax, then the regex crate) and a service URL
//! (Go's net/url parsing and printing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringflare::config::parse_config;
use ringflare::config::yaml::first_document;
use ringflare::ingress::goregex::PathRegex;
use ringflare::ingress::gourl::GoUrl;
use ringflare::ingress::{Ingress, IngressTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = first_document(text);
    if let Ok(regex) = PathRegex::new(text) {
        let _ = regex.is_match("/a/b?c");
    }
    if let Ok(url) = GoUrl::parse(text) {
        let _ = url.to_go_string();
    }
    let Ok(file) = parse_config(text, std::path::Path::new("fuzz.yml")) else { return };
    let _ = file.raw.unknown_keys();
    if let Ok(ingress) = Ingress::from_config(&file.raw) {
        let _ = IngressTable::new(ingress).find("a.example.com:443", "/");
    }
});
