//! In-memory client/server tests for both RPC directions, on one thread with no sockets or clocks.

use std::cell::RefCell;
use std::rc::Rc;

use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use futures::{AsyncWriteExt, FutureExt};

use super::pipe::{duplex, pipe};
use super::*;
use crate::proto::rpc_types::*;

/// Everything the fake edge saw, for assertions.
#[derive(Default)]
struct Seen {
    registered: Vec<RegisterConnectionParams>,
    unregistered: usize,
    local_configs: Vec<Vec<u8>>,
}

struct FakeEdge {
    secret: Vec<u8>,
    seen: Rc<RefCell<Seen>>,
}

impl RegistrationServer for FakeEdge {
    async fn register_connection(
        &self,
        params: RegisterConnectionParams,
    ) -> Result<ConnectionResponse, RpcError> {
        let ok = params.auth.tunnel_secret.expose() == self.secret.as_slice();
        self.seen.borrow_mut().registered.push(params);
        Ok(if ok {
            ConnectionResponse::Details(ConnectionDetails {
                uuid: [7; 16],
                location_name: "lhr01".into(),
                tunnel_is_remotely_managed: false,
            })
        } else {
            ConnectionResponse::Error(ConnectionError {
                cause: "Unauthorized: invalid tunnel secret".into(),
                retry_after: 0,
                should_retry: false,
            })
        })
    }

    async fn unregister_connection(&self) -> Result<(), RpcError> {
        self.seen.borrow_mut().unregistered += 1;
        Ok(())
    }

    async fn update_local_configuration(&self, config: Vec<u8>) -> Result<(), RpcError> {
        self.seen.borrow_mut().local_configs.push(config);
        Ok(())
    }
}

fn params(secret: &[u8]) -> RegisterConnectionParams {
    RegisterConnectionParams {
        auth: TunnelAuth {
            account_tag: "acct".into(),
            tunnel_secret: TunnelSecret::new(secret.to_vec()),
        },
        tunnel_id: [1; 16],
        conn_index: 2,
        options: ConnectionOptions {
            client: ClientInfo {
                client_id: vec![9; 16],
                features: vec!["serialized_headers".into()],
                version: "2025.5.0".into(),
                arch: "linux_amd64".into(),
            },
            origin_local_ip: ConnectionOptions::ip_bytes([127, 0, 0, 1].into()),
            replace_existing: false,
            compression_quality: 0,
            num_previous_attempts: 3,
        },
    }
}

/// Wires a registration client to a fake edge and returns the pool driving both RPC systems.
fn registration_pair(seen: &Rc<RefCell<Seen>>) -> (LocalPool, RegistrationClient) {
    let ((edge_r, edge_w), (conn_r, conn_w)) = duplex();
    let edge = FakeEdge {
        secret: b"right".to_vec(),
        seen: seen.clone(),
    };
    let server = serve_registration(edge, edge_r, edge_w);
    let (client, client_system) = RegistrationClient::connect(conn_r, conn_w);
    let pool = LocalPool::new();
    let spawner = pool.spawner();
    spawner.spawn_local(server.map(drop)).unwrap();
    spawner.spawn_local(client_system.map(drop)).unwrap();
    (pool, client)
}

#[test]
fn register_success_returns_details() {
    let seen = Rc::default();
    let (mut pool, client) = registration_pair(&seen);
    let reply = pool.run_until(client.register_connection(&params(b"right")));
    let ConnectionResponse::Details(details) = reply.unwrap() else {
        panic!("expected details");
    };
    assert_eq!(details.uuid, [7; 16]);
    assert_eq!(details.location_name, "lhr01");
    assert_eq!(seen.borrow().registered, vec![params(b"right")]);
}

#[test]
fn register_bad_secret_returns_unauthorized_error() {
    let seen = Rc::default();
    let (mut pool, client) = registration_pair(&seen);
    let reply = pool.run_until(client.register_connection(&params(b"wrong")));
    match reply.unwrap() {
        ConnectionResponse::Error(e) => {
            assert!(e.cause.contains("Unauthorized"));
            assert!(!e.should_retry);
        }
        other => panic!("expected error, got {other:?}"),
    }
}

