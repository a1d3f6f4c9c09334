//! `http_status:NNN` and Access refusals: a fixed status, no body.

#![forbid(unsafe_code)]

use bytes::Bytes;
use h2::server::SendResponse;

use super::error::StreamError;
use super::response::origin_head;

/// A fixed status with an empty body and no headers (`http_status:NNN`, Access refusals).
pub(super) fn status_only(
    respond: &mut SendResponse<Bytes>,
    code: u16,
) -> Result<u16, StreamError> {
    respond
        .send_response(origin_head(code, &[]), true)
        .map_err(StreamError::edge)?;
    Ok(code)
}
