//! Datagram v3 (feature `support_datagram_v3_2` at 2026.8): the type byte first. Sessions
//! ("flows") are opened by a registration datagram and answered by a registration response
//! datagram; the `SessionManager` RPCs are refused under v3.
//!
//! | type | layout |
//! |---|---|
//! | 0 registration | flags (bit0 IPv6, bit1 traced, bit2 bundled payload) · port BE · idle seconds BE · request ID · IPv4 (4) or IPv6 (16) · optional payload |
//! | 1 payload | request ID · payload (at most 1280 bytes) |
//! | 2 ICMP | IP packet (1..=1280 bytes) |
//! | 3 registration response | status · request ID · message length BE · message |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{DatagramError, MAX_PAYLOAD, SessionId};

const FLAG_IPV6: u8 = 0b001;
const FLAG_TRACED: u8 = 0b010;
const FLAG_BUNDLED: u8 = 0b100;

/// Registration header with an IPv4 destination: type, flags, port, idle, request ID, address.
pub const REGISTRATION_V4_LEN: usize = 1 + 1 + 2 + 2 + 16 + 4;
/// Registration header with an IPv6 destination.
pub const REGISTRATION_V6_LEN: usize = REGISTRATION_V4_LEN + 12;
/// Payload header: type and request ID.
pub const PAYLOAD_HEADER_LEN: usize = 17;
/// Registration response header: type, status, request ID, message length.
pub const RESPONSE_HEADER_LEN: usize = 1 + 1 + 16 + 2;
/// Longest registration-response message.
pub const MAX_RESPONSE_MESSAGE: usize = MAX_PAYLOAD - RESPONSE_HEADER_LEN;

/// The v3 type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DatagramType {
    /// Opens a flow.
    Registration = 0,
    /// A flow's payload.
    Payload = 1,
    /// A raw ICMP (v4 or v6) IP packet.
    Icmp = 2,
    /// The connector's answer to a registration.
    RegistrationResponse = 3,
}

/// A flow registration from the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration<'a> {
    /// The flow's ID, echoed in every payload and in the response.
    pub request_id: SessionId,
    /// Where the flow goes.
    pub dest: SocketAddr,
    /// Whether the edge asked for tracing.
    pub traced: bool,
    /// Idle timeout the edge asks for; zero means cloudflared's default.
    pub idle_hint: Duration,
    /// A first payload bundled with the registration (empty when none).
    pub payload: &'a [u8],
}

/// Status of a registration response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    /// The flow is ready.
    Ok,
    /// The destination could not be reached.
    DestinationUnreachable,
    /// No local UDP socket could be bound (also cloudflared's answer to any dial failure).
    UnableToBindSocket,
    /// Over `max-active-flows`.
    TooManyActiveFlows,
    /// Another failure, described by the message.
    ErrorWithMessage,
    /// A status byte this version does not know (kept so a decoder never fails on it).
    Other(u8),
}

impl ResponseStatus {
    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            ResponseStatus::Ok => 0,
            ResponseStatus::DestinationUnreachable => 1,
            ResponseStatus::UnableToBindSocket => 2,
            ResponseStatus::TooManyActiveFlows => 3,
            ResponseStatus::ErrorWithMessage => 0xff,
            ResponseStatus::Other(b) => b,
        }
    }

    /// From the wire byte.
    pub fn from_byte(b: u8) -> ResponseStatus {
        match b {
            0 => ResponseStatus::Ok,
            1 => ResponseStatus::DestinationUnreachable,
            2 => ResponseStatus::UnableToBindSocket,
            3 => ResponseStatus::TooManyActiveFlows,
            0xff => ResponseStatus::ErrorWithMessage,
            b => ResponseStatus::Other(b),
        }
    }
}

/// One decoded v3 datagram, borrowing the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Opens a flow.
    Registration(Registration<'a>),
    /// A flow's payload.
    Payload {
        /// The flow.
        request_id: SessionId,
        /// The UDP payload.
        payload: &'a [u8],
    },
    /// A raw ICMP packet.
    Icmp(&'a [u8]),
    /// An answer to a registration.
    RegistrationResponse {
        /// The flow.
        request_id: SessionId,
        /// Outcome.
        status: ResponseStatus,
        /// Error text (empty on success).
        message: &'a [u8],
    },
}

fn too_short(kind: &'static str, len: usize, needed: usize) -> DatagramError {
    DatagramError::TooShort { kind, len, needed }
}

fn id_at(d: &[u8], at: usize) -> SessionId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[at..at + 16]);
    SessionId(id)
}

