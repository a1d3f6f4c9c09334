//! ringflare: a drop-in, thread-per-core replacement for cloudflared's tunnel connector.
//!
//! Layout (dependency direction is top to bottom; pure modules never import I/O modules):
//! - pure: `config`, `ingress`, `proto`
//! - I/O: `edge`, `proxy`, `runtime`, `control`
//! - entry: `cli` and `main.rs`
#![deny(unsafe_code)]
pub mod bench;
pub mod cli;
pub mod config;
pub mod connector;
pub mod control;
pub mod doctor;
pub mod edge;
pub mod http1;
pub mod ingress;
pub mod logging;
pub mod proto;
pub mod runtime;
pub mod service;
pub mod tls;
