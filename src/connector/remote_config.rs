//! Remote configuration pushes (spec §3.8, §5.6): the edge sends `{"version":N,"config":{...}}`
//! and a newer version replaces the ingress rules. The remote JSON differs from `config.yml`
//! only in writing durations as integer seconds; they are rewritten as Go duration strings and
//! the result goes through the same parser and validation as the local file.

use std::path::Path;

use serde_json::Value;

use crate::config::parse_config;
use crate::ingress::{Ingress, IngressTable};

/// Duration-valued keys that the remote JSON carries as integer seconds.
const DURATION_KEYS: [&str; 4] = [
    "connectTimeout",
    "tlsTimeout",
    "tcpKeepAlive",
    "keepAliveTimeout",
];

/// Parses and validates a remote configuration object into an ingress table.
pub fn parse_remote(config: &[u8]) -> Result<IngressTable, String> {
    let mut value: Value = serde_json::from_slice(config).map_err(|e| e.to_string())?;
    seconds_to_durations(&mut value);
    let empty_ingress = value
        .get("ingress")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if empty_ingress {
        // An empty list means cloudflared's default rule: 503 for everything.
        return Ok(IngressTable::new(Ingress::default_503()));
    }
    let text = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    // YAML is a superset of JSON: the file parser reads it with the same rules and errors.
    let file = parse_config(&text, Path::new("remote configuration")).map_err(|e| e.to_string())?;
    let ingress = Ingress::from_config(&file.raw).map_err(|e| e.to_string())?;
    Ok(IngressTable::new(ingress))
}

fn seconds_to_durations(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if DURATION_KEYS.contains(&k.as_str())
                    && let Some(n) = child.as_i64()
                {
                    *child = Value::String(format!("{n}s"));
                } else {
                    seconds_to_durations(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(seconds_to_durations),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::Matched;

    #[test]
    fn remote_json_with_integer_seconds() {
        let json = br#"{"ingress":[{"hostname":"a.com","service":"http://localhost:1","originRequest":{"connectTimeout":7}},{"service":"http_status:418"}],"warp-routing":{"connectTimeout":3}}"#;
        let table = parse_remote(json).unwrap();
        let Matched::Rule(i) = table.find("a.com", "/") else {
            panic!("internal rule")
        };
        assert_eq!(table.rule(i).options.connect_timeout.as_secs(), 7);
        assert_eq!(table.ingress().warp_routing.connect_timeout.as_secs(), 3);
        let empty = parse_remote(br#"{"ingress":[]}"#).unwrap();
        assert_eq!(
            empty.ingress().rules[0].service.to_string(),
            "http_status:503"
        );
        assert!(
            parse_remote(br#"{"ingress":[{"hostname":"a.com","service":"http://x"}]}"#).is_err()
        );
        assert!(parse_remote(b"not json").is_err());
    }
}
