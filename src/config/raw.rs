//! Raw YAML shapes of `config.yml`, mirroring cloudflared's Go structs key for key.
//!
//! Every field is optional (absent and present-but-default differ, as with Go's pointer fields).
//! Keys cloudflared does not know inside a rule, `originRequest`, `access`, `ipRules` or
//! `warp-routing` are kept in `unknown` with their line, so the loader can print the same
//! "unused keys" warning cloudflared prints. Nothing here validates meaning; `ingress` does that.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration::parse_go_duration;

/// A key that cloudflared's strict YAML pass would reject, and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub key: String,
    /// 1-based line of the key in the file.
    pub line: u64,
    /// The Go type name cloudflared reports (`config.UnvalidatedIngressRule`, ...).
    pub go_type: &'static str,
}

/// A string value with the line it came from, for error messages.
pub type Located<T> = Spanned<T>;

/// Declares a raw struct whose `Deserialize` records unknown keys instead of ignoring them.
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

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Fields;
                impl<'de> serde::de::Visitor<'de> for Fields {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a mapping ({})", $go)
                    }
                    fn visit_unit<E>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                    fn visit_map<A>(self, mut map: A) -> Result<$name, A::Error>
                    where
                        A: serde::de::MapAccess<'de>,
                    {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<Spanned<String>>()? {
                            match key.value.as_str() {
                                $($key => out.$field = map.next_value()?,)*
                                _ => {
                                    out.unknown.push(UnknownKey {
                                        key: key.value,
                                        line: key.referenced.line(),
                                        go_type: $go,
                                    });
                                    map.next_value::<serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(Fields)
            }
        }
    };
}

/// A duration written as Go text (`"30s"`). A bare integer is refused, as yaml.v3 refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"30s\" or \"1m30s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_go_duration(v).map(GoDuration).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<GoDuration, E> {
                Err(E::custom(format!(
                    "cannot unmarshal !!int `{v}` into time.Duration (write it with a unit, e.g. \"{v}s\")"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GoDuration, E> {
                self.visit_i64(v as i64)
            }
        }
        d.deserialize_any(V)
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
    /// `warp-routing:` (Go `config.WarpRoutingConfig`; `enabled` is accepted and ignored).
    RawWarpRouting as "config.WarpRoutingConfig" {
        enabled: bool => "enabled",
        connect_timeout: GoDuration => "connectTimeout",
        max_active_flows: u64 => "maxActiveFlows",
        tcp_keep_alive: GoDuration => "tcpKeepAlive",
    }
}

/// Any other top-level key: a CLI flag's value given in the file (`protocol: http2`), kept
/// untyped until the CLI layer knows which flag it feeds.
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

impl<'de> Deserialize<'de> for RawConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of configuration keys")
            }
            fn visit_unit<E>(self) -> Result<RawConfig, E> {
                Ok(RawConfig::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawConfig, A::Error> {
                let mut out = RawConfig::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.value.as_str() {
                        "tunnel" => out.tunnel = map.next_value()?,
                        "ingress" => out.ingress = map.next_value()?,
                        "warp-routing" => out.warp_routing = map.next_value()?,
                        "originRequest" => out.origin_request = map.next_value()?,
                        _ => {
                            let value = map.next_value::<serde_json::Value>()?;
                            let line = key.referenced.line();
                            out.settings.insert(key.value, Setting { value, line });
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
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
