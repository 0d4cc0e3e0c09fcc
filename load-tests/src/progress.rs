//! Progress bars for long runs (on stderr, and only when it is a terminal: indicatif hides them
//! otherwise, so logs and tests stay clean).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub fn counter(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A bar over the run's duration, whose message the caller updates with live rates.
pub fn timed(duration: Duration, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("     running [{bar:40}] {pos}/{len}s {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Ticks `bar` once a second with the deliveries/s counted in `latencies`; abort it when done.
pub fn deliveries_per_second(
    bar: &ProgressBar,
    latencies: &std::sync::Arc<crate::ledger::Latencies>,
) -> tokio::task::JoinHandle<()> {
    ticking(bar, latencies, |rate| format!("{rate} deliveries/s"))
}

/// Ticks `bar` once a second with `message(deliveries/s)`; abort it when done.
pub fn ticking(
    bar: &ProgressBar,
    latencies: &std::sync::Arc<crate::ledger::Latencies>,
    message: impl Fn(u64) -> String + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let bar = bar.clone();
    let latencies = latencies.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut last = 0;
        loop {
            every.tick().await;
            let delivered = latencies
                .delivered
                .load(std::sync::atomic::Ordering::Relaxed);
            bar.set_message(message(delivered - last));
            bar.inc(1);
            last = delivered;
        }
    })
}
