//! `reactions`: a live room where every viewer reacts. N viewer connections attach one channel
//! and each publishes R small `reaction` messages a second, the viewers' ticks spread evenly over
//! the period; every viewer receives every reaction, its own included. That is N × R
//! publications/s and N² × R deliveries/s, each its own frame unless the channel's namespace
//! batches (`batching_interval_ms`), so frames and bytes received are counted beside deliveries.
//! Viewer v's n-th reaction is stamped (v, n, send time) like any publication of the tool, so
//! loss, duplication and latency are counted by the same ledgers, batching or not.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use protocol::{Data, Message};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::cluster::Spread;
use super::{connect_failures, ensure_fds, open, Window};
use crate::cli::{Protocol, Shared};
use crate::clock;
use crate::ledger::{Latencies, Ledger, Schedule};
use crate::payload::Stamp;
use crate::report::{connect_time_metrics, Report};
use crate::target::ably::{AblyConnection, AblyTarget, Credentials, TrafficCount};
use crate::target::{Connection as _, Settled};

/// How long a viewer waits for its last ACKs.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The reactions, in turn: what a room's buttons send.
const EMOJI: [&str; 4] = ["👏", "❤️", "🔥", "😂"];

#[derive(Debug, Clone, Args)]
pub struct ReactionsArgs {
    /// Viewer connections, each attached to the channel, each reacting.
    #[arg(long, default_value_t = 1000)]
    pub viewers: usize,
    /// Reactions per second per viewer.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Mark each reaction ephemeral (`extras.ephemeral`): delivered live, never stored.
    #[arg(long)]
    pub ephemeral: bool,
    /// Bytes of each reaction's data: its stamp and an emoji, padded with `x` up to this.
    #[arg(long, default_value_t = 0)]
    pub size: usize,
    /// The room; its namespace decides batching (e.g. `reactions100:room` with
    /// `batching_interval_ms = 100` in the server's config).
    #[arg(long, default_value = "reactions:room")]
    pub channel: String,
    /// Unacknowledged reactions a viewer may have outstanding before it waits for its ACKs.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Of the viewers, this many chat instead of reacting: stored `chat.message`s at
    /// `--chat-rate` each (a stream room's chatters among its audience).
    #[arg(long, default_value_t = 0)]
    pub chatters: usize,
    /// Chat messages per second per chatter.
    #[arg(long, default_value_t = 0.2)]
    pub chat_rate: f64,
}

