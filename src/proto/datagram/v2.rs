//! Datagram v2 (cloudflared's default, feature `support_datagram_v2`): `body ‖ metadata ‖ type`,
//! the type byte last so a sender appends metadata to a payload it already holds.
//!
//! | type (last byte) | metadata before it |
//! |---|---|
//! | 0 UDP session payload | 16-byte session UUID |
//! | 1 IP packet | none |
//! | 2 IP packet with trace | 25-byte tracing identity |
//! | 3 tracing spans | 25-byte tracing identity |
//!
//! Sessions themselves are opened and closed by the `SessionManager` RPCs, not by datagrams.

use super::{DatagramError, MAX_PAYLOAD, MAX_V2_DATAGRAM, SessionId};

/// Bytes of a tracing identity: 16 trace ID, 8 span ID, 1 flags.
pub const TRACE_IDENTITY_LEN: usize = 25;

/// The v2 type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DatagramType {
    /// A UDP session's payload, session UUID before the type byte.
    Udp = 0,
    /// A raw IP packet (ICMP proxying).
    Ip = 1,
    /// A raw IP packet followed by a tracing identity.
    IpWithTrace = 2,
    /// Serialized tracing spans followed by a tracing identity.
    TracingSpan = 3,
}

/// One decoded v2 datagram, borrowing the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Payload for (or from) the UDP session `session`.
    Udp {
        /// The session the payload belongs to.
        session: SessionId,
        /// The UDP payload itself.
        payload: &'a [u8],
    },
    /// A raw IP packet.
    Ip(&'a [u8]),
    /// A raw IP packet with the tracing identity of the request that carried it.
    IpWithTrace {
        /// The packet.
        packet: &'a [u8],
        /// Trace ID, span ID and flags.
        identity: &'a [u8; TRACE_IDENTITY_LEN],
    },
    /// Tracing spans (protobuf) for the identity that asked for them.
    TracingSpan {
        /// The serialized spans.
        spans: &'a [u8],
        /// Trace ID, span ID and flags.
        identity: &'a [u8; TRACE_IDENTITY_LEN],
    },
}

/// Splits `n` trailing bytes off `b`: `(body, tail)`.
fn split_tail<'a>(
    b: &'a [u8],
    n: usize,
    kind: &'static str,
    whole: usize,
) -> Result<(&'a [u8], &'a [u8]), DatagramError> {
    if b.len() < n {
        return Err(DatagramError::TooShort {
            kind,
            len: whole,
            needed: n + 1,
        });
    }
    Ok(b.split_at(b.len() - n))
}

/// Decodes one received v2 datagram.
pub fn decode(datagram: &[u8]) -> Result<Datagram<'_>, DatagramError> {
    let (&ty, body) = datagram.split_last().ok_or(DatagramError::Empty)?;
    let whole = datagram.len();
    match ty {
        0 => {
            let (payload, id) = split_tail(body, 16, "UDP session", whole)?;
            let session = SessionId::from_slice(id).ok_or(DatagramError::TooShort {
                kind: "UDP session",
                len: whole,
                needed: 17,
            })?;
            Ok(Datagram::Udp { session, payload })
        }
        1 => Ok(Datagram::Ip(body)),
        2 | 3 => {
            let kind = if ty == 2 {
                "IP with trace"
            } else {
                "tracing span"
            };
            let (rest, id) = split_tail(body, TRACE_IDENTITY_LEN, kind, whole)?;
            let identity =
                <&[u8; TRACE_IDENTITY_LEN]>::try_from(id).map_err(|_| DatagramError::TooShort {
                    kind,
                    len: whole,
                    needed: TRACE_IDENTITY_LEN + 1,
                })?;
            Ok(if ty == 2 {
                Datagram::IpWithTrace {
                    packet: rest,
                    identity,
                }
            } else {
                Datagram::TracingSpan {
                    spans: rest,
                    identity,
                }
            })
        }
        other => Err(DatagramError::UnknownType(other)),
    }
}

