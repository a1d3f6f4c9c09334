//! Thread-per-core workers: one OS thread, one compio runtime, one `!Send` future per core.
//!
//! [`Workers::spawn`] picks the I/O driver once, starts N threads pinned to cores, builds a
//! runtime in each and runs the future that the caller's factory builds there, so it can
//! hold `Rc`s and per-core state without locks. It owns only thread lifecycle: start,
//! a stop signal, join. It never logs (the caller logs [`DriverReport`] and
//! [`Workers::pinning`]) and never moves tasks between cores.

use std::{
    future::Future,
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    task::{Context, Poll},
    thread,
    time::Duration,
};

use compio::runtime::Runtime;
use futures_channel::oneshot;
use futures_util::future::{FutureExt, Shared};

use super::driver::{
    DriverError, DriverKind, DriverReport, IoDriver, build_runtime, select_driver,
};

/// How long `spawn` waits for a worker to report that its runtime is up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the caller controls about the worker pool.
#[derive(Debug, Clone, Default)]
pub struct WorkerConfig {
    /// Number of workers; `None` means one per available core.
    pub threads: Option<NonZeroUsize>,
    /// Driver choice from `--io-driver` / `RINGFLARE_IO_DRIVER`.
    pub io_driver: IoDriver,
    /// Skip core pinning (useful when several processes share a small machine).
    pub no_pinning: bool,
}

/// Handed to the factory on each worker thread.
#[derive(Debug, Clone)]
pub struct WorkerCtx {
    /// 0-based worker index: stable name for per-core metrics and logs.
    pub index: usize,
    /// How many workers the pool runs (`index` is below it).
    pub count: usize,
    /// The core this thread is pinned to, if pinning succeeded.
    pub core: Option<usize>,
    /// The driver this worker's runtime runs on.
    pub driver: DriverKind,
    /// Resolves when the pool is asked to stop (or the pool handle is dropped).
    pub stop: StopSignal,
}

/// A cloneable stop notification, usable from any task on the worker's thread.
#[derive(Debug, Clone)]
pub struct StopSignal {
    /// Set before the wake-up is sent, so synchronous code can poll it cheaply.
    flag: Arc<AtomicBool>,
    /// Completes on `stop()` or when the sender is dropped with the pool handle.
    rx: Shared<oneshot::Receiver<()>>,
}

impl StopSignal {
    /// Waits until stop is requested.
    pub async fn stopped(&self) {
        // Ok(()) is an explicit stop; Err(Canceled) means the pool handle was dropped:
        // both mean "finish up".
        let _ = self.rx.clone().await;
    }

    /// Whether stop was requested (or the pool handle dropped).
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire) || self.rx.peek().is_some()
    }

    /// A signal that never fires, and its sender (kept alive by the caller), for tests that
    /// build a connector core without a worker pool.
    #[cfg(test)]
    pub fn detached() -> (oneshot::Sender<()>, StopSignal) {
        let (tx, rx) = oneshot::channel();
        let stop = StopSignal {
            flag: Arc::new(AtomicBool::new(false)),
            rx: rx.shared(),
        };
        (tx, stop)
    }
}

/// How pinning went for one worker, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// Pinned to this core id.
    Pinned(usize),
    /// Pinning was turned off in the config.
    Disabled,
    /// Pinning failed; the worker runs unpinned. A warning, never fatal.
    Failed(String),
}

/// Failure of one worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker's runtime could not be built.
    #[error("worker {index}: {source}")]
    Runtime {
        /// Worker index.
        index: usize,
        /// The driver failure.
        source: DriverError,
    },
    /// The runtime failed to build; the cause was returned by [`Workers::spawn`].
    #[error("worker {index} never started")]
    NotStarted {
        /// Worker index.
        index: usize,
    },
    /// The worker's future panicked.
    #[error("worker {index} panicked: {message}")]
    Panicked {
        /// Worker index.
        index: usize,
        /// The panic payload, when it was a string.
        message: String,
    },
}

