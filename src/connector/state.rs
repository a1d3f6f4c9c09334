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

/// Counters of one core. Relaxed atomics: one writer, readers only sum them.
pub struct CoreCounters {
    pub total_requests: AtomicU64,
    pub request_errors: AtomicU64,
    pub concurrent_requests: AtomicI64,
    pub tcp_active: AtomicI64,
    pub tcp_total: AtomicU64,
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
    pub ingress: Arc<SharedIngress>,
    /// One entry per core (worker index).
    pub cores: Box<[CoreCounters]>,
    /// One entry per HA connection index. Locked only on (un)registration and scrape.
    pub conns: Box<[Mutex<ConnStatus>]>,
    pub register_success: AtomicU64,
    pub register_fail: AtomicU64,
    /// Version of the last applied remote configuration; -1 until one arrives.
    pub config_version: std::sync::Mutex<i32>,
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
            ingress,
            cores: (0..cores.max(1)).map(|_| CoreCounters::new()).collect(),
            conns: (0..conns)
                .map(|_| Mutex::new(ConnStatus::default()))
                .collect(),
            register_success: AtomicU64::new(0),
            register_fail: AtomicU64::new(0),
            config_version: std::sync::Mutex::new(-1),
            started: Instant::now(),
        }
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
