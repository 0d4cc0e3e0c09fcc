//! Counting what arrived: per subscriber, which (publisher, sequence) pairs it saw, so a run can
//! tell lost from duplicated from misrouted; and one latency histogram for the whole run.
//!
//! Every subscriber owns its `Ledger` (no sharing while the run goes); latencies go to the shared
//! histogram in batches under a short lock, never held across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::payload::Stamp;
use crate::target::Delivery;

/// Which channel publication `seq` of `publisher` goes to. Publishers and ledgers share it, so
/// a subscriber knows exactly which publications it is owed.
pub type Schedule = Arc<dyn Fn(u32, u64) -> usize + Send + Sync>;

/// Latencies are recorded in microseconds, up to a minute, to three significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Samples a ledger collects before taking the histogram's lock.
const BATCH: usize = 256;

pub struct Latencies {
    histogram: Mutex<Histogram<u64>>,
    /// One coarser histogram per second of arrival (since this was made), for plots.
    timeline: Mutex<Vec<Histogram<u64>>>,
    origin_us: u64,
    /// Deliveries seen, for progress and for knowing when the expected ones are all in.
    pub delivered: AtomicU64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            ),
            timeline: Mutex::new(Vec::new()),
            origin_us: crate::clock::now_us(),
            delivered: AtomicU64::new(0),
        }
    }
}

impl Latencies {
    /// Records (arrival time, latency) pairs, both in microseconds.
    pub fn record(&self, samples_us: &[(u64, u64)]) {
        {
            let mut histogram = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
            for (_, latency) in samples_us {
                histogram.saturating_record((*latency).clamp(1, MAX_LATENCY_US));
            }
        }
        let mut timeline = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        for (received, latency) in samples_us {
            let second = (received.saturating_sub(self.origin_us) / 1_000_000) as usize;
            while timeline.len() <= second {
                timeline
                    .push(Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid bounds"));
            }
            timeline[second].saturating_record((*latency).clamp(1, MAX_LATENCY_US));
        }
    }

    /// Per second of arrival: (second, p50, p99, max) in milliseconds; empty seconds left out.
    pub fn timeline_ms(&self) -> Vec<(u32, f64, f64, f64)> {
        let timeline = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |us: u64| us as f64 / 1000.0;
        timeline
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(second, h)| {
                (
                    second as u32,
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.max()),
                )
            })
            .collect()
    }

    /// (bucket start in ms, count) in `n_buckets` equal buckets up to the p99.9 (later samples
    /// counted in the last bucket).
    pub fn distribution_ms(&self, n_buckets: u64) -> Vec<(f64, u64)> {
        let histogram = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
        if histogram.is_empty() {
            return Vec::new();
        }
        let top = histogram.value_at_quantile(0.999).max(n_buckets);
        let width = top.div_ceil(n_buckets);
        let mut buckets = vec![0u64; n_buckets as usize];
        for value in histogram.iter_recorded() {
            let bucket = (value.value_iterated_to() / width).min(n_buckets - 1) as usize;
            buckets[bucket] += value.count_at_value();
        }
        buckets
            .into_iter()
            .enumerate()
            .map(|(i, count)| ((i as u64 * width) as f64 / 1000.0, count))
            .collect()
    }

    /// (quantile, milliseconds) for p50, p90, p99, p99.9 and the maximum; `None` if empty.
    pub fn percentiles_ms(&self) -> Option<Vec<(&'static str, f64)>> {
        let histogram = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(vec![
            ("p50", ms(histogram.value_at_quantile(0.5))),
            ("p90", ms(histogram.value_at_quantile(0.9))),
            ("p99", ms(histogram.value_at_quantile(0.99))),
            ("p99.9", ms(histogram.value_at_quantile(0.999))),
            ("max", ms(histogram.max())),
        ])
    }
}

/// One subscriber's account of what it received on its channel.
pub struct Ledger {
    channel: usize,
    schedule: Schedule,
    latencies: Arc<Latencies>,
    /// Per publisher, a bitset of the sequence numbers seen.
    seen: Vec<Vec<u64>>,
    /// (arrival, latency) in microseconds, not yet in `latencies`.
    pending_us: Vec<(u64, u64)>,
    pub received: u64,
    pub unique: u64,
    pub duplicated: u64,
    /// Deliveries meant for another channel, or with a payload that is not ours.
    pub misrouted: u64,
}

impl Ledger {
    pub fn new(channel: usize, schedule: Schedule, latencies: Arc<Latencies>) -> Ledger {
        Ledger {
            channel,
            schedule,
            latencies,
            seen: Vec::new(),
            pending_us: Vec::with_capacity(BATCH),
            received: 0,
            unique: 0,
            duplicated: 0,
            misrouted: 0,
        }
    }

    pub fn record(&mut self, delivery: &Delivery) {
        self.received += 1;
        self.latencies.delivered.fetch_add(1, Ordering::Relaxed);
        let Some(stamp) = Stamp::parse(&delivery.payload) else {
            self.misrouted += 1;
            return;
        };
        if (self.schedule)(stamp.publisher, stamp.seq) != self.channel {
            self.misrouted += 1;
            return;
        }
        let publisher = stamp.publisher as usize;
        if self.seen.len() <= publisher {
            self.seen.resize_with(publisher + 1, Vec::new);
        }
        let bits = &mut self.seen[publisher];
        let (word, bit) = ((stamp.seq / 64) as usize, stamp.seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return;
        }
        bits[word] |= 1 << bit;
        self.unique += 1;
        self.pending_us.push((
            delivery.received_us,
            delivery.received_us.saturating_sub(stamp.sent_us),
        ));
        if self.pending_us.len() >= BATCH {
            self.flush();
        }
    }

    pub fn channel(&self) -> usize {
        self.channel
    }

    /// Hands the latencies still held here to the shared histogram.
    pub fn flush(&mut self) {
        self.latencies.record(&self.pending_us);
        self.pending_us.clear();
    }
}

/// How many publications each channel was owed, given how many each publisher sent.
pub fn owed_per_channel(n_channels: usize, sent: &[u64], schedule: &Schedule) -> Vec<u64> {
    let mut owed = vec![0; n_channels];
    for (publisher, n_sent) in sent.iter().enumerate() {
        for seq in 0..*n_sent {
            owed[schedule(publisher as u32, seq)] += 1;
        }
    }
    owed
}

#[cfg(test)]
mod tests;
