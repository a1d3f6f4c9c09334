//! The edge's state directory and its `edge.yml`.
//!
//! Layout of the state directory (default [`default_state_dir`]):
//! - `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`: the edge CA and certificate
//!   (created by `tls::EdgeCa`); connectors get `ca.pem` as `--cacert`;
//! - `<tunnel-id>.json`: cloudflared-format credentials, mode 0400, one per tunnel;
//! - `edge.yml`: listeners and tunnels with their hostnames.
//!
//! ```yaml
//! tunnel-listen: [127.0.0.1:7844]    # one connector connection per --edge address
//! eyeball-listen: 127.0.0.1:8080
//! eyeball-tls-listen: 127.0.0.1:8443 # optional HTTPS, certificate from the edge CA
//! eyeball-tls-hostnames: [app.example.com] # default: localhost + the tunnel hostnames
//! location: rfl01
//! tunnels:
//!   - id: 6ff42ae2-765d-4adf-8112-31c55c1551ef
//!     credentials-file: 6ff42ae2-765d-4adf-8112-31c55c1551ef.json   # relative to the state dir
//!     hostnames: ["*"]               # exact names, "*.suffix" wildcards, "*" = any host
//! ```
//! Secrets stay in the credentials files; `edge.yml` only points at them.

use std::{
    fs,
    io::Write,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{EdgeOptions, EdgeTunnel};
use crate::config::Secret;
use crate::config::credentials::{
    Credentials, encode_credentials_file, encode_token, parse_credentials_file,
};

/// Name of the config file inside the state directory.
pub const DEFAULT_CONFIG_NAME: &str = "edge.yml";

/// `edge.yml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EdgeFile {
    /// Tunnel listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnel_listen: Vec<SocketAddr>,
    /// Eyeball listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eyeball_listen: Option<SocketAddr>,
    /// Optional HTTPS eyeball listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eyeball_tls_listen: Option<SocketAddr>,
    /// Names for the HTTPS eyeball certificate (default: localhost and the tunnel hostnames).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eyeball_tls_hostnames: Vec<String>,
    /// Colo name in `ConnectionDetails`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Open connections each eyeball listener accepts (default 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_eyeball_connections: Option<usize>,
    /// Tunnels.
    #[serde(default)]
    pub tunnels: Vec<EdgeFileTunnel>,
}

/// One tunnel in `edge.yml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EdgeFileTunnel {
    /// Tunnel id; must match the credentials file.
    pub id: Uuid,
    /// Credentials file, relative to the state directory unless absolute.
    pub credentials_file: PathBuf,
    /// Hostnames routed to this tunnel.
    #[serde(default)]
    pub hostnames: Vec<String>,
}

/// Problems with the state directory or `edge.yml`, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum EdgeConfigError {
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `edge.yml` is not valid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The CA could not be created.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// `$RINGFLARE_EDGE_STATE`, else `$XDG_STATE_HOME/ringflare/edge`, else
/// `~/.local/state/ringflare/edge`, else `./ringflare-edge`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RINGFLARE_EDGE_STATE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ringflare").join("edge");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/ringflare/edge"),
        None => PathBuf::from("ringflare-edge"),
    }
}

/// Reads and validates `edge.yml`, loading each tunnel's credentials.
pub fn load_edge_file(
    path: &Path,
    state_dir: &Path,
) -> Result<(EdgeFile, Vec<EdgeTunnel>), EdgeConfigError> {
    let text = fs::read_to_string(path).map_err(|source| EdgeConfigError::Io {
        op: "reading",
        path: path.to_owned(),
        source,
    })?;
    let file: EdgeFile = serde_saphyr::from_str(&text).map_err(|e| EdgeConfigError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut tunnels = Vec::with_capacity(file.tunnels.len());
    for t in &file.tunnels {
        let cred_path = if t.credentials_file.is_absolute() {
            t.credentials_file.clone()
        } else {
            state_dir.join(&t.credentials_file)
        };
        let text = fs::read_to_string(&cred_path).map_err(|source| EdgeConfigError::Io {
            op: "reading credentials",
            path: cred_path.clone(),
            source,
        })?;
        let creds =
            parse_credentials_file(&text, &cred_path.display().to_string()).map_err(|e| {
                EdgeConfigError::Invalid {
                    path: cred_path.clone(),
                    reason: e.to_string(),
                }
            })?;
        if creds.tunnel_id != t.id {
            return Err(EdgeConfigError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "tunnel {}: credentials file {} is for tunnel {}",
                    t.id,
                    cred_path.display(),
                    creds.tunnel_id
                ),
            });
        }
        tunnels.push(EdgeTunnel {
            account_tag: creds.account_tag,
            tunnel_id: t.id,
            secret: creds.tunnel_secret,
            hostnames: t.hostnames.clone(),
        });
    }
    Ok((file, tunnels))
}

