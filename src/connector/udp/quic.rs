//! The QUIC connection's side of UDP sessions: the [`DatagramSink`] that sends datagrams on the
//! connection and unregisters ended v2 sessions on the edge, and the loop that feeds received
//! datagrams to the manager. `quic_conn` builds one manager per connection ([`sessions_for`]),
//! runs [`serve`] beside it, and hands the manager to the RPC streams the edge opens.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compio::quic::Connection;

use super::{DatagramSink, DatagramVersion, FlowLimiter, UdpSessions, UdpStats};
use crate::proto::datagram::SessionId;
use crate::proto::framing::RPC_STREAM_SIGNATURE;
use crate::proto::rpc::{CloudflaredClient, RpcError};
use crate::proto::rpc_types::{
    RegisterUdpSessionParams, RegisterUdpSessionResponse, UnregisterUdpSessionParams,
};

/// The datagram version a connection registered with: v3 when `--features` asked for
/// `support_datagram_v3_2` (cloudflared 2026.8's live v3 feature), else v2.
pub fn version_for(features: &[String]) -> DatagramVersion {
    if features.iter().any(|f| f == "support_datagram_v3_2") {
        DatagramVersion::V3
    } else {
        DatagramVersion::V2
    }
}

/// Sends on one QUIC connection.
pub struct QuicSink {
    conn: Connection,
    conn_index: u8,
    rpc_timeout: Duration,
}

impl DatagramSink for QuicSink {
    fn send_datagram(&self, datagram: Bytes) {
        // quinn keeps a bounded datagram send buffer and drops the oldest when it is full.
        if let Err(e) = self.conn.send_datagram(datagram) {
            log::debug!(connIndex = self.conn_index, error:% = e; "Failed to send datagram back to edge");
        }
    }

    fn session_closed(&self, id: SessionId, reason: &str) {
        let conn = self.conn.clone();
        let (timeout, reason) = (self.rpc_timeout, reason.to_owned());
        compio::runtime::spawn(async move {
            let call = unregister_on_edge(&conn, id, reason);
            let err = match compio::time::timeout(timeout, call).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(_) => "rpc timeout".to_owned(),
            };
            log::error!(sessionID = id.hex(), error = err.as_str(); "Failed to unregister udp session with edge");
        })
        .detach();
    }
}

/// cloudflared's `unregisterUdpSession` toward the edge: a new bidirectional stream, the RPC
/// signature, one call on the edge's bootstrap capability.
async fn unregister_on_edge(
    conn: &Connection,
    id: SessionId,
    message: String,
) -> Result<(), String> {
    let (send, recv) = conn.open_bi().map_err(|e| e.to_string())?;
    let mut writer = send.into_compat();
    writer
        .write_all(&RPC_STREAM_SIGNATURE)
        .await
        .map_err(|e| e.to_string())?;
    let (client, driver) = CloudflaredClient::connect(recv.into_compat(), writer);
    let _driver = compio::runtime::spawn(driver);
    let params = UnregisterUdpSessionParams {
        session_id: id.0.to_vec(),
        message,
    };
    client
        .unregister_udp_session(&params)
        .await
        .map_err(|e| e.to_string())
}

/// The session manager of QUIC connection `conn` (index `conn_index`), sending through it.
pub fn sessions_for(
    conn: &Connection,
    conn_index: u8,
    version: DatagramVersion,
    rpc_timeout: Duration,
    flows: Arc<dyn FlowLimiter>,
    stats: Arc<UdpStats>,
) -> UdpSessions {
    let sink = Rc::new(QuicSink {
        conn: conn.clone(),
        conn_index,
        rpc_timeout,
    });
    UdpSessions::new(conn_index, version, sink, flows, stats)
}

/// Feeds `sessions` every datagram `conn` receives until the connection ends.
pub async fn serve(conn: Connection, sessions: UdpSessions) {
    while let Ok(datagram) = conn.recv_datagram().await {
        sessions.on_datagram(datagram);
    }
}

impl UdpSessions {
    /// `registerUdpSession` as a `CloudflaredServer` method returns it.
    pub fn rpc_register(
        &self,
        params: RegisterUdpSessionParams,
    ) -> Result<RegisterUdpSessionResponse, RpcError> {
        self.register_v2(&params).map_err(RpcError::failed)
    }

    /// `unregisterUdpSession` as a `CloudflaredServer` method returns it.
    pub fn rpc_unregister(&self, params: UnregisterUdpSessionParams) -> Result<(), RpcError> {
        self.unregister_v2(&params).map_err(RpcError::failed)
    }
}
