//! The flags cloudflared's `tunnel` and `tunnel run` accept, with their environment variables and
//! defaults (spec §9.4), plus ringflare's own. One table drives parsing, `--help`, config-file
//! keys and the `Settings: map[...]` log line.

/// How a flag's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    String,
    Int,
    Duration,
    /// Repeatable; env and config may give a comma-separated string or a YAML list.
    List,
}

/// Where a flag may appear on the command line (urfave/cli scoping: `tunnel` flags come before
/// `run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tunnel,
    Run,
    /// Defined on both `tunnel` and `run` (cloudflared's † flags).
    Both,
    IngressValidate,
    /// A subcommand with no flags of its own (`tunnel ready`, `tunnel diag`).
    Sub,
}

#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub env: &'static [&'static str],
    pub kind: Kind,
    /// Default as text ("" = none).
    pub default: &'static str,
    pub usage: &'static str,
    pub scope: Scope,
    pub hidden: bool,
    /// Masked as `*****` wherever settings are printed.
    pub secret: bool,
    /// What ringflare does with the flag when it is set.
    pub support: Support,
}

/// What ringflare does with a flag cloudflared defines. Nothing that changes behaviour is
/// ignored silently: a flag is implemented, inert in cloudflared too, warned about, or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Implemented as cloudflared implements it.
    Implemented,
    /// Accepted; it has no effect on running a tunnel in cloudflared 2026.8.2 either
    /// (deprecated, removed features, API-only options), or the effect is moot here
    /// (ringflare never self-updates, serves no management service).
    Inert,
    /// Accepted, but ringflare does not implement it: when set, a warning says so.
    Warn(&'static str),
    /// Refused when set: pretending to honour it would be unsafe or misleading.
    Refuse(&'static str),
}

pub use super::flag_table::FLAGS;

/// The flags cloudflared 2026.8.2 may report in `/diag/configuration` (its list of flags that
/// hold nothing secret).
pub const DIAG_FLAGS: &[&str] = &[
    "config",
    "autoupdate-freq",
    "no-autoupdate",
    "no-prechecks",
    "metrics",
    "pidfile",
    "url",
    "hello-world",
    "socks5",
    "proxy-connect-timeout",
    "proxy-tls-timeout",
    "proxy-tcp-keepalive",
    "proxy-no-happy-eyeballs",
    "proxy-keepalive-connections",
    "proxy-keepalive-timeout",
    "proxy-connection-timeout",
    "proxy-expect-continue-timeout",
    "http-host-header",
    "origin-server-name",
    "unix-socket",
    "origin-ca-pool",
    "no-tls-verify",
    "no-chunked-encoding",
    "http2-origin",
    "management-hostname",
    "service-op-ip",
    "local-ssh-port",
    "ssh-idle-timeout",
    "ssh-max-timeout",
    "bucket-name",
    "region-name",
    "s3-url-host",
    "host-key-path",
    "ssh-server",
    "bastion",
    "proxy-address",
    "proxy-port",
    "loglevel",
    "transport-loglevel",
    "logfile",
    "log-directory",
    "trace-output",
    "is-autoupdated",
    "edge",
    "region",
    "edge-ip-version",
    "edge-bind-address",
    "cacert",
    "hostname",
    "id",
    "lb-pool",
    "api-url",
    "metrics-update-freq",
    "tag",
    "heartbeat-interval",
    "heartbeat-count",
    "max-edge-addr-retries",
    "retries",
    "ha-connections",
    "rpc-timeout",
    "write-stream-timeout",
    "quic-disable-pmtu-discovery",
    "quic-connection-level-flow-control-limit",
    "quic-stream-level-flow-control-limit",
    "label",
    "grace-period",
    "compression-quality",
    "use-reconnect-token",
    "dial-edge-timeout",
    "stdin-control",
    "name",
    "ui",
    "quick-service",
    "max-fetch-size",
    "post-quantum",
    "management-diagnostics",
    "protocol",
    "overwrite-dns",
    "help",
    "max-active-flows",
];

/// Looks a flag up by name or alias.
pub fn find(name: &str) -> Option<&'static Flag> {
    FLAGS
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

impl Flag {
    /// Whether the flag may be given on the command line at this command level.
    pub fn allowed_at(&self, level: Scope) -> bool {
        self.scope == level
            || (self.scope == Scope::Both && matches!(level, Scope::Tunnel | Scope::Run))
    }
}
