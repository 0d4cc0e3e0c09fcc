//! One transport's delivery: a bounded queue, `senders` requests in flight, retries and a
//! breaker.
//!
//! The dispatcher takes a sender slot, then asks the breaker, then takes the next job, in that
//! order: while the breaker is open jobs stay in the queue (its depth shows it, and a full queue
//! refuses new ones) instead of being pulled out and failed. Each job runs in its own task:
//! attempts until delivered, gone, refused for good, or out of retries. A retry waits the
//! service's `Retry-After` or an exponential backoff with jitter; a job whose retry would go
//! through an open breaker is given up (counted failed): push is best effort, as Ably's is.

mod breaker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{mpsc, Semaphore};

use crate::config::Delivery;
use crate::recipient::{Kind, Target};
use crate::{Gone, Refused};
use breaker::{Admission, Breaker};

/// One transport's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportMetrics {
    /// The transport is configured (the other fields stay zero when not).
    pub configured: bool,
    /// Accepted by the push service.
    pub sent: u64,
    /// Given up: refused for good, out of retries, or cut off by the breaker.
    pub failed: u64,
    /// Attempts made again after a retryable failure.
    pub retried: u64,
    /// Reported gone (and handed to the `on_gone` callback).
    pub gone: u64,
    /// Refused by `send` because the queue was full.
    pub dropped: u64,
    /// Jobs waiting in the queue now.
    pub queue_depth: usize,
    pub breaker_open: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub web: TransportMetrics,
    pub fcm: TransportMetrics,
    pub apns: TransportMetrics,
}

/// A job checked by `send`.
pub(crate) struct Prepared {
    pub(crate) device_id: Option<String>,
    pub(crate) target: Target,
    pub(crate) payload: serde_json::Value,
}

/// What one request came to.
pub(crate) enum Outcome {
    Delivered,
    Gone(String),
    /// Worth trying again (429, 5xx, network); `after` is the service's `Retry-After`.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Refused for good (a 4xx that is not about the device, a payload too large).
    Failed(String),
}

pub(crate) enum Transport {
    Web(crate::web::WebPush),
    Fcm(crate::fcm::Fcm),
    Apns(crate::apns::Apns),
}

impl Transport {
    async fn attempt(&self, job: &Prepared) -> Outcome {
        match self {
            Transport::Web(web) => web.attempt(job).await,
            Transport::Fcm(fcm) => fcm.attempt(job).await,
            Transport::Apns(apns) => apns.attempt(job).await,
        }
    }
}

/// The sending side of one transport's queue.
pub(crate) struct Queue {
    jobs: mpsc::Sender<Prepared>,
    shared: Arc<Shared>,
}

struct Shared {
    kind: Kind,
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    gone: AtomicU64,
    dropped: AtomicU64,
    breaker: Breaker,
    delivery: Delivery,
    transport: Transport,
    on_gone: Arc<dyn Fn(Gone) + Send + Sync>,
}

impl Queue {
    pub(crate) fn start(
        kind: Kind,
        transport: Transport,
        delivery: &Delivery,
        on_gone: Arc<dyn Fn(Gone) + Send + Sync>,
    ) -> Queue {
        let (jobs, queued) = mpsc::channel(delivery.queue_max_jobs.max(1));
        let shared = Arc::new(Shared {
            kind,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            gone: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            breaker: Breaker::new(kind, delivery.breaker_failures, delivery.breaker_cooldown),
            delivery: delivery.clone(),
            transport,
            on_gone,
        });
        tokio::spawn(dispatch(queued, shared.clone()));
        Queue { jobs, shared }
    }

    pub(crate) fn push(&self, job: Prepared) -> Result<(), Refused> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                count(self.shared.kind, "dropped");
                Err(Refused::QueueFull(self.shared.kind.name()))
            }
        }
    }

    pub(crate) async fn push_waiting(&self, job: Prepared) -> Result<(), Refused> {
        // Fails only once the dispatcher is gone, which outlives every `Queue`.
        self.jobs
            .send(job)
            .await
            .map_err(|_| Refused::NotConfigured(self.shared.kind.name()))
    }

    pub(crate) fn metrics(&self) -> TransportMetrics {
        let shared = &self.shared;
        TransportMetrics {
            configured: true,
            sent: shared.sent.load(Ordering::Relaxed),
            failed: shared.failed.load(Ordering::Relaxed),
            retried: shared.retried.load(Ordering::Relaxed),
            gone: shared.gone.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
            queue_depth: self.jobs.max_capacity() - self.jobs.capacity(),
            breaker_open: shared.breaker.is_open(),
        }
    }
}

