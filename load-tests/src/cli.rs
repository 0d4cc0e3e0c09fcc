//! Flags. Shared ones (`--url`, `--key`, `--duration`, `--format`, `--json`, ...) go before or
//! after the scenario name; each scenario has its own shape flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use protocol::Format;

#[derive(Debug, Parser)]
#[command(
    name = "realtime-load",
    about = "Load generator for Digis Realtime (Ably protocol)"
)]
pub struct Cli {
    #[command(flatten)]
    pub shared: Shared,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Args)]
pub struct Shared {
    /// The server's HTTP base URL; WebSockets go to the same host and port.
    #[arg(
        long,
        global = true,
        env = "REALTIME_LOAD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// API key `appId.keyId:secret` with publish and subscribe rights.
    #[arg(long, global = true, env = "REALTIME_LOAD_KEY", default_value = "")]
    pub key: String,
    /// How long the measured phase runs (`500ms`, `10s`, `2m`); default 10 s (`soak`: 10 min).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Wire format of the realtime connections (Ably protocol).
    #[arg(long, global = true, value_enum, default_value_t = WireFormat::Json)]
    pub format: WireFormat,
    /// The protocol the server speaks (`fanout`, `idle`).
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Ably)]
    pub protocol: Protocol,
    /// Write the summary as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Write latency plots (over time, and a histogram) to this SVG file.
    #[arg(long, global = true)]
    pub plot: Option<PathBuf>,
    /// The server's process id on this machine: report its RSS and CPU from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Connections opened at once while setting up (the storm scenario ignores it).
    #[arg(long, global = true, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// How long to wait for the last deliveries once publishing stops.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,
    /// No progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Local addresses to connect from, in turn: `127.0.0.2,127.0.0.3` or `127.0.0.1-127.0.0.8`.
    /// One address reaches one server port through ~28,000 ephemeral ports; more connections
    /// than that need more addresses.
    #[arg(long, global = true, value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,
}

/// `--source-ips`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(pub Vec<std::net::IpAddr>);

/// A comma-separated list of IPv4/IPv6 addresses and IPv4 ranges `a.b.c.d-a.b.c.e`.
pub fn parse_source_ips(text: &str) -> Result<SourceIps, String> {
    let mut addresses = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.parse::<std::net::IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address"))
        };
        match part.split_once('-') {
            Some((first, last)) => {
                let (std::net::IpAddr::V4(first), std::net::IpAddr::V4(last)) =
                    (parse(first)?, parse(last)?)
                else {
                    return Err(format!("{part:?}: ranges are IPv4 only"));
                };
                let (first, last) = (u32::from(first), u32::from(last));
                if last < first || last - first >= 65_536 {
                    return Err(format!("{part:?}: the range must go up, at most 65,536"));
                }
                addresses.extend((first..=last).map(|ip| std::net::IpAddr::V4(ip.into())));
            }
            None => addresses.push(parse(part)?),
        }
    }
    if addresses.is_empty() {
        return Err("no addresses given".to_owned());
    }
    Ok(SourceIps(addresses))
}

