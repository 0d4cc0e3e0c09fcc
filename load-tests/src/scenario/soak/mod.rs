//! `soak`: a compressed Digis day. N clients on short-lived tokens stay connected for the whole
//! run (half JSON, half msgpack; half asking for protocol heartbeats, half relying on pings),
//! each on its own `user:` channel and a few shared `session:` and `stream:` ones, entering,
//! updating and leaving presence; a backend publishes over REST and `POST /events`; clients drop
//! their sockets and resume, or close and start afresh, at random; with `--drain-every` a node
//! is drained and restarted now and then. Everything a client is promised over time is checked
//! (`client`): no disconnect nobody asked for, no silence past `maxIdleInterval`, no message lost,
//! duplicated or out of order, every renewal and resume honoured; and the servers' RSS and open
//! fds must not grow after the warm-up (`monitor`). Any of it fails the run, counted by reason.

mod backend;
pub mod checks;
mod client;
mod monitor;
mod wire;

pub use self::monitor::{NodeSample, Sample};

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use protocol::Format;
use rand::rngs::StdRng;
use rand::Rng as _;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::backend::{Nodes, Published, Rates};
use self::checks::Tally;
use self::client::{Client, Habits, Plan, World};
use self::monitor::{Growth, Watched};
use super::cluster::{split_urls, Cluster, ClusterArgs, Endpoints, Spawn};
use super::{ensure_fds, latency_metrics, run_id};
use crate::cli::{parse_duration, Shared};
use crate::ledger::Latencies;
use crate::report::Report;
use crate::rest::Rest;

/// The key `--spawn` starts its servers with when `--key` is not given.
const SPAWN_KEY: &str = "soak.key:secret";
/// Once the run is over, how long clients get to receive what they are owed (and close).
const FINISH_TIMEOUT: Duration = Duration::from_secs(20);
/// Beyond the finish timeout, how long before a client still running is given up on.
const STRAGGLER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Shared `session:` channels; each client attaches two (entering presence on the first).
    #[arg(long, default_value_t = 40)]
    pub sessions: usize,
    /// Shared `stream:` channels; each client attaches one.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Backend REST publications per second in all: 3 in 4 to shared channels, 1 in 4 to a
    /// client's `user:` channel.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Backend `POST /events` per second (`session.updated`, `stream.viewers`, `tokens.credited`).
    #[arg(long, default_value_t = 2.0)]
    pub event_rate: f64,
    /// Payload bytes per publication.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Token lifetime of most clients: they must be asked to renew (AUTH) and never expire.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub token_ttl: Duration,
    /// Token lifetime of the others, below the server's renewal lead: they are not asked and
    /// expire into DISCONNECTED 40142, then get a new token and resume.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub short_token_ttl: Duration,
    /// Share of clients on `--short-token-ttl`.
    #[arg(long, default_value_t = 0.1)]
    pub short_token_share: f64,
    /// The server's `--token-renew-lead-ms` (passed to the nodes `--spawn` starts).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub token_renew_lead: Duration,
    /// Mean time between a client's socket drops (closed without a CLOSE, then resumed).
    #[arg(long, value_parser = parse_duration, default_value = "3m")]
    pub drop_every: Duration,
    /// Mean time between a client's clean reconnects (CLOSE, then a new connection).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub reconnect_every: Duration,
    /// Mean time between a client's presence steps (enter, update, leave).
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    pub presence_every: Duration,
    /// Silence allowed over `maxIdleInterval` on a heartbeats=true connection.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub silence_slack: Duration,
    /// Clients start evenly over this long.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub ramp: Duration,
    /// Server RSS and fds are measured from this far into the run (and into each process's life).
    /// The server's history fills its default 10-minute window until then: memory that grows
    /// before it is retention, not a leak.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub warmup: Duration,
    /// RSS may grow by this percentage after the warm-up ...
    #[arg(long, default_value_t = 20.0)]
    pub rss_growth_percent: f64,
    /// ... plus this many MiB.
    #[arg(long, default_value_t = 8)]
    pub rss_growth_mib: u64,
    /// Open fds may grow by the change in clients on that node plus this many.
    #[arg(long, default_value_t = 64)]
    pub fd_slack: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// With `--spawn` and several nodes: SIGTERM one node in turn this often, restart it.
    #[arg(long, value_parser = parse_duration)]
    pub drain_every: Option<Duration>,
    /// The nodes' `--drain-ms`.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub drain: Duration,
    /// Seed for the clients' and the backend's random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The run's channels, by number: sessions, then streams, then each client's user channel.
pub struct Layout {
    run: String,
    seed: u64,
    sessions: usize,
    streams: usize,
    clients: usize,
}

impl Layout {
    fn channel_name(&self, number: usize) -> String {
        let run = &self.run;
        if number < self.sessions {
            format!("session:{run}-{number}")
        } else if number < self.sessions + self.streams {
            format!("stream:{run}-{}", number - self.sessions)
        } else {
            format!(
                "user:{}",
                self.user_id(number - self.sessions - self.streams)
            )
        }
    }

