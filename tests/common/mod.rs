//! Shared test support for every suite (issue 9 item 5): one module, by topic.
//!
//! - [`mock_edge`]: a minimal in-test edge for the connector binary (TLS server + HTTP/2
//!   *client* + capnp RegistrationServer over loopback, spec §3), and the requests it sends;
//! - [`quic_edge`]: the same for QUIC (compio-quic server endpoint + registration);
//! - [`connector`]: the real `ringflare` binary as a child process;
//! - [`peer`]: a minimal connector-side peer for the built-in edge (TLS client, HTTP/2 server
//!   with cloudflared's SETTINGS, control stream + `RegistrationClient`, data streams answered
//!   with serialized headers);
//! - [`edge`]: the built-in edge on loopback with free ports and short timeouts;
//! - [`eyeball`]: blocking HTTP/1.1 clients (keep-alive eyeball, one-shot GET);
//! - [`origins`]: small blocking origins on std threads (HTTP echo, streaming echo, TCP echo,
//!   TLS echo);
//! - [`stock`]: a third-party connector (stock cloudflared from `RINGFLARE_CLOUDFLARED`) and
//!   the loopback-only network namespace it runs in;
//! - [`tunnel`]: tunnel credentials and tokens;
//! - [`hashing`]: FNV-1a checksums and deterministic payloads;
//! - [`wait`]: timeouts, `eventually` (async and blocking) and `block_on`.
//!
//! Everything is re-exported flat, so a suite says `mod common; use common::*;`.
#![allow(dead_code)]

pub mod connector;
pub mod edge;
pub mod eyeball;
pub mod hashing;
pub mod mock_edge;
pub mod origins;
pub mod peer;
pub mod quic_edge;
pub mod stock;
pub mod tunnel;
pub mod wait;

#[allow(unused_imports)] // each suite uses some of them
pub use connector::Connector;
#[allow(unused_imports)]
pub use edge::{edge_options, start_edge};
#[allow(unused_imports)]
pub use eyeball::{Client, Response, echo_both_ways, http_get};
#[allow(unused_imports)]
pub use hashing::{Fnv, fnv, pattern, payload_chunk};
#[allow(unused_imports)]
pub use mock_edge::{EdgeConn, OpenControl, Reply, Seen, TestEdge, collect, echo_transfer, get};
#[allow(unused_imports)]
pub use origins::{
    EchoOrigin, GatedOrigin, SseOrigin, echo_origin, serve_echo, streaming_echo_origin, tcp_echo,
    tls_origin, tls_server,
};
#[allow(unused_imports)]
pub use peer::{Behavior, Peer, PeerConfig, PeerEvent, register_params};
#[allow(unused_imports)]
pub use stock::{in_loopback_netns, stock_cloudflared};
#[allow(unused_imports)]
pub use tunnel::{TestTunnel, token, tunnel_token};
#[allow(unused_imports)]
pub use wait::{TIMEOUT, WAIT, block_on, eventually, eventually_blocking};
