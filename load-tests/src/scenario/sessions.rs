//! `sessions`: the Digis shape. Many small channels (`session:` and `call:` alternately, 2–10
//! members each) and a few `live:` channels with many viewers; a backend publishes over REST,
//! half of its publications to live channels, half to sessions. Every member and viewer is its
//! own connection on one channel.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::task::JoinSet;

use super::{ably_target, connect_failures, ensure_fds, open, run_id, Readers, Window};
use crate::cli::{SessionsArgs, Shared};
use crate::clock;
use crate::ledger::{Latencies, Schedule};
use crate::payload::Stamp;
use crate::report::{connect_time_metrics, Report};
use crate::rest::Rest;
use crate::target::ably::Credentials;

pub async fn run(shared: &Shared, args: &SessionsArgs) -> anyhow::Result<Report> {
    if args.sessions + args.live == 0 || args.workers == 0 {
        bail!("need at least one channel (--sessions or --live) and one --workers");
    }
    if args.min_members == 0 || args.min_members > args.max_members {
        bail!("need 1 <= --min-members <= --max-members");
    }
    let run = run_id();
    // Channels 0..live are live:, the rest session:/call:.
    let mut channel_names: Vec<String> =
        (0..args.live).map(|i| format!("live:{run}:{i}")).collect();
    let mut members = vec![args.viewers; args.live];
    let mut rng = StdRng::seed_from_u64(args.seed);
    for i in 0..args.sessions {
        let kind = if i % 2 == 0 { "session" } else { "call" };
        channel_names.push(format!("{kind}:{run}:{i}"));
        members.push(rng.gen_range(args.min_members..=args.max_members));
    }
    let n_connections: usize = members.iter().sum();
    ensure_fds(n_connections)?;
    let (live, sessions) = (args.live as u64, args.sessions as u64);
    let schedule: Schedule = Arc::new(move |worker, seq| {
        let slot = seq / 2 + worker as u64;
        let to_live = sessions == 0 || (live > 0 && seq % 2 == 0);
        if to_live {
            (slot % live) as usize
        } else {
            (live + slot % sessions) as usize
        }
    });

    let mut report = Report::new("sessions");
    report.metric("live_channels", args.live);
    report.metric("viewers_per_live_channel", args.viewers);
    report.metric("session_channels", args.sessions);
    report.metric("connections", n_connections);
    report.metric("target_rate", args.rate);
    report.metric("size_bytes", args.size);

    let mut channel_of_client = Vec::with_capacity(n_connections);
    for (channel, n) in members.iter().enumerate() {
        channel_of_client.extend(std::iter::repeat_n(channel, *n));
    }
    let target = ably_target(shared, Credentials::Key(shared.key.clone()))?;
    let opened = open(
        &target,
        0,
        channel_of_client
            .iter()
            .map(|c| Some(channel_names[*c].clone()))
            .collect(),
        shared.connect_concurrency,
        shared.quiet,
        "members",
    )
    .await;
    connect_failures(&mut report, &opened.failures);
    connect_time_metrics(&mut report, opened.connect_us);
    if !opened.failures.is_empty() {
        return Ok(report);
    }
    let latencies = Arc::new(Latencies::default());
    let readers = Readers::spawn(
        opened.connections,
        |client| channel_of_client[client],
        &schedule,
        &latencies,
    );
    let subscribers_per_channel = readers.per_channel(channel_names.len());

    let rest = Rest::new(&shared.url, &shared.key)?;
    let window = Window::start(shared, &latencies);
    let deadline = tokio::time::Instant::now() + shared.duration();
    let interval = Duration::from_secs_f64(args.workers as f64 / args.rate.max(0.001));
    let mut workers = JoinSet::new();
    for worker in 0..args.workers as u32 {
        let rest = rest.clone();
        let schedule = schedule.clone();
        let channel_names = channel_names.clone();
        let size = args.size;
        workers.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            let mut seq = 0u64;
            let mut errors = Vec::new();
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
                let stamp = Stamp {
                    publisher: worker,
                    seq,
                    sent_us: clock::now_us(),
                };
                let channel = &channel_names[schedule(worker, seq)];
                if let Err(error) = rest.publish(channel, stamp.encode(size)).await {
                    errors.push(format!("{error:#}"));
                }
                seq += 1;
            }
            (worker, seq, errors)
        });
    }
    let mut sent = vec![0u64; args.workers];
    let mut publish_errors = 0;
    while let Some(result) = workers.join_next().await {
        match result {
            Ok((worker, n_sent, errors)) => {
                sent[worker as usize] = n_sent;
                publish_errors += errors.len();
                for error in errors.iter().take(3) {
                    report.fail(format!("REST publish: {error}"));
                }
            }
            Err(error) => report.fail(format!("REST worker: {error}")),
        }
    }
    let drained = window
        .drain(&mut report, &sent, &schedule, &subscribers_per_channel)
        .await;

    let ledgers = readers.finish().await;
    let publications: u64 = sent.iter().sum();
    report.metric("publications", publications);
    report.metric("publish_errors", publish_errors);
    report.metric_f64(
        "publications_per_s",
        publications as f64 / drained.publishing.as_secs_f64(),
    );
    drained.delivery_metrics(&mut report, &ledgers);
    Ok(report)
}
