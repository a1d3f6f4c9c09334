//! The life of one edge connection after its HTTP/2 handshake, as a pure state machine: time is
//! a parameter, nothing here does I/O. [`super::edge_conn`] feeds it what happened (a stream
//! was accepted, the control stream registered or failed, shutdown began, a PING was answered,
//! a deadline passed) and carries out what it answers.
//!
//! Deadlines it keeps (cloudflared 2026.8.2 / spec §3.3, §3.9):
//! - the edge must open the control stream within [`Timings::control`] of the handshake;
//! - liveness (issue 10 item 5): the connector sends an HTTP/2 PING every
//!   [`Timings::ping_interval`] and gives up on the edge when the answer takes longer than
//!   [`Timings::ping_timeout`]. cloudflared's http2 transport sets no `ReadIdleTimeout` on its
//!   `http2.Server`, so it sends no PINGs and relies on Go's default TCP keepalive (15 s), which
//!   a stopped edge process still answers from its kernel: it never notices a hung edge. We use
//!   5 s / 5 s, so a hung edge is dropped 5-10 s after it stopped answering;
//! - after shutdown began, in-flight streams have the grace period; then the connection ends.

use std::time::{Duration, Instant};

/// Default interval between liveness PINGs.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Default limit for the edge's PING acknowledgement.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The limits one connection runs under.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// How long after the handshake the edge may take to open the control stream.
    pub control: Duration,
    /// Time between PINGs (measured from the previous answer).
    pub ping_interval: Duration,
    /// How long a PING may go unanswered.
    pub ping_timeout: Duration,
    /// After shutdown began: how long in-flight work may take.
    pub grace: Duration,
}

/// How the connection ended, as the state machine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Shutdown: a clean end, no reconnect.
    Shutdown,
    /// The edge closed the connection (or it broke) while not shutting down.
    EdgeClosed,
    /// The edge opened no control stream in time.
    NoControl,
    /// The control stream ended while the connection was meant to live.
    ControlClosed,
    /// The edge did not answer a PING in time.
    Unresponsive,
}

/// What happened, told to [`ConnState::on`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The edge opened a stream; `control` when it asks to be the control stream.
    Accepted { control: bool },
    /// registerConnection succeeded.
    Registered,
    /// The control stream's RPC system ended.
    ControlClosed,
    /// The control stream unregistered the connection (after shutdown began).
    Unregistered,
    /// No data stream is in flight any more.
    Drained,
    /// Shutdown began.
    Stop,
    /// The edge acknowledged our PING.
    Pong,
    /// The HTTP/2 connection ended (closed by the edge, GOAWAY, I/O error).
    ConnectionEnded,
    /// The deadline from [`ConnState::next_deadline`] passed (or any time; a no-op if none did).
    Tick,
}

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Start the control-stream task on the stream just accepted.
    StartControl,
    /// Serve the stream just accepted as a data stream (a second control stream included: the
    /// stream code refuses it).
    ServeStream,
    /// Publish the registration (logs, `/ready`, metrics).
    MarkRegistered,
    /// Withdraw the connection from `/ready`; keep serving what is in flight.
    MarkUnregistered,
    /// Send a PING.
    SendPing,
    /// Say goodbye with GOAWAY and let in-flight streams finish.
    GoAway,
    /// End the connection.
    Finish(End),
}

/// Where the liveness check stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    /// Next PING due at this time.
    Idle(Instant),
    /// A PING is out; the answer is due by this time.
    Waiting(Instant),
}

/// One connection's register / drain / liveness state.
#[derive(Debug)]
pub struct ConnState {
    t: Timings,
    /// Until the control stream opens: when it must have.
    control_deadline: Option<Instant>,
    control_seen: bool,
    registered: bool,
    /// Shutdown began: when in-flight work must be done.
    drain_deadline: Option<Instant>,
    /// Unregistered and waiting for in-flight streams to finish.
    draining: bool,
    liveness: Liveness,
}

