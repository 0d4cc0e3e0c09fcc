//! `edits`: what an update costs against a publish. One realtime publisher on a channel whose
//! namespace has `mutable_messages = true` publishes R messages/s for `--duration` (phase one),
//! then updates each acknowledged message once, at the same rate (phase two: a MESSAGE holding
//! `{action: 1, serial, data}`, the serial its ACK gave). A few subscribers receive both. With
//! `--server-pid` (and `--redis-pid`), the CPU each process spent per operation in each phase,
//! less what it spends idle (measured for `--idle` first).
//!
//! A publication is stamped (0, n, send time), the update of publication n (1, n, send time), so
//! the ledgers count the updates' deliveries as their own publisher's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use protocol::message::message_action::UPDATE;
use protocol::{Data, Message};

use super::{
    ably_target, connect_failures, ensure_fds, latency_metrics, open, run_id, wait_for_deliveries,
    Readers,
};
use crate::cli::{parse_duration, Protocol, Shared};
use crate::clock;
use crate::ledger::{Latencies, Schedule};
use crate::payload::Stamp;
use crate::proc_stat;
use crate::report::{connect_time_metrics, Report};
use crate::target::ably::{AblyConnection, Credentials};
use crate::target::{Connection as _, Settled};

/// How long the publisher waits for its last ACKs of a phase.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The ledgers' publisher numbers of the two phases.
const PUBLISHES: u32 = 0;
const UPDATES: u32 = 1;

#[derive(Debug, Clone, Args)]
pub struct EditsArgs {
    /// Publishes per second in phase one, updates per second in phase two.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Connections attached to the channel, receiving both phases.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Payload bytes of each publish and each update.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// A channel of a namespace with `mutable_messages = true` whose history holds the whole
    /// run (publishes and updates both count against it); default `edits:<run id>`.
    #[arg(long)]
    pub channel: Option<String>,
    /// Redis's process id on this machine: its CPU per operation too.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Before phase one, how long the server and Redis are watched idle (their idle CPU is
    /// taken off each phase's); `0s` to skip.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub idle: Duration,
    /// Unacknowledged operations the publisher may have outstanding before it waits.
    #[arg(long, default_value_t = 32)]
    pub window: u64,
}

