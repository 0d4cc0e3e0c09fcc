//! `fanout`: C channels × S subscribers each, P realtime publishers sharing R publications/s (or
//! open loop), payloads of B bytes. Publisher p's n-th publication goes to channel (p + n) mod C,
//! stamped with (p, n, send time), so every subscriber knows what it is owed and how late it came.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::task::JoinSet;

use super::{connect_failures, ensure_fds, open, run_id, Readers, Window};
use crate::cli::{FanoutArgs, Shared};
use crate::clock;
use crate::ledger::{Latencies, Schedule};
use crate::payload::Stamp;
use crate::report::{connect_time_metrics, Report};
use crate::target::{Connection, Settled, Target};

/// How long publishers wait for their last ACKs.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(shared: &Shared, args: &FanoutArgs) -> anyhow::Result<Report> {
    with_target!(shared, target => run_on(shared, args, target).await)
}

async fn run_on<T: Target>(
    shared: &Shared,
    args: &FanoutArgs,
    target: Arc<T>,
) -> anyhow::Result<Report> {
    if args.channels == 0 || args.publishers == 0 {
        bail!("--channels and --publishers must be at least 1");
    }
    let n_subscribers = args.channels * args.subscribers;
    ensure_fds(n_subscribers + args.publishers)?;
    let run = run_id();
    let channel_names: Vec<String> = (0..args.channels)
        .map(|c| format!("fanout:{run}:{c}"))
        .collect();
    let n_channels = args.channels;
    let schedule: Schedule =
        Arc::new(move |publisher, seq| ((publisher as u64 + seq) % n_channels as u64) as usize);
    let mut report = Report::new("fanout");
    report.metric("channels", args.channels);
    report.metric("subscribers_per_channel", args.subscribers);
    report.metric("publishers", args.publishers);
    report.metric("target_rate", args.rate);
    report.metric("size_bytes", args.size);
    report.metric("protocol", shared.protocol.name());

    // Subscriber i listens on channel i mod C, so a partial setup still spreads evenly.
    let subscriptions = (0..n_subscribers)
        .map(|i| Some(channel_names[i % n_channels].clone()))
        .collect();
    let subscribers = open(
        &target,
        0,
        subscriptions,
        shared.connect_concurrency,
        shared.quiet,
        "subscribers",
    )
    .await;
    let publishers = open(
        &target,
        n_subscribers,
        vec![None; args.publishers],
        shared.connect_concurrency,
        shared.quiet,
        "publishers",
    )
    .await;
    let mut connect_us = subscribers.connect_us;
    connect_us.extend(&publishers.connect_us);
    let mut failures = subscribers.failures;
    failures.extend(publishers.failures);
    connect_failures(&mut report, &failures);
    connect_time_metrics(&mut report, connect_us);
    if !failures.is_empty() {
        return Ok(report);
    }

    let latencies = Arc::new(Latencies::default());
    let readers = Readers::spawn(
        subscribers.connections,
        |client| client % n_channels,
        &schedule,
        &latencies,
    );
    let subscribers_per_channel = readers.per_channel(n_channels);

    let window = Window::start(shared, &latencies);
    let deadline = tokio::time::Instant::now() + shared.duration();
    let per_publisher_rate = args.rate / args.publishers as f64;
    let backlog = Arc::new(Backlog {
        subscribers_per_channel: subscribers_per_channel.clone(),
        owed: AtomicU64::new(0),
        limit: args.backlog.max(1) * readers.len().max(1) as u64,
        latencies: latencies.clone(),
    });
    let mut tasks = JoinSet::new();
    for (index, (_, connection)) in publishers.connections.into_iter().enumerate() {
        let publisher = Publisher {
            id: index as u32,
            channel_names: channel_names.clone(),
            schedule: schedule.clone(),
            size: args.size,
            backlog: backlog.clone(),
        };
        tasks.spawn(publisher.run(connection, per_publisher_rate, args.window, deadline));
    }

    let mut sent = vec![0u64; args.publishers];
    let mut settled = Settled::default();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok((id, outcome, failure)) => {
                sent[id as usize] = outcome.sent;
                settled.sent += outcome.sent;
                settled.acknowledged += outcome.acknowledged;
                settled.refused += outcome.refused;
                if let Some(failure) = failure {
                    report.fail(format!("publisher {id}: {failure}"));
                }
            }
            Err(error) => report.fail(format!("publisher task: {error}")),
        }
    }
    let drained = window
        .drain(&mut report, &sent, &schedule, &subscribers_per_channel)
        .await;

    report.metric("subscribers", readers.len());
    let ledgers = readers.finish().await;
    super::settled_metrics(&mut report, settled, "publications", "publications");
    report.metric_f64(
        "publications_per_s",
        settled.sent as f64 / drained.publishing.as_secs_f64(),
    );
    drained.delivery_metrics(&mut report, &ledgers);
    Ok(report)
}

