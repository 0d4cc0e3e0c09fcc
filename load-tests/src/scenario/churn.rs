//! `churn`: does memory come back? N connections opened (some attached to their own `user:`
//! channel, some also in presence on a shared `session:` channel, each with a clientId, as signed-in
//! clients are), held briefly, closed, `--rounds` times; the server's RSS (from
//! `/proc/<pid>/status`) before each flood, at its peak, right after the close and after
//! `--settle`. The run fails when RSS after a settle is more than `--rss-slack-mib` above where it
//! was before the first flood: what a flood leaves behind must not stay, nor grow round by round.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::cluster::{Cluster, Spawn};
use super::{ensure_fds, run_id};
use crate::cli::{parse_duration, Protocol, Shared};
use crate::proc_stat;
use crate::report::{Detail, Report};
use crate::target::ably::{AblyConnection, AblyTarget, Credentials};
use crate::target::{Connection as _, Target as _};

/// The key `--spawn` starts its server with when `--key` is not given.
const SPAWN_KEY: &str = "churn.key:secret";
/// How often RSS is read while connections are open, for the peak.
const PEAK_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// Connections per loopback source address when the tool picks them (one address has ~28,000
/// ephemeral ports; closed ones linger in TIME_WAIT into the next round).
const CONNECTIONS_PER_SOURCE: usize = 10_000;
/// Before the first flood, time for a freshly started server to finish starting up.
const STARTUP_SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Connections per round.
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Percent of connections attached to their own `user:` channel.
    #[arg(long, default_value_t = 50)]
    pub attach_percent: usize,
    /// Percent of connections that also attach a shared `session:` channel and enter presence.
    #[arg(long, default_value_t = 20)]
    pub presence_percent: usize,
    /// Shared `session:` channels the presence connections spread over.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// How long every connection of a round stays open once all are.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub hold: Duration,
    /// After a round's close, how long before RSS is read again (and the next round starts).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub settle: Duration,
    /// RSS after a settle may be this many MiB above RSS before the first flood.
    #[arg(long, default_value_t = 24.0)]
    pub rss_slack_mib: f64,
    /// Start the server: this `realtime` binary on a free loopback port (its RSS is then read
    /// from /proc). Without it, `--url`, `--key` and `--server-pid` name a running one.
    #[arg(long)]
    pub spawn: Option<PathBuf>,
    /// More flags for the spawned server (`--server-arg=--max-connections=20000`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The spawned server logs to `<prefix>-node0.log` (default in the temp directory).
    #[arg(long)]
    pub server_logs: Option<PathBuf>,
}

/// One round's RSS readings, in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    before: u64,
    peak: u64,
    closed: u64,
    settled: u64,
    opened: usize,
    failed: usize,
}