pub async fn run(shared: &Shared, args: &ReactionsArgs) -> anyhow::Result<Report> {
    if shared.protocol != Protocol::Ably {
        bail!("reactions speaks the Ably protocol only");
    }
    if args.viewers == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--viewers must be at least 1 and --rate above 0");
    }
    if args.chatters > args.viewers
        || (args.chatters > 0 && (args.chat_rate.is_nan() || args.chat_rate <= 0.0))
    {
        bail!("--chatters must be at most --viewers, and --chat-rate above 0");
    }
    ensure_fds(args.viewers)?;
    let mut report = Report::new("reactions");
    report.metric("channel", args.channel.as_str());
    report.metric("viewers", args.viewers);
    report.metric_f64("rate_per_viewer", args.rate);
    report.metric("ephemeral", args.ephemeral);
    report.metric("size_bytes", args.size);
    report.metric("chatters", args.chatters);
    report.metric_f64("chat_rate_per_chatter", args.chat_rate);

    // Several servers (`--url a,b,c`): viewer i on node i mod n.
    let target = Spread::new(&shared.url, |url| {
        AblyTarget::new(
            url,
            Credentials::Key(shared.key.clone()),
            shared.format.into(),
        )
    })?;
    report.metric("nodes", target.len());
    let opened = open(
        &target,
        0,
        vec![Some(args.channel.clone()); args.viewers],
        shared.connect_concurrency,
        shared.quiet,
        "viewers",
    )
    .await;
    connect_failures(&mut report, &opened.failures);
    connect_time_metrics(&mut report, opened.connect_us);
    if !opened.failures.is_empty() {
        return Ok(report);
    }

    // One channel: every reaction is owed to every viewer.
    let schedule: Schedule = Arc::new(|_, _| 0);
    let latencies = Arc::new(Latencies::default());
    let n_viewers = opened.connections.len();
    let (stop, stopped) = watch::channel(false);
    let window = Window::start(shared, &latencies);
    let traffic_before = target.traffic();
    // The tool's own CPU: at N² deliveries a second, it may be what saturates first.
    let tool_cpu = super::ServerCpu::start(Some(std::process::id()));
    let start = tokio::time::Instant::now();
    let deadline = start + shared.duration();
    let mut viewers = JoinSet::new();
    let mut published = Vec::with_capacity(n_viewers);
    for (index, (_, connection)) in opened.connections.into_iter().enumerate() {
        let (done, on_done) = oneshot::channel();
        published.push(on_done);
        let chatter = index < args.chatters;
        let period =
            Duration::from_secs_f64(1.0 / if chatter { args.chat_rate } else { args.rate });
        let viewer = Viewer {
            id: index as u32,
            channel: args.channel.clone(),
            name: if chatter { "chat.message" } else { "reaction" },
            ephemeral: args.ephemeral && !chatter,
            size: args.size,
            window: args.window.max(1),
            // Spread evenly: viewer i's first reaction i/N of a period in.
            first: start + period.mul_f64(index as f64 / n_viewers as f64),
            period,
            deadline,
        };
        let ledger = Ledger::new(0, schedule.clone(), latencies.clone());
        viewers.spawn(viewer.run(connection, ledger, done, stopped.clone()));
    }

    let mut sent = vec![0u64; n_viewers];
    let mut settled = Settled::default();
    for (index, on_done) in published.into_iter().enumerate() {
        match on_done.await {
            Ok(outcome) => {
                sent[index] = outcome.sent;
                settled.sent += outcome.sent;
                settled.acknowledged += outcome.acknowledged;
                settled.refused += outcome.refused;
            }
            Err(_) => report.fail(format!("viewer {index} ended before it finished reacting")),
        }
    }
    let drained = window
        .drain(&mut report, &sent, &schedule, &[n_viewers as u64])
        .await;
    let traffic = target.traffic().since(traffic_before);
    let tool_cpu_percent = tool_cpu.since_start().map(|(percent, _)| percent);
    let _ = stop.send(true);
    let mut ledgers = Vec::with_capacity(n_viewers);
    while let Some(result) = viewers.join_next().await {
        match result {
            Ok(ledger) => ledgers.push(ledger),
            Err(error) => report.fail(format!("viewer task: {error}")),
        }
    }

    super::settled_metrics(&mut report, settled, "publications", "reactions");
    // Every viewer reacts until the deadline (a late tick is made up at once), so the rate is
    // over `--duration`; how late the reactions arrived is the latency's to tell.
    report.metric_f64(
        "publications_per_s",
        settled.sent as f64 / shared.duration().as_secs_f64(),
    );
    report.metric_f64("delivering_s", drained.delivering.as_secs_f64());
    drained.delivery_metrics(&mut report, &ledgers);
    traffic_metrics(&mut report, traffic, drained.delivering, n_viewers);
    if let Some(percent) = tool_cpu_percent {
        report.metric_f64("tool_cpu_percent", percent);
    }
    Ok(report)
}

/// Frames and bytes the viewers received over the measured window, in all and per second, and
/// how many messages a MESSAGE frame carried on average.
fn traffic_metrics(report: &mut Report, traffic: TrafficCount, over: Duration, viewers: usize) {
    let seconds = over.as_secs_f64().max(f64::EPSILON);
    report.metric("frames_received", traffic.frames);
    report.metric("message_frames_received", traffic.message_frames);
    report.metric("bytes_received", traffic.bytes);
    report.metric_f64("frames_received_per_s", traffic.frames as f64 / seconds);
    report.metric_f64(
        "message_frames_per_s",
        traffic.message_frames as f64 / seconds,
    );
    report.metric_f64("bytes_received_per_s", traffic.bytes as f64 / seconds);
    report.metric_f64(
        "message_frames_per_viewer_per_s",
        traffic.message_frames as f64 / seconds / viewers.max(1) as f64,
    );
    let deliveries = report
        .get("deliveries")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if traffic.message_frames > 0 {
        report.metric_f64(
            "messages_per_frame",
            deliveries as f64 / traffic.message_frames as f64,
        );
    }
}

