//! Serialized-headers codec (`proto::headers`): the HTTP/2 transport encodes every response's
//! headers into one base64 `cf-cloudflared-response-headers` value and decodes the request's,
//! so this runs once per proxied request in each direction.
//!
//! Run: `cargo bench --bench proto_headers`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringflare::proto::headers::{
    DecodedHeaders, deserialize_headers_into, serialize_headers_into, serialize_response_headers,
};

/// A typical browser request's headers (13 fields, ~600 bytes).
fn browser_headers() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("host", b"media.example.com"),
        (
            "user-agent",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", b"en-GB,en;q=0.5"),
        ("accept-encoding", b"gzip, deflate, br, zstd"),
        (
            "cookie",
            b"session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=yes",
        ),
        ("cf-connecting-ip", b"203.0.113.7"),
        ("cf-ipcountry", b"GB"),
        ("cf-ray", b"8a1b2c3d4e5f6a7b-LHR"),
        ("cf-visitor", b"{\"scheme\":\"https\"}"),
        ("x-forwarded-for", b"203.0.113.7"),
        ("x-forwarded-proto", b"https"),
        ("referer", b"https://media.example.com/library/films?page=2"),
    ]
}

fn headers(c: &mut Criterion) {
    let pairs = browser_headers();
    let mut encoded = String::new();
    serialize_headers_into(pairs.iter().copied(), &mut encoded);
    let raw: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();

    let mut group = c.benchmark_group("proto_headers");
    group.throughput(Throughput::Bytes(raw as u64));
    let mut out = String::with_capacity(encoded.len());
    group.bench_function("serialize_13_fields_reused_buffer", |b| {
        b.iter(|| {
            out.clear();
            serialize_headers_into(black_box(&pairs).iter().copied(), &mut out);
            out.len()
        })
    });
    let mut decoded = DecodedHeaders::default();
    group.bench_function("deserialize_13_fields_reused_buffer", |b| {
        b.iter(|| {
            deserialize_headers_into(black_box(encoded.as_bytes()), &mut decoded)
                .map(|_| decoded.len())
        })
    });
    let response: Vec<(&str, &[u8])> = vec![
        ("content-type", b"text/html; charset=utf-8"),
        ("content-length", b"1024"),
        ("cache-control", b"max-age=60"),
        ("etag", b"\"5f3e-1a2b\""),
        ("connection", b"keep-alive"),
        ("cf-cloudflared-proxy-src", b"x"),
    ];
    group.bench_function("serialize_response_headers_filtered", |b| {
        b.iter(|| serialize_response_headers(black_box(&response).iter().copied(), true))
    });
    group.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
