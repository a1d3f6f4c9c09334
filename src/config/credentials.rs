//! Tunnel credentials: the JSON file `cloudflared tunnel create` writes, and the tunnel token.
//!
//! Both carry the same four facts (account tag, tunnel secret, tunnel ID, optional endpoint).
//! Parsing is pure: callers read the file or environment and hand the text in. Every failure
//! names what was wrong and never echoes the secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

use super::secret::Secret;

/// The identity a connector registers with (spec §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Cloudflare account ID (32 hex chars in practice), sent as `TunnelAuth.accountTag`.
    pub account_tag: String,
    /// Raw secret bytes, sent as `TunnelAuth.tunnelSecret`.
    pub tunnel_secret: Secret,
    /// The tunnel's UUID, sent as `registerConnection.tunnelId`.
    pub tunnel_id: Uuid,
    /// Optional region (`fed` = FedRAMP); selects the SRV service name during discovery.
    pub endpoint: String,
}

/// Why a credentials file or token could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("invalid JSON in tunnel credentials file {path}: {reason}")]
    Json { path: String, reason: String },
    #[error("tunnel credentials file {path} is missing the {field} field")]
    MissingField { path: String, field: &'static str },
    #[error("tunnel credentials file {path}: {field} is not valid: {reason}")]
    BadField {
        path: String,
        field: &'static str,
        reason: String,
    },
    #[error(
        "{path} looks like an origin certificate (cert.pem), not a tunnel credentials file; pass the <TUNNEL-ID>.json file written by 'cloudflared tunnel create'"
    )]
    PemGiven { path: String },
    /// cloudflared's exact usage error for any malformed token.
    #[error("Provided Tunnel token is not valid.")]
    InvalidToken { reason: String },
}

impl CredentialsError {
    /// A longer explanation for logs (the `Display` text of a token error is cloudflared's fixed one).
    pub fn detail(&self) -> String {
        match self {
            Self::InvalidToken { reason } => {
                format!("Provided Tunnel token is not valid. ({reason})")
            }
            other => other.to_string(),
        }
    }
}

/// Parses a credentials file's contents. `path` only labels errors. Keys match case-insensitively
/// and unknown keys (such as the old `TunnelName`) are ignored, as Go's JSON decoder does.
pub fn parse_credentials_file(text: &str, path: &str) -> Result<Credentials, CredentialsError> {
    if text.trim_start().starts_with("-----BEGIN") {
        return Err(CredentialsError::PemGiven {
            path: path.to_owned(),
        });
    }
    let object = parse_object(text).map_err(|reason| CredentialsError::Json {
        path: path.to_owned(),
        reason,
    })?;
    let field = |name: &'static str| lookup(&object, name);
    let missing = |field| CredentialsError::MissingField {
        path: path.to_owned(),
        field,
    };
    let bad = |field, reason: String| CredentialsError::BadField {
        path: path.to_owned(),
        field,
        reason,
    };
    let account_tag = string_field(field("AccountTag"), "AccountTag")
        .map_err(|r| bad("AccountTag", r))?
        .ok_or_else(|| missing("AccountTag"))?;
    let secret_b64 = string_field(field("TunnelSecret"), "TunnelSecret")
        .map_err(|r| bad("TunnelSecret", r))?
        .ok_or_else(|| missing("TunnelSecret"))?;
    let tunnel_secret = decode_secret(&secret_b64).map_err(|r| bad("TunnelSecret", r))?;
    let tunnel_id = string_field(field("TunnelID"), "TunnelID")
        .map_err(|r| bad("TunnelID", r))?
        .ok_or_else(|| missing("TunnelID"))?;
    let tunnel_id = Uuid::parse_str(&tunnel_id).map_err(|e| bad("TunnelID", e.to_string()))?;
    let endpoint = string_field(field("Endpoint"), "Endpoint")
        .map_err(|r| bad("Endpoint", r))?
        .unwrap_or_default();
    Ok(Credentials {
        account_tag,
        tunnel_secret,
        tunnel_id,
        endpoint,
    })
}

/// Parses a tunnel token: standard base64 (padded) of `{"a":..,"s":..,"t":..,"e":..}`.
/// Surrounding whitespace is trimmed, as cloudflared does for `--token-file`.
pub fn parse_token(token: &str) -> Result<Credentials, CredentialsError> {
    let invalid = |reason: String| CredentialsError::InvalidToken { reason };
    let json = STANDARD
        .decode(token.trim())
        .map_err(|e| invalid(format!("not base64: {e}")))?;
    let text = String::from_utf8(json).map_err(|_| invalid("not UTF-8 JSON".to_owned()))?;
    let object = parse_object(&text).map_err(invalid)?;
    let account_tag = string_field(lookup(&object, "a"), "a")
        .map_err(invalid)?
        .ok_or_else(|| invalid("missing account tag \"a\"".to_owned()))?;
    let secret = string_field(lookup(&object, "s"), "s")
        .map_err(invalid)?
        .ok_or_else(|| invalid("missing secret \"s\"".to_owned()))?;
    let tunnel_secret = decode_secret(&secret).map_err(invalid)?;
    let tunnel_id = string_field(lookup(&object, "t"), "t")
        .map_err(invalid)?
        .ok_or_else(|| invalid("missing tunnel ID \"t\"".to_owned()))?;
    let tunnel_id =
        Uuid::parse_str(&tunnel_id).map_err(|e| invalid(format!("tunnel ID \"t\": {e}")))?;
    let endpoint = string_field(lookup(&object, "e"), "e")
        .map_err(invalid)?
        .unwrap_or_default();
    Ok(Credentials {
        account_tag,
        tunnel_secret,
        tunnel_id,
        endpoint,
    })
}

