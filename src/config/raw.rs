//! Raw YAML shapes of `config.yml`, mirroring cloudflared's Go structs key for key.
//!
//! Every field is optional (absent and present-but-default differ, as with Go's pointer fields).
//! Keys cloudflared does not know inside a rule, `originRequest`, `access`, `ipRules` or
//! `warp-routing` are kept in `unknown` with their line, so the loader can print the same
//! "unused keys" warning cloudflared prints. Nothing here validates meaning; `ingress` does that.

use std::collections::BTreeMap;
use std::time::Duration;

use super::yaml::{Decoder, Node};

/// A key that cloudflared's strict YAML pass would reject, and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub key: String,
    /// 1-based line of the key in the file.
    pub line: u64,
    /// The Go type name cloudflared reports (`config.UnvalidatedIngressRule`, ...).
    pub go_type: &'static str,
}

/// A value with the line it came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Located<T> {
    pub value: T,
    /// 1-based line of the value.
    pub line: u64,
}

/// Decoding one YAML node as yaml.v3 decodes it into the Go field of the same role: `None`
/// for null or after a type error (recorded in the decoder).
pub trait FromNode: Sized {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self>;
}

impl FromNode for String {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
        d.string(node)
    }
}

impl FromNode for Located<String> {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
        d.string(node).map(|value| Located {
            value,
            line: node.line,
        })
    }
}

impl FromNode for bool {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
        d.bool(node)
    }
}

/// Go `int` (64-bit).
impl FromNode for i64 {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
        d.int(node, "int", i64::MIN.into(), i64::MAX.into())
            .map(|n| n as i64)
    }
}

/// Go `uint` / `uint64`.
impl FromNode for u64 {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
        d.int(node, "uint", 0, u64::MAX.into()).map(|n| n as u64)
    }
}

/// A Go slice: null items (and items with type errors) are dropped, as yaml.v3 drops them.
impl<T: FromNode + GoTypeName> FromNode for Vec<T> {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
        let items = d.seq(node, &format!("[]{}", T::GO_TYPE))?;
        Some(
            items
                .iter()
                .filter_map(|item| T::from_node(item, d))
                .collect(),
        )
    }
}

/// The Go type yaml.v3 names in a type error about a slice of this.
pub trait GoTypeName {
    const GO_TYPE: &'static str;
}

impl GoTypeName for String {
    const GO_TYPE: &'static str = "string";
}

impl GoTypeName for i64 {
    const GO_TYPE: &'static str = "int";
}

/// Declares a raw struct decoded like the Go struct it mirrors: known keys into their fields,
/// unknown keys recorded (cloudflared's strict pass warns about them), duplicates refused.
macro_rules! yaml_struct {
    ($(#[$meta:meta])* $name:ident as $go:literal {
        $($(#[$fmeta:meta])* $field:ident : $ty:ty => $key:literal),* $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: Option<$ty>,)*
            /// Keys this struct does not know, in file order.
            pub unknown: Vec<UnknownKey>,
        }

        impl GoTypeName for $name {
            const GO_TYPE: &'static str = $go;
        }

        impl FromNode for $name {
            fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
                if node.is_null() {
                    return None;
                }
                let pairs = d.mapping(node, $go)?;
                let mut out = $name::default();
                for (key, value) in pairs {
                    let Some(name) = d.string(key) else { continue };
                    match name.as_str() {
                        $($key => out.$field = <$ty>::from_node(value, d),)*
                        _ => out.unknown.push(UnknownKey {
                            key: name,
                            line: key.line,
                            go_type: $go,
                        }),
                    }
                }
                Some(out)
            }
        }
    };
}

/// A `time.Duration` written as Go text (`"30s"`); a bare integer is refused, as yaml.v3
/// refuses it. Go accepts negative durations; no ringflare timeout can wait a negative time,
/// so they become zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl FromNode for GoDuration {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
        let nanos = d.duration(node)?;
        Some(GoDuration(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(0),
        )))
    }
}

yaml_struct! {
    /// One entry of `ingress:` (Go `config.UnvalidatedIngressRule`).
    RawRule as "config.UnvalidatedIngressRule" {
        hostname: Located<String> => "hostname",
        path: Located<String> => "path",
        service: Located<String> => "service",
        origin_request: RawOriginRequest => "originRequest",
    }
}

