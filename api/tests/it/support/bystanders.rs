//! Bystanders: two well-behaved clients that must notice nothing of what a test does to others.

use serde_json::json;

use super::{full_key, Client, Server, HEARTBEAT, MESSAGE};

/// Two well-behaved clients on the server under test: a subscriber on `bystander` and an
/// unattached publisher. The subscriber must see exactly the bystander publications, in order,
/// whatever else happens on the server.
pub(crate) struct Bystanders {
    subscriber: Client,
    publisher: Client,
    published: Vec<String>,
}

impl Bystanders {
    pub(crate) const CHANNEL: &'static str = "bystander";

    pub(crate) async fn join(server: &Server) -> Bystanders {
        let mut subscriber = server.connect(&full_key("msgpack")).await;
        subscriber.attach(Self::CHANNEL).await;
        let publisher = server.connect(&full_key("json")).await;
        Bystanders {
            subscriber,
            publisher,
            published: Vec::new(),
        }
    }

    pub(crate) async fn publish(&mut self, name: &str) {
        let msg_serial = self.published.len() as u64;
        self.publisher
            .publish_acked(
                Self::CHANNEL,
                msg_serial,
                json!([{"name": name, "data": name}]),
            )
            .await;
        self.published.push(name.to_owned());
    }

    /// Publishes once more, then checks the subscriber got every bystander message and nothing
    /// else.
    pub(crate) async fn assert_undisturbed(mut self) {
        self.publish("after").await;
        for name in &self.published {
            let delivery = self.subscriber.expect(MESSAGE).await;
            assert_eq!(delivery["channel"], Self::CHANNEL, "{delivery}");
            assert_eq!(delivery["messages"][0]["name"], *name, "{delivery}");
        }
        // Still a working connection, with nothing else queued ahead of the reply.
        self.subscriber
            .send(json!({"action": HEARTBEAT, "id": "still-there"}))
            .await;
        let pong = self.subscriber.expect(HEARTBEAT).await;
        assert_eq!(pong["id"], "still-there", "{pong}");
    }
}
