//! WebSocket framing (RFC 6455 §5), sans-IO: bytes in, frames out, for any side (the connector
//! decodes masked client frames, the edge and the bench can decode unmasked server frames).
//!
//! Checks, before any allocation: the payload length against [`MAX_FRAME`]; control frames
//! (close, ping, pong) at most 125 bytes and never fragmented; reserved bits and opcodes are
//! errors. [`Error::close_code`] gives the close code to answer with (1002 or 1009).

#![forbid(unsafe_code)]

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest data frame payload accepted.
pub const MAX_FRAME: u64 = 16 << 20;
/// Largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL: usize = 125;

pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// Close code for a protocol error.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code for a message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// One decoded frame (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Bytes,
}

impl Frame {
    /// Close, ping or pong.
    pub fn is_control(&self) -> bool {
        self.opcode & 0x08 != 0
    }
}

/// Why the bytes are not a valid frame (more bytes would not help).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("websocket: frame of {0} bytes is larger than the limit")]
    TooLarge(u64),
    #[error("websocket: control frame longer than 125 bytes")]
    ControlTooLong,
    #[error("websocket: fragmented control frame")]
    FragmentedControl,
    #[error("websocket: reserved bits set")]
    ReservedBits,
    #[error("websocket: reserved opcode {0}")]
    ReservedOpcode(u8),
}

impl Error {
    /// The close code that answers this error.
    pub fn close_code(self) -> u16 {
        match self {
            Error::TooLarge(_) => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL,
        }
    }
}

/// Decodes one frame from the front of `buf`. `Ok(None)`: incomplete, nothing consumed;
/// `Err`: invalid. Never reserves memory on the strength of a header's length.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(Error::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(Error::ReservedOpcode(opcode));
    }
    let control = opcode & 0x08 != 0;
    if control && !fin {
        return Err(Error::FragmentedControl);
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if control && len > MAX_CONTROL as u64 {
        return Err(Error::ControlTooLong);
    }
    if len > MAX_FRAME {
        return Err(Error::TooLarge(len));
    }
    let mut mask = [0u8; 4];
    if masked {
        match buf.get(pos..pos + 4) {
            Some(m) => mask.copy_from_slice(m),
            None => return Ok(None),
        }
        pos += 4;
    }
    // Bounded by MAX_FRAME above.
    let len = len as usize;
    if buf.len() < pos + len {
        // Nothing reserved ahead: the buffer grows only with bytes that actually arrived.
        return Ok(None);
    }
    buf.advance(pos);
    let mut payload = buf.split_to(len);
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload: payload.freeze(),
    }))
}

/// Appends the header of an unmasked (server) frame carrying `len` payload bytes.
pub fn put_header(out: &mut BytesMut, fin: bool, opcode: u8, len: usize) {
    out.put_u8(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(l);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// The header of an unmasked (server) frame carrying `len` payload bytes.
pub fn header(fin: bool, opcode: u8, len: usize) -> Bytes {
    let mut h = BytesMut::with_capacity(10);
    put_header(&mut h, fin, opcode, len);
    h.freeze()
}

/// Payloads up to this size are copied behind their header so both travel as one buffer (one
/// HTTP/2 DATA frame); larger ones go as header + first `INLINE` bytes, then the rest uncopied.
pub const INLINE: usize = 16 * 1024;

/// An unmasked frame as at most two buffers, the header never alone: `(head, rest)` where
/// `head` holds the header and the first bytes of the payload, `rest` the remainder (maybe empty).
pub fn encode(fin: bool, opcode: u8, mut payload: Bytes) -> (Bytes, Bytes) {
    let inline = payload.len().min(INLINE);
    let mut head = BytesMut::with_capacity(10 + inline);
    put_header(&mut head, fin, opcode, payload.len());
    head.put_slice(&payload.split_to(inline));
    (head.freeze(), payload)
}

/// A close frame's payload: the code, big-endian.
pub fn close_payload(code: u16) -> Bytes {
    Bytes::copy_from_slice(&code.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> BytesMut {
        let mask = [1u8, 2, 3, 4];
        let mut b = BytesMut::new();
        b.put_u8(b0);
        if payload.len() < 126 {
            b.put_u8(0x80 | payload.len() as u8);
        } else {
            b.put_u8(0x80 | 126);
            b.put_u16(payload.len() as u16);
        }
        b.put_slice(&mask);
        b.extend(payload.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]));
        b
    }

    #[test]
    fn decodes_masked_frames_incrementally() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let whole = masked(0x80 | OP_BINARY, &payload);
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let got = decode(&mut buf).unwrap();
            if i + 1 < whole.len() {
                assert!(got.is_none());
            } else {
                let f = got.unwrap();
                assert_eq!((f.fin, f.opcode), (true, OP_BINARY));
                assert_eq!(&f.payload[..], &payload[..]);
            }
        }
        assert_eq!(&header(true, OP_BINARY, 5)[..], &[0x82, 5]);
        assert_eq!(&header(true, OP_TEXT, 300)[..], &[0x81, 126, 1, 44]);
    }

    #[test]
    fn invalid_frames_are_errors_before_any_allocation() {
        let mut huge = BytesMut::from(&[0x82u8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0][..]);
        let cap = huge.capacity();
        assert!(matches!(decode(&mut huge), Err(Error::TooLarge(_))));
        assert_eq!(
            huge.capacity(),
            cap,
            "nothing reserved for a rejected frame"
        );
        let long_ping = masked(0x80 | OP_PING, &[0u8; 126]);
        assert_eq!(decode(&mut long_ping.clone()), Err(Error::ControlTooLong));
        assert_eq!(Error::ControlTooLong.close_code(), 1002);
        let fragmented_ping = masked(OP_PING, b"x");
        assert_eq!(
            decode(&mut fragmented_ping.clone()),
            Err(Error::FragmentedControl)
        );
        let rsv = masked(0x80 | 0x40 | OP_BINARY, b"x");
        assert_eq!(decode(&mut rsv.clone()), Err(Error::ReservedBits));
        for op in [3u8, 7, 11, 15] {
            let f = masked(0x80 | op, b"x");
            assert_eq!(decode(&mut f.clone()), Err(Error::ReservedOpcode(op)));
        }
        let ok_ping = masked(0x80 | OP_PING, &[7u8; 125]);
        assert_eq!(
            decode(&mut ok_ping.clone()).unwrap().unwrap().payload.len(),
            125
        );
    }

    #[test]
    fn header_travels_with_payload() {
        let (head, rest) = encode(true, OP_BINARY, Bytes::from_static(b"hello"));
        assert_eq!(&head[..], b"\x82\x05hello");
        assert!(rest.is_empty());
        let big = Bytes::from(vec![1u8; INLINE + 10]);
        let (head, rest) = encode(true, OP_BINARY, big);
        assert_eq!(head.len(), 4 + INLINE);
        assert_eq!(rest.len(), 10);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut b = BytesMut::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b.put_u8(seed as u8);
            }
            while let Ok(Some(_)) = decode(&mut b) {}
        }
    }
}
