//! Enforcing the publish limits: a token bucket per `PublishRate`, and the refusal counter.
//! The limits themselves are plain data in `config::limits`.

use crate::config::PublishRate;

/// Which budget a refused publish ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Messages,
    Bytes,
}

/// The state of one `PublishRate`: what is left of each budget, and when that was so.
#[derive(Debug, Clone)]
pub struct RateBucket {
    messages: f64,
    bytes: f64,
    at: std::time::Instant,
}

impl RateBucket {
    /// A full bucket.
    pub fn new(rate: &PublishRate, now: std::time::Instant) -> RateBucket {
        RateBucket {
            messages: f64::from(rate.burst_messages),
            bytes: rate.burst_bytes as f64,
            at: now,
        }
    }

    /// Takes `messages` and `bytes` from the budgets, or nothing (and says which ran out).
    pub fn take(
        &mut self,
        rate: &PublishRate,
        messages: usize,
        bytes: usize,
        now: std::time::Instant,
    ) -> Result<(), Exceeded> {
        if rate.is_unlimited() {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.messages = (self.messages + elapsed * f64::from(rate.messages_per_sec))
            .min(f64::from(rate.burst_messages));
        self.bytes =
            (self.bytes + elapsed * rate.bytes_per_sec as f64).min(rate.burst_bytes as f64);
        if messages as f64 > self.messages {
            return Err(Exceeded::Messages);
        }
        if bytes as f64 > self.bytes {
            return Err(Exceeded::Bytes);
        }
        self.messages -= messages as f64;
        self.bytes -= bytes as f64;
        Ok(())
    }

    /// Whether it has refilled by `now`, so forgetting it changes nothing.
    pub fn is_full(&self, rate: &PublishRate, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.messages + elapsed * f64::from(rate.messages_per_sec) >= f64::from(rate.burst_messages)
            && self.bytes + elapsed * rate.bytes_per_sec as f64 >= rate.burst_bytes as f64
    }
}

/// A rate in messages per second, possibly below one (Ably's per-attachment `maxRate`, e.g.
/// 0.1: one message every ten seconds), with a burst of one second's worth (at least one).
#[derive(Debug, Clone)]
pub struct Pace {
    per_sec: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Pace {
    pub fn new(per_sec: f64, now: std::time::Instant) -> Pace {
        Pace {
            per_sec,
            tokens: per_sec.max(1.0),
            at: now,
        }
    }

    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }

    /// Takes one message, or says it came too soon.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec.max(1.0));
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Counts a refused publish (once per refusal): `reason` is `too_many_messages`, `too_large`,
/// `batch_too_large`, `rate_messages`, `rate_bytes` or `frame_too_large` (a frame over
/// `max_frame_bytes`, which also ends the connection); `source` `realtime` or `rest`.
pub fn count_refusal(reason: &'static str, source: &'static str) {
    ::metrics::counter!("realtime_publish_refused_total", "reason" => reason, "source" => source)
        .increment(1);
}

#[cfg(test)]
mod tests;
