//! Waiting for a condition no event announces (a server noticing a dropped socket, a counter
//! reaching a value): poll it, bounded. Await an event under `timeout` instead whenever there is
//! one.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The first pause between polls, doubled after each miss up to `POLL_AT_MOST`: a condition that
/// holds almost at once is seen almost at once (some tests race a live publisher meanwhile), and
/// a slow one is not polled hard enough to load the server.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_AT_MOST: Duration = Duration::from_millis(50);

/// What a poll found: done (with a value) or not yet (with what to show if it never is).
pub trait Outcome {
    type Value;
    fn done(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".to_owned())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

/// `Err(last)` shows `last` in the failure: what the state was when time ran out.
impl<T, E: Debug> Outcome for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.map_err(|last| format!("{last:?}"))
    }
}

/// Polls `condition` until it is done and returns its value; panics naming `what` (and the last
/// state the condition reported) after `timeout`.
pub async fn eventually<F, Fut, O>(
    what: impl Display,
    timeout: Duration,
    mut condition: F,
) -> O::Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Outcome,
{
    let deadline = Instant::now() + timeout;
    let mut pause = POLL_FIRST;
    loop {
        let last = match condition().await.done() {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}; last: {last}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_AT_MOST);
    }
}
