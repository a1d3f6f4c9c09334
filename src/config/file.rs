//! Turning the text of `config.yml` into a [`ConfigFile`], and where cloudflared looks for it.
//!
//! Pure: the caller reads the file (see `control::loader`) and passes the text and the path,
//! which labels every message. Errors carry the file and line.

use std::path::{Path, PathBuf};

use super::raw::{RawConfig, UnknownKey};

/// File names tried in each search directory, in order.
pub const DEFAULT_CONFIG_FILES: [&str; 2] = ["config.yml", "config.yaml"];

/// Directories searched for a config file when `--config` is not given, in cloudflared's order.
/// `home` expands the `~` entries; without a home directory they are skipped.
pub fn default_search_dirs(home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = home {
        for dir in [".cloudflared", ".cloudflare-warp", "cloudflare-warp"] {
            dirs.push(home.join(dir));
        }
    }
    dirs.push(PathBuf::from("/etc/cloudflared"));
    dirs.push(PathBuf::from("/usr/local/etc/cloudflared"));
    dirs
}

/// Every candidate path, in the order they are tried.
pub fn default_config_candidates(home: Option<&Path>) -> Vec<PathBuf> {
    default_search_dirs(home)
        .into_iter()
        .flat_map(|dir| DEFAULT_CONFIG_FILES.map(|name| dir.join(name)))
        .collect()
}

/// A parsed configuration file.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// Where it came from, as the user named it (printed in `Validating rules from ...`).
    pub source: PathBuf,
    pub raw: RawConfig,
    /// True when the file held no YAML document at all (cloudflared logs an error and goes on).
    pub empty: bool,
}

/// A YAML error with its location, shown as cloudflared shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error parsing YAML in config file at {path}: {location}{message}")]
pub struct ConfigError {
    pub path: String,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    pub column: u64,
    /// `line N, column M: ` or empty.
    location: String,
    pub message: String,
}

/// Parses config text. `path` labels errors and becomes [`ConfigFile::source`].
pub fn parse_config(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
    if is_empty_document(text) {
        return Ok(ConfigFile {
            source: path.to_owned(),
            raw: RawConfig::default(),
            empty: true,
        });
    }
    let raw: RawConfig = serde_saphyr::from_str_with_options(text, parse_options())
        .map_err(|e| yaml_error(&e, path))?;
    Ok(ConfigFile {
        source: path.to_owned(),
        raw,
        empty: false,
    })
}

/// The parser's default budget (250k nodes) caps a config at ~80k rules; a config file is the
/// operator's own input, so allow far more while keeping depth and alias limits.
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 20_000_000;
    budget.max_events = 80_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

fn yaml_error(e: &serde_saphyr::Error, path: &Path) -> ConfigError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let location = if line > 0 {
        format!("line {line}, column {column}: ")
    } else {
        String::new()
    };
    let message = e.without_snippet().to_string();
    let message = strip_location_suffix(&message).trim().to_owned();
    ConfigError {
        path: path.display().to_string(),
        line,
        column,
        location,
        message,
    }
}

/// serde-saphyr appends ` at line N, column M`; the location is already in front.
fn strip_location_suffix(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(idx) => &message[..idx],
        None => message,
    }
}