/// Applies `edge.yml` to options (command-line values applied afterwards win).
pub(crate) fn apply_file(opts: &mut EdgeOptions, file: &EdgeFile, tunnels: Vec<EdgeTunnel>) {
    if !file.tunnel_listen.is_empty() {
        opts.tunnel_listen = file.tunnel_listen.clone();
    }
    if let Some(addr) = file.eyeball_listen {
        opts.eyeball_listen = addr;
    }
    if let Some(addr) = file.eyeball_tls_listen {
        opts.eyeball_tls_listen = Some(addr);
    }
    if !file.eyeball_tls_hostnames.is_empty() {
        opts.eyeball_tls_hostnames = file.eyeball_tls_hostnames.clone();
    }
    if let Some(loc) = &file.location {
        opts.location = loc.clone();
    }
    if let Some(n) = file.max_eyeball_connections {
        opts.max_eyeball_connections = n;
    }
    opts.tunnels = tunnels;
}

/// What `ringflare edge init` created.
#[derive(Debug, Clone)]
pub struct InitOutcome {
    /// The state directory.
    pub state_dir: PathBuf,
    /// `ca.pem`.
    pub ca_pem: PathBuf,
    /// The new tunnel's credentials.
    pub credentials: Credentials,
    /// Its credentials file.
    pub credentials_file: PathBuf,
    /// `edge.yml`.
    pub config_file: PathBuf,
    /// The tunnel token (contains the secret: print, never log).
    pub token: String,
}

/// Creates the state directory and CA, a new tunnel with credentials, and adds it to
/// `edge.yml` (created with defaults when missing).
pub fn init_state_dir(
    state_dir: &Path,
    hostnames: Vec<String>,
) -> Result<InitOutcome, EdgeConfigError> {
    fs::create_dir_all(state_dir).map_err(|source| EdgeConfigError::Io {
        op: "creating",
        path: state_dir.to_owned(),
        source,
    })?;
    let ca = crate::tls::EdgeCa::load_or_create(state_dir)?;
    let tunnel_id = Uuid::new_v4();
    let account: String = Uuid::new_v4().simple().to_string();
    let mut secret = Vec::with_capacity(32);
    secret.extend_from_slice(Uuid::new_v4().as_bytes());
    secret.extend_from_slice(Uuid::new_v4().as_bytes());
    let credentials = Credentials {
        account_tag: account,
        tunnel_secret: Secret::new(secret),
        tunnel_id,
        endpoint: String::new(),
    };
    let cred_name = format!("{tunnel_id}.json");
    let credentials_file = state_dir.join(&cred_name);
    write_new(
        &credentials_file,
        encode_credentials_file(&credentials).as_bytes(),
        0o400,
    )?;

    let config_file = state_dir.join(DEFAULT_CONFIG_NAME);
    let mut file = if config_file.exists() {
        let text = fs::read_to_string(&config_file).map_err(|source| EdgeConfigError::Io {
            op: "reading",
            path: config_file.clone(),
            source,
        })?;
        serde_saphyr::from_str::<EdgeFile>(&text).map_err(|e| EdgeConfigError::Invalid {
            path: config_file.clone(),
            reason: e.to_string(),
        })?
    } else {
        EdgeFile {
            tunnel_listen: vec![SocketAddr::from(([127, 0, 0, 1], 7844))],
            eyeball_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            eyeball_tls_listen: None,
            eyeball_tls_hostnames: Vec::new(),
            location: Some("rfl01".into()),
            max_eyeball_connections: None,
            tunnels: Vec::new(),
        }
    };
    let hostnames = if hostnames.is_empty() {
        // The first tunnel takes every host; later ones need explicit names.
        if file
            .tunnels
            .iter()
            .any(|t| t.hostnames.iter().any(|h| h == "*"))
        {
            vec![format!("{tunnel_id}.localhost")]
        } else {
            vec!["*".to_owned()]
        }
    } else {
        hostnames
    };
    file.tunnels.push(EdgeFileTunnel {
        id: tunnel_id,
        credentials_file: PathBuf::from(cred_name),
        hostnames,
    });
    let yaml = render_edge_file(&file);
    let tmp = config_file.with_extension("yml.tmp");
    write_new(&tmp, yaml.as_bytes(), 0o644)?;
    fs::rename(&tmp, &config_file).map_err(|source| EdgeConfigError::Io {
        op: "renaming into place",
        path: config_file.clone(),
        source,
    })?;
    Ok(InitOutcome {
        state_dir: state_dir.to_owned(),
        ca_pem: ca.ca_pem_path().to_owned(),
        token: encode_token(&credentials),
        credentials,
        credentials_file,
        config_file,
    })
}

