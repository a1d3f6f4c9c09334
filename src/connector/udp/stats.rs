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
}

impl UdpStats {
    pub(super) fn session_started(&self, v3: bool) {
        if v3 {
            self.active_flows.fetch_add(1, Relaxed);
            self.total_flows.fetch_add(1, Relaxed);
        } else {
            self.active_sessions.fetch_add(1, Relaxed);
            self.total_sessions.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn session_ended(&self, v3: bool) {
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
