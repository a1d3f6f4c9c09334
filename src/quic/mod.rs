//! QUIC transport settings and sockets shared by the connector and the built-in edge.
//!
//! Owns: the quinn-proto transport, endpoint, client and server configurations that mirror
//! cloudflared's quic-go settings (spec §4.1), and UDP socket setup with large kernel buffers.
//! Never does: open connections, run RPC, or read clocks; the connector (`connector::quic_conn`)
//! and the edge (`edge::quic`) drive `compio_quic` endpoints built from these.
//!
//! Why compio-quic: it runs quinn-proto on the project's runtime (io_uring or poll), with GSO/GRO
//! and owned buffers, so QUIC connections live on one core like the http2 ones; driving
//! quinn-proto directly would duplicate its endpoint driver without a measured gain.
//! compio-quic 0.8.2 is used patched (`compio-quic/` here, `[patch.crates-io]`): as published
//! it never lets quinn run path MTU discovery on Linux; `compio-quic/PATCHED.md` says why and
//! when to drop the copy.

mod config;
mod socket;

pub use config::{
    DATAGRAM_RECEIVE_BUFFER, EDGE_MAX_CONCURRENT_BIDI, HANDSHAKE_TIMEOUT, INITIAL_CONN_WINDOW,
    INITIAL_STREAM_WINDOW, KEEP_ALIVE, MAX_IDLE_TIMEOUT, MAX_UDP_PAYLOAD, QuicError, QuicSettings,
    initial_packet_size,
};
pub use socket::{BufferReport, SOCKET_BUFFER, bind_udp};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
