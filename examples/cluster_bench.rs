//! Benchmark: cross-node delivery through one Redis.
//!
//! Starts its own `redis-server` (loopback, free port, nothing on disk) and `--nodes` `realtime`
//! processes from `target/release/realtime` (build it first: `cargo build --release`), spreads
//! `--subscribers` WebSocket subscribers over the nodes and `--channels` channels (subscriber `i`
//! on node `i % nodes`, channel `(i / nodes) % channels`, so every channel has subscribers on every
//! node), and publishes from `--publishers` realtime connections on node 0 only, at `--rate`
//! publications/s in total for `--duration` seconds (open loop, paced every millisecond), or with
//! `--rate 0` as fast as ACKs allow with `--window` publishes in flight per publisher.
//!
//! Each publication's data is `{"p": publisher, "n": per-(publisher, channel) sequence number,
//! "t": send time in µs}`, one clock since everything is this process. It measures publications/s
//! acknowledged, deliveries/s, publish→deliver latency, lost and duplicated deliveries (every
//! subscriber must get every publication on its channel exactly once, in per-publisher order;
//! anything else and the run exits 1), and the CPU time (utime + stime from `/proc/<pid>/stat`)
//! of Redis, each node and this process over the measured window, with each node's RSS.
//!
//! `cargo run --release --example cluster_bench -- --rate 5000 --duration 10 [--json out.json]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use test_support::{Realtime, RedisServer};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const KEY: &str = "bench.k:secret";
/// How long publishers may take to get their last ACK, and subscribers their last delivery,
/// after publishing stops; beyond it what is missing counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Publishes in flight per publisher in open-loop mode: only a stalled node reaches it, and
/// then the publisher falls behind its rate (which the achieved rate shows).
const OPEN_LOOP_WINDOW: usize = 4096;
/// Histogram range: 1 µs to 60 s at 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Parser, Debug, Clone)]
#[command(about = "Cross-node delivery through one Redis: throughput, latency, Redis CPU")]
struct Args {
    /// `realtime` processes, all on one Redis; publishers connect to the first.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Channels the publications are spread over (round-robin per publisher).
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// WebSocket subscribers, spread over the nodes and channels.
    #[arg(long, default_value_t = 200)]
    subscribers: usize,
    /// Realtime publisher connections on node 0.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Target publications/s in total (open loop); 0 = as fast as ACKs allow.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Publishes in flight per publisher when `--rate 0`.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Wire format of every connection: json or msgpack.
    #[arg(long, default_value = "json")]
    format: String,
    /// The `realtime` binary (default: target/release/realtime of this checkout).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Writes the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    assert!(
        args.nodes >= 1 && args.channels >= 1 && args.publishers >= 1,
        "--nodes, --channels and --publishers must be at least 1"
    );
    assert!(
        args.subscribers >= args.nodes * args.channels,
        "--subscribers must be at least nodes × channels, so each channel has a subscriber on every node"
    );
    assert!(
        args.duration >= 1 && args.duration <= 600,
        "--duration is 1..=600 s"
    );
    assert!(
        args.format == "json" || args.format == "msgpack",
        "--format is json or msgpack"
    );
    let binary = args.binary.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/realtime")
    });
    if !binary.exists() {
        eprintln!(
            "{} not found: run `cargo build --release` first",
            binary.display()
        );
        std::process::exit(2);
    }
    let redis = RedisServer::start();
    let nodes: Vec<Realtime> = (0..args.nodes)
        .map(|_| start_node(&binary, &redis.url()))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let report = runtime.block_on(run(&args, &redis, &nodes));
    drop(nodes);
    drop(redis);
    report.print(&args);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json(&args)).expect("JSON");
        std::fs::write(path, text + "\n").expect("write --json file");
    }
    if !report.clean() {
        eprintln!("FAILED: deliveries were lost, duplicated or out of order, or publishes failed");
        std::process::exit(1);
    }
}

/// Microseconds since the first call: the one clock publishers and subscribers share.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

async fn run(args: &Args, redis: &RedisServer, nodes: &[Realtime]) -> Report {
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
    for _ in 0..args.publishers {
        publishers.push(connect(nodes[0].addr, format).await);
    }

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
        cpu: cpu_after.since(&cpu_before, window),
        node_rss_kib: nodes.iter().map(|n| rss_kib(n.pid())).collect(),
        failures,
    }
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Msgpack,
}

