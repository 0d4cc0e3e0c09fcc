//! The scenarios and the steps they share: open many connections with bounded concurrency, give
//! each subscriber a reader task with its `Ledger`, wait for the owed deliveries, and account for
//! them in the `Report`.

/// Evaluates `$body` with `$target` bound to an `Arc` of the `Target` that `--protocol` names
/// (API-key credentials for Ably), spread over the servers of `--url` (one, or a comma-separated
/// list: see `cluster::Spread`): one arm per protocol, each its own monomorphic `$body`. The
/// optional `$ably` adjusts each Ably target (`|ably| ably.with_ephemeral(true)`).
macro_rules! with_target {
    ($shared:expr, $target:ident => $body:expr) => {
        with_target!($shared, |ably| ably, $target => $body)
    };
    ($shared:expr, $ably:expr, $target:ident => $body:expr) => {
        match $shared.protocol {
            crate::cli::Protocol::Ably => {
                let $target = crate::scenario::cluster::Spread::new(&$shared.url, |url| {
                    Ok(($ably)(crate::target::ably::AblyTarget::new(
                        url,
                        crate::target::ably::Credentials::Key($shared.key.clone()),
                        $shared.format.into(),
                    )?))
                })?;
                $body
            }
            crate::cli::Protocol::Raw => {
                let $target = crate::scenario::cluster::Spread::new(&$shared.url, |url| {
                    Ok(crate::target::raw::RawTarget::new(url))
                })?;
                $body
            }
            crate::cli::Protocol::Socketio => {
                let $target = crate::scenario::cluster::Spread::new(
                    &$shared.url,
                    crate::target::socketio::SocketIoTarget::new,
                )?;
                $body
            }
            crate::cli::Protocol::Pusher => {
                let $target = crate::scenario::cluster::Spread::new(&$shared.url, |url| {
                    crate::target::pusher::PusherTarget::new(url, &$shared.key)
                })?;
                $body
            }
        }
    };
}

pub mod churn;
pub mod cluster;
pub mod edits;
pub mod fanout;
pub mod idle;
pub mod reactions;
pub mod sessions;
pub mod soak;
pub mod storm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::Rng as _;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::cli::{Cli, Protocol, Scenario, Shared};
use crate::ledger::{Latencies, Ledger, Schedule};
use crate::proc_stat;
use crate::report::{self, Report};
use crate::target::ably::{AblyTarget, Credentials};
use crate::target::{Connection, Target};

/// File descriptors kept free for the runtime, stdio, REST connections and the like.
const SPARE_FDS: u64 = 64;

pub async fn run(cli: Cli) -> anyhow::Result<Report> {
    let shared = cli.shared;
    let needs_key = match &cli.scenario {
        // fanout --spawn starts its servers with a key of its own.
        Scenario::Fanout(args) if args.cluster.spawn.is_some() => false,
        Scenario::Fanout(_) | Scenario::Idle(_) => {
            matches!(shared.protocol, Protocol::Ably | Protocol::Pusher)
        }
        // soak needs a key only without --spawn, and says so itself.
        Scenario::Ceiling(_) | Scenario::Compare(_) | Scenario::Soak(_) | Scenario::Churn(_) => {
            false
        }
        _ => true,
    };
    if needs_key && shared.key.is_empty() {
        bail!("--key (or REALTIME_LOAD_KEY) is required: appId.keyId:secret");
    }
    let report = match cli.scenario {
        Scenario::Idle(args) => idle::run(&shared, &args).await?,
        Scenario::Fanout(args) => fanout::run(&shared, &args).await?,
        Scenario::Storm(args) => storm::run(&shared, &args).await?,
        Scenario::Sessions(args) => sessions::run(&shared, &args).await?,
        Scenario::Soak(args) => soak::run(&shared, &args).await?,
        Scenario::Churn(args) => churn::run(&shared, &args).await?,
        Scenario::Reactions(args) => reactions::run(&shared, &args).await?,
        Scenario::Edits(args) => edits::run(&shared, &args).await?,
        Scenario::Ceiling(args) => {
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            eprintln!("ceiling: broadcasting on ws://{}/", listener.local_addr()?);
            tokio::select! {
                served = crate::ceiling::serve(listener) => served?,
                _ = tokio::signal::ctrl_c() => {}
            }
            bail!("ceiling stopped");
        }
        Scenario::Compare(args) => crate::compare::run(&shared, &args).await?,
    };
    Ok(report)
}

