//! Batching and conflation, driven by hand: `flush_batches` after moving the due time.

use protocol::message::message_action;

use super::*;
use crate::config::{Batching, ChannelRules, ConflationKey};

const INTERVAL: Duration = Duration::from_secs(3600);

fn hub(conflate: Option<ConflationKey>) -> Hub {
    let mut config = HubConfig::default();
    let rules = ChannelRules {
        retention: config.retention,
        batching: Some(Batching {
            interval: INTERVAL,
            conflate,
        }),
        ..ChannelRules::default()
    };
    config.namespace_rules.push(("room".into(), rules));
    Hub::new(config)
}

/// Makes every waiting batch due, then flushes.
fn flush_now(hub: &Hub, channel: &str) {
    hub.with_channel(channel, |state| {
        if let Some(pending) = &mut state.pending {
            pending.due_ms = 0;
        }
    });
    hub.flush_batches();
}

fn named(name: &str, data: &str) -> Message {
    Message {
        name: Some(name.into()),
        data: Some(protocol::Data::String(data.into())),
        timestamp: Some(protocol::now_ms()),
        ..Message::default()
    }
}

fn publish_named(hub: &Hub, channel: &str, message: Message, from: Option<&str>) -> String {
    hub.publish(Publication {
        channel,
        messages: vec![message],
        client_ids: vec![false],
        connection_id: from,
        id: None,
        timestamp: protocol::now_ms(),
    })
    .unwrap()[0]
        .clone()
        .unwrap()
}

#[test]
fn messages_within_the_interval_go_out_as_one_frame_after_it_in_order() {
    let hub = hub(None);
    let mut viewer = subscribe(&hub, "room:1", "viewer", Format::Json, true, 64);
    let serials: Vec<String> = (0..5)
        .map(|n| publish_now(&hub, "room:1", &n.to_string()))
        .collect();
    hub.flush_batches();
    assert!(drain(&mut viewer).is_empty(), "nothing before the interval");

    flush_now(&hub, "room:1");
    let frames = drain(&mut viewer);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(datas(&frames), ["0", "1", "2", "3", "4"]);
    assert_eq!(frames[0].channel_serial.as_ref(), serials.last());
    flush_now(&hub, "room:1");
    assert!(drain(&mut viewer).is_empty(), "sent once");
}

#[test]
fn stored_at_once_delivered_later() {
    let hub = hub(None);
    let _viewer = subscribe(&hub, "room:1", "viewer", Format::Json, true, 64);
    let serial = publish_now(&hub, "room:1", "kept");
    assert_eq!(
        hub.message("room:1", &serial).unwrap().serial.as_ref(),
        Some(&serial)
    );
}

#[test]
fn an_attach_sends_what_is_pending_first_and_never_twice() {
    let hub = hub(None);
    let mut first = subscribe(&hub, "room:1", "first", Format::Json, true, 64);
    publish_now(&hub, "room:1", "a");
    publish_now(&hub, "room:1", "b");
    let outbox = Arc::new(Outbox::new(Format::Json, budget(64)));
    let later = subscriber("room:1", "later", Modes::DEFAULT, true, outbox);
    let request = AttachRequest {
        rewind: Some(Rewind::Messages(10)),
        ..AttachRequest::default()
    };
    let (mut later, _) = attach_subscriber(&hub, "room:1", later, &request);
    assert_eq!(
        datas(&drain(&mut first)),
        ["a", "b"],
        "flushed by the attach"
    );
    assert_eq!(datas(&drain(&mut later)), ["a", "b"], "the rewind, once");
    publish_now(&hub, "room:1", "c");
    flush_now(&hub, "room:1");
    assert_eq!(datas(&drain(&mut first)), ["c"]);
    assert_eq!(datas(&drain(&mut later)), ["c"]);
}

