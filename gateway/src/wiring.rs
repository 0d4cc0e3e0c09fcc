//! `Wiring`: what `Gateway::connect_bus` plugs in after the gateway is built, shared by the
//! subsystems that reach it. The back-end is memory until Redis is reached, then Redis for good;
//! webhooks run once their state's back-end is known; the push dispatcher (`push/`, a rank above
//! the publisher that reports to it) is plugged in once the gateway is built. Each is set once,
//! so readers take no lock.

use std::sync::{Arc, OnceLock};

use crate::backend::push::PushStore;
use crate::backend::{Backend, Bus, SessionStore};
use crate::config::Source;
use crate::webhooks::{Report, Webhooks};

pub(crate) struct Wiring {
    /// The in-memory back-end: embedded, and until `connect_bus` has reached Redis.
    memory: Backend,
    /// The Redis back-end, once `connect_bus` has reached it (`--redis`).
    redis: OnceLock<Backend>,
    /// Webhook emission and delivery, when any webhook is configured.
    webhooks: OnceLock<Arc<Webhooks>>,
    /// Where stored publications with `extras.push` are reported (the push dispatcher).
    push: OnceLock<Arc<dyn PushSink>>,
}

/// What takes a stored publication's `extras.push` payloads for the channel's push subscribers.
/// Must not block: the publish it follows is already acknowledged.
pub(crate) trait PushSink: Send + Sync {
    /// `scope`: the sandbox app (`""` for the shared space); `channel`: the name as published.
    fn published(&self, scope: &str, channel: &str, payloads: Vec<serde_json::Value>);
}

impl Wiring {
    pub(crate) fn new(memory: Backend) -> Wiring {
        Wiring {
            memory,
            redis: OnceLock::new(),
            webhooks: OnceLock::new(),
            push: OnceLock::new(),
        }
    }

    /// The back-end: Redis once `connect_bus` reached it, else memory. Decided here only.
    pub(crate) fn backend(&self) -> &Backend {
        self.redis.get().unwrap_or(&self.memory)
    }

    /// The bus every publish and presence change goes through.
    pub(crate) fn bus(&self) -> &dyn Bus {
        self.backend().bus.as_ref()
    }

    /// Where resume records are kept for other nodes (nowhere, embedded).
    pub(crate) fn session_store(&self) -> &Arc<dyn SessionStore> {
        &self.backend().sessions
    }

    /// From now on the back-end is Redis.
    pub(crate) fn use_redis(&self, redis: Backend) {
        let _ = self.redis.set(redis);
    }

    /// Push registrations and subscriptions, in the back-end's keeping.
    pub(crate) fn push_store(&self) -> &Arc<dyn PushStore> {
        &self.backend().push
    }

    pub(crate) fn set_push(&self, sink: Arc<dyn PushSink>) {
        let _ = self.push.set(sink);
    }

    /// Hands a stored publication's push payloads to the dispatcher (if any).
    pub(crate) fn report_push(&self, scope: &str, channel: &str, payloads: Vec<serde_json::Value>) {
        if let Some(push) = self.push.get() {
            push.published(scope, channel, payloads);
        }
    }

    pub(crate) fn set_webhooks(&self, webhooks: Arc<Webhooks>) {
        let _ = self.webhooks.set(webhooks);
    }

    /// Tells the webhooks (if any) about something this node accepted.
    pub(crate) fn report_webhook(&self, report: Report) {
        if let Some(webhooks) = self.webhooks.get() {
            webhooks.report(report);
        }
    }

    /// Whether any webhook wants `source` events of `channel` (so a copy is worth making).
    pub(crate) fn webhooks_want(&self, source: Source, channel: &str) -> bool {
        self.webhooks
            .get()
            .is_some_and(|webhooks| webhooks.wanted(source, channel))
    }
}
