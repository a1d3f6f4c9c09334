//! Sans-IO Cap'n Proto stream framing and QUIC stream signatures (spec §4.2, §5.1).
//!
//! This module turns bytes into `capnp` message readers and back. It owns the size limits that protect us
//! from a peer announcing a huge message: the frame header is checked against [`FrameLimits`] before any
//! buffer is allocated. It never reads from a socket; callers hand it whatever bytes they have and get
//! back either a message, [`DecodeError::Incomplete`] (read more), or another error (close the stream).

use std::borrow::Cow;

use bytes::{Buf, BufMut};
use capnp::message::{Allocator, Builder, Reader, ReaderOptions};
use capnp::serialize::OwnedSegments;

use super::error::DecodeError;

/// Bounds applied to a frame header before the body is read or allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Most segments one message may have. Legitimate peers send 1; capnp itself allows 512.
    pub max_segments: u32,
    /// Most 8-byte words one message may occupy (all segments together).
    pub max_words: u64,
}

impl Default for FrameLimits {
    /// 512 segments and 8 MiB: room for a large remote configuration, small enough to refuse abuse.
    fn default() -> Self {
        Self {
            max_segments: 512,
            max_words: 1 << 20,
        }
    }
}

impl FrameLimits {
    /// Reader options that enforce the same size bound while traversing the decoded message.
    pub fn reader_options(&self) -> ReaderOptions {
        let mut options = ReaderOptions::new();
        options.traversal_limit_in_words(usize::try_from(self.max_words).ok());
        options.nesting_limit(64);
        options
    }
}

/// Returns the total byte length of the frame starting at `bytes`, checking the header against `limits`.
///
/// Only the header is inspected; `bytes` may be shorter than the whole frame.
pub fn frame_len(bytes: &[u8], limits: &FrameLimits) -> Result<usize, DecodeError> {
    let Some(first) = bytes.get(..4) else {
        return Err(DecodeError::Incomplete {
            needed: 4 - bytes.len(),
        });
    };
    let count = u64::from(le_u32(first)) + 1;
    if count > u64::from(limits.max_segments) {
        return Err(DecodeError::TooManySegments {
            count,
            limit: limits.max_segments,
        });
    }
    // Bounded by max_segments (a u32), so this cannot overflow on 64-bit or 32-bit targets in practice.
    let header_len = header_len(count as usize);
    let Some(sizes) = bytes.get(4..4 + 4 * count as usize) else {
        return Err(DecodeError::Incomplete {
            needed: header_len - bytes.len(),
        });
    };
    let words: u64 = sizes.chunks_exact(4).map(|s| u64::from(le_u32(s))).sum();
    if words > limits.max_words {
        return Err(DecodeError::TooLarge {
            words,
            limit: limits.max_words,
        });
    }
    usize::try_from(words)
        .ok()
        .and_then(|w| w.checked_mul(8))
        .and_then(|b| b.checked_add(header_len))
        .ok_or(DecodeError::TooLarge {
            words,
            limit: limits.max_words,
        })
}

/// Decodes one stream-framed message from the front of `buf`.
///
/// On `Incomplete` nothing is consumed. On success exactly one frame is consumed. On any other error the
/// buffer may be partly consumed; the stream is unusable anyway.
pub fn decode_message(
    buf: &mut impl Buf,
    limits: &FrameLimits,
) -> Result<Reader<OwnedSegments>, DecodeError> {
    let total = peek_frame_len(buf, 0, limits)?;
    let reader = buf.take(total).reader();
    Ok(capnp::serialize::read_message(
        reader,
        limits.reader_options(),
    )?)
}

/// Length of the frame that starts `offset` bytes into `buf`, or `Incomplete` until all of it is there.
///
/// Consumes nothing, so a caller can check a preamble plus frame before committing to either.
pub(crate) fn peek_frame_len(
    buf: &impl Buf,
    offset: usize,
    limits: &FrameLimits,
) -> Result<usize, DecodeError> {
    let first = peek(buf, offset + 4)?;
    let count = u64::from(le_u32(first.get(offset..).unwrap_or_default())) + 1;
    let want = if count > u64::from(limits.max_segments) {
        4 // frame_len reports the limit violation from the first word alone
    } else {
        header_len(count as usize)
    };
    let header = peek(buf, offset + want)?;
    let total = frame_len(header.get(offset..).unwrap_or_default(), limits)?;
    let available = buf.remaining().saturating_sub(offset);
    if available < total {
        return Err(DecodeError::Incomplete {
            needed: total - available,
        });
    }
    Ok(total)
}

