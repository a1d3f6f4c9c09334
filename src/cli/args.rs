//! Command-line parsing with urfave/cli's (Go `flag` package's) rules, so every invocation that
//! works with cloudflared works here: `-flag`, `--flag`, `--flag=value`, `--flag value`, bool
//! flags without a value, repeatable list flags, parsing stops at the first non-flag argument,
//! and `tunnel` flags must come before `run`. The flags of `tunnel` are also accepted before
//! `tunnel` (cloudflared's app-level flags: the unit `cloudflared service install` writes runs
//! `cloudflared --no-autoupdate --config FILE tunnel run`); the innermost value wins.

use std::collections::HashMap;

use super::flags::{self, Flag, Kind, Scope};

/// A parsed `ringflare tunnel ...` command line.
#[derive(Debug, Default, Clone)]
pub struct Invocation {
    /// Subcommand path below `tunnel`, e.g. `["ingress", "rule"]` or `["run"]`.
    pub command: Vec<String>,
    /// Positional arguments of the innermost command.
    pub args: Vec<String>,
    /// Flag values given on the command line, by canonical name, in order.
    pub cli: HashMap<&'static str, Vec<String>>,
    /// `--help`/`-h` was given at some level.
    pub help: bool,
    /// `--version`/`-v`/`-V` was given before the command.
    pub version: bool,
}

/// A flag that could not be parsed. urfave/cli prints `Incorrect Usage. MSG` for the app and
/// `tunnel` levels and `Incorrect Usage: MSG` for subcommands, then the command's help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Incorrect Usage{}{message}", if self.subcommand { ": " } else { ". " })]
pub struct UsageError {
    pub message: String,
    /// The command whose help applies (`tunnel`, `tunnel run`, ...).
    pub command: String,
    /// Raised below `tunnel` (by `run`, `ingress ...`).
    pub subcommand: bool,
}

/// Parses the app-level flags (those of `tunnel`, given before any command); returns the
/// command line from the first non-flag argument on.
pub fn parse_app_args(argv: &[String], inv: &mut Invocation) -> Result<Vec<String>, UsageError> {
    parse_level(argv, Scope::Tunnel, "", inv)
}

/// Parses the arguments after `tunnel`.
pub fn parse_tunnel_args(argv: &[String]) -> Result<Invocation, UsageError> {
    parse_tunnel_args_after(argv, Invocation::default())
}

/// Parses the arguments after `tunnel`, on top of the app-level flags already in `inv`.
pub fn parse_tunnel_args_after(
    argv: &[String],
    mut inv: Invocation,
) -> Result<Invocation, UsageError> {
    let mut rest = parse_level(argv, Scope::Tunnel, "tunnel", &mut inv)?;
    let Some(first) = rest.first().cloned() else {
        return Ok(inv);
    };
    match first.as_str() {
        "run" => {
            inv.command.push(first);
            inv.args = parse_level(&rest[1..], Scope::Run, "tunnel run", &mut inv)?;
        }
        "ingress" => {
            inv.command.push(first);
            rest = parse_level(&rest[1..], Scope::Tunnel, "tunnel ingress", &mut inv)?;
            if let Some(sub) = rest.first().cloned() {
                let scope = if sub == "validate" {
                    Scope::IngressValidate
                } else {
                    Scope::Run
                };
                let name = format!("tunnel ingress {sub}");
                inv.command.push(sub);
                inv.args = parse_level(&rest[1..], scope, &name, &mut inv)?;
            }
        }
        "help" => inv.help = true,
        "ready" => {
            inv.command.push(first);
            inv.args = parse_level(&rest[1..], Scope::Sub, "tunnel ready", &mut inv)?;
        }
        "diag" => {
            inv.command.push(first);
            inv.args = rest[1..].to_vec();
        }
        cmd if API_ONLY.contains(&cmd) => {
            inv.command.push(first);
            inv.args = rest[1..].to_vec();
        }
        _ => {
            // cloudflared treats `tunnel <NAME>` without a subcommand as a request to run it.
            inv.args = rest;
        }
    }
    Ok(inv)
}

