//! `fanout`: C channels × S subscribers each, P realtime publishers sharing R publications/s (or
//! open loop), payloads of B bytes. Publisher p's n-th publication goes to channel (p + n) mod C,
//! stamped with (p, n, send time), so every subscriber knows what it is owed and how late it came.
//!
//! Cluster mode: with several servers (`--url a,b,c`, or `--spawn BIN --nodes 3`, on a Redis of
//! their own) subscriber i is on node i mod n and publishers go round the nodes after them; the
//! report adds deliveries per node and, for processes it knows (spawned, or `--node-pids`,
//! `--redis-pid`), CPU per acknowledged publication.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::task::JoinSet;

use super::cluster::{Cluster, Spawn, Spread};
use super::{connect_failures, ensure_fds, open, run_id, Readers, ServerCpu, Window};
use crate::cli::{FanoutArgs, Protocol, Shared};
use crate::clock;
use crate::ledger::{Latencies, Schedule};
use crate::payload::Stamp;
use crate::report::{connect_time_metrics, Report};
use crate::target::{Connection, Settled, Target};

/// How long publishers wait for their last ACKs.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The key `--spawn` starts its servers with when `--key` is not given.
const SPAWN_KEY: &str = "fanout.key:secret";

pub async fn run(shared: &Shared, args: &FanoutArgs) -> anyhow::Result<Report> {
    if args.channels == 0 || args.publishers == 0 {
        bail!("--channels and --publishers must be at least 1");
    }
    if args.ephemeral && shared.protocol != Protocol::Ably {
        bail!("--ephemeral is an Ably protocol flag");
    }
    let run = run_id();
    let key = Spawn::key_or(&shared.key, SPAWN_KEY);
    let cluster = Cluster::start_if(args.cluster.spawn("fanout", &key, &run), true).await?;
    let mut shared = shared.clone();
    if let Some(cluster) = &cluster {
        shared.url = cluster.urls().join(",");
        shared.key = key;
    }
    let ephemeral = args.ephemeral;
    let processes = Processes::of(&cluster, args);
    with_target!(
        shared,
        |ably: crate::target::ably::AblyTarget| ably.with_ephemeral(ephemeral),
        target => run_on(&shared, args, target, &run, processes).await
    )
}

/// The processes whose CPU a run reports: each node's and Redis's, where known.
struct Processes {
    nodes: Vec<u32>,
    redis: Option<u32>,
}

impl Processes {
    fn of(cluster: &Option<Cluster>, args: &FanoutArgs) -> Processes {
        match cluster {
            Some(cluster) => Processes {
                nodes: (0..cluster.len())
                    .filter_map(|k| cluster.pid(k).map(|(pid, _)| pid))
                    .collect(),
                redis: cluster.redis_pid(),
            },
            None => Processes {
                nodes: args.node_pids.clone(),
                redis: args.redis_pid,
            },
        }
    }
}

async fn run_on<T: Target>(
    shared: &Shared,
    args: &FanoutArgs,
    target: Arc<Spread<T>>,
    run: &str,
    processes: Processes,
) -> anyhow::Result<Report> {
    let n_subscribers = args.channels * args.subscribers;
    ensure_fds(n_subscribers + args.publishers)?;
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
    report.metric("nodes", target.len());
    report.metric("ephemeral", args.ephemeral);

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

    let node_cpu: Vec<ServerCpu> = processes
        .nodes
        .iter()
        .map(|pid| ServerCpu::start(Some(*pid)))
        .collect();
    let redis_cpu = ServerCpu::start(processes.redis);
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

    let node_cpu_us: Vec<Option<u64>> = node_cpu.iter().map(ServerCpu::cpu_us).collect();
    let redis_cpu_us = redis_cpu.cpu_us();

    report.metric("subscribers", readers.len());
    let ledgers = readers.finish_by_client().await;
    let mut deliveries_per_node = vec![0u64; target.len()];
    let mut subscribers_per_node = vec![0u64; target.len()];
    for (client, ledger, _) in &ledgers {
        deliveries_per_node[target.node_of(*client)] += ledger.received;
        subscribers_per_node[target.node_of(*client)] += 1;
    }
    let ledgers: Vec<_> = ledgers
        .into_iter()
        .map(|(_, ledger, failure)| (ledger, failure))
        .collect();
    super::settled_metrics(&mut report, settled, "publications", "publications");
    report.metric_f64(
        "publications_per_s",
        settled.sent as f64 / drained.publishing.as_secs_f64(),
    );
    drained.delivery_metrics(&mut report, &ledgers);
    if target.len() > 1 {
        report.metric("subscribers_per_node", subscribers_per_node);
        report.metric("deliveries_per_node", deliveries_per_node);
    }
    // CPU µs per acknowledged publication: what each process pays for one.
    let per_publication = |cpu_us: u64| {
        let value = cpu_us as f64 / settled.acknowledged.max(1) as f64;
        (value * 10.0).round() / 10.0
    };
    if !node_cpu_us.is_empty() {
        report.metric(
            "node_us_per_publication",
            node_cpu_us
                .iter()
                .map(|us| us.map(per_publication))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(us) = redis_cpu_us {
        report.metric_f64("redis_us_per_publication", per_publication(us));
    }
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
