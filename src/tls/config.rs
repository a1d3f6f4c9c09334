//! rustls configurations for the edge (TLS server) and the connector (TLS client).
//!
//! Facts from cloudflared 2025.5.0 (spec §2): on http2 the connector verifies the name
//! `h2.cftunnel.com`, offers no ALPN and only the P-256 group; on QUIC it verifies
//! `quic.cftunnel.com` with ALPN `argotunnel` over TLS 1.3. Roots are either exactly the
//! `--cacert` file or the system pool plus Cloudflare's origin roots. All configs use the
//! `ring` provider plus the pure-Rust X25519MLKEM768 group of `pq`, offered first on both
//! transports as cloudflared 2026 does. This module builds configs; it never touches sockets.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion,
    crypto::{
        CryptoProvider, SupportedKxGroup,
        ring::{default_provider, kx_group},
    },
    version::{TLS12, TLS13},
};
use rustls_pki_types::{CertificateDer, pem::PemObject};

use super::{EdgeCa, TlsError, edge_ca::read_certs, pq::X25519MLKEM768};

/// SNI and verified name on the http2 transport.
pub const H2_SERVER_NAME: &str = "h2.cftunnel.com";
/// SNI and verified name on the QUIC transport.
pub const QUIC_SERVER_NAME: &str = "quic.cftunnel.com";
/// SNI of newer cloudflared's pre-flight probes (spec §12).
pub const PROBE_SERVER_NAME: &str = "probe.cftunnel.com";
/// The only ALPN protocol on QUIC.
pub const QUIC_ALPN: &[u8] = b"argotunnel";

/// Cloudflare's origin CA roots, as embedded in cloudflared (public certificates).
const CLOUDFLARE_ROOTS_PEM: &str = include_str!("cloudflare_roots.pem");

/// Which roots the connector trusts for the edge certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeRoots {
    /// `--cacert FILE`: only the certificates in FILE, like cloudflared.
    CaFile(PathBuf),
    /// No `--cacert`: the system roots plus the embedded Cloudflare origin roots.
    Cloudflare,
}

/// The groups the edge accepts: X25519MLKEM768 (cloudflared 2026's first key share), P-256
/// (the only group cloudflared 2025 offers on http2), X25519 and P-384 for other clients.
fn edge_groups(post_quantum: bool) -> Vec<&'static dyn SupportedKxGroup> {
    let classic = [kx_group::SECP256R1, kx_group::X25519, kx_group::SECP384R1];
    post_quantum
        .then_some(X25519MLKEM768)
        .into_iter()
        .chain(classic)
        .collect()
}

/// Which key agreement the connector offers the edge (spec §2, §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KxPolicy {
    /// cloudflared 2026's default: X25519MLKEM768 first, then P-256. X25519 alone is never
    /// offered.
    #[default]
    PreferPostQuantum,
    /// `--post-quantum`: X25519MLKEM768 only; an edge without it fails the handshake.
    StrictPostQuantum,
}

impl KxPolicy {
    /// The groups offered, in preference order.
    pub fn groups(self) -> Vec<&'static dyn SupportedKxGroup> {
        match self {
            KxPolicy::PreferPostQuantum => vec![X25519MLKEM768, kx_group::SECP256R1],
            KxPolicy::StrictPostQuantum => vec![X25519MLKEM768],
        }
    }

    /// cloudflared's `Tunnel connection curve preferences: [...]` value.
    pub fn log_names(self) -> &'static str {
        match self {
            KxPolicy::PreferPostQuantum => "[X25519MLKEM768 CurveP256]",
            KxPolicy::StrictPostQuantum => "[X25519MLKEM768]",
        }
    }
}

pub(super) fn provider(groups: Vec<&'static dyn SupportedKxGroup>) -> Arc<CryptoProvider> {
    let base = default_provider();
    Arc::new(CryptoProvider {
        kx_groups: groups,
        cipher_suites: go_order(base.cipher_suites, aes_in_hardware()),
        ..base
    })
}

/// The cipher suites in the order Go's crypto/tls offers them (so cloudflared's connector, and
/// the suite a server that follows the client's order picks): TLS 1.3 AES-128-GCM, AES-256-GCM,
/// ChaCha20-Poly1305 where the CPU has AES instructions, ChaCha20-Poly1305 first where it has
/// not; the TLS 1.2 suites after, in ring's order. rustls' own default puts AES-256-GCM first:
/// four more AES rounds per block than cloudflared pays on every byte of the tunnel. The edge
/// honours the client's order, as rustls servers do by default.
pub(super) fn go_order(
    mut suites: Vec<rustls::SupportedCipherSuite>,
    aes: bool,
) -> Vec<rustls::SupportedCipherSuite> {
    use rustls::CipherSuite::{
        TLS13_AES_128_GCM_SHA256 as AES_128, TLS13_AES_256_GCM_SHA384 as AES_256,
        TLS13_CHACHA20_POLY1305_SHA256 as CHACHA20,
    };
    // Go's defaultCipherSuitesTLS13 and defaultCipherSuitesTLS13NoAES.
    let go = if aes {
        [AES_128, AES_256, CHACHA20]
    } else {
        [CHACHA20, AES_128, AES_256]
    };
    suites.sort_by_key(|s| go.iter().position(|&g| g == s.suite()).unwrap_or(go.len()));
    suites
}

