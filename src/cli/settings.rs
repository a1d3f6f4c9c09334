//! Flag values resolved the way cloudflared resolves them: command line, then environment,
//! then the config file's top-level keys (altsrc), then the default.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::args::{Invocation, parse_go_bool};
use super::flags::{self, Flag, Kind};
use crate::config::duration::parse_go_duration;
use crate::config::raw::Setting;
use crate::config::secret::MASK;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cli,
    Env,
    ConfigFile,
    Default,
}

/// A flag value that could not be used, naming the flag and where the value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for flag --{flag} (from {source_name}): {reason}")]
pub struct SettingError {
    pub flag: String,
    pub value: String,
    pub source_name: String,
    pub reason: String,
}

/// Resolved flag values for one invocation.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    cli: HashMap<&'static str, Vec<String>>,
    env: HashMap<String, String>,
    file: BTreeMap<String, Setting>,
    file_path: String,
}

impl Settings {
    /// `env` is a snapshot of the process environment (tests pass their own).
    pub fn new(inv: &Invocation, env: HashMap<String, String>) -> Settings {
        Settings {
            cli: inv.cli.clone(),
            env,
            file: BTreeMap::new(),
            file_path: String::new(),
        }
    }

    /// Adds the config file's top-level settings as the layer below env.
    pub fn with_file(mut self, settings: &BTreeMap<String, Setting>, path: &str) -> Settings {
        self.file = settings.clone();
        self.file_path = path.to_owned();
        self
    }

    /// Top-level config keys that are no flag at all: cloudflared ignores them silently;
    /// ringflare warns, since they are usually typos.
    pub fn unknown_file_keys(&self) -> Vec<(String, u64)> {
        self.file
            .iter()
            .filter(|(k, _)| flags::find(k).is_none())
            .map(|(k, s)| (k.clone(), s.line))
            .collect()
    }

    /// cloudflared's typed reads of flag values from the config file (its `configFileSettings`
    /// String/Int/Bool/Duration/StringSlice): a key whose YAML type does not fit its flag fails
    /// the command with `expected string found int for url`, unless the command line or the
    /// environment sets that flag. The first such flag, in flag order, is reported.
    pub fn check_file_types(&self) -> Result<(), String> {
        for flag in flags::FLAGS {
            let Some(setting) = self.file.get(flag.name) else {
                continue;
            };
            let overridden = self.cli.contains_key(flag.name)
                || flag.env.iter().any(|v| self.env.contains_key(*v));
            if overridden {
                continue;
            }
            file_type_error(flag, &setting.value)?;
        }
        Ok(())
    }

    /// The raw values and their source, or `None` when only the default applies.
    pub fn lookup(&self, name: &str) -> Option<(Vec<String>, Source)> {
        let flag = flags::find(name)?;
        if let Some(v) = self.cli.get(flag.name) {
            return Some((v.clone(), Source::Cli));
        }
        for var in flag.env {
            if let Some(v) = self.env.get(*var) {
                let values = match flag.kind {
                    Kind::List => v.split(',').map(|s| s.trim().to_owned()).collect(),
                    _ => vec![v.clone()],
                };
                return Some((values, Source::Env));
            }
        }
        let setting = self.file.get(flag.name)?;
        Some((yaml_values(&setting.value), Source::ConfigFile))
    }

