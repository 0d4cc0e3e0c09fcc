//! One run: subscribers attach, publishers publish for the window, the deliveries drain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use test_support::{Realtime, RedisServer};
use tokio::sync::watch;

use crate::args::Args;
use crate::measure::{command_stats, reset_command_stats, rss_kib, Cpu};
use crate::wire::{connect, subscribe, Format};
use crate::Report;

mod publisher;
mod subscriber;

use crate::{new_histogram, now_us, DRAIN_TIMEOUT, OPEN_LOOP_WINDOW};
use publisher::publish;
use subscriber::receive;

pub(crate) async fn run(args: &Args, redis: &RedisServer, nodes: &[Realtime]) -> Report {
    now_us();
    let format = if args.format == "msgpack" {
        Format::Msgpack
    } else {
        Format::Json
    };
    let channel_names: Vec<String> = (0..args.channels).map(|c| format!("bench:{c}")).collect();
    let progress = Arc::new(Progress::default());
    let (stop, stopped) = watch::channel(false);

    // Subscribers, attached: ATTACHED comes after the node has subscribed to the channel's topic
    // in Redis, so once all are attached every node hears every channel.
    let started = Instant::now();
    let subscribers = futures_util::stream::iter(0..args.subscribers)
        .map(|i| {
            let node = nodes[i % nodes.len()].addr;
            let channel = (i / nodes.len()) % args.channels;
            let channel_name = channel_names[channel].clone();
            async move { (channel, subscribe(node, format, &channel_name).await) }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    println!(
        "{} subscribers attached in {:.2} s",
        subscribers.len(),
        started.elapsed().as_secs_f64()
    );
    let mut subscriber_channels = Vec::new();
    let mut subscriber_tasks = Vec::new();
    for (channel, socket) in subscribers {
        subscriber_channels.push(channel);
        subscriber_tasks.push(tokio::spawn(receive(
            socket,
            format,
            args.publishers,
            progress.clone(),
            stopped.clone(),
        )));
    }
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        publishers.push(connect(nodes[p % args.publish_nodes].addr, format).await);
    }

    reset_command_stats(redis);
    let cpu_before = Cpu::sample(redis, nodes);
    let window_started = Instant::now();
    let publish_until = window_started + Duration::from_secs(args.duration);
    let acked = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let publisher_tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, socket)| {
            tokio::spawn(publish(
                Publisher {
                    index: p,
                    publishers: args.publishers,
                    rate: args.rate as f64 / args.publishers as f64,
                    window: if args.rate == 0 {
                        args.window
                    } else {
                        OPEN_LOOP_WINDOW
                    },
                    channel_names: channel_names.clone(),
                    format,
                    started: window_started,
                    until: publish_until,
                },
                socket,
                acked.clone(),
                failures.clone(),
            ))
        })
        .collect();
    let mut sent = vec![vec![0u64; args.channels]; args.publishers];
    let mut ack_latency = new_histogram();
    for (p, task) in publisher_tasks.into_iter().enumerate() {
        let outcome = task.await.expect("publisher task");
        sent[p] = outcome.sent;
        ack_latency.add(&outcome.ack_latency).expect("histogram");
    }
    let publishing_ended = Instant::now();
    let publications: u64 = sent.iter().flatten().sum();

    // Wait until every subscriber has everything published on its channel (or time runs out).
    let per_channel: Vec<u64> = (0..args.channels)
        .map(|c| sent.iter().map(|s| s[c]).sum())
        .collect();
    let expected: u64 = subscriber_channels.iter().map(|&c| per_channel[c]).sum();
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    // A subscriber that broke off will never have everything: no point waiting for it.
    while progress.delivered.load(Ordering::Relaxed) < expected
        && progress.broken_subscribers.load(Ordering::Relaxed) == 0
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let window = window_started.elapsed();
    let cpu_after = Cpu::sample(redis, nodes);
    let redis_commands = command_stats(redis);
    let _ = stop.send(true);

    let mut latency = new_histogram();
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    let mut deliveries = 0u64;
    for (task, &channel) in subscriber_tasks.into_iter().zip(&subscriber_channels) {
        let outcome = task.await.expect("subscriber task");
        latency.add(&outcome.latency).expect("histogram");
        deliveries += outcome.delivered;
        duplicated += outcome.duplicated;
        lost += outcome.gaps;
        for (p, next) in outcome.next.iter().enumerate() {
            lost += sent[p][channel].saturating_sub(*next);
        }
        if let Some(failure) = outcome.failure {
            failures.lock().unwrap().push(failure);
        }
    }
    let failures = tally(std::mem::take(&mut *failures.lock().unwrap()));
    Report {
        publications,
        acked: acked.load(Ordering::Relaxed),
        publish_seconds: (publishing_ended - window_started).as_secs_f64(),
        window_seconds: window.as_secs_f64(),
        expected,
        deliveries,
        lost,
        duplicated,
        latency,
        ack_latency,
        cpu: cpu_after.since(&cpu_before),
        redis_commands,
        node_rss_kib: nodes.iter().map(|n| rss_kib(n.pid())).collect(),
        failures,
    }
}

/// Shared by the subscribers, watched while the last deliveries drain.
#[derive(Default)]
struct Progress {
    delivered: AtomicU64,
    broken_subscribers: AtomicU64,
}

/// The same failure from many connections, once with its count.
fn tally(failures: Vec<String>) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for failure in failures {
        *counts.entry(failure).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

struct Publisher {
    index: usize,
    publishers: usize,
    /// Publications/s for this publisher; 0 = as fast as the window allows.
    rate: f64,
    window: usize,
    channel_names: Vec<String>,
    format: Format,
    started: Instant,
    until: Instant,
}

struct Published {
    /// Per channel: publications sent (and acknowledged, or the run has failed).
    sent: Vec<u64>,
    /// Publish → ACK.
    ack_latency: Histogram<u64>,
}

/// What one subscriber saw.
struct Received {
    delivered: u64,
    /// Per publisher: the next sequence number expected.
    next: Vec<u64>,
    /// Sequence numbers skipped (later ones arrived first).
    gaps: u64,
    /// Sequence numbers that came again, or after a later one.
    duplicated: u64,
    latency: Histogram<u64>,
    failure: Option<String>,
}