/// Appends the datagram carrying `payload` for `session` to `out`: payload, UUID, type 0. Refuses
/// a payload over [`MAX_PAYLOAD`] as cloudflared does (it drops such origin packets).
pub fn encode_udp(
    session: SessionId,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DatagramError> {
    super::within("origin UDP payload", payload.len(), MAX_PAYLOAD)?;
    out.reserve(payload.len() + 17);
    out.extend_from_slice(payload);
    out.extend_from_slice(&session.0);
    out.push(DatagramType::Udp as u8);
    Ok(())
}

/// Appends a packet-kind datagram (`Ip`, `IpWithTrace`, `TracingSpan`): body, metadata, type.
/// Refuses a datagram larger than [`MAX_V2_DATAGRAM`].
pub fn encode_packet(
    ty: DatagramType,
    body: &[u8],
    metadata: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DatagramError> {
    let len = body.len() + metadata.len() + 1;
    super::within("datagram", len, MAX_V2_DATAGRAM)?;
    out.reserve(len);
    out.extend_from_slice(body);
    out.extend_from_slice(metadata);
    out.push(ty as u8);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: SessionId = SessionId([
        0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ]);

    #[test]
    fn udp_payload_is_suffixed_with_uuid_then_type_zero() {
        let mut out = Vec::new();
        encode_udp(ID, b"ping", &mut out).unwrap();
        // Worked out from quic/datagram.go SuffixSessionID + datagramv2.go SuffixType.
        let mut want = b"ping".to_vec();
        want.extend_from_slice(&ID.0);
        want.push(0);
        assert_eq!(out, want);
        assert_eq!(
            decode(&out).unwrap(),
            Datagram::Udp {
                session: ID,
                payload: b"ping"
            }
        );
    }

    #[test]
    fn empty_udp_payload_round_trips() {
        let mut out = Vec::new();
        encode_udp(ID, b"", &mut out).unwrap();
        assert_eq!(out.len(), 17);
        assert!(matches!(
            decode(&out).unwrap(),
            Datagram::Udp { payload: b"", .. }
        ));
    }

    #[test]
    fn payload_limit_is_1280() {
        let mut out = Vec::new();
        encode_udp(ID, &[7; 1280], &mut out).unwrap();
        assert_eq!(out.len(), 1297);
        let err = encode_udp(ID, &[7; 1281], &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "origin UDP payload is 1281 bytes, the limit is 1280"
        );
    }

    #[test]
    fn packet_kinds_decode() {
        assert_eq!(decode(&[0x45, 0, 1]).unwrap(), Datagram::Ip(&[0x45, 0]));
        let mut d = vec![0x45, 0x00];
        d.extend_from_slice(&[9; 25]);
        d.push(2);
        assert_eq!(
            decode(&d).unwrap(),
            Datagram::IpWithTrace {
                packet: &[0x45, 0],
                identity: &[9; 25]
            }
        );
        *d.last_mut().unwrap() = 3;
        assert!(matches!(
            decode(&d).unwrap(),
            Datagram::TracingSpan {
                spans: &[0x45, 0],
                ..
            }
        ));
        let mut e = Vec::new();
        encode_packet(DatagramType::IpWithTrace, &[0x45, 0], &[9; 25], &mut e).unwrap();
        assert_eq!(e, {
            let mut x = d.clone();
            *x.last_mut().unwrap() = 2;
            x
        });
    }

    #[test]
    fn malformed_datagrams_are_named() {
        assert_eq!(decode(&[]).unwrap_err(), DatagramError::Empty);
        assert_eq!(
            decode(&[1, 2, 4]).unwrap_err(),
            DatagramError::UnknownType(4)
        );
        assert_eq!(
            decode(&[0; 16]).unwrap_err().to_string(),
            "UDP session datagram has 16 bytes, its header needs 17"
        );
        let mut short_trace = [0u8; 25];
        short_trace[24] = 2;
        assert!(matches!(
            decode(&short_trace).unwrap_err(),
            DatagramError::TooShort {
                kind: "IP with trace",
                ..
            }
        ));
        assert!(encode_packet(DatagramType::Ip, &[0; 1350], &[], &mut Vec::new()).is_err());
    }

    #[test]
    fn no_input_of_up_to_three_bytes_panics() {
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 3, 4, 255] {
                let _ = decode(&[a]);
                let _ = decode(&[a, b]);
                let _ = decode(&[a, a, b]);
            }
        }
    }
}
