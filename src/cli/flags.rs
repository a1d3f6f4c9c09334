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
}

const fn f(
    name: &'static str,
    kind: Kind,
    scope: Scope,
    env: &'static [&'static str],
    default: &'static str,
    usage: &'static str,
) -> Flag {
    Flag {
        name,
        aliases: &[],
        env,
        kind,
        default,
        usage,
        scope,
        hidden: false,
        secret: false,
    }
}

const fn hidden(mut flag: Flag) -> Flag {
    flag.hidden = true;
    flag
}

const fn secret(mut flag: Flag) -> Flag {
    flag.secret = true;
    flag
}

const fn alias(mut flag: Flag, aliases: &'static [&'static str]) -> Flag {
    flag.aliases = aliases;
    flag
}

use Kind::{Bool, Duration as Dur, Int, List, String as Str};
use Scope::{Both, Run, Tunnel};

/// Every flag, in the order `--help` lists them.
pub static FLAGS: &[Flag] = &[
    f(
        "config",
        Str,
        Tunnel,
        &[],
        "",
        "Specifies a config file in YAML format.",
    ),
    alias(
        f(
            "credentials-file",
            Str,
            Both,
            &["TUNNEL_CRED_FILE"],
            "",
            "Filepath at which to read the tunnel credentials JSON.",
        ),
        &["cred-file"],
    ),
    secret(f(
        "credentials-contents",
        Str,
        Run,
        &["TUNNEL_CRED_CONTENTS"],
        "",
        "Contents of the tunnel credentials JSON file to use.",
    )),
    secret(f(
        "token",
        Str,
        Run,
        &["TUNNEL_TOKEN"],
        "",
        "The Tunnel token. When provided along with credentials, this will take precedence.",
    )),
    f(
        "token-file",
        Str,
        Run,
        &["TUNNEL_TOKEN_FILE"],
        "",
        "Filepath at which to read the tunnel token.",
    ),
    alias(
        f(
            "protocol",
            Str,
            Both,
            &["TUNNEL_TRANSPORT_PROTOCOL"],
            "auto",
            "Protocol implementation to connect with Cloudflare's edge network. auto, http2 or quic.",
        ),
        &["p"],
    ),
    alias(
        f(
            "post-quantum",
            Bool,
            Both,
            &["TUNNEL_POST_QUANTUM"],
            "false",
            "Create an experimental post-quantum secure tunnel connection.",
        ),
        &["pq"],
    ),
    alias(
        f(
            "features",
            List,
            Run,
            &[],
            "",
            "Opt into various features that are still being developed or tested.",
        ),
        &["F"],
    ),
    hidden(f(
        "edge",
        List,
        Tunnel,
        &["TUNNEL_EDGE"],
        "",
        "Address of the Cloudflare tunnel server (host:port). Repeatable.",
    )),
    hidden(f(
        "cacert",
        Str,
        Tunnel,
        &["TUNNEL_CACERT"],
        "",
        "Certificate Authority authenticating connections with Cloudflare's edge network.",
    )),
    f(
        "region",
        Str,
        Tunnel,
        &["TUNNEL_REGION"],
        "",
        "Cloudflare Edge region to connect to. Omit or set to empty to connect to the global region.",
    ),
    f(
        "edge-ip-version",
        Str,
        Tunnel,
        &["TUNNEL_EDGE_IP_VERSION"],
        "4",
        "Cloudflare Edge IP address version to connect with. {4, 6, auto}",
    ),
    f(
        "edge-bind-address",
        Str,
        Tunnel,
        &["TUNNEL_EDGE_BIND_ADDRESS"],
        "",
        "Bind to IP address for outgoing connections to Cloudflare Edge.",
    ),
    hidden(f(
        "ha-connections",
        Int,
        Tunnel,
        &[],
        "4",
        "Number of HA connections to the edge.",
    )),
    f(
        "retries",
        Int,
        Tunnel,
        &["TUNNEL_RETRIES"],
        "5",
        "Maximum number of retries for connection/protocol errors.",
    ),
    hidden(f(
        "max-edge-addr-retries",
        Int,
        Tunnel,
        &[],
        "8",
        "Maximum number of times to retry on edge addrs before falling back to a lower protocol.",
    )),
    hidden(f(
        "rpc-timeout",
        Dur,
        Tunnel,
        &[],
        "5s",
        "Timeout for RPC calls to the edge.",
    )),
    hidden(f(
        "write-stream-timeout",
        Dur,
        Tunnel,
        &["TUNNEL_STREAM_WRITE_TIMEOUT"],
        "0s",
        "Timeout for writes to a stream before it is reset (0 = off).",
    )),
    f(
        "grace-period",
        Dur,
        Tunnel,
        &["TUNNEL_GRACE_PERIOD"],
        "30s",
        "When cloudflared receives SIGINT/SIGTERM it will stop accepting new requests, wait for in-progress requests to terminate, then shutdown. Max 3m.",
    ),
    f(
        "quic-disable-pmtu-discovery",
        Bool,
        Tunnel,
        &["TUNNEL_DISABLE_QUIC_PMTU"],
        "false",
        "Disable PMTU discovery for QUIC connections.",
    ),
    f(
        "quic-connection-level-flow-control-limit",
        Int,
        Tunnel,
        &["TUNNEL_QUIC_CONN_LEVEL_FLOW_CONTROL_LIMIT"],
        "31457280",
        "Connection-level flow control limit for QUIC.",
    ),
    f(
        "quic-stream-level-flow-control-limit",
        Int,
        Tunnel,
        &["TUNNEL_QUIC_STREAM_LEVEL_FLOW_CONTROL_LIMIT"],
        "6291456",
        "Stream-level flow control limit for QUIC.",
    ),
    f(
        "metrics",
        Str,
        Tunnel,
        &["TUNNEL_METRICS"],
        "localhost:0",
        "Listen address for metrics reporting.",
    ),
    f(
        "metrics-update-freq",
        Dur,
        Tunnel,
        &["TUNNEL_METRICS_UPDATE_FREQ"],
        "5s",
        "Frequency to update tunnel metrics.",
    ),
    f(
        "loglevel",
        Str,
        Tunnel,
        &["TUNNEL_LOGLEVEL"],
        "info",
        "Application logging level {debug, info, warn, error, fatal}.",
    ),
    alias(
        f(
            "transport-loglevel",
            Str,
            Tunnel,
            &["TUNNEL_PROTO_LOGLEVEL", "TUNNEL_TRANSPORT_LOGLEVEL"],
            "info",
            "Transport logging level (previously called protocol logging level).",
        ),
        &["proto-loglevel"],
    ),
    f(
        "logfile",
        Str,
        Tunnel,
        &["TUNNEL_LOGFILE"],
        "",
        "Save application log to this file for reporting issues.",
    ),
    f(
        "log-directory",
        Str,
        Tunnel,
        &["TUNNEL_LOGDIRECTORY"],
        "",
        "Save application log to this directory for reporting issues.",
    ),
    f(
        "output",
        Str,
        Tunnel,
        &["TUNNEL_MANAGEMENT_OUTPUT", "TUNNEL_LOG_OUTPUT"],
        "default",
        "Output format for the logs (default, json).",
    ),
    f(
        "pidfile",
        Str,
        Tunnel,
        &["TUNNEL_PIDFILE"],
        "",
        "Write the application's PID to this file after first successful connection.",
    ),
    f(
        "no-autoupdate",
        Bool,
        Tunnel,
        &["NO_AUTOUPDATE"],
        "false",
        "Disable periodic check for updates (ringflare never self-updates).",
    ),
    f(
        "autoupdate-freq",
        Dur,
        Tunnel,
        &[],
        "24h",
        "Autoupdate frequency (accepted for compatibility; ringflare never self-updates).",
    ),
    f(
        "origincert",
        Str,
        Tunnel,
        &["TUNNEL_ORIGIN_CERT"],
        "",
        "Path to the certificate generated for your origin when you run cloudflared login.",
    ),
    f(
        "tag",
        List,
        Tunnel,
        &["TUNNEL_TAG"],
        "",
        "Custom tags used to identify this tunnel via added HTTP request headers to the origin, in format `KEY=VALUE`. Repeatable.",
    ),
    f(
        "label",
        Str,
        Tunnel,
        &[],
        "",
        "Use this option to give a meaningful label to a specific connector.",
    ),
    f(
        "max-active-flows",
        Int,
        Run,
        &["TUNNEL_MAX_ACTIVE_FLOWS"],
        "",
        "Overrides the remote configuration for max active private network flows (TCP/UDP).",
    ),
    f(
        "icmpv4-src",
        Str,
        Run,
        &["TUNNEL_ICMPV4_SRC"],
        "",
        "Source address to send/receive ICMPv4 messages.",
    ),
    f(
        "icmpv6-src",
        Str,
        Run,
        &["TUNNEL_ICMPV6_SRC"],
        "",
        "Source address and the interface name to send/receive ICMPv6 messages.",
    ),
    f(
        "url",
        Str,
        Both,
        &["TUNNEL_URL"],
        "http://localhost:8080",
        "Connect to the local webserver at URL.",
    ),
    f(
        "hello-world",
        Bool,
        Both,
        &["TUNNEL_HELLO_WORLD"],
        "false",
        "Run Hello World Server.",
    ),
    f(
        "unix-socket",
        Str,
        Both,
        &["TUNNEL_UNIX_SOCKET"],
        "",
        "Path to unix socket to use instead of --url.",
    ),
    f(
        "bastion",
        Bool,
        Both,
        &["TUNNEL_BASTION"],
        "false",
        "Runs as jump host.",
    ),
    f(
        "socks5",
        Bool,
        Both,
        &["TUNNEL_SOCKS"],
        "false",
        "Specify if this tunnel is running as a SOCK5 Server.",
    ),
    f(
        "http-host-header",
        Str,
        Both,
        &["TUNNEL_HTTP_HOST_HEADER"],
        "",
        "Sets the HTTP Host header for the local webserver.",
    ),
    f(
        "origin-server-name",
        Str,
        Both,
        &["TUNNEL_ORIGIN_SERVER_NAME"],
        "",
        "Hostname on the origin server certificate.",
    ),
    f(
        "origin-ca-pool",
        Str,
        Both,
        &["TUNNEL_ORIGIN_CA_POOL"],
        "",
        "Path to the CA for the certificate of your origin.",
    ),
    f(
        "no-tls-verify",
        Bool,
        Both,
        &["NO_TLS_VERIFY"],
        "false",
        "Disables TLS verification of the certificate presented by your origin.",
    ),
    f(
        "no-chunked-encoding",
        Bool,
        Both,
        &["TUNNEL_NO_CHUNKED_ENCODING"],
        "false",
        "Disables chunked transfer encoding; useful if you are running a WSGI server.",
    ),
    f(
        "http2-origin",
        Bool,
        Both,
        &["TUNNEL_ORIGIN_ENABLE_HTTP2"],
        "false",
        "Enables HTTP/2 origin servers.",
    ),
    f(
        "proxy-connect-timeout",
        Dur,
        Both,
        &[],
        "30s",
        "HTTP proxy timeout for establishing a new connection.",
    ),
    f(
        "proxy-tls-timeout",
        Dur,
        Both,
        &[],
        "10s",
        "HTTP proxy timeout for completing a TLS handshake.",
    ),
    f(
        "proxy-tcp-keepalive",
        Dur,
        Both,
        &[],
        "30s",
        "HTTP proxy TCP keepalive duration.",
    ),
    f(
        "proxy-no-happy-eyeballs",
        Bool,
        Both,
        &[],
        "false",
        "HTTP proxy should disable \"happy eyeballs\" for IPv4/v6 fallback.",
    ),
    f(
        "proxy-keepalive-connections",
        Int,
        Both,
        &[],
        "100",
        "HTTP proxy maximum keepalive connection pool size.",
    ),
    f(
        "proxy-keepalive-timeout",
        Dur,
        Both,
        &[],
        "1m30s",
        "HTTP proxy timeout for closing an idle connection.",
    ),
    hidden(f(
        "proxy-address",
        Str,
        Both,
        &["TUNNEL_PROXY_ADDRESS"],
        "127.0.0.1",
        "Listen address for the proxy.",
    )),
    hidden(f(
        "proxy-port",
        Int,
        Both,
        &["TUNNEL_PROXY_PORT"],
        "0",
        "Listen port for the proxy.",
    )),
    f(
        "management-diagnostics",
        Bool,
        Tunnel,
        &["TUNNEL_MANAGEMENT_DIAGNOSTICS"],
        "true",
        "Enables the in-depth diagnostic routes to be made available over the management service.",
    ),
    hidden(f(
        "management-hostname",
        Str,
        Tunnel,
        &["TUNNEL_MANAGEMENT_HOSTNAME"],
        "management.argotunnel.com",
        "Management hostname to signify incoming management requests.",
    )),
    hidden(f(
        "service-op-ip",
        Str,
        Tunnel,
        &["TUNNEL_SERVICE_OP_IP"],
        "198.41.200.113:80",
        "Fallback IP for service operations run by cloudflared.",
    )),
    hidden(f(
        "quick-service",
        Str,
        Tunnel,
        &[],
        "https://api.trycloudflare.com",
        "URL for a service which manages unauthenticated 'quick' tunnels.",
    )),
    hidden(f(
        "stdin-control",
        Bool,
        Tunnel,
        &["STDIN_CONTROL"],
        "false",
        "Control the process using commands sent through stdin.",
    )),
    hidden(f(
        "heartbeat-interval",
        Dur,
        Tunnel,
        &[],
        "5s",
        "Accepted for compatibility; has no effect.",
    )),
    hidden(f(
        "heartbeat-count",
        Int,
        Tunnel,
        &[],
        "5",
        "Accepted for compatibility; has no effect.",
    )),
    hidden(f(
        "compression-quality",
        Int,
        Tunnel,
        &[],
        "0",
        "Accepted for compatibility; has no effect.",
    )),
    hidden(f(
        "use-reconnect-token",
        Bool,
        Tunnel,
        &[],
        "true",
        "Accepted for compatibility; has no effect.",
    )),
    hidden(f(
        "dial-edge-timeout",
        Dur,
        Tunnel,
        &[],
        "15s",
        "Accepted for compatibility; the dial timeout is a fixed 15s.",
    )),
    hidden(f(
        "is-autoupdated",
        Bool,
        Tunnel,
        &[],
        "false",
        "Accepted for compatibility; has no effect.",
    )),
    hidden(f(
        "lb-pool",
        Str,
        Tunnel,
        &[],
        "",
        "Accepted for compatibility; has no effect.",
    )),
    hidden(f(
        "ui",
        Bool,
        Tunnel,
        &[],
        "false",
        "Accepted for compatibility; has no effect.",
    )),
    // ringflare's own.
    f(
        "io-driver",
        Str,
        Tunnel,
        &["RINGFLARE_IO_DRIVER"],
        "auto",
        "ringflare: I/O driver {auto, io_uring, poll}; auto uses io_uring when the kernel allows it.",
    ),
    f(
        "workers",
        Int,
        Tunnel,
        &["RINGFLARE_WORKERS"],
        "0",
        "ringflare: data-plane worker threads, one per core (0 = one per available core).",
    ),
    f(
        "config-poll-interval",
        Dur,
        Tunnel,
        &["RINGFLARE_CONFIG_POLL_INTERVAL"],
        "1s",
        "ringflare: how often the config file is checked for changes (0 = only on SIGHUP).",
    ),
    alias(
        f(
            "json",
            Str,
            Scope::IngressValidate,
            &["TUNNEL_INGRESS_VALIDATE_JSON"],
            "",
            "Accepts data in the form of json as an input rather than read from a file",
        ),
        &["j"],
    ),
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