pub async fn run(shared: &Shared, args: &ChurnArgs) -> anyhow::Result<Report> {
    if shared.protocol != Protocol::Ably {
        bail!("churn speaks the Ably protocol only");
    }
    if args.connections == 0 || args.rounds == 0 {
        bail!("--connections and --rounds must be at least 1");
    }
    if args.attach_percent > 100 || args.presence_percent > 100 {
        bail!("--attach-percent and --presence-percent are percentages");
    }
    ensure_fds(args.connections)?;
    let run = run_id();
    let key = Spawn::key_or(&shared.key, SPAWN_KEY);
    let spawn = args.spawn.as_ref().map(|bin| Spawn {
        bin: bin.clone(),
        name: "churn",
        nodes: 1,
        key: key.clone(),
        token_renew_lead: None,
        drain: None,
        extra: args.server_args.clone(),
        redis: false,
        redis_bin: PathBuf::from("redis-server"),
        log_prefix: Spawn::log_prefix(args.server_logs.as_ref(), "churn", &run),
    });
    let cluster = Cluster::start_if(spawn, !shared.key.is_empty()).await?;
    let (url, pid) = match &cluster {
        Some(cluster) => (cluster.urls().remove(0), cluster.pid(0).map(|(pid, _)| pid)),
        None => (shared.url.clone(), shared.server_pid),
    };
    let Some(pid) = pid else {
        bail!("churn reads the server's RSS: --spawn BIN, or --server-pid PID with --url");
    };
    if shared.source_ips.is_none() && is_loopback(&url) {
        let n_sources = args.connections.div_ceil(CONNECTIONS_PER_SOURCE);
        if n_sources > 1 {
            crate::target::set_source_addresses(
                (1..=n_sources as u8)
                    .map(|last| std::net::IpAddr::from([127, 0, 0, last]))
                    .collect(),
            );
        }
    }
    let target = Arc::new(
        AblyTarget::new(&url, Credentials::Key(key), shared.format.into())?
            .with_client_ids(&format!("churn-{run}")),
    );

    if cluster.is_some() {
        tokio::time::sleep(STARTUP_SETTLE).await;
    }
    let baseline = proc_stat::sample(pid)?.rss_bytes;
    let mut rounds = Vec::with_capacity(args.rounds);
    let mut failures = Vec::new();
    for number in 1..=args.rounds {
        let round = flood(shared, args, &target, &run, pid, number, &mut failures).await?;
        if !shared.quiet {
            eprintln!(
                "round {number}: RSS {:.1} → peak {:.1} → closed {:.1} → settled {:.1} MiB",
                mib(round.before),
                mib(round.peak),
                mib(round.closed),
                mib(round.settled)
            );
        }
        rounds.push(round);
    }
    drop(cluster);

    let mut report = Report::new("churn");
    report.metric("connections", args.connections);
    report.metric("rounds", args.rounds);
    report.metric("attach_percent", args.attach_percent);
    report.metric("presence_percent", args.presence_percent);
    report.metric_f64("hold_s", args.hold.as_secs_f64());
    report.metric_f64("settle_s", args.settle.as_secs_f64());
    report.metric_f64("rss_baseline_mib", mib(baseline));
    let last = rounds.last().copied().unwrap_or_default();
    report.metric_f64("rss_settled_last_mib", mib(last.settled));
    report.metric_f64("rss_retained_mib", mib(last.settled) - mib(baseline));
    report.metric_f64("rss_slack_mib", args.rss_slack_mib);
    report.metric(
        "connect_failures",
        rounds.iter().map(|r| r.failed).sum::<usize>(),
    );
    report.detail = Some(Detail {
        table: rounds_table(&rounds),
        key: "rounds",
        json: rounds_json(&rounds),
    });
    for failure in failures.iter().take(5) {
        report.fail(failure.clone());
    }
    if failures.len() > 5 {
        report.fail(format!(
            "... and {} more connect failures",
            failures.len() - 5
        ));
    }
    let limit = baseline as f64 + args.rss_slack_mib * 1024.0 * 1024.0;
    for (index, round) in rounds.iter().enumerate() {
        if round.settled as f64 > limit {
            report.fail(format!(
                "round {}: RSS {:.1} MiB after {:?}, over {:.1} MiB before the first flood + {} MiB",
                index + 1,
                mib(round.settled),
                args.settle,
                mib(baseline),
                args.rss_slack_mib
            ));
        }
    }
    Ok(report)
}

