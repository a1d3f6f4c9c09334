//! Tunnel credentials for the built-in edge and the peers, and connector tokens.

use ringflare::config::Secret;
use ringflare::config::credentials::{Credentials, encode_token};
use ringflare::edge::EdgeTunnel;
use uuid::Uuid;

/// A tunnel's credentials, for the edge and the peer.
#[derive(Clone)]
pub struct TestTunnel {
    pub account: String,
    pub id: Uuid,
    pub secret: Vec<u8>,
}

impl TestTunnel {
    pub fn new() -> Self {
        Self {
            account: "0123456789abcdef0123456789abcdef".into(),
            id: Uuid::new_v4(),
            secret: Uuid::new_v4().as_bytes().to_vec(),
        }
    }

    pub fn edge_tunnel(&self, hostnames: &[&str]) -> EdgeTunnel {
        EdgeTunnel {
            account_tag: self.account.clone(),
            tunnel_id: self.id,
            secret: Secret::new(self.secret.clone()),
            hostnames: hostnames.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    /// A connector token for this tunnel.
    pub fn token(&self) -> String {
        self.token_with_secret(&self.secret)
    }

    /// A connector token for this tunnel with another secret (a refused registration).
    pub fn token_with_secret(&self, secret: &[u8]) -> String {
        tunnel_token(&self.account, secret, self.id)
    }
}

/// A connector token for the given account, secret and tunnel id.
pub fn tunnel_token(account: &str, secret: &[u8], id: Uuid) -> String {
    encode_token(&Credentials {
        account_tag: account.into(),
        tunnel_secret: Secret::new(secret.to_vec()),
        tunnel_id: id,
        endpoint: String::new(),
    })
}

/// The fixed token the in-test edge ([`super::TestEdge`]) accepts.
pub fn token() -> String {
    tunnel_token(
        "0123456789abcdef0123456789abcdef",
        &[9; 32],
        Uuid::parse_str("6ff42ae2-765d-4adf-8112-31c55c1551ef").unwrap(),
    )
}
