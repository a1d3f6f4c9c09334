//! An in-memory transport for tests: the stream traits over shared, single-threaded state that
//! a test drives as the edge would. The test pushes request-body chunks within a flow-control
//! window (a push waits while the connector holds too much unreleased credit), and reads back
//! what the connector sent: the response head, body bytes, trailers, an abort, a refusal.
//!
//! It models what the pipeline relies on in a real transport and nothing more: credit is held
//! per chunk until [`BodyReader::release`], the response body is bounded by a send window the
//! test can open or keep shut, and a reset wakes every waiting side.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::{
    Answer, BodyReader, BodyWriter, Cause, EdgeStream, ResponseHead, ResponseSender, Side,
    StreamError, StreamHead,
};

/// Everything both sides see.
#[derive(Default)]
struct State {
    /// Request-body chunks pushed by the edge, not yet taken by the connector.
    queue: VecDeque<Bytes>,
    ended: bool,
    reset: bool,
    /// Request-body credit: bytes taken or queued but not released.
    held: usize,
    window: usize,
    /// Total bytes released by the connector.
    released: usize,
    /// The response head, with whether it ended the stream.
    head: Option<(ResponseHead, bool)>,
    /// A bare (non-origin) reply: status and body.
    plain: Option<(u16, Bytes)>,
    failed: Option<Answer>,
    refused: bool,
    body: BytesMut,
    /// Response-body bytes the connector may still send.
    send_window: usize,
    finished: bool,
    trailers: Option<HeaderMap>,
    aborted: bool,
    /// Tasks to wake on any change (connector side and test side).
    wakers: Vec<Waker>,
}

impl State {
    fn wake(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }

    fn wait(&mut self, cx: &mut Context<'_>) {
        if !self.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            self.wakers.push(cx.waker().clone());
        }
    }
}

type Shared = Rc<RefCell<State>>;

/// The edge's end of one in-memory stream.
#[derive(Clone)]
pub struct MemEdge(Shared);

/// The connector's end: hand it to [`super::serve`].
pub struct MemStream {
    head: StreamHead,
    state: Shared,
}

/// Creates a stream with `head`; the request body may hold `window` unreleased bytes.
pub fn stream(head: StreamHead, window: usize) -> (MemEdge, MemStream) {
    let state = Rc::new(RefCell::new(State {
        window,
        send_window: usize::MAX,
        ..State::default()
    }));
    (MemEdge(state.clone()), MemStream { head, state })
}

impl MemEdge {
    /// Pushes one request-body chunk, waiting until the window has room for it.
    pub async fn push(&self, chunk: Bytes) -> Result<(), &'static str> {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.reset || s.aborted || s.finished || s.failed.is_some() {
                return Poll::Ready(Err("stream over"));
            }
            if s.held + chunk.len() > s.window {
                s.wait(cx);
                return Poll::Pending;
            }
            s.held += chunk.len();
            s.queue.push_back(chunk.clone());
            s.wake();
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Ends the request body.
    pub fn end(&self) {
        let mut s = self.0.borrow_mut();
        s.ended = true;
        s.wake();
    }

    /// Resets the stream as the edge would when the visitor goes away.
    pub fn reset(&self) {
        let mut s = self.0.borrow_mut();
        s.reset = true;
        s.wake();
    }

    /// Sets how many more response-body bytes the connector may send.
    pub fn set_send_window(&self, n: usize) {
        let mut s = self.0.borrow_mut();
        s.send_window = n;
        s.wake();
    }

    /// Request-body bytes released so far.
    pub fn released(&self) -> usize {
        self.0.borrow().released
    }

    /// Request-body bytes pushed and not yet released.
    pub fn held(&self) -> usize {
        self.0.borrow().held
    }

    /// Waits for the response head (`None` if the stream failed, was refused or reset first).
    pub async fn head(&self) -> Option<ResponseHead> {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if let Some((h, _)) = &s.head {
                return Poll::Ready(Some(h.clone()));
            }
            if s.failed.is_some() || s.refused || s.reset || s.plain.is_some() {
                return Poll::Ready(None);
            }
            s.wait(cx);
            Poll::Pending
        })
        .await
    }

    /// Waits until at least `n` response-body bytes arrived (or the body ended) and takes
    /// what arrived.
    pub async fn read(&self, n: usize) -> Bytes {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.body.len() >= n || s.finished || s.aborted || s.reset {
                return Poll::Ready(s.body.split().freeze());
            }
            s.wait(cx);
            Poll::Pending
        })
        .await
    }

    /// Waits for the end of the response (finished, aborted, failed, refused or reset) and
    /// returns the whole outcome.
    pub async fn outcome(&self) -> Outcome {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            let head_ended = matches!(s.head, Some((_, true)));
            let over = s.finished
                || s.aborted
                || s.failed.is_some()
                || s.refused
                || s.plain.is_some()
                || head_ended;
            if !over {
                s.wait(cx);
                return Poll::Pending;
            }
            Poll::Ready(Outcome {
                head: s.head.as_ref().map(|(h, _)| h.clone()),
                body: s.body.split().freeze(),
                trailers: s.trailers.take(),
                finished: s.finished || head_ended,
                aborted: s.aborted,
                failed: s.failed,
                refused: s.refused,
                plain: s.plain.clone(),
            })
        })
        .await
    }
}

