//! Everything `tunnel run` needs, resolved once on the control thread from the CLI settings, the
//! config file and the credentials: edge addresses, HA count, timeouts, the ingress table,
//! observability addresses. Pure except for reading the credentials and CA files it names.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use crate::cli::TunnelRun;
use crate::cli::settings::Settings;
use crate::config::credentials::Credentials;
use crate::config::file::ConfigFile;
use crate::control::credentials::find_credentials;
use crate::control::loader::expand_home;
use crate::ingress::{Ingress, IngressError, IngressTable, OriginRequest, Service};
use crate::quic::QuicSettings;
use crate::runtime::IoDriver;

use super::protocol::ProtocolSelector;

/// Most a grace period may be (cloudflared's limit).
const MAX_GRACE: Duration = Duration::from_secs(180);

/// Which address family to use for discovered edge addresses (`--edge-ip-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
    Auto,
}

/// Where the edge addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeSource {
    /// `--edge host:port` values, one connection per address (spec §1.3).
    Static(Vec<String>),
    /// DNS SRV discovery of Cloudflare's edge, with this service name (spec §1.1).
    Srv { service: String },
}

/// The resolved inputs of the connector.
#[derive(Debug)]
pub struct ConnectorOptions {
    pub credentials: Credentials,
    pub edge: EdgeSource,
    pub ip_version: IpVersion,
    /// `--edge-bind-address`: the local IP outgoing edge connections bind to.
    pub edge_bind: Option<std::net::IpAddr>,
    /// `--cacert`: replaces Cloudflare's roots for the edge certificate.
    pub cacert: Option<PathBuf>,
    /// `--ha-connections`, before the cap by the number of addresses.
    pub ha_connections: usize,
    /// `--retries`: the exponent cap of the backoff.
    pub retries: u32,
    pub rpc_timeout: Duration,
    pub grace_period: Duration,
    /// `--metrics`; `None` means cloudflared's default search (localhost:20241..20245, then any).
    pub metrics: Option<String>,
    pub io_driver: IoDriver,
    /// `--workers`; `None` means one per core.
    pub workers: Option<NonZeroUsize>,
    pub config_poll: Duration,
    /// `--tag NAME=VALUE` pairs, sent to origins as `Cf-Warp-Tag-NAME`.
    pub tags: Vec<(String, String)>,
    /// Extra `--features`.
    pub features: Vec<String>,
    pub pidfile: Option<PathBuf>,
    /// The compiled ingress table (config rules, CLI rule, or the 503 default).
    pub ingress: IngressTable,
    /// Whether the rules came from the config file (only then does hot reload apply).
    pub config_path: Option<PathBuf>,
    /// The config text the table was built from, for the reloader's change detection.
    pub config_text: Option<String>,
    /// The `Settings: map[...]` line.
    pub settings_line: String,
    /// The set, non-secret flags `/diag/configuration` reports (cloudflared's list).
    pub diag_flags: std::collections::BTreeMap<String, String>,
    /// True when no rule came from the file or the CLI (cloudflared warns).
    pub default_503: bool,
    /// Whether a token was used (silences the no-rules warning).
    pub from_token: bool,
    /// `--protocol`, resolved as cloudflared's selector (spec §1.7).
    pub protocol: ProtocolSelector,
    /// The QUIC flow-control and PMTU flags (spec §4.1).
    pub quic: QuicSettings,
    /// `--post-quantum`: post-quantum key agreement only.
    pub post_quantum: bool,
}

/// A resolution failure, already worded for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

fn err(e: impl std::fmt::Display) -> OptionsError {
    OptionsError(e.to_string())
}

