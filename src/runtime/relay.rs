//! Cross-core wake relay: wakes that arrive from another thread reach a task through one
//! mailbox per worker instead of compio's bounded remote queue.
//!
//! Why: compio schedules a task woken from a foreign thread by pushing its id into a fixed-size
//! queue of the owning runtime (64 slots by default) and *spins* until a slot frees. When a
//! thread-shared object such as an `h2` connection wakes many tasks of another core while
//! holding its internal lock, and that core is itself blocked on the same lock, neither side can
//! progress: the edge deadlocked this way with more than ~64 eyeball requests in flight on one
//! core and the tunnel connection on the other.
//!
//! With [`homed`], a task's waker checks the calling thread: on the home thread it wakes the
//! task directly (the common, local case costs one thread-local read); from anywhere else it
//! pushes the task's real waker into the home thread's mailbox (an unbounded, briefly locked
//! `Vec`) and wakes the mailbox's drainer task, which is a single compio task per thread and so
//! takes at most one slot of the remote queue however many tasks are woken. Owns: the per-thread
//! mailbox and its drainer. Never does: I/O, or anything when the wake is local.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// One worker thread's mailbox of wakes sent from other threads.
struct Mailbox {
    pending: Mutex<Vec<Waker>>,
    drainer: AtomicWaker,
}

impl Mailbox {
    fn post(&self, waker: Waker) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(waker);
        self.drainer.wake();
    }
}

thread_local! {
    static HOME: RefCell<Option<Arc<Mailbox>>> = const { RefCell::new(None) };
}

/// This thread's mailbox, created (and its drainer spawned on the current compio runtime) on
/// first use.
fn home_mailbox() -> Arc<Mailbox> {
    HOME.with(|home| {
        let mut home = home.borrow_mut();
        if let Some(mailbox) = home.as_ref() {
            return mailbox.clone();
        }
        let mailbox = Arc::new(Mailbox {
            pending: Mutex::new(Vec::new()),
            drainer: AtomicWaker::new(),
        });
        compio::runtime::spawn(drain(mailbox.clone())).detach();
        *home = Some(mailbox.clone());
        mailbox
    })
}

fn is_home(mailbox: &Arc<Mailbox>) -> bool {
    HOME.with(|home| {
        home.try_borrow()
            .ok()
            .and_then(|h| h.as_ref().map(|m| Arc::ptr_eq(m, mailbox)))
            .unwrap_or(false)
    })
}

/// The drainer: wakes, on its own thread, every task posted from elsewhere.
async fn drain(mailbox: Arc<Mailbox>) {
    let mut batch = Vec::new();
    std::future::poll_fn(|cx| {
        mailbox.drainer.register(cx.waker());
        std::mem::swap(
            &mut batch,
            &mut *mailbox
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for waker in batch.drain(..) {
            waker.wake();
        }
        Poll::<()>::Pending
    })
    .await
}

/// The waker handed to the wrapped future.
struct Relay {
    mailbox: Arc<Mailbox>,
    task: AtomicWaker,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if is_home(&self.mailbox) {
            self.task.wake();
        } else if let Some(waker) = self.task.take() {
            self.mailbox.post(waker);
        }
    }
}

/// A future whose wakes from other threads go through its home thread's mailbox.
pub struct Homed<F> {
    inner: Pin<Box<F>>,
    relay: Option<(Arc<Relay>, Waker)>,
}

/// Wraps `future` so that being woken from another thread never blocks the waker (see the
/// module docs). Poll it on one thread only, as every compio task is.
pub fn homed<F: Future>(future: F) -> Homed<F> {
    Homed {
        inner: Box::pin(future),
        relay: None,
    }
}

impl<F: Future> Future for Homed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let (relay, waker) = this.relay.get_or_insert_with(|| {
            let relay = Arc::new(Relay {
                mailbox: home_mailbox(),
                task: AtomicWaker::new(),
            });
            let waker = Waker::from(relay.clone());
            (relay, waker)
        });
        relay.task.register(cx.waker());
        this.inner.as_mut().poll(&mut Context::from_waker(waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Hundreds of tasks on one runtime, each woken from a foreign thread while that thread
    /// holds a lock the runtime's thread also wants: the pattern that deadlocked compio's
    /// bounded remote queue. With the relay every task completes.
    /// Hundreds of tasks on one runtime, each woken from a foreign thread while that thread
    /// holds a lock the tasks take again when they run: the pattern that deadlocked compio's
    /// bounded remote queue (the foreign thread spins for a queue slot while holding the lock,
    /// the runtime's thread blocks on the lock). With the relay every task completes; without
    /// it the watchdog below reports the deadlock.
    #[test]
    fn many_foreign_wakes_under_a_shared_lock_complete() {
        const TASKS: usize = 1000;
        let (result_tx, result_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let lock = Arc::new(Mutex::new(Vec::<Waker>::new()));
            let done = Arc::new(AtomicUsize::new(0));
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
            let waker_lock = lock.clone();
            let foreign = std::thread::spawn(move || {
                let _ = ready_rx.recv();
                let mut parked = waker_lock.lock().unwrap_or_else(PoisonError::into_inner);
                for waker in parked.drain(..) {
                    waker.wake();
                }
            });
            let runtime = compio::runtime::Runtime::new().unwrap();
            let finished = done.clone();
            runtime.block_on(async move {
                let mut handles = Vec::new();
                for _ in 0..TASKS {
                    let lock = lock.clone();
                    let done = done.clone();
                    handles.push(compio::runtime::spawn(homed(async move {
                        let mut parked = false;
                        std::future::poll_fn(|cx| {
                            if parked {
                                return Poll::Ready(());
                            }
                            parked = true;
                            lock.lock().unwrap().push(cx.waker().clone());
                            Poll::Pending
                        })
                        .await;
                        drop(lock.lock().unwrap());
                        done.fetch_add(1, Ordering::SeqCst);
                    })));
                }
                compio::time::sleep(Duration::from_millis(10)).await;
                let _ = ready_tx.send(());
                for handle in handles {
                    let _ = handle.await;
                }
            });
            let _ = foreign.join();
            let _ = result_tx.send(finished.load(Ordering::SeqCst));
        });
        let finished = result_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("tasks woken from a foreign thread deadlocked");
        assert_eq!(finished, TASKS);
    }

    #[test]
    fn local_wakes_reach_the_task_directly() {
        let runtime = compio::runtime::Runtime::new().unwrap();
        let out = runtime.block_on(homed(async {
            compio::time::sleep(Duration::from_millis(1)).await;
            7
        }));
        assert_eq!(out, 7);
    }
}