/// Renders `edge.yml` with comments (no secrets in it).
fn render_edge_file(file: &EdgeFile) -> String {
    let mut out = String::from(
        "# ringflare edge configuration (see `ringflare edge --help`).\n\
         # Connectors: one connection per tunnel-listen address they are given with --edge.\n",
    );
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!("tunnel-listen: [{}]\n", list(&file.tunnel_listen)));
    if let Some(e) = file.eyeball_listen {
        out.push_str(&format!("eyeball-listen: {e}\n"));
    }
    match file.eyeball_tls_listen {
        Some(e) => out.push_str(&format!("eyeball-tls-listen: {e}\n")),
        None => {
            out.push_str("# eyeball-tls-listen: 127.0.0.1:8443   # optional HTTPS for visitors\n")
        }
    }
    if !file.eyeball_tls_hostnames.is_empty() {
        let names: Vec<String> = file
            .eyeball_tls_hostnames
            .iter()
            .map(|h| yaml_quote(h))
            .collect();
        out.push_str(&format!("eyeball-tls-hostnames: [{}]\n", names.join(", ")));
    }
    if let Some(l) = &file.location {
        out.push_str(&format!("location: {l}\n"));
    }
    if let Some(n) = file.max_eyeball_connections {
        out.push_str(&format!("max-eyeball-connections: {n}\n"));
    }
    out.push_str("tunnels:\n");
    for t in &file.tunnels {
        out.push_str(&format!("  - id: {}\n", t.id));
        out.push_str(&format!(
            "    credentials-file: {}\n",
            yaml_quote(&t.credentials_file.display().to_string())
        ));
        let names: Vec<String> = t.hostnames.iter().map(|h| yaml_quote(h)).collect();
        out.push_str(&format!("    hostnames: [{}]\n", names.join(", ")));
    }
    out
}

/// A double-quoted YAML scalar.
fn yaml_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Creates a file that must not exist yet, with `mode`.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), EdgeConfigError> {
    let io_err = |op, source| EdgeConfigError::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_err("creating", e))?;
    f.write_all(contents).map_err(|e| io_err("writing", e))?;
    f.sync_all().map_err(|e| io_err("syncing", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("edge");
        let first = init_state_dir(&state, Vec::new()).unwrap();
        let second = init_state_dir(&state, vec!["app.example.com".into()]).unwrap();
        let (file, tunnels) = load_edge_file(&first.config_file, &state).unwrap();
        assert_eq!(file.tunnel_listen, vec!["127.0.0.1:7844".parse().unwrap()]);
        assert_eq!(tunnels.len(), 2);
        assert_eq!(tunnels[0].tunnel_id, first.credentials.tunnel_id);
        assert_eq!(tunnels[0].hostnames, vec!["*".to_owned()]);
        assert_eq!(tunnels[1].hostnames, vec!["app.example.com".to_owned()]);
        assert_eq!(tunnels[1].secret, second.credentials.tunnel_secret);
        let mode = fs::metadata(&first.credentials_file).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o400);
        let token = crate::config::credentials::parse_token(&first.token).unwrap();
        assert_eq!(token, first.credentials);
    }

    #[test]
    fn mismatched_credentials_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = init_state_dir(dir.path(), Vec::new()).unwrap();
        let other = Uuid::new_v4();
        let text = fs::read_to_string(&out.config_file)
            .unwrap()
            .replace(
                out.credentials.tunnel_id.to_string().as_str(),
                &other.to_string(),
            )
            .replace(
                &format!("{other}.json"),
                &format!("{}.json", out.credentials.tunnel_id),
            );
        fs::write(&out.config_file, text).unwrap();
        let err = load_edge_file(&out.config_file, dir.path()).unwrap_err();
        assert!(err.to_string().contains("is for tunnel"), "{err}");
    }
}