yaml_struct! {
    /// `originRequest:` globally or on a rule (Go `config.OriginRequestConfig`).
    RawOriginRequest as "config.OriginRequestConfig" {
        connect_timeout: GoDuration => "connectTimeout",
        tls_timeout: GoDuration => "tlsTimeout",
        tcp_keep_alive: GoDuration => "tcpKeepAlive",
        no_happy_eyeballs: bool => "noHappyEyeballs",
        keep_alive_connections: i64 => "keepAliveConnections",
        keep_alive_timeout: GoDuration => "keepAliveTimeout",
        http_host_header: String => "httpHostHeader",
        origin_server_name: String => "originServerName",
        match_sni_to_host: bool => "matchSNItoHost",
        ca_pool: String => "caPool",
        no_tls_verify: bool => "noTLSVerify",
        disable_chunked_encoding: bool => "disableChunkedEncoding",
        bastion_mode: bool => "bastionMode",
        proxy_address: String => "proxyAddress",
        proxy_port: u64 => "proxyPort",
        proxy_type: String => "proxyType",
        ip_rules: Vec<RawIpRule> => "ipRules",
        http2_origin: bool => "http2Origin",
        access: RawAccess => "access",
    }
}

yaml_struct! {
    /// `originRequest.access` (Go `config.AccessConfig`).
    RawAccess as "config.AccessConfig" {
        required: bool => "required",
        team_name: String => "teamName",
        aud_tag: Vec<String> => "audTag",
        environment: String => "environment",
    }
}

yaml_struct! {
    /// One `originRequest.ipRules` entry for `socks-proxy` (Go `config.IngressIPRule`).
    RawIpRule as "config.IngressIPRule" {
        prefix: String => "prefix",
        ports: Vec<i64> => "ports",
        allow: bool => "allow",
    }
}

yaml_struct! {
    /// `warp-routing:` (Go `config.WarpRoutingConfig`; cloudflared warns about `enabled`).
    RawWarpRouting as "config.WarpRoutingConfig" {
        connect_timeout: GoDuration => "connectTimeout",
        max_active_flows: u64 => "maxActiveFlows",
        tcp_keep_alive: GoDuration => "tcpKeepAlive",
    }
}

/// Any other top-level key: a CLI flag's value given in the file (`protocol: http2`), kept
/// untyped (as yaml.v3 decodes into `interface{}`) until the CLI layer knows which flag it feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub value: serde_json::Value,
    /// 1-based line of the key.
    pub line: u64,
}

/// The whole file. cloudflared decodes it into `Configuration` plus an inline settings map;
/// unknown top-level keys are absorbed silently there, so they are not `UnknownKey`s here.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub tunnel: Option<Located<String>>,
    pub ingress: Option<Vec<RawRule>>,
    pub warp_routing: Option<RawWarpRouting>,
    pub origin_request: Option<RawOriginRequest>,
    pub settings: BTreeMap<String, Setting>,
}

impl FromNode for RawConfig {
    fn from_node(node: &Node, d: &mut Decoder) -> Option<Self> {
        if node.is_null() {
            return Some(RawConfig::default());
        }
        let pairs = d.mapping(node, "config.configFileSettings")?;
        let mut out = RawConfig::default();
        for (key, value) in pairs {
            let Some(name) = d.string(key) else { continue };
            match name.as_str() {
                "tunnel" => out.tunnel = Located::from_node(value, d),
                "ingress" => out.ingress = Vec::from_node(value, d),
                "warp-routing" => out.warp_routing = RawWarpRouting::from_node(value, d),
                "originRequest" => out.origin_request = RawOriginRequest::from_node(value, d),
                _ => {
                    let value = super::yaml::to_json(value);
                    out.settings.insert(
                        name,
                        Setting {
                            value,
                            line: key.line,
                        },
                    );
                }
            }
        }
        Some(out)
    }
}

impl RawConfig {
    /// Every unknown key in the nested structs, in file order.
    pub fn unknown_keys(&self) -> Vec<UnknownKey> {
        let mut keys = Vec::new();
        for rule in self.ingress.iter().flatten() {
            keys.extend(rule.unknown.iter().cloned());
            if let Some(or) = &rule.origin_request {
                or.collect_unknown(&mut keys);
            }
        }
        if let Some(or) = &self.origin_request {
            or.collect_unknown(&mut keys);
        }
        if let Some(wr) = &self.warp_routing {
            keys.extend(wr.unknown.iter().cloned());
        }
        keys.sort_by_key(|k| k.line);
        keys
    }
}

impl RawOriginRequest {
    fn collect_unknown(&self, keys: &mut Vec<UnknownKey>) {
        keys.extend(self.unknown.iter().cloned());
        if let Some(access) = &self.access {
            keys.extend(access.unknown.iter().cloned());
        }
        for rule in self.ip_rules.iter().flatten() {
            keys.extend(rule.unknown.iter().cloned());
        }
    }
}