/// How a stream ended, seen from the edge.
#[derive(Debug)]
pub struct Outcome {
    pub head: Option<ResponseHead>,
    /// Response-body bytes not yet taken with [`MemEdge::read`].
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    /// The body ended cleanly.
    pub finished: bool,
    pub aborted: bool,
    pub failed: Option<Answer>,
    pub refused: bool,
    pub plain: Option<(u16, Bytes)>,
}

impl EdgeStream for MemStream {
    type Body = MemBody;
    type Respond = MemRespond;

    fn into_parts(self) -> (StreamHead, MemBody, MemRespond) {
        (
            self.head,
            MemBody(self.state.clone()),
            MemRespond(self.state),
        )
    }
}

fn reset_error() -> StreamError {
    StreamError::new(Side::Edge, Cause::EdgeReset)
}

/// The request body.
pub struct MemBody(Shared);

impl BodyReader for MemBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, StreamError> {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.reset {
                return Poll::Ready(Err(reset_error()));
            }
            if let Some(c) = s.queue.pop_front() {
                return Poll::Ready(Ok(Some(c)));
            }
            if s.ended {
                return Poll::Ready(Ok(None));
            }
            s.wait(cx);
            Poll::Pending
        })
        .await
    }

    fn release(&mut self, n: usize) {
        let mut s = self.0.borrow_mut();
        let n = n.min(s.held);
        s.held -= n;
        s.released += n;
        s.wake();
    }

    fn is_end(&self) -> bool {
        let s = self.0.borrow();
        s.ended && s.queue.is_empty()
    }
}

/// The response side.
pub struct MemRespond(Shared);

impl ResponseSender for MemRespond {
    type Writer = MemWriter;

    fn send(&mut self, head: &ResponseHead, end: bool) -> Result<Option<MemWriter>, StreamError> {
        let mut s = self.0.borrow_mut();
        if s.reset {
            return Err(reset_error());
        }
        s.head = Some((head.clone(), end));
        s.wake();
        Ok((!end).then(|| MemWriter(self.0.clone())))
    }

    fn fail(&mut self, err: &StreamError) {
        let mut s = self.0.borrow_mut();
        s.failed = Some(err.answer(false));
        s.wake();
    }

    fn refuse(&mut self) {
        let mut s = self.0.borrow_mut();
        s.refused = true;
        s.wake();
    }

    fn send_plain(&mut self, status: u16, body: Bytes) -> Result<(), StreamError> {
        let mut s = self.0.borrow_mut();
        s.plain = Some((status, body));
        s.wake();
        Ok(())
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<StreamError> {
        poll_reset(&self.0, cx)
    }
}

fn poll_reset(state: &Shared, cx: &mut Context<'_>) -> Poll<StreamError> {
    let mut s = state.borrow_mut();
    if s.reset {
        return Poll::Ready(reset_error());
    }
    s.wait(cx);
    Poll::Pending
}

/// The response body.
pub struct MemWriter(Shared);

impl BodyWriter for MemWriter {
    async fn write(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let n = poll_fn(|cx| {
                let mut s = self.0.borrow_mut();
                if s.reset {
                    return Poll::Ready(Err(reset_error()));
                }
                if s.send_window == 0 {
                    s.wait(cx);
                    return Poll::Pending;
                }
                let n = s.send_window.min(data.len());
                s.send_window -= n;
                Poll::Ready(Ok(n))
            })
            .await?;
            let part = data.split_to(n);
            let mut s = self.0.borrow_mut();
            s.body.extend_from_slice(&part);
            s.wake();
        }
        Ok(())
    }

    fn finish(&mut self, trailers: Option<HeaderMap>) -> Result<(), StreamError> {
        let mut s = self.0.borrow_mut();
        if s.reset {
            return Err(reset_error());
        }
        s.finished = true;
        s.trailers = trailers.filter(|t| !t.is_empty());
        s.wake();
        Ok(())
    }

    fn abort(&mut self) {
        let mut s = self.0.borrow_mut();
        s.aborted = true;
        s.wake();
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<StreamError> {
        poll_reset(&self.0, cx)
    }
}