/// Decodes one received v3 datagram.
pub fn decode(d: &[u8]) -> Result<Datagram<'_>, DatagramError> {
    match *d.first().ok_or(DatagramError::Empty)? {
        0 => decode_registration(d).map(Datagram::Registration),
        1 => {
            if d.len() < PAYLOAD_HEADER_LEN {
                return Err(too_short("flow payload", d.len(), PAYLOAD_HEADER_LEN));
            }
            let payload = &d[PAYLOAD_HEADER_LEN..];
            super::within("flow payload", payload.len(), MAX_PAYLOAD)?;
            Ok(Datagram::Payload {
                request_id: id_at(d, 1),
                payload,
            })
        }
        2 => {
            let packet = &d[1..];
            if packet.is_empty() {
                return Err(DatagramError::MissingPacket);
            }
            super::within("ICMP packet", packet.len(), MAX_PAYLOAD)?;
            Ok(Datagram::Icmp(packet))
        }
        3 => decode_response(d),
        other => Err(DatagramError::UnknownType(other)),
    }
}

fn decode_registration(d: &[u8]) -> Result<Registration<'_>, DatagramError> {
    if d.len() < REGISTRATION_V4_LEN {
        return Err(too_short("flow registration", d.len(), REGISTRATION_V4_LEN));
    }
    let flags = d[1];
    let port = u16::from_be_bytes([d[2], d[3]]);
    let idle = u16::from_be_bytes([d[4], d[5]]);
    let (ip, header) = if flags & FLAG_IPV6 != 0 {
        if d.len() < REGISTRATION_V6_LEN {
            return Err(too_short(
                "IPv6 flow registration",
                d.len(),
                REGISTRATION_V6_LEN,
            ));
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&d[22..38]);
        (IpAddr::V6(Ipv6Addr::from(a)), REGISTRATION_V6_LEN)
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(d[22], d[23], d[24], d[25])),
            REGISTRATION_V4_LEN,
        )
    };
    // cloudflared takes the bytes after the header only when the bundled flag says so.
    let payload = if flags & FLAG_BUNDLED != 0 {
        &d[header..]
    } else {
        &[]
    };
    super::within("bundled flow payload", payload.len(), MAX_PAYLOAD)?;
    Ok(Registration {
        request_id: id_at(d, 6),
        dest: SocketAddr::new(ip, port),
        traced: flags & FLAG_TRACED != 0,
        idle_hint: Duration::from_secs(u64::from(idle)),
        payload,
    })
}

fn decode_response(d: &[u8]) -> Result<Datagram<'_>, DatagramError> {
    if d.len() < RESPONSE_HEADER_LEN {
        return Err(too_short(
            "registration response",
            d.len(),
            RESPONSE_HEADER_LEN,
        ));
    }
    let announced = usize::from(u16::from_be_bytes([d[18], d[19]]));
    super::within(
        "registration response message",
        announced,
        MAX_RESPONSE_MESSAGE,
    )?;
    let rest = &d[RESPONSE_HEADER_LEN..];
    if rest.len() < announced {
        return Err(DatagramError::MessageTruncated {
            announced,
            present: rest.len(),
        });
    }
    Ok(Datagram::RegistrationResponse {
        request_id: id_at(d, 2),
        status: ResponseStatus::from_byte(d[1]),
        message: &rest[..announced],
    })
}

/// Appends a registration datagram (the edge's side; tests and the built-in edge use it).
pub fn encode_registration(r: &Registration<'_>, out: &mut Vec<u8>) -> Result<(), DatagramError> {
    super::within("bundled flow payload", r.payload.len(), MAX_PAYLOAD)?;
    let mut flags = 0;
    if r.dest.is_ipv6() {
        flags |= FLAG_IPV6;
    }
    if r.traced {
        flags |= FLAG_TRACED;
    }
    if !r.payload.is_empty() {
        flags |= FLAG_BUNDLED;
    }
    let idle = u16::try_from(r.idle_hint.as_secs()).unwrap_or(u16::MAX);
    out.push(DatagramType::Registration as u8);
    out.push(flags);
    out.extend_from_slice(&r.dest.port().to_be_bytes());
    out.extend_from_slice(&idle.to_be_bytes());
    out.extend_from_slice(&r.request_id.0);
    match r.dest.ip() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
    out.extend_from_slice(r.payload);
    Ok(())
}