/// Failure to start the pool.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No usable driver (only with a forced `io_uring`).
    #[error("selecting the io driver failed: {0}")]
    Driver(#[from] DriverError),
    /// The OS refused a thread.
    #[error("spawning worker thread {index} failed: {source}")]
    Thread {
        /// Worker index.
        index: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// A worker failed while starting its runtime.
    #[error("starting worker failed: {0}")]
    Start(#[from] WorkerError),
    /// A worker did not report readiness within the start timeout.
    #[error("worker {index} did not start within {START_TIMEOUT:?}")]
    StartTimeout {
        /// Worker index.
        index: usize,
    },
}

/// The running pool. Dropping it without [`Workers::join`] still stops the workers (their
/// stop senders are dropped) but detaches the threads.
#[derive(Debug)]
pub struct Workers<T> {
    /// The driver choice, for the single startup log line.
    report: DriverReport,
    /// Pinning result per worker, by index.
    pinning: Vec<PinOutcome>,
    /// Shared with every [`StopSignal`].
    flag: Arc<AtomicBool>,
    /// One sender per worker; sending or dropping wakes its [`StopSignal`].
    stop_txs: Vec<oneshot::Sender<()>>,
    /// Threads, by index.
    threads: Vec<thread::JoinHandle<Result<T, WorkerError>>>,
}

/// Sent from a worker thread once its runtime exists (or failed to).
type Ready = (usize, Result<PinOutcome, WorkerError>);

impl<T: Send + 'static> Workers<T> {
    /// Starts the pool and waits until every worker's runtime is up.
    pub fn spawn<F, Fut>(config: WorkerConfig, factory: F) -> Result<Self, SpawnError>
    where
        F: Fn(WorkerCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let report = select_driver(config.io_driver)?;
        let count = config
            .threads
            .or_else(|| thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let cores = if config.no_pinning {
            None
        } else {
            core_affinity::get_core_ids()
        };
        let factory = Arc::new(factory);
        let flag = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let mut pool = Workers {
            report,
            pinning: vec![PinOutcome::Disabled; count],
            flag,
            stop_txs: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for index in 0..count {
            let core = match &cores {
                Some(ids) if !ids.is_empty() => Some(ids[index % ids.len()]),
                Some(_) => None,
                None => None,
            };
            let (stop_tx, stop_rx) = oneshot::channel();
            let start = WorkerStart {
                index,
                count,
                core,
                pin: !config.no_pinning,
                driver: pool.report.driver,
                stop: StopSignal {
                    flag: pool.flag.clone(),
                    rx: stop_rx.shared(),
                },
                ready: ready_tx.clone(),
            };
            let factory = factory.clone();
            let handle = thread::Builder::new()
                .name(format!("ringflare-w{index}"))
                .spawn(move || start.run(&*factory))
                .map_err(|source| SpawnError::Thread { index, source })?;
            pool.stop_txs.push(stop_tx);
            pool.threads.push(handle);
        }
        drop(ready_tx);
        pool.await_ready(&ready_rx)?;
        Ok(pool)
    }

    /// Collects one readiness message per worker; on any failure stops the others.
    fn await_ready(&mut self, ready_rx: &mpsc::Receiver<Ready>) -> Result<(), SpawnError> {
        let mut started = vec![false; self.threads.len()];
        for _ in 0..self.threads.len() {
            let (index, outcome) = match ready_rx.recv_timeout(START_TIMEOUT) {
                Ok(msg) => msg,
                Err(_) => {
                    let index = started.iter().position(|s| !s).unwrap_or_default();
                    self.stop();
                    return Err(SpawnError::StartTimeout { index });
                }
            };
            started[index] = true;
            match outcome {
                Ok(pin) => self.pinning[index] = pin,
                Err(e) => {
                    self.stop();
                    return Err(SpawnError::Start(e));
                }
            }
        }
        Ok(())
    }

    /// Which driver the workers run on, and why.
    pub fn driver_report(&self) -> &DriverReport {
        &self.report
    }

    /// Pinning outcome per worker (index order); `Failed` entries deserve a warning log.
    pub fn pinning(&self) -> &[PinOutcome] {
        &self.pinning
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: a pool has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Asks every worker to finish; returns immediately. Idempotent.
    pub fn stop(&mut self) {
        self.flag.store(true, Ordering::Release);
        for tx in self.stop_txs.drain(..) {
            // A worker that already finished dropped its receiver; nothing to wake.
            let _ = tx.send(());
        }
    }

    /// Waits for every worker to return; results are in index order.
    pub fn join(self) -> Vec<Result<T, WorkerError>> {
        let Workers {
            threads, stop_txs, ..
        } = self;
        // Keep senders alive while joining so workers stop only when asked.
        let results = threads
            .into_iter()
            .enumerate()
            .map(|(index, h)| h.join().unwrap_or_else(|p| Err(panicked(index, &*p))))
            .collect();
        drop(stop_txs);
        results
    }
}

fn panicked(index: usize, payload: &(dyn std::any::Any + Send)) -> WorkerError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    WorkerError::Panicked { index, message }
}

/// Everything one worker thread needs, moved into it at spawn.
struct WorkerStart {
    /// Worker index.
    index: usize,
    /// Workers in the pool.
    count: usize,
    /// The core to pin to, if any were found.
    core: Option<core_affinity::CoreId>,
    /// Whether pinning is wanted at all.
    pin: bool,
    /// The driver chosen for the whole pool.
    driver: DriverKind,
    /// This worker's stop notification.
    stop: StopSignal,
    /// Where to report that the runtime is up.
    ready: mpsc::Sender<Ready>,
}

impl WorkerStart {
    fn run<T, Fut>(self, factory: &dyn Fn(WorkerCtx) -> Fut) -> Result<T, WorkerError>
    where
        Fut: Future<Output = T>,
    {
        let pin = self.pin_thread();
        let runtime = match build_runtime(self.driver) {
            Ok(rt) => rt,
            Err(source) => {
                let index = self.index;
                let _ = self
                    .ready
                    .send((index, Err(WorkerError::Runtime { index, source })));
                // The real error went to `spawn`; `join` only learns that it never ran.
                return Err(WorkerError::NotStarted { index });
            }
        };
        let ctx = WorkerCtx {
            index: self.index,
            count: self.count,
            core: match pin {
                PinOutcome::Pinned(id) => Some(id),
                _ => None,
            },
            driver: self.driver,
            stop: self.stop,
        };
        let _ = self.ready.send((self.index, Ok(pin)));
        Ok(run_worker(runtime, factory(ctx)))
    }

    fn pin_thread(&self) -> PinOutcome {
        match (self.pin, self.core) {
            (false, _) => PinOutcome::Disabled,
            (true, None) => PinOutcome::Failed("core ids unavailable".to_owned()),
            (true, Some(core)) if core_affinity::set_for_current(core) => {
                PinOutcome::Pinned(core.id)
            }
            (true, Some(core)) => {
                PinOutcome::Failed(format!("sched_setaffinity to core {}", core.id))
            }
        }
    }
}

/// How many executor ticks a worker runs back to back while tasks stay ready, before it
/// enters the kernel anyway (I/O completions and timers must not starve behind a busy core).
const DRAIN_TICKS: u32 = 16;

/// A driver poll that took this long waited in the kernel for something to happen: the turn
/// after it is a quiet one (`send::begin_turn`). An enter that finds completions waiting, or
/// only submits, returns in a few microseconds.
const QUIET_WAIT: Duration = Duration::from_micros(20);

/// Runs `future` on `runtime` to completion, like compio's `block_on`, except that ready
/// tasks are run until none is left (at most [`DRAIN_TICKS`] ticks) before the driver is
/// polled.
///
/// compio's loop enters the kernel after every tick that leaves a task ready, and a task
/// woken by the one running (a TLS read waking the stream task it carries, a stream task
/// waking its connection's writer) is almost always left for the next tick: a request paid
/// one or two extra `io_uring_enter` calls on each side, each submitting one operation the
/// next blocking enter could have carried. Here the operations that those tasks queue go to
/// the kernel together, in the enter that then waits. 1 KiB GETs at c=1 through the built-in
/// edge: connector 6.0 -> 3.4 `io_uring_enter` per request, edge 6.6 -> 4.4.
///
/// More requests then queue per enter, so the ring's submission queue can fill inside a
/// task's poll: this relies on the patched compio-driver (src/runtime/compio-driver), whose
/// published version dropped a cancel that found the queue full.
fn run_worker<F: Future>(runtime: Runtime, future: F) -> F::Output {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.enter(|| {
            let waker = runtime.waker();
            let mut cx = Context::from_waker(&waker);
            let mut future = std::pin::pin!(future);
            loop {
                if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                    runtime.run();
                    return out;
                }
                let mut ready = runtime.run();
                let mut ticks = 1;
                while ready && ticks < DRAIN_TICKS {
                    ready = runtime.run();
                    ticks += 1;
                }
                if ready {
                    runtime.poll_with(Some(Duration::ZERO));
                    super::send::begin_turn(false);
                } else {
                    let waited = std::time::Instant::now();
                    runtime.poll();
                    super::send::begin_turn(waited.elapsed() >= QUIET_WAIT);
                }
            }
        })
    }));
    match result {
        Ok(out) => out,
        Err(payload) => {
            // As compio's block_on: the pending tasks are dropped (with the runtime) only
            // after the unwind has ended.
            drop(runtime);
            std::panic::resume_unwind(payload)
        }
    }
}

#[cfg(test)]
#[path = "workers_tests.rs"]
mod tests;
