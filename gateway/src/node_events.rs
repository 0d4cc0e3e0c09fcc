//! The gateway's side of the back-end seam: `NodeEvents`, the one adapter through which a
//! back-end (Redis) hands the node what arrived for it and asks what it holds. It keeps only a
//! weak handle, so the back-end's tasks never keep a stopped gateway alive, and each call is a
//! no-op once the gateway is gone.

use std::sync::{Arc, Weak};

use protocol::{ErrorInfo, Message, PresenceMessage};

use crate::auth::Revocation;
use crate::backend::{Arrival, BackendEvents, Position};
use crate::sessions::{ConnectionKey, HeldHere};
use crate::webhooks::Report;
use crate::{Gateway, GatewayState};

pub(crate) struct NodeEvents(Weak<GatewayState>);

impl NodeEvents {
    pub(crate) fn of(gateway: &Gateway) -> Arc<dyn BackendEvents> {
        Arc::new(NodeEvents(Arc::downgrade(&gateway.inner)))
    }

    fn gateway(&self) -> Option<Gateway> {
        self.0.upgrade().map(|inner| Gateway { inner })
    }
}

impl BackendEvents for NodeEvents {
    fn running(&self) -> bool {
        self.0.strong_count() > 0
    }

    fn position(&self, channel: &str) -> Option<Position> {
        let gateway = self.gateway()?;
        let rules = gateway.hub().rules_for(channel);
        Some(Position {
            retention: rules.retention,
            last: gateway.hub().last_serial(channel),
            annotated: rules.mutable_messages,
        })
    }

    fn deliver(&self, arrival: Arrival<'_>) -> Result<bool, ErrorInfo> {
        let Arrival {
            channel,
            messages,
            connection_id,
            id,
        } = arrival;
        match self.gateway() {
            Some(gateway) => gateway.hub().deliver(channel, messages, connection_id, id),
            None => Ok(true),
        }
    }

    fn deliver_ephemeral(&self, arrival: Arrival<'_>) -> Result<(), ErrorInfo> {
        let Arrival {
            channel,
            messages,
            connection_id,
            id,
        } = arrival;
        match self.gateway() {
            Some(gateway) => gateway
                .hub()
                .deliver_ephemeral(channel, messages, connection_id, id),
            None => Ok(()),
        }
    }

    fn catch_up(&self, channel: &str, floor: String, messages: Vec<Message>, complete: bool) {
        if let Some(gateway) = self.gateway() {
            gateway.hub().catch_up(channel, floor, messages, complete);
        }
    }

    fn sync_members(&self, channel: &str, members: Vec<PresenceMessage>, trust: bool) -> bool {
        self.gateway()
            .is_some_and(|gateway| gateway.hub().sync_members(channel, members, trust))
    }

    fn holds(&self, channel: &str) -> bool {
        self.gateway()
            .is_some_and(|gateway| gateway.hub().is_held(channel))
    }

    fn apply_presence(&self, channel: &str, events: Vec<PresenceMessage>) {
        if let Some(gateway) = self.gateway() {
            gateway.hub().apply_presence(channel, events);
        }
    }

    fn deliver_annotations(
        &self,
        channel: &str,
        annotations: Vec<(u64, protocol::Annotation)>,
        publisher: Option<&str>,
        report: bool,
    ) -> bool {
        self.gateway().is_none_or(|gateway| {
            gateway
                .hub()
                .deliver_annotations(channel, annotations, publisher, report)
        })
    }

    fn load_annotations(
        &self,
        channel: &str,
        last_a: u64,
        stored: Vec<crate::hub::Contribution>,
        announce: bool,
    ) {
        if let Some(gateway) = self.gateway() {
            gateway
                .hub()
                .load_annotations(channel, last_a, stored, announce);
        }
    }

    fn release(&self, key: ConnectionKey) {
        if let Some(gateway) = self.gateway() {
            let store = gateway.session_store().clone();
            tokio::spawn(async move { gateway.sessions().release(key, &*store).await });
        }
    }

    fn apply_revocations(&self, revocations: Vec<Revocation>) {
        if let Some(gateway) = self.gateway() {
            for revocation in revocations {
                gateway.tokens().apply_revocation(revocation);
            }
        }
    }

    fn link_up(&self) {
        if let Some(gateway) = self.gateway() {
            tokio::spawn(gateway.tokens().clone().reload_revocations());
        }
    }

    fn held_here(&self) -> Option<HeldHere> {
        self.gateway()
            .map(|gateway| gateway.sessions().held_here(gateway.hub()))
    }

    fn node_died(&self, node: String) {
        if let Some(gateway) = self.gateway() {
            gateway.report_webhook(Report::NodeDied { node });
        }
    }

    fn members_left(&self, channel: String, events: Vec<PresenceMessage>) {
        if let Some(gateway) = self.gateway() {
            gateway.report_webhook(Report::Presence { channel, events });
        }
    }
}
