//! h2 on compio over loopback TLS, in cloudflared's roles: the connector is the TLS client
//! and the HTTP/2 *server*; the edge is the TLS server and the HTTP/2 *client*. The edge
//! sends a 4 MiB body, the connector streams it back, the edge checks every byte. Runs on
//! io_uring (when the kernel allows it) and on the forced poll driver.

use std::{future::poll_fn, time::Duration};

use bytes::Bytes;
use compio::net::{TcpListener, TcpStream};
use compio::tls::{TlsAcceptor, TlsConnector};
use h2::{RecvStream, SendStream};
use ringflare::runtime::{DriverKind, IoDriver, build_runtime, h2io, select_driver};
use ringflare::tls::{
    EdgeCa, EdgeRoots, H2_SERVER_NAME, connector_client_config, edge_server_config,
};
use tokio::io::{AsyncRead, AsyncWrite};

const BODY_LEN: usize = 4 << 20;
const CHUNK: usize = 64 << 10;
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn body() -> Vec<u8> {
    (0..BODY_LEN).map(|i| (i * 31 % 251) as u8).collect()
}

/// Sends `data` respecting HTTP/2 flow control: never queues more than the peer allows.
async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(cap) => cap?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        let n = granted.min(data.len());
        send.send_data(data.split_to(n), false)?;
    }
    Ok(())
}

/// Connector side: echo each request body back as it arrives.
async fn echo(mut body: RecvStream, mut send: SendStream<Bytes>) -> Result<(), h2::Error> {
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let len = chunk.len();
        send_all(&mut send, chunk).await?;
        // Release only after forwarding: the edge cannot outrun our send window.
        body.flow_control().release_capacity(len)?;
    }
    send.send_data(Bytes::new(), true)
}

async fn connector<T: AsyncRead + AsyncWrite + Unpin + 'static>(io: T) {
    let mut conn = h2io::connector_h2_server().handshake(io).await.unwrap();
    while let Some(req) = conn.accept().await {
        let (req, mut respond) = req.unwrap();
        let send = respond
            .send_response(http::Response::new(()), false)
            .unwrap();
        compio::runtime::spawn(async move {
            let _ = echo(req.into_body(), send).await;
        })
        .detach();
    }
}

async fn edge<T: AsyncRead + AsyncWrite + Unpin + 'static>(io: T) -> Vec<u8> {
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    compio::runtime::spawn(async move {
        let _ = conn.await;
    })
    .detach();
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post("https://h2.cftunnel.com/echo")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(req, false).unwrap();
    compio::runtime::spawn(async move {
        for chunk in Bytes::from(body()).chunks(CHUNK) {
            send_all(&mut send, Bytes::copy_from_slice(chunk))
                .await
                .unwrap();
        }
        send.send_data(Bytes::new(), true).unwrap();
    })
    .detach();
    let mut recv = response.await.unwrap().into_body();
    let mut echoed = Vec::with_capacity(BODY_LEN);
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        recv.flow_control().release_capacity(chunk.len()).unwrap();
        echoed.extend_from_slice(&chunk);
    }
    echoed
}

async fn echo_over_tls() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(dir.path()).unwrap();
    let acceptor = TlsAcceptor::from(edge_server_config(&ca).unwrap());
    let roots = EdgeRoots::CaFile(ca.ca_pem_path().to_owned());
    let tls_connector = TlsConnector::from(connector_client_config(roots).unwrap());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let edge_task = compio::runtime::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        edge(h2io::tls(tls)).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tls_connector.connect(H2_SERVER_NAME, tcp).await.unwrap();
    compio::runtime::spawn(connector(h2io::tls(tls))).detach();
    edge_task.await.unwrap()
}

async fn echo_over_plain_tcp() -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let edge_task = compio::runtime::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        edge(h2io::tcp(tcp)).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    compio::runtime::spawn(connector(h2io::tcp(tcp))).detach();
    edge_task.await.unwrap()
}

fn run_on(driver: DriverKind, tls: bool) {
    let rt = build_runtime(driver).unwrap();
    let echoed = rt.block_on(async {
        let work = async {
            if tls {
                echo_over_tls().await
            } else {
                echo_over_plain_tcp().await
            }
        };
        compio::time::timeout(TEST_TIMEOUT, work)
            .await
            .expect("echo did not finish in time")
    });
    assert_eq!(echoed.len(), BODY_LEN);
    assert!(echoed == body(), "echoed bytes differ");
}

#[test]
fn h2_echo_over_tls_on_io_uring() {
    match select_driver(IoDriver::IoUring) {
        Ok(report) => run_on(report.driver, true),
        // The sandbox may forbid io_uring; the poll test below still runs.
        Err(e) => println!("SKIPPED io_uring variant: {e}"),
    }
}

#[test]
fn h2_echo_over_tls_on_poll() {
    run_on(DriverKind::Poll, true);
}

#[test]
fn h2_echo_over_plain_tcp_on_both_drivers() {
    run_on(DriverKind::Poll, false);
    if let Ok(report) = select_driver(IoDriver::IoUring) {
        run_on(report.driver, false);
    }
}

/// ringflare's own TLS stream (`RustlsIo`, what the connector and the edge run HTTP/2 over)
/// under backpressure: 8 MiB written as h2 writes them (many writes, a flush after each) to a
/// reader that stalls first, so the socket buffer fills and flushes find it full. rustls'
/// queue then goes to the kernel partly straight from its own buffers, partly through an
/// owned write; every byte must still arrive once, in order.
async fn rustls_io_under_backpressure() -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(dir.path()).unwrap();
    let server = edge_server_config(&ca).unwrap();
    let client = connector_client_config(EdgeRoots::CaFile(ca.ca_pem_path().to_owned())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = compio::runtime::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut io = h2io::tls_accept(tcp, server).await.unwrap();
        // Let the writer fill the socket buffers before anything is read.
        compio::time::sleep(Duration::from_millis(300)).await;
        let mut got = Vec::with_capacity(2 * BODY_LEN);
        let mut buf = vec![0; 16 << 10];
        loop {
            let n = io.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut io = h2io::tls_connect(tcp, client, H2_SERVER_NAME)
        .await
        .unwrap();
    let data: Vec<u8> = body().into_iter().chain(body()).collect();
    // Odd sizes, as HTTP/2 frames with their 9-byte heads come.
    for chunk in data.chunks((16 << 10) + 9) {
        io.write_all(chunk).await.unwrap();
        io.flush().await.unwrap();
    }
    io.shutdown().await.unwrap();
    reader.await.unwrap()
}

#[test]
fn rustls_io_keeps_every_byte_when_the_reader_stalls() {
    let mut drivers = vec![DriverKind::Poll];
    if let Ok(report) = select_driver(IoDriver::IoUring) {
        drivers.push(report.driver);
    }
    for driver in drivers {
        let rt = build_runtime(driver).unwrap();
        let got = rt.block_on(async {
            compio::time::timeout(TEST_TIMEOUT, rustls_io_under_backpressure())
                .await
                .unwrap_or_else(|_| panic!("{driver:?}: the transfer did not finish in time"))
        });
        let want: Vec<u8> = body().into_iter().chain(body()).collect();
        assert_eq!(got.len(), want.len(), "{driver:?}");
        assert!(got == want, "{driver:?}: bytes differ");
    }
}