impl Format {
    fn param(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        }
    }

    fn encode<T: Serialize>(self, value: &T) -> WsMessage {
        match self {
            Format::Json => WsMessage::Text(serde_json::to_string(value).expect("encode").into()),
            Format::Msgpack => {
                WsMessage::Binary(rmp_serde::to_vec_named(value).expect("encode").into())
            }
        }
    }

    /// The protocol message in a data frame; `None` for control frames.
    fn decode(self, frame: &WsMessage) -> Option<Result<Incoming, String>> {
        match (self, frame) {
            (Format::Json, WsMessage::Text(text)) => {
                Some(serde_json::from_str(text).map_err(|e| e.to_string()))
            }
            (Format::Msgpack, WsMessage::Binary(bytes)) => {
                Some(rmp_serde::from_slice(bytes).map_err(|e| e.to_string()))
            }
            (_, WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => None,
            (_, other) => Some(Err(format!("unexpected frame {other:?}"))),
        }
    }
}

/// Protocol actions used here.
mod action {
    pub(super) const HEARTBEAT: u8 = 0;
    pub(super) const ACK: u8 = 1;
    pub(super) const NACK: u8 = 2;
    pub(super) const CONNECTED: u8 = 4;
    pub(super) const ATTACH: u8 = 10;
    pub(super) const ATTACHED: u8 = 11;
    pub(super) const MESSAGE: u8 = 15;
}

/// What a publication carries.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Payload {
    /// Publisher index.
    p: usize,
    /// Sequence number of this publisher on this channel, from 0.
    n: u64,
    /// Send time, `now_us()`.
    t: u64,
}

#[derive(Serialize)]
struct Attach<'a> {
    action: u8,
    channel: &'a str,
}

#[derive(Serialize)]
struct Publish<'a> {
    action: u8,
    channel: &'a str,
    #[serde(rename = "msgSerial")]
    msg_serial: u64,
    messages: [OutgoingMessage; 1],
}

#[derive(Serialize)]
struct OutgoingMessage {
    name: &'static str,
    data: Payload,
}

/// The fields of a server frame this benchmark reads; the rest is skipped.
#[derive(Deserialize)]
struct Incoming {
    action: u8,
    #[serde(rename = "msgSerial")]
    msg_serial: Option<u64>,
    count: Option<u64>,
    messages: Option<Vec<IncomingMessage>>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IncomingMessage {
    data: Payload,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A connection, CONNECTED (TCP_NODELAY, as the server sets it on its side).
async fn connect(addr: SocketAddr, format: Format) -> Socket {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let url = format!("ws://{addr}/?key={KEY}&format={}&v=3", format.param());
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket upgrade");
    let connected = next_message(&mut socket, format).await;
    assert_eq!(connected.action, action::CONNECTED, "not CONNECTED");
    socket
}

/// Next protocol message, skipping heartbeats and control frames; panics after 10 s.
async fn next_message(socket: &mut Socket, format: Format) -> Incoming {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame");
        match format.decode(&frame) {
            Some(Ok(message)) if message.action == action::HEARTBEAT => continue,
            Some(Ok(message)) => return message,
            Some(Err(error)) => panic!("bad frame: {error}"),
            None => continue,
        }
    }
}

async fn subscribe(addr: SocketAddr, format: Format, channel: &str) -> Socket {
    let mut socket = connect(addr, format).await;
    socket
        .send(format.encode(&Attach {
            action: action::ATTACH,
            channel,
        }))
        .await
        .expect("send ATTACH");
    let attached = next_message(&mut socket, format).await;
    assert_eq!(
        attached.action,
        action::ATTACHED,
        "not ATTACHED: {:?}",
        attached.error
    );
    socket
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

async fn receive(
    mut socket: Socket,
    format: Format,
    publishers: usize,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut received = Received {
        delivered: 0,
        next: vec![0; publishers],
        gaps: 0,
        duplicated: 0,
        latency: new_histogram(),
        failure: None,
    };
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let message = match frame {
            Some(Ok(frame)) => match format.decode(&frame) {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    received.failure = Some(format!("subscriber: {error}"));
                    break;
                }
                None => continue,
            },
            Some(Err(error)) => {
                received.failure = Some(format!("subscriber socket: {error}"));
                break;
            }
            None => {
                received.failure = Some("subscriber socket closed".into());
                break;
            }
        };
        match message.action {
            action::MESSAGE => {
                let now = now_us();
                let messages = message.messages.unwrap_or_default();
                for IncomingMessage { data } in &messages {
                    received
                        .latency
                        .saturating_record(now.saturating_sub(data.t).max(1));
                    let Some(next) = received.next.get_mut(data.p) else {
                        received.failure = Some(format!("unknown publisher {}", data.p));
                        continue;
                    };
                    if data.n < *next {
                        received.duplicated += 1;
                    } else {
                        received.gaps += data.n - *next;
                        *next = data.n + 1;
                    }
                }
                received.delivered += messages.len() as u64;
                progress
                    .delivered
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
            }
            action::HEARTBEAT => {}
            other => {
                received.failure = Some(format!(
                    "subscriber got action {other}: {}",
                    describe(&message.error)
                ));
                break;
            }
        }
    }
    if received.failure.is_some() && !*stop.borrow() {
        progress.broken_subscribers.fetch_add(1, Ordering::Relaxed);
    }
    received
}

