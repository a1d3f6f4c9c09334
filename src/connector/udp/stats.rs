//! Process-wide UDP session counters, rendered by the metrics server as cloudflared's
//! `cloudflared_udp_*` families. Plain atomics: updated once per session start or end (and per
//! dropped datagram), never per forwarded datagram.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// Counters shared by every connection's session manager.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagram v2 sessions open now (`cloudflared_udp_active_sessions`).
    pub active_sessions: AtomicU64,
    /// Datagram v2 sessions ever registered (`cloudflared_udp_total_sessions`).
    pub total_sessions: AtomicU64,
    /// Datagram v3 flows open now (`cloudflared_udp_active_flows`, summed over connections).
    pub active_flows: AtomicU64,
    /// Datagram v3 flows ever registered (`cloudflared_udp_total_flows`).
    pub total_flows: AtomicU64,
    /// v3 flows that ended with an error (`cloudflared_udp_failed_flows`).
    pub failed_flows: AtomicU64,
    /// v3 registrations answered a second time (`cloudflared_udp_retry_flow_responses`).
    pub retry_flow_responses: AtomicU64,
    /// Datagrams dropped: unknown session, full queue, too large (`cloudflared_udp_dropped_datagrams`).
    pub dropped_datagrams: AtomicU64,
    /// Registrations refused for `max-active-flows` (`flow_client_registrations_rate_limited_total{flow_type="udp"}`).
    pub rate_limited: AtomicU64,
    /// ICMP echo requests sent to a destination (`cloudflared_icmp_total_requests`).
    pub icmp_requests: AtomicU64,
    /// ICMP echo replies returned to the edge (`cloudflared_icmp_total_replies`).
    pub icmp_replies: AtomicU64,
    /// Datagram v3 counters per connection index (cloudflared's `conn_index` vectors).
    pub v3_conns: V3Conns,
}

/// One connection's datagram v3 counters (cloudflared 2026.8.2's quic/v3 metrics).
#[derive(Debug, Default)]
pub struct V3ConnStats {
    /// `cloudflared_udp_active_flows{conn_index}`.
    pub active: AtomicU64,
    /// `cloudflared_udp_total_flows{conn_index}`.
    pub total: AtomicU64,
    /// `cloudflared_udp_failed_flows{conn_index}`.
    pub failed: AtomicU64,
    /// `cloudflared_udp_retry_flow_responses{conn_index}`.
    pub retry: AtomicU64,
    /// `cloudflared_udp_dropped_datagrams{conn_index, reason}` by [`DropReason`] index.
    pub dropped: [AtomicU64; DropReason::ALL.len()],
}

/// Why a v3 datagram was dropped (cloudflared's `reason` label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The origin's queue was full.
    WriteFull,
    /// A payload for a flow this connection does not know.
    WriteFlowUnknown,
    /// An origin packet too large for a datagram.
    ReadTooLarge,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 3] = [
        DropReason::ReadTooLarge,
        DropReason::WriteFlowUnknown,
        DropReason::WriteFull,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::WriteFull => "write_full",
            DropReason::WriteFlowUnknown => "write_flow_unknown",
            DropReason::ReadTooLarge => "read_too_large",
        }
    }

    fn index(self) -> usize {
        match self {
            DropReason::ReadTooLarge => 0,
            DropReason::WriteFlowUnknown => 1,
            DropReason::WriteFull => 2,
        }
    }
}

/// [`V3ConnStats`] for each of the 256 possible connection indexes.
#[derive(Debug)]
pub struct V3Conns(pub Box<[V3ConnStats]>);

impl Default for V3Conns {
    fn default() -> Self {
        V3Conns((0..=u8::MAX).map(|_| V3ConnStats::default()).collect())
    }
}

impl V3Conns {
    /// Connection `i`'s counters.
    pub fn conn(&self, i: u8) -> &V3ConnStats {
        &self.0[usize::from(i)]
    }
}

impl V3ConnStats {
    /// Counts a dropped v3 datagram.
    pub fn drop_for(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Relaxed);
    }
}

impl UdpStats {
    pub(super) fn session_started(&self, v3: bool, conn: u8) {
        if v3 {
            let c = self.v3_conns.conn(conn);
            c.active.fetch_add(1, Relaxed);
            c.total.fetch_add(1, Relaxed);
            self.active_flows.fetch_add(1, Relaxed);
            self.total_flows.fetch_add(1, Relaxed);
        } else {
            self.active_sessions.fetch_add(1, Relaxed);
            self.total_sessions.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn session_ended(&self, v3: bool, conn: u8) {
        if v3 {
            let c = &self.v3_conns.conn(conn).active;
            let _ = c.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        }
        let gauge = if v3 {
            &self.active_flows
        } else {
            &self.active_sessions
        };
        let _ = gauge.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    pub(super) fn dropped(&self) {
        self.dropped_datagrams.fetch_add(1, Relaxed);
    }
}
