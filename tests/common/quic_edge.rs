//! A minimal QUIC edge for the connector binary (`--protocol quic`): a compio-quic server
//! endpoint with the edge's TLS config on loopback, and the registration of the connection the
//! connector dials (control stream: first bidirectional stream, capnp RegistrationServer).

use std::cell::RefCell;
use std::net::SocketAddr;

use compio::quic::{Connection, Endpoint};
use futures_channel::oneshot;
use ringflare::proto::{
    ConnectionDetails, ConnectionResponse, RegisterConnectionParams, RegistrationServer, RpcError,
    serve_registration,
};
use ringflare::quic::{QuicSettings, bind_udp};
use ringflare::tls::{EdgeCa, edge_quic_server_config};
use uuid::Uuid;

/// The bound on each step of the QUIC edge: the connector dialling, registering.
pub const QUIC_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The edge end of one registered QUIC connection.
pub struct QuicEdgeConn {
    pub conn: Connection,
    _endpoint: Endpoint,
    _rpc: compio::runtime::JoinHandle<()>,
}

/// Accepts every registration and says so once.
struct Registration {
    registered: RefCell<Option<oneshot::Sender<()>>>,
    remotely_managed: bool,
}

impl RegistrationServer for Registration {
    async fn register_connection(
        &self,
        _params: RegisterConnectionParams,
    ) -> Result<ConnectionResponse, RpcError> {
        if let Some(tx) = self.registered.borrow_mut().take() {
            let _ = tx.send(());
        }
        Ok(ConnectionResponse::Details(ConnectionDetails {
            uuid: *Uuid::new_v4().as_bytes(),
            location_name: "tst01".into(),
            tunnel_is_remotely_managed: self.remotely_managed,
        }))
    }

    async fn unregister_connection(&self) -> Result<(), RpcError> {
        Ok(())
    }

    async fn update_local_configuration(&self, _config: Vec<u8>) -> Result<(), RpcError> {
        Ok(())
    }
}

/// Binds the edge's UDP endpoint on loopback; the connector dials the returned address.
pub fn bind(ca: &EdgeCa) -> (Endpoint, SocketAddr) {
    let server = QuicSettings::default()
        .server(edge_quic_server_config(ca).unwrap())
        .unwrap();
    let (udp, _) = bind_udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
    let addr = udp.local_addr().unwrap();
    let endpoint = Endpoint::new(udp, QuicSettings::endpoint(), Some(server), None).unwrap();
    (endpoint, addr)
}

/// Accepts the connector's connection and serves its registration, answering that the tunnel
/// is (or is not) remotely managed: a connector of a locally managed tunnel pushes its local
/// configuration from connection 0 (spec §5.4), one of a remotely managed tunnel does not.
pub async fn accept(endpoint: Endpoint, remotely_managed: bool) -> QuicEdgeConn {
    let incoming = compio::time::timeout(QUIC_WAIT, endpoint.wait_incoming())
        .await
        .expect("the connector dialled")
        .expect("an incoming connection");
    let conn = incoming.accept().unwrap().await.expect("QUIC handshake");
    let (send, recv) = conn.accept_bi().await.expect("the control stream");
    let (tx, rx) = oneshot::channel();
    let server = Registration {
        registered: RefCell::new(Some(tx)),
        remotely_managed,
    };
    let rpc = serve_registration(server, recv.into_compat(), send.into_compat());
    let rpc = compio::runtime::spawn(async move {
        let _ = rpc.await;
    });
    // Awaited, not polled: this thread drives the edge's side of the connection.
    compio::time::timeout(QUIC_WAIT, rx)
        .await
        .expect("registered in time")
        .unwrap();
    QuicEdgeConn {
        conn,
        _endpoint: endpoint,
        _rpc: rpc,
    }
}
