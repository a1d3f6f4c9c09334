//! In-memory handshakes between the edge and connector configs (no sockets, no clock).

use std::{fs, os::unix::fs::PermissionsExt, sync::Arc};

use rustls::{
    ClientConfig, ClientConnection, NamedGroup, ServerConfig, ServerConnection,
    crypto::ring::kx_group,
    version::{TLS12, TLS13},
};
use rustls_pki_types::ServerName;

use super::config::{client_config, provider};
use super::*;

/// Drives both sides until neither is handshaking; bounded rounds.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut c = ClientConnection::new(client, name)?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..16 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut buf.as_slice()).unwrap();
        s.process_new_packets()?;
        buf.clear();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    panic!("handshake did not finish in 16 rounds");
}

fn ca_in_tempdir() -> (tempfile::TempDir, EdgeCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(dir.path()).unwrap();
    (dir, ca)
}

#[test]
fn connector_offers_and_edge_picks_suites_in_go_order() {
    use rustls::CipherSuite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let order = |aes| {
        let suites =
            super::config::go_order(rustls::crypto::ring::default_provider().cipher_suites, aes);
        suites.iter().take(3).map(|s| s.suite()).collect::<Vec<_>>()
    };
    assert_eq!(
        order(true),
        [
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256
        ]
    );
    assert_eq!(
        order(false),
        [
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384
        ]
    );
    // The edge follows the connector's first choice, on both transports' configs.
    let (_dir, ca) = ca_in_tempdir();
    let roots = EdgeRoots::CaFile(ca.ca_pem_path().to_owned());
    let first = |c: &ClientConfig| c.crypto_provider().cipher_suites[0].suite();
    let client = connector_client_config(roots.clone()).unwrap();
    let want = first(&client);
    let (c, _s) = handshake(client, edge_server_config(&ca).unwrap(), H2_SERVER_NAME).unwrap();
    assert_eq!(c.negotiated_cipher_suite().unwrap().suite(), want);
    let quic = connector_quic_client_config(roots).unwrap();
    assert_eq!(first(&quic), want);
}

#[test]
fn p256_only_client_negotiates_secp256r1_with_h2_sni() {
    let (_dir, ca) = ca_in_tempdir();
    let server = edge_server_config(&ca).unwrap();
    let store = edge_root_store(&EdgeRoots::CaFile(ca.ca_pem_path().to_owned())).unwrap();
    for version in [&TLS13, &TLS12] {
        let client =
            client_config(store.clone(), vec![kx_group::SECP256R1], &[version], vec![]).unwrap();
        let (c, s) = handshake(client, server.clone(), H2_SERVER_NAME).unwrap();
        assert_eq!(s.server_name(), Some(H2_SERVER_NAME));
        let group = c.negotiated_key_exchange_group().unwrap().name();
        assert_eq!(group, NamedGroup::secp256r1);
        assert_eq!(c.alpn_protocol(), None);
    }
}

#[test]
fn connector_config_verifies_every_edge_name() {
    let (_dir, ca) = ca_in_tempdir();
    let client = connector_client_config(EdgeRoots::CaFile(ca.ca_pem_path().to_owned())).unwrap();
    let server = edge_server_config(&ca).unwrap();
    for name in [H2_SERVER_NAME, PROBE_SERVER_NAME, "localhost", "127.0.0.1"] {
        let (c, _) = handshake(client.clone(), server.clone(), name).unwrap();
        // X25519MLKEM768 is the connector's first choice, as in cloudflared 2026.
        assert_eq!(
            c.negotiated_key_exchange_group().unwrap().name(),
            NamedGroup::X25519MLKEM768
        );
    }
}

