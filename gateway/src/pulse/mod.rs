//! Live numbers for the operator dashboard: a few atomics bumped where things happen (once per
//! publication, batch or connection, never per subscriber) and a once-a-second sampler that keeps
//! the last `KEPT_SAMPLES` readings, from which rates, latency percentiles and the dashboard's
//! sparklines are read. Nothing here parses Prometheus text, and nothing takes a lock on the
//! publish path: the sampler's mutex is taken once a second and by readers.
//!
//! Unlike the Prometheus recorder (one per process) a `Pulse` belongs to one gateway, so a node's
//! snapshot is its own even when tests run several gateways in one process.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Upper bounds (ms, inclusive) of the publish→delivery latency buckets; one more bucket holds
/// everything slower. Timestamps are whole milliseconds, so finer buckets would mean nothing.
pub const LATENCY_BOUNDS_MS: [u64; 21] = [
    0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000,
];
const N_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// One reading a second, two minutes' worth: the sparklines show the last minute, the latency
/// percentiles cover `LATENCY_WINDOW` samples.
const KEPT_SAMPLES: usize = 121;
/// Samples the latency percentiles and the series span (one minute).
pub const WINDOW_SAMPLES: usize = 60;

/// The counters and the recent readings of one gateway.
pub struct Pulse {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    slow_consumer_disconnects: AtomicU64,
    auth_failures: AtomicU64,
    attachments: AtomicI64,
    latency: [AtomicU64; N_BUCKETS],
    samples: Mutex<VecDeque<Sample>>,
}

/// The counters at one instant.
#[derive(Clone)]
struct Sample {
    at_ms: u64,
    messages_in: u64,
    messages_out: u64,
    latency: [u64; N_BUCKETS],
}

/// What the dashboard shows of one node, and what a clustered node stores for the others
/// (fields a node of another version lacks read as their defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NodePulse {
    pub node: String,
    /// `ready`, `draining` or `not ready` (bus unreachable); a reader adds `lease lapsed`.
    pub state: String,
    /// When this reading was taken (ms since the epoch).
    pub at: u64,
    pub connections: u64,
    /// Channels this node holds (with subscribers, members or recent history).
    pub channels: u64,
    /// Channel attachments of this node's connections.
    pub attachments: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub slow_consumer_disconnects: u64,
    pub auth_failures: u64,
    pub in_per_second: f64,
    pub out_per_second: f64,
    pub latency: Latency,
    /// Per-second readings over the last minute, oldest first.
    pub series: Series,
}

/// Publish→delivery latency over the last minute (ms; a percentile is its bucket's bound).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    /// Counts per bucket of `LATENCY_BOUNDS_MS` (plus the slower-than-all bucket), so a cluster
    /// total can be merged from its nodes.
    pub buckets: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Series {
    pub in_per_second: Vec<f64>,
    pub out_per_second: Vec<f64>,
    /// `None` for a second without deliveries.
    pub p99_ms: Vec<Option<u64>>,
}

impl Default for Pulse {
    fn default() -> Self {
        Pulse {
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            slow_consumer_disconnects: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            attachments: AtomicI64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            samples: Mutex::new(VecDeque::with_capacity(KEPT_SAMPLES)),
        }
    }
}

impl Pulse {
    /// Messages accepted from publishers (REST or realtime).
    pub fn messages_in(&self, n: u64) {
        self.messages_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages queued for subscribers (deliveries, each message to each subscriber).
    pub fn messages_out(&self, n: u64) {
        self.messages_out.fetch_add(n, Ordering::Relaxed);
    }

    pub fn slow_consumer_disconnect(&self) {
        self.slow_consumer_disconnects
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn attachments_changed(&self, by: i64) {
        self.attachments.fetch_add(by, Ordering::Relaxed);
    }

    /// One publication's publish→delivery latency.
    pub fn latency_ms(&self, ms: u64) {
        let bucket = LATENCY_BOUNDS_MS.partition_point(|bound| *bound < ms);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes this second's reading; call once a second.
    pub fn sample(&self, now_ms: u64) {
        let sample = self.read(now_ms);
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEPT_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    fn read(&self, now_ms: u64) -> Sample {
        Sample {
            at_ms: now_ms,
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }

    /// The node's numbers now, with rates and percentiles from the recent readings. The
    /// caller fills in what the pulse does not know (node, state, connections, channels).
    pub fn snapshot(&self, now_ms: u64) -> NodePulse {
        let current = self.read(now_ms);
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        // Rates over the last whole second of readings (the current counters against the last
        // sample could cover a sliver of a second and jump about).
        let (in_per_second, out_per_second) = match samples.len() {
            n if n >= 2 => rates(&samples[n - 2], &samples[n - 1]),
            _ => (0.0, 0.0),
        };
        let window_start = samples.len().saturating_sub(WINDOW_SAMPLES + 1);
        let oldest = samples.get(window_start).cloned();
        let buckets: Vec<u64> = match &oldest {
            Some(oldest) => (0..N_BUCKETS)
                .map(|i| current.latency[i].saturating_sub(oldest.latency[i]))
                .collect(),
            None => current.latency.to_vec(),
        };
        let mut series = Series::default();
        let recent: Vec<&Sample> = samples.iter().skip(window_start).collect();
        for pair in recent.windows(2) {
            let (per_in, per_out) = rates(pair[0], pair[1]);
            series.in_per_second.push(per_in);
            series.out_per_second.push(per_out);
            let second: Vec<u64> = (0..N_BUCKETS)
                .map(|i| pair[1].latency[i].saturating_sub(pair[0].latency[i]))
                .collect();
            series.p99_ms.push(percentile(&second, 0.99));
        }
        drop(samples);
        NodePulse {
            at: now_ms,
            attachments: self.attachments.load(Ordering::Relaxed).max(0) as u64,
            messages_in: current.messages_in,
            messages_out: current.messages_out,
            slow_consumer_disconnects: self.slow_consumer_disconnects.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            in_per_second,
            out_per_second,
            latency: Latency::from_buckets(buckets),
            series,
            ..NodePulse::default()
        }
    }
}

impl Latency {
    /// Percentiles of bucket counts (nodes' buckets summed for a cluster total).
    pub fn from_buckets(buckets: Vec<u64>) -> Latency {
        Latency {
            count: buckets.iter().sum(),
            p50: percentile(&buckets, 0.50),
            p90: percentile(&buckets, 0.90),
            p99: percentile(&buckets, 0.99),
            buckets,
        }
    }
}

fn rates(earlier: &Sample, later: &Sample) -> (f64, f64) {
    let seconds = later.at_ms.saturating_sub(earlier.at_ms) as f64 / 1000.0;
    if seconds <= 0.0 {
        return (0.0, 0.0);
    }
    let per = |a: u64, b: u64| (b.saturating_sub(a) as f64 / seconds * 10.0).round() / 10.0;
    (
        per(earlier.messages_in, later.messages_in),
        per(earlier.messages_out, later.messages_out),
    )
}

/// The bound of the bucket holding the `q` quantile; the slower-than-all bucket reports the
/// largest bound. `None` without observations.
fn percentile(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(LATENCY_BOUNDS_MS[i.min(LATENCY_BOUNDS_MS.len() - 1)]);
        }
    }
    LATENCY_BOUNDS_MS.last().copied()
}

#[cfg(test)]
mod tests;