/// Whether AES-GCM runs on dedicated instructions here (Go's `hasAESGCMHardwareSupport`).
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

fn config_err(what: &'static str) -> impl FnOnce(rustls::Error) -> TlsError {
    move |source| TlsError::Config { what, source }
}

/// The edge's TCP (http2) server config: TLS 1.2 and 1.3, no ALPN.
pub fn edge_server_config(ca: &EdgeCa) -> Result<Arc<ServerConfig>, TlsError> {
    edge_server_config_with(ca, true)
}

/// [`edge_server_config`], with or without the post-quantum group.
pub fn edge_server_config_with(
    ca: &EdgeCa,
    post_quantum: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let groups = edge_groups(post_quantum);
    server_config(
        ca,
        groups,
        &[&TLS13, &TLS12],
        Vec::new(),
        "edge TCP server config",
    )
}

/// The edge's QUIC server config: TLS 1.3 only, ALPN `argotunnel`.
pub fn edge_quic_server_config(ca: &EdgeCa) -> Result<Arc<ServerConfig>, TlsError> {
    edge_quic_server_config_with(ca, true)
}

/// [`edge_quic_server_config`], with or without the post-quantum group.
pub fn edge_quic_server_config_with(
    ca: &EdgeCa,
    post_quantum: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(
        ca,
        edge_groups(post_quantum),
        &[&TLS13],
        vec![QUIC_ALPN.to_vec()],
        "edge QUIC server config",
    )
}

fn server_config(
    ca: &EdgeCa,
    groups: Vec<&'static dyn SupportedKxGroup>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
    what: &'static str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider(groups))
        .with_protocol_versions(versions)
        .map_err(config_err(what))?
        .with_no_client_auth()
        .with_single_cert(ca.server_chain().to_vec(), ca.server_key())
        .map_err(config_err(what))?;
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// The connector's http2 client config: TLS 1.2–1.3, no ALPN, no client certificate.
pub fn connector_client_config(roots: EdgeRoots) -> Result<Arc<ClientConfig>, TlsError> {
    connector_client_config_with(roots, KxPolicy::default())
}

/// [`connector_client_config`] with an explicit key-agreement policy.
pub fn connector_client_config_with(
    roots: EdgeRoots,
    kx: KxPolicy,
) -> Result<Arc<ClientConfig>, TlsError> {
    let store = edge_root_store(&roots)?;
    client_config(store, kx.groups(), &[&TLS13, &TLS12], Vec::new())
}

/// The connector's QUIC client config: TLS 1.3, ALPN `argotunnel`.
pub fn connector_quic_client_config(roots: EdgeRoots) -> Result<Arc<ClientConfig>, TlsError> {
    connector_quic_client_config_with(roots, KxPolicy::default())
}

/// [`connector_quic_client_config`] with an explicit key-agreement policy.
pub fn connector_quic_client_config_with(
    roots: EdgeRoots,
    kx: KxPolicy,
) -> Result<Arc<ClientConfig>, TlsError> {
    let store = edge_root_store(&roots)?;
    client_config(store, kx.groups(), &[&TLS13], vec![QUIC_ALPN.to_vec()])
}

pub(super) fn client_config(
    store: RootCertStore,
    groups: Vec<&'static dyn SupportedKxGroup>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let what = "connector client config";
    let mut config = ClientConfig::builder_with_provider(provider(groups))
        .with_protocol_versions(versions)
        .map_err(config_err(what))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// The trust anchors for `roots`; never empty.
pub fn edge_root_store(roots: &EdgeRoots) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    let what = match roots {
        EdgeRoots::CaFile(path) => {
            let (_, ignored) = store.add_parsable_certificates(read_certs(path)?);
            if ignored > 0 {
                return Err(TlsError::BadPem {
                    path: path.clone(),
                    reason: format!("{ignored} certificate(s) are not valid trust anchors"),
                });
            }
            path.display().to_string()
        }
        EdgeRoots::Cloudflare => {
            store.add_parsable_certificates(cloudflare_roots());
            // Unreadable system stores only shrink the pool; the embedded roots remain.
            let native = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(native.certs);
            "the embedded Cloudflare roots and the system store".to_owned()
        }
    };
    if store.is_empty() {
        return Err(TlsError::NoRoots { what });
    }
    Ok(store)
}

/// The embedded Cloudflare origin roots (3 certificates).
pub fn cloudflare_roots() -> Vec<CertificateDer<'static>> {
    // The embedded file is a constant checked by a unit test; skip anything unparsable
    // rather than fail at runtime.
    CertificateDer::pem_slice_iter(CLOUDFLARE_ROOTS_PEM.as_bytes())
        .filter_map(Result::ok)
        .collect()
}
