//! Push notification delivery: Web Push (VAPID, RFC 8292; `aes128gcm`, RFC 8291), FCM HTTP v1
//! (service-account OAuth) and APNs (HTTP/2, ES256 provider tokens).
//!
//! What it is: `Push::start` takes a `Config` and a callback for devices a service reports gone;
//! `Push::send` queues one `Job` (Ably's `push.recipient` and push payload) on its transport's
//! bounded queue and never waits. Each transport has its own senders, retries with backoff, a
//! breaker and `Metrics` (`delivery/`). What it is not: it knows nothing of device
//! registrations, channels or Ably's REST API; the gateway resolves those into jobs and marks
//! gone devices failed.
//!
//! Start at `Push` below, then `delivery/mod.rs`; each transport is one file (`web.rs`,
//! `fcm.rs`, `apns.rs`) and `payload/` maps Ably's payload onto them.

mod apns;
mod config;
mod delivery;
mod fcm;
mod payload;
mod recipient;
mod web;

use std::sync::Arc;

pub use config::{
    ApnsConfig, Config, Delivery, FcmConfig, KeyError, ServiceAccount, Urgency, VapidKeys,
    WebPushConfig, BROWSER_PUSH_SERVICES,
};
pub use delivery::{Metrics, TransportMetrics};

use delivery::Queue;
use recipient::{Kind, Target};

/// One notification to one device.
#[derive(Clone, Debug)]
pub struct Job {
    /// The registration it was resolved from, handed back in `Gone`.
    pub device_id: Option<String>,
    /// Ably's `push.recipient`: `{"transportType": "web" | "fcm" | "gcm" | "apns", ...}`.
    pub recipient: serde_json::Value,
    /// Ably's push payload: `notification`, `data`, and the overrides `web`, `fcm`, `apns`.
    pub payload: serde_json::Value,
}

/// A device its push service says no longer exists (unsubscribed, app removed, token invalid):
/// its registration should be marked failed and not used again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    pub device_id: Option<String>,
    /// The service's words, e.g. `HTTP 410`, `UNREGISTERED`, `BadDeviceToken`.
    pub reason: String,
}

/// Why `send` did not queue a job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the {0} push queue is full")]
    QueueFull(&'static str),
    #[error("{0} push is not configured on this server")]
    NotConfigured(&'static str),
    #[error("invalid push recipient: {0}")]
    Malformed(String),
}

/// The handle: cheap to clone; the senders stop when the last clone is dropped.
#[derive(Clone)]
pub struct Push {
    inner: Arc<Inner>,
}

struct Inner {
    web: Option<Queue>,
    fcm: Option<Queue>,
    apns: Option<Queue>,
    vapid_public_key: Option<String>,
    /// Web Push's settings, for where an endpoint may be (`WebPushConfig::sends_to`).
    web_push: Option<config::WebPushConfig>,
}

impl Push {
    /// Starts one queue and its senders per configured transport. Call inside a tokio runtime.
    pub fn start(config: Config, on_gone: Arc<dyn Fn(Gone) + Send + Sync>) -> Push {
        let delivery = &config.delivery;
        let vapid_public_key = config
            .web_push
            .as_ref()
            .map(|web| web.vapid.public_key_base64url());
        let web_push = config.web_push.clone();
        let web = config.web_push.map(|web| {
            Queue::start(
                Kind::Web,
                delivery::Transport::Web(web::WebPush::new(web, delivery)),
                delivery,
                on_gone.clone(),
            )
        });
        let fcm = config.fcm.map(|fcm| {
            Queue::start(
                Kind::Fcm,
                delivery::Transport::Fcm(fcm::Fcm::new(fcm, delivery)),
                delivery,
                on_gone.clone(),
            )
        });
        let apns = config.apns.map(|apns| {
            Queue::start(
                Kind::Apns,
                delivery::Transport::Apns(apns::Apns::new(apns, delivery)),
                delivery,
                on_gone.clone(),
            )
        });
        Push {
            inner: Arc::new(Inner {
                web,
                fcm,
                apns,
                vapid_public_key,
                web_push,
            }),
        }
    }

    /// Non-blocking: queues on the recipient's transport; `Err` when its queue is full, the
    /// transport is not configured, or the recipient is malformed.
    pub fn send(&self, job: Job) -> Result<(), Refused> {
        let (queue, prepared) = self.prepare(job)?;
        queue.push(prepared)
    }

    /// `send` for a bulk fan-out running off the publish path (a channel's push subscribers):
    /// waits for room in the queue instead of refusing, so a fan-out larger than the queue is
    /// paced by the senders. `Err` only for an unconfigured transport or a malformed recipient.
    pub async fn send_waiting(&self, job: Job) -> Result<(), Refused> {
        let (queue, prepared) = self.prepare(job)?;
        queue.push_waiting(prepared).await
    }

    /// Whether `recipient` is one this server could send to (`Refused::Malformed` if not), for
    /// a registration checked when it is made; a transport not configured is not a refusal.
    pub fn check(&self, recipient: &serde_json::Value) -> Result<(), Refused> {
        self.target(recipient).map(|_| ())
    }

    fn target(&self, recipient: &serde_json::Value) -> Result<Target, Refused> {
        let target = Target::parse(recipient)?;
        if let (Target::Web { endpoint, .. }, Some(web)) = (&target, &self.inner.web_push) {
            if !web.sends_to(endpoint) {
                return Err(Refused::Malformed(format!(
                    "recipient.targetUrl: {} is not on a Web Push service this server sends to (--push-web-endpoint-hosts)",
                    endpoint.host_str().unwrap_or_default()
                )));
            }
        }
        Ok(target)
    }

    fn prepare(&self, job: Job) -> Result<(&Queue, delivery::Prepared), Refused> {
        let target = self.target(&job.recipient)?;
        let kind = target.kind();
        let queue = match kind {
            Kind::Web => &self.inner.web,
            Kind::Fcm => &self.inner.fcm,
            Kind::Apns => &self.inner.apns,
        };
        let queue = queue.as_ref().ok_or(Refused::NotConfigured(kind.name()))?;
        let prepared = delivery::Prepared {
            device_id: job.device_id,
            target,
            payload: job.payload,
        };
        Ok((queue, prepared))
    }

    /// Counters, queue depth and breaker state per transport.
    pub fn metrics(&self) -> Metrics {
        let of = |queue: &Option<Queue>| queue.as_ref().map(Queue::metrics).unwrap_or_default();
        Metrics {
            web: of(&self.inner.web),
            fcm: of(&self.inner.fcm),
            apns: of(&self.inner.apns),
        }
    }

    /// The VAPID public key (base64url) browsers subscribe with; ably-js fetches it from
    /// `GET /push/publicVapidKey`. `None` without Web Push.
    pub fn vapid_public_key(&self) -> Option<&str> {
        self.inner.vapid_public_key.as_deref()
    }
}
