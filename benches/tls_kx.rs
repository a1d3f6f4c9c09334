//! TLS 1.3 handshake cost by key-agreement group, in memory (no sockets): the pure-Rust
//! X25519MLKEM768 hybrid (ringflare's default toward the edge) against ring's P-256 (what
//! the connector offered before) and X25519. Bulk data cost does not depend on the group (the
//! record layer is ring's AES-GCM either way); `bulk_16k_record` shows it for reference.
//!
//! Run: `cargo bench --bench tls_kx`

use std::{hint::black_box, io::Write, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use ringflare::tls::{
    EdgeCa, EdgeRoots, QUIC_SERVER_NAME, X25519MLKEM768, edge_quic_server_config, edge_root_store,
};
use rustls::{
    ClientConfig, ClientConnection, ServerConfig, ServerConnection,
    crypto::{
        CryptoProvider, SupportedKxGroup,
        ring::{default_provider, kx_group},
    },
    version::TLS13,
};
use rustls_pki_types::ServerName;

fn client(ca: &EdgeCa, group: &'static dyn SupportedKxGroup) -> Arc<ClientConfig> {
    let store = edge_root_store(&EdgeRoots::CaFile(ca.ca_pem_path().to_owned())).unwrap();
    let provider = CryptoProvider {
        kx_groups: vec![group],
        ..default_provider()
    };
    let mut c = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"argotunnel".to_vec()];
    Arc::new(c)
}

/// Feeds all of `wire` to `conn` (read_tls takes a bounded amount per call).
fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, wire: &[u8]) {
    let mut rest = wire;
    while !rest.is_empty() {
        conn.read_tls(&mut rest).unwrap();
        conn.process_new_packets().unwrap();
    }
}

fn pump(c: &mut ClientConnection, s: &mut ServerConnection, buf: &mut Vec<u8>) {
    buf.clear();
    c.write_tls(buf).unwrap();
    feed(s, buf);
    buf.clear();
    s.write_tls(buf).unwrap();
    feed(c, buf);
}

fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from(QUIC_SERVER_NAME).unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        pump(&mut c, &mut s, &mut buf);
    }
    (c, s)
}

fn bench(cr: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(dir.path()).unwrap();
    let server = edge_quic_server_config(&ca).unwrap();
    let mut g = cr.benchmark_group("tls13_handshake");
    for (name, group) in [
        ("X25519MLKEM768", X25519MLKEM768),
        ("P-256", kx_group::SECP256R1),
        ("X25519", kx_group::X25519),
    ] {
        let config = client(&ca, group);
        g.bench_function(name, |b| b.iter(|| black_box(handshake(&config, &server))));
    }
    g.finish();
    for (name, group) in [
        ("X25519MLKEM768", X25519MLKEM768),
        ("P-256", kx_group::SECP256R1),
    ] {
        let (mut c, mut s) = handshake(&client(&ca, group), &server);
        let payload = vec![0xabu8; 16 * 1024];
        let mut wire = Vec::with_capacity(20 * 1024);
        let mut sink = vec![0u8; 16 * 1024];
        cr.bench_function(&format!("bulk_16k_record/{name}"), |b| {
            b.iter(|| {
                c.writer().write_all(&payload).unwrap();
                wire.clear();
                c.write_tls(&mut wire).unwrap();
                feed(&mut s, &wire);
                use std::io::Read;
                s.reader().read_exact(&mut sink).unwrap();
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