struct Publisher {
    id: u32,
    channel_names: Vec<String>,
    schedule: Schedule,
    size: usize,
    backlog: Arc<Backlog>,
}

/// Deliveries published but not yet received, across all subscribers: the open loop waits while
/// there are more than `limit`, so it measures what the server delivers, not what it accepts.
struct Backlog {
    subscribers_per_channel: Vec<u64>,
    /// Deliveries owed by everything published so far.
    owed: AtomicU64,
    limit: u64,
    latencies: Arc<Latencies>,
}

impl Backlog {
    fn published(&self, channel: usize) {
        self.owed
            .fetch_add(self.subscribers_per_channel[channel], Ordering::Relaxed);
    }

    fn full(&self) -> bool {
        let delivered = self.latencies.delivered.load(Ordering::Relaxed);
        self.owed.load(Ordering::Relaxed).saturating_sub(delivered) > self.limit
    }

    /// Waits (bounded) until the subscribers have caught up; a stall is the run's deliveries
    /// accounting's to report, not the publisher's.
    async fn wait(&self) {
        let until = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while self.full() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Publisher {
    /// Publishes until `deadline` at `rate`/s (at most `window` unacknowledged), or in an open
    /// loop when `rate` is 0 (the subscribers' backlog bounded too), then waits for the last ACKs.
    async fn run<C: Connection>(
        self,
        mut connection: C,
        rate: f64,
        window: u64,
        deadline: tokio::time::Instant,
    ) -> (u32, Settled, Option<String>) {
        let mut seq = 0u64;
        let mut ticks = (rate > 0.0).then(|| {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            ticks
        });
        let mut failure = None;
        while tokio::time::Instant::now() < deadline {
            match ticks.as_mut() {
                Some(ticks) => {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                    // A fixed rate keeps the window too: a publisher whose ACKs the tool reads
                    // late would otherwise pile them up in the server until it is cut off as a
                    // slow consumer. Missed ticks burst afterwards, so the rate still holds.
                    if connection.in_flight() >= window.max(1) {
                        connection.settle(SETTLE_TIMEOUT).await;
                    }
                }
                None if connection.in_flight() >= window.max(1) => {
                    connection.settle(SETTLE_TIMEOUT).await;
                }
                None if self.backlog.full() => self.backlog.wait().await,
                None => {}
            }
            let stamp = Stamp {
                publisher: self.id,
                seq,
                sent_us: clock::now_us(),
            };
            let index = (self.schedule)(self.id, seq);
            self.backlog.published(index);
            let channel = &self.channel_names[index];
            if let Err(error) = connection.publish(channel, stamp.encode(self.size)).await {
                failure = Some(format!("{error:#}"));
                break;
            }
            seq += 1;
            if connection.failure().is_some() {
                break;
            }
        }
        let settled = connection.settle(SETTLE_TIMEOUT).await;
        let failure = failure.or_else(|| connection.failure());
        connection.close().await;
        (self.id, settled, failure)
    }
}
