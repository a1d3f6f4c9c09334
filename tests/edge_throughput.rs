//! Rough throughput figures for the edge with the in-process test connector (ignored by
//! default; speed belongs in benchmarks, this only prints numbers). Run in release:
//! `cargo test --release --test edge_throughput -- --ignored --nocapture`.

mod common;

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use ringflare::runtime::IoDriver;

#[test]
#[ignore]
fn edge_throughput_figures() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTunnel::new();
    let driver = match std::env::var("EDGE_DRIVER").as_deref() {
        Ok("poll") => IoDriver::Poll,
        _ => IoDriver::Auto,
    };
    let edge = start_edge(dir.path(), vec![t.edge_tunnel(&["*"])], 2, driver);
    let peers: Vec<Peer> = (0..2)
        .map(|i| {
            let mut cfg = PeerConfig::new(&edge, edge.tunnel_addrs()[i], &t, "p");
            cfg.conn_index = i as u8;
            Peer::start(cfg)
        })
        .collect();
    for p in &peers {
        p.expect_registered();
    }
    let addr = edge.eyeball_addr();

    // Small GETs over keep-alive connections.
    for clients in [1usize, 8] {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (stop, count) = (stop.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    while !stop.load(Ordering::Relaxed) {
                        assert_eq!(c.get("a", "/").status, 200);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let secs = 3.0;
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let n = count.load(Ordering::Relaxed);
        println!(
            "GET / keep-alive, {clients} client(s): {:.0} req/s",
            n as f64 / secs
        );
    }

    // Bulk download (origin sends a shared zero chunk, client discards).
    let size = 1usize << 30;
    let mut c = Client::connect(addr);
    let start = Instant::now();
    c.stream
        .write_all(format!("GET /zeros?n={size} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
    let (status, headers) = c.read_head();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-length" && *v == size.to_string())
    );
    c.discard_body(size);
    let el = start.elapsed().as_secs_f64();
    println!(
        "download {} MiB: {:.0} MiB/s",
        size >> 20,
        (size >> 20) as f64 / el
    );

    // The connection stays usable after the download.
    assert_eq!(c.get("a", "/").status, 200);

    // Bulk upload (origin counts and discards).
    let chunk = vec![0u8; 1 << 20];
    let head = format!("POST /discard HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n");
    let start = Instant::now();
    c.stream.write_all(head.as_bytes()).unwrap();
    for _ in 0..(size >> 20) {
        c.stream.write_all(&chunk).unwrap();
    }
    let r = c.read_response(false);
    let el = start.elapsed().as_secs_f64();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, size.to_string().as_bytes());
    println!(
        "upload {} MiB: {:.0} MiB/s",
        size >> 20,
        (size >> 20) as f64 / el
    );
}
