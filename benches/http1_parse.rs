//! HTTP/1.1 parsing: the built-in edge parses every visitor's request head with
//! `http1::parse_request_head`; the load generator reads every response with
//! `bench::response::ResponseReader`.
//!
//! Run: `cargo bench --bench http1_parse`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringflare::bench::response::ResponseReader;
use ringflare::http1::parse_request_head;

const MINIMAL: &[u8] = b"GET /bytes/1024 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const BROWSER: &[u8] = b"GET /library/films?page=2 HTTP/1.1\r\n\
Host: media.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=yes\r\n\
Referer: https://media.example.com/library/films?page=1\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 16\r\n\r\n0123456789abcdef";

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1_parse");
    for (name, head) in [
        ("request_minimal", MINIMAL),
        ("request_browser_13_fields", BROWSER),
    ] {
        group.throughput(Throughput::Bytes(head.len() as u64));
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(black_box(head));
                parse_request_head(&mut buf).map(|h| h.map(|h| h.headers.len()))
            })
        });
    }
    group.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    let mut reader = ResponseReader::new();
    let mut buf = BytesMut::with_capacity(4096);
    group.bench_function("response_generator_reader", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(RESPONSE));
            reader.feed(&mut buf, false)
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