impl ConnectorOptions {
    /// Resolves everything from `run`; fails with cloudflared's messages where it has them.
    pub fn resolve(run: &TunnelRun) -> Result<ConnectorOptions, OptionsError> {
        let s = &run.settings;
        let tunnel = run.args.last().cloned().or_else(|| tunnel_from_config(run));
        let credentials = find_credentials(s, tunnel.as_deref()).map_err(err)?;
        let from_token = s.opt_string("token").is_some() || s.opt_string("token-file").is_some();
        let selection =
            ProtocolSelector::resolve(&s.string("protocol"), from_token).map_err(err)?;
        if let Some(w) = selection.warning {
            log::warn!("{w}");
        }
        let quic = QuicSettings::new(
            u64::try_from(s.int("quic-stream-level-flow-control-limit").map_err(err)?).unwrap_or(0),
            u64::try_from(
                s.int("quic-connection-level-flow-control-limit")
                    .map_err(err)?,
            )
            .unwrap_or(0),
            !s.bool("quic-disable-pmtu-discovery").map_err(err)?,
        )
        .map_err(err)?;
        let grace_period = s.duration("grace-period").map_err(err)?;
        if grace_period > MAX_GRACE {
            return Err(OptionsError(
                "grace-period must be equal or less than 3m0s".into(),
            ));
        }
        let (ingress, default_503) = build_ingress(s, run.config.as_ref())?;
        let config_path = run
            .config
            .as_ref()
            .filter(|c| c.raw.ingress.as_ref().is_some_and(|r| !r.is_empty()))
            .map(|c| c.source.clone());
        let config_text = config_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        Ok(ConnectorOptions {
            edge: edge_source(s, &credentials)?,
            ip_version: match edge_bind(s)? {
                Some(ip) if ip.is_ipv4() => IpVersion::V4,
                Some(_) => IpVersion::V6,
                None => ip_version(s)?,
            },
            edge_bind: edge_bind(s)?,
            cacert: s.opt_string("cacert").map(|p| expand_home(&p)),
            ha_connections: positive(s, "ha-connections")?,
            retries: u32::try_from(s.int("retries").map_err(err)?.max(0)).unwrap_or(5),
            rpc_timeout: s.duration("rpc-timeout").map_err(err)?,
            grace_period,
            metrics: s.opt_string("metrics").filter(|m| m != "localhost:0"),
            io_driver: s.string("io-driver").parse().map_err(err)?,
            workers: NonZeroUsize::new(
                usize::try_from(s.int("workers").map_err(err)?).unwrap_or(0),
            ),
            config_poll: s.duration("config-poll-interval").map_err(err)?,
            tags: tags(s)?,
            features: s.strings("features"),
            pidfile: s.opt_string("pidfile").map(|p| expand_home(&p)),
            ingress: IngressTable::new(ingress),
            config_path,
            config_text,
            settings_line: s.settings_line(),
            diag_flags: s.diag_flags(),
            default_503,
            from_token,
            protocol: selection.selector,
            quic,
            post_quantum: s.bool("post-quantum").map_err(err)?,
            credentials,
        })
    }
}

fn tunnel_from_config(run: &TunnelRun) -> Option<String> {
    run.settings.opt_string("tunnel")
}

fn positive(s: &Settings, name: &str) -> Result<usize, OptionsError> {
    let n = s.int(name).map_err(err)?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| OptionsError(format!("--{name} must be at least 1, got {n}")))
}

fn ip_version(s: &Settings) -> Result<IpVersion, OptionsError> {
    match s.string("edge-ip-version").as_str() {
        "4" => Ok(IpVersion::V4),
        "6" => Ok(IpVersion::V6),
        "auto" => Ok(IpVersion::Auto),
        other => Err(OptionsError(format!(
            "invalid value {other:?} for --edge-ip-version: expected 4, 6 or auto"
        ))),
    }
}

fn edge_bind(s: &Settings) -> Result<Option<std::net::IpAddr>, OptionsError> {
    match s.opt_string("edge-bind-address").filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            OptionsError(format!(
                "invalid value {v:?} for --edge-bind-address: expected an IP address"
            ))
        }),
    }
}

