//! The control side: loading configuration, hot reload, supervision. Runs on ordinary threads,
//! never on the data-plane cores; what it hands the cores is an immutable snapshot.

pub mod credentials;
pub mod loader;
pub mod reload;