/// Ends when every `Queue` (every `Push` clone) is gone and the queue is drained.
async fn dispatch(mut queued: mpsc::Receiver<Prepared>, shared: Arc<Shared>) {
    let senders = Arc::new(Semaphore::new(shared.delivery.senders.max(1)));
    loop {
        let Ok(slot) = senders.clone().acquire_owned().await else {
            return;
        };
        let admission = shared.breaker.admit().await;
        let Some(job) = queued.recv().await else {
            return;
        };
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                deliver(&shared, job).await;
                drop(slot);
            }
        });
        if admission == Admission::Probe {
            // Half-open: nothing else goes until the probe is answered.
            let _ = task.await;
            shared.breaker.probe_finished();
        }
    }
}

async fn deliver(shared: &Shared, job: Prepared) {
    let kind = shared.kind;
    let mut retries = 0;
    loop {
        let outcome = shared.transport.attempt(&job).await;
        shared
            .breaker
            .record(!matches!(outcome, Outcome::Retry { .. }));
        let reason = match outcome {
            Outcome::Delivered => {
                shared.sent.fetch_add(1, Ordering::Relaxed);
                count(kind, "sent");
                return;
            }
            Outcome::Gone(reason) => {
                shared.gone.fetch_add(1, Ordering::Relaxed);
                count(kind, "gone");
                tracing::debug!(transport = kind.name(), device = ?job.device_id, %reason, "push device gone");
                (shared.on_gone)(Gone {
                    device_id: job.device_id,
                    reason,
                });
                return;
            }
            Outcome::Failed(reason) => reason,
            Outcome::Retry { reason, after } => {
                if retries < shared.delivery.max_retries && !shared.breaker.is_open() {
                    retries += 1;
                    shared.retried.fetch_add(1, Ordering::Relaxed);
                    count(kind, "retried");
                    let wait = after
                        .unwrap_or_else(|| backoff(&shared.delivery, retries))
                        .min(shared.delivery.retry_max);
                    tracing::debug!(transport = kind.name(), %reason, retry = retries, ?wait, "push delivery will be retried");
                    tokio::time::sleep(wait).await;
                    if !shared.breaker.is_open() {
                        continue;
                    }
                }
                reason
            }
        };
        shared.failed.fetch_add(1, Ordering::Relaxed);
        count(kind, "failed");
        tracing::warn!(transport = kind.name(), device = ?job.device_id, %reason, "push not delivered");
        return;
    }
}

/// `retry_initial · 2^(retry-1)`, capped at `retry_max`, then a random half to all of it, so
/// jobs failed together do not retry together.
fn backoff(delivery: &Delivery, retry: u32) -> Duration {
    let exponent = retry.saturating_sub(1).min(20);
    let full = delivery
        .retry_initial
        .saturating_mul(1 << exponent)
        .min(delivery.retry_max);
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

fn count(kind: Kind, outcome: &'static str) {
    ::metrics::counter!("realtime_push_deliveries_total", "transport" => kind.name(), "outcome" => outcome)
        .increment(1);
}

/// A response's `Retry-After` in seconds (the HTTP-date form is rare from push services and
/// falls back to the backoff).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// The outcome of a request that got no response.
pub(crate) fn network_error(error: &reqwest::Error) -> Outcome {
    let reason = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        // The source chain says what failed (refused, reset, TLS).
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    };
    Outcome::Retry {
        reason,
        after: None,
    }
}

/// 429 and 5xx are worth retrying; the rest of the non-2xx are not.
pub(crate) fn by_status(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    reason: String,
) -> Outcome {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Outcome::Retry {
            reason,
            after: retry_after(headers),
        }
    } else {
        Outcome::Failed(reason)
    }
}
