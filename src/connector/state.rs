//! State shared between the control thread and the data-plane cores.
//!
//! What crosses threads: the ingress table (arc-swap), per-core counters (atomics, each written
//! only by its own core, summed when `/metrics` is scraped) and per-connection status (written on
//! register/unregister only, never per request). Nothing here is locked on the request path.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use uuid::Uuid;

use super::options::ConnectorOptions;
use crate::ingress::SharedIngress;

/// Lowest and highest status code counted per code.
const FIRST_CODE: usize = 100;
const CODES: usize = 900;

/// cloudflared's `cloudflared_proxy_connect_latency` buckets, in milliseconds.
pub const CONNECT_LATENCY_BUCKETS: &[f64] = &[1.0, 10.0, 25.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];
/// cloudflared's RPC client latency buckets (`ExponentialBuckets(0.05, 3, 5)`), in seconds, as
/// Go's repeated multiplication rounds them (they print so in the `le` label).
#[allow(clippy::excessive_precision)]
pub const RPC_LATENCY_BUCKETS: &[f64] = &[
    0.05,
    0.15000000000000002,
    0.45000000000000007,
    1.35,
    4.050000000000001,
];

/// A Prometheus histogram of plain atomics: per-bucket (non-cumulative) counts, the count and
/// the sum (f64 bits). Instances are merged at scrape time.
pub struct Histogram {
    pub bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_bits: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b)
            && let Some(b) = self.buckets.get(i)
        {
            b.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |s| {
            Some((f64::from_bits(s) + v).to_bits())
        });
    }

    /// Cumulative bucket counts, total count and sum over `parts`.
    pub fn merged<'a>(parts: impl Iterator<Item = &'a Histogram>) -> (Vec<u64>, u64, f64) {
        let mut cum: Vec<u64> = Vec::new();
        let (mut count, mut sum) = (0, 0.0);
        for h in parts {
            if cum.is_empty() {
                cum = vec![0; h.bounds.len()];
            }
            for (c, b) in cum.iter_mut().zip(h.buckets.iter()) {
                *c += b.load(Relaxed);
            }
            count += h.count.load(Relaxed);
            sum += f64::from_bits(h.sum_bits.load(Relaxed));
        }
        let mut run = 0;
        for c in cum.iter_mut() {
            run += *c;
            *c = run;
        }
        (cum, count, sum)
    }
}

/// One RPC method the connector calls on the edge, as cloudflared's `rpc_client_*` families count
/// it (handler `registration`). Rare calls: shared by all cores.
pub struct RpcClientStat {
    /// cloudflared's `handler` label: `registration` for the client calls, `config` or
    /// `session` for the calls the edge makes to the connector.
    pub handler: &'static str,
    pub method: &'static str,
    pub operations: AtomicU64,
    pub failures: AtomicU64,
    pub latency: Histogram,
}

impl RpcClientStat {
    fn new(method: &'static str) -> RpcClientStat {
        RpcClientStat::for_handler("registration", method)
    }

    fn for_handler(handler: &'static str, method: &'static str) -> RpcClientStat {
        RpcClientStat {
            handler,
            method,
            operations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: Histogram::new(RPC_LATENCY_BUCKETS),
        }
    }

    /// Counts one call, as cloudflared: every call is an operation and a latency sample, a
    /// failed one (error, timeout, error reply) also a failure.
    pub fn record(&self, started: Instant, ok: bool) {
        self.operations.fetch_add(1, Relaxed);
        if !ok {
            self.failures.fetch_add(1, Relaxed);
        }
        self.latency.observe(started.elapsed().as_secs_f64());
    }
}

/// The registration RPCs, by method.
pub struct RpcClientStats {
    pub register_connection: RpcClientStat,
    pub unregister_connection: RpcClientStat,
    pub update_local_configuration: RpcClientStat,
}

impl RpcClientStats {
    pub fn all(&self) -> [&RpcClientStat; 3] {
        [
            &self.register_connection,
            &self.unregister_connection,
            &self.update_local_configuration,
        ]
    }
}

