//! The one error type of the data path: what failed ([`Cause`]), on which side ([`Side`]) and
//! whether the request may be retried. [`StreamError::answer`], [`StreamError::metric_label`]
//! and [`StreamError::log`] are the only places that turn it into a 502, a 403, a stream reset,
//! a metric label or a log line.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::connector::origin::DialError;
use crate::connector::origin::http::ResponseError;

/// Which side of the connector failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The edge stream (reset by the edge, window or framing errors from the edge).
    Edge,
    /// The origin (dial, TLS, I/O, a malformed or missing response).
    Origin,
    /// The connector itself: ingress policy, an unusable request, a limit of ours.
    Local,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("writing request to origin: {0}")]
    OriginWrite(io::Error),
    #[error(transparent)]
    OriginResponse(#[from] ResponseError),
    #[error("http2 origin: {0}")]
    Http2Origin(h2::Error),
    #[error("origin sent no response head within {0:?}")]
    HeadTimeout(Duration),
    #[error("edge stream: {0}")]
    Edge(h2::Error),
    #[error("edge reset the stream")]
    EdgeReset,
    /// A transport failure on the edge stream other than HTTP/2's (a QUIC stream or connection).
    #[error("edge stream: {0}")]
    EdgeTransport(String),
    /// A request the connector will not serve (bad destination, unsupported service).
    #[error("{0}")]
    Refused(String),
    /// Ingress or Access policy denied the request.
    #[error("{0}")]
    Denied(String),
    #[error("access: {0}")]
    Access(String),
    #[error("{0}")]
    Socks(String),
    #[error("invalid configuration push: {0}")]
    ConfigPush(String),
}

/// A failed stream.
#[derive(Debug)]
pub struct StreamError {
    pub side: Side,
    /// True when nothing reached the origin that could have had an effect there (the request
    /// may be sent again, e.g. on a fresh connection after a stale pooled one).
    pub retry_safe: bool,
    /// The status already sent to the edge when the failure came after the response head
    /// (an aborted download): the stream is reset, never ended as if complete.
    pub after_head: Option<u16>,
    pub cause: Cause,
    /// The ingress rule (index) and its service when the failure happened serving one, for
    /// cloudflared's `ingressRule` / `originService` log fields (`warp-routing` for
    /// private-network TCP, which has no rule).
    pub rule: Option<(Option<usize>, String)>,
}

/// What the edge is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// cloudflared's 502 with `{"src":"cloudflared"}`.
    BadGateway,
    /// 403, empty body.
    Forbidden,
    /// The stream is reset (the response head already left, or the edge is gone).
    Reset,
}

impl StreamError {
    pub fn new(side: Side, cause: Cause) -> StreamError {
        StreamError {
            side,
            retry_safe: false,
            after_head: None,
            cause,
            rule: None,
        }
    }

    /// Records the ingress rule (or `None` for warp-routing) and service being served.
    pub fn in_rule(mut self, index: Option<usize>, service: String) -> StreamError {
        self.rule.get_or_insert((index, service));
        self
    }

    /// An origin failure.
    pub fn origin(cause: impl Into<Cause>) -> StreamError {
        StreamError::new(Side::Origin, cause.into())
    }

    /// The edge stream failed (including a reset by the edge).
    pub fn edge(e: h2::Error) -> StreamError {
        let cause = if e.is_reset() || e.is_go_away() || e.reason() == Some(h2::Reason::CANCEL) {
            Cause::EdgeReset
        } else {
            Cause::Edge(e)
        };
        StreamError::new(Side::Edge, cause)
    }

    /// A request the connector refuses to serve.
    pub fn refused(reason: impl Into<String>) -> StreamError {
        StreamError::new(Side::Local, Cause::Refused(reason.into()))
    }

    /// Marks the error as safe to retry.
    pub fn retry_safe(mut self, safe: bool) -> StreamError {
        self.retry_safe = safe;
        self
    }

    /// Records that the response head (`status`) was already sent.
    pub fn after_head(mut self, status: u16) -> StreamError {
        self.after_head = Some(status);
        self
    }

