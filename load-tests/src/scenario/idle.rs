//! `idle`: N connections held open for the duration, heartbeats on, optionally each attached to
//! its own `user:` channel. With `--server-pid`, the server's RSS per connection above its
//! baseline and its CPU per connection per second. With `--attach`, one batch publish at the end
//! reaches every user channel, so the run also proves every idle connection still works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{account, connect_failures, ensure_fds, open, run_id, Readers};
use crate::cli::{IdleArgs, Protocol, Shared};
use crate::clock;
use crate::ledger::{Latencies, Schedule};
use crate::payload::Stamp;
use crate::proc_stat;
use crate::report::{connect_time_metrics, Report};
use crate::rest::Rest;
use crate::target::Target;

/// After the last connect, time for the server's allocator to settle before RSS is read.
const SETTLE: Duration = Duration::from_millis(500);

pub async fn run(shared: &Shared, args: &IdleArgs) -> anyhow::Result<Report> {
    if args.attach && shared.protocol != Protocol::Ably {
        bail!("idle --attach publishes through Ably's REST API: --protocol ably only");
    }
    with_target!(shared, target => run_on(shared, args, target).await)
}

async fn run_on<T: Target>(
    shared: &Shared,
    args: &IdleArgs,
    target: Arc<T>,
) -> anyhow::Result<Report> {
    ensure_fds(args.connections)?;
    let run = run_id();
    let channels: Vec<Option<String>> = (0..args.connections)
        .map(|i| args.attach.then(|| format!("user:{run}:{i}")))
        .collect();
    let mut report = Report::new("idle");
    report.metric("connections", args.connections);
    report.metric("attached", args.attach);
    report.metric("protocol", shared.protocol.name());

    let baseline = shared.server_pid.map(proc_stat::sample).transpose()?;
    let started = Instant::now();
    let opened = open(
        &target,
        0,
        channels.clone(),
        shared.connect_concurrency,
        shared.quiet,
        "connecting",
    )
    .await;
    let setup = started.elapsed();
    connect_failures(&mut report, &opened.failures);
    let n_open = opened.connections.len();
    report.metric_f64("connects_per_s", n_open as f64 / setup.as_secs_f64());
    connect_time_metrics(&mut report, opened.connect_us);
    if !opened.failures.is_empty() {
        return Ok(report);
    }

    // Every connection is "channel 0" of the schedule: each is owed the one batch publication.
    let schedule: Schedule = Arc::new(|_, _| 0);
    let latencies = Arc::new(Latencies::default());
    let readers = Readers::spawn(opened.connections, |_| 0, &schedule, &latencies);

    tokio::time::sleep(SETTLE).await;
    let loaded = match (shared.server_pid, baseline) {
        (Some(pid), Some(baseline)) => {
            let loaded = proc_stat::sample(pid)?;
            let per_connection =
                loaded.rss_bytes.saturating_sub(baseline.rss_bytes) as f64 / n_open.max(1) as f64;
            report.metric(
                "server_rss_baseline_mib",
                baseline.rss_bytes / (1024 * 1024),
            );
            report.metric("server_rss_loaded_mib", loaded.rss_bytes / (1024 * 1024));
            report.metric_f64("server_rss_kib_per_connection", per_connection / 1024.0);
            Some((Instant::now(), loaded))
        }
        _ => None,
    };

    let bar = crate::progress::timed(shared.duration(), shared.quiet);
    let deadline = Instant::now() + shared.duration();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let (Some(pid), Some((held_since, loaded))) = (shared.server_pid, loaded) {
        let held = proc_stat::sample(pid)?;
        let cpu_us = held.cpu_us.saturating_sub(loaded.cpu_us) as f64;
        let seconds = held_since.elapsed().as_secs_f64();
        report.metric_f64(
            "server_cpu_us_per_connection_per_s",
            cpu_us / n_open.max(1) as f64 / seconds,
        );
    }

    let mut owed = vec![0];
    if args.attach {
        // One node's REST is enough: a batch publish reaches subscribers on every node.
        let first = super::cluster::split_urls(&shared.url).remove(0);
        let rest = Rest::new(&first, &shared.key)?;
        let names: Vec<String> = channels.into_iter().flatten().collect();
        let stamp = Stamp {
            publisher: 0,
            seq: 0,
            sent_us: clock::now_us(),
        };
        match rest.batch_publish(&names, stamp.encode(64)).await {
            Ok(()) => {
                owed[0] = 1;
                super::wait_for_deliveries(&latencies, n_open as u64, shared.drain_timeout).await;
            }
            Err(error) => report.fail(format!("batch publish: {error:#}")),
        }
    }
    let ledgers = readers.finish().await;
    account(&mut report, &ledgers, &owed);
    super::latency_metrics(&mut report, &latencies);
    Ok(report)
}