/// Raises the open-file soft limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Fails clearly when `connections` cannot all be open at once in this process.
pub fn ensure_fds(connections: usize) -> anyhow::Result<()> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let needed = connections as u64 + SPARE_FDS;
    if needed > soft {
        bail!(
            "{connections} connections need about {needed} open files; the limit is {soft} \
             (hard {hard}): raise it (ulimit -n, or the hard limit in limits.conf / systemd)"
        );
    }
    Ok(())
}

/// A short random tag in channel names, so runs against one server never share channels.
pub fn run_id() -> String {
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(6)
        .map(char::from)
        .collect()
}

pub fn ably_target(shared: &Shared, credentials: Credentials) -> anyhow::Result<Arc<AblyTarget>> {
    Ok(Arc::new(AblyTarget::new(
        &shared.url,
        credentials,
        shared.format.into(),
    )?))
}

/// Connections that opened (in client order), how long each took, and why others did not.
pub struct Opened<C> {
    pub connections: Vec<(usize, C)>,
    pub connect_us: Vec<u64>,
    pub failures: Vec<String>,
}

/// Opens clients `first..first + channels.len()`, `concurrency` at a time; client `first + i`
/// subscribes to `channels[i]` when it is `Some`.
pub async fn open<T: Target>(
    target: &Arc<T>,
    first: usize,
    channels: Vec<Option<String>>,
    concurrency: usize,
    quiet: bool,
    what: &str,
) -> Opened<T::Connection> {
    let bar = crate::progress::counter(channels.len() as u64, what, quiet);
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (offset, channel) in channels.into_iter().enumerate() {
        let target = target.clone();
        let permits = permits.clone();
        let client = first + offset;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let started = Instant::now();
            let mut connection = target.connect(client).await?;
            let connect_us = started.elapsed().as_micros() as u64;
            if let Some(channel) = channel {
                connection.subscribe(&channel).await?;
            }
            anyhow::Ok((client, connection, connect_us))
        });
    }
    let mut opened = Opened {
        connections: Vec::new(),
        connect_us: Vec::new(),
        failures: Vec::new(),
    };
    while let Some(result) = tasks.join_next().await {
        bar.inc(1);
        match result {
            Ok(Ok((client, connection, connect_us))) => {
                opened.connections.push((client, connection));
                opened.connect_us.push(connect_us);
            }
            Ok(Err(error)) => opened.failures.push(format!("{error:#}")),
            Err(error) => opened.failures.push(format!("connect task: {error}")),
        }
    }
    bar.finish_and_clear();
    opened.connections.sort_by_key(|(client, _)| *client);
    opened
}

/// Subscribers reading into their ledgers until `stop`.
pub struct Readers {
    stop: watch::Sender<bool>,
    /// Each reader's client number, ledger and failure.
    tasks: JoinSet<(usize, Ledger, Option<String>)>,
    /// Each reader's channel (its index in the schedule).
    channels: Vec<usize>,
}

impl Readers {
    /// `connections` pairs each connection with its client's index; client `k` reads the
    /// schedule's channel `channel_of(k)`.
    pub fn spawn<C: Connection>(
        connections: Vec<(usize, C)>,
        channel_of: impl Fn(usize) -> usize,
        schedule: &Schedule,
        latencies: &Arc<Latencies>,
    ) -> Readers {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut channels = Vec::with_capacity(connections.len());
        for (client, connection) in connections {
            let channel = channel_of(client);
            let ledger = Ledger::new(channel, schedule.clone(), latencies.clone());
            tasks.spawn(read_into(client, connection, ledger, stopped.clone()));
            channels.push(channel);
        }
        Readers {
            stop,
            tasks,
            channels,
        }
    }

