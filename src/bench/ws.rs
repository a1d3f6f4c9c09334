//! A minimal sans-IO WebSocket (RFC 6455) codec for the generator and the benchmark origin.
//!
//! Enough for echo round trips: the handshake key/accept pair, frame heads with 7/16/64-bit
//! lengths, client masking. No extensions, no fragmentation reassembly (each frame is
//! echoed as it is), no UTF-8 checks on text frames: the benchmark measures transport, not a
//! WebSocket library. Never touches sockets.

use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use sha1::{Digest, Sha1};

/// The RFC 6455 GUID appended to the client key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest frame payload accepted, so a bad length cannot make us allocate gigabytes.
pub const MAX_PAYLOAD: u64 = 16 << 20;

/// Opcode of a binary data frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key.trim_ascii());
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh random client key (16 random bytes, base64).
pub fn client_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// A parsed frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// FIN bit.
    pub fin: bool,
    /// Opcode (low 4 bits).
    pub opcode: u8,
    /// Masking key, present on client-to-server frames.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
    /// Bytes the head occupies (2 to 14).
    pub head_len: usize,
}

/// Why a frame head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    /// RSV bits set without a negotiated extension.
    #[error("websocket frame with reserved bits set")]
    Reserved,
    /// Payload length over [`MAX_PAYLOAD`] (or a control frame over 125 bytes).
    #[error("websocket frame payload of {0} bytes is too large")]
    TooLarge(u64),
}

/// Parses a frame head from the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, WsError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let opcode = b0 & 0x0f;
    if len > MAX_PAYLOAD || (opcode >= 0x8 && len > 125) {
        return Err(WsError::TooLarge(len));
    }
    let mask = if masked {
        match buf
            .get(pos..pos + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        {
            Some(m) => {
                pos += 4;
                Some(m)
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(FrameHead {
        fin: b0 & 0x80 != 0,
        opcode,
        mask,
        len,
        head_len: pos,
    }))
}

/// Appends a frame head (FIN set) for `len` payload bytes.
pub fn encode_head(opcode: u8, len: u64, mask: Option<[u8; 4]>, dst: &mut BytesMut) {
    dst.put_u8(0x80 | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        dst.put_u8(m | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        dst.put_u8(m | 126);
        dst.put_u16(l);
    } else {
        dst.put_u8(m | 127);
        dst.put_u64(len);
    }
    if let Some(k) = mask {
        dst.put_slice(&k);
    }
}

/// XORs `data` with the masking key, starting at payload offset `offset`.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[(i + shift) % 4];
    }
}

/// Appends a whole frame; masks the payload when `mask` is given.
pub fn encode_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, dst: &mut BytesMut) {
    encode_head(opcode, payload.len() as u64, mask, dst);
    let start = dst.len();
    dst.put_slice(payload);
    if let Some(k) = mask {
        apply_mask(&mut dst[start..], k, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_accept_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(client_key().len(), 24);
    }

    #[test]
    fn frames_round_trip_at_every_length_class() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut buf = BytesMut::new();
            let key = [1, 2, 3, 4];
            encode_frame(OP_BINARY, &payload, Some(key), &mut buf);
            for cut in [0, 1, 3] {
                if cut < buf.len().min(4) {
                    assert_eq!(parse_head(&buf[..cut]).unwrap(), None);
                }
            }
            let head = parse_head(&buf).unwrap().unwrap();
            assert_eq!(
                (head.opcode, head.len, head.mask),
                (OP_BINARY, len as u64, Some(key))
            );
            let body = &mut buf[head.head_len..];
            apply_mask(body, key, 0);
            assert_eq!(body, &payload[..]);
        }
    }

    #[test]
    fn mask_offset_continues_across_pieces() {
        let key = [9, 8, 7, 6];
        let mut whole = *b"abcdefghij";
        apply_mask(&mut whole, key, 0);
        let mut pieces = *b"abcdefghij";
        let (a, b) = pieces.split_at_mut(3);
        apply_mask(a, key, 0);
        apply_mask(b, key, 3);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn refuses_reserved_bits_and_huge_lengths() {
        assert_eq!(parse_head(&[0xC2, 0x00]), Err(WsError::Reserved));
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_head(&big), Err(WsError::TooLarge(u64::MAX)));
        assert_eq!(
            parse_head(&[0x89, 126, 0, 200]),
            Err(WsError::TooLarge(200))
        );
    }
}
