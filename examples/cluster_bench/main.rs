//! Benchmark: cross-node delivery through one Redis.
//!
//! Starts its own `redis-server` (loopback, free port, nothing on disk) and `--nodes` `realtime`
//! processes from `target/release/realtime` (build it first: `cargo build --release`), spreads
//! `--subscribers` WebSocket subscribers over the nodes and `--channels` channels (subscriber `i`
//! on node `i % nodes`, channel `(i / nodes) % channels`, so every channel has subscribers on every
//! node), and publishes from `--publishers` realtime connections on the first `--publish-nodes`
//! nodes (publisher `p` on node `p % publish_nodes`; default node 0 only), at `--rate`
//! publications/s in total for `--duration` seconds (open loop, paced every millisecond), or with
//! `--rate 0` as fast as ACKs allow with `--window` publishes in flight per publisher.
//!
//! Each publication's data is `{"p": publisher, "n": per-(publisher, channel) sequence number,
//! "t": send time in µs}`, one clock since everything is this process. It measures publications/s
//! acknowledged, deliveries/s, publish→deliver latency, lost and duplicated deliveries (every
//! subscriber must get every publication on its channel exactly once, in per-publisher order;
//! anything else and the run exits 1), and the CPU time (utime + stime from `/proc/<pid>/stat`)
//! of Redis, each node and this process over the measured window, with each node's RSS. CPU is
//! also given as µs per acknowledged publication (Redis, each node), and Redis's own account of
//! the window (`CONFIG RESETSTAT` at its start, `INFO commandstats` at its end): calls and µs per
//! call of the top commands, and publications per `EVALSHA` call (the batch size).
//! `--target-p99-ms X` (with a `--rate`) makes a p99 publish → deliver of X or more exit 1.
//!
//! `cargo run --release --example cluster_bench -- --rate 5000 --duration 10 [--json out.json]`
//! `[--publish-nodes 2] [--target-p99-ms 30]`

mod args;
mod measure;
mod report;
mod run;
mod wire;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use test_support::{Realtime, RedisServer};

use crate::args::Args;
use crate::measure::{CommandStat, Cpu};

const KEY: &str = "bench.k:secret";
/// How long publishers may take to get their last ACK, and subscribers their last delivery,
/// after publishing stops; beyond it what is missing counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Publishes in flight per publisher in open-loop mode: only a stalled node reaches it, and
/// then the publisher falls behind its rate (which the achieved rate shows).
const OPEN_LOOP_WINDOW: usize = 4096;
/// Histogram range: 1 µs to 60 s at 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

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
        args.publish_nodes >= 1 && args.publish_nodes <= args.nodes,
        "--publish-nodes is 1..=--nodes"
    );
    assert!(
        args.target_p99_ms.is_none() || args.rate > 0,
        "--target-p99-ms needs a --rate: as fast as ACKs allow, latency is queueing by design"
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
    let report = runtime.block_on(run::run(&args, &redis, &nodes));
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
    if report.p99_missed(&args) {
        eprintln!(
            "FAILED: p99 publish → deliver {} is not under the target {} ms",
            report::millis(report.latency.value_at_quantile(0.99)),
            args.target_p99_ms.unwrap_or_default()
        );
        std::process::exit(1);
    }
}

/// Microseconds since the first call: the one clock publishers and subscribers share.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
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

/// What a run measured; `report.rs` prints it, writes it as JSON and judges it.
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
    /// CPU seconds spent over the window.
    cpu: Cpu,
    /// Redis's `INFO commandstats` over the window, most time first.
    redis_commands: Vec<CommandStat>,
    node_rss_kib: Vec<u64>,
    /// Distinct failures, each with how many connections had it.
    failures: Vec<(String, usize)>,
}
