//! Ingress lookup time against the number of host-only rules (10, 1,000, 100,000): the compiled
//! table should stay flat; cloudflared's linear scan is shown beside it for 10 and 1,000.
//!
//! Run: `cargo bench --bench ingress_lookup`

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringflare::config::parse_config;
use ringflare::ingress::{Ingress, IngressTable};

/// `n` exact host rules, a wildcard and a path rule near the end, then the catch-all.
fn ingress(n: usize) -> Ingress {
    let mut yaml = String::with_capacity(n * 70);
    yaml.push_str("ingress:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - hostname: host{i}.example.com\n    service: http://10.0.{}.{}:80\n",
            i / 250 % 250,
            i % 250
        ));
    }
    yaml.push_str("  - hostname: \"*.apps.example.com\"\n    service: http://10.1.0.1:80\n");
    yaml.push_str(
        "  - hostname: api.example.com\n    path: ^/v[0-9]+/\n    service: http://10.1.0.2:80\n",
    );
    yaml.push_str("  - service: http_status:404\n");
    let file = parse_config(&yaml, Path::new("bench.yml")).expect("yaml");
    Ingress::from_config(&file.raw).expect("valid")
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingress_lookup");
    for n in [10usize, 1_000, 100_000] {
        let ing = ingress(n);
        let table = IngressTable::new(ing.clone());
        let mid = format!("host{}.example.com:443", n / 2);
        let probes = [
            ("exact_hit", mid.as_str(), "/index.html"),
            ("wildcard_hit", "a.b.apps.example.com", "/"),
            ("path_hit", "api.example.com", "/v2/users"),
            ("miss", "unknown.example.net", "/"),
        ];
        for (name, host, path) in probes {
            group.bench_with_input(BenchmarkId::new(format!("table/{name}"), n), &n, |b, _| {
                b.iter(|| table.find(black_box(host), black_box(path)))
            });
            if n <= 1_000 {
                group.bench_with_input(
                    BenchmarkId::new(format!("linear/{name}"), n),
                    &n,
                    |b, _| b.iter(|| ing.find_linear(black_box(host), black_box(path))),
                );
            }
        }
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