/// Shared by the subscribers, watched while the last deliveries drain.
#[derive(Default)]
struct Progress {
    delivered: AtomicU64,
    broken_subscribers: AtomicU64,
}

fn describe(error: &Option<serde_json::Value>) -> String {
    error
        .as_ref()
        .map_or_else(|| "no error".to_owned(), |e| e.to_string())
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

/// Publishes until `until`, then waits for the last ACK. Channels round-robin; every publish is
/// its own MESSAGE with the next msgSerial.
async fn publish(
    publisher: Publisher,
    socket: Socket,
    acked: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
) -> Published {
    let (mut sink, stream) = socket.split();
    let window = Arc::new(Semaphore::new(publisher.window));
    // Send times by msgSerial, for the ACK latency; at most `window` long.
    let in_flight = Arc::new(Mutex::new(std::collections::VecDeque::<u64>::new()));
    let finished = Arc::new(AtomicBool::new(false));
    let acks = tokio::spawn(read_acks(
        stream,
        publisher.format,
        window.clone(),
        in_flight.clone(),
        acked,
        finished.clone(),
    ));
    let channels = publisher.channel_names.len();
    let mut sent = vec![0u64; channels];
    let mut msg_serial = 0u64;
    // Publishers start a fraction of a millisecond apart, so open-loop sends do not coincide.
    let phase = publisher.index as f64 / publisher.publishers as f64;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failure = None;
    while Instant::now() < publisher.until && failure.is_none() {
        let due = if publisher.rate > 0.0 {
            ticks.tick().await;
            let elapsed = publisher.started.elapsed().as_secs_f64();
            ((elapsed * publisher.rate + phase) as u64).saturating_sub(msg_serial)
        } else {
            // Closed loop: one permit awaited, then whatever else the window has free.
            match window.clone().acquire_owned().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            1 + take_permits(&window, 63) as u64
        };
        for _ in 0..due {
            if publisher.rate > 0.0 {
                // Open loop: a full window means the node stalled; wait, and fall behind.
                match window.clone().acquire_owned().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
            }
            let channel = (msg_serial as usize + publisher.index) % channels;
            let t = now_us();
            in_flight.lock().unwrap().push_back(t);
            let frame = publisher.format.encode(&Publish {
                action: action::MESSAGE,
                channel: &publisher.channel_names[channel],
                msg_serial,
                messages: [OutgoingMessage {
                    name: "bench",
                    data: Payload {
                        p: publisher.index,
                        n: sent[channel],
                        t,
                    },
                }],
            });
            if let Err(error) = sink.feed(frame).await {
                failure = Some(format!("publisher {}: send: {error}", publisher.index));
                break;
            }
            sent[channel] += 1;
            msg_serial += 1;
        }
        if let Err(error) = sink.flush().await {
            failure = Some(format!("publisher {}: flush: {error}", publisher.index));
        }
    }
    // Every publish acknowledged: the whole window is free again.
    let all_acked =
        tokio::time::timeout(DRAIN_TIMEOUT, window.acquire_many(publisher.window as u32)).await;
    if !matches!(all_acked, Ok(Ok(_))) && failure.is_none() {
        failure = Some(format!(
            "publisher {}: not every publish acknowledged",
            publisher.index
        ));
    }
    finished.store(true, Ordering::Release);
    let _ = sink.close().await;
    let (ack_latency, ack_failure) = acks.await.expect("ACK reader");
    for failure in failure.into_iter().chain(ack_failure) {
        failures.lock().unwrap().push(failure);
    }
    Published { sent, ack_latency }
}

fn take_permits(window: &Semaphore, most: usize) -> usize {
    let mut taken = 0;
    while taken < most {
        match window.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        taken += 1;
    }
    taken
}

/// Reads ACKs (msgSerial order, `count` each), frees window permits, records publish → ACK.
async fn read_acks(
    mut stream: SplitStream<Socket>,
    format: Format,
    window: Arc<Semaphore>,
    in_flight: Arc<Mutex<std::collections::VecDeque<u64>>>,
    acked: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
) -> (Histogram<u64>, Option<String>) {
    let mut latency = new_histogram();
    while let Some(frame) = stream.next().await {
        let message = match frame.map_err(|e| e.to_string()).map(|f| format.decode(&f)) {
            Ok(Some(Ok(message))) => message,
            Ok(None) => continue,
            Ok(Some(Err(error))) | Err(error) => {
                if finished.load(Ordering::Acquire) {
                    break;
                }
                window.close();
                return (latency, Some(format!("publisher: {error}")));
            }
        };
        match message.action {
            action::ACK => {
                let count = message.count.unwrap_or(1);
                let now = now_us();
                {
                    let mut in_flight = in_flight.lock().unwrap();
                    for _ in 0..count {
                        if let Some(sent_at) = in_flight.pop_front() {
                            latency.saturating_record(now.saturating_sub(sent_at).max(1));
                        }
                    }
                }
                acked.fetch_add(count, Ordering::Relaxed);
                window.add_permits(count as usize);
            }
            action::HEARTBEAT => {}
            other => {
                window.close();
                let what = if other == action::NACK {
                    "NACK"
                } else {
                    "unexpected action"
                };
                return (
                    latency,
                    Some(format!(
                        "publisher: {what} {other} (msgSerial {:?}): {}",
                        message.msg_serial,
                        describe(&message.error)
                    )),
                );
            }
        }
    }
    (latency, None)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("histogram bounds")
}

/// A `realtime serve` node on `redis_url`, killed on drop.
fn start_node(binary: &std::path::Path, redis_url: &str) -> Realtime {
    let args = ["--keys", KEY, "--redis", redis_url];
    // `--rate 0` saturates each publisher connection on purpose.
    let unlimited = ["--publish-connection-messages-per-sec", "0"];
    Realtime::start(binary, "serve", &[&args[..], &unlimited].concat(), &[])
}

/// CPU seconds (user + system) so far of Redis, each node and this process, and of the whole
/// machine (every process, every core: what else ran shows as the difference).
struct Cpu {
    redis: f64,
    nodes: Vec<f64>,
    bench: f64,
    machine: f64,
}

/// Share of one core over the window, in percent.
struct CpuShare {
    redis: f64,
    nodes: Vec<f64>,
    bench: f64,
    machine: f64,
}

impl Cpu {
    fn sample(redis: &RedisServer, nodes: &[Realtime]) -> Cpu {
        Cpu {
            redis: cpu_seconds(&redis.pid().to_string()),
            nodes: nodes
                .iter()
                .map(|n| cpu_seconds(&n.pid().to_string()))
                .collect(),
            bench: cpu_seconds("self"),
            machine: machine_cpu_seconds(),
        }
    }

    fn since(&self, before: &Cpu, window: Duration) -> CpuShare {
        let share = |after: f64, before: f64| (after - before) / window.as_secs_f64() * 100.0;
        CpuShare {
            redis: share(self.redis, before.redis),
            nodes: self
                .nodes
                .iter()
                .zip(&before.nodes)
                .map(|(a, b)| share(*a, *b))
                .collect(),
            bench: share(self.bench, before.bench),
            machine: share(self.machine, before.machine),
        }
    }
}

/// utime + stime of a process (all its threads), fields 14 and 15 of `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after its ')' start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks_per_second()
}

