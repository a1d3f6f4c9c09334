//! QUIC datagrams of UDP sessions and ICMP (spec §4.4), sans-IO: bytes in, borrowed views out, and
//! encoders that append to a caller's buffer.
//!
//! Owns: the two wire formats cloudflared speaks on a QUIC connection's datagrams, [`v2`] (metadata
//! and type byte at the end; sessions are registered by RPC) and [`v3`] (type byte first; sessions
//! are registered by datagram), with their size limits. Never does: allocate for a decode (views
//! borrow the datagram), keep state, open sockets. Every decoder rejects every malformed input with
//! a [`DatagramError`] naming what is wrong, and never panics.

pub mod v2;
pub mod v3;

use thiserror::Error;

/// Largest UDP payload (or IP packet) carried in one datagram: cloudflared's pre-PMTU 1280 bytes.
pub const MAX_PAYLOAD: usize = 1280;

/// Largest whole v2 datagram cloudflared sends or accepts (payload, metadata and type byte).
pub const MAX_V2_DATAGRAM: usize = 1350;

/// A session's 16-byte identity: a UUID under v2, a big-endian 128-bit request ID under v3.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// The ID from exactly 16 bytes; `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<SessionId> {
        <[u8; 16]>::try_from(b).ok().map(SessionId)
    }

    /// cloudflared's log form: 32 lowercase hex digits (a UUID without dashes under v2, the
    /// `%016x%016x` of hi and lo under v3: the same text).
    pub fn hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({})", self.hex())
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Why a datagram could not be decoded or encoded. A datagram arrives whole, so there is no
/// "incomplete": a short one is invalid. Messages name sizes and type bytes, never contents.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DatagramError {
    /// The datagram has no bytes at all (no type byte).
    #[error("datagram is empty: no type byte")]
    Empty,
    /// The type byte names no datagram kind this version knows.
    #[error("unknown datagram type {0}")]
    UnknownType(u8),
    /// The datagram is shorter than its type's fixed header.
    #[error("{kind} datagram has {len} bytes, its header needs {needed}")]
    TooShort {
        /// Which datagram kind.
        kind: &'static str,
        /// Bytes present.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// The datagram or its payload is larger than the protocol allows.
    #[error("{kind} is {len} bytes, the limit is {limit}")]
    TooLarge {
        /// What is too large.
        kind: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An ICMP datagram carries no packet.
    #[error("ICMP datagram carries no packet")]
    MissingPacket,
    /// A registration response announces a message longer than the bytes that follow.
    #[error("registration response announces a {announced}-byte message, {present} bytes follow")]
    MessageTruncated {
        /// Length in the header.
        announced: usize,
        /// Bytes after the header.
        present: usize,
    },
}

/// `Ok` when `len` is within `limit`, else [`DatagramError::TooLarge`] naming `kind`.
pub(crate) fn within(kind: &'static str, len: usize, limit: usize) -> Result<(), DatagramError> {
    if len > limit {
        return Err(DatagramError::TooLarge { kind, len, limit });
    }
    Ok(())
}
