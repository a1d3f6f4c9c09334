//! I/O driver selection: io_uring when the kernel lets us have it, the poll driver otherwise.
//!
//! This module decides *once*, before any worker starts, which compio driver every worker
//! uses, and says why in a [`DriverReport`] that the caller logs as one line. It detects
//! io_uring by actually creating a ring (seccomp filters, `kernel.io_uring_disabled` and a
//! low `RLIMIT_MEMLOCK` all show up as a failed `io_uring_setup`), never by guessing from the
//! kernel version. It does not run anything: [`build_runtime`] hands back a compio runtime
//! for the chosen driver and the caller drives it.

use std::{fmt, io, str::FromStr};

use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::{Runtime, RuntimeBuilder};

/// Environment variable the CLI reads for [`IoDriver`] (flag `--io-driver`).
pub const IO_DRIVER_ENV: &str = "RINGFLARE_IO_DRIVER";

/// Which I/O driver the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoDriver {
    /// io_uring if a ring can be created, else the poll driver.
    #[default]
    Auto,
    /// io_uring or fail: for operators who would rather not start than run degraded.
    IoUring,
    /// The poll (epoll) driver, even where io_uring works.
    Poll,
}

/// The error for an unknown `--io-driver` value.
#[derive(Debug, thiserror::Error)]
#[error("unknown io driver {0:?}: expected one of auto, io_uring, poll")]
pub struct ParseIoDriverError(String);

impl FromStr for IoDriver {
    type Err = ParseIoDriverError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "io_uring" | "io-uring" | "iouring" | "uring" => Ok(Self::IoUring),
            "poll" | "epoll" | "polling" => Ok(Self::Poll),
            _ => Err(ParseIoDriverError(s.to_owned())),
        }
    }
}

impl fmt::Display for IoDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::IoUring => "io_uring",
            Self::Poll => "poll",
        })
    }
}

/// The driver a runtime actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// Completion-based io_uring.
    IoUring,
    /// Readiness-based epoll through compio's `polling` backend.
    Poll,
}