    /// `c.IsSet(name)`: given on the command line, in the environment or in the config file.
    pub fn is_set(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    pub fn string(&self, name: &str) -> String {
        match self.lookup(name) {
            Some((v, _)) => v.into_iter().next_back().unwrap_or_default(),
            None => flags::find(name)
                .map(|f| f.default.to_owned())
                .unwrap_or_default(),
        }
    }

    /// A string only when explicitly set.
    pub fn opt_string(&self, name: &str) -> Option<String> {
        self.lookup(name)
            .and_then(|(v, _)| v.into_iter().next_back())
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        self.lookup(name).map(|(v, _)| v).unwrap_or_default()
    }

    pub fn bool(&self, name: &str) -> Result<bool, SettingError> {
        let text = self.string(name);
        if text.is_empty() {
            return Ok(false);
        }
        parse_go_bool(&text).ok_or_else(|| self.error(name, &text, "expected a boolean".into()))
    }

    pub fn int(&self, name: &str) -> Result<i64, SettingError> {
        let text = self.string(name);
        text.parse()
            .map_err(|_| self.error(name, &text, "expected an integer".into()))
    }

    pub fn duration(&self, name: &str) -> Result<Duration, SettingError> {
        if let Some(setting) = self
            .file
            .get(name)
            .filter(|s| s.value.is_number() && self.source(name) == Source::ConfigFile)
        {
            let v = setting.value.to_string();
            let reason = format!("expected duration found int for {name}");
            return Err(self.error(name, &v, reason));
        }
        let text = self.string(name);
        parse_go_duration(&text).map_err(|e| self.error(name, &text, e.to_string()))
    }

    pub fn source(&self, name: &str) -> Source {
        self.lookup(name).map(|(_, s)| s).unwrap_or(Source::Default)
    }

    fn error(&self, name: &str, value: &str, reason: String) -> SettingError {
        let flag = flags::find(name);
        let source_name = match self.source(name) {
            Source::Cli => "the command line".to_owned(),
            Source::Env => flag
                .and_then(|f| f.env.iter().find(|v| self.env.contains_key(**v)))
                .map(|v| format!("environment variable {v}"))
                .unwrap_or_else(|| "the environment".into()),
            Source::ConfigFile => {
                let line = self.file.get(name).map(|s| s.line).unwrap_or(0);
                format!("{}:{line}", self.file_path)
            }
            Source::Default => "the default".into(),
        };
        let shown = if flag.is_some_and(|f| f.secret) {
            MASK
        } else {
            value
        };
        SettingError {
            flag: name.to_owned(),
            value: shown.to_owned(),
            source_name,
            reason,
        }
    }

    /// The set flags cloudflared's `/diag/configuration` reports: only those on its list of
    /// non-secret flags, log paths made absolute.
    pub fn diag_flags(&self) -> BTreeMap<String, String> {
        flags::DIAG_FLAGS
            .iter()
            .filter_map(|name| {
                let value = self.opt_string(name).filter(|v| !v.is_empty())?;
                let is_list = flags::find(name).is_some_and(|f| f.kind == flags::Kind::List);
                let value = if is_list {
                    // urfave/cli's `String()` of a slice flag: Go's `%s` of the slice.
                    format!("[{}]", self.strings(name).join(" "))
                } else if matches!(*name, "logfile" | "log-directory") {
                    std::path::absolute(&value)
                        .map(|p| p.display().to_string())
                        .unwrap_or(value)
                } else {
                    value
                };
                Some(((*name).to_owned(), value))
            })
            .collect()
    }

    /// cloudflared's `Settings: map[...]` text: explicitly set flags, secrets masked.
    pub fn settings_line(&self) -> String {
        let mut entries: Vec<(&str, String)> = flags::FLAGS
            .iter()
            .filter_map(|f: &Flag| {
                let (values, source) = self.lookup(f.name)?;
                (source != Source::Default).then_some(())?;
                let shown = if f.secret {
                    MASK.to_owned()
                } else if f.kind == Kind::List {
                    format!("[{}]", values.join(" "))
                } else {
                    values.last().cloned().unwrap_or_default()
                };
                Some((f.name, shown))
            })
            .collect();
        entries.sort();
        let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("map[{}]", body.join(" "))
    }
}

/// Go's `%T` of the value yaml.v3 put in an `interface{}`.
fn go_type_name(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() => "int",
        Value::Number(n) if n.is_u64() => "uint64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn file_type_error(flag: &Flag, value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    let name = flag.name;
    let found = go_type_name(value);
    let fits = match flag.kind {
        Kind::String => value.is_string(),
        Kind::Int => found == "int",
        Kind::Bool => value.is_boolean(),
        Kind::Duration => match value {
            Value::String(text) => {
                return parse_go_duration(text)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            }
            _ => false,
        },
        Kind::List => {
            let Value::Array(items) = value else {
                return Err(format!("expected string slice found {found} for {name}"));
            };
            if let Some(bad) = items.iter().find(|v| !v.is_string()) {
                // cloudflared names the index's type here, which is always int.
                let shown = match bad {
                    Value::Null => "<nil>".to_owned(),
                    other => other.to_string(),
                };
                return Err(format!("expected string, found int for {shown}"));
            }
            true
        }
    };
    if fits {
        return Ok(());
    }
    let expected = match flag.kind {
        Kind::String => "string",
        Kind::Int => "int",
        Kind::Bool => "boolean",
        Kind::Duration => "duration",
        Kind::List => "string slice",
    };
    Err(format!("expected {expected} found {found} for {name}"))
}

/// A config-file value as flag text: scalars as written, lists item by item.
fn yaml_values(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::Array(items) => items.iter().flat_map(yaml_values).collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Null => vec![String::new()],
        other => vec![other.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::parse_tunnel_args;

    fn settings(args: &[&str], env: &[(&str, &str)], yaml: &str) -> Settings {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let inv = parse_tunnel_args(&argv).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let file = crate::config::parse_config(yaml, std::path::Path::new("/c.yml")).unwrap();
        Settings::new(&inv, env).with_file(&file.raw.settings, "/c.yml")
    }

    #[test]
    fn precedence_cli_env_file_default() {
        let yaml = "protocol: quic\ngrace-period: 10s\nloglevel: debug\nedge: [a:1, b:2]\n";
        let s = settings(
            &["--protocol", "http2", "run"],
            &[("TUNNEL_LOGLEVEL", "warn")],
            yaml,
        );
        assert_eq!(s.string("protocol"), "http2");
        assert_eq!(s.string("loglevel"), "warn");
        assert_eq!(s.duration("grace-period").unwrap(), Duration::from_secs(10));
        assert_eq!(s.strings("edge"), ["a:1", "b:2"]);
        assert_eq!(s.string("metrics"), "localhost:0");
        assert!(!s.is_set("metrics"));
        assert_eq!(s.source("loglevel"), Source::Env);
    }

    #[test]
    fn env_lists_split_on_commas() {
        let s = settings(&[], &[("TUNNEL_EDGE", "a:1,b:2")], "");
        assert_eq!(s.strings("edge"), ["a:1", "b:2"]);
    }

    #[test]
    fn bad_values_name_flag_and_source() {
        let s = settings(&[], &[], "grace-period: 30\nretries: many\n");
        let e = s.duration("grace-period").unwrap_err();
        assert_eq!(e.reason, "expected duration found int for grace-period");
        assert_eq!(e.source_name, "/c.yml:1");
        let e = s.int("retries").unwrap_err();
        assert!(e.to_string().contains("--retries"), "{e}");
    }

    #[test]
    fn settings_line_masks_secrets() {
        let s = settings(&["run", "--token", "c2VjcmV0"], &[], "protocol: http2\n");
        let line = s.settings_line();
        assert_eq!(line, "map[protocol:http2 token:*****]");
    }

    #[test]
    fn unknown_top_level_keys_are_reported() {
        let s = settings(&[], &[], "protocol: http2\ncredentails-file: x\n");
        assert_eq!(
            s.unknown_file_keys(),
            vec![("credentails-file".to_owned(), 2)]
        );
    }
}
