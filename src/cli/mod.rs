//! The command line: cloudflared-compatible `tunnel ...` commands and ringflare's own.
//!
//! Parsing follows urfave/cli so existing invocations work unchanged; each command returns an
//! [`Outcome`] (stdout text, stderr text, exit code) so tests can check them byte for byte.

pub mod args;
mod diag;
mod diag_net;
pub mod flag_table;
pub mod flags;
pub mod help;
pub mod ingress_cmd;
pub mod other_cmds;
pub mod settings;
mod zip;

use std::collections::HashMap;

use args::{API_ONLY, Invocation, UsageError, parse_app_args, parse_tunnel_args_after};
use flags::Support;
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

impl Outcome {
    /// A flag that could not be parsed: urfave/cli prints the error and the command's help on
    /// stdout and exits 0 (cloudflared 2026.8.2 does exactly this).
    pub fn flag_error(e: &UsageError) -> Outcome {
        let command: Vec<String> = e.command.split(' ').skip(1).map(str::to_owned).collect();
        let help = if e.command.is_empty() {
            help::root_help()
        } else {
            help::tunnel_help(&command)
        };
        Outcome::success(format!("{e}\n\n{help}"))
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
    /// Warnings about set flags ringflare does not implement, logged at startup.
    pub warnings: Vec<String>,
}

/// The whole cloudflared-compatible command line (`argv` without the program name): app-level
/// flags, then `tunnel ...`, `version`, `service ...`, or a command that needs Cloudflare's API.
pub fn app(argv: &[String], env: HashMap<String, String>) -> Command {
    let mut inv = Invocation::default();
    let rest = match parse_app_args(argv, &mut inv) {
        Ok(rest) => rest,
        Err(e) => return Command::Done(Outcome::flag_error(&e)),
    };
    if inv.version {
        return Command::Done(Outcome::success(format!("{}\n", help::version_line())));
    }
    let Some(command) = rest.first() else {
        return Command::Done(Outcome::success(help::root_help()));
    };
    let sub = &rest[1..];
    match command.as_str() {
        "tunnel" => tunnel_after(sub, inv, env),
        "help" | "h" => Command::Done(Outcome::success(help::root_help())),
        "version" => Command::Done(other_cmds::version(sub)),
        "service" => Command::Done(other_cmds::service(sub, &inv, &env)),
        "update" => Command::Done(other_cmds::update()),
        "login" | "access" | "forward" | "tail" | "management" => {
            Command::Done(other_cmds::api_only(command))
        }
        "proxy-dns" | "db-connect" => Command::Done(other_cmds::removed(command)),
        // cloudflared runs any other word as `tunnel` with no subcommand.
        _ => tunnel_after(&[], inv, env),
    }
}

/// Parses and runs the short-lived `tunnel` commands; `argv` excludes `tunnel` itself.
pub fn tunnel(argv: &[String], env: HashMap<String, String>) -> Command {
    tunnel_after(argv, Invocation::default(), env)
}

fn tunnel_after(argv: &[String], app: Invocation, env: HashMap<String, String>) -> Command {
    let inv = match parse_tunnel_args_after(argv, app) {
        Ok(inv) => inv,
        Err(e) => return Command::Done(Outcome::flag_error(&e)),
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
        ["ready"] => return Command::Done(other_cmds::ready(&settings)),
        ["diag"] => return Command::Done(diag::diag(&settings, &inv.args)),
        [cmd] if API_ONLY.contains(cmd) => {
            return Command::Done(other_cmds::api_only(&format!("tunnel {cmd}")));
        }
        _ => {}
    }
    if command.is_empty() {
        return Command::Done(other_cmds::bare_tunnel(&settings));
    }
    match command.as_slice() {
        ["ingress", "validate"] => Command::Done(ingress_cmd::validate(&settings, config.as_ref())),
        ["ingress", "rule"] => Command::Done(ingress_cmd::rule(&inv.args, config.as_ref())),
        ["ingress"] if inv.args.is_empty() => {
            Command::Done(Outcome::success(help::tunnel_help(&inv.command)))
        }
        ["ingress", other] => Command::Done(Outcome::usage(
            format!("Incorrect Usage: unknown command '{other}'"),
            "tunnel ingress",
        )),
        ["run"] if run_usage_error(&settings, &inv.args).is_some() => {
            let message = run_usage_error(&settings, &inv.args).unwrap_or_default();
            Command::Done(Outcome::usage(message, "tunnel run"))
        }
        _ => match flag_notices(&settings) {
            Ok(warnings) => Command::TunnelRun(Box::new(TunnelRun {
                settings,
                config,
                args: inv.args,
                warnings,
            })),
            Err(refused) => Command::Done(Outcome::failure(String::new(), refused)),
        },
    }
}

/// The usage errors cloudflared's `tunnel run` reports before it starts (exit 255): too many
/// arguments, an unreadable token file, an invalid token, no tunnel named anywhere.
fn run_usage_error(settings: &Settings, args: &[String]) -> Option<String> {
    if args.len() > 1 {
        return Some(
            "\"cloudflared tunnel run\" accepts only one argument, the ID or name of the tunnel to run."
                .into(),
        );
    }
    let mut token = settings.opt_string("token").unwrap_or_default();
    if token.is_empty()
        && let Some(path) = settings.opt_string("token-file").filter(|p| !p.is_empty())
    {
        match std::fs::read_to_string(expand_home(&path)) {
            Ok(text) => token = text.trim().to_owned(),
            Err(e) => {
                return Some(format!(
                    "Failed to read token file: open {path}: {}",
                    crate::control::loader::go_io_reason(&e)
                ));
            }
        }
    }
    if !token.is_empty() {
        return crate::config::credentials::parse_token(&token)
            .err()
            .map(|_| "Provided Tunnel token is not valid.".to_owned());
    }
    let named = !args.is_empty() || settings.opt_string("tunnel").is_some_and(|t| !t.is_empty());
    (!named).then(|| {
        "\"cloudflared tunnel run\" requires the ID or name of the tunnel to run as the last command line argument or in the configuration file.".to_owned()
    })
}

/// Checks the set flags against what ringflare supports: the warnings to log once logging is
/// up, or the error for a refused flag.
pub fn flag_notices(settings: &Settings) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    for flag in flags::FLAGS.iter().filter(|f| settings.is_set(f.name)) {
        let set = settings.string(flag.name);
        // A bool flag set to false asks for nothing.
        if flag.kind == flags::Kind::Bool && args::parse_go_bool(&set) == Some(false) {
            continue;
        }
        match flag.support {
            Support::Implemented | Support::Inert => {}
            Support::Warn(_) if flag.name == "hostname" => warnings.push(HOSTNAME_IGNORED.into()),
            Support::Warn(why) => warnings.push(format!(
                "--{} is accepted for compatibility but has no effect in ringflare: {why}",
                flag.name
            )),
            Support::Refuse(why) => return Err(format!("--{} is not supported: {why}", flag.name)),
        }
    }
    Ok(warnings)
}

/// What cloudflared logs when `hostname` is set for `tunnel run` (same meaning, same level).
const HOSTNAME_IGNORED: &str = "The property `hostname` in your configuration is ignored because you configured a Named Tunnel in the property `tunnel` to run. Make sure to provision the routing (e.g. via `cloudflared tunnel route dns/lb`) or else your origin will not be reachable. You should remove the `hostname` property to avoid this warning.";
