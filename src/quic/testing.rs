//! Test support: the edge's and the connector's QUIC endpoints on loopback, for the tests of
//! this module and of the connector's QUIC streams.

use std::net::SocketAddr;

use compio::quic::{ClientConfig, Connection, ConnectionError, Endpoint};

use super::{QuicSettings, bind_udp};
use crate::tls::{
    EdgeCa, EdgeRoots, QUIC_SERVER_NAME, connector_quic_client_config, edge_quic_server_config,
};

/// An edge QUIC endpoint and a connector QUIC endpoint on loopback, each with its side's
/// configuration (a fresh edge CA in a temp dir); create inside the test's runtime.
pub(crate) struct Loopback {
    _dir: tempfile::TempDir,
    /// The edge's side.
    pub server: Endpoint,
    /// The server's address.
    pub addr: SocketAddr,
    client: Endpoint,
    client_config: ClientConfig,
}

impl Loopback {
    pub fn new(settings: &QuicSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = EdgeCa::load_or_create(dir.path()).unwrap();
        let server_tls = edge_quic_server_config(&ca).unwrap();
        let client_tls =
            connector_quic_client_config(EdgeRoots::CaFile(ca.ca_pem_path().to_owned())).unwrap();
        let (udp, _) = bind_udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let server = Endpoint::new(
            udp,
            QuicSettings::endpoint(),
            Some(settings.server(server_tls).unwrap()),
            None,
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let (udp, _) = bind_udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let client = Endpoint::new(udp, QuicSettings::endpoint(), None, None).unwrap();
        let client_config = settings.client(client_tls, addr.ip()).unwrap();
        Self {
            _dir: dir,
            server,
            addr,
            client,
            client_config,
        }
    }

    /// The client's connection to the server under `server_name`.
    pub async fn connect(&self, server_name: &str) -> Result<Connection, ConnectionError> {
        self.client
            .connect(self.addr, server_name, Some(self.client_config.clone()))
            .unwrap()
            .await
    }

    /// One connection, accepted by the server and opened by the client under the edge's name:
    /// `(edge side, connector side)`.
    pub async fn pair(&self) -> (Connection, Connection) {
        futures_util::join!(
            async { self.server.wait_incoming().await.unwrap().await.unwrap() },
            async { self.connect(QUIC_SERVER_NAME).await.unwrap() }
        )
    }
}
