//! Turning the text of `config.yml` into a [`ConfigFile`], and where cloudflared looks for it.
//!
//! Pure: the caller reads the file (see `control::loader`) and passes the text and the path,
//! which labels every message. Errors carry the file and line.

use std::path::{Path, PathBuf};

use super::raw::{FromNode, RawConfig, UnknownKey};
use super::yaml::{Decoder, first_document};

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

/// A YAML error, shown as cloudflared shows it: a syntax error (`yaml: line N: ...`) or every
/// type error of the file (`yaml: unmarshal errors:` and one `line N: ...` line each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error parsing YAML in config file at {path}: {message}")]
pub struct ConfigError {
    pub path: String,
    /// 1-based line of the first error, 0 when unknown.
    pub line: u64,
    pub message: String,
}

/// Parses config text as cloudflared (yaml.v3) does. `path` labels errors and becomes
/// [`ConfigFile::source`]. Only the first document counts; a file without any document is
/// [`ConfigFile::empty`].
pub fn parse_config(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
    let fail = |message: String| ConfigError {
        path: path.display().to_string(),
        line: first_line_number(&message),
        message,
    };
    let Some(root) = first_document(text).map_err(fail)? else {
        return Ok(ConfigFile {
            source: path.to_owned(),
            raw: RawConfig::default(),
            empty: true,
        });
    };
    let mut decoder = Decoder::default();
    let raw = RawConfig::from_node(&root, &mut decoder);
    if !decoder.errors.is_empty() {
        return Err(fail(format!(
            "yaml: unmarshal errors:\n  {}",
            decoder.errors.join("\n  ")
        )));
    }
    Ok(ConfigFile {
        source: path.to_owned(),
        raw: raw.unwrap_or_default(),
        empty: false,
    })
}

/// The first `line N` a yaml.v3 message names.
fn first_line_number(message: &str) -> u64 {
    message
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
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
        assert_eq!(rules[0].hostname.as_ref().unwrap().line, 12);
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
                "error parsing YAML in config file at /etc/cloudflared/config.yml: yaml: line "
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
        let file = parse("# nothing here\n\n").unwrap();
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
