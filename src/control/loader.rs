//! Finding and reading `config.yml` (the only file-system access the configuration needs).

use std::path::{Path, PathBuf};

use crate::config::file::{ConfigError, ConfigFile, default_config_candidates, parse_config};

/// Why the config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Go's `open <path>: <reason>` text.
    #[error("open {path}: {reason}")]
    Io { path: String, reason: String },
    #[error(transparent)]
    Yaml(#[from] ConfigError),
}

impl LoadError {
    /// The line of a YAML error, for log fields.
    pub fn line(&self) -> u64 {
        match self {
            LoadError::Yaml(e) => e.line,
            LoadError::Io { .. } => 0,
        }
    }
}

/// The user's home directory, from `$HOME`.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Expands a leading `~/` as cloudflared (go-homedir) does.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if path == "~" => home_dir().unwrap_or_else(|| PathBuf::from(path)),
        _ => PathBuf::from(path),
    }
}

/// The first existing default config file, in cloudflared's search order.
pub fn find_default_config() -> Option<PathBuf> {
    default_config_candidates(home_dir().as_deref())
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads and parses a config file.
pub fn load_config(path: &Path) -> Result<ConfigFile, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.display().to_string(),
        reason: go_io_reason(&e),
    })?;
    Ok(parse_config(&text, path)?)
}

/// Go's lowercase error texts for the common cases.
pub fn go_io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => e.to_string(),
    }
}
