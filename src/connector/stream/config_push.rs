//! Configuration pushes over http2 (spec §3.8, §5.6).

#![forbid(unsafe_code)]

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::Request;

use super::error::{Cause, Side, StreamError};
use crate::connector::core::Core;
use crate::proto::http2::{ConfigPushRequest, ConfigPushResponse};

/// A configuration push over http2 (spec §3.8, §5.6): a newer version replaces the ingress
/// rules; an older one is acknowledged with the current version; a bad one keeps the rules.
pub(super) async fn config_update(
    core: &Core,
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
) -> Result<u16, StreamError> {
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(StreamError::edge)?;
        crate::runtime::h2stream::release(&mut body, chunk.len());
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
    let mut resp = http::Response::new(());
    *resp.status_mut() = http::StatusCode::OK;
    let mut send = respond
        .send_response(resp, false)
        .map_err(StreamError::edge)?;
    send.send_data(Bytes::from(json), true)
        .map_err(StreamError::edge)?;
    Ok(200)
}

fn apply_push(core: &Core, push: &ConfigPushRequest) -> ConfigPushResponse {
    let shared = &core.shared;
    // Held while parsing so two cores applying pushes at once cannot go backwards.
    let Ok(mut current) = shared.config_version.lock() else {
        return ConfigPushResponse {
            last_applied_version: -1,
            err: Some("configuration state unavailable".into()),
        };
    };
    if push.version <= *current {
        return ConfigPushResponse {
            last_applied_version: *current,
            err: None,
        };
    }
    match crate::connector::remote_config::parse_remote(push.config.get().as_bytes()) {
        Ok(table) => {
            shared.ingress.publish(table);
            *current = push.version;
            log::info!(version = push.version, config = push.config.get(); "Updated to new configuration");
            ConfigPushResponse {
                last_applied_version: push.version,
                err: None,
            }
        }
        Err(e) => {
            log::error!(version = push.version, error = e.as_str(); "Failed to apply remote configuration");
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
