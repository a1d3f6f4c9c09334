//! capnp-rpc glue for the two control-plane directions (spec §3.3, §4.2, §5).
//!
//! - `registration`: the edge serves `RegistrationServer`; the connector is the client and speaks first.
//! - `cloudflared`: the connector serves `CloudflaredServer`; the edge is the client on RPC streams.
//!
//! Each side is a plain trait plus a function that returns a `capnp_rpc::RpcSystem` over any
//! `futures::AsyncRead`/`AsyncWrite` pair. The `RpcSystem` is a `!Send` future the caller must poll (on a
//! local executor); this module never spawns, never touches sockets and never reads a clock, so timeouts
//! (`--rpc-timeout`, grace period) belong to the caller. `pipe` offers an in-memory duplex for tests.

mod cloudflared;
pub mod pipe;
mod registration;

pub use cloudflared::{CloudflaredClient, CloudflaredServer, serve_cloudflared};
pub use registration::{RegistrationClient, RegistrationServer, serve_registration};

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use futures::{AsyncRead, AsyncWrite};
use thiserror::Error;

use super::error::DecodeError;
use super::framing::FrameLimits;

/// The `RpcSystem` type every builder in this module returns; poll it to completion on a local executor.
pub type RpcDriver = RpcSystem<Side>;

/// Why an RPC call or an RPC connection failed.
#[derive(Debug, Error)]
pub enum RpcError {
    /// The peer answered with a capnp exception (for registration: a permanent error, spec §5.1).
    #[error("peer raised an exception: {0}")]
    Exception(String),
    /// The peer does not implement the method.
    #[error("method not implemented by peer: {0}")]
    Unimplemented(String),
    /// The RPC connection ended before the call completed; retrying on a new connection may work.
    #[error("rpc connection lost: {0}")]
    Disconnected(String),
    /// The reply arrived but broke a protocol rule.
    #[error("invalid reply: {0}")]
    Decode(#[from] DecodeError),
}

impl RpcError {
    /// A failure raised by a local server implementation, sent to the peer as a capnp exception.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Exception(message.into())
    }
}

impl From<capnp::Error> for RpcError {
    fn from(e: capnp::Error) -> Self {
        match e.kind {
            capnp::ErrorKind::Disconnected => Self::Disconnected(e.extra),
            capnp::ErrorKind::Unimplemented => Self::Unimplemented(e.extra),
            _ => Self::Exception(e.to_string()),
        }
    }
}

impl From<RpcError> for capnp::Error {
    fn from(e: RpcError) -> Self {
        match e {
            RpcError::Disconnected(m) => capnp::Error::disconnected(m),
            RpcError::Unimplemented(m) => capnp::Error::unimplemented(m),
            RpcError::Exception(m) => capnp::Error::failed(m),
            RpcError::Decode(d) => capnp::Error::failed(d.to_string()),
        }
    }
}

/// Reader limits for RPC messages: the same bounds as data-stream frames.
fn reader_options() -> ReaderOptions {
    FrameLimits::default().reader_options()
}

/// A two-party network over the given byte streams, acting as `side`.
fn network<R, W>(reader: R, writer: W, side: Side) -> Box<twoparty::VatNetwork<R>>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    Box::new(twoparty::VatNetwork::new(
        reader,
        writer,
        side,
        reader_options(),
    ))
}

/// Turns a decode failure of incoming parameters into the exception the peer receives.
fn bad_params(e: DecodeError) -> capnp::Error {
    capnp::Error::failed(format!("invalid parameters: {e}"))
}

#[cfg(test)]
mod tests;
