//! TLS for both ends of the tunnel: the simulator's edge CA and the rustls configs.
//!
//! This module owns certificate material and rustls configuration only: the edge
//! simulator's CA on disk ([`EdgeCa`]), the edge server configs (TCP and QUIC) and the
//! connector's client configs with the roots cloudflared trusts. It never opens sockets;
//! runtimes wrap streams with `compio::tls` using these configs.

mod config;
mod edge_ca;
mod error;
mod pq;

pub use config::{
    EdgeRoots, H2_SERVER_NAME, KxPolicy, PROBE_SERVER_NAME, QUIC_ALPN, QUIC_SERVER_NAME,
    cloudflare_roots, connector_client_config, connector_client_config_with,
    connector_quic_client_config, connector_quic_client_config_with, edge_quic_server_config,
    edge_quic_server_config_with, edge_root_store, edge_server_config, edge_server_config_with,
};
pub use edge_ca::{EdgeCa, issue_leaf_certificate};
pub use error::TlsError;
pub use pq::X25519MLKEM768;

#[cfg(test)]
mod tests;
