//! QUIC data-stream metadata: `ConnectRequest` and `ConnectResponse` (spec §4.3).
//!
//! Plain-Rust views of the two messages that open every edge-initiated data stream, with codecs that read
//! and write the stream preamble plus one framed capnp message. This module does not interpret metadata
//! keys (`HttpMethod`, `HttpHeader:*`, ...): that is the proxy's job.

use bytes::{Buf, BufMut};
use capnp::message::{Builder, HeapAllocator, Reader, ReaderSegments};

use super::error::DecodeError;
use super::framing::{self, FrameLimits, StreamSignature};
use super::generated::quic_metadata_protocol_capnp as schema;

/// What kind of traffic a data stream carries; decides how the connector proxies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionType {
    /// A single HTTP request/response.
    Http,
    /// An HTTP request that upgrades to a websocket.
    Websocket,
    /// A raw TCP stream (private networking); `dest` is `host:port`.
    Tcp,
}

impl From<schema::ConnectionType> for ConnectionType {
    fn from(t: schema::ConnectionType) -> Self {
        match t {
            schema::ConnectionType::Http => Self::Http,
            schema::ConnectionType::Websocket => Self::Websocket,
            schema::ConnectionType::Tcp => Self::Tcp,
        }
    }
}

impl From<ConnectionType> for schema::ConnectionType {
    fn from(t: ConnectionType) -> Self {
        match t {
            ConnectionType::Http => Self::Http,
            ConnectionType::Websocket => Self::Websocket,
            ConnectionType::Tcp => Self::Tcp,
        }
    }
}

/// The edge's description of one eyeball request, sent first on a data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Origin URL (http/websocket) or `host:port` (tcp).
    pub dest: String,
    /// How to proxy the stream.
    pub kind: ConnectionType,
    /// Ordered key/value pairs: method, host, one `HttpHeader:<Name>` entry per header value, ...
    pub metadata: Vec<(String, String)>,
}

/// The connector's answer on a data stream, sent before any response body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectResponse {
    /// Empty on success; otherwise why proxying failed (the edge turns it into a 502).
    pub error: String,
    /// `HttpStatus`, `HttpHeader:<Name>` entries, or flow-limiter flags.
    pub metadata: Vec<(String, String)>,
}

impl ConnectRequest {
    /// Reads the fields from a decoded capnp message.
    pub fn read_from(reader: schema::connect_request::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            dest: text(reader.get_dest(), "dest")?,
            kind: reader
                .get_type()
                .map_err(|e| DecodeError::UnknownEnum {
                    field: "type",
                    value: e.0,
                })?
                .into(),
            metadata: read_metadata(reader.get_metadata()?)?,
        })
    }

    /// Writes the fields into a capnp builder.
    pub fn write_to(&self, mut builder: schema::connect_request::Builder<'_>) {
        builder.set_dest(self.dest.as_str());
        builder.set_type(self.kind.into());
        write_metadata(
            &self.metadata,
            builder.init_metadata(list_len(self.metadata.len())),
        );
    }

    /// Decodes the data-stream preamble and one framed `ConnectRequest` from the front of `buf`.
    pub fn decode(buf: &mut impl Buf, limits: &FrameLimits) -> Result<Self, DecodeError> {
        let message = decode_after_preamble(buf, limits)?;
        Self::read_from(message.get_root()?)
    }

    /// Decodes one framed `ConnectRequest` with no preamble (the preamble was already consumed).
    pub fn decode_message(buf: &mut impl Buf, limits: &FrameLimits) -> Result<Self, DecodeError> {
        Self::from_message(&framing::decode_message(buf, limits)?)
    }

    fn from_message<S: ReaderSegments>(message: &Reader<S>) -> Result<Self, DecodeError> {
        Self::read_from(message.get_root()?)
    }

    /// Writes the data-stream preamble and this request as one framed message.
    pub fn encode(&self, out: &mut impl BufMut) {
        let mut message = Builder::new(HeapAllocator::new());
        self.write_to(message.init_root());
        StreamSignature::Data.encode(out);
        framing::encode_message(&message, out);
    }
}

impl ConnectResponse {
    /// Reads the fields from a decoded capnp message.
    pub fn read_from(reader: schema::connect_response::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            error: text(reader.get_error(), "error")?,
            metadata: read_metadata(reader.get_metadata()?)?,
        })
    }

    /// Writes the fields into a capnp builder.
    pub fn write_to(&self, mut builder: schema::connect_response::Builder<'_>) {
        builder.set_error(self.error.as_str());
        write_metadata(
            &self.metadata,
            builder.init_metadata(list_len(self.metadata.len())),
        );
    }

    /// Decodes the data-stream preamble and one framed `ConnectResponse` from the front of `buf`.
    pub fn decode(buf: &mut impl Buf, limits: &FrameLimits) -> Result<Self, DecodeError> {
        let message = decode_after_preamble(buf, limits)?;
        Self::read_from(message.get_root()?)
    }

    /// Writes the data-stream preamble and this response as one framed message.
    pub fn encode(&self, out: &mut impl BufMut) {
        let mut message = Builder::new(HeapAllocator::new());
        self.write_to(message.init_root());
        StreamSignature::Data.encode(out);
        framing::encode_message(&message, out);
    }
}

/// Checks for a data-stream preamble, then decodes the framed message behind it.
///
/// Nothing is consumed until the preamble and the whole frame are available, so `Incomplete` leaves
/// `buf` intact and the caller can simply retry with more bytes.
fn decode_after_preamble(
    buf: &mut impl Buf,
    limits: &FrameLimits,
) -> Result<Reader<capnp::serialize::OwnedSegments>, DecodeError> {
    let preamble = StreamSignature::Data.wire_len();
    let mut head: &[u8] = &framing::peek(buf, preamble)?;
    if StreamSignature::decode(&mut head)? != StreamSignature::Data {
        return Err(DecodeError::UnknownSignature(framing::RPC_STREAM_SIGNATURE));
    }
    framing::peek_frame_len(buf, preamble, limits)?;
    buf.advance(preamble);
    framing::decode_message(buf, limits)
}

pub(crate) fn text(
    value: capnp::Result<capnp::text::Reader<'_>>,
    field: &'static str,
) -> Result<String, DecodeError> {
    value?.to_string().map_err(|_| DecodeError::InvalidField {
        field,
        reason: "not valid UTF-8",
    })
}

fn read_metadata(
    list: capnp::struct_list::Reader<'_, schema::metadata::Owned>,
) -> Result<Vec<(String, String)>, DecodeError> {
    list.iter()
        .map(|m| {
            Ok((
                text(m.get_key(), "metadata.key")?,
                text(m.get_val(), "metadata.val")?,
            ))
        })
        .collect()
}

fn write_metadata(
    pairs: &[(String, String)],
    mut list: capnp::struct_list::Builder<'_, schema::metadata::Owned>,
) {
    for (i, (key, val)) in pairs.iter().enumerate() {
        let mut entry = list.reborrow().get(list_len(i));
        entry.set_key(key.as_str());
        entry.set_val(val.as_str());
    }
}

/// capnp list lengths are u32; a local list longer than that is a programming error we clamp.
pub(crate) fn list_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
