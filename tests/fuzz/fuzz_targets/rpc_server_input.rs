//! Bytes from a peer fed to the edge's RegistrationServer: the RPC system must end, never panic.
#![no_main]

use futures::AsyncWriteExt;
use futures::executor::LocalPool;
use libfuzzer_sys::fuzz_target;
use ringflare::proto::rpc::pipe::pipe;
use ringflare::proto::{ConnectionResponse, RegisterConnectionParams, RegistrationServer, RpcError};

struct Edge;

impl RegistrationServer for Edge {
    async fn register_connection(
        &self,
        _: RegisterConnectionParams,
    ) -> Result<ConnectionResponse, RpcError> {
        Err(RpcError::failed("fuzz"))
    }

    async fn unregister_connection(&self) -> Result<(), RpcError> {
        Ok(())
    }

    async fn update_local_configuration(&self, _: Vec<u8>) -> Result<(), RpcError> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let (mut to_server, server_reader) = pipe();
    let (server_writer, _replies) = pipe();
    let system = ringflare::proto::serve_registration(Edge, server_reader, server_writer);
    let mut pool = LocalPool::new();
    let input = data.to_vec();
    let _ = pool.run_until(async move {
        let _ = to_server.write_all(&input).await;
        let _ = to_server.close().await;
        system.await
    });
});