/// One viewer: reacts every `period` from `first` until `deadline`, and reads every reaction
/// of the room into its ledger until told to stop.
struct Viewer {
    id: u32,
    channel: String,
    /// `reaction`, or `chat.message` for a chatter (never ephemeral).
    name: &'static str,
    ephemeral: bool,
    size: usize,
    window: u64,
    first: tokio::time::Instant,
    period: Duration,
    deadline: tokio::time::Instant,
}

impl Viewer {
    /// Reports its publishes on `done` once they are settled (reading on meanwhile), then reads
    /// until `stop`; hands back its ledger and why its connection failed, if it did.
    async fn run(
        self,
        mut connection: AblyConnection,
        mut ledger: Ledger,
        done: oneshot::Sender<Settled>,
        mut stop: watch::Receiver<bool>,
    ) -> (Ledger, Option<String>) {
        let mut done = Some(done);
        let mut ticks = tokio::time::interval_at(self.first, self.period);
        // A late tool catches up, so the rate holds.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let over = tokio::time::sleep_until(self.deadline);
        tokio::pin!(over);
        let mut seq = 0u64;
        loop {
            let reacting = done.is_some();
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = &mut over, if reacting => {
                    // Ticks due before the deadline that a busy tool has not made yet go now,
                    // so every viewer sends its share whatever the lateness.
                    let mut failed = false;
                    while seq < self.due() && !failed {
                        failed = self.react(&mut connection, seq).await;
                        seq += 1;
                    }
                    // The ACKs are read by the connection's own task; deliveries queue meanwhile.
                    let settled = connection.settle(SETTLE_TIMEOUT).await;
                    if let Some(done) = done.take() {
                        let _ = done.send(settled);
                    }
                }
                _ = ticks.tick(), if reacting => {
                    let failed = self.react(&mut connection, seq).await;
                    seq += 1;
                    if failed {
                        break;
                    }
                }
                delivery = connection.next_delivery() => match delivery {
                    Some(delivery) => ledger.record(&delivery),
                    None => break,
                },
            }
        }
        if let Some(done) = done.take() {
            let _ = done.send(connection.settle(Duration::ZERO).await);
        }
        ledger.flush();
        let failure = connection.failure();
        connection.close().await;
        (ledger, failure)
    }

    /// Sends reaction `seq` (after waiting for ACKs if `window` are outstanding); true if the
    /// connection failed.
    async fn react(&self, connection: &mut AblyConnection, seq: u64) -> bool {
        if connection.in_flight() >= self.window {
            connection.settle(SETTLE_TIMEOUT).await;
        }
        let message = self.reaction(seq);
        connection
            .publish_message(&self.channel, message)
            .await
            .is_err()
            || connection.failure().is_some()
    }

    /// How many ticks fall before the deadline: `first + k × period < deadline`.
    fn due(&self) -> u64 {
        let span = self.deadline.saturating_duration_since(self.first);
        (span.as_secs_f64() / self.period.as_secs_f64()).ceil() as u64
    }

    /// Reaction `seq`: the stamp, an emoji, padding up to `--size`.
    fn reaction(&self, seq: u64) -> Message {
        let stamp = Stamp {
            publisher: self.id,
            seq,
            sent_us: clock::now_us(),
        };
        let mut data = stamp.encode(0);
        data.push_str(EMOJI[(seq % EMOJI.len() as u64) as usize]);
        if data.len() < self.size {
            data.extend(std::iter::repeat_n('x', self.size - data.len()));
        }
        Message {
            name: Some(self.name.to_owned()),
            data: Some(Data::String(data)),
            extras: self
                .ephemeral
                .then(|| serde_json::json!({ "ephemeral": true })),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
