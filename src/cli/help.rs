//! `--help` texts generated from the flag table.

use super::flags::{FLAGS, Scope};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The cloudflared release whose behaviour ringflare follows.
pub const COMPAT_VERSION: &str = "2026.8.2";

pub fn version_line() -> String {
    format!("ringflare version {VERSION} (compatible with cloudflared {COMPAT_VERSION})")
}

pub fn root_help() -> String {
    format!(
        "NAME:
   ringflare - a thread-per-core, drop-in replacement for cloudflared's tunnel connector

USAGE:
   ringflare [global options] command [command options] [arguments...]

VERSION:
   {VERSION} (compatible with cloudflared {COMPAT_VERSION})

COMMANDS:
   tunnel   Use Cloudflare Tunnel to expose private services to the Internet (cloudflared-compatible)
   service  Install or uninstall the systemd unit (as cloudflared's `service install [TOKEN]`)
   edge     Run a local, built-in Cloudflare edge for demos, tests and benchmarks
   demo     Built-in edge + connector + hello_world origin in one process
   bench    Load generator and end-to-end benchmarks
   doctor   Check the host (io_uring, limits, buffers)
   version  Print the version (--short: just the number)
   help     Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --help, -h     show help
   --version, -v  print the version
   Every `tunnel` option is also accepted here, before the command, as in cloudflared.
"
    )
}

/// Help for `tunnel`, `tunnel run` or `tunnel ingress ...`.
pub fn tunnel_help(command: &[String]) -> String {
    let (usage, level, extra) = match command.first().map(String::as_str) {
        Some("run") => (
            "ringflare tunnel [tunnel command options] run [subcommand options] [TUNNEL]",
            Scope::Run,
            "",
        ),
        Some("ingress") => (
            "ringflare tunnel [--config FILEPATH] ingress COMMAND [arguments...]",
            Scope::IngressValidate,
            "\nCOMMANDS:\n   validate  Validate the ingress configuration\n   rule      Check which ingress rule matches a given request URL\n",
        ),
        _ => (
            "ringflare tunnel [tunnel command options] command [subcommand options]",
            Scope::Tunnel,
            "\nCOMMANDS:\n   run      Proxy a local web server by running the given tunnel\n   ingress  Validate and test ingress rules\n",
        ),
    };
    let mut text = format!("USAGE:\n   {usage}\n{extra}\nOPTIONS:\n");
    for flag in FLAGS.iter().filter(|f| !f.hidden && f.allowed_at(level)) {
        let mut names = format!("--{}", flag.name);
        for alias in flag.aliases {
            let dash = if alias.len() == 1 { "-" } else { "--" };
            names.push_str(&format!(", {dash}{alias}"));
        }
        let mut line = format!("   {names:<46} {}", flag.usage);
        if !flag.default.is_empty() && flag.default != "false" {
            line.push_str(&format!(" (default: {:?})", flag.default));
        }
        if !flag.env.is_empty() {
            let vars: Vec<String> = flag.env.iter().map(|v| format!("${v}")).collect();
            line.push_str(&format!(" [{}]", vars.join(", ")));
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}