fn edge_source(s: &Settings, creds: &Credentials) -> Result<EdgeSource, OptionsError> {
    let edges = s.strings("edge");
    if !edges.is_empty() {
        return Ok(EdgeSource::Static(edges));
    }
    let region = s.string("region");
    if !region.is_empty() && !creds.endpoint.is_empty() {
        return Err(OptionsError(
            "region provided with a token that has an endpoint".into(),
        ));
    }
    let region = if region.is_empty() {
        creds.endpoint.clone()
    } else {
        region
    };
    let service = if region.is_empty() {
        "v2-origintunneld".to_owned()
    } else {
        format!("{region}-v2-origintunneld")
    };
    Ok(EdgeSource::Srv { service })
}

/// `--tag NAME=VALUE`, names restricted to HTTP token characters as cloudflared does.
fn tags(s: &Settings) -> Result<Vec<(String, String)>, OptionsError> {
    s.strings("tag")
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (name, value) = t
                .split_once('=')
                .ok_or_else(|| OptionsError(format!("Invalid tag {t}: expected NAME=VALUE")))?;
            let ok = !name.is_empty() && name.bytes().all(crate::connector::origin::http::is_token);
            if !ok {
                return Err(OptionsError(format!("Invalid tag {t}")));
            }
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The file's rules when it has any, else a single CLI rule, else cloudflared's 503 default.
fn build_ingress(
    s: &Settings,
    config: Option<&ConfigFile>,
) -> Result<(Ingress, bool), OptionsError> {
    if let Some(c) = config.filter(|c| c.raw.ingress.as_ref().is_some_and(|r| !r.is_empty())) {
        let ingress = Ingress::from_config(&c.raw).map_err(|e| ingress_error(c, e))?;
        return Ok((ingress, false));
    }
    let options = cli_origin_request(s)?;
    let service = if s.bool("hello-world").map_err(err)? {
        Some(Service::HelloWorld)
    } else if s.bool("bastion").map_err(err)? {
        Some(Service::Bastion)
    } else if let Some(path) = s.opt_string("unix-socket") {
        Some(Service::Unix { path, tls: false })
    } else if let Some(url) = s.opt_string("url") {
        Some(Service::parse(&url, &options, &[]).map_err(OptionsError)?)
    } else {
        None
    };
    Ok(match service {
        Some(service) => (Ingress::single(service, options), false),
        None => (Ingress::default_503(), true),
    })
}

fn ingress_error(c: &ConfigFile, e: IngressError) -> OptionsError {
    if e.line > 0 {
        OptionsError(format!("{}:{}: {e}", c.source.display(), e.line))
    } else {
        OptionsError(format!("{}: {e}", c.source.display()))
    }
}

/// The `--proxy-*` and origin flags for the single CLI rule.
fn cli_origin_request(s: &Settings) -> Result<OriginRequest, OptionsError> {
    let mut o = OriginRequest::default();
    let d = |name: &str| s.duration(name).map_err(err);
    o.connect_timeout = d("proxy-connect-timeout")?;
    o.tls_timeout = d("proxy-tls-timeout")?;
    o.tcp_keep_alive = d("proxy-tcp-keepalive")?;
    o.keep_alive_timeout = d("proxy-keepalive-timeout")?;
    o.keep_alive_connections =
        usize::try_from(s.int("proxy-keepalive-connections").map_err(err)?).unwrap_or(0);
    o.no_happy_eyeballs = s.bool("proxy-no-happy-eyeballs").map_err(err)?;
    o.http_host_header = s.string("http-host-header");
    o.origin_server_name = s.string("origin-server-name");
    o.ca_pool = s.string("origin-ca-pool");
    o.no_tls_verify = s.bool("no-tls-verify").map_err(err)?;
    o.disable_chunked_encoding = s.bool("no-chunked-encoding").map_err(err)?;
    o.http2_origin = s.bool("http2-origin").map_err(err)?;
    o.bastion_mode = s.bool("bastion").map_err(err)?;
    if s.bool("socks5").map_err(err)? {
        o.proxy_type = "socks".into();
    }
    Ok(o)
}

/// A random connector ID, generated once per process (`Generated Connector ID: ...`).
pub fn new_connector_id() -> Uuid {
    Uuid::new_v4()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::cli::{Command, tunnel};
    use crate::config::credentials::encode_token;
    use crate::config::secret::Secret;

    fn token() -> String {
        encode_token(&Credentials {
            account_tag: "a".repeat(32),
            tunnel_secret: Secret::new(vec![1; 32]),
            tunnel_id: Uuid::nil(),
            endpoint: String::new(),
        })
    }

    fn resolve(
        tunnel_flags: &[&str],
        run_flags: &[&str],
    ) -> Result<ConnectorOptions, OptionsError> {
        let mut argv: Vec<String> = tunnel_flags.iter().map(|s| s.to_string()).collect();
        argv.extend(["run".to_owned(), "--token".to_owned(), token()]);
        argv.extend(run_flags.iter().map(|s| s.to_string()));
        let env = HashMap::from([("HOME".to_owned(), "/nonexistent".to_owned())]);
        match tunnel(&argv, env) {
            Command::TunnelRun(run) => ConnectorOptions::resolve(&run),
            Command::Done(o) => panic!("not a run: {o:?}"),
        }
    }

    #[test]
    fn defaults_match_cloudflared() {
        let o = resolve(&[], &[]).unwrap();
        assert_eq!(o.ha_connections, 4);
        assert_eq!(o.retries, 5);
        assert_eq!(o.grace_period, Duration::from_secs(30));
        assert_eq!(o.rpc_timeout, Duration::from_secs(5));
        assert_eq!(o.metrics, None, "localhost:0 means the default port search");
        assert_eq!(o.ip_version, IpVersion::Auto, "2026.8.2 defaults to auto");
        assert_eq!(
            o.edge,
            EdgeSource::Srv {
                service: "v2-origintunneld".into()
            }
        );
        assert!(o.default_503 && o.from_token);
    }

    #[test]
    fn quic_flags_and_protocol_selection() {
        let o = resolve(&[], &[]).unwrap();
        assert_eq!(o.quic, crate::quic::QuicSettings::default());
        assert!(!o.post_quantum);
        // A token with `auto`: QUIC first, http2 as the fallback (spec §1.7).
        assert_eq!(o.protocol.initial, super::super::protocol::Protocol::Quic);
        assert!(o.protocol.fallback.is_some());
        let o = resolve(
            &[
                "--protocol",
                "quic",
                "--post-quantum",
                "--quic-stream-level-flow-control-limit",
                "1048576",
                "--quic-connection-level-flow-control-limit",
                "4194304",
                "--quic-disable-pmtu-discovery",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            (o.quic.stream_window, o.quic.conn_window),
            (1 << 20, 4 << 20)
        );
        assert!(!o.quic.pmtu_discovery && o.post_quantum);
        assert_eq!(o.protocol.fallback, None);
        let e = resolve(&["--protocol", "h3"], &[]).unwrap_err();
        assert!(e.0.starts_with("unknown protocol h3"), "{e}");
    }

    #[test]
    fn flags_edges_tags_and_cli_rule() {
        let o = resolve(
            &[
                "--edge",
                "127.0.0.1:1",
                "--edge",
                "127.0.0.1:2",
                "--tag",
                "env=prod",
                "--region",
                "us",
            ],
            &["--url", "http://localhost:9000"],
        )
        .unwrap();
        assert_eq!(
            o.edge,
            EdgeSource::Static(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()])
        );
        assert_eq!(o.tags, vec![("env".to_owned(), "prod".to_owned())]);
        assert!(!o.default_503);
        assert_eq!(
            o.ingress.ingress().rules[0].service.to_string(),
            "http://localhost:9000"
        );
        let srv = resolve(&["--region", "us"], &[]).unwrap();
        assert_eq!(
            srv.edge,
            EdgeSource::Srv {
                service: "us-v2-origintunneld".into()
            }
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = resolve(&["--grace-period", "4m"], &[]).unwrap_err();
        assert_eq!(e.0, "grace-period must be equal or less than 3m0s");
        assert!(resolve(&["--edge-ip-version", "5"], &[]).is_err());
        assert!(resolve(&["--tag", "bad tag=x"], &[]).is_err());
        assert!(resolve(&["--ha-connections", "0"], &[]).is_err());
    }
}