/// One round: open every connection, hold, close them all, settle; RSS along the way.
async fn flood(
    shared: &Shared,
    args: &ChurnArgs,
    target: &Arc<AblyTarget>,
    run: &str,
    pid: u32,
    number: usize,
    failures: &mut Vec<String>,
) -> anyhow::Result<Round> {
    let before = proc_stat::sample(pid)?.rss_bytes;
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_peak(pid, peak.clone(), sampling.clone()));

    let what = format!("round {number}");
    let bar = crate::progress::counter(args.connections as u64, &what, shared.quiet);
    let permits = Arc::new(Semaphore::new(shared.connect_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for client in 0..args.connections {
        let target = target.clone();
        let permits = permits.clone();
        let plan = Plan::of(args, run, client);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut connection = target.connect(client).await?;
            plan.carry_out(&mut connection).await?;
            anyhow::Ok(connection)
        });
    }
    let mut open = Vec::with_capacity(args.connections);
    let mut failed = 0;
    while let Some(result) = tasks.join_next().await {
        bar.inc(1);
        match result {
            Ok(Ok(connection)) => open.push(connection),
            Ok(Err(error)) => {
                failed += 1;
                failures.push(format!("round {number}: {error:#}"));
            }
            Err(error) => {
                failed += 1;
                failures.push(format!("round {number}: connect task: {error}"));
            }
        }
    }
    bar.finish_and_clear();
    let opened = open.len();
    tokio::time::sleep(args.hold).await;

    let bar = crate::progress::counter(opened as u64, "closing", shared.quiet);
    let mut closing = JoinSet::new();
    for connection in open {
        let permits = permits.clone();
        closing.spawn(async move {
            let _permit = permits.acquire_owned().await;
            connection.close().await;
        });
    }
    while closing.join_next().await.is_some() {
        bar.inc(1);
    }
    bar.finish_and_clear();
    sampling.store(false, Ordering::Release);
    let _ = sampler.await;
    let closed = proc_stat::sample(pid)?.rss_bytes;

    let bar = crate::progress::timed(args.settle, shared.quiet);
    let deadline = Instant::now() + args.settle;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
        bar.set_message(format!(
            "settling: RSS {:.1} MiB",
            mib(proc_stat::sample(pid)?.rss_bytes)
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let settled = proc_stat::sample(pid)?.rss_bytes;
    Ok(Round {
        before,
        peak: peak.load(Ordering::Relaxed).max(closed),
        closed,
        settled,
        opened,
        failed,
    })
}

/// What one client does once connected.
struct Plan {
    user_channel: Option<String>,
    session_channel: Option<String>,
}

impl Plan {
    /// Clients are spread evenly: of every 100, the first `attach_percent` attach their own
    /// channel and the first `presence_percent` enter presence on a shared one.
    fn of(args: &ChurnArgs, run: &str, client: usize) -> Plan {
        let slot = client % 100;
        Plan {
            user_channel: (slot < args.attach_percent).then(|| format!("user:{run}-{client}")),
            session_channel: (slot < args.presence_percent)
                .then(|| format!("session:{run}-{}", client % args.sessions.max(1))),
        }
    }

    async fn carry_out(self, connection: &mut AblyConnection) -> anyhow::Result<()> {
        if let Some(channel) = &self.user_channel {
            connection.subscribe(channel).await?;
        }
        if let Some(channel) = &self.session_channel {
            connection.subscribe(channel).await?;
            connection.enter(channel).await?;
        }
        Ok(())
    }
}

/// Keeps the highest RSS seen in `peak` until `sampling` is cleared.
async fn sample_peak(pid: u32, peak: Arc<AtomicU64>, sampling: Arc<AtomicBool>) {
    while sampling.load(Ordering::Acquire) {
        if let Ok(sample) = proc_stat::sample(pid) {
            peak.fetch_max(sample.rss_bytes, Ordering::Relaxed);
        }
        tokio::time::sleep(PEAK_SAMPLE_INTERVAL).await;
    }
}

fn is_loopback(url: &str) -> bool {
    ["://127.0.0.1:", "://localhost:"]
        .iter()
        .any(|host| url.contains(host))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rounds_json(rounds: &[Round]) -> Value {
    Value::Array(
        rounds
            .iter()
            .enumerate()
            .map(|(index, r)| {
                json!({
                    "round": index + 1,
                    "connections": r.opened,
                    "connect_failures": r.failed,
                    "rss_before_mib": tenths(mib(r.before)),
                    "rss_peak_mib": tenths(mib(r.peak)),
                    "rss_closed_mib": tenths(mib(r.closed)),
                    "rss_settled_mib": tenths(mib(r.settled)),
                })
            })
            .collect(),
    )
}

fn tenths(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn rounds_table(rounds: &[Round]) -> String {
    let mut out = String::from(
        "round  connections  RSS before  peak      after close  after settle  (MiB)\n",
    );
    for (index, r) in rounds.iter().enumerate() {
        out.push_str(&format!(
            "{:<5}  {:<11}  {:<10.1}  {:<8.1}  {:<11.1}  {:.1}\n",
            index + 1,
            r.opened,
            mib(r.before),
            mib(r.peak),
            mib(r.closed),
            mib(r.settled)
        ));
    }
    out
}
