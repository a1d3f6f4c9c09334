//! HTTP/2 to https origins that chose it by ALPN (`http2Origin`, spec §7.5). One multiplexed
//! connection per origin and core, kept in [`H2Pool`]; its driver runs as a task on the core
//! that dialled it. Bodies stream both ways under both connections' flow control: DATA from
//! the edge is released only after the origin stream accepted it, and vice versa.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use h2::client::SendRequest;

use super::{PoolKey, TlsOrigin};

/// Live HTTP/2 origin connections of one core.
#[derive(Default)]
pub struct H2Pool {
    conns: RefCell<HashMap<PoolKey, SendRequest<Bytes>>>,
}

impl H2Pool {
    /// A ready handle on a live connection to `key`, if there is one.
    pub async fn ready(&self, key: &PoolKey) -> Option<SendRequest<Bytes>> {
        let client = self.conns.borrow().get(key).cloned()?;
        match client.ready().await {
            Ok(c) => Some(c),
            Err(_) => {
                // The connection died (GOAWAY, reset, closed): forget it and dial anew.
                self.conns.borrow_mut().remove(key);
                None
            }
        }
    }

    /// Registers a live connection (see [`handshake`]) for `key`.
    pub fn insert(&self, key: PoolKey, client: SendRequest<Bytes>) {
        self.conns.borrow_mut().insert(key, client);
    }
}

/// Starts HTTP/2 over a TLS origin connection that chose it by ALPN (HTTP/2 to an origin is
/// only ever negotiated so) and spawns its driver on this core: rustls over owned buffers goes
/// to `h2` as it is, no compat layer.
pub async fn handshake(tls: TlsOrigin) -> Result<SendRequest<Bytes>, h2::Error> {
    match tls {
        TlsOrigin::Tcp(t) => start(t).await,
        TlsOrigin::Unix(t) => start(t).await,
    }
}

async fn start<T>(io: T) -> Result<SendRequest<Bytes>, h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (client, conn) = h2::client::handshake(io).await?;
    compio::runtime::spawn(async move {
        let _ = conn.await;
    })
    .detach();
    Ok(client)
}