/// True when the text holds only blank lines, comments and document markers.
fn is_empty_document(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

/// cloudflared's (yaml.v3's) text for unknown keys, printed after
/// `Warning: unused keys detected in your config file. Here is a list of unused keys:`.
pub fn unknown_keys_warning(keys: &[UnknownKey]) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let mut text = String::from("yaml: unmarshal errors:");
    for key in keys {
        text.push_str(&format!(
            "\n  line {}: field {} not found in type {}",
            key.line, key.key, key.go_type
        ));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        parse_config(text, Path::new("/etc/cloudflared/config.yml"))
    }

    #[test]
    fn reads_every_section() {
        let file = parse(
            "tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef\n\
             credentials-file: /root/.cloudflared/6ff42ae2.json\n\
             protocol: http2\n\
             edge: [127.0.0.1:7844, 127.0.0.2:7844]\n\
             originRequest:\n  connectTimeout: 10s\n  noTLSVerify: true\n\
             warp-routing:\n  connectTimeout: 2s\n  maxActiveFlows: 10\n\
             ingress:\n  - hostname: a.example.com\n    path: ^/api\n    service: http://localhost:8000\n\
             \x20   originRequest:\n      httpHostHeader: internal\n      access:\n        required: true\n        teamName: t\n        audTag: [x]\n\
             \x20 - service: http_status:404\n",
        )
        .unwrap();
        let raw = &file.raw;
        assert_eq!(
            raw.tunnel.as_ref().unwrap().value,
            "6ff42ae2-765d-4adf-8112-31c55c1551ef"
        );
        assert_eq!(raw.settings["protocol"].value, "http2");
        assert_eq!(raw.settings["credentials-file"].line, 2);
        assert_eq!(raw.settings["edge"].value.as_array().unwrap().len(), 2);
        let global = raw.origin_request.as_ref().unwrap();
        assert_eq!(global.connect_timeout.unwrap().0.as_secs(), 10);
        assert_eq!(global.no_tls_verify, Some(true));
        let wr = raw.warp_routing.as_ref().unwrap();
        assert_eq!(wr.max_active_flows, Some(10));
        let rules = raw.ingress.as_ref().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].hostname.as_ref().unwrap().referenced.line(), 12);
        let access = rules[0]
            .origin_request
            .as_ref()
            .unwrap()
            .access
            .as_ref()
            .unwrap();
        assert_eq!(access.aud_tag.as_deref(), Some(&["x".to_owned()][..]));
        assert!(raw.unknown_keys().is_empty());
    }

    #[test]
    fn unknown_nested_keys_become_a_yaml_v3_style_warning() {
        let file = parse(
            "ingress:\n  - hostname: a.com\n    servce: http://x\n    service: http://y\n\
             \x20   originRequest:\n      noTlsVerify: true\n  - service: http_status:404\n\
             foo: bar\n",
        )
        .unwrap();
        let warning = unknown_keys_warning(&file.raw.unknown_keys()).unwrap();
        assert_eq!(
            warning,
            "yaml: unmarshal errors:\n  line 3: field servce not found in type config.UnvalidatedIngressRule\n  line 6: field noTlsVerify not found in type config.OriginRequestConfig"
        );
    }

    #[test]
    fn yaml_errors_carry_file_and_line() {
        let err = parse("ingress:\n  - service: http://x\n   bad: [\n").unwrap_err();
        assert_eq!(err.path, "/etc/cloudflared/config.yml");
        assert!(err.line >= 2, "{err}");
        assert!(
            err.to_string().starts_with(
                "error parsing YAML in config file at /etc/cloudflared/config.yml: line "
            ),
            "{err}"
        );
    }

    #[test]
    fn bare_integer_duration_is_an_error_with_its_line() {
        let err = parse("originRequest:\n  connectTimeout: 30\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(
            err.message
                .contains("cannot unmarshal !!int `30` into time.Duration"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("tunnel: a\ntunnel: b\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }

    #[test]
    fn empty_file_is_empty_not_an_error() {
        let file = parse("# nothing here\n\n---\n").unwrap();
        assert!(file.empty);
        assert!(file.raw.ingress.is_none());
    }

    #[test]
    fn search_order_matches_cloudflared() {
        let c = default_config_candidates(Some(Path::new("/home/u")));
        assert_eq!(c[0], Path::new("/home/u/.cloudflared/config.yml"));
        assert_eq!(c[1], Path::new("/home/u/.cloudflared/config.yaml"));
        assert_eq!(c[2], Path::new("/home/u/.cloudflare-warp/config.yml"));
        assert_eq!(
            c.last().unwrap(),
            Path::new("/usr/local/etc/cloudflared/config.yaml")
        );
        assert_eq!(c.len(), 10);
    }
}
