//! The TLS module's error type. Every variant is a local failure (files, keys, config):
//! handshake failures with a peer surface as `io::Error`s from the stream instead.

use std::{io, path::PathBuf};

/// Loading, generating or assembling TLS material failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation: `read`, `write`, `create directory`, ...
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file's PEM content is malformed or lacks the expected section.
    #[error("bad PEM in {}: {reason}", path.display())]
    BadPem {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// One file of the CA pair exists without the other; regenerating would orphan the
    /// `ca.pem` that connectors were given, so we refuse.
    #[error("incomplete edge CA: {} exists but {} is missing", present.display(), missing.display())]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// rcgen failed to generate a key or certificate.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The rcgen error.
        source: rcgen::Error,
    },
    /// rustls rejected the configuration.
    #[error("building {what}: {source}")]
    Config {
        /// Which config was being built.
        what: &'static str,
        /// The rustls error.
        source: rustls::Error,
    },
    /// A root store ended up empty, so no edge certificate could ever verify.
    #[error("no usable root certificates in {what}")]
    NoRoots {
        /// Where the roots were expected to come from.
        what: String,
    },
}
