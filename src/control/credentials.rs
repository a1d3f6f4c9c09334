//! Which credentials `tunnel run` uses, found in cloudflared's order (spec §6):
//! token (`--token` / `TUNNEL_TOKEN`, then `--token-file` / `TUNNEL_TOKEN_FILE`), then
//! `--credentials-contents`, `--credentials-file` (or `credentials-file:`), then
//! `<TUNNEL-ID>.json` beside the origin cert and in the default config directories.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::loader::{expand_home, go_io_reason, home_dir};
use crate::cli::settings::Settings;
use crate::config::credentials::{
    Credentials, CredentialsError, parse_credentials_file, parse_token,
};
use crate::config::file::default_search_dirs;

/// Why no usable credentials were found.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(transparent)]
    Invalid(#[from] CredentialsError),
    #[error("Tunnel credentials file '{0}' doesn't exist or is not a file")]
    MissingFile(String),
    #[error("failed to read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("tunnel credentials file not found")]
    NotFound,
    #[error(
        "\"cloudflared tunnel run\" requires the ID or name of the tunnel to run as the last command line argument or in the configuration file."
    )]
    NoTunnel,
    #[error("{0} is a tunnel name; running a tunnel by name needs --credentials-file or a token")]
    NameNeedsCredentials(String),
}

/// Resolves credentials for `tunnel run [TUNNEL]`. `tunnel` is the run argument or `tunnel:`.
pub fn find_credentials(
    settings: &Settings,
    tunnel: Option<&str>,
) -> Result<Credentials, FindError> {
    if let Some(token) = settings.opt_string("token").filter(|t| !t.is_empty()) {
        return Ok(parse_token(&token)?);
    }
    if let Some(path) = settings.opt_string("token-file").filter(|t| !t.is_empty()) {
        let text = read(&expand_home(&path))?;
        return Ok(parse_token(&text)?);
    }
    let tunnel_id = tunnel.map(|t| (t, Uuid::parse_str(t).ok()));
    let mut creds = if let Some(json) = settings.opt_string("credentials-contents") {
        parse_credentials_file(&json, "--credentials-contents")?
    } else if let Some(path) = settings.opt_string("credentials-file") {
        let path = expand_home(&path);
        if !path.is_file() {
            return Err(FindError::MissingFile(path.display().to_string()));
        }
        parse_credentials_file(&read(&path)?, &path.display().to_string())?
    } else {
        let (name, id) = tunnel_id.ok_or(FindError::NoTunnel)?;
        let id = id.ok_or_else(|| FindError::NameNeedsCredentials(name.to_owned()))?;
        let path = search_credentials(settings, id).ok_or(FindError::NotFound)?;
        parse_credentials_file(&read(&path)?, &path.display().to_string())?
    };
    // The ID given on the command line or in `tunnel:` wins over the file's.
    if let Some((_, Some(id))) = tunnel_id {
        creds.tunnel_id = id;
    }
    Ok(creds)
}

/// `<id>.json` beside the origin cert, then in the default config directories.
fn search_credentials(settings: &Settings, id: Uuid) -> Option<PathBuf> {
    let name = format!("{id}.json");
    let mut dirs = Vec::new();
    if let Some(cert) = settings.opt_string("origincert")
        && let Some(dir) = expand_home(&cert).parent()
    {
        dirs.push(dir.to_path_buf());
    }
    dirs.extend(default_search_dirs(home_dir().as_deref()));
    dirs.into_iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
}

fn read(path: &Path) -> Result<String, FindError> {
    std::fs::read_to_string(path).map_err(|e| FindError::Read {
        path: path.display().to_string(),
        reason: go_io_reason(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::parse_tunnel_args;
    use crate::config::credentials::{encode_credentials_file, encode_token};
    use crate::config::secret::Secret;
    use std::collections::HashMap;

    const ID: &str = "6ff42ae2-765d-4adf-8112-31c55c1551ef";

    fn creds(tag: &str) -> Credentials {
        Credentials {
            account_tag: tag.into(),
            tunnel_secret: Secret::new(vec![7; 32]),
            tunnel_id: Uuid::parse_str(ID).unwrap(),
            endpoint: String::new(),
        }
    }

    fn settings(args: &[&str], env: &[(&str, &str)]) -> Settings {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let inv = parse_tunnel_args(&argv).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::new(&inv, env)
    }

    #[test]
    fn token_flag_env_and_file() {
        let token = encode_token(&creds("flag"));
        assert_eq!(
            find_credentials(&settings(&["run", "--token", &token], &[]), None).unwrap(),
            creds("flag")
        );
        let env_token = encode_token(&creds("env"));
        let s = settings(&["run"], &[("TUNNEL_TOKEN", env_token.as_str())]);
        assert_eq!(find_credentials(&s, None).unwrap(), creds("env"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("\n {}\n", encode_token(&creds("file")))).unwrap();
        let s = settings(&["run", "--token-file", file.to_str().unwrap()], &[]);
        assert_eq!(find_credentials(&s, None).unwrap(), creds("file"));
        // The token wins over a credentials file.
        let s = settings(
            &[
                "run",
                "--token",
                &token,
                "--credentials-file",
                "/nonexistent",
            ],
            &[],
        );
        assert_eq!(find_credentials(&s, None).unwrap(), creds("flag"));
    }

    #[test]
    fn credentials_file_and_tunnel_id_override() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.json");
        let mut other = creds("f");
        other.tunnel_id = Uuid::nil();
        std::fs::write(&file, encode_credentials_file(&other)).unwrap();
        let s = settings(&["run", "--credentials-file", file.to_str().unwrap()], &[]);
        let found = find_credentials(&s, Some(ID)).unwrap();
        assert_eq!(
            found.tunnel_id.to_string(),
            ID,
            "the run argument's ID wins"
        );
    }

    #[test]
    fn errors_are_clear() {
        let s = settings(&["run", "--credentials-file", "/nonexistent/c.json"], &[]);
        assert_eq!(
            find_credentials(&s, Some(ID)).unwrap_err().to_string(),
            "Tunnel credentials file '/nonexistent/c.json' doesn't exist or is not a file"
        );
        let s = settings(&["run", "--token", "garbage"], &[]);
        assert_eq!(
            find_credentials(&s, None).unwrap_err().to_string(),
            "Provided Tunnel token is not valid."
        );
        assert!(matches!(
            find_credentials(&settings(&["run"], &[]), None),
            Err(FindError::NoTunnel)
        ));
    }
}
