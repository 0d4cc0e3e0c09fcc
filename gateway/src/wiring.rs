//! `Wiring`: what `Gateway::connect_bus` plugs in after the gateway is built, shared by the
//! subsystems that reach it. The back-end is memory until Redis is reached, then Redis for good;
//! webhooks run once their state's back-end is known. Both are set once, so readers take no lock.

use std::sync::{Arc, OnceLock};

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
}

impl Wiring {
    pub(crate) fn new(memory: Backend) -> Wiring {
        Wiring {
            memory,
            redis: OnceLock::new(),
            webhooks: OnceLock::new(),
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
