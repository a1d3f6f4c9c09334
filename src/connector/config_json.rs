//! The metrics server's `/config`: the running ingress as cloudflared's orchestrator serialises it
//! (`GetVersionedConfigJSON`): `{"version":N,"config":{"ingress":[rules],"warp-routing":{..},
//! "originRequest":{..}}}`, Go's field order and encodings (durations as float seconds, nil
//! slices as `null`, warp-routing with only its non-default settings).

use std::time::Duration;

use crate::ingress::{Access, Ingress, OriginRequest, Rule, WarpRouting};

/// Writes a JSON object from (key, already-encoded value) pairs, in order.
fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", string(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A duration as Go's `CustomDuration` marshals it: `Duration.Seconds()` as a JSON number.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 && s < 1e15 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

fn strings(list: &[String]) -> String {
    if list.is_empty() {
        return "null".into();
    }
    let items: Vec<String> = list.iter().map(|s| string(s)).collect();
    format!("[{}]", items.join(","))
}

fn access(a: &Access) -> String {
    let mut f = Vec::new();
    if a.required {
        f.push(("required", "true".to_owned()));
    }
    f.push(("teamName", string(&a.team_name)));
    f.push(("audTag", strings(&a.aud_tag)));
    if !a.environment.is_empty() {
        f.push(("environment", string(&a.environment)));
    }
    object(&f)
}

/// cloudflared's resolved `OriginRequestConfig`. Its `ipRules` entries have only private fields
/// in Go, so each prints as `{}`; `access` has no effective `omitempty` (a struct) and always
/// prints.
pub fn origin_request(o: &OriginRequest) -> String {
    let ip_rules = if o.ip_rules.is_empty() {
        "null".to_owned()
    } else {
        format!("[{}]", vec!["{}"; o.ip_rules.len()].join(","))
    };
    object(&[
        ("connectTimeout", seconds(o.connect_timeout)),
        ("tlsTimeout", seconds(o.tls_timeout)),
        ("tcpKeepAlive", seconds(o.tcp_keep_alive)),
        ("noHappyEyeballs", o.no_happy_eyeballs.to_string()),
        ("keepAliveTimeout", seconds(o.keep_alive_timeout)),
        ("keepAliveConnections", o.keep_alive_connections.to_string()),
        ("httpHostHeader", string(&o.http_host_header)),
        ("originServerName", string(&o.origin_server_name)),
        ("matchSNItoHost", o.match_sni_to_host.to_string()),
        ("caPool", string(&o.ca_pool)),
        ("noTLSVerify", o.no_tls_verify.to_string()),
        (
            "disableChunkedEncoding",
            o.disable_chunked_encoding.to_string(),
        ),
        ("bastionMode", o.bastion_mode.to_string()),
        ("proxyAddress", string(&o.proxy_address)),
        ("proxyPort", o.proxy_port.to_string()),
        ("proxyType", string(&o.proxy_type)),
        ("ipRules", ip_rules),
        ("http2Origin", o.http2_origin.to_string()),
        ("access", access(&o.access)),
    ])
}

/// One rule as Go marshals `ingress.Rule`: `Handlers` has no JSON tag (so it prints under its
/// Go name); it holds the Access JWT check when the rule requires Access, which Go prints as
/// an object without exported fields.
fn rule(r: &Rule) -> String {
    let handlers = if r.access.as_ref().is_some_and(|a| a.required) {
        "[{}]".to_owned()
    } else {
        "null".to_owned()
    };
    object(&[
        ("hostname", string(&r.hostname)),
        (
            "path",
            r.path
                .as_ref()
                .map_or_else(|| "null".to_owned(), |p| string(p.as_str())),
        ),
        ("service", string(&r.service.to_string())),
        ("Handlers", handlers),
        ("originRequest", origin_request(&r.options)),
    ])
}

/// `warp-routing` as cloudflared's `RawConfig`: only the settings that differ from its defaults
/// (connect timeout 5 s, no flow limit, keepalive 30 s).
fn warp_routing(w: &WarpRouting) -> String {
    let d = WarpRouting::default();
    let mut f = Vec::new();
    if w.connect_timeout != d.connect_timeout {
        f.push(("connectTimeout", seconds(w.connect_timeout)));
    }
    if w.max_active_flows != d.max_active_flows {
        f.push(("maxActiveFlows", w.max_active_flows.to_string()));
    }
    if w.tcp_keep_alive != d.tcp_keep_alive {
        f.push(("tcpKeepAlive", seconds(w.tcp_keep_alive)));
    }
    object(&f)
}

/// The `/config` body (no trailing newline, as Go's `w.Write(json)`).
pub fn versioned_config_json(version: i32, ingress: &Ingress) -> String {
    let rules: Vec<String> = ingress.rules.iter().map(rule).collect();
    object(&[
        ("version", version.to_string()),
        (
            "config",
            object(&[
                ("ingress", format!("[{}]", rules.join(","))),
                ("warp-routing", warp_routing(&ingress.warp_routing)),
                ("originRequest", origin_request(&ingress.defaults)),
            ]),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_float_seconds() {
        assert_eq!(seconds(Duration::from_secs(30)), "30");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds(Duration::ZERO), "0");
    }

    #[test]
    fn config_is_valid_json_in_cloudflared_shape() {
        let yaml = "ingress:\n  - hostname: a.test\n    path: ^/x\n    service: http://127.0.0.1:8080\n    originRequest:\n      connectTimeout: 2s\n  - service: http_status:404\nwarp-routing:\n  maxActiveFlows: 7\n";
        let file = crate::config::file::parse_config(yaml, std::path::Path::new("c.yml")).unwrap();
        let ingress = Ingress::from_config(&file.raw).unwrap();
        let text = versioned_config_json(3, &ingress);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 3);
        let rules = v["config"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["hostname"], "a.test");
        assert_eq!(rules[0]["path"], "^/x");
        assert_eq!(rules[0]["service"], "http://127.0.0.1:8080");
        assert_eq!(rules[0]["originRequest"]["connectTimeout"], 2);
        assert_eq!(rules[1]["path"], serde_json::Value::Null);
        assert_eq!(rules[1]["service"], "http_status:404");
        assert_eq!(
            v["config"]["warp-routing"],
            serde_json::json!({"maxActiveFlows": 7})
        );
        assert_eq!(v["config"]["originRequest"]["keepAliveConnections"], 100);
        assert!(text.starts_with("{\"version\":3,\"config\":{\"ingress\":[{\"hostname\":"));
    }
}
