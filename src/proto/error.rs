//! Decode errors shared by the capnp-based codecs in `crate::proto`.
//!
//! Decoders distinguish "not enough bytes yet" ([`DecodeError::Incomplete`]) from "these bytes can never
//! be valid" (everything else), so a driver knows whether to read more or close the stream. Messages never
//! include field contents, so secrets cannot leak through them.

use thiserror::Error;

/// Why a message from the peer could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The buffer ends before the message does; read at least `needed` more bytes and retry.
    #[error("incomplete message: at least {needed} more bytes needed")]
    Incomplete {
        /// Lower bound on the number of extra bytes required.
        needed: usize,
    },
    /// The frame header announces more segments than we accept.
    #[error("capnp frame has {count} segments, limit is {limit}")]
    TooManySegments {
        /// Segment count announced by the peer.
        count: u64,
        /// Our configured limit.
        limit: u32,
    },
    /// The frame header announces a message larger than we accept.
    #[error("capnp frame is {words} words, limit is {limit}")]
    TooLarge {
        /// Total size announced by the peer, in 8-byte words.
        words: u64,
        /// Our configured limit, in words.
        limit: u64,
    },
    /// The first bytes of a QUIC stream are not a known signature.
    #[error("unknown stream signature {0:02x?}")]
    UnknownSignature([u8; 6]),
    /// The message is framed correctly but its contents are not valid capnp.
    #[error("malformed capnp message: {0}")]
    Capnp(#[from] capnp::Error),
    /// An enum field holds a value the schema does not define.
    #[error("field `{field}` holds unknown enum value {value}")]
    UnknownEnum {
        /// Schema name of the field.
        field: &'static str,
        /// The raw discriminant.
        value: u16,
    },
    /// A required pointer field is null.
    #[error("required field `{field}` is missing")]
    MissingField {
        /// Schema name of the field.
        field: &'static str,
    },
    /// A field is present but its value breaks a protocol rule (for example a uuid that is not 16 bytes).
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Schema name of the field.
        field: &'static str,
        /// What is wrong, without echoing the value.
        reason: &'static str,
    },
}

impl DecodeError {
    /// True when more input may turn this into a success.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, Self::Incomplete { .. })
    }
}

impl From<capnp::NotInSchema> for DecodeError {
    fn from(e: capnp::NotInSchema) -> Self {
        Self::UnknownEnum {
            field: "enum",
            value: e.0,
        }
    }
}
