//! The tunnel wire protocol, sans-IO: everything the connector and the edge simulator exchange, as bytes
//! in and values out.
//!
//! Owns: the Cap'n Proto schema bindings (`generated`), typed views of the RPC structs (`rpc_types`),
//! QUIC data-stream metadata (`connect`), capnp stream framing and stream signatures (`framing`), the
//! capnp-rpc glue for both control-plane directions (`rpc`), and the HTTP/2 transport's header codecs
//! (`headers`, `http2`). Never does: open sockets, read clocks, spawn tasks. The RPC glue builds
//! `capnp_rpc::RpcSystem` futures over any `AsyncRead`/`AsyncWrite` pair; the caller drives them.

pub mod connect;
pub mod datagram;
pub mod error;
pub mod framing;
pub mod generated;
pub mod headers;
pub mod http2;
pub mod quic_meta;
pub mod rpc;
pub mod rpc_types;
pub mod ws;

pub use connect::{ConnectRequest, ConnectResponse, ConnectionType};
pub use error::DecodeError;
pub use framing::{FrameLimits, StreamSignature};
pub use rpc::{
    CloudflaredClient, CloudflaredServer, RegistrationClient, RegistrationServer, RpcDriver,
    RpcError, serve_cloudflared, serve_registration,
};
pub use rpc_types::{
    ClientInfo, ConnectionDetails, ConnectionError, ConnectionOptions, ConnectionResponse,
    RegisterConnectionParams, TunnelAuth, TunnelSecret, UpdateConfigurationResponse,
};

#[cfg(test)]
mod tests;
