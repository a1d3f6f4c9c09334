//! quinn-proto configurations mirroring cloudflared's quic-go client (spec §4.1).
//!
//! Differences from quic-go, each deliberate:
//! - quic-go starts with 512 KiB stream / 768 KiB connection windows and auto-tunes them up to
//!   the `--quic-*-flow-control-limit` values; quinn has no auto-tuning, so the windows are the
//!   limits themselves (memory is still only used for bytes actually in flight).
//! - quic-go allows 2^60 concurrent incoming streams; quinn allocates state for every allowed
//!   concurrent stream up front, so ringflare bounds concurrency (it still grants new streams as
//!   old ones finish, as quic-go does).

use std::{net::IpAddr, sync::Arc, time::Duration};

use compio::quic::{
    ClientConfig, EndpointConfig, IdleTimeout, MtuDiscoveryConfig, ServerConfig, TransportConfig,
    VarInt,
    crypto::rustls::{QuicClientConfig, QuicServerConfig},
};

/// quic-go's `MaxIdleTimeout` as cloudflared sets it.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// cloudflared's `KeepAlivePeriod` (a PING when idle).
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// quic-go's total handshake limit (twice `HandshakeIdleTimeout` of 5 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// quic-go's initial stream receive window; reported for reference, see the module doc.
pub const INITIAL_STREAM_WINDOW: u64 = 512 << 10;
/// quic-go's initial connection receive window; reported for reference.
pub const INITIAL_CONN_WINDOW: u64 = 768 << 10;
/// `max_udp_payload_size` transport parameter and the PMTU discovery ceiling.
pub const MAX_UDP_PAYLOAD: u16 = 1452;
/// Bytes of received datagrams buffered per connection before the oldest are dropped; it also
/// enables the datagram extension (max_datagram_frame_size) toward the peer.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 1 << 20;
/// quinn's own cap on stream bytes written but not yet acknowledged, per connection: the
/// memory budget of the sending side. quic-go has none (its `Write` returns only once the
/// packer took the bytes), so without this cap a connection holds whatever the peer's
/// connection window lets it write ahead: 30 MiB per connection, 120 MiB over four, was the
/// connector's RSS with 64 concurrent downloads (206 MiB against cloudflared's 70).
/// 8 MiB is above the default per-stream window (6 MiB), so one stream is still paced by the
/// peer's window and never by this one. Measured (bench e2e, quic, loaded 2-core machine,
/// 128 MiB vs 8 MiB, medians of 3 pairs): 64 concurrent downloads 194.0 -> 86.6 MiB RSS,
/// 43.8 -> 70.3 MB/s, 5.97 -> 4.14 CPU-s/GB (a binding window wakes every writer blocked on
/// it per ACK, yet costs less than 30 MiB per connection in flight did); one download 57.1 ->
/// 75.7 MB/s, RSS 53 MiB both (single-stream figures swing by 2x here). The edge's uploads
/// toward a connector have the same cap.
///
/// Budget per connection, sending: at most `SEND_WINDOW` of stream data (plus quinn's
/// per-packet bookkeeping); receiving: at most the connection window we grant (30 MiB, at
/// most the stream window per stream), and only while the reader falls behind.
pub const SEND_WINDOW: u64 = 8 << 20;
/// Concurrent bidirectional streams the edge may have open toward the connector (one per
/// eyeball request, WebSocket or TCP flow). cloudflared grants 2^60, which quic-go tracks
/// lazily; quinn allocates a slot for every stream a grant allows, up front (measured: a
/// 65,536 grant cost four connections 48 MiB of RSS before the first request). 4096 per
/// connection, 16,384 over four, costs about 3 MiB and is past what the idle-stream budget lets
/// one host hold.
pub const EDGE_MAX_CONCURRENT_BIDI: u32 = 4096;
/// The connector opens its control stream and a few RPC streams; the edge accepts this many.
const CONNECTOR_MAX_CONCURRENT_BIDI: u32 = 64;

/// The initial packet size cloudflared uses toward `peer`: it fits WARP's 1280-byte MTU.
pub fn initial_packet_size(peer: IpAddr) -> u16 {
    match peer {
        IpAddr::V4(_) => 1232,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => 1232,
        IpAddr::V6(_) => 1252,
    }
}

/// Building a QUIC configuration failed (a local problem, never the peer's).
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The rustls config cannot carry QUIC (no TLS 1.3 or no QUIC-capable cipher suite).
    #[error("building the QUIC {what} TLS config: {reason}")]
    Tls {
        /// `client` or `server`.
        what: &'static str,
        /// quinn's explanation.
        reason: String,
    },
    /// A flow-control limit is out of QUIC's range.
    #[error("--{flag} {value} is out of range")]
    Limit {
        /// The flag that carries the value.
        flag: &'static str,
        /// The value given.
        value: u64,
    },
}

/// The QUIC knobs of `tunnel run` (spec §4.1), resolved from the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicSettings {
    /// `--quic-stream-level-flow-control-limit`: the per-stream receive window.
    pub stream_window: u64,
    /// `--quic-connection-level-flow-control-limit`: the per-connection receive window.
    pub conn_window: u64,
    /// False with `--quic-disable-pmtu-discovery`.
    pub pmtu_discovery: bool,
}

