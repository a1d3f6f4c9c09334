//! `RegistrationServer`: the control stream on which a connector registers with the edge (spec §5.3-§5.4).
//!
//! The edge side implements [`RegistrationServer`] and serves it as the bootstrap capability with
//! [`serve_registration`]; pipelined calls on the bootstrap promise work because capnp-rpc resolves them
//! against that capability. The connector side uses [`RegistrationClient`]. Neither side owns retry or
//! timeout policy.

use std::future::Future;

use capnp::capability::{Params, Results};
use capnp_rpc::RpcSystem;
use capnp_rpc::rpc_twoparty_capnp::Side;
use futures::{AsyncRead, AsyncWrite};

use super::{RpcDriver, RpcError, bad_params, network};
use crate::proto::generated::tunnelrpc_capnp::registration_server as schema;
use crate::proto::rpc_types::{ConnectionResponse, RegisterConnectionParams};

/// What the edge does when a connector calls it. Implemented by the edge simulator.
pub trait RegistrationServer: 'static {
    /// Decide whether to accept the connection; refusals go in [`ConnectionResponse::Error`].
    fn register_connection(
        &self,
        params: RegisterConnectionParams,
    ) -> impl Future<Output = Result<ConnectionResponse, RpcError>>;

    /// The connector is shutting down this connection gracefully.
    fn unregister_connection(&self) -> impl Future<Output = Result<(), RpcError>>;

    /// The connector uploads its locally managed configuration (JSON bytes, spec §5.4).
    fn update_local_configuration(
        &self,
        config: Vec<u8>,
    ) -> impl Future<Output = Result<(), RpcError>>;
}

/// Serves `server` as the bootstrap capability over `reader`/`writer` (the edge end of a control stream).
///
/// Poll the returned system to completion; it ends when the peer disconnects (Ok) or sends bytes that
/// are not valid RPC (Err).
pub fn serve_registration<S, R, W>(server: S, reader: R, writer: W) -> RpcDriver
where
    S: RegistrationServer,
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let client: schema::Client = capnp_rpc::new_client(Adapter(server));
    RpcSystem::new(network(reader, writer, Side::Server), Some(client.client))
}

/// Bridges the generated capnp server trait to [`RegistrationServer`].
struct Adapter<S>(S);

impl<S: RegistrationServer> schema::Server for Adapter<S> {
    async fn register_connection(
        self: capnp::capability::Rc<Self>,
        params: Params<schema::register_connection_params::Owned>,
        mut results: Results<schema::register_connection_results::Owned>,
    ) -> Result<(), capnp::Error> {
        let params = RegisterConnectionParams::read_from(params.get()?).map_err(bad_params)?;
        let response = self.0.register_connection(params).await?;
        response.write_to(results.get().init_result());
        Ok(())
    }

    async fn unregister_connection(
        self: capnp::capability::Rc<Self>,
        _: Params<schema::unregister_connection_params::Owned>,
        _: Results<schema::unregister_connection_results::Owned>,
    ) -> Result<(), capnp::Error> {
        Ok(self.0.unregister_connection().await?)
    }

    async fn update_local_configuration(
        self: capnp::capability::Rc<Self>,
        params: Params<schema::update_local_configuration_params::Owned>,
        _: Results<schema::update_local_configuration_results::Owned>,
    ) -> Result<(), capnp::Error> {
        let config = params.get()?.get_config()?.to_vec();
        Ok(self.0.update_local_configuration(config).await?)
    }
}

/// The connector's handle on the edge's registration capability.
///
/// Calls are pipelined on the bootstrap promise, so `register_connection` goes out right behind the
/// Bootstrap message, as cloudflared does. Cloning is cheap; all clones share one RPC connection.
#[derive(Clone)]
pub struct RegistrationClient {
    /// The edge's bootstrap capability, always addressed with the RegistrationServer interface ID.
    client: schema::Client,
}

impl RegistrationClient {
    /// Starts the client end of a control stream. Poll the returned driver alongside the calls.
    pub fn connect<R, W>(reader: R, writer: W) -> (Self, RpcDriver)
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let mut system = RpcSystem::new(network(reader, writer, Side::Client), None);
        let client = system.bootstrap(Side::Server);
        (Self { client }, system)
    }

    /// Registers this connection; a refusal is `Ok(ConnectionResponse::Error(..))`, an exception `Err`.
    pub async fn register_connection(
        &self,
        params: &RegisterConnectionParams,
    ) -> Result<ConnectionResponse, RpcError> {
        let mut request = self.client.register_connection_request();
        params.write_to(request.get());
        let reply = request.send().promise.await?;
        Ok(ConnectionResponse::read_from(reply.get()?.get_result()?)?)
    }

    /// Tells the edge this connection is going away (graceful shutdown, spec §3.9).
    pub async fn unregister_connection(&self) -> Result<(), RpcError> {
        self.client
            .unregister_connection_request()
            .send()
            .promise
            .await?;
        Ok(())
    }

    /// Uploads the local configuration JSON (spec §5.4).
    pub async fn update_local_configuration(&self, config: &[u8]) -> Result<(), RpcError> {
        let mut request = self.client.update_local_configuration_request();
        request.get().set_config(config);
        request.send().promise.await?;
        Ok(())
    }
}