/// The RPCs the edge calls on the connector over QUIC RPC streams (cloudflared's
/// `rpc_server_*`, counted as its `ObserveServerHandler`: a call that returns an RPC error is
/// a failure; an error carried in the reply is not).
pub struct RpcServerStats {
    pub update_configuration: RpcClientStat,
    pub register_udp_session: RpcClientStat,
    pub unregister_udp_session: RpcClientStat,
}

impl RpcServerStats {
    fn new() -> RpcServerStats {
        RpcServerStats {
            update_configuration: RpcClientStat::for_handler("config", "update_configuration"),
            register_udp_session: RpcClientStat::for_handler("session", "register_udp_session"),
            unregister_udp_session: RpcClientStat::for_handler("session", "unregister_udp_session"),
        }
    }

    pub fn all(&self) -> [&RpcClientStat; 3] {
        [
            &self.update_configuration,
            &self.register_udp_session,
            &self.unregister_udp_session,
        ]
    }
}

/// Counters of one core. Relaxed atomics: one writer, readers only sum them.
pub struct CoreCounters {
    pub total_requests: AtomicU64,
    pub request_errors: AtomicU64,
    pub concurrent_requests: AtomicI64,
    pub tcp_active: AtomicI64,
    pub tcp_total: AtomicU64,
    /// Private-network TCP: dial-and-acknowledge time in whole milliseconds, and its failures.
    pub connect_latency: Histogram,
    pub connect_stream_errors: AtomicU64,
    by_code: Box<[AtomicU64]>,
}

impl CoreCounters {
    fn new() -> CoreCounters {
        CoreCounters {
            total_requests: AtomicU64::new(0),
            request_errors: AtomicU64::new(0),
            concurrent_requests: AtomicI64::new(0),
            tcp_active: AtomicI64::new(0),
            tcp_total: AtomicU64::new(0),
            connect_latency: Histogram::new(CONNECT_LATENCY_BUCKETS),
            connect_stream_errors: AtomicU64::new(0),
            by_code: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one response by its status code.
    pub fn response(&self, code: u16) {
        if let Some(c) = usize::from(code)
            .checked_sub(FIRST_CODE)
            .and_then(|i| self.by_code.get(i))
        {
            c.fetch_add(1, Relaxed);
        }
    }
}

/// An open private-network flow; dropping it releases the slot.
pub struct FlowSlot<'a>(&'a AtomicU64);

impl Drop for FlowSlot<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }
}

/// Status of one HA connection, as `/ready` and the metrics report it.
#[derive(Debug, Clone, Default)]
pub struct ConnStatus {
    /// Registered and not yet unregistered.
    pub registered: bool,
    /// The edge's connection UUID (from ConnectionDetails).
    pub connection_id: Option<Uuid>,
    pub location: String,
    pub edge_addr: String,
}

/// Everything the cores and the control thread share.
pub struct Shared {
    pub options: ConnectorOptions,
    pub connector_id: Uuid,
    /// `connector_id` as text, for the `Cf-Warp-Tag-Id` header of every origin request.
    pub connector_id_text: bytes::Bytes,
    pub ingress: Arc<SharedIngress>,
    /// One entry per core (worker index).
    pub cores: Box<[CoreCounters]>,
    /// One entry per HA connection index. Locked only on (un)registration and scrape.
    pub conns: Box<[Mutex<ConnStatus>]>,
    pub register_success: AtomicU64,
    pub register_fail: AtomicU64,
    pub rpc_client: RpcClientStats,
    pub rpc_server: RpcServerStats,
    /// `updateLocalConfiguration` uploads, and the failed ones.
    pub local_config_pushes: AtomicU64,
    pub local_config_push_errors: AtomicU64,
    /// Private-network flows open now, across cores (cloudflared's one tunnel-wide limiter),
    /// and the flows refused for being over `warp-routing.maxActiveFlows`.
    pub active_flows: AtomicU64,
    pub flows_rate_limited: AtomicU64,
    /// UDP session counters (`cloudflared_udp_*`), shared by every connection's session manager.
    pub udp: Arc<crate::connector::udp::UdpStats>,
    /// Version of the last applied remote configuration; -1 until one arrives.
    pub config_version: std::sync::Mutex<i32>,
    /// Set when a connection switched `auto` to its fallback transport before any connection
    /// registered: connections started later begin on the fallback too (cloudflared starts
    /// them with connection 0's protocol).
    pub protocol_fell_back: std::sync::atomic::AtomicBool,
    pub started: Instant,
}

