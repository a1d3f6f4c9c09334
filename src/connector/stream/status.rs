//! `http_status:NNN` and Access refusals: a fixed status, no body.

#![forbid(unsafe_code)]

use super::error::StreamError;
use super::{ResponseHead, ResponseSender};

/// A fixed status with an empty body and no headers (`http_status:NNN`, Access refusals).
pub(super) fn status_only<R: ResponseSender>(
    respond: &mut R,
    code: u16,
) -> Result<u16, StreamError> {
    let head = ResponseHead {
        status: code,
        headers: Vec::new(),
    };
    respond.send(&head, true)?;
    Ok(code)
}