    /// How many readers read each of the schedule's `n_channels` channels.
    pub fn per_channel(&self, n_channels: usize) -> Vec<u64> {
        let mut counts = vec![0u64; n_channels];
        for channel in &self.channels {
            counts[*channel] += 1;
        }
        counts
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops every reader, closes its connection and hands back the ledgers.
    pub async fn finish(self) -> Vec<(Ledger, Option<String>)> {
        self.finish_by_client()
            .await
            .into_iter()
            .map(|(_, ledger, failure)| (ledger, failure))
            .collect()
    }

    /// `finish`, each ledger with its reader's client number.
    pub async fn finish_by_client(mut self) -> Vec<(usize, Ledger, Option<String>)> {
        let _ = self.stop.send(true);
        let mut ledgers = Vec::with_capacity(self.tasks.len());
        while let Some(result) = self.tasks.join_next().await {
            if let Ok(ledger) = result {
                ledgers.push(ledger);
            }
        }
        ledgers
    }
}

async fn read_into<C: Connection>(
    client: usize,
    mut connection: C,
    mut ledger: Ledger,
    mut stop: watch::Receiver<bool>,
) -> (usize, Ledger, Option<String>) {
    loop {
        tokio::select! {
            biased;
            delivery = connection.next_delivery() => match delivery {
                Some(delivery) => ledger.record(&delivery),
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    ledger.flush();
    let failure = connection.failure();
    connection.close().await;
    (client, ledger, failure)
}

/// Waits until `expected` deliveries arrived, or none arrived for `quiet_timeout`.
pub async fn wait_for_deliveries(latencies: &Latencies, expected: u64, quiet_timeout: Duration) {
    let mut last = latencies
        .delivered
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut last_progress = Instant::now();
    loop {
        let delivered = latencies
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed);
        if delivered >= expected {
            return;
        }
        if delivered != last {
            last = delivered;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= quiet_timeout {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The measured window of a delivery scenario, from the first publish to the last owed
/// delivery: its clock, the server's CPU over it and a deliveries/s progress bar.
pub struct Window {
    started: Instant,
    server_cpu: ServerCpu,
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
    latencies: Arc<Latencies>,
    drain_timeout: Duration,
}

/// What a drained `Window` measured.
pub struct Drained {
    /// Per channel: the deliveries each of its subscribers is owed.
    pub owed: Vec<u64>,
    pub publishing: Duration,
    pub delivering: Duration,
    latencies: Arc<Latencies>,
}

impl Window {
    pub fn start(shared: &Shared, latencies: &Arc<Latencies>) -> Window {
        let server_cpu = ServerCpu::start(shared.server_pid);
        let started = Instant::now();
        let bar = crate::progress::timed(shared.duration(), shared.quiet);
        let ticker = crate::progress::deliveries_per_second(&bar, latencies);
        Window {
            started,
            server_cpu,
            bar,
            ticker,
            latencies: latencies.clone(),
            drain_timeout: shared.drain_timeout,
        }
    }

    /// Publishing by `schedule` is over: what each channel is owed by `sent` (per publisher),
    /// once its subscribers got it all or deliveries stalled for `--drain-timeout`. The progress
    /// bar and the CPU sample stop there.
    pub async fn drain(
        self,
        report: &mut Report,
        sent: &[u64],
        schedule: &Schedule,
        subscribers_per_channel: &[u64],
    ) -> Drained {
        let publishing = self.started.elapsed();
        let owed = crate::ledger::owed_per_channel(subscribers_per_channel.len(), sent, schedule);
        let expected = owed
            .iter()
            .zip(subscribers_per_channel)
            .map(|(owed, n)| owed * n)
            .sum();
        wait_for_deliveries(&self.latencies, expected, self.drain_timeout).await;
        let delivering = self.started.elapsed();
        self.ticker.abort();
        self.bar.finish_and_clear();
        self.server_cpu.finish(report);
        Drained {
            owed,
            publishing,
            delivering,
            latencies: self.latencies,
        }
    }
}

impl Drained {
    /// `account`, then deliveries per second over the window and the latency percentiles.
    pub fn delivery_metrics(&self, report: &mut Report, ledgers: &[(Ledger, Option<String>)]) {
        let received = account(report, ledgers, &self.owed);
        report.metric_f64(
            "deliveries_per_s",
            received as f64 / self.delivering.as_secs_f64(),
        );
        latency_metrics(report, &self.latencies);
    }
}

/// Lost, duplicated and misrouted deliveries and dropped subscribers, given what each channel
/// was owed. Returns the deliveries received.
pub fn account(report: &mut Report, ledgers: &[(Ledger, Option<String>)], owed: &[u64]) -> u64 {
    let mut received = 0;
    let mut expected = 0;
    let mut lost = 0;
    let mut duplicated = 0;
    let mut misrouted = 0;
    let mut dropped = Vec::new();
    for (ledger, failure) in ledgers {
        let owed = owed.get(ledger.channel()).copied().unwrap_or(0);
        received += ledger.received;
        expected += owed;
        lost += owed.saturating_sub(ledger.unique);
        duplicated += ledger.duplicated;
        misrouted += ledger.misrouted;
        if let Some(failure) = failure {
            dropped.push(failure.clone());
        }
    }
    report.metric("deliveries", received);
    report.metric("expected_deliveries", expected);
    report.metric("lost", lost);
    report.metric("duplicated", duplicated);
    report.metric("misrouted", misrouted);
    report.metric("subscribers_dropped", dropped.len());
    if lost > 0 {
        report.fail(format!("{lost} deliveries lost"));
    }
    if duplicated > 0 {
        report.fail(format!("{duplicated} deliveries duplicated"));
    }
    if misrouted > 0 {
        report.fail(format!(
            "{misrouted} deliveries on the wrong channel or unreadable"
        ));
    }
    for failure in dropped.iter().take(5) {
        report.fail(format!("subscriber: {failure}"));
    }
    if dropped.len() > 5 {
        report.fail(format!("... and {} more subscribers", dropped.len() - 5));
    }
    received
}

/// How the server settled a run's publishes: `metric` (acknowledged), `metric_refused` and
/// `metric_unconfirmed`; any refused or unconfirmed `what` fails the run.
pub fn settled_metrics(
    report: &mut Report,
    settled: crate::target::Settled,
    metric: &str,
    what: &str,
) {
    report.metric(metric, settled.acknowledged);
    report.metric(format!("{metric}_refused"), settled.refused);
    let unconfirmed = settled.sent - settled.acknowledged - settled.refused;
    report.metric(format!("{metric}_unconfirmed"), unconfirmed);
    if settled.refused > 0 {
        report.fail(format!("{} {what} refused (NACK)", settled.refused));
    }
    if unconfirmed > 0 {
        report.fail(format!("{unconfirmed} {what} never acknowledged"));
    }
}

pub fn connect_failures(report: &mut Report, failures: &[String]) {
    report.metric("connect_failures", failures.len());
    for failure in failures.iter().take(5) {
        report.fail(format!("connect: {failure}"));
    }
}

pub fn latency_metrics(report: &mut Report, latencies: &Arc<Latencies>) {
    report.latencies = Some(latencies.clone());
    if let Some(percentiles) = latencies.percentiles_ms() {
        for (quantile, ms) in percentiles {
            report.metric_f64(format!("latency_ms_{quantile}"), ms);
        }
    }
}

pub use report::connect_time_metrics;

/// The server's CPU over a phase, when `--server-pid` names it.
pub struct ServerCpu {
    pid: Option<u32>,
    start: Option<(Instant, proc_stat::Sample)>,
}

impl ServerCpu {
    pub fn start(pid: Option<u32>) -> ServerCpu {
        let start = pid.and_then(|pid| Some((Instant::now(), proc_stat::sample(pid).ok()?)));
        ServerCpu { pid, start }
    }

    /// Server CPU in percent of one core since `start`, and its RSS now.
    pub fn finish(&self, report: &mut Report) {
        if let Some((cpu_percent, after)) = self.since_start() {
            report.metric_f64("server_cpu_percent", cpu_percent);
            report.metric("server_rss_mib", after.rss_bytes / (1024 * 1024));
        }
    }

    /// CPU µs (user + system) since `start`.
    pub fn cpu_us(&self) -> Option<u64> {
        let (pid, (_, before)) = (self.pid?, self.start?);
        Some(
            proc_stat::sample(pid)
                .ok()?
                .cpu_us
                .saturating_sub(before.cpu_us),
        )
    }

    /// CPU in percent of one core since `start`, and the sample now.
    pub fn since_start(&self) -> Option<(f64, proc_stat::Sample)> {
        let (Some(pid), Some((started, before))) = (self.pid, self.start) else {
            return None;
        };
        let after = proc_stat::sample(pid).ok()?;
        let wall_us = started.elapsed().as_micros().max(1) as f64;
        let cpu = after.cpu_us.saturating_sub(before.cpu_us) as f64;
        Some((100.0 * cpu / wall_us, after))
    }
}
