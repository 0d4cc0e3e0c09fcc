//! Getting push notifications to transports without holding up a publish: a channel message's
//! `extras.push` goes on one bounded queue (full: dropped, counted and logged; the message itself
//! was already acknowledged), one task per gateway reads the channel's recipients from the push
//! store a page at a time and hands each active device's job to the transport its
//! `transportType` names, once per device.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::mpsc;

use crate::backend::push::{Device, PushStore};
use crate::wiring::{PushSink, Wiring};

/// Channel publications with push payloads waiting for their recipients to be looked up. Past
/// this many the newest are dropped: push is best effort, and a stuck store must not grow us.
const QUEUE_PUBLICATIONS: usize = 4096;

/// Channel subscribers whose devices are read per page: a page's registrations (a few hundred
/// bytes each) stay well under a MiB, and one store round trip serves a thousand devices.
const SUBSCRIBERS_PER_PAGE: usize = 1000;

/// One notification for one recipient, as a transport gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushJob {
    /// The sandbox app the device is registered in (`""` for the shared space), for `Push::gone`.
    pub app: String,
    /// The registration this goes to; `None` for a raw recipient of `POST /push/publish`.
    pub device_id: Option<String>,
    /// Ably's `push.recipient` object, e.g. `{"transportType":"web","targetUrl":…,
    /// "encryptionKey":{"p256dh":…,"auth":…}}`.
    pub recipient: serde_json::Value,
    /// Ably's push payload: `notification`, `data`, `apns`, `fcm`, `web`.
    pub payload: serde_json::Value,
}

/// Why a transport did not take a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefused {
    /// Its queue is full.
    #[error("the push transport's queue is full")]
    Full,
    /// It does not deliver to this kind of recipient.
    #[error("no push transport for recipient transportType {0:?}")]
    Unsupported(String),
    /// The recipient object is unusable (a required field missing).
    #[error("invalid push recipient: {0}")]
    InvalidRecipient(String),
}

/// Delivers push jobs (Web Push, FCM, APNs, or Ably's `ablyChannel` test transport). `send`
/// must not block: queue the job and return. A transport that learns a recipient is gone tells
/// `Push::gone`.
pub trait PushTransport: Send + Sync {
    fn send(&self, job: PushJob) -> Result<(), PushRefused>;

    /// `send`, waiting for room instead of refusing when the queue is full: what a fan-out to
    /// a channel's devices uses, off the publish path, so a large channel is not cut at the
    /// queue's length. By default, `send`.
    fn send_waiting(
        &self,
        job: PushJob,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PushRefused>> + Send + '_>>
    {
        Box::pin(std::future::ready(self.send(job)))
    }

    /// Whether a registration's recipient is one this transport could deliver to, checked when
    /// the registration is made. By default, yes.
    fn accepts(&self, _recipient: &serde_json::Value) -> Result<(), PushRefused> {
        Ok(())
    }
}

/// Picks the transport for a recipient: `ablyChannel` is ours, anything else goes to the
/// transport plugged in with `Gateway::set_push_transport` (none: refused as unsupported).
pub(crate) struct Transports {
    pub(crate) ably_channel: Arc<dyn PushTransport>,
    pub(crate) external: OnceLock<Arc<dyn PushTransport>>,
}

impl Transports {
    /// Whether the transport a recipient names (if one is plugged in) could deliver to it.
    pub(crate) fn accepts(&self, recipient: &serde_json::Value) -> Result<(), PushRefused> {
        match self.transport_of(recipient) {
            Ok(transport) => transport.accepts(recipient),
            // Registered all the same; a transport may be configured later.
            Err(PushRefused::Unsupported(_)) => Ok(()),
            Err(refused) => Err(refused),
        }
    }

    /// Hands one job to its transport, counted.
    pub(crate) fn send(&self, job: PushJob) -> Result<(), PushRefused> {
        let outcome = self.route(job);
        let mut tally = Tally::default();
        tally.add(&outcome);
        tally.record();
        outcome
    }

    /// Hands one payload to each active device, once per device, waiting for room in a full
    /// transport queue; counted once per call (a page of a channel's devices), not per device.
    pub(crate) async fn send_to_devices(
        &self,
        app: &str,
        devices: &[Device],
        payload: &serde_json::Value,
    ) {
        let mut tally = Tally::default();
        for device in devices.iter().filter(|device| device.is_active()) {
            let job = PushJob {
                app: app.to_owned(),
                device_id: Some(device.id.clone()),
                recipient: device.push.recipient.clone(),
                payload: payload.clone(),
            };
            let outcome = self.route_waiting(job).await;
            if let Err(refused) = &outcome {
                tracing::debug!(device = %device.id, %refused, "push not handed to a transport");
            }
            tally.add(&outcome);
        }
        tally.record();
    }

    async fn route_waiting(&self, job: PushJob) -> Result<(), PushRefused> {
        match self.transport_of(&job.recipient) {
            Ok(transport) => transport.send_waiting(job).await,
            Err(refused) => Err(refused),
        }
    }

