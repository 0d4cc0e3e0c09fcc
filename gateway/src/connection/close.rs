//! The end of a connection: why it closed, what it leaves, and what is kept for a resume.

use protocol::ErrorCode;

use super::Connection;
use crate::sessions::Parked;

/// The `realtime_connections_closed_total` reason for an outbox ended with `code`.
pub(super) fn close_reason(code: u32) -> &'static str {
    if code == 0 {
        return "transport";
    }
    match ErrorCode::from_code(code) {
        Some(ErrorCode::SlowConsumer) => "slow_consumer",
        Some(ErrorCode::TokenRevoked | ErrorCode::TokenExpired) => "token_revoked",
        _ => "superseded",
    }
}

impl Connection {
    /// After the read loop: a client that closed leaves presence at once; a dropped one stays
    /// resumable (its members for the presence grace).
    pub(super) fn leave_presence_if_closed(&mut self) {
        if self.ended_cleanly {
            for (channel, entered) in std::mem::take(&mut self.present_on) {
                self.gateway
                    .leave_presence_entered(&channel, &self.id, &entered);
            }
        }
    }

    pub(super) fn park_or_leave(&mut self) {
        if self.ended_cleanly {
            self.leave_presence_if_closed();
            let own_grace = self.remain_present_for.is_some();
            let store = self.gateway.session_store();
            self.gateway.sessions().end(&self.key, own_grace, &**store);
            return;
        }
        let parked = self.to_parked();
        self.present_on.clear();
        let gateway = self.gateway.clone();
        self.gateway.sessions().park(
            self.key.clone(),
            parked,
            self.gateway.session_store().clone(),
            &self.gateway.config().timing,
            move |channel, connection_id| gateway.leave_presence(channel, connection_id),
        );
    }

    /// What another transport (here or, clustered, on another node) needs to resume this
    /// connection.
    pub(super) fn to_parked(&self) -> Parked {
        Parked {
            id: self.id.clone(),
            client_id: self.principal.identity().map(str::to_owned),
            present_on: self.present_on.keys().cloned().collect(),
            members_left: Default::default(),
            presence_grace: self.remain_present_for,
        }
    }

    /// Clustered: (re)writes this live connection's resume record, so another node can resume
    /// it even if this one dies.
    pub(super) fn record_for_resume(&self) {
        self.gateway
            .session_store()
            .record(&self.key, &self.to_parked(), false);
    }

    pub(super) fn leave_channels(&mut self) {
        ::metrics::gauge!("realtime_channels_attached").decrement(self.attached.len() as f64);
        self.gateway
            .hub()
            .pulse()
            .attachments_changed(-(self.attached.len() as i64));
        for attachment in self.attached.values() {
            self.gateway
                .hub()
                .detach(&attachment.base, &attachment.slot);
            self.gateway.leave_channel(&attachment.base);
        }
        self.attached.clear();
    }
}
