//! cloudflared-compatible configuration: `config.yml`, credentials files, tunnel tokens and
//! Go durations.
//!
//! Pure: no file system, no network, no clock. Callers read files and environment variables
//! and pass the text in; this module turns it into typed values or errors that name the file,
//! line and key. The ingress rules inside the file are compiled by [`crate::ingress`].

pub mod credentials;
pub mod duration;
pub mod file;
pub mod raw;
pub mod secret;
pub mod yaml;

pub use credentials::{Credentials, CredentialsError, parse_credentials_file, parse_token};
pub use duration::{format_go_duration, parse_go_duration};
pub use file::{ConfigError, ConfigFile, parse_config};
pub use secret::Secret;
