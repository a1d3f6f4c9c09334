//! `CloudflaredServer`: calls the edge makes into the connector on QUIC RPC streams (spec §4.2, §5.5).
//!
//! The connector implements [`CloudflaredServer`] and serves it with [`serve_cloudflared`] on each
//! edge-opened RPC stream (after the `52 BB 82 5C DB 65` signature has been consumed). The edge simulator
//! uses [`CloudflaredClient`]. Calls carry the parent interface IDs (`SessionManager`,
//! `ConfigurationManager`), which capnp-rpc dispatches to the right method.

use std::future::Future;

use capnp::capability::{FromClientHook, Params, Results};
use capnp_rpc::RpcSystem;
use capnp_rpc::rpc_twoparty_capnp::Side;
use futures::{AsyncRead, AsyncWrite};

use super::{RpcDriver, RpcError, bad_params, network};
use crate::proto::generated::tunnelrpc_capnp::{
    cloudflared_server, configuration_manager as config_schema, session_manager as session_schema,
};
use crate::proto::rpc_types::{
    RegisterUdpSessionParams, RegisterUdpSessionResponse, UnregisterUdpSessionParams,
    UpdateConfigurationResponse, read_update_configuration_params,
};

/// What the connector does when the edge calls it. Implemented by the connector's control plane.
pub trait CloudflaredServer: 'static {
    /// Apply a remote configuration if `version` is newer (spec §5.6).
    fn update_configuration(
        &self,
        version: i32,
        config: Vec<u8>,
    ) -> impl Future<Output = Result<UpdateConfigurationResponse, RpcError>>;

    /// Open a UDP session (datagram v2).
    fn register_udp_session(
        &self,
        params: RegisterUdpSessionParams,
    ) -> impl Future<Output = Result<RegisterUdpSessionResponse, RpcError>>;

    /// Close a UDP session (datagram v2).
    fn unregister_udp_session(
        &self,
        params: UnregisterUdpSessionParams,
    ) -> impl Future<Output = Result<(), RpcError>>;
}

/// Serves `server` as the bootstrap capability over one RPC stream (the connector's end).
pub fn serve_cloudflared<S, R, W>(server: S, reader: R, writer: W) -> RpcDriver
where
    S: CloudflaredServer,
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let client: cloudflared_server::Client = capnp_rpc::new_client(Adapter(server));
    RpcSystem::new(network(reader, writer, Side::Server), Some(client.client))
}

/// Bridges the generated capnp server traits to [`CloudflaredServer`].
struct Adapter<S>(S);

impl<S: CloudflaredServer> cloudflared_server::Server for Adapter<S> {}

impl<S: CloudflaredServer> config_schema::Server for Adapter<S> {
    async fn update_configuration(
        self: capnp::capability::Rc<Self>,
        params: Params<config_schema::update_configuration_params::Owned>,
        mut results: Results<config_schema::update_configuration_results::Owned>,
    ) -> Result<(), capnp::Error> {
        let (version, config) =
            read_update_configuration_params(params.get()?).map_err(bad_params)?;
        let response = self.0.update_configuration(version, config).await?;
        response.write_to(results.get().init_result());
        Ok(())
    }
}

impl<S: CloudflaredServer> session_schema::Server for Adapter<S> {
    async fn register_udp_session(
        self: capnp::capability::Rc<Self>,
        params: Params<session_schema::register_udp_session_params::Owned>,
        mut results: Results<session_schema::register_udp_session_results::Owned>,
    ) -> Result<(), capnp::Error> {
        let params = RegisterUdpSessionParams::read_from(params.get()?).map_err(bad_params)?;
        let response = self.0.register_udp_session(params).await?;
        response.write_to(results.get().init_result());
        Ok(())
    }

    async fn unregister_udp_session(
        self: capnp::capability::Rc<Self>,
        params: Params<session_schema::unregister_udp_session_params::Owned>,
        _: Results<session_schema::unregister_udp_session_results::Owned>,
    ) -> Result<(), capnp::Error> {
        let params = UnregisterUdpSessionParams::read_from(params.get()?).map_err(bad_params)?;
        Ok(self.0.unregister_udp_session(params).await?)
    }
}

/// The edge's handle on a connector's `CloudflaredServer` over one RPC stream.
#[derive(Clone)]
pub struct CloudflaredClient {
    /// Bootstrap capability viewed as `ConfigurationManager` (calls use that interface ID).
    config: config_schema::Client,
    /// The same capability viewed as `SessionManager`.
    sessions: session_schema::Client,
}

impl CloudflaredClient {
    /// Starts the client end of an RPC stream (write the RPC stream signature first, outside this call).
    pub fn connect<R, W>(reader: R, writer: W) -> (Self, RpcDriver)
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let mut system = RpcSystem::new(network(reader, writer, Side::Client), None);
        let bootstrap: cloudflared_server::Client = system.bootstrap(Side::Server);
        let client = Self {
            config: bootstrap.client.clone().cast_to(),
            sessions: bootstrap.client.cast_to(),
        };
        (client, system)
    }

    /// Pushes a remote configuration (spec §5.6).
    pub async fn update_configuration(
        &self,
        version: i32,
        config: &[u8],
    ) -> Result<UpdateConfigurationResponse, RpcError> {
        let mut request = self.config.update_configuration_request();
        request.get().set_version(version);
        request.get().set_config(config);
        let reply = request.send().promise.await?;
        Ok(UpdateConfigurationResponse::read_from(
            reply.get()?.get_result()?,
        )?)
    }

    /// Asks the connector to open a UDP session.
    pub async fn register_udp_session(
        &self,
        params: &RegisterUdpSessionParams,
    ) -> Result<RegisterUdpSessionResponse, RpcError> {
        let mut request = self.sessions.register_udp_session_request();
        params.write_to(request.get());
        let reply = request.send().promise.await?;
        Ok(RegisterUdpSessionResponse::read_from(
            reply.get()?.get_result()?,
        )?)
    }

    /// Asks the connector to close a UDP session.
    pub async fn unregister_udp_session(
        &self,
        params: &UnregisterUdpSessionParams,
    ) -> Result<(), RpcError> {
        let mut request = self.sessions.unregister_udp_session_request();
        params.write_to(request.get());
        request.send().promise.await?;
        Ok(())
    }
}
