use std::{
    io::{Read, Write},
    net::SocketAddr,
    pin::pin,
    sync::mpsc,
    time::Duration,
};

use futures_util::future::{Either, select};
use socket2::{Domain, Socket, Type};

use super::*;
use crate::runtime::bind_reuseport;

fn poll_config(threads: usize) -> WorkerConfig {
    WorkerConfig {
        threads: NonZeroUsize::new(threads),
        io_driver: IoDriver::Poll,
        no_pinning: false,
    }
}

#[test]
fn workers_stop_and_return_their_index() {
    let mut pool = Workers::spawn(poll_config(2), |ctx: WorkerCtx| async move {
        ctx.stop.stopped().await;
        assert!(ctx.stop.is_stopped());
        (ctx.index, ctx.driver)
    })
    .unwrap();
    assert_eq!(pool.len(), 2);
    assert_eq!(pool.driver_report().driver, DriverKind::Poll);
    pool.stop();
    let results: Vec<_> = pool.join().into_iter().map(Result::unwrap).collect();
    assert_eq!(results, vec![(0, DriverKind::Poll), (1, DriverKind::Poll)]);
}

#[test]
fn dropped_pool_handle_stops_workers() {
    let (done_tx, done_rx) = mpsc::channel();
    let pool = Workers::spawn(poll_config(1), move |ctx: WorkerCtx| {
        let done_tx = done_tx.clone();
        async move {
            ctx.stop.stopped().await;
            done_tx.send(ctx.index).unwrap();
        }
    })
    .unwrap();
    drop(pool);
    assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 0);
}

#[test]
fn panicking_worker_is_reported() {
    let mut pool = Workers::spawn(poll_config(1), |_ctx: WorkerCtx| async move {
        panic!("boom");
    })
    .unwrap();
    pool.stop();
    let results = pool.join();
    assert!(
        matches!(&results[0], Err(WorkerError::Panicked { index: 0, message }) if message == "boom")
    );
}

/// Accepts until stopped; answers each connection with the worker index.
async fn accept_loop(ctx: WorkerCtx, addr: SocketAddr, bound: mpsc::Sender<usize>) -> usize {
    use compio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = bind_reuseport(addr).unwrap();
    bound.send(ctx.index).unwrap();
    let mut served = 0;
    loop {
        let accepted = match select(pin!(listener.accept()), pin!(ctx.stop.stopped())).await {
            Either::Left((res, _)) => res,
            Either::Right(_) => return served,
        };
        let (mut stream, _) = accepted.unwrap();
        let compio::BufResult(res, _) = stream.read_exact(vec![0u8; 1]).await;
        res.unwrap();
        let compio::BufResult(res, _) = stream.write_all(vec![ctx.index as u8]).await;
        res.unwrap();
        served += 1;
    }
}

#[test]
fn reuseport_listeners_on_every_worker_serve_connections() {
    // A placeholder listener reserves a free port with SO_REUSEPORT, then leaves the group.
    let placeholder = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    placeholder.set_reuse_port(true).unwrap();
    placeholder.set_reuse_address(true).unwrap();
    placeholder
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let addr = placeholder.local_addr().unwrap().as_socket().unwrap();

    let (bound_tx, bound_rx) = mpsc::channel();
    let mut pool = Workers::spawn(poll_config(2), move |ctx: WorkerCtx| {
        accept_loop(ctx, addr, bound_tx.clone())
    })
    .unwrap();
    for _ in 0..2 {
        bound_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    drop(placeholder);

    const CONNS: usize = 16;
    for _ in 0..CONNS {
        let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"x").unwrap();
        let mut idx = [0u8; 1];
        c.read_exact(&mut idx).unwrap();
        assert!(idx[0] < 2);
    }
    pool.stop();
    let served: usize = pool.join().into_iter().map(Result::unwrap).sum();
    assert_eq!(served, CONNS);
}

#[test]
fn auto_driver_workers_run_on_the_reported_driver() {
    let config = WorkerConfig {
        io_driver: IoDriver::Auto,
        threads: NonZeroUsize::new(1),
        no_pinning: true,
    };
    let mut pool = Workers::spawn(config, |_ctx: WorkerCtx| async move {
        compio::runtime::Runtime::with_current(|rt| rt.driver_type())
    })
    .unwrap();
    println!("{}", pool.driver_report().log_line());
    assert_eq!(pool.pinning(), &[PinOutcome::Disabled]);
    let expected = pool.driver_report().driver;
    pool.stop();
    let ran_on = pool.join().pop().unwrap().unwrap();
    assert_eq!(ran_on.is_iouring(), expected == DriverKind::IoUring);
}

/// A task that is always ready (it wakes itself on every poll) must not keep a worker from
/// its I/O and timers: the worker's loop polls the driver between executor ticks. Both
/// drivers.
#[test]
fn always_ready_task_does_not_starve_timers_or_io() {
    for driver in [IoDriver::Auto, IoDriver::Poll] {
        let config = WorkerConfig {
            threads: NonZeroUsize::new(1),
            io_driver: driver,
            no_pinning: true,
        };
        let pool = Workers::spawn(config, |_ctx: WorkerCtx| async move {
            let spinning = compio::runtime::spawn(std::future::poll_fn(|cx| {
                cx.waker().wake_by_ref();
                std::task::Poll::<()>::Pending
            }));
            compio::time::sleep(Duration::from_millis(20)).await;
            let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (accepted, connected) = futures_util::future::join(
                listener.accept(),
                compio::net::TcpStream::connect(addr),
            )
            .await;
            drop(spinning);
            accepted.is_ok() && connected.is_ok()
        })
        .unwrap();
        let results = pool.join();
        assert!(matches!(results[..], [Ok(true)]), "{driver}: {results:?}");
    }
}
