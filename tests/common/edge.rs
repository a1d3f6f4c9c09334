//! The built-in edge on loopback for tests: free ports, two workers, short timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use ringflare::edge::{Edge, EdgeOptions, EdgeTunnel};
use ringflare::runtime::IoDriver;

/// Starts an edge on loopback with free ports and short timeouts.
pub fn start_edge(
    dir: &std::path::Path,
    tunnels: Vec<EdgeTunnel>,
    listeners: usize,
    driver: IoDriver,
) -> Edge {
    let opts = edge_options(dir, tunnels, listeners, driver);
    if std::env::var_os("EDGE_TEST_LOG").is_some() {
        ringflare::logging::init(log::LevelFilter::Debug, false, None);
    }
    Edge::start(opts).expect("edge starts")
}

/// Options for a loopback test edge: free ports, two workers, short timeouts.
pub fn edge_options(
    dir: &std::path::Path,
    tunnels: Vec<EdgeTunnel>,
    listeners: usize,
    driver: IoDriver,
) -> EdgeOptions {
    let mut opts = EdgeOptions::new(dir);
    opts.tunnel_listen = (0..listeners)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
        .collect();
    opts.eyeball_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    opts.tunnels = tunnels;
    opts.workers = 2;
    opts.no_pinning = true;
    opts.io_driver = driver;
    opts.handshake_timeout = Duration::from_secs(1);
    opts.register_timeout = Duration::from_secs(1);
    opts.drain_timeout = Duration::from_secs(10);
    opts.response_timeout = Duration::from_secs(10);
    opts
}