pub async fn run(shared: &Shared, args: &EditsArgs) -> anyhow::Result<Report> {
    if shared.protocol != Protocol::Ably {
        bail!("edits speaks the Ably protocol only");
    }
    if args.subscribers == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--subscribers must be at least 1 and --rate above 0");
    }
    ensure_fds(args.subscribers + 1)?;
    let channel = args
        .channel
        .clone()
        .unwrap_or_else(|| format!("edits:{}", run_id()));
    let mut report = Report::new("edits");
    report.metric("channel", channel.as_str());
    report.metric("subscribers", args.subscribers);
    report.metric_f64("target_rate", args.rate);
    report.metric("size_bytes", args.size);

    let target = ably_target(shared, Credentials::Key(shared.key.clone()))?;
    let subscribers = open(
        &target,
        0,
        vec![Some(channel.clone()); args.subscribers],
        shared.connect_concurrency,
        shared.quiet,
        "subscribers",
    )
    .await;
    let mut publisher = open(
        &target,
        args.subscribers,
        vec![None],
        shared.connect_concurrency,
        shared.quiet,
        "publisher",
    )
    .await;
    let mut connect_us = subscribers.connect_us;
    connect_us.extend(&publisher.connect_us);
    let mut failures = subscribers.failures;
    failures.extend(publisher.failures);
    connect_failures(&mut report, &failures);
    connect_time_metrics(&mut report, connect_us);
    let Some((_, mut connection)) = publisher.connections.pop().filter(|_| failures.is_empty())
    else {
        return Ok(report);
    };
    connection.keep_serials();

    let schedule: Schedule = Arc::new(|_, _| 0);
    let latencies = Arc::new(Latencies::default());
    let readers = Readers::spawn(subscribers.connections, |_| 0, &schedule, &latencies);
    let n_subscribers = readers.len() as u64;
    let meters = Meters {
        server: shared.server_pid,
        redis: args.redis_pid,
        idle: Idle::measure(shared.server_pid, args.redis_pid, args.idle).await,
    };
    let pace = Pace {
        channel: channel.clone(),
        rate: args.rate,
        window: args.window.max(1),
        size: args.size,
    };
    let mut sent = [0u64; 2];

    // Phase one: publish for --duration.
    let started = Instant::now();
    let phase = meters.start();
    let deadline = tokio::time::Instant::now() + shared.duration();
    let published = pace
        .run(&mut connection, |_| Some(None), Some(deadline))
        .await;
    sent[PUBLISHES as usize] = published.sent;
    let mut failed = published.failure.clone();
    wait_for_deliveries(
        &latencies,
        published.settled.sent * n_subscribers,
        shared.drain_timeout,
    )
    .await;
    let publish_cost = meters.finish(phase, published.settled.sent);

    // Phase two: update each acknowledged message once, oldest first.
    let serials: Vec<String> = connection.serials().into_values().flatten().collect();
    let phase = meters.start();
    let updated = if failed.is_none() {
        pace.run(
            &mut connection,
            |seq| serials.get(seq as usize).map(|s| Some(s.clone())),
            None,
        )
        .await
    } else {
        Outcome::default()
    };
    let updates = Settled {
        sent: updated.sent,
        acknowledged: updated
            .settled
            .acknowledged
            .saturating_sub(published.settled.acknowledged),
        refused: updated
            .settled
            .refused
            .saturating_sub(published.settled.refused),
    };
    sent[UPDATES as usize] = updates.sent;
    failed = failed.or(updated.failure.clone());
    wait_for_deliveries(
        &latencies,
        (sent[0] + sent[1]) * n_subscribers,
        shared.drain_timeout,
    )
    .await;
    let update_cost = meters.finish(phase, updates.sent);
    let delivering = started.elapsed();
    connection.close().await;
    let ledgers = readers.finish().await;

    if let Some(failure) = failed {
        report.fail(format!("publisher: {failure}"));
    }
    for (what, settled) in [("publishes", published.settled), ("updates", updates)] {
        super::settled_metrics(&mut report, settled, what, what);
    }
    if published.settled.acknowledged > 0 && updates.sent < published.settled.acknowledged {
        report.fail(format!(
            "{} of {} messages were not updated",
            published.settled.acknowledged - updates.sent,
            published.settled.acknowledged
        ));
    }
    report.metric_f64("publishes_per_s", published.rate());
    report.metric_f64("updates_per_s", updated.rate());
    publish_cost.metrics(&mut report, "publish");
    update_cost.metrics(&mut report, "update");
    if let (Some(publish), Some(update)) = (publish_cost.server_us, update_cost.server_us) {
        if publish > 0.0 {
            report.metric_f64("server_cpu_update_over_publish", update / publish);
        }
    }
    meters.idle.metrics(&mut report);
    let owed = crate::ledger::owed_per_channel(1, &sent, &schedule);
    let received = super::account(&mut report, &ledgers, &owed);
    report.metric_f64(
        "deliveries_per_s",
        received as f64 / delivering.as_secs_f64(),
    );
    latency_metrics(&mut report, &latencies);
    if let Some(pid) = shared.server_pid {
        if let Ok(sample) = proc_stat::sample(pid) {
            report.metric("server_rss_mib", sample.rss_bytes / (1024 * 1024));
        }
    }
    Ok(report)
}

/// One phase's publisher: one operation every 1/`rate` s, at most `window` unacknowledged.
struct Pace {
    channel: String,
    rate: f64,
    window: u64,
    size: usize,
}

/// What a phase's publisher did: the connection's counts at its end (cumulative over phases).
#[derive(Default)]
struct Outcome {
    settled: Settled,
    /// Operations sent in this phase, over how long.
    sent: u64,
    took: Duration,
    failure: Option<String>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.took.as_secs_f64().max(f64::EPSILON)
    }
}

impl Pace {
    /// Sends operation 0, 1, ... while `next(seq)` gives one (`Some(None)`: a publish;
    /// `Some(Some(serial))`: an update of that message) and `deadline` has not passed, then
    /// waits for the ACKs.
    async fn run(
        &self,
        connection: &mut AblyConnection,
        next: impl Fn(u64) -> Option<Option<String>>,
        deadline: Option<tokio::time::Instant>,
    ) -> Outcome {
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut seq = 0u64;
        let mut failure = None;
        while let Some(serial) = next(seq) {
            match deadline {
                Some(deadline) => tokio::select! {
                    _ = ticks.tick() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                },
                None => {
                    ticks.tick().await;
                }
            }
            if connection.in_flight() >= self.window {
                connection.settle(SETTLE_TIMEOUT).await;
            }
            let message = self.operation(seq, serial);
            if let Err(error) = connection.publish_message(&self.channel, message).await {
                failure = Some(format!("{error:#}"));
                break;
            }
            seq += 1;
            if connection.failure().is_some() {
                break;
            }
        }
        let took = started.elapsed();
        let settled = connection.settle(SETTLE_TIMEOUT).await;
        Outcome {
            settled,
            sent: seq,
            took,
            failure: failure.or_else(|| connection.failure()),
        }
    }

