//! A fixed rule set probed with arbitrary hosts and paths: the table must agree with
//! cloudflared's linear scan and never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringflare::config::parse_config;
use ringflare::ingress::{Ingress, IngressTable, Matched};

const RULES: &str = "ingress:
  - hostname: a.example.com
    service: http://localhost:1
  - hostname: \"*.example.com\"
    path: ^/api/[0-9]+$
    service: http://localhost:2
  - hostname: môô.example.com
    service: http://localhost:3
  - path: \\.png$
    service: http://localhost:4
  - hostname: \"*.b.example.com\"
    service: http://localhost:5
  - service: http_status:404
";

fn rules() -> &'static (Ingress, IngressTable) {
    static RULES_CELL: OnceLock<(Ingress, IngressTable)> = OnceLock::new();
    RULES_CELL.get_or_init(|| {
        let file = parse_config(RULES, std::path::Path::new("r.yml")).expect("yaml");
        let ingress = Ingress::from_config(&file.raw).expect("valid");
        (ingress.clone(), IngressTable::new(ingress))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (host, path) = text.split_once('\n').unwrap_or((text, "/"));
    let (ingress, table) = rules();
    assert_eq!(table.find(host, path), Matched::Rule(ingress.find_linear(host, path)));
});
