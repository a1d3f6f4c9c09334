//! The runtime: thread-per-core workers on compio, driver choice, sockets and the h2 adapter.
//!
//! This module owns threads, compio runtimes and socket setup. It knows nothing about the
//! tunnel protocol, ingress or configuration files: callers hand it a factory that builds
//! each core's `!Send` future and wire `--io-driver` into [`WorkerConfig`].

pub mod copy_tuning;
mod driver;
pub mod h2io;
pub mod h2stream;
mod net;
pub mod relay;
pub mod send;
mod workers;

pub use driver::{
    DriverError, DriverKind, DriverReport, IO_DRIVER_ENV, IoDriver, ParseIoDriverError,
    build_runtime, read_pooled, select_driver,
};
pub use net::{
    LISTEN_BACKLOG, SocketError, TcpTuning, apply_tuning, bind_reuseport, set_keepalive,
    set_nodelay,
};
pub use workers::{
    PinOutcome, SpawnError, StopSignal, WorkerConfig, WorkerCtx, WorkerError, Workers,
};
