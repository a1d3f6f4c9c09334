//! `service install` / `service uninstall`: writes and removes the systemd unit the way
//! cloudflared 2026.8.2 does (same paths, same `ExecStart`, the token in
//! `/etc/cloudflared/token` passed with `--token-file`), plus `ExecReload` (SIGHUP reloads the
//! config) — readiness comes through `Type=notify` as in cloudflared's unit.
//!
//! Differences, on purpose: no `cloudflared-update.{service,timer}` (ringflare never replaces
//! its own binary), and only systemd (no SysV or OpenRC scripts).
//!
//! `RINGFLARE_SERVICE_ROOT` moves every path under another root and skips `systemctl`, so tests
//! install into a temporary directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::credentials::parse_token;

/// Environment variable naming an install root used instead of `/` (tests).
pub const ROOT_ENV: &str = "RINGFLARE_SERVICE_ROOT";
pub const CONFIG_DIR: &str = "/etc/cloudflared";
pub const CONFIG_PATH: &str = "/etc/cloudflared/config.yml";
pub const TOKEN_PATH: &str = "/etc/cloudflared/token";
pub const UNIT_PATH: &str = "/etc/systemd/system/cloudflared.service";
const UNIT_NAME: &str = "cloudflared.service";

/// Where files go: `/`, or the test root with `systemctl` left alone.
pub struct Installer {
    root: Option<PathBuf>,
    /// The binary the unit runs (the running executable).
    exe: PathBuf,
}

/// The unit cloudflared writes, with `ExecReload` added.
pub fn unit_text(exe: &Path, extra_args: &[String]) -> String {
    let mut exec = format!("{} --no-autoupdate", exe.display());
    for arg in extra_args {
        exec.push(' ');
        exec.push_str(arg);
    }
    format!(
        "[Unit]
Description=Cloudflare Tunnel client
After=network-online.target
Wants=network-online.target

[Service]
TimeoutStartSec=15
Type=notify
ExecStart={exec}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s

[Install]
WantedBy=multi-user.target
"
    )
}

impl Installer {
    pub fn new(root: Option<PathBuf>, exe: PathBuf) -> Installer {
        Installer { root, exe }
    }

    /// A path of the real system, moved under the test root if there is one.
    pub fn path(&self, abs: &str) -> PathBuf {
        match &self.root {
            Some(root) => root.join(abs.trim_start_matches('/')),
            None => PathBuf::from(abs),
        }
    }

    /// `service install [TOKEN]`. Without a token the config file must name the tunnel and its
    /// credentials file; it is copied to /etc/cloudflared/config.yml as cloudflared does.
    /// Returns the lines to log.
    pub fn install(
        &self,
        token: Option<&str>,
        config: Option<(&Path, bool, bool)>,
    ) -> Result<Vec<String>, String> {
        let dir = self.path(CONFIG_DIR);
        fs::create_dir_all(&dir).map_err(|e| format!("create config dir at {CONFIG_DIR}: {e}"))?;
        let args: Vec<String> = match token {
            Some(token) => {
                parse_token(token.trim())
                    .map_err(|e| format!("Provided tunnel token is not valid ({e})."))?;
                self.write_token(token)?;
                ["tunnel", "run", "--token-file", TOKEN_PATH]
                    .map(str::to_owned)
                    .to_vec()
            }
            None => self.config_args(config)?,
        };
        let unit = self.path(UNIT_PATH);
        if let Some(parent) = unit.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        fs::write(&unit, unit_text(&self.exe, &args))
            .map_err(|e| format!("write {UNIT_PATH}: {e}"))?;
        let mut lines = vec!["Using Systemd".to_owned()];
        for cmd in [
            &["enable", UNIT_NAME][..],
            &["daemon-reload"],
            &["start", UNIT_NAME],
        ] {
            self.systemctl(cmd)?;
        }
        lines.push("Linux service for cloudflared installed successfully".into());
        Ok(lines)
    }

    /// `service uninstall`: stops and removes the unit and the token file.
    pub fn uninstall(&self) -> Result<Vec<String>, String> {
        let mut lines = vec!["Using Systemd".to_owned()];
        let unit = self.path(UNIT_PATH);
        if unit.exists() {
            self.systemctl(&["disable", UNIT_NAME])?;
            self.systemctl(&["stop", UNIT_NAME])?;
            fs::remove_file(&unit).map_err(|e| format!("remove {UNIT_PATH}: {e}"))?;
            self.systemctl(&["daemon-reload"])?;
        } else {
            lines.push(format!(
                "Service '{UNIT_NAME}' not installed, skipping its uninstall"
            ));
        }
        match fs::remove_file(self.path(TOKEN_PATH)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => lines.push(format!(
                "Could not remove service token file at {TOKEN_PATH}: {e}"
            )),
        }
        lines.push("Linux service for cloudflared uninstalled successfully".into());
        Ok(lines)
    }

    /// The token file is created 0600 before the token is written into it.
    fn write_token(&self, token: &str) -> Result<(), String> {
        let path = self.path(TOKEN_PATH);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("create token file at {TOKEN_PATH}: {e}"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod token file at {TOKEN_PATH}: {e}"))?;
        file.write_all(token.as_bytes())
            .map_err(|e| format!("write token to {TOKEN_PATH}: {e}"))
    }

    /// `(source, names a tunnel, names a credentials file)` of the config file found.
    fn config_args(&self, config: Option<(&Path, bool, bool)>) -> Result<Vec<String>, String> {
        let Some((source, has_tunnel, has_creds)) = config else {
            return Err("Cannot determine default configuration path. No file [config.yml config.yaml] in [~/.cloudflared ~/.cloudflare-warp ~/cloudflare-warp /etc/cloudflared /usr/local/etc/cloudflared]".into());
        };
        if !has_tunnel || !has_creds {
            return Err(format!(
                "configuration file {} must contain entries for the tunnel to run and its associated credentials (tunnel: TUNNEL-UUID, credentials-file: CREDENTIALS-FILE)",
                source.display()
            ));
        }
        let target = self.path(CONFIG_PATH);
        if source != target {
            if target.exists() {
                return Err(format!(
                    "possible conflicting configuration in {0} and {CONFIG_PATH}. Either remove {CONFIG_PATH} or run `cloudflared --config {CONFIG_PATH} service install`",
                    source.display()
                ));
            }
            fs::copy(source, &target).map_err(|e| {
                format!("failed to copy {} to {CONFIG_PATH}: {e}", source.display())
            })?;
        }
        Ok(["--config", CONFIG_PATH, "tunnel", "run"]
            .map(str::to_owned)
            .to_vec())
    }

    fn systemctl(&self, args: &[&str]) -> Result<(), String> {
        if self.root.is_some() {
            return Ok(());
        }
        let status = Command::new("systemctl")
            .args(args)
            .status()
            .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("systemctl {} error: {status}", args.join(" ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_the_binary_with_no_autoupdate_first() {
        let text = unit_text(
            Path::new("/usr/bin/ringflare"),
            &["tunnel".into(), "run".into()],
        );
        assert!(text.contains("\nExecStart=/usr/bin/ringflare --no-autoupdate tunnel run\n"));
        assert!(text.contains("\nType=notify\n"));
        assert!(text.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    }
}