    fn transport_of(
        &self,
        recipient: &serde_json::Value,
    ) -> Result<&dyn PushTransport, PushRefused> {
        let transport_type = recipient
            .get("transportType")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        if transport_type == super::ably_channel::TRANSPORT_TYPE {
            Ok(self.ably_channel.as_ref())
        } else if let Some(external) = self.external.get() {
            Ok(external.as_ref())
        } else {
            Err(PushRefused::Unsupported(transport_type.to_owned()))
        }
    }

    fn route(&self, job: PushJob) -> Result<(), PushRefused> {
        self.transport_of(&job.recipient)?.send(job)
    }
}

const RESULTS: [&str; 4] = ["sent", "transport_full", "unsupported", "invalid_recipient"];

/// Jobs by outcome, recorded as `realtime_push_jobs_total{result}` once per batch.
#[derive(Default)]
struct Tally([u64; 4]);

impl Tally {
    fn add(&mut self, outcome: &Result<(), PushRefused>) {
        let index = match outcome {
            Ok(()) => 0,
            Err(PushRefused::Full) => 1,
            Err(PushRefused::Unsupported(_)) => 2,
            Err(PushRefused::InvalidRecipient(_)) => 3,
        };
        self.0[index] += 1;
    }

    fn record(&self) {
        for (result, n) in RESULTS.into_iter().zip(self.0) {
            if n > 0 {
                ::metrics::counter!("realtime_push_jobs_total", "result" => result).increment(n);
            }
        }
    }
}

struct Published {
    scope: String,
    channel: String,
    payloads: Vec<serde_json::Value>,
}

/// The publish path's end of the queue (`PushSink`, held by `Wiring`).
pub(crate) struct Dispatcher {
    queue: mpsc::Sender<Published>,
}

impl Dispatcher {
    /// Starts the task that resolves recipients; it ends when the gateway (its `Wiring`) goes.
    pub(crate) fn start(wiring: Weak<Wiring>, transports: Arc<Transports>) -> Dispatcher {
        Dispatcher::with_limits(wiring, transports, QUEUE_PUBLICATIONS, SUBSCRIBERS_PER_PAGE)
    }

    pub(crate) fn with_limits(
        wiring: Weak<Wiring>,
        transports: Arc<Transports>,
        capacity: usize,
        subscribers_per_page: usize,
    ) -> Dispatcher {
        let (queue, mut arrivals) = mpsc::channel::<Published>(capacity);
        tokio::spawn(async move {
            while let Some(published) = arrivals.recv().await {
                let Some(wiring) = wiring.upgrade() else {
                    return;
                };
                let store = wiring.push_store().clone();
                drop(wiring);
                fan_out(
                    store.as_ref(),
                    &transports,
                    &published,
                    subscribers_per_page,
                )
                .await;
            }
        });
        Dispatcher { queue }
    }
}

/// Hands a publication's payloads to the channel's devices, reading them a page at a time so a
/// channel's whole device list is never in memory at once. A device can come back on a later
/// page (subscribed directly and through its clientId, or read twice by Redis's `SSCAN`); the
/// ids already handed their jobs, and only the ids, are kept to send it nothing twice.
async fn fan_out(
    store: &dyn PushStore,
    transports: &Transports,
    published: &Published,
    subscribers_per_page: usize,
) {
    let mut sent: HashSet<String> = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match store
            .recipients_page(
                &published.scope,
                &published.channel,
                cursor.as_deref(),
                subscribers_per_page,
            )
            .await
        {
            Ok(page) => page,
            Err(error) => {
                ::metrics::counter!("realtime_push_dropped_total", "reason" => "store")
                    .increment(published.payloads.len() as u64);
                tracing::warn!(channel = %published.channel, %error, devices_sent = sent.len(), "push recipients could not be read; notifications to the rest dropped");
                return;
            }
        };
        let mut devices = page.devices;
        devices.retain(|device| sent.insert(device.id.clone()));
        for payload in &published.payloads {
            transports
                .send_to_devices(&published.scope, &devices, payload)
                .await;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return,
        }
    }
}

impl Dispatcher {
    /// Queues a publication's payloads; false when the queue is full and they were dropped.
    pub(crate) fn queue(
        &self,
        scope: &str,
        channel: &str,
        payloads: Vec<serde_json::Value>,
    ) -> bool {
        let n = payloads.len() as u64;
        let published = Published {
            scope: scope.to_owned(),
            channel: channel.to_owned(),
            payloads,
        };
        if self.queue.try_send(published).is_ok() {
            return true;
        }
        ::metrics::counter!("realtime_push_dropped_total", "reason" => "queue_full").increment(n);
        tracing::warn!(%channel, "push queue full; notifications dropped");
        false
    }
}

impl PushSink for Dispatcher {
    fn published(&self, scope: &str, channel: &str, payloads: Vec<serde_json::Value>) {
        self.queue(scope, channel, payloads);
    }
}
