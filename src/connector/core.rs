//! What one data-plane core owns: its edge TLS connector, origin pool, origin TLS configs, and
//! a handle on the shared state. Built once per worker thread, used through `Rc`; never `Send`.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::origin::h2::H2Pool;
use super::origin::{OriginTls, Pool};
use super::state::{CoreCounters, Shared};
use crate::runtime::StopSignal;

pub struct Core {
    pub shared: Arc<Shared>,
    /// Worker index, for per-core counters.
    pub worker: usize,
    /// TLS to the edge (`h2.cftunnel.com`, `--cacert` or Cloudflare roots).
    pub edge_tls: std::sync::Arc<rustls::ClientConfig>,
    pub pool: Pool,
    /// Multiplexed HTTP/2 origin connections (`http2Origin`).
    pub h2_pool: H2Pool,
    pub origin_tls: OriginTls,
    /// Fires when graceful shutdown starts.
    pub stop: StopSignal,
}

impl Core {
    pub fn counters(&self) -> &CoreCounters {
        self.shared.core(self.worker)
    }
}