    fn user_id(&self, client: usize) -> String {
        format!("{}-{client}", self.run)
    }

    fn user_channel(&self, client: usize) -> usize {
        self.sessions + self.streams + client
    }

    /// A client's channels: its own, two sessions and a stream.
    fn client_channels(&self, client: usize) -> Vec<usize> {
        let mut channels = vec![self.user_channel(client)];
        if self.sessions > 0 {
            channels.push(client % self.sessions);
            let second = (client / self.sessions + client + 1) % self.sessions;
            if !channels.contains(&second) {
                channels.push(second);
            }
        }
        if self.streams > 0 {
            channels.push(self.sessions + client % self.streams);
        }
        channels
    }

    fn publication_channel(&self, seq: u64, rng: &mut StdRng) -> usize {
        let shared = self.sessions + self.streams;
        if shared == 0 || seq % 4 == 3 {
            self.user_channel(rng.gen_range(0..self.clients))
        } else {
            rng.gen_range(0..shared)
        }
    }

    fn event(&self, n: u64, rng: &mut StdRng) -> Value {
        let kind = match (self.sessions, self.streams) {
            (0, 0) => 2,
            (0, _) => [1, 2][n as usize % 2],
            (_, 0) => [0, 2][n as usize % 2],
            _ => n % 3,
        };
        let place = match kind {
            0 => format!("{}-{}", self.run, rng.gen_range(0..self.sessions)),
            1 => format!("{}-{}", self.run, rng.gen_range(0..self.streams)),
            _ => String::new(),
        };
        let creator = self.user_id(rng.gen_range(0..self.clients));
        let fan = self.user_id(rng.gen_range(0..self.clients));
        backend::event_json(&self.run, n, kind, (place, creator, fan))
    }
}

