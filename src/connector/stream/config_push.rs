//! Configuration pushes over http2 (spec §3.8, §5.6).

#![forbid(unsafe_code)]

use bytes::Bytes;

use super::error::{Cause, Side, StreamError};
use super::{BodyReader, ResponseSender};
use crate::connector::core::Core;
use crate::proto::http2::{ConfigPushRequest, ConfigPushResponse};

/// A configuration push over http2 (spec §3.8, §5.6): a newer version replaces the ingress
/// rules; an older one is acknowledged with the current version; a bad one keeps the rules.
pub(super) async fn config_update<B: BodyReader, R: ResponseSender>(
    core: &Core,
    mut body: B,
    respond: &mut R,
) -> Result<u16, StreamError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.chunk().await? {
        body.release(chunk.len());
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 16 << 20 {
            return Err(config_push("configuration push too large".into()));
        }
    }
    let push: ConfigPushRequest = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        // cloudflared answers a body it cannot decode with its 502.
        Err(e) => return Err(config_push(e.to_string())),
    };
    let reply = apply_push(core, &push);
    let json = serde_json::to_string(&reply).map_err(|e| config_push(e.to_string()))?;
    respond.send_plain(200, Bytes::from(json))?;
    Ok(200)
}

fn apply_push(core: &Core, push: &ConfigPushRequest) -> ConfigPushResponse {
    apply(core, push.version, push.config.get())
}

/// Applies a remote configuration (spec §5.6) when `version` is newer than the current one;
/// shared by the http2 push and QUIC's `updateConfiguration` RPC.
pub(crate) fn apply(core: &Core, version: i32, config: &str) -> ConfigPushResponse {
    let shared = &core.shared;
    // Held while parsing so two cores applying pushes at once cannot go backwards.
    let Ok(mut current) = shared.config_version.lock() else {
        return ConfigPushResponse {
            last_applied_version: -1,
            err: Some("configuration state unavailable".into()),
        };
    };
    if version <= *current {
        return ConfigPushResponse {
            last_applied_version: *current,
            err: None,
        };
    }
    match crate::connector::remote_config::parse_remote(config.as_bytes()) {
        Ok(table) => {
            shared.ingress.publish(table);
            *current = version;
            log::info!(version = version, config = config; "Updated to new configuration");
            ConfigPushResponse {
                last_applied_version: version,
                err: None,
            }
        }
        Err(e) => {
            log::error!(version = version, error = e.as_str(); "Failed to apply remote configuration");
            ConfigPushResponse {
                last_applied_version: *current,
                err: Some(e),
            }
        }
    }
}

fn config_push(reason: String) -> StreamError {
    StreamError::new(Side::Local, Cause::ConfigPush(reason))
}