/// Appends a flow payload datagram.
pub fn encode_payload(
    request_id: SessionId,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DatagramError> {
    super::within("origin UDP payload", payload.len(), MAX_PAYLOAD)?;
    out.reserve(PAYLOAD_HEADER_LEN + payload.len());
    out.push(DatagramType::Payload as u8);
    out.extend_from_slice(&request_id.0);
    out.extend_from_slice(payload);
    Ok(())
}

/// Appends an ICMP datagram carrying `packet` (1..=1280 bytes).
pub fn encode_icmp(packet: &[u8], out: &mut Vec<u8>) -> Result<(), DatagramError> {
    if packet.is_empty() {
        return Err(DatagramError::MissingPacket);
    }
    super::within("ICMP packet", packet.len(), MAX_PAYLOAD)?;
    out.push(DatagramType::Icmp as u8);
    out.extend_from_slice(packet);
    Ok(())
}

/// Appends a registration response.
pub fn encode_response(
    request_id: SessionId,
    status: ResponseStatus,
    message: &str,
    out: &mut Vec<u8>,
) -> Result<(), DatagramError> {
    super::within(
        "registration response message",
        message.len(),
        MAX_RESPONSE_MESSAGE,
    )?;
    out.push(DatagramType::RegistrationResponse as u8);
    out.push(status.byte());
    out.extend_from_slice(&request_id.0);
    // Bounded by MAX_RESPONSE_MESSAGE above, so the length fits in u16.
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId(std::array::from_fn(|i| i as u8 + 1))
    }

    #[test]
    fn ipv4_registration_bytes_as_cloudflared_marshals_them() {
        // quic/v3/datagram.go MarshalBinary: 0x00, flags, port BE, idle s BE, id, IPv4.
        let r = Registration {
            request_id: id(),
            dest: "127.0.0.1:53".parse().unwrap(),
            traced: false,
            idle_hint: Duration::from_secs(30),
            payload: b"",
        };
        let mut out = Vec::new();
        encode_registration(&r, &mut out).unwrap();
        let mut want = vec![0x00, 0x00, 0x00, 0x35, 0x00, 0x1e];
        want.extend_from_slice(&id().0);
        want.extend_from_slice(&[127, 0, 0, 1]);
        assert_eq!(out, want);
        assert_eq!(decode(&out).unwrap(), Datagram::Registration(r));
    }

    #[test]
    fn ipv6_bundled_traced_registration_round_trips() {
        let r = Registration {
            request_id: id(),
            dest: "[::1]:8053".parse().unwrap(),
            traced: true,
            idle_hint: Duration::ZERO,
            payload: b"first",
        };
        let mut out = Vec::new();
        encode_registration(&r, &mut out).unwrap();
        assert_eq!(out[1], 0b111);
        assert_eq!(out.len(), REGISTRATION_V6_LEN + 5);
        assert_eq!(decode(&out).unwrap(), Datagram::Registration(r));
    }

    #[test]
    fn trailing_bytes_without_the_bundled_flag_are_not_a_payload() {
        let mut out = Vec::new();
        encode_registration(
            &Registration {
                request_id: id(),
                dest: "10.0.0.1:1".parse().unwrap(),
                traced: false,
                idle_hint: Duration::ZERO,
                payload: b"",
            },
            &mut out,
        )
        .unwrap();
        out.extend_from_slice(b"junk");
        let Datagram::Registration(r) = decode(&out).unwrap() else {
            panic!("not a registration")
        };
        assert!(r.payload.is_empty());
    }

    #[test]
    fn payload_and_icmp_limits() {
        let mut out = Vec::new();
        encode_payload(id(), &[1; 1280], &mut out).unwrap();
        assert_eq!(out[0], 1);
        assert!(
            matches!(decode(&out).unwrap(), Datagram::Payload { payload, .. } if payload.len() == 1280)
        );
        out.push(0);
        assert!(matches!(
            decode(&out).unwrap_err(),
            DatagramError::TooLarge { .. }
        ));
        assert_eq!(decode(&[2]).unwrap_err(), DatagramError::MissingPacket);
        let mut icmp = Vec::new();
        encode_icmp(&[0x45; 20], &mut icmp).unwrap();
        assert_eq!(decode(&icmp).unwrap(), Datagram::Icmp(&[0x45; 20]));
    }

    #[test]
    fn response_bytes_and_truncation() {
        let mut out = Vec::new();
        encode_response(id(), ResponseStatus::TooManyActiveFlows, "", &mut out).unwrap();
        let mut want = vec![3, 3];
        want.extend_from_slice(&id().0);
        want.extend_from_slice(&[0, 0]);
        assert_eq!(out, want);
        out.clear();
        encode_response(id(), ResponseStatus::ErrorWithMessage, "boom", &mut out).unwrap();
        assert_eq!(
            decode(&out).unwrap(),
            Datagram::RegistrationResponse {
                request_id: id(),
                status: ResponseStatus::ErrorWithMessage,
                message: b"boom"
            }
        );
        out.pop();
        assert_eq!(
            decode(&out).unwrap_err(),
            DatagramError::MessageTruncated {
                announced: 4,
                present: 3
            }
        );
    }

    #[test]
    fn short_datagrams_are_errors_not_panics() {
        assert_eq!(decode(&[]).unwrap_err(), DatagramError::Empty);
        assert_eq!(decode(&[9]).unwrap_err(), DatagramError::UnknownType(9));
        for ty in 0..4u8 {
            for len in 1..REGISTRATION_V6_LEN {
                let mut d = vec![0xffu8; len];
                d[0] = ty;
                let _ = decode(&d);
            }
        }
        let mut v6 = vec![0u8; REGISTRATION_V4_LEN];
        v6[1] = FLAG_IPV6;
        assert_eq!(
            decode(&v6).unwrap_err().to_string(),
            "IPv6 flow registration datagram has 26 bytes, its header needs 38"
        );
    }
}
