//! One stream's proxy path in memory: everything ringflare's connector computes for one
//! 1 KiB GET between the edge's HTTP/2 request and the response it sends back, without
//! sockets, TLS or h2 framing (those are measured end to end by `ringflare bench e2e`):
//! classify the stream, decode the serialized request headers, match ingress, encode the
//! origin request head, parse the origin's response head, decode its body, and build the
//! response head with serialized headers for the edge.
//!
//! Run: `cargo bench --bench proxy_path`

use std::hint::black_box;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Method;
use ringflare::config::parse_config;
use ringflare::connector::origin::http::{decoder, encode_head, parse_head, response_framing};
use ringflare::connector::response::origin_head;
use ringflare::http1::BodyEvent;
use ringflare::ingress::{Ingress, IngressTable};
use ringflare::proto::headers::{DecodedHeaders, deserialize_headers_into, serialize_headers};
use ringflare::proto::http2::classify;

const CONFIG: &str = r#"ingress:
  - hostname: media.example.com
    service: http://127.0.0.1:8096
  - hostname: "*.apps.example.com"
    service: http://127.0.0.1:8080
  - service: http_status:404
"#;

fn origin_response() -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nDate: Tue, 24 Nov 2026 18:00:00 GMT\r\nServer: jellyfin\r\nCache-Control: max-age=60\r\n\r\n".to_vec();
    r.extend_from_slice(&[b'x'; 1024]);
    r
}

fn proxy_path(c: &mut Criterion) {
    let file = parse_config(CONFIG, Path::new("bench.yml")).expect("yaml");
    let table = IngressTable::new(Ingress::from_config(&file.raw).expect("valid"));
    let user_headers = [
        ("Host", &b"media.example.com"[..]),
        (
            "User-Agent",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        ("Accept", b"*/*"),
        ("Cf-Connecting-Ip", b"203.0.113.7"),
        ("Cf-Ray", b"8a1b2c3d4e5f6a7b-LHR"),
        ("X-Forwarded-Proto", b"https"),
    ];
    let serialized = serialize_headers(user_headers.iter().copied());
    let edge_headers: Vec<(&str, &[u8])> = vec![
        (":method", b"GET"),
        (":path", b"/library/item/42"),
        ("cf-cloudflared-request-headers", serialized.as_bytes()),
    ];
    let response = origin_response();

    let mut group = c.benchmark_group("proxy_path");
    group.throughput(Throughput::Elements(1));
    let mut decoded = DecodedHeaders::default();
    let mut head = BytesMut::with_capacity(1024);
    let mut from_origin = BytesMut::with_capacity(4096);
    group.bench_function("get_1k_in_memory", |b| {
        b.iter(|| {
            let kind = classify(black_box(&edge_headers).iter().copied());
            deserialize_headers_into(serialized.as_bytes(), &mut decoded).expect("valid headers");
            let matched = table.find("media.example.com", "/library/item/42");
            let headers: Vec<(String, Bytes)> = decoded
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        Bytes::copy_from_slice(v),
                    )
                })
                .collect();
            head.clear();
            encode_head(&Method::GET, "/library/item/42", &headers, &mut head);
            from_origin.clear();
            from_origin.extend_from_slice(&response);
            let resp = parse_head(&mut from_origin)
                .expect("valid")
                .expect("complete");
            let framing = response_framing(&Method::GET, &resp).expect("framed");
            let mut body = 0;
            if let Some(mut dec) = decoder(framing) {
                while let Ok(Some(BodyEvent::Data(d))) = dec.decode(&mut from_origin) {
                    body += d.len();
                }
            }
            let out = origin_head(resp.status, &resp.headers);
            (kind, matched, head.len(), body, out.headers().len())
        })
    });
    group.finish();
}

criterion_group!(benches, proxy_path);
criterion_main!(benches);
