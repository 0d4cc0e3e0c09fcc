//! The handshake: a new connection (or a resumed one) gets its id and key and is told CONNECTED.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protocol::{Action, ConnectionDetails, ProtocolMessage};
use rand::distributions::{Alphanumeric, DistString};

use super::{ConnectParams, Connection};
use crate::auth::Principal;
use crate::outbox::Outbox;
use crate::sessions::ConnectionKey;
use crate::Gateway;

impl Connection {
    /// A new connection, or the one `resume=` names if it is still parked; sends CONNECTED.
    pub(super) async fn open(
        gateway: &Gateway,
        principal: Principal,
        params: &ConnectParams,
        outbox: Arc<Outbox>,
    ) -> Connection {
        let mut resumed = None;
        let mut error = None;
        if let Some(old_key) = &params.resume {
            let kind = if params.recovering {
                "recover"
            } else {
                "resume"
            };
            let resumed_here = gateway.sessions().resume(
                old_key,
                principal.identity(),
                &**gateway.session_store(),
            );
            match resumed_here.await {
                Ok(parked) => {
                    ::metrics::counter!("realtime_resumes_total", "kind" => kind, "outcome" => "resumed").increment(1);
                    resumed = Some(parked);
                }
                Err(refusal) => {
                    ::metrics::counter!("realtime_resumes_total", "kind" => kind, "outcome" => "failed").increment(1);
                    error = Some(refusal.into());
                }
            }
        }
        let id: Arc<str> = match &resumed {
            Some(parked) => parked.id.clone(),
            None => Alphanumeric
                .sample_string(&mut rand::thread_rng(), 12)
                .into(),
        };
        let mut connection = Connection {
            // Same connection after a resume, but a fresh key: the old transport's key is spent.
            key: ConnectionKey::new(&id),
            id,
            gateway: gateway.clone(),
            principal,
            echo: params.echo,
            outbox,
            attached: HashMap::new(),
            token_timers: None,
            present_on: HashMap::new(),
            presence_lost: HashSet::new(),
            resume_failed: error.is_some(),
            ended_cleanly: false,
            close_reason: "transport",
            remain_present_for: params.remain_present_for,
            publish_rate: std::sync::Mutex::new(crate::limits::RateBucket::new(
                &gateway.config().limits.connection_publish_rate,
                std::time::Instant::now(),
            )),
            pipeline: Default::default(),
        };
        if let Some(parked) = resumed {
            connection.present_on = parked
                .present_on
                .iter()
                .map(|channel| (channel.clone(), Vec::new()))
                .collect();
            if parked.members_left() {
                // Its members left while it was away: the client must re-sync and re-enter,
                // which it does on an attach without RESUMED.
                connection.presence_lost = std::mem::take(&mut connection.present_on)
                    .into_keys()
                    .collect();
            }
            tracing::debug!(connection_id = %connection.id, "resumed");
        }
        tracing::Span::current().record("id", &*connection.id);
        gateway
            .session_store()
            .record_new(&connection.key, &connection.to_parked())
            .await;
        connection.outbox.reply(&ProtocolMessage {
            error,
            ..connection.connected()
        });
        tracing::debug!(connection_id = %connection.id, "connected");
        connection
    }

    pub(super) fn connected(&self) -> ProtocolMessage {
        let config = self.gateway.config();
        ProtocolMessage {
            connection_id: Some(self.id.to_string()),
            connection_details: Some(ConnectionDetails {
                connection_key: self.key.to_string(),
                client_id: self.principal.client_id.clone(),
                max_message_size: config.limits.max_message_bytes as u64,
                max_frame_size: config.limits.max_frame_bytes as u64,
                max_inbound_rate: 0,
                max_idle_interval: config.timing.max_idle_interval.as_millis() as u64,
                connection_state_ttl: config.timing.connection_state_ttl.as_millis() as u64,
                server_id: self.gateway.server_id().to_owned(),
            }),
            ..ProtocolMessage::new(Action::Connected)
        }
    }
}
