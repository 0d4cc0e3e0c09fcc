//! The circuit breaker: `failures_to_open` retryable failures in a row open it; while open the
//! dispatcher takes no job; after `cooldown` one probe goes (half-open), and its answer closes
//! the breaker or opens it for another cooldown.
//!
//! The state sits under a std mutex held for a few instructions, never across an `.await`;
//! `Notify` wakes the dispatcher when a probe's answer changes it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::recipient::Kind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    Normal,
    /// The one request of a half-open breaker.
    Probe,
}

enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

pub(super) struct Breaker {
    kind: Kind,
    state: Mutex<State>,
    changed: Notify,
    failures_to_open: u32,
    cooldown: Duration,
}

impl Breaker {
    pub(super) fn new(kind: Kind, failures_to_open: u32, cooldown: Duration) -> Breaker {
        Breaker {
            kind,
            state: Mutex::new(State::Closed { failures: 0 }),
            changed: Notify::new(),
            failures_to_open: failures_to_open.max(1),
            cooldown,
        }
    }

    /// Waits while the breaker is open or a probe is out.
    pub(super) async fn admit(&self) -> Admission {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so a change in between still wakes us.
            changed.as_mut().enable();
            let open_until = {
                let mut state = self.lock();
                match *state {
                    State::Closed { .. } => return Admission::Normal,
                    State::Open { until } if Instant::now() >= until => {
                        *state = State::HalfOpen;
                        return Admission::Probe;
                    }
                    State::Open { until } => Some(until),
                    State::HalfOpen => None,
                }
            };
            match open_until {
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// One attempt's answer: `ok` is any answer that shows the service is up (delivered, gone,
    /// refused for good); a 429, 5xx or network error is not.
    pub(super) fn record(&self, ok: bool) {
        let mut state = self.lock();
        let next = match (&*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.failures_to_open => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            // Already open: an attempt started before it opened does not extend it.
            (State::Open { until }, false) => State::Open { until: *until },
            (_, false) => State::Open {
                until: Instant::now() + self.cooldown,
            },
        };
        let was_open = !matches!(*state, State::Closed { .. });
        let is_open = !matches!(next, State::Closed { .. });
        *state = next;
        drop(state);
        if was_open != is_open {
            if is_open {
                tracing::error!(transport = self.kind.name(), cooldown = ?self.cooldown, "push service keeps failing; breaker open");
            } else {
                tracing::info!(
                    transport = self.kind.name(),
                    "push service answering again; breaker closed"
                );
            }
            ::metrics::gauge!("realtime_push_breaker_open", "transport" => self.kind.name())
                .set(if is_open { 1.0 } else { 0.0 });
        }
        self.changed.notify_waiters();
    }

    /// After the probe's task: if it recorded nothing (it panicked), count it a failure so the
    /// breaker does not stay half-open for ever.
    pub(super) fn probe_finished(&self) {
        let half_open = matches!(*self.lock(), State::HalfOpen);
        if half_open {
            self.record(false);
        }
    }

    pub(super) fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain enum: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
