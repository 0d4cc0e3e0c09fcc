//! The bus contract: how a publication and a presence change get from the node that accepted
//! them to every subscriber in the deployment, and how a node starts and stops listening to a
//! channel. Two back-ends keep it: `MemoryBus` (one process, the embedded default: the hub is
//! the bus) and `RedisBus` (many processes). The contract suite (`tests/it/contract.rs`) runs
//! the same observable checks against both.

use std::future::Future;
use std::pin::Pin;

use protocol::{ErrorInfo, Message, PresenceMessage};

use crate::config::Retention;
use crate::hub::{Hub, Publication, Serials};

pub(crate) type BusFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) trait Bus: Send + Sync {
    /// Stores and delivers a checked, stamped publication; returns each message's serial (None
    /// for an idempotent repeat). Consecutive serials per channel, in one order everywhere.
    /// An error means nothing was stored: the publisher is told (NACK / 5xx).
    fn publish<'a>(
        &'a self,
        hub: &'a Hub,
        publication: Publication<'a>,
        retention: Retention,
    ) -> BusFuture<'a, Result<Serials, ErrorInfo>>;

    /// Applies checked, stamped presence events everywhere.
    fn presence<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        events: &'a [PresenceMessage],
    ) -> BusFuture<'a, Result<(), ErrorInfo>>;

    /// One more local listener on `channel`; resolves once this node is caught up with it.
    fn join<'a>(&'a self, channel: &'a str) -> BusFuture<'a, Result<(), ErrorInfo>>;

    /// One local listener fewer.
    fn leave(&self, channel: &str);

    /// Whether the bus works end to end (for readiness).
    fn healthy(&self) -> bool;
}

/// One process: the hub assigns serials and fans out itself.
pub(crate) struct MemoryBus;

impl Bus for MemoryBus {
    fn publish<'a>(
        &'a self,
        hub: &'a Hub,
        publication: Publication<'a>,
        _retention: Retention,
    ) -> BusFuture<'a, Result<Serials, ErrorInfo>> {
        let result = hub.publish(publication);
        Box::pin(std::future::ready(result))
    }

    fn presence<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        events: &'a [PresenceMessage],
    ) -> BusFuture<'a, Result<(), ErrorInfo>> {
        hub.apply_presence(channel, events.to_vec());
        Box::pin(std::future::ready(Ok(())))
    }

    fn join<'a>(&'a self, _channel: &'a str) -> BusFuture<'a, Result<(), ErrorInfo>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn leave(&self, _channel: &str) {}

    fn healthy(&self) -> bool {
        true
    }
}

impl Bus for super::RedisBus {
    fn publish<'a>(
        &'a self,
        _hub: &'a Hub,
        publication: Publication<'a>,
        retention: Retention,
    ) -> BusFuture<'a, Result<Serials, ErrorInfo>> {
        Box::pin(async move {
            let messages: Vec<Message> = publication.messages;
            self.publish(
                publication.channel,
                retention,
                &messages,
                &publication.client_ids,
                publication.connection_id,
                publication.id.as_deref(),
            )
            .await
        })
    }

    fn presence<'a>(
        &'a self,
        _hub: &'a Hub,
        channel: &'a str,
        events: &'a [PresenceMessage],
    ) -> BusFuture<'a, Result<(), ErrorInfo>> {
        Box::pin(super::RedisBus::presence(self, channel, events))
    }

    fn join<'a>(&'a self, channel: &'a str) -> BusFuture<'a, Result<(), ErrorInfo>> {
        Box::pin(super::RedisBus::join(self, channel))
    }

    fn leave(&self, channel: &str) {
        super::RedisBus::leave(self, channel)
    }

    fn healthy(&self) -> bool {
        super::RedisBus::healthy(self)
    }
}