pub async fn run(shared: &Shared, args: &SoakArgs) -> anyhow::Result<Report> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.short_token_share > 0.0 && args.short_token_ttl >= args.token_renew_lead {
        bail!("--short-token-ttl must be below --token-renew-lead (so those tokens expire)");
    }
    if args.short_token_share < 1.0 && args.token_ttl <= args.token_renew_lead {
        bail!("--token-ttl must be above --token-renew-lead (so those tokens are renewed)");
    }
    if args.drain_every.is_some() && (args.cluster.spawn.is_none() || args.cluster.nodes < 2) {
        bail!("--drain-every needs --spawn and --nodes 2 or more");
    }
    ensure_fds(args.clients + 256)?;
    let duration = shared.duration.unwrap_or(Duration::from_secs(600));
    let run = run_id();
    let key = Spawn::key_or(&shared.key, SPAWN_KEY);
    let spawn = args.cluster.spawn("soak", &key, &run).map(|spawn| Spawn {
        token_renew_lead: Some(args.token_renew_lead),
        drain: Some(args.drain),
        ..spawn
    });
    let cluster = Cluster::start_if(spawn, !shared.key.is_empty()).await?;
    let urls = match &cluster {
        Some(cluster) => cluster.urls(),
        None => split_urls(&shared.url),
    };
    let endpoints = Arc::new(Endpoints::new(urls.clone())?);
    let rest = urls
        .iter()
        .map(|url| Rest::new(url, &key))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let nodes = Arc::new(Nodes {
        rest,
        endpoints: endpoints.clone(),
    });
    let layout = Arc::new(Layout {
        run,
        seed: args.seed,
        sessions: args.sessions,
        streams: args.streams,
        clients: args.clients,
    });
    let tally = Arc::new(Tally::default());
    let latencies = Arc::new(Latencies::default());
    let published = Arc::new(Published::default());
    let connected = Arc::new(AtomicU64::new(0));
    let world = Arc::new(World {
        nodes: nodes.clone(),
        tally: tally.clone(),
        latencies: latencies.clone(),
        published: published.clone(),
        connected: connected.clone(),
        habits: Habits {
            drop_every: args.drop_every,
            reconnect_every: args.reconnect_every,
            presence_every: args.presence_every,
            silence_slack: args.silence_slack,
            finish_timeout: FINISH_TIMEOUT,
        },
    });

    let (stop_backend, backend_stopped) = watch::channel(false);
    let (stop_clients, clients_stopped) = watch::channel(false);
    let started = Instant::now();
    let monitor = tokio::spawn(monitor::run(
        Watched {
            cluster,
            external_pid: shared.server_pid,
            endpoints: endpoints.clone(),
            connected: connected.clone(),
            latencies: latencies.clone(),
            tally: tally.clone(),
            drain_every: args.drain_every,
        },
        backend_stopped.clone(),
    ));
    let mut clients = JoinSet::new();
    let n_short = (args.clients as f64 * args.short_token_share).round() as usize;
    for index in 0..args.clients {
        let channels = layout
            .client_channels(index)
            .into_iter()
            .map(|number| (layout.channel_name(number), number))
            .collect();
        // Spread the short tokens and the formats evenly over the clients.
        let short = n_short > 0 && index % (args.clients / n_short).max(1) == 0;
        let token_ttl = if short {
            args.short_token_ttl
        } else {
            args.token_ttl
        };
        let plan = Plan {
            index,
            client_id: format!("soak-{}", layout.user_id(index)),
            format: if index % 2 == 0 {
                Format::Json
            } else {
                Format::Msgpack
            },
            heartbeats: (index / 2) % 2 == 0,
            token_ttl,
            renewable: token_ttl > args.token_renew_lead,
            renew_lead: args.token_renew_lead,
            channels,
            presence_on: 1.min(layout.client_channels(index).len() - 1),
        };
        let client = Client::new(plan, world.clone(), clients_stopped.clone(), args.seed);
        let start_at = tokio::time::Instant::from_std(started)
            + args.ramp.mul_f64(index as f64 / args.clients as f64);
        clients.spawn(async move {
            tokio::time::sleep_until(start_at).await;
            client.run().await;
        });
    }
    let backend = tokio::spawn(backend::run(
        nodes.clone(),
        layout.clone(),
        Rates {
            publications_per_s: args.rate,
            events_per_s: args.event_rate,
            size: args.size,
        },
        published.clone(),
        tally.clone(),
        backend_stopped,
    ));

    let bar = crate::progress::timed(duration, shared.quiet);
    let ticker = progress(&bar, &connected, &latencies, &tally);
    tokio::time::sleep(duration).await;
    ticker.abort();
    bar.finish_and_clear();
    let _ = stop_backend.send(true);
    let (publications, events) = backend.await.unwrap_or_default();
    let measured_for = started.elapsed();
    let (cluster, samples) = monitor.await.unwrap_or_default();
    let _ = stop_clients.send(true);
    let finished = tokio::time::timeout(FINISH_TIMEOUT + STRAGGLER_TIMEOUT, async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tally.fail("clients did not finish", clients.len() as u64, || {
            format!("still running {STRAGGLER_TIMEOUT:?} after the finish timeout")
        });
        clients.abort_all();
    }
    let growth = Growth {
        warmup: args.warmup,
        rss_percent: args.rss_growth_percent,
        rss_bytes: args.rss_growth_mib * 1024 * 1024,
        fd_slack: args.fd_slack,
    };
    monitor::check_growth(&samples, &growth, &tally);

    let mut report = Report::new("soak");
    report.metric("clients", args.clients);
    report.metric("nodes", endpoints.len());
    report.metric("short_token_clients", n_short);
    report.metric_f64("duration_s", measured_for.as_secs_f64());
    report.metric("publications", publications);
    report.metric("events", events);
    let delivered = latencies
        .delivered
        .load(std::sync::atomic::Ordering::Relaxed);
    report.metric("deliveries", delivered);
    report.metric_f64(
        "deliveries_per_s",
        delivered as f64 / measured_for.as_secs_f64(),
    );
    latency_metrics(&mut report, &latencies);
    report.metric(
        "growth_limits",
        format!(
            "RSS {}% + {} MiB, fds +{} beyond the change in clients, after {:?}",
            args.rss_growth_percent, args.rss_growth_mib, args.fd_slack, args.warmup
        ),
    );
    for (k, first, last) in monitor::measured(&samples, args.warmup) {
        report.metric(
            format!("node{k}_pid{}", first.pid),
            format!(
                "RSS {:.1} -> {:.1} MiB, fds {} -> {}, clients {} -> {}",
                monitor::mib(first.rss_bytes),
                monitor::mib(last.rss_bytes),
                first.fds,
                last.fds,
                first.live,
                last.live
            ),
        );
    }
    let expected: Map<String, Value> = tally
        .events()
        .into_iter()
        .map(|(name, n)| (name.to_owned(), json!(n)))
        .collect();
    report.metric("expected_events", Value::Object(expected));
    let failures = tally.failures();
    let by_reason: Map<String, Value> = failures
        .iter()
        .map(|(reason, n, _)| (reason.clone(), json!(n)))
        .collect();
    report.metric("failures_by_reason", Value::Object(by_reason));
    for (reason, n, examples) in failures {
        report.fail(format!("{reason}: {n} (e.g. {})", examples.join("; ")));
    }
    if let Some(path) = &shared.plot {
        if let Err(error) = crate::plot::write_soak(path, &samples, &latencies) {
            eprintln!("realtime-load: --plot {}: {error:#}", path.display());
        }
    }
    drop(cluster);
    Ok(report)
}

/// Ticks `bar` once a second with connections, deliveries/s and failures so far.
fn progress(
    bar: &indicatif::ProgressBar,
    connected: &Arc<AtomicU64>,
    latencies: &Arc<Latencies>,
    tally: &Arc<Tally>,
) -> tokio::task::JoinHandle<()> {
    let (connected, tally) = (connected.clone(), tally.clone());
    crate::progress::ticking(bar, latencies, move |rate| {
        let failures: u64 = tally.failures().iter().map(|(_, n, _)| n).sum();
        format!(
            "{} connected, {rate} deliveries/s, {failures} failures",
            connected.load(std::sync::atomic::Ordering::Relaxed)
        )
    })
}
