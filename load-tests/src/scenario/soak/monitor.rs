//! Once a second: our clients' connections, deliveries so far, and each server process's RSS and
//! open fds; with `--drain-every`, a node drained and restarted in turn. At the end, the growth
//! checks: RSS and fds of each server process after the warm-up against its last sample.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::checks::Tally;
use crate::ledger::Latencies;
use crate::proc_stat;
use crate::scenario::cluster::{open_fds, Cluster, Endpoints};

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the clients started.
    pub at_s: f64,
    pub connected: u64,
    pub delivered: u64,
    pub nodes: Vec<Option<NodeSample>>,
}

#[derive(Debug, Clone, Copy)]
pub struct NodeSample {
    pub pid: u32,
    /// Seconds since this process started (since the run started for one not ours).
    pub age_s: f64,
    pub rss_bytes: u64,
    pub fds: u64,
    /// Our clients connected to it.
    pub live: i64,
}

/// What the watch needs: the processes (ours, or one `--server-pid`), where clients are, and how
/// many are connected.
pub(super) struct Watched {
    pub(super) cluster: Option<Cluster>,
    pub(super) external_pid: Option<u32>,
    pub(super) endpoints: Arc<Endpoints>,
    pub(super) connected: Arc<std::sync::atomic::AtomicU64>,
    pub(super) latencies: Arc<Latencies>,
    pub(super) tally: Arc<Tally>,
    pub(super) drain_every: Option<Duration>,
}

/// Samples (and drains) until `stop`; hands the cluster back with the samples.
pub(super) async fn run(
    mut watched: Watched,
    mut stop: watch::Receiver<bool>,
) -> (Option<Cluster>, Vec<Sample>) {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_drain = watched.drain_every.map(|every| Instant::now() + every);
    let mut drained = 0usize;
    let mut exited_reported = vec![false; watched.endpoints.len()];
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => break,
        }
        samples.push(sample(&mut watched, started, &mut exited_reported));
        let Some(at) = next_drain.filter(|at| Instant::now() >= *at) else {
            continue;
        };
        let Some(cluster) = watched.cluster.as_mut() else {
            continue;
        };
        let k = drained % cluster.len();
        drained += 1;
        watched.endpoints.set_draining(k, true);
        // Sampling goes on while the node drains: that is when connections move.
        let drain = cluster.drain(k);
        tokio::pin!(drain);
        let outcome = loop {
            tokio::select! {
                outcome = &mut drain => break outcome,
                _ = ticks.tick() => {}
            }
            let connected = watched.connected.load(Ordering::Relaxed);
            let delivered = watched.latencies.delivered.load(Ordering::Relaxed);
            samples.push(Sample {
                at_s: started.elapsed().as_secs_f64(),
                connected,
                delivered,
                nodes: vec![None; watched.endpoints.len()],
            });
        };
        watched.endpoints.set_draining(k, false);
        match outcome {
            Ok(()) => watched.tally.count("drains"),
            Err(error) => watched
                .tally
                .fail("drain failed", 1, || format!("{error:#}")),
        }
        next_drain = watched
            .drain_every
            .map(|every| at.max(Instant::now()) + every);
    }
    (watched.cluster, samples)
}

fn sample(watched: &mut Watched, started: Instant, exited_reported: &mut [bool]) -> Sample {
    let n = watched.endpoints.len();
    let mut nodes = Vec::with_capacity(n);
    for (k, reported) in exited_reported.iter_mut().enumerate().take(n) {
        let process = match &mut watched.cluster {
            Some(cluster) => {
                if cluster.exited(k) && !*reported {
                    *reported = true;
                    let log = cluster.log(k);
                    watched.tally.fail("server exited", 1, || {
                        format!("node {k} exited unasked (see {})", log.display())
                    });
                }
                cluster.pid(k)
            }
            None => watched
                .external_pid
                .filter(|_| k == 0)
                .map(|pid| (pid, started)),
        };
        nodes.push(process.and_then(|(pid, since)| {
            let stat = proc_stat::sample(pid).ok()?;
            Some(NodeSample {
                pid,
                age_s: since.elapsed().as_secs_f64(),
                rss_bytes: stat.rss_bytes,
                fds: open_fds(pid).ok()?,
                live: watched.endpoints.live(k),
            })
        }));
    }
    Sample {
        at_s: started.elapsed().as_secs_f64(),
        connected: watched.connected.load(Ordering::Relaxed),
        delivered: watched.latencies.delivered.load(Ordering::Relaxed),
        nodes,
    }
}

/// The limits the growth checks hold each server process to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Growth {
    /// A process is measured from its first sample this old (and this far into the run).
    pub(super) warmup: Duration,
    pub(super) rss_percent: f64,
    pub(super) rss_bytes: u64,
    /// Open fds may grow by the change in our clients on that node plus this.
    pub(super) fd_slack: u64,
}

/// Per node process: (node, pid, first and last sample after the warm-up).
pub(super) fn measured(
    samples: &[Sample],
    warmup: Duration,
) -> Vec<(usize, NodeSample, NodeSample)> {
    let warm = warmup.as_secs_f64();
    let mut out: Vec<(usize, NodeSample, NodeSample)> = Vec::new();
    for sample in samples.iter().filter(|s| s.at_s >= warm) {
        for (k, node) in sample.nodes.iter().enumerate() {
            let Some(node) = node.filter(|n| n.age_s >= warm) else {
                continue;
            };
            match out
                .iter_mut()
                .find(|(j, first, _)| *j == k && first.pid == node.pid)
            {
                Some(entry) => entry.2 = node,
                None => out.push((k, node, node)),
            }
        }
    }
    out
}

/// Flags RSS and fd growth past the limits.
pub(super) fn check_growth(samples: &[Sample], growth: &Growth, tally: &Tally) {
    for (k, first, last) in measured(samples, growth.warmup) {
        let allowed_rss =
            first.rss_bytes as f64 * (1.0 + growth.rss_percent / 100.0) + growth.rss_bytes as f64;
        if last.rss_bytes as f64 > allowed_rss {
            tally.fail("server RSS grew", 1, || {
                format!(
                    "node {k} (pid {}): {:.1} MiB after the warm-up, {:.1} MiB at the end (limit {:.1})",
                    first.pid,
                    mib(first.rss_bytes),
                    mib(last.rss_bytes),
                    allowed_rss / (1024.0 * 1024.0)
                )
            });
        }
        let clients_added = (last.live - first.live).max(0) as u64;
        let allowed_fds = first.fds + clients_added + growth.fd_slack;
        if last.fds > allowed_fds {
            tally.fail("server fds grew", 1, || {
                format!(
                    "node {k} (pid {}): {} fds after the warm-up, {} at the end with {} more clients (limit {allowed_fds})",
                    first.pid, first.fds, last.fds, clients_added
                )
            });
        }
    }
}

pub(super) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