impl DriverKind {
    /// The name used in logs and metrics labels: `io_uring` or `poll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IoUring => "io_uring",
            Self::Poll => "poll",
        }
    }

    fn compio_type(self) -> DriverType {
        match self {
            Self::IoUring => DriverType::IoUring,
            Self::Poll => DriverType::Poll,
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which driver was chosen and why, for exactly one startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverReport {
    /// The driver every worker uses.
    pub driver: DriverKind,
    /// Why: empty when io_uring was simply available, else the failure or the override.
    pub reason: String,
}

impl DriverReport {
    /// `Using io_uring driver` or `Using poll driver reason="..."`.
    pub fn log_line(&self) -> String {
        if self.reason.is_empty() {
            format!("Using {} driver", self.driver)
        } else {
            format!("Using {} driver reason={:?}", self.driver, self.reason)
        }
    }
}

/// Errors from choosing or starting a driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// `--io-driver io_uring` was forced but the kernel refused a ring.
    #[error("io_uring was requested but is unavailable: {reason}")]
    IoUringUnavailable {
        /// The setup failure, as in [`DriverReport::reason`].
        reason: String,
    },
    /// Building a compio runtime for an already chosen driver failed.
    #[error("building the {driver} runtime failed: {source}")]
    Build {
        /// The driver being built.
        driver: DriverKind,
        /// The OS error from the driver.
        source: io::Error,
    },
}

/// Resolves the operator's choice into a concrete driver, probing io_uring when needed.
pub fn select_driver(wanted: IoDriver) -> Result<DriverReport, DriverError> {
    match wanted {
        IoDriver::Poll => Ok(DriverReport {
            driver: DriverKind::Poll,
            reason: "forced by configuration (--io-driver=poll)".to_owned(),
        }),
        IoDriver::IoUring => match probe_io_uring() {
            Ok(()) => Ok(io_uring_report()),
            Err(reason) => Err(DriverError::IoUringUnavailable { reason }),
        },
        IoDriver::Auto => Ok(match probe_io_uring() {
            Ok(()) => io_uring_report(),
            Err(reason) => DriverReport {
                driver: DriverKind::Poll,
                reason,
            },
        }),
    }
}

fn io_uring_report() -> DriverReport {
    DriverReport {
        driver: DriverKind::IoUring,
        reason: String::new(),
    }
}

/// Tries to create a real ring, then asks compio's own opcode check whether it would pick
/// io_uring unforced (it refuses kernels missing the opcodes it relies on).
fn probe_io_uring() -> Result<(), String> {
    let forced = ProactorBuilder::new()
        .driver_type(DriverType::IoUring)
        .build();
    match forced {
        Err(e) => return Err(explain_setup_failure(&e)),
        Ok(p) if !p.driver_type().is_iouring() => {
            return Err("compio was built without io_uring support".to_owned());
        }
        Ok(_) => {}
    }
    match ProactorBuilder::new().build() {
        Ok(p) if p.driver_type().is_iouring() => Ok(()),
        Ok(_) => Err("io_uring lacks opcodes compio requires".to_owned()),
        Err(e) => Err(explain_setup_failure(&e)),
    }
}

/// Formats a ring creation failure, naming the sysctl when it is the cause.
fn explain_setup_failure(e: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .filter(|v| *v != 0);
    match sysctl {
        Some(v) => format!("io_uring_setup: {e} (kernel.io_uring_disabled={v})"),
        None => format!("io_uring_setup: {e}"),
    }
}

/// Capacity of each runtime's queue of wake-ups arriving from other threads.
///
/// compio's default is 64, and a waker on another thread *spins* while that queue is full.
/// h2 wakes stream tasks while holding its connection lock, so when the edge opens streams
/// on a connection driven by another core, more than 64 pending wakes deadlocked both
/// cores (the waker spinning with the lock held, the target core blocked on that lock and
/// never draining its queue): `ringflare bench` at 128+ concurrent requests froze the edge.
/// 64 Ki entries (8 bytes each) cover every stream a core can have in flight.
const CROSS_THREAD_WAKE_QUEUE: usize = 64 * 1024;

/// The core's provided-buffer pool (io_uring): idle streams' reads take a buffer from it only
/// when data arrives and give it back as soon as the bytes are copied out
/// (`origin::OriginRead::read_idle`), so a few buffers serve thousands of idle streams. A
/// read that finds none free falls back to a buffer of its own. Allocated on first use.
const READ_POOL_BUFFERS: std::num::NonZero<u16> = std::num::NonZero::new(64).unwrap();
/// The size of one pool buffer: the smallest read of a stream service.
const READ_POOL_BUFFER_LEN: usize = 4 * 1024;

/// One read of at most `want` bytes (0: a pool buffer's worth) from the core's provided-buffer
/// pool, the bytes handed to `take` before the buffer goes back: `Some(Ok(0))` at EOF. `None`
/// when the pool cannot serve it: the poll driver (whose fallback pool hands a buffer to a read
/// when it starts, not when data arrives) or no buffer free; the caller then reads into a
/// buffer of its own.
pub async fn read_pooled<S: compio::io::AsyncReadManaged>(
    sock: &mut S,
    want: usize,
    take: impl FnOnce(&[u8]),
) -> Option<io::Result<usize>> {
    use compio::buf::IoBuf as _;
    if !Runtime::with_current(|rt| rt.driver_type().is_iouring()) {
        return None;
    }
    match sock.read_managed(want).await {
        Ok(Some(b)) => {
            let data = b.as_init();
            take(data);
            Some(Ok(data.len()))
        }
        Ok(None) => Some(Ok(0)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ResourceBusy
                    | io::ErrorKind::Unsupported
                    | io::ErrorKind::OutOfMemory
            ) =>
        {
            None
        }
        Err(e) => Some(Err(e)),
    }
}

/// Builds a compio runtime on exactly `driver` (no silent fallback: the report must stay true).
pub fn build_runtime(driver: DriverKind) -> Result<Runtime, DriverError> {
    let mut proactor = ProactorBuilder::new();
    proactor.driver_type(driver.compio_type());
    proactor
        .buffer_pool_size(READ_POOL_BUFFERS)
        .buffer_pool_buffer_len(READ_POOL_BUFFER_LEN);
    // No io_uring setup flags (COOP_TASKRUN + TASKRUN_FLAG, SINGLE_ISSUER + DEFER_TASKRUN):
    // measured at 1 KiB c=1 through the built-in edge, neither pair changed the latency or
    // the CPU per request beyond run-to-run noise, and DEFER_TASKRUN added an
    // io_uring_enter per request on each side (compio's zero-timeout submits then find no
    // completions until a waiting enter runs the deferred work).
    let runtime = RuntimeBuilder::new()
        .with_proactor(proactor)
        .sync_queue_size(CROSS_THREAD_WAKE_QUEUE)
        .build()
        .map_err(|source| DriverError::Build { driver, source })?;
    if runtime.driver_type() != driver.compio_type() {
        return Err(DriverError::Build {
            driver,
            source: io::Error::other(format!("compio chose {:?}", runtime.driver_type())),
        });
    }
    Ok(runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_values() {
        assert_eq!("auto".parse::<IoDriver>().unwrap(), IoDriver::Auto);
        assert_eq!("io_uring".parse::<IoDriver>().unwrap(), IoDriver::IoUring);
        assert_eq!("POLL".parse::<IoDriver>().unwrap(), IoDriver::Poll);
        assert!("kqueue".parse::<IoDriver>().is_err());
    }

    #[test]
    fn forced_poll_builds_a_poll_runtime() {
        let report = select_driver(IoDriver::Poll).unwrap();
        assert_eq!(report.driver, DriverKind::Poll);
        assert!(report.log_line().starts_with("Using poll driver reason="));
        let rt = build_runtime(report.driver).unwrap();
        assert_eq!(rt.block_on(async { 7 }), 7);
    }

    /// Dropping an operation whose request still sits in a full submission queue must cancel
    /// it in the kernel. compio-driver 0.12.5 dropped the cancel when the queue was full (see
    /// compio-driver/PATCHED.md): the receive stayed armed and swallowed the next datagram.
    #[test]
    fn cancel_with_a_full_submission_queue_reaches_the_kernel() {
        use std::task::{Context, Waker};
        use std::time::Duration;

        use compio::net::UdpSocket;

        const RING: u32 = 8;
        let mut proactor = ProactorBuilder::new();
        proactor.driver_type(DriverType::IoUring).capacity(RING);
        let rt = match RuntimeBuilder::new().with_proactor(proactor).build() {
            Ok(rt) if rt.driver_type() == DriverType::IoUring => rt,
            _ => return println!("skipped: no io_uring here"),
        };
        rt.block_on(async {
            let mut sockets = Vec::new();
            for _ in 0..RING {
                sockets.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            }
            let mut receives: Vec<_> = sockets
                .iter()
                .map(|s| Box::pin(s.recv(Vec::with_capacity(16))))
                .collect();
            let mut cx = Context::from_waker(Waker::noop());
            for receive in &mut receives {
                // One poll queues the request; nothing has entered the kernel yet.
                assert!(receive.as_mut().poll(&mut cx).is_pending());
            }
            // The queue holds RING requests: every cancel below finds it full.
            drop(receives);
            let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for s in &sockets {
                let to = s.local_addr().unwrap();
                sender.send_to(&b"ping"[..], to).await.0.unwrap();
            }
            for (i, s) in sockets.iter().enumerate() {
                let got =
                    compio::time::timeout(Duration::from_secs(2), s.recv(Vec::with_capacity(16)))
                        .await
                        .unwrap_or_else(|_| {
                            panic!("socket {i}: the datagram went to a cancelled receive")
                        });
                assert_eq!(got.1, b"ping", "socket {i}");
            }
        });
    }

    /// Aborts the test process (naming `what`) unless the returned flag is set within 20 s:
    /// for tests whose failure is a runtime that never wakes up again.
    fn watchdog(what: &'static str) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(20));
            if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("{what} within 20 s");
                std::process::abort();
            }
        });
        done
    }

    /// Runs `f` with a runtime on each driver this machine has (io_uring, then poll).
    fn on_both_drivers(mut f: impl FnMut(DriverKind, Runtime)) {
        for driver in [DriverKind::IoUring, DriverKind::Poll] {
            match build_runtime(driver) {
                Ok(rt) => f(driver, rt),
                Err(_) => println!("skipped: no {driver:?} here"),
            }
        }
    }

    /// The timer wheel's expiry (patched in compio-runtime, see its PATCHED.md): timers set
    /// out of order fire once each, in deadline order, and a cancelled one never fires.
    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_never() {
        use std::cell::RefCell;
        use std::rc::Rc;
        use std::time::Duration;

        // A wheel that never expires anything would hang the runtime: end the test instead.
        let done = watchdog("timers did not fire");
        on_both_drivers(|driver, rt| {
            let fired = rt.block_on(async {
                let fired = Rc::new(RefCell::new(Vec::new()));
                let mut tasks = Vec::new();
                for (id, ms) in [(0, 80u64), (1, 20), (2, 60), (3, 40), (4, 100), (5, 10)] {
                    let fired = fired.clone();
                    tasks.push(compio::runtime::spawn(async move {
                        compio::time::sleep(Duration::from_millis(ms)).await;
                        fired.borrow_mut().push(id);
                    }));
                }
                // Let every task set its timer, then cancel two of them.
                compio::time::sleep(Duration::from_millis(1)).await;
                let cancelled = [tasks.remove(4), tasks.remove(1)];
                drop(cancelled);
                for task in tasks {
                    let _ = task.await;
                }
                // Past the cancelled ones' deadlines.
                compio::time::sleep(Duration::from_millis(60)).await;
                fired.take()
            });
            assert_eq!(fired, vec![5, 3, 2, 0], "{driver:?}");
        });
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The executor's waker (patched in compio-runtime, see its PATCHED.md) ignores wakes
    /// from the runtime's own thread: a task woken by another task, or by its own I/O, must
    /// still run, and a task woken from another thread while the runtime sleeps in the
    /// kernel must still wake it, on both drivers.
    #[test]
    fn same_thread_and_cross_thread_wakes_both_reach_their_tasks() {
        use std::time::Duration;

        // A lost wake leaves the runtime asleep for good: end the test instead.
        let done = watchdog("a woken task never ran");
        on_both_drivers(|driver, rt| {
            let got = rt.block_on(async {
                // Same thread: a chain of tasks, each woken by the one before it.
                let (first_tx, mut rx) = futures_channel::oneshot::channel::<u32>();
                for _ in 0..50 {
                    let (tx, next_rx) = futures_channel::oneshot::channel::<u32>();
                    compio::runtime::spawn(async move {
                        let n = rx.await.unwrap_or(0);
                        let _ = tx.send(n + 1);
                    })
                    .detach();
                    rx = next_rx;
                }
                let _ = first_tx.send(0);
                let chained = rx.await.unwrap_or(0);
                // Another thread, after this runtime has gone to sleep in the kernel.
                let (tx, rx) = futures_channel::oneshot::channel::<u32>();
                let sender = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    let _ = tx.send(7);
                });
                let remote = compio::runtime::spawn(async move { rx.await.unwrap_or(0) })
                    .await
                    .unwrap_or(0);
                let _ = sender.join();
                (chained, remote)
            });
            assert_eq!(got, (50, 7), "{driver:?}");
        });
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn auto_reports_a_usable_driver() {
        let report = select_driver(IoDriver::Auto).unwrap();
        println!("{}", report.log_line());
        build_runtime(report.driver).unwrap();
    }
}