    /// The answer when nothing was sent yet (`responded == false`) or after the head left.
    pub fn answer(&self, responded: bool) -> Answer {
        if responded || self.after_head.is_some() || self.side == Side::Edge {
            return Answer::Reset;
        }
        match self.cause {
            Cause::Denied(_) => Answer::Forbidden,
            _ => Answer::BadGateway,
        }
    }

    /// The `side` label of the error metric and log field.
    pub fn metric_label(&self) -> &'static str {
        match self.side {
            Side::Edge => "edge",
            Side::Origin => "origin",
            Side::Local => "local",
        }
    }

    /// The log line for this failure (cloudflared's wording for origin failures).
    pub fn log(&self, conn_index: u8) {
        let reason = self.cause.to_string();
        if let Some(status) = self.after_head {
            // Not "200 OK": the visitor got a head and an incomplete body.
            let level = if self.side == Side::Edge {
                log::Level::Debug
            } else {
                log::Level::Error
            };
            return log::log!(
                level,
                "Request aborted after the response head ({status}) was sent, the stream was reset: {reason} ({} side)",
                self.metric_label()
            );
        }
        match self.side {
            // cloudflared logs a failed proxy request twice: the proxy's line with the request's
            // context (event 1 = HTTP, 2 = TCP; `ingressRule`, `originService`) and the
            // connection's `failed to serve incoming request`, both carrying the error. The
            // side field is ours.
            Side::Origin | Side::Local => {
                let error = format!("{UNREACHABLE}: {reason}");
                match &self.rule {
                    Some((Some(rule), service)) => log::error!(
                        event = 1, connIndex = conn_index, originService = service.as_str(),
                        ingressRule = *rule, error = error.as_str(), side = self.metric_label();
                        "{UNREACHABLE}"
                    ),
                    Some((None, service)) => log::error!(
                        event = 2, connIndex = conn_index, originService = service.as_str(),
                        error = error.as_str(), side = self.metric_label();
                        "{UNREACHABLE}"
                    ),
                    None => log::error!(
                        connIndex = conn_index, error = error.as_str(), side = self.metric_label();
                        "{UNREACHABLE}"
                    ),
                }
                log::error!(
                    connIndex = conn_index, error = error.as_str();
                    "failed to serve incoming request"
                );
            }
            // The visitor went away or the edge cancelled: expected, not an origin problem.
            Side::Edge => log::debug!(
                connIndex = conn_index, error = reason.as_str(), side = self.metric_label();
                "Edge stream ended before the response completed"
            ),
        }
    }
}

/// cloudflared's prefix for a proxy failure before the response.
const UNREACHABLE: &str = "Unable to reach the origin service. The service may be down or it may not be responding to traffic from cloudflared";

impl StreamError {
    /// The message a transport that carries errors as text (QUIC's `ConnectResponse.error`)
    /// sends to the edge: cloudflared's wording for origin failures, the cause otherwise.
    pub fn edge_message(&self) -> String {
        match self.side {
            Side::Origin => format!("{UNREACHABLE}: {}", self.cause),
            _ => self.cause.to_string(),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} side)", self.cause, self.metric_label())
    }
}

impl std::error::Error for StreamError {}

impl From<DialError> for StreamError {
    fn from(e: DialError) -> StreamError {
        // Nothing was sent: a failed dial is always safe to retry.
        StreamError::origin(e).retry_safe(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_side_and_progress() {
        let o = StreamError::origin(ResponseError::Eof);
        assert_eq!(o.answer(false), Answer::BadGateway);
        assert_eq!(o.answer(true), Answer::Reset);
        assert_eq!(o.metric_label(), "origin");
        let d = StreamError::new(Side::Local, Cause::Denied("no".into()));
        assert_eq!(d.answer(false), Answer::Forbidden);
        let e = StreamError::edge(h2::Error::from(h2::Reason::CANCEL));
        assert_eq!(e.answer(false), Answer::Reset);
        assert!(matches!(e.cause, Cause::EdgeReset));
        assert_eq!(e.metric_label(), "edge");
    }
}