#[test]
fn echo_off_publishers_do_not_get_their_own_messages_back() {
    let hub = hub(None);
    let mut quiet = subscribe(&hub, "room:1", "quiet", Format::Json, false, 64);
    let mut other = subscribe(&hub, "room:1", "other", Format::Json, true, 64);
    let from = |connection: &str, data: &str| Message {
        connection_id: Some(connection.into()),
        ..named("m", data)
    };
    publish_named(&hub, "room:1", from("quiet", "mine"), Some("quiet"));
    publish_named(&hub, "room:1", from("other", "theirs"), Some("other"));
    flush_now(&hub, "room:1");
    assert_eq!(datas(&drain(&mut quiet)), ["theirs"]);
    assert_eq!(datas(&drain(&mut other)), ["mine", "theirs"]);
}

#[test]
fn conflation_keeps_the_latest_per_key_in_place_and_messages_without_a_key() {
    let hub = hub(Some(ConflationKey::Header("market".into())));
    let mut viewer = subscribe(&hub, "room:1", "viewer", Format::Json, true, 64);
    let priced = |market: &str, price: &str| Message {
        extras: Some(serde_json::json!({"headers": {"market": market}})),
        ..named("price", price)
    };
    publish_named(&hub, "room:1", priced("eur", "1"), None);
    publish_named(&hub, "room:1", priced("usd", "2"), None);
    publish_named(&hub, "room:1", named("note", "no key"), None);
    let last = publish_named(&hub, "room:1", priced("eur", "3"), None);
    flush_now(&hub, "room:1");
    let frames = drain(&mut viewer);
    assert_eq!(datas(&frames), ["2", "no key", "3"]);
    assert_eq!(frames[0].channel_serial.as_ref(), Some(&last));
    assert_eq!(
        hub.history(
            "room:1",
            &crate::hub::HistoryQuery {
                limit: 10,
                ..Default::default()
            }
        )
        .len(),
        4,
        "history keeps every message"
    );
}

#[test]
fn conflation_by_name() {
    let hub = hub(Some(ConflationKey::Name));
    let mut viewer = subscribe(&hub, "room:1", "viewer", Format::Json, true, 64);
    for (name, data) in [("a", "1"), ("b", "2"), ("a", "3")] {
        publish_named(&hub, "room:1", named(name, data), None);
    }
    flush_now(&hub, "room:1");
    assert_eq!(datas(&drain(&mut viewer)), ["2", "3"]);
}

#[test]
fn operations_on_one_message_go_out_as_its_latest_view() {
    let hub = hub(None);
    let mut viewer = subscribe(&hub, "room:1", "viewer", Format::Json, true, 64);
    let serial = publish_named(&hub, "room:1", named("answer", "Hel"), None);
    flush_now(&hub, "room:1");
    drain(&mut viewer);
    for more in ["lo", " World"] {
        let append = Message {
            action: Some(message_action::APPEND),
            serial: Some(serial.clone()),
            data: Some(protocol::Data::String(more.into())),
            version: Some(Default::default()),
            ..Message::default()
        };
        publish_named(&hub, "room:1", append, None);
    }
    flush_now(&hub, "room:1");
    let frames = drain(&mut viewer);
    let messages = frames[0].messages.as_ref().unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].action, Some(message_action::UPDATE));
    assert_eq!(datas(&frames), ["Hello World"]);
}

#[test]
fn a_batch_holds_at_most_two_hundred_messages_per_frame() {
    let hub = hub(None);
    let mut viewer = subscribe(&hub, "room:1", "viewer", Format::Json, true, 1024);
    let serials: Vec<String> = (0..450)
        .map(|n| publish_now(&hub, "room:1", &n.to_string()))
        .collect();
    flush_now(&hub, "room:1");
    let frames = drain(&mut viewer);
    let sizes: Vec<usize> = frames
        .iter()
        .map(|f| f.messages.as_ref().unwrap().len())
        .collect();
    assert_eq!(sizes, [200, 200, 50]);
    assert_eq!(frames[0].channel_serial.as_ref(), Some(&serials[199]));
    assert_eq!(frames[2].channel_serial.as_ref(), serials.last());
}
