//! Bounded waiting: the suites' timeouts, `eventually` for async and blocking tests, and
//! `block_on` (a compio runtime with a deadline that prints the last connector log).

use std::time::{Duration, Instant};

/// The bound on a whole async connector test ([`block_on`]).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The bound on one step of an edge test (a peer event, an eyeball read).
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `cond` every 10 ms, up to `limit`, without blocking the runtime; true when it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        compio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// [`eventually`] for a test thread outside any runtime: sleeps between polls.
pub fn eventually_blocking(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Runs `f` on a fresh compio runtime of `driver`, bounded by [`TIMEOUT`].
pub fn block_on<F: std::future::Future>(driver: ringflare::runtime::DriverKind, f: F) -> F::Output {
    let rt = ringflare::runtime::build_runtime(driver).unwrap();
    rt.block_on(async {
        match compio::time::timeout(TIMEOUT, f).await {
            Ok(v) => v,
            Err(_) => {
                let log = super::connector::last_log();
                panic!("test did not finish in time; last connector log:\n{log}");
            }
        }
    })
}