impl ConnState {
    /// A connection whose HTTP/2 handshake completed at `now`.
    pub fn new(now: Instant, t: Timings) -> Self {
        ConnState {
            t,
            control_deadline: Some(now + t.control),
            control_seen: false,
            registered: false,
            drain_deadline: None,
            draining: false,
            liveness: Liveness::Idle(now + t.ping_interval),
        }
    }

    /// Whether the control stream registered the connection and has not unregistered it.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Shutdown began.
    pub fn stopping(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// Unregistered and waiting for the in-flight streams: the driver reports
    /// [`Event::Drained`] when none is left.
    pub fn wants_drained(&self) -> bool {
        self.draining
    }

    /// The earliest time at which a [`Event::Tick`] may change something.
    pub fn next_deadline(&self) -> Instant {
        let live = match self.liveness {
            Liveness::Idle(at) | Liveness::Waiting(at) => at,
        };
        [self.control_deadline, self.drain_deadline]
            .into_iter()
            .flatten()
            .fold(live, Instant::min)
    }

    /// Feeds one event that happened at `now`; returns what to do.
    pub fn on(&mut self, now: Instant, ev: Event) -> Action {
        match ev {
            Event::Accepted { control: true } if !self.control_seen => {
                self.control_seen = true;
                self.control_deadline = None;
                Action::StartControl
            }
            Event::Accepted { .. } => Action::ServeStream,
            Event::Registered => {
                self.registered = true;
                Action::MarkRegistered
            }
            Event::ControlClosed if self.stopping() => Action::None,
            Event::ControlClosed => Action::Finish(End::ControlClosed),
            Event::Unregistered => {
                self.registered = false;
                self.draining = true;
                Action::MarkUnregistered
            }
            Event::Drained if self.draining => {
                self.draining = false;
                Action::GoAway
            }
            Event::Drained => Action::None,
            Event::Stop if self.stopping() => Action::None,
            Event::Stop => {
                self.drain_deadline = Some(now + self.t.grace);
                if self.control_seen {
                    Action::None
                } else {
                    Action::Finish(End::Shutdown)
                }
            }
            Event::Pong => {
                self.liveness = Liveness::Idle(now + self.t.ping_interval);
                Action::None
            }
            Event::ConnectionEnded if self.stopping() => Action::Finish(End::Shutdown),
            Event::ConnectionEnded => Action::Finish(End::EdgeClosed),
            Event::Tick => self.tick(now),
        }
    }

    fn tick(&mut self, now: Instant) -> Action {
        if self.drain_deadline.is_some_and(|d| now >= d) {
            return Action::Finish(End::Shutdown);
        }
        if self.control_deadline.is_some_and(|d| now >= d) {
            return Action::Finish(End::NoControl);
        }
        match self.liveness {
            Liveness::Waiting(due) if now >= due => Action::Finish(End::Unresponsive),
            Liveness::Idle(at) if now >= at => {
                self.liveness = Liveness::Waiting(now + self.t.ping_timeout);
                Action::SendPing
            }
            _ => Action::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timings() -> Timings {
        Timings {
            control: 10 * S,
            ping_interval: 5 * S,
            ping_timeout: 5 * S,
            grace: 30 * S,
        }
    }

    /// Runs `(seconds after start, event, expected action)` rows against one fresh state.
    fn run(rows: &[(u64, Event, Action)]) -> ConnState {
        let t0 = Instant::now();
        let mut st = ConnState::new(t0, timings());
        for (i, &(secs, ev, want)) in rows.iter().enumerate() {
            let got = st.on(t0 + Duration::from_secs(secs), ev);
            assert_eq!(got, want, "row {i}: {ev:?} at {secs}s");
        }
        st
    }

    use Action::*;
    use Event::*;

    #[test]
    fn registers_serves_and_drains_on_shutdown() {
        let st = run(&[
            (0, Accepted { control: true }, StartControl),
            (0, Accepted { control: false }, ServeStream),
            (1, Registered, MarkRegistered),
            (2, Stop, Action::None),
            (2, Stop, Action::None),
            (3, Unregistered, MarkUnregistered),
            (3, Event::ControlClosed, Action::None),
            (4, Drained, GoAway),
            (4, Drained, Action::None),
            (5, ConnectionEnded, Finish(End::Shutdown)),
        ]);
        assert!(!st.registered());
    }

    #[test]
    fn a_second_control_stream_is_just_a_stream() {
        run(&[
            (0, Accepted { control: true }, StartControl),
            (0, Accepted { control: true }, ServeStream),
        ]);
    }

    #[test]
    fn no_control_stream_in_time_ends_the_connection() {
        run(&[(4, Tick, Action::None), (10, Tick, Finish(End::NoControl))]);
    }

    #[test]
    fn shutdown_before_the_control_stream_ends_at_once() {
        run(&[(1, Stop, Finish(End::Shutdown))]);
    }

    #[test]
    fn grace_period_bounds_the_drain() {
        run(&[
            (0, Accepted { control: true }, StartControl),
            (1, Registered, MarkRegistered),
            (2, Stop, Action::None),
            // Liveness is still checked while draining.
            (31, Tick, SendPing),
            (31, Pong, Action::None),
            (31, Tick, Action::None),
            (32, Tick, Finish(End::Shutdown)),
        ]);
    }

    #[test]
    fn control_stream_lost_while_serving_ends_the_connection() {
        run(&[
            (0, Accepted { control: true }, StartControl),
            (1, Registered, MarkRegistered),
            (2, Event::ControlClosed, Finish(End::ControlClosed)),
        ]);
    }

    #[test]
    fn edge_closing_is_a_loss_unless_stopping() {
        run(&[(1, ConnectionEnded, Finish(End::EdgeClosed))]);
        run(&[
            (0, Accepted { control: true }, StartControl),
            (1, Stop, Action::None),
            (2, ConnectionEnded, Finish(End::Shutdown)),
        ]);
    }

    #[test]
    fn pings_every_interval_while_the_edge_answers() {
        run(&[
            (0, Accepted { control: true }, StartControl),
            (4, Tick, Action::None),
            (5, Tick, SendPing),
            (6, Tick, Action::None),
            (6, Pong, Action::None),
            (10, Tick, Action::None),
            (11, Tick, SendPing),
            (15, Pong, Action::None),
            (20, Tick, SendPing),
        ]);
    }

    #[test]
    fn an_unanswered_ping_ends_the_connection_after_the_timeout() {
        run(&[
            (0, Accepted { control: true }, StartControl),
            (1, Registered, MarkRegistered),
            (5, Tick, SendPing),
            (9, Tick, Action::None),
            (10, Tick, Finish(End::Unresponsive)),
        ]);
    }

    #[test]
    fn next_deadline_is_the_earliest_pending_one() {
        let t0 = Instant::now();
        let mut st = ConnState::new(t0, timings());
        assert_eq!(
            st.next_deadline(),
            t0 + 5 * S,
            "first PING before the control deadline"
        );
        st.on(t0, Accepted { control: true });
        assert_eq!(st.on(t0 + 5 * S, Tick), SendPing);
        assert_eq!(st.next_deadline(), t0 + 10 * S, "the PING's answer is due");
        st.on(t0 + 6 * S, Pong);
        assert_eq!(st.next_deadline(), t0 + 11 * S);
        let mut st = ConnState::new(
            t0,
            Timings {
                control: 2 * S,
                ..timings()
            },
        );
        assert_eq!(st.next_deadline(), t0 + 2 * S, "control deadline first");
        st.on(t0, Accepted { control: true });
        st.on(t0 + S, Stop);
        assert_eq!(
            st.next_deadline(),
            t0 + 5 * S,
            "ping still due before the grace ends"
        );
    }
}