impl Shared {
    pub fn new(
        options: ConnectorOptions,
        connector_id: Uuid,
        ingress: Arc<SharedIngress>,
        cores: usize,
        conns: usize,
    ) -> Shared {
        Shared {
            options,
            connector_id,
            connector_id_text: bytes::Bytes::from(connector_id.to_string()),
            ingress,
            cores: (0..cores.max(1)).map(|_| CoreCounters::new()).collect(),
            conns: (0..conns)
                .map(|_| Mutex::new(ConnStatus::default()))
                .collect(),
            register_success: AtomicU64::new(0),
            register_fail: AtomicU64::new(0),
            rpc_client: RpcClientStats {
                register_connection: RpcClientStat::new("register_connection"),
                unregister_connection: RpcClientStat::new("unregister_connection"),
                update_local_configuration: RpcClientStat::new("update_local_configuration"),
            },
            rpc_server: RpcServerStats::new(),
            local_config_pushes: AtomicU64::new(0),
            local_config_push_errors: AtomicU64::new(0),
            active_flows: AtomicU64::new(0),
            flows_rate_limited: AtomicU64::new(0),
            udp: Arc::default(),
            config_version: std::sync::Mutex::new(-1),
            protocol_fell_back: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Takes a flow slot under `limit` (0 = unlimited), as cloudflared's flow limiter: `None`
    /// (and one more rate-limited registration) when `limit` flows are open already. The
    /// limit is read per flow, so a reload that changes it applies to the next flow.
    pub fn acquire_flow(&self, limit: u64) -> Option<FlowSlot<'_>> {
        let taken = self.active_flows.fetch_update(Relaxed, Relaxed, |n| {
            (limit == 0 || n < limit).then_some(n + 1)
        });
        if taken.is_err() {
            self.flows_rate_limited.fetch_add(1, Relaxed);
            return None;
        }
        Some(FlowSlot(&self.active_flows))
    }

    /// Counters of core `index` (clamped, so a bad index can never panic).
    pub fn core(&self, index: usize) -> &CoreCounters {
        let last = self.cores.len() - 1;
        &self.cores[index.min(last)]
    }

    pub fn set_conn(&self, index: usize, f: impl FnOnce(&mut ConnStatus)) {
        if let Some(slot) = self.conns.get(index)
            && let Ok(mut s) = slot.lock()
        {
            f(&mut s);
        }
    }

    /// Snapshot of every connection's status.
    pub fn conn_statuses(&self) -> Vec<ConnStatus> {
        self.conns
            .iter()
            .map(|c| c.lock().map(|s| s.clone()).unwrap_or_default())
            .collect()
    }

    /// Registered connections right now.
    pub fn ready_connections(&self) -> usize {
        self.conn_statuses().iter().filter(|s| s.registered).count()
    }

    /// Sum of a counter over cores.
    pub fn sum(&self, f: impl Fn(&CoreCounters) -> u64) -> u64 {
        self.cores.iter().map(f).sum()
    }

    /// Responses per status code, summed over cores, codes with a zero count left out.
    pub fn responses_by_code(&self) -> Vec<(u16, u64)> {
        (0..CODES)
            .filter_map(|i| {
                let n: u64 = self
                    .cores
                    .iter()
                    .map(|c| c.by_code.get(i).map_or(0, |a| a.load(Relaxed)))
                    .sum();
                let code = u16::try_from(i + FIRST_CODE).ok()?;
                (n > 0).then_some((code, n))
            })
            .collect()
    }
}
