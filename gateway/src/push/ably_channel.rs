//! Ably's test transport, `transportType: "ablyChannel"`: the notification is published as a
//! message named `__ably_push__` (data: the payload as a JSON string) on the recipient's
//! `channel`, with its `ablyKey`, which is how Ably's SDK suites see a push arrive. We publish
//! through our own publisher rather than to `ablyUrl`: the key names one of our apps.

use std::sync::{Arc, Weak};
use std::time::Duration;

use protocol::{ChannelName, Data, Message};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dispatch::{PushJob, PushRefused, PushTransport};
use crate::auth::Auth;
use crate::publish::{Origin, Publisher};

pub(crate) const TRANSPORT_TYPE: &str = "ablyChannel";

/// The message name Ably's SDKs subscribe to.
const MESSAGE_NAME: &str = "__ably_push__";

/// Jobs waiting to be published; past this the transport refuses (`PushRefused::Full`).
const QUEUE_JOBS: usize = 1024;

/// How long after it is handed over a notification is published: Ably's push pipeline never
/// delivers at once, and SDK suites rely on it. ably-js's `push_channel_subscription_*` tests
/// subscribe to the inbox without waiting for its attach and publish at once; delivered in under
/// a millisecond, the notification beat the attach in about 1 run of 15. Jobs keep their order,
/// and the delay does not add up: each is due this long after it arrived.
const DELIVERY_LATENCY: Duration = Duration::from_millis(100);

pub(crate) struct AblyChannel {
    queue: mpsc::Sender<(Instant, PushJob)>,
}

impl AblyChannel {
    /// Starts the publishing task; it ends when the gateway (its publisher) goes.
    pub(crate) fn start(publisher: Weak<Publisher>, auth: Arc<Auth>) -> AblyChannel {
        let (queue, mut jobs) = mpsc::channel::<(Instant, PushJob)>(QUEUE_JOBS);
        tokio::spawn(async move {
            while let Some((arrived, job)) = jobs.recv().await {
                tokio::time::sleep_until(arrived + DELIVERY_LATENCY).await;
                let Some(publisher) = publisher.upgrade() else {
                    return;
                };
                if let Err(error) = deliver(&publisher, &auth, job).await {
                    ::metrics::counter!("realtime_push_dropped_total", "reason" => "ably_channel")
                        .increment(1);
                    tracing::warn!(%error, "ablyChannel push not published");
                }
            }
        });
        AblyChannel { queue }
    }
}

impl PushTransport for AblyChannel {
    fn accepts(&self, recipient: &serde_json::Value) -> Result<(), PushRefused> {
        self::recipient(recipient).map(|_| ())
    }

    fn send(&self, job: PushJob) -> Result<(), PushRefused> {
        recipient(&job.recipient)?;
        self.queue
            .try_send((Instant::now(), job))
            .map_err(|_| PushRefused::Full)
    }
}

/// The recipient's channel and key; both required.
fn recipient(recipient: &serde_json::Value) -> Result<(&str, &str), PushRefused> {
    let field = |name: &str| {
        recipient
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PushRefused::InvalidRecipient(format!("ablyChannel needs {name}")))
    };
    Ok((field("channel")?, field("ablyKey")?))
}

async fn deliver(publisher: &Publisher, auth: &Auth, job: PushJob) -> Result<(), String> {
    let (channel, key) = recipient(&job.recipient).map_err(|e| e.to_string())?;
    let principal = auth.verify_key(key).map_err(|e| e.to_string())?;
    let channel = ChannelName::parse(channel).map_err(|e| e.message)?;
    let message = Message {
        name: Some(MESSAGE_NAME.to_owned()),
        data: Some(Data::String(job.payload.to_string())),
        ..Default::default()
    };
    publisher
        .publish(&principal, &channel, vec![message], Origin::Rest)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