#[test]
fn quic_configs_agree_on_alpn_and_tls13() {
    let (_dir, ca) = ca_in_tempdir();
    let client =
        connector_quic_client_config(EdgeRoots::CaFile(ca.ca_pem_path().to_owned())).unwrap();
    let server = edge_quic_server_config(&ca).unwrap();
    let (c, _) = handshake(client, server, QUIC_SERVER_NAME).unwrap();
    assert_eq!(c.alpn_protocol(), Some(QUIC_ALPN));
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn client_trusting_another_ca_fails_with_unknown_issuer() {
    let (_dir, ca) = ca_in_tempdir();
    let (_other_dir, other) = ca_in_tempdir();
    let client =
        connector_client_config(EdgeRoots::CaFile(other.ca_pem_path().to_owned())).unwrap();
    let err = handshake(client, edge_server_config(&ca).unwrap(), H2_SERVER_NAME).unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn files_are_reused_and_keys_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let first = EdgeCa::load_or_create(dir.path()).unwrap();
    let second = EdgeCa::load_or_create(dir.path()).unwrap();
    assert_eq!(first.ca_cert(), second.ca_cert());
    assert_eq!(first.server_chain(), second.server_chain());
    for key in ["ca-key.pem", "server-key.pem"] {
        let mode = fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[test]
fn missing_server_pair_is_reissued_from_the_existing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = EdgeCa::load_or_create(dir.path()).unwrap();
    fs::remove_file(dir.path().join("server.pem")).unwrap();
    let second = EdgeCa::load_or_create(dir.path()).unwrap();
    assert_eq!(first.ca_cert(), second.ca_cert());
    assert_ne!(first.server_chain(), second.server_chain());
    // The re-issued certificate still chains to the original ca.pem.
    let client =
        connector_client_config(EdgeRoots::CaFile(first.ca_pem_path().to_owned())).unwrap();
    handshake(client, edge_server_config(&second).unwrap(), H2_SERVER_NAME).unwrap();
}

#[test]
fn bad_or_incomplete_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    EdgeCa::load_or_create(dir.path()).unwrap();
    fs::write(dir.path().join("server-key.pem"), "not a key").unwrap();
    let err = EdgeCa::load_or_create(dir.path()).unwrap_err().to_string();
    assert!(err.contains("server-key.pem"), "{err}");

    fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
    let err = EdgeCa::load_or_create(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("ca-key.pem") && err.contains("missing"),
        "{err}"
    );

    let missing = dir.path().join("nope.pem");
    let err = edge_root_store(&EdgeRoots::CaFile(missing))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.pem"), "{err}");
}

#[test]
fn embedded_cloudflare_roots_parse() {
    assert_eq!(cloudflare_roots().len(), 3);
    assert!(!edge_root_store(&EdgeRoots::Cloudflare).unwrap().is_empty());
}

/// An edge whose TLS stack has no ML-KEM (P-256 only), QUIC-style (TLS 1.3, ALPN).
fn classic_quic_edge(ca: &EdgeCa) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider(vec![kx_group::SECP256R1]))
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(ca.server_chain().to_vec(), ca.server_key())
        .unwrap();
    config.alpn_protocols = vec![QUIC_ALPN.to_vec()];
    Arc::new(config)
}

fn quic_client(ca: &EdgeCa, kx: KxPolicy) -> Arc<ClientConfig> {
    connector_quic_client_config_with(EdgeRoots::CaFile(ca.ca_pem_path().to_owned()), kx).unwrap()
}

#[test]
fn post_quantum_group_is_negotiated_with_the_edge() {
    let (_dir, ca) = ca_in_tempdir();
    for kx in [KxPolicy::PreferPostQuantum, KxPolicy::StrictPostQuantum] {
        let server = edge_quic_server_config(&ca).unwrap();
        let (mut c, mut s) = handshake(quic_client(&ca, kx), server, QUIC_SERVER_NAME).unwrap();
        assert_eq!(
            c.negotiated_key_exchange_group().unwrap().name(),
            NamedGroup::X25519MLKEM768
        );
        // Both sides derived the same keys: application data round-trips.
        use std::io::{Read, Write};
        c.writer().write_all(b"hybrid").unwrap();
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut buf.as_slice()).unwrap();
        s.process_new_packets().unwrap();
        let mut got = [0u8; 6];
        s.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hybrid");
    }
}

#[test]
fn prefer_falls_back_to_p256_on_an_edge_without_ml_kem() {
    let (_dir, ca) = ca_in_tempdir();
    let client = quic_client(&ca, KxPolicy::PreferPostQuantum);
    let (c, _) = handshake(client, classic_quic_edge(&ca), QUIC_SERVER_NAME).unwrap();
    assert_eq!(
        c.negotiated_key_exchange_group().unwrap().name(),
        NamedGroup::secp256r1
    );
}

#[test]
fn strict_post_quantum_refuses_an_edge_without_ml_kem() {
    let (_dir, ca) = ca_in_tempdir();
    let client = quic_client(&ca, KxPolicy::StrictPostQuantum);
    let err = handshake(client, classic_quic_edge(&ca), QUIC_SERVER_NAME).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::PeerIncompatible(_) | rustls::Error::AlertReceived(_)
        ),
        "{err}"
    );
}

#[test]
fn malformed_hybrid_shares_are_errors_not_panics() {
    for len in [0, 1, 1184, 1215, 1217, 4096] {
        let share = vec![0x5au8; len];
        assert!(
            X25519MLKEM768.start_and_complete(&share).is_err(),
            "len {len}"
        );
    }
    for len in [0, 32, 1088, 1119, 1121] {
        let active = X25519MLKEM768.start().unwrap();
        assert!(active.complete(&vec![7u8; len]).is_err(), "len {len}");
    }
    // A well-formed length with arbitrary bytes is a valid key share: no panic, a secret.
    assert!(X25519MLKEM768.start_and_complete(&[0x5au8; 1216]).is_ok());
}
