//! One process, the embedded default: the hub is the bus (it assigns serials and fans out
//! itself), event records and nonces stay in memory, and no other node can take a connection
//! over, so there are no resume records to write.

use std::sync::Arc;

use protocol::{Annotation, PresenceMessage};

use super::records::{EventRecord, MemoryRecords};
use super::session::{ConnectionKey, Parked};
use super::{
    BackendFuture, Bus, EventRecords, NodeReading, Nodes, Reply, SessionStore, SharedAuth, Ticket,
};
use crate::auth::{Auth, NonceClaim, Revocation};
use crate::config::Retention;
use crate::hub::{Annotating, Hub, Publication, Serials};
use crate::pulse::NodePulse;

#[derive(Default)]
pub(crate) struct MemoryBackend {
    events: MemoryRecords,
}

fn ready<'a, T: Send + 'a>(value: T) -> BackendFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Bus for MemoryBackend {
    fn submit<'a>(
        &'a self,
        hub: &'a Hub,
        publication: Publication<'a>,
        _retention: Retention,
    ) -> Reply<'a, Ticket> {
        // Stored and delivered at once: the ticket is already resolved.
        let stored = hub.publish(publication).map_err(Into::into);
        ready(Ok(ready(stored)))
    }

    fn submit_ephemeral<'a>(
        &'a self,
        hub: &'a Hub,
        publication: Publication<'a>,
    ) -> Reply<'a, Ticket> {
        let sent = hub.publish_ephemeral(publication).map_err(Into::into);
        ready(Ok(ready(sent)))
    }

    fn presence<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        events: &'a [PresenceMessage],
    ) -> Reply<'a, ()> {
        // Checked again and applied under one lock: the caller's early check can race.
        ready(hub.presence(channel, events.to_vec()).map_err(Into::into))
    }

    fn annotate<'a>(&'a self, hub: &'a Hub, batch: Annotating<'a>) -> Reply<'a, Serials> {
        ready(hub.annotate(batch).map_err(Into::into))
    }

    fn annotations<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        message_serial: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> Reply<'a, Option<Vec<Arc<Annotation>>>> {
        ready(Ok(hub.annotations(channel, message_serial, after, limit)))
    }

    /// Nobody else to tell.
    fn announce(&self, _channel: &str, _events: &[PresenceMessage]) {}

    fn join<'a>(&'a self, _channel: &'a str) -> Reply<'a, ()> {
        ready(Ok(()))
    }

    fn leave(&self, _channel: &str) {}

    fn healthy(&self) -> bool {
        true
    }
}

impl SessionStore for MemoryBackend {
    fn shared(&self) -> bool {
        false
    }

    fn record(&self, _key: &ConnectionKey, _parked: &Parked, _is_parked: bool) {}

    fn record_new<'a>(
        &'a self,
        _key: &'a ConnectionKey,
        _parked: &'a Parked,
    ) -> BackendFuture<'a, ()> {
        ready(())
    }

    fn forget(&self, _key: &ConnectionKey) {}

    fn forget_grace(&self, _connection_id: &str) {}

    fn release(&self, _key: &ConnectionKey, _parked: &Parked) {}

    fn flush(&self) -> BackendFuture<'_, ()> {
        ready(())
    }

    fn refresh(&self, _keys: Vec<ConnectionKey>) -> BackendFuture<'_, ()> {
        ready(())
    }

    fn take<'a>(
        &'a self,
        _key: &'a ConnectionKey,
        _client_id: Option<&'a str>,
    ) -> Reply<'a, Option<Parked>> {
        ready(Ok(None))
    }
}

impl EventRecords for MemoryBackend {
    fn get<'a>(&'a self, key: &'a str) -> Reply<'a, EventRecord> {
        ready(Ok(self.events.get(key, protocol::now_ms())))
    }

    fn record_channel<'a>(&'a self, key: &'a str, n: usize, serial: &'a str) -> Reply<'a, ()> {
        self.events
            .record_channel(key, n, serial, protocol::now_ms());
        ready(Ok(()))
    }

    fn record_answer<'a>(&'a self, key: &'a str, answer: String) -> Reply<'a, String> {
        ready(Ok(self.events.record_answer(
            key,
            answer,
            protocol::now_ms(),
        )))
    }
}

impl SharedAuth for MemoryBackend {
    fn claim_nonce<'a>(
        &'a self,
        local: &'a Auth,
        claim: &'a NonceClaim,
        now_ms: u64,
    ) -> Reply<'a, bool> {
        ready(Ok(local.claim_nonce(claim, now_ms).is_ok()))
    }

    fn store_revocations<'a>(
        &'a self,
        _revocations: &'a [Revocation],
        _now_ms: u64,
    ) -> Reply<'a, ()> {
        ready(Ok(()))
    }

    fn load_revocations(&self, _now_ms: u64) -> Reply<'_, Vec<Revocation>> {
        ready(Ok(Vec::new()))
    }
}

impl Nodes for MemoryBackend {
    fn node(&self) -> Option<&str> {
        None
    }

    fn share_pulse<'a>(&'a self, _pulse: &'a NodePulse) -> Reply<'a, ()> {
        ready(Ok(()))
    }

    fn readings(&self) -> Reply<'_, Vec<NodeReading>> {
        ready(Ok(Vec::new()))
    }
}