/// Busy time of all cores: the first line of `/proc/stat` less idle and iowait.
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (ticks.iter().sum::<u64>() - idle) as f64 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set size (`VmRSS`), KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Report {
    publications: u64,
    acked: u64,
    publish_seconds: f64,
    /// Publishing plus the drain of the last deliveries: the window rates and CPU cover.
    window_seconds: f64,
    expected: u64,
    deliveries: u64,
    lost: u64,
    duplicated: u64,
    latency: Histogram<u64>,
    ack_latency: Histogram<u64>,
    cpu: CpuShare,
    node_rss_kib: Vec<u64>,
    /// Distinct failures, each with how many connections had it.
    failures: Vec<(String, usize)>,
}

const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

impl Report {
    fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.deliveries == self.expected
            && self.acked == self.publications
            && self.failures.is_empty()
    }

    fn print(&self, args: &Args) {
        let rate = if args.rate == 0 {
            format!(
                "as fast as ACKs allow (window {} per publisher)",
                args.window
            )
        } else {
            format!("target {}/s", args.rate)
        };
        println!(
            "\ncluster_bench: {} nodes, {} channels, {} subscribers ({}), {} publishers on node 0, {rate}, {} s",
            args.nodes, args.channels, args.subscribers, args.format, args.publishers, args.duration
        );
        let row = |what: &str, value: String| println!("  {what:<34} {value}");
        row(
            "publications acknowledged",
            format!(
                "{} of {} = {:.0}/s",
                self.acked,
                self.publications,
                self.acked as f64 / self.publish_seconds
            ),
        );
        row(
            "deliveries",
            format!(
                "{} of {} = {:.0}/s over {:.2} s",
                self.deliveries,
                self.expected,
                self.deliveries as f64 / self.window_seconds,
                self.window_seconds
            ),
        );
        row(
            "lost / duplicated or reordered",
            format!("{} / {}", self.lost, self.duplicated),
        );
        let percentiles = |h: &Histogram<u64>| {
            PERCENTILES
                .iter()
                .map(|(name, q)| format!("{name} {}", millis(h.value_at_quantile(q / 100.0))))
                .collect::<Vec<_>>()
                .join("  ")
                + &format!("  max {}", millis(h.max()))
        };
        row("publish → deliver latency", percentiles(&self.latency));
        row("publish → ACK latency", percentiles(&self.ack_latency));
        row(
            "CPU (% of one core)",
            format!(
                "redis {:.0}%  nodes {}  bench {:.0}%  (machine {:.0}% of {} cores)",
                self.cpu.redis,
                self.cpu
                    .nodes
                    .iter()
                    .map(|c| format!("{c:.0}%"))
                    .collect::<Vec<_>>()
                    .join(" + "),
                self.cpu.bench,
                self.cpu.machine,
                cores()
            ),
        );
        row(
            "node RSS",
            self.node_rss_kib
                .iter()
                .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for (failure, count) in self.failures.iter().take(10) {
            println!("  failure ×{count}: {failure}");
        }
    }

    fn to_json(&self, args: &Args) -> serde_json::Value {
        let percentiles = |h: &Histogram<u64>| {
            let mut map = serde_json::Map::new();
            for (name, q) in PERCENTILES {
                map.insert(
                    format!("{name}_ms"),
                    (h.value_at_quantile(q / 100.0) as f64 / 1000.0).into(),
                );
            }
            map.insert("max_ms".into(), (h.max() as f64 / 1000.0).into());
            serde_json::Value::Object(map)
        };
        serde_json::json!({
            "setup": {
                "nodes": args.nodes,
                "channels": args.channels,
                "subscribers": args.subscribers,
                "publishers": args.publishers,
                "format": args.format,
                "target_rate": args.rate,
                "window": args.window,
                "duration_s": args.duration,
            },
            "publications": self.publications,
            "acked": self.acked,
            "publications_per_s": self.acked as f64 / self.publish_seconds,
            "expected_deliveries": self.expected,
            "deliveries": self.deliveries,
            "deliveries_per_s": self.deliveries as f64 / self.window_seconds,
            "window_s": self.window_seconds,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "latency": percentiles(&self.latency),
            "ack_latency": percentiles(&self.ack_latency),
            "cpu_percent_of_one_core": {
                "redis": self.cpu.redis,
                "nodes": self.cpu.nodes,
                "bench": self.cpu.bench,
                "machine": self.cpu.machine,
                "cores": cores(),
            },
            "node_rss_kib": self.node_rss_kib,
            "failures": self
                .failures
                .iter()
                .map(|(failure, count)| serde_json::json!({"failure": failure, "count": count}))
                .collect::<Vec<_>>(),
            "clean": self.clean(),
        })
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn millis(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}
