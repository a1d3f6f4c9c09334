//! Bytes from the edge on the control stream, read by the connector's RegistrationClient while
//! it registers and unregisters: the calls and the RPC system must end, never panic.
#![no_main]

use futures::executor::LocalPool;
use futures::future::{Either, select};
use futures::{AsyncWriteExt, FutureExt};
use libfuzzer_sys::fuzz_target;
use ringflare::proto::rpc::pipe::pipe;
use ringflare::proto::{
    ClientInfo, ConnectionOptions, RegisterConnectionParams, RegistrationClient, TunnelAuth,
    TunnelSecret,
};

fn params() -> RegisterConnectionParams {
    RegisterConnectionParams {
        auth: TunnelAuth {
            account_tag: "acct".into(),
            tunnel_secret: TunnelSecret::new(vec![7; 32]),
        },
        tunnel_id: [1; 16],
        conn_index: 0,
        options: ConnectionOptions {
            client: ClientInfo {
                client_id: vec![9; 16],
                features: vec!["serialized_headers".into()],
                version: "fuzz".into(),
                arch: "linux_amd64".into(),
            },
            ..Default::default()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let (mut from_edge, client_reader) = pipe();
    let (client_writer, _to_edge) = pipe();
    let (client, driver) = RegistrationClient::connect(client_reader, client_writer);
    let mut pool = LocalPool::new();
    let input = data.to_vec();
    pool.run_until(async move {
        let _ = from_edge.write_all(&input).await;
        let _ = from_edge.close().await;
        let calls = async {
            let _ = client.register_connection(&params()).await;
            let _ = client.update_local_configuration(b"{}").await;
            let _ = client.unregister_connection().await;
        };
        // The input is finite and then EOF, so the driver ends; the calls end with it.
        match select(calls.boxed_local(), driver).await {
            Either::Left(((), driver)) => drop(driver),
            Either::Right((_, calls)) => drop(calls),
        }
    });
});