impl Default for QuicSettings {
    fn default() -> Self {
        Self {
            stream_window: 6 << 20,
            conn_window: 30 << 20,
            pmtu_discovery: true,
        }
    }
}

impl QuicSettings {
    /// Checks the flag values; a window of 0 means quic-go's default, as in cloudflared.
    pub fn new(
        stream_window: u64,
        conn_window: u64,
        pmtu_discovery: bool,
    ) -> Result<Self, QuicError> {
        let d = Self::default();
        let pick = |v: u64, default: u64, flag| match v {
            0 => Ok(default),
            v if VarInt::from_u64(v).is_ok() => Ok(v),
            value => Err(QuicError::Limit { flag, value }),
        };
        Ok(Self {
            stream_window: pick(
                stream_window,
                d.stream_window,
                "quic-stream-level-flow-control-limit",
            )?,
            conn_window: pick(
                conn_window,
                d.conn_window,
                "quic-connection-level-flow-control-limit",
            )?,
            pmtu_discovery,
        })
    }

    /// The transport parameters and timers for a connection to or from `peer`.
    pub fn transport(&self, peer: IpAddr, max_bidi: u32) -> TransportConfig {
        let mut t = TransportConfig::default();
        // Both values were range-checked in `new`; saturate rather than panic if not.
        let stream = VarInt::from_u64(self.stream_window).unwrap_or(VarInt::MAX);
        let conn = VarInt::from_u64(self.conn_window).unwrap_or(VarInt::MAX);
        t.max_idle_timeout(IdleTimeout::try_from(MAX_IDLE_TIMEOUT).ok())
            .keep_alive_interval(Some(KEEP_ALIVE))
            .max_concurrent_bidi_streams(VarInt::from_u32(max_bidi))
            // Neither side uses unidirectional streams (cloudflared never accepts them).
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(stream)
            .receive_window(conn)
            .send_window(SEND_WINDOW)
            .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
            .initial_mtu(initial_packet_size(peer))
            .mtu_discovery_config(self.pmtu_discovery.then(|| {
                let mut m = MtuDiscoveryConfig::default();
                m.upper_bound(MAX_UDP_PAYLOAD);
                m
            }));
        t
    }

    /// The connector's client config toward an edge at `peer`, over `tls` (ALPN `argotunnel`).
    pub fn client(
        &self,
        tls: Arc<rustls::ClientConfig>,
        peer: IpAddr,
    ) -> Result<ClientConfig, QuicError> {
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Tls {
            what: "client",
            reason: e.to_string(),
        })?;
        let mut config = ClientConfig::new(Arc::new(crypto));
        // The limit is on streams the peer opens: the edge opens one per eyeball request.
        config.transport_config(Arc::new(self.transport(peer, EDGE_MAX_CONCURRENT_BIDI)));
        Ok(config)
    }

    /// The built-in edge's server config: the connector may open its control stream and RPC
    /// streams; no connection migration (cloudflared's disable_active_migration).
    pub fn server(&self, tls: Arc<rustls::ServerConfig>) -> Result<ServerConfig, QuicError> {
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls {
            what: "server",
            reason: e.to_string(),
        })?;
        let mut config = ServerConfig::with_crypto(Arc::new(crypto));
        let unspecified = IpAddr::from([0, 0, 0, 0]);
        config
            .transport_config(Arc::new(
                self.transport(unspecified, CONNECTOR_MAX_CONCURRENT_BIDI),
            ))
            .migration(false);
        Ok(config)
    }

    /// Endpoint-wide settings: the largest UDP payload either side accepts.
    pub fn endpoint() -> EndpointConfig {
        let mut e = EndpointConfig::default();
        // 1452 is within quinn's accepted range [1200, 65527]; the error cannot happen.
        let _ = e.max_udp_payload_size(MAX_UDP_PAYLOAD);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_cloudflared() {
        let s = QuicSettings::default();
        assert_eq!(s.stream_window, 6_291_456);
        assert_eq!(s.conn_window, 31_457_280);
        assert!(s.pmtu_discovery);
    }

    #[test]
    fn zero_means_default_and_huge_is_refused() {
        let s = QuicSettings::new(0, 0, false).unwrap();
        assert_eq!(s.stream_window, 6 << 20);
        assert_eq!(s.conn_window, 30 << 20);
        assert!(!s.pmtu_discovery);
        let s = QuicSettings::new(1 << 20, 2 << 20, true).unwrap();
        assert_eq!((s.stream_window, s.conn_window), (1 << 20, 2 << 20));
        let e = QuicSettings::new(u64::MAX, 0, true).unwrap_err();
        assert!(
            e.to_string()
                .contains("quic-stream-level-flow-control-limit"),
            "{e}"
        );
    }

    #[test]
    fn send_window_never_binds_one_default_stream() {
        // One stream is paced by the peer's stream window, not by our send window.
        assert!(SEND_WINDOW > QuicSettings::default().stream_window);
    }

    #[test]
    fn initial_packet_size_by_family() {
        assert_eq!(initial_packet_size("198.41.192.7".parse().unwrap()), 1232);
        assert_eq!(initial_packet_size("::ffff:1.2.3.4".parse().unwrap()), 1232);
        assert_eq!(initial_packet_size("2606:4700::1".parse().unwrap()), 1252);
    }
}