#[test]
fn unregister_and_local_configuration_reach_the_edge() {
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let (mut pool, client) = registration_pair(&seen);
    pool.run_until(async {
        client.register_connection(&params(b"right")).await.unwrap();
        client
            .update_local_configuration(br#"{"ingress":[]}"#)
            .await
            .unwrap();
        client.unregister_connection().await.unwrap();
    });
    let seen = seen.borrow();
    assert_eq!(seen.unregistered, 1);
    assert_eq!(seen.local_configs, vec![br#"{"ingress":[]}"#.to_vec()]);
}

#[test]
fn secret_never_appears_in_debug() {
    let text = format!("{:?}", params(b"supersecretbytes"));
    assert!(!text.contains("supersecret"));
    assert!(!text.contains("115, 117, 112")); // the bytes as a list
    assert!(text.contains("***"));
}

#[test]
fn garbage_ends_server_with_error() {
    let (mut to_server, server_r) = pipe();
    let (server_w, _keep) = pipe();
    let edge = FakeEdge {
        secret: vec![],
        seen: Rc::default(),
    };
    let server = serve_registration(edge, server_r, server_w);
    let mut pool = LocalPool::new();
    let result = pool.run_until(async move {
        to_server.write_all(&[0xff; 64]).await.unwrap();
        to_server.close().await.unwrap();
        server.await
    });
    assert!(result.is_err());
}

struct FakeConnector {
    version: RefCell<i32>,
}

impl CloudflaredServer for FakeConnector {
    async fn update_configuration(
        &self,
        version: i32,
        config: Vec<u8>,
    ) -> Result<UpdateConfigurationResponse, RpcError> {
        let mut current = self.version.borrow_mut();
        if serde_json::from_slice::<serde_json::Value>(&config).is_err() {
            return Ok(UpdateConfigurationResponse {
                latest_applied_version: *current,
                err: Some("invalid json".into()),
            });
        }
        if version > *current {
            *current = version;
        }
        Ok(UpdateConfigurationResponse {
            latest_applied_version: *current,
            err: None,
        })
    }

    async fn register_udp_session(
        &self,
        params: RegisterUdpSessionParams,
    ) -> Result<RegisterUdpSessionResponse, RpcError> {
        Ok(RegisterUdpSessionResponse {
            err: None,
            spans: params.session_id,
        })
    }

    async fn unregister_udp_session(&self, _: UnregisterUdpSessionParams) -> Result<(), RpcError> {
        Err(RpcError::failed("no such session"))
    }
}

#[test]
fn update_configuration_and_sessions_round_trip() {
    let ((conn_r, conn_w), (edge_r, edge_w)) = duplex();
    let connector = FakeConnector {
        version: RefCell::new(-1),
    };
    let server = serve_cloudflared(connector, conn_r, conn_w);
    let (client, client_system) = CloudflaredClient::connect(edge_r, edge_w);
    let mut pool = LocalPool::new();
    pool.spawner().spawn_local(server.map(drop)).unwrap();
    pool.spawner().spawn_local(client_system.map(drop)).unwrap();
    pool.run_until(async {
        let r = client.update_configuration(5, b"{}").await.unwrap();
        assert_eq!((r.latest_applied_version, r.err), (5, None));
        let r = client.update_configuration(4, b"{}").await.unwrap();
        assert_eq!(r.latest_applied_version, 5);
        let r = client.update_configuration(6, b"not json").await.unwrap();
        assert_eq!(
            (r.latest_applied_version, r.err.as_deref()),
            (5, Some("invalid json"))
        );
        let udp = RegisterUdpSessionParams {
            session_id: vec![4; 16],
            dst_port: 53,
            ..Default::default()
        };
        let r = client.register_udp_session(&udp).await.unwrap();
        assert_eq!(r.spans, vec![4; 16]);
        let err = client
            .unregister_udp_session(&UnregisterUdpSessionParams::default())
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::Exception(m) if m.contains("no such session")));
    });
}
