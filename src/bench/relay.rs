//! `ringflare bench relay`: the cheapest process that can stand where the edge or the
//! connector stands. A blocking TCP relay, one thread per direction, `TCP_NODELAY` both ways,
//! that copies bytes and nothing else: no TLS, no HTTP. Chaining two of them between the load
//! generator and the benchmark origin measures the latency and CPU any two extra processes on
//! the path cost on a given machine, the floor under what the built-in edge and a connector
//! add (README, "Benchmarks").

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;

use socket2::{Domain, Protocol, Socket, Type};

/// Bytes copied per read (a plain `read`/`write` pair, as the simplest relay does it).
const CHUNK: usize = 64 * 1024;

/// A running relay: its bound address; the threads live until the process ends.
#[derive(Debug)]
pub struct Relay {
    pub listen: SocketAddr,
}

/// Binds `listen` and relays every accepted connection to a new connection to `to`.
pub fn start(listen: SocketAddr, to: SocketAddr) -> Result<Relay, String> {
    let listener = bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))?;
    thread::Builder::new()
        .name("relay-accept".into())
        .spawn(move || {
            for visitor in listener.incoming().flatten() {
                // One failed pair ends only itself.
                let _ = pair(visitor, to);
            }
        })
        .map_err(|e| format!("starting the relay: {e}"))?;
    Ok(Relay { listen: bound })
}

/// A listener with the products' backlog (std's `bind` asks for 128, which 512 load
/// connections opened at once overflow, and the load's retries would count as relay latency).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(crate::runtime::LISTEN_BACKLOG)?;
    Ok(socket.into())
}

fn pair(visitor: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let upstream = TcpStream::connect(to)?;
    visitor.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (v2, u2) = (visitor.try_clone()?, upstream.try_clone()?);
    thread::Builder::new()
        .name("relay-up".into())
        .spawn(move || pump(visitor, upstream))?;
    thread::Builder::new()
        .name("relay-down".into())
        .spawn(move || pump(u2, v2))?;
    Ok(())
}

/// Copies `from` to `to` until EOF or an error, then half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Bytes go both ways unchanged, and a half-close travels through.
    #[test]
    fn relays_both_ways_and_passes_the_close_on() {
        let origin = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin_addr = origin.local_addr().unwrap();
        let echo = thread::spawn(move || {
            let (mut s, _) = origin.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got).unwrap();
        });
        let relay = start("127.0.0.1:0".parse().unwrap(), origin_addr).unwrap();
        let mut client = TcpStream::connect(relay.listen).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        echo.join().unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "bytes changed on the way");
    }
}
