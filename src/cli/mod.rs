//! The command line: cloudflared-compatible `tunnel ...` commands and ringflare's own.
//!
//! Parsing follows urfave/cli so existing invocations work unchanged; each command returns an
//! [`Outcome`] (stdout text, stderr text, exit code) so tests can check them byte for byte.

pub mod args;
pub mod flags;
pub mod help;
pub mod ingress_cmd;
pub mod settings;

use std::collections::HashMap;

use args::parse_tunnel_args;
use settings::Settings;

use crate::config::file::ConfigFile;
use crate::control::loader::{expand_home, find_default_config, load_config};

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Outcome {
    pub fn success(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            code: 0,
        }
    }

    pub fn failure(stdout: String, error: String) -> Outcome {
        Outcome {
            stdout,
            stderr: format!("{error}\n"),
            code: 1,
        }
    }

    /// Usage errors exit with 255, as cloudflared's `cliutil.UsageError` does.
    pub fn usage(message: String, command: &str) -> Outcome {
        Outcome {
            stdout: String::new(),
            stderr: format!("{message}\nSee 'ringflare {command} --help'.\n"),
            code: 255,
        }
    }
}

/// A command that runs for a long time (the connector, the edge) rather than printing and exiting.
pub enum Command {
    Done(Outcome),
    /// `tunnel run` with everything it needs resolved.
    TunnelRun(Box<TunnelRun>),
}

/// The resolved inputs of `tunnel run`.
pub struct TunnelRun {
    pub settings: Settings,
    pub config: Option<ConfigFile>,
    pub args: Vec<String>,
}

/// Parses and runs the short-lived `tunnel` commands; `argv` excludes `tunnel` itself.
pub fn tunnel(argv: &[String], env: HashMap<String, String>) -> Command {
    let inv = match parse_tunnel_args(argv) {
        Ok(inv) => inv,
        Err(e) => return Command::Done(Outcome::usage(e.to_string(), &e.command)),
    };
    if inv.help {
        return Command::Done(Outcome::success(help::tunnel_help(&inv.command)));
    }
    let settings = Settings::new(&inv, env);
    let config_path = match settings.opt_string("config") {
        Some(p) => Some(expand_home(&p)),
        None => find_default_config(),
    };
    let config = match config_path.as_deref().map(load_config).transpose() {
        Ok(c) => c,
        Err(e) => return Command::Done(Outcome::failure(String::new(), e.to_string())),
    };
    // A file without any YAML document: cloudflared logs it and goes on as if it had none.
    let config = config.filter(|c| {
        if c.empty {
            eprintln!(
                "{} ERR Configuration file {} was empty",
                crate::logging::rfc3339_utc(std::time::SystemTime::now()),
                c.source.display()
            );
        }
        !c.empty
    });
    let settings = match &config {
        Some(c) => settings.with_file(&c.raw.settings, &c.source.display().to_string()),
        None => settings,
    };
    if let Err(e) = settings.check_file_types() {
        return Command::Done(Outcome::failure(String::new(), e));
    }
    let command: Vec<&str> = inv.command.iter().map(String::as_str).collect();
    match command.as_slice() {
        ["ingress", "validate"] => Command::Done(ingress_cmd::validate(&settings, config.as_ref())),
        ["ingress", "rule"] => Command::Done(ingress_cmd::rule(&inv.args, config.as_ref())),
        ["ingress"] | [] if inv.args.is_empty() => {
            Command::Done(Outcome::success(help::tunnel_help(&inv.command)))
        }
        ["ingress", other] => Command::Done(Outcome::usage(
            format!("Incorrect Usage: unknown command '{other}'"),
            "tunnel ingress",
        )),
        _ => Command::TunnelRun(Box::new(TunnelRun {
            settings,
            config,
            args: inv.args,
        })),
    }
}