/// `tunnel` subcommands that need Cloudflare's API; ringflare explains and exits non-zero.
pub const API_ONLY: &[&str] = &[
    "login",
    "create",
    "route",
    "vnet",
    "list",
    "info",
    "delete",
    "cleanup",
    "token",
    "proxy-dns",
    "db-connect",
];

/// Parses flags allowed at `level` until the first non-flag argument; returns the remainder.
fn parse_level(
    argv: &[String],
    level: Scope,
    command: &str,
    inv: &mut Invocation,
) -> Result<Vec<String>, UsageError> {
    let usage = |message: String| UsageError {
        message,
        command: command.to_owned(),
        subcommand: command.contains(' '),
    };
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        if arg == "--" {
            return Ok(argv[i + 1..].to_vec());
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            return Ok(argv[i..].to_vec());
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(usage(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        if name == "help" || name == "h" {
            inv.help = true;
            i += 1;
            continue;
        }
        if command.is_empty() && matches!(name, "version" | "v" | "V") {
            inv.version = true;
            i += 1;
            continue;
        }
        let flag = flags::find(name)
            .filter(|f| f.allowed_at(level))
            .ok_or_else(|| usage(format!("flag provided but not defined: -{name}")))?;
        let value = match (flag.kind, inline) {
            (_, Some(v)) => v,
            (Kind::Bool, None) => "true".to_owned(),
            (_, None) => {
                i += 1;
                argv.get(i)
                    .cloned()
                    .ok_or_else(|| usage(format!("flag needs an argument: -{name}")))?
            }
        };
        if flag.kind == Kind::Bool && parse_go_bool(&value).is_none() {
            return Err(usage(format!(
                "invalid boolean value \"{value}\" for -{name}: parse error"
            )));
        }
        record(inv, flag, value);
        i += 1;
    }
    Ok(Vec::new())
}

fn record(inv: &mut Invocation, flag: &'static Flag, value: String) {
    let values = inv.cli.entry(flag.name).or_default();
    if flag.kind != Kind::List {
        values.clear();
    }
    values.push(value);
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Invocation, UsageError> {
        let argv: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        parse_tunnel_args(&argv)
    }

    #[test]
    fn urfave_forms() {
        let inv =
            parse("--config /c.yml -edge a:1 --edge=b:2 --no-autoupdate run --token T my-tunnel")
                .unwrap();
        assert_eq!(inv.command, ["run"]);
        assert_eq!(inv.args, ["my-tunnel"]);
        assert_eq!(inv.cli["config"], ["/c.yml"]);
        assert_eq!(inv.cli["edge"], ["a:1", "b:2"]);
        assert_eq!(inv.cli["no-autoupdate"], ["true"]);
        assert_eq!(inv.cli["token"], ["T"]);
    }

    #[test]
    fn ingress_subcommands() {
        let inv = parse("--config x.yml ingress rule https://a.com").unwrap();
        assert_eq!(inv.command, ["ingress", "rule"]);
        assert_eq!(inv.args, ["https://a.com"]);
        let inv = parse("ingress validate -j {}").unwrap();
        assert_eq!(inv.cli["json"], ["{}"]);
    }

    #[test]
    fn scoping_and_errors() {
        // `--edge` is a tunnel flag: after `run` it is not defined.
        assert_eq!(
            parse("run --edge a:1").unwrap_err().message,
            "flag provided but not defined: -edge"
        );
        // `--token` is a run flag.
        assert!(parse("--token x run").is_err());
        // † flags work at both levels.
        assert!(parse("--url http://x run --url http://y").is_ok());
        assert_eq!(
            parse("--config").unwrap_err().message,
            "flag needs an argument: -config"
        );
        assert_eq!(parse("---x").unwrap_err().message, "bad flag syntax: ---x");
        assert!(parse("--no-autoupdate=maybe").is_err());
        assert!(parse("run --help").unwrap().help);
    }
}