impl Shared {
    /// `--duration`, or 10 s when not given.
    pub fn duration(&self) -> Duration {
        self.duration.unwrap_or(Duration::from_secs(10))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WireFormat {
    Json,
    Msgpack,
}

impl From<WireFormat> for Format {
    fn from(format: WireFormat) -> Format {
        match format {
            WireFormat::Json => Format::Json,
            WireFormat::Msgpack => Format::Msgpack,
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// N connections held open (heartbeats on); memory and CPU per connection.
    Idle(IdleArgs),
    /// C channels × S subscribers, P publishers at R publications/s: throughput, latency, loss.
    Fanout(FanoutArgs),
    /// N clients connecting at once with token auth: connects/s and connect time.
    Storm(StormArgs),
    /// The Digis shape: many small session:/call: channels, a few large live: ones, REST
    /// publishes from a backend.
    Sessions(SessionsArgs),
    /// A compressed Digis day: N clients on short-lived tokens for a long run, drops, resumes,
    /// presence, REST and event publishing, drains; fails on anything a client was promised and
    /// did not get, and on server RSS or fd growth.
    Soak(Box<crate::scenario::soak::SoakArgs>),
    /// A connection flood opened and closed `--rounds` times: the server's RSS before, at the
    /// peak, after the close and after `--settle`; fails if memory does not come back.
    Churn(Box<crate::scenario::churn::ChurnArgs>),
    /// A live room where each of N viewers sends R reactions/s and receives everyone's:
    /// deliveries, frames and bytes received, latency, loss (server-side batching or not).
    Reactions(Box<crate::scenario::reactions::ReactionsArgs>),
    /// Publishes R messages/s on a mutable-messages channel, then updates each once at R/s:
    /// server (and Redis) CPU per publish and per update.
    Edits(Box<crate::scenario::edits::EditsArgs>),
    /// A bare-bones broadcast server (plain WebSocket, no protocol): the ceiling to compare with.
    /// Load it with `fanout --protocol raw`.
    Ceiling(CeilingArgs),
    /// Our server, the ceiling and each peer found (Socket.IO, Soketi, Sockudo) started in turn
    /// on core 0, the same fanout and idle workloads against each: one table and one plot.
    Compare(Box<crate::compare::CompareArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct CeilingArgs {
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The Ably realtime protocol (our server, Sockudo's Ably facade).
    Ably,
    /// The ceiling server's plain text frames (`realtime-load ceiling`).
    Raw,
    /// Socket.IO 4 over WebSocket, against `load-tests/peers/socketio-server.mjs`.
    Socketio,
    /// Pusher protocol 7 (Soketi, Sockudo); publishes through the HTTP API.
    /// `--key appId:key:secret`.
    Pusher,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ably => "ably",
            Protocol::Raw => "raw",
            Protocol::Socketio => "socketio",
            Protocol::Pusher => "pusher",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Attach each connection to its own `user:` channel (and check each gets one message at the
    /// end, sent by one batch publish).
    #[arg(long)]
    pub attach: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Subscribers per channel.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Publications per second in all; 0 = open loop (each publisher keeps `--window` in flight).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Open loop: unacknowledged publishes each publisher may have outstanding.
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    /// Open loop: deliveries per subscriber published but not yet received, at most. Keeps the
    /// publishers from outrunning the subscribers (and so the server's bounded queues), so the
    /// open loop finds the rate everything is delivered at.
    #[arg(long, default_value_t = 64)]
    pub backlog: u64,
    /// Ably: publish ephemeral messages (`extras.ephemeral`: delivered live, never stored).
    #[arg(long)]
    pub ephemeral: bool,
    /// Servers not spawned here: their process ids in `--url` order (`1,2,3`), for each one's
    /// CPU per publication.
    #[arg(long, value_delimiter = ',')]
    pub node_pids: Vec<u32>,
    /// The Redis the servers share, when not spawned here: its CPU per publication.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Several servers: subscriber i on node i mod n, publishers round-robin after them.
    #[command(flatten)]
    pub cluster: crate::scenario::cluster::ClusterArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    #[arg(long, value_enum, default_value_t = StormAuth::Token)]
    pub auth: StormAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StormAuth {
    /// A token per client from `POST /keys/{keyName}/requestToken`, fetched before the storm.
    Token,
    /// The API key on every connection.
    Key,
}

#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    /// Small `session:`/`call:` channels.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    #[arg(long, default_value_t = 2)]
    pub min_members: usize,
    #[arg(long, default_value_t = 10)]
    pub max_members: usize,
    /// Large `live:` channels.
    #[arg(long, default_value_t = 2)]
    pub live: usize,
    /// Viewers per live channel.
    #[arg(long, default_value_t = 1000)]
    pub viewers: usize,
    /// REST publications per second in all (half to live channels, half to sessions).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Concurrent REST publishers (the backend's workers).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seed for the member counts, so a shape can be repeated.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `250ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{text:?}: unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
