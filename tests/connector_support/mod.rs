//! The old path of the connector test support, kept so that `mod connector_support;` and
//! `connector_support::X` keep working: every name it had, re-exported from tests/common (the
//! one shared test-support module; new suites say `mod common;`).
#![allow(dead_code, unused_imports)]

#[path = "../common/mod.rs"]
mod common;

pub use common::{
    Connector, EchoOrigin, EdgeConn, Fnv, OpenControl, Reply, Seen, TIMEOUT, TestEdge, block_on,
    collect, echo_origin, echo_transfer, eventually, get, http_get, payload_chunk, serve_echo,
    streaming_echo_origin, tcp_echo, token,
};
