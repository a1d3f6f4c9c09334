//! QUIC data-stream metadata: `ConnectRequest` and `ConnectResponse` (spec §4.3).
//!
//! Plain-Rust views of the two messages that open every edge-initiated data stream, with codecs that read
//! and write the stream preamble plus one framed capnp message. This module does not interpret metadata
//! keys (`HttpMethod`, `HttpHeader:*`, ...): that is the proxy's job.

use bytes::{Buf, BufMut, Bytes, BytesMut};
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
        let view = RequestView(reader);
        Ok(Self {
            dest: view.dest()?.to_owned(),
            kind: view.kind()?,
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

/// A decoded `ConnectRequest` message, read in place: its strings are borrowed from the
/// message rather than copied into a [`ConnectRequest`] (one allocation per message instead of
/// two per metadata entry). The connector reads every data stream's request this way.
pub struct RequestMessage(Reader<capnp::serialize::OwnedSegments>);

impl RequestMessage {
    /// Decodes one framed `ConnectRequest` with no preamble (as [`ConnectRequest::decode_message`]).
    pub fn decode(buf: &mut impl Buf, limits: &FrameLimits) -> Result<Self, DecodeError> {
        Ok(Self(framing::decode_message(buf, limits)?))
    }

    /// The message's root, for reading.
    pub fn view(&self) -> Result<RequestView<'_>, DecodeError> {
        Ok(RequestView(self.0.get_root()?))
    }
}

/// The fields of a [`RequestMessage`], borrowed.
pub struct RequestView<'a>(schema::connect_request::Reader<'a>);

impl<'a> RequestView<'a> {
    /// `dest`: the origin URL, or `host:port`.
    pub fn dest(&self) -> Result<&'a str, DecodeError> {
        text_ref(self.0.get_dest(), "dest")
    }

    /// The stream's type.
    pub fn kind(&self) -> Result<ConnectionType, DecodeError> {
        self.0
            .get_type()
            .map(Into::into)
            .map_err(|e| DecodeError::UnknownEnum {
                field: "type",
                value: e.0,
            })
    }

    /// The metadata entries, in order, as `(key, value)`.
    pub fn metadata(
        &self,
    ) -> Result<impl ExactSizeIterator<Item = Result<(&'a str, &'a str), DecodeError>>, DecodeError>
    {
        Ok(metadata_entries(self.0.get_metadata()?))
    }
}

/// A metadata list's entries, borrowed, in order.
fn metadata_entries<'a>(
    list: capnp::struct_list::Reader<'a, schema::metadata::Owned>,
) -> impl ExactSizeIterator<Item = Result<(&'a str, &'a str), DecodeError>> {
    list.iter().map(|m| {
        Ok((
            text_ref(m.get_key(), "metadata.key")?,
            text_ref(m.get_val(), "metadata.val")?,
        ))
    })
}

fn text_ref<'a>(
    value: capnp::Result<capnp::text::Reader<'a>>,
    field: &'static str,
) -> Result<&'a str, DecodeError> {
    value?.to_str().map_err(|_| DecodeError::InvalidField {
        field,
        reason: "not valid UTF-8",
    })
}

/// Writes the preamble and the `ConnectResponse` of a response head straight from it: no
/// error, `HttpStatus`, then one `HttpHeader:<Name>` entry per header value (non-UTF-8 bytes
/// replaced, as `String::from_utf8_lossy`). The same bytes as encoding a [`ConnectResponse`]
/// whose metadata is `quic_meta::response_metadata(status, headers)`, without building those
/// strings, and with a message buffer sized for the head instead of capnp's 8 KiB default.
pub fn encode_response_head<'h, I>(status: &str, headers: I) -> Bytes
where
    I: Iterator<Item = (&'h str, &'h [u8])> + Clone,
{
    const KEY_PREFIX: &str = "HttpHeader:";
    let text_words = |len: usize| (len + 1).div_ceil(8);
    // Root pointer, the struct's two pointers, the empty error text, the list tag; then two
    // pointers and two texts per entry.
    let mut words = 1 + 2 + 1 + 1 + 2 + text_words("HttpStatus".len()) + text_words(status.len());
    let mut entries = 1;
    for (name, value) in headers.clone() {
        entries += 1;
        words += 2 + text_words(KEY_PREFIX.len() + name.len()) + text_words(value.len());
    }
    let alloc = HeapAllocator::new().first_segment_words(list_len(words));
    let mut message = Builder::new(alloc);
    {
        let mut root: schema::connect_response::Builder<'_> = message.init_root();
        root.set_error("");
        let mut list = root.init_metadata(list_len(entries));
        {
            let mut e = list.reborrow().get(0);
            e.set_key("HttpStatus");
            e.set_val(status);
        }
        for (i, (name, value)) in headers.enumerate() {
            let mut e = list.reborrow().get(list_len(i + 1));
            let mut key = e
                .reborrow()
                .init_key(list_len(KEY_PREFIX.len() + name.len()));
            key.push_str(KEY_PREFIX);
            key.push_str(name);
            e.set_val(&*String::from_utf8_lossy(value));
        }
    }
    // The preamble, the segment table (one segment unless the estimate fell short), the words.
    let size = 8 + capnp::serialize::compute_serialized_size_in_words(&message) * 8;
    let mut out = BytesMut::with_capacity(size);
    StreamSignature::Data.encode(&mut out);
    // Writing into a growable buffer cannot fail.
    let _ = capnp::serialize::write_message((&mut out).writer(), &message);
    out.freeze()
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
    text_ref(value, field).map(str::to_owned)
}

fn read_metadata(
    list: capnp::struct_list::Reader<'_, schema::metadata::Owned>,
) -> Result<Vec<(String, String)>, DecodeError> {
    metadata_entries(list)
        .map(|e| e.map(|(k, v)| (k.to_owned(), v.to_owned())))
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