    /// Publication `seq`, or with `serial` the update of the message it names.
    fn operation(&self, seq: u64, serial: Option<String>) -> Message {
        let stamp = Stamp {
            publisher: if serial.is_some() { UPDATES } else { PUBLISHES },
            seq,
            sent_us: clock::now_us(),
        };
        let data = Some(Data::String(stamp.encode(self.size)));
        match serial {
            Some(serial) => Message {
                action: Some(UPDATE),
                serial: Some(serial),
                data,
                ..Default::default()
            },
            None => Message {
                name: Some("edit".to_owned()),
                data,
                ..Default::default()
            },
        }
    }
}

/// The server's and Redis's CPU clocks (`/proc/<pid>/stat`), when their pids are known.
struct Meters {
    server: Option<u32>,
    redis: Option<u32>,
    idle: Idle,
}

/// CPU µs each process spends per second doing nothing asked of it (timers, Redis's cron).
#[derive(Default)]
struct Idle {
    server_us_per_s: f64,
    redis_us_per_s: f64,
}

/// The clocks at a phase's start.
struct PhaseStart {
    at: Instant,
    server_us: Option<u64>,
    redis_us: Option<u64>,
}

/// CPU µs per operation of a phase, idle CPU taken off.
struct Cost {
    server_us: Option<f64>,
    redis_us: Option<f64>,
}

fn cpu_us(pid: Option<u32>) -> Option<u64> {
    proc_stat::sample(pid?).ok().map(|sample| sample.cpu_us)
}

impl Idle {
    async fn measure(server: Option<u32>, redis: Option<u32>, over: Duration) -> Idle {
        if over.is_zero() || (server.is_none() && redis.is_none()) {
            return Idle::default();
        }
        let (server_before, redis_before) = (cpu_us(server), cpu_us(redis));
        let started = Instant::now();
        tokio::time::sleep(over).await;
        let seconds = started.elapsed().as_secs_f64();
        let per_s = |before: Option<u64>, pid| match (before, cpu_us(pid)) {
            (Some(before), Some(after)) => after.saturating_sub(before) as f64 / seconds,
            _ => 0.0,
        };
        Idle {
            server_us_per_s: per_s(server_before, server),
            redis_us_per_s: per_s(redis_before, redis),
        }
    }

    fn metrics(&self, report: &mut Report) {
        report.metric_f64("server_idle_cpu_percent", self.server_us_per_s / 10_000.0);
        report.metric_f64("redis_idle_cpu_percent", self.redis_us_per_s / 10_000.0);
    }
}

impl Meters {
    fn start(&self) -> PhaseStart {
        PhaseStart {
            at: Instant::now(),
            server_us: cpu_us(self.server),
            redis_us: cpu_us(self.redis),
        }
    }

    fn finish(&self, start: PhaseStart, operations: u64) -> Cost {
        let seconds = start.at.elapsed().as_secs_f64();
        let per_operation = |before: Option<u64>, pid, idle_us_per_s: f64| {
            let used = cpu_us(pid)?.saturating_sub(before?) as f64;
            let busy = (used - idle_us_per_s * seconds).max(0.0);
            (operations > 0).then(|| busy / operations as f64)
        };
        Cost {
            server_us: per_operation(start.server_us, self.server, self.idle.server_us_per_s),
            redis_us: per_operation(start.redis_us, self.redis, self.idle.redis_us_per_s),
        }
    }
}

impl Cost {
    fn metrics(&self, report: &mut Report, operation: &str) {
        if let Some(us) = self.server_us {
            report.metric_f64(format!("server_cpu_us_per_{operation}"), us);
        }
        if let Some(us) = self.redis_us {
            report.metric_f64(format!("redis_cpu_us_per_{operation}"), us);
        }
    }
}
