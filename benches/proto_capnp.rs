//! Cap'n Proto encode/decode (`proto::framing`, `proto::connect`, `proto::rpc_types`): the
//! `ConnectRequest` that opens every proxied stream (preamble + framed message) and the
//! `registerConnection` parameters of each tunnel connection.
//!
//! Run: `cargo bench --bench proto_capnp`

use std::hint::black_box;

use bytes::{Buf, BytesMut};
use capnp::message::{Builder, HeapAllocator};
use criterion::{Criterion, criterion_group, criterion_main};
use ringflare::proto::framing::{decode_message, encode_message};
use ringflare::proto::generated::tunnelrpc_capnp::registration_server::register_connection_params;
use ringflare::proto::{
    ClientInfo, ConnectRequest, ConnectionOptions, ConnectionType, FrameLimits,
    RegisterConnectionParams, TunnelAuth, TunnelSecret,
};

fn connect_request() -> ConnectRequest {
    let mut metadata = vec![
        ("HttpMethod".to_owned(), "GET".to_owned()),
        ("HttpHost".to_owned(), "media.example.com".to_owned()),
    ];
    for (k, v) in [
        ("Accept", "text/html,application/xhtml+xml"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("Cf-Connecting-Ip", "203.0.113.7"),
        ("Cf-Ray", "8a1b2c3d4e5f6a7b-LHR"),
        ("X-Forwarded-Proto", "https"),
    ] {
        metadata.push((format!("HttpHeader:{k}"), v.to_owned()));
    }
    ConnectRequest {
        dest: "https://media.example.com/library/films?page=2".to_owned(),
        kind: ConnectionType::Http,
        metadata,
    }
}

fn register_params() -> RegisterConnectionParams {
    RegisterConnectionParams {
        auth: TunnelAuth {
            account_tag: "5ab4e9dfbd435d24068829fda0077963".to_owned(),
            tunnel_secret: TunnelSecret::new(vec![7; 32]),
        },
        tunnel_id: [0x42; 16],
        conn_index: 1,
        options: ConnectionOptions {
            client: ClientInfo {
                client_id: vec![9; 16],
                features: vec!["serialized_headers".into(), "support_datagram_v2".into()],
                version: "2025.5.0".into(),
                arch: "linux_amd64".into(),
            },
            origin_local_ip: ConnectionOptions::ip_bytes("192.168.1.10".parse().unwrap()),
            replace_existing: false,
            compression_quality: 0,
            num_previous_attempts: 0,
        },
    }
}

fn capnp(c: &mut Criterion) {
    let mut group = c.benchmark_group("proto_capnp");
    let req = connect_request();
    let mut wire = BytesMut::with_capacity(1024);
    group.bench_function("connect_request_encode", |b| {
        b.iter(|| {
            wire.clear();
            black_box(&req).encode(&mut wire);
            wire.len()
        })
    });
    let mut encoded = BytesMut::new();
    req.encode(&mut encoded);
    let encoded = encoded.freeze();
    let limits = FrameLimits::default();
    group.bench_function("connect_request_decode", |b| {
        b.iter(|| ConnectRequest::decode(&mut black_box(encoded.clone()), &limits))
    });

    let params = register_params();
    group.bench_function("register_params_encode", |b| {
        b.iter(|| {
            let mut message = Builder::new(HeapAllocator::new());
            black_box(&params)
                .write_to(message.init_root::<register_connection_params::Builder<'_>>());
            wire.clear();
            encode_message(&message, &mut wire);
            wire.len()
        })
    });
    let mut message = Builder::new(HeapAllocator::new());
    params.write_to(message.init_root::<register_connection_params::Builder<'_>>());
    let mut framed = BytesMut::new();
    encode_message(&message, &mut framed);
    let framed = framed.freeze();
    group.bench_function("register_params_decode", |b| {
        b.iter(|| {
            let mut buf = black_box(framed.clone());
            let msg = decode_message(&mut buf, &limits).expect("valid frame");
            let root = msg
                .get_root::<register_connection_params::Reader<'_>>()
                .expect("root");
            let decoded = RegisterConnectionParams::read_from(root).expect("params");
            (decoded.conn_index, buf.remaining())
        })
    });
    group.finish();
}

criterion_group!(benches, capnp);
criterion_main!(benches);
