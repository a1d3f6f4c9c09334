//! The old path of the edge test support, kept so that `mod edge_support;` and
//! `edge_support::X` keep working: every name it had, re-exported from tests/common (the one
//! shared test-support module; new suites say `mod common;`). Its `eventually` is the blocking
//! one (`common::eventually_blocking`).
#![allow(dead_code, unused_imports)]

#[path = "../common/mod.rs"]
mod common;

pub use common::eventually_blocking as eventually;
pub use common::{
    Behavior, Client, Peer, PeerConfig, PeerEvent, Response, TestTunnel, WAIT, edge_options, fnv,
    pattern, start_edge,
};
