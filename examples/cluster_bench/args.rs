//! The command line.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Cross-node delivery through one Redis: throughput, latency, Redis CPU")]
pub(crate) struct Args {
    /// `realtime` processes, all on one Redis; publishers connect to the first `--publish-nodes`.
    #[arg(long, default_value_t = 2)]
    pub(crate) nodes: usize,
    /// Channels the publications are spread over (round-robin per publisher).
    #[arg(long, default_value_t = 10)]
    pub(crate) channels: usize,
    /// WebSocket subscribers, spread over the nodes and channels.
    #[arg(long, default_value_t = 200)]
    pub(crate) subscribers: usize,
    /// Realtime publisher connections, spread over the first `--publish-nodes` nodes.
    #[arg(long, default_value_t = 4)]
    pub(crate) publishers: usize,
    /// Nodes the publishers connect to (publisher p on node p % K): more than 1 makes several
    /// nodes' publishing compete in Redis.
    #[arg(long, default_value_t = 1)]
    pub(crate) publish_nodes: usize,
    /// Target publications/s in total (open loop); 0 = as fast as ACKs allow.
    #[arg(long, default_value_t = 1000)]
    pub(crate) rate: u64,
    /// Publishes in flight per publisher when `--rate 0`.
    #[arg(long, default_value_t = 32)]
    pub(crate) window: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Wire format of every connection: json or msgpack.
    #[arg(long, default_value = "json")]
    pub(crate) format: String,
    /// The `realtime` binary (default: target/release/realtime of this checkout).
    #[arg(long)]
    pub(crate) binary: Option<PathBuf>,
    /// With `--rate`: exit 1 if p99 publish → deliver is at least this many milliseconds.
    #[arg(long)]
    pub(crate) target_p99_ms: Option<f64>,
    /// Writes the result as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}