/// Appends `message` to `out` in standard unpacked stream framing.
pub fn encode_message<A: Allocator>(message: &Builder<A>, out: &mut impl BufMut) {
    out.put_slice(&capnp::serialize::write_message_to_words(message));
}

/// The first bytes of an edge-opened QUIC stream, which say how to treat the rest (spec §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSignature {
    /// A data stream: a `ConnectRequest` and the request body follow.
    Data,
    /// An RPC stream: raw capnp RPC follows, the edge being the client.
    Rpc,
}

/// Signature of a data stream; followed on the wire by [`DATA_STREAM_VERSION`].
pub const DATA_STREAM_SIGNATURE: [u8; 6] = [0x0A, 0x36, 0xCD, 0x12, 0xA1, 0x3E];
/// Version bytes after a data-stream signature. Receivers read and ignore them.
pub const DATA_STREAM_VERSION: [u8; 2] = *b"01";
/// Signature of an RPC stream; no version bytes follow.
pub const RPC_STREAM_SIGNATURE: [u8; 6] = [0x52, 0xBB, 0x82, 0x5C, 0xDB, 0x65];

impl StreamSignature {
    /// Number of preamble bytes this signature occupies on the wire, version included.
    pub fn wire_len(self) -> usize {
        match self {
            Self::Data => 8,
            Self::Rpc => 6,
        }
    }

    /// Reads the preamble (and, for data streams, the ignored version bytes) from the front of `buf`.
    ///
    /// Nothing is consumed on `Incomplete` or on an unknown signature.
    pub fn decode(buf: &mut impl Buf) -> Result<Self, DecodeError> {
        let head = peek(buf, 6)?;
        let mut sig = [0u8; 6];
        sig.copy_from_slice(&head);
        let kind = match sig {
            DATA_STREAM_SIGNATURE => Self::Data,
            RPC_STREAM_SIGNATURE => Self::Rpc,
            other => return Err(DecodeError::UnknownSignature(other)),
        };
        if buf.remaining() < kind.wire_len() {
            return Err(DecodeError::Incomplete {
                needed: kind.wire_len() - buf.remaining(),
            });
        }
        buf.advance(kind.wire_len());
        Ok(kind)
    }

    /// Writes the preamble, with version bytes for data streams.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            Self::Data => {
                out.put_slice(&DATA_STREAM_SIGNATURE);
                out.put_slice(&DATA_STREAM_VERSION);
            }
            Self::Rpc => out.put_slice(&RPC_STREAM_SIGNATURE),
        }
    }
}

/// Header bytes for `count` segments: the count word plus one size word each, padded to 8 bytes.
fn header_len(count: usize) -> usize {
    (4 + 4 * count).next_multiple_of(8)
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes.get(..4).unwrap_or(&[0; 4]));
    u32::from_le_bytes(word)
}

/// Copies the first `n` bytes of `buf` without consuming them, even when `buf` is not contiguous.
pub(crate) fn peek(buf: &impl Buf, n: usize) -> Result<Cow<'_, [u8]>, DecodeError> {
    if buf.remaining() < n {
        return Err(DecodeError::Incomplete {
            needed: n - buf.remaining(),
        });
    }
    if let Some(head) = buf.chunk().get(..n) {
        return Ok(Cow::Borrowed(head));
    }
    let mut slices = [std::io::IoSlice::new(&[]); 64];
    let filled = buf.chunks_vectored(&mut slices);
    let mut out = Vec::with_capacity(n);
    for slice in slices.iter().take(filled) {
        let take = (n - out.len()).min(slice.len());
        out.extend_from_slice(slice.get(..take).unwrap_or_default());
        if out.len() == n {
            return Ok(Cow::Owned(out));
        }
    }
    // A Buf split over more than 64 chunks inside a header: treat as not yet readable rather than panic.
    Err(DecodeError::Incomplete {
        needed: n - out.len(),
    })
}