/// Encodes credentials as a token (used by `ringflare edge init`); inverse of [`parse_token`].
pub fn encode_token(creds: &Credentials) -> String {
    let mut object = serde_json::Map::new();
    object.insert("a".into(), creds.account_tag.clone().into());
    object.insert(
        "s".into(),
        STANDARD.encode(creds.tunnel_secret.expose()).into(),
    );
    object.insert("t".into(), creds.tunnel_id.to_string().into());
    if !creds.endpoint.is_empty() {
        object.insert("e".into(), creds.endpoint.clone().into());
    }
    STANDARD.encode(serde_json::Value::Object(object).to_string())
}

/// Encodes credentials in the file format `cloudflared tunnel create` writes.
pub fn encode_credentials_file(creds: &Credentials) -> String {
    serde_json::json!({
        "AccountTag": creds.account_tag,
        "TunnelSecret": STANDARD.encode(creds.tunnel_secret.expose()),
        "TunnelID": creds.tunnel_id.to_string(),
        "Endpoint": creds.endpoint,
    })
    .to_string()
}

fn parse_object(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("expected a JSON object".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Go's JSON decoder prefers an exact key match, then any case-insensitive one.
fn lookup<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn string_field(value: Option<&serde_json::Value>, name: &str) -> Result<Option<String>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("\"{name}\" must be a string")),
    }
}

/// Decodes the secret (standard base64, padded; Go's decoder skips CR and LF).
fn decode_secret(b64: &str) -> Result<Secret, String> {
    let cleaned: String = b64.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let bytes = STANDARD
        .decode(cleaned)
        .map_err(|e| format!("secret is not valid base64: {e}"))?;
    if bytes.is_empty() {
        return Err("secret is empty".to_owned());
    }
    Ok(Secret::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b7b7d7e-7c1a-4e5b-9f43-2f6a1c3d4e5f";

    fn sample() -> Credentials {
        Credentials {
            account_tag: "0123456789abcdef0123456789abcdef".into(),
            tunnel_secret: Secret::new((0u8..32).collect()),
            tunnel_id: Uuid::parse_str(ID).unwrap(),
            endpoint: String::new(),
        }
    }

    #[test]
    fn credentials_file_round_trip_and_case_insensitive_keys() {
        let text = encode_credentials_file(&sample());
        assert_eq!(parse_credentials_file(&text, "x.json").unwrap(), sample());
        let lower = text
            .replace("AccountTag", "accounttag")
            .replace("TunnelID", "tunnelid");
        let with_extra = lower.replacen('{', "{\"TunnelName\":\"old\",", 1);
        assert_eq!(
            parse_credentials_file(&with_extra, "x.json").unwrap(),
            sample()
        );
    }

    #[test]
    fn credentials_file_errors_name_the_problem() {
        let err = |t: &str| {
            parse_credentials_file(t, "/etc/c.json")
                .unwrap_err()
                .to_string()
        };
        assert!(err("{").starts_with("invalid JSON in tunnel credentials file /etc/c.json"));
        assert!(err("[]").contains("expected a JSON object"));
        assert_eq!(
            err(r#"{"TunnelSecret":"AAAA","TunnelID":"x"}"#),
            "tunnel credentials file /etc/c.json is missing the AccountTag field"
        );
        let bad_b64 = format!(r#"{{"AccountTag":"a","TunnelSecret":"!!!","TunnelID":"{ID}"}}"#);
        assert!(err(&bad_b64).contains("TunnelSecret is not valid: secret is not valid base64"));
        let bad_id = r#"{"AccountTag":"a","TunnelSecret":"AAAA","TunnelID":"nope"}"#;
        assert!(err(bad_id).contains("TunnelID is not valid"));
        assert!(err("-----BEGIN ARGO TUNNEL TOKEN-----").contains("origin certificate"));
    }

    #[test]
    fn token_round_trip_and_whitespace() {
        let token = encode_token(&sample());
        assert_eq!(parse_token(&format!("  {token}\n")).unwrap(), sample());
    }

    #[test]
    fn malformed_tokens_are_rejected_without_panicking() {
        let good = encode_token(&sample());
        let mut cases = vec![
            String::new(),
            "not base64 at all".into(),
            STANDARD.encode("not json"),
            STANDARD.encode("[1,2]"),
            STANDARD.encode(r#"{"a":"x","t":"0b7b7d7e-7c1a-4e5b-9f43-2f6a1c3d4e5f"}"#),
            STANDARD.encode(r#"{"a":"x","s":"%%%","t":"0b7b7d7e-7c1a-4e5b-9f43-2f6a1c3d4e5f"}"#),
            STANDARD.encode(r#"{"a":"x","s":"AAAA","t":"nope"}"#),
            STANDARD.encode(r#"{"a":1,"s":"AAAA","t":"0b7b7d7e-7c1a-4e5b-9f43-2f6a1c3d4e5f"}"#),
        ];
        for cut in [1, good.len() / 2, good.len() - 3] {
            cases.push(good[..cut].to_owned());
        }
        for case in cases {
            let err = parse_token(&case).unwrap_err();
            assert_eq!(err.to_string(), "Provided Tunnel token is not valid.");
            assert!(
                !err.detail().contains("AAEC"),
                "detail must not echo the secret"
            );
        }
    }

    #[test]
    fn secret_is_masked_in_debug() {
        let dbg = format!("{:?}", sample());
        assert!(dbg.contains("*****"));
        assert!(!dbg.contains("[0, 1, 2"));
    }
}
