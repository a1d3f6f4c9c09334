//! The stream interface over an `h2` server stream (the http2 transport).

#![forbid(unsafe_code)]

use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request};

use super::response::{error_head, origin_head};
use super::{
    Answer, BodyReader, BodyWriter, Cause, EdgeStream, ResponseHead, ResponseSender, Side,
    StreamError, StreamHead,
};
use crate::proto::http2::classify;
use crate::runtime::h2stream::{release, send_all};

/// An edge-opened h2 stream.
pub struct H2Stream {
    pub req: Request<RecvStream>,
    pub respond: SendResponse<Bytes>,
}

impl EdgeStream for H2Stream {
    type Body = H2Body;
    type Respond = H2Respond;

    fn into_parts(self) -> (StreamHead, H2Body, H2Respond) {
        let (parts, body) = self.req.into_parts();
        let kind = classify(
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        let head = StreamHead {
            kind,
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
        };
        (head, H2Body(body), H2Respond(self.respond))
    }
}

/// The request body of an h2 stream.
pub struct H2Body(pub RecvStream);

impl BodyReader for H2Body {
    async fn chunk(&mut self) -> Result<Option<Bytes>, StreamError> {
        match self.0.data().await {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(StreamError::edge(e)),
        }
    }

    fn release(&mut self, n: usize) {
        release(&mut self.0, n);
    }

    fn is_end(&self) -> bool {
        self.0.is_end_stream()
    }
}

/// The response side of an h2 stream.
pub struct H2Respond(pub SendResponse<Bytes>);

impl ResponseSender for H2Respond {
    type Writer = H2BodyWriter;

    fn send(
        &mut self,
        head: &ResponseHead,
        end: bool,
    ) -> Result<Option<H2BodyWriter>, StreamError> {
        let send = self
            .0
            .send_response(origin_head(head.status, &head.headers), end)
            .map_err(StreamError::edge)?;
        Ok((!end).then_some(H2BodyWriter(send)))
    }

    fn fail(&mut self, err: &StreamError) {
        H2Respond::fail_on(&mut self.0, err);
    }

    fn refuse(&mut self) {
        self.0.send_reset(h2::Reason::REFUSED_STREAM);
    }

    fn send_plain(&mut self, status: u16, body: Bytes) -> Result<(), StreamError> {
        let mut resp = http::Response::new(());
        *resp.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        let end = body.is_empty();
        let mut send = self.0.send_response(resp, end).map_err(StreamError::edge)?;
        if !end {
            send.send_data(body, true).map_err(StreamError::edge)?;
        }
        Ok(())
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<StreamError> {
        let r = ready!(self.0.poll_reset(cx));
        Poll::Ready(reset_error(r))
    }
}

impl H2Respond {
    /// [`ResponseSender::fail`] on a bare `SendResponse`.
    pub fn fail_on(respond: &mut SendResponse<Bytes>, err: &StreamError) {
        match err.answer(false) {
            Answer::BadGateway => {
                let _ = respond.send_response(error_head(), true);
            }
            Answer::Forbidden => {
                let _ = respond.send_response(origin_head(403, &[]), true);
            }
            Answer::Reset => respond.send_reset(h2::Reason::CANCEL),
        }
    }
}

/// The response body of an h2 stream.
pub struct H2BodyWriter(pub SendStream<Bytes>);

impl BodyWriter for H2BodyWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StreamError> {
        send_all(&mut self.0, data).await.map_err(StreamError::edge)
    }

    fn finish(&mut self, trailers: Option<HeaderMap>) -> Result<(), StreamError> {
        match trailers {
            Some(t) if !t.is_empty() => self.0.send_trailers(t),
            _ => self.0.send_data(Bytes::new(), true),
        }
        .map_err(StreamError::edge)
    }

    async fn write_last(&mut self, data: Bytes) -> Result<(), StreamError> {
        crate::runtime::h2stream::send_all_last(&mut self.0, data)
            .await
            .map_err(StreamError::edge)
    }

    fn abort(&mut self) {
        self.0.send_reset(h2::Reason::INTERNAL_ERROR);
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<StreamError> {
        let r = ready!(self.0.poll_reset(cx));
        Poll::Ready(reset_error(r))
    }
}

fn reset_error(r: Result<h2::Reason, h2::Error>) -> StreamError {
    match r {
        Ok(_) => StreamError::new(Side::Edge, Cause::EdgeReset),
        Err(e) => StreamError::edge(e),
    }
}
