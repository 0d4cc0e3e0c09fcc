use std::sync::Arc;

use axum::extract::ws::Message as WsMessage;
use protocol::message::flags;
use protocol::{Format, Message, ProtocolMessage};
use tokio::sync::mpsc;

use super::*;
use crate::connection::Outbox;

/// Past the default history retention of a message published at t=1.
const AFTER_RETENTION: u64 = 2 + 10 * 60 * 1000;

struct TestSubscriber {
    outbox: Arc<Outbox>,
    queue: mpsc::Receiver<Frame>,
}

fn subscribe(
    hub: &Hub,
    channel: &str,
    connection_id: &str,
    format: Format,
    echo: bool,
    capacity: usize,
) -> TestSubscriber {
    let (outbox, mut queue) = Outbox::new(format, capacity);
    let outbox = Arc::new(outbox);
    hub.attach(
        channel,
        Subscriber {
            connection_id: connection_id.into(),
            channel_name: channel.into(),
            modes: flags::DEFAULT_MODES,
            echo,
            outbox: outbox.clone(),
        },
        &AttachRequest::default(),
        |outcome| ProtocolMessage {
            channel_serial: Some(outcome.channel_serial.clone()),
            ..ProtocolMessage::new(Action::Attached)
        },
    );
    let attached = decode(queue.try_recv().expect("ATTACHED queued"), format);
    assert_eq!(attached.action(), Some(Action::Attached));
    TestSubscriber { outbox, queue }
}

fn decode(frame: Frame, format: Format) -> ProtocolMessage {
    match frame.into_ws() {
        WsMessage::Text(text) => protocol::codec::decode(text.as_bytes(), format).unwrap(),
        WsMessage::Binary(bytes) => protocol::codec::decode(&bytes, format).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

fn buffer_address(frame: &Frame) -> usize {
    match frame.clone().into_ws() {
        WsMessage::Text(text) => text.as_str().as_ptr() as usize,
        WsMessage::Binary(bytes) => bytes.as_ptr() as usize,
        _ => 0,
    }
}

fn publish(hub: &Hub, channel: &str, data: &str, id: Option<&str>, from: Option<&str>) -> Serials {
    hub.publish(Publication {
        channel,
        messages: vec![Message {
            id: id.map(str::to_owned),
            data: Some(protocol::Data::String(data.to_owned())),
            ..Default::default()
        }],
        client_ids: vec![id.is_some()],
        connection_id: from,
        id: None,
        timestamp: 1,
    })
    .unwrap()
}

#[test]
fn one_encoding_per_format_shared_by_every_subscriber() {
    let hub = Hub::default();
    let mut json_a = subscribe(&hub, "c", "a", Format::Json, true, 8);
    let mut json_b = subscribe(&hub, "c", "b", Format::Json, true, 8);
    let mut packed = subscribe(&hub, "c", "m", Format::Msgpack, true, 8);
    publish(&hub, "c", "hello", None, None);
    let (a, b) = (
        json_a.queue.try_recv().unwrap(),
        json_b.queue.try_recv().unwrap(),
    );
    assert_eq!(
        buffer_address(&a),
        buffer_address(&b),
        "JSON subscribers share one buffer"
    );
    let m = packed.queue.try_recv().unwrap();
    assert_ne!(buffer_address(&a), buffer_address(&m));
    for (frame, format) in [(a, Format::Json), (m, Format::Msgpack)] {
        let delivered = decode(frame, format);
        assert_eq!(delivered.channel.as_deref(), Some("c"));
        let message = &delivered.messages.unwrap()[0];
        assert_eq!(message.data, Some(protocol::Data::String("hello".into())));
        assert!(message.serial.is_some());
    }
}

#[test]
fn serials_increase_and_order_is_kept() {
    let hub = Hub::default();
    let mut subscriber = subscribe(&hub, "c", "a", Format::Json, true, 64);
    let serials: Vec<String> = (0..20)
        .map(|i| {
            publish(&hub, "c", &i.to_string(), None, None)[0]
                .clone()
                .unwrap()
        })
        .collect();
    let mut sorted = serials.clone();
    sorted.sort();
    assert_eq!(serials, sorted, "serials sort in publish order");
    for (i, serial) in serials.iter().enumerate() {
        let delivered = decode(subscriber.queue.try_recv().unwrap(), Format::Json);
        assert_eq!(delivered.channel_serial.as_ref(), Some(serial));
        assert_eq!(
            delivered.messages.unwrap()[0].data,
            Some(protocol::Data::String(i.to_string()))
        );
    }
}

#[test]
fn client_ids_are_idempotent() {
    let hub = Hub::default();
    let mut subscriber = subscribe(&hub, "c", "a", Format::Json, true, 8);
    assert!(publish(&hub, "c", "x", Some("same:0"), None)[0].is_some());
    assert_eq!(publish(&hub, "c", "x", Some("same:0"), None), vec![None]);
    assert!(subscriber.queue.try_recv().is_ok());
    assert!(
        subscriber.queue.try_recv().is_err(),
        "duplicate not delivered"
    );
    hub.sweep(1 + IDEMPOTENCY_WINDOW_MS + 1);
    // Window over: the id is fresh again.
    let later = hub
        .publish(Publication {
            channel: "c",
            messages: vec![Message {
                id: Some("same:0".into()),
                ..Default::default()
            }],
            client_ids: vec![true],
            connection_id: None,
            id: None,
            timestamp: 2 + IDEMPOTENCY_WINDOW_MS,
        })
        .unwrap();
    assert!(later[0].is_some());
}

#[test]
fn echo_off_skips_only_the_publisher() {
    let hub = Hub::default();
    let mut quiet = subscribe(&hub, "c", "me", Format::Json, false, 8);
    let mut other = subscribe(&hub, "c", "you", Format::Json, true, 8);
    publish(&hub, "c", "mine", None, Some("me"));
    assert!(quiet.queue.try_recv().is_err());
    assert!(other.queue.try_recv().is_ok());
    publish(&hub, "c", "theirs", None, Some("you"));
    assert!(quiet.queue.try_recv().is_ok());
}

#[test]
fn a_full_queue_ends_that_subscriber_only() {
    let hub = Hub::default();
    let slow = subscribe(&hub, "c", "slow", Format::Json, true, 2);
    let mut fast = subscribe(&hub, "c", "fast", Format::Json, true, 64);
    for i in 0..10 {
        publish(&hub, "c", &i.to_string(), None, None);
    }
    assert!(slow.outbox.is_ending());
    let last_words = decode(slow.outbox.take_last_words().unwrap(), Format::Json);
    assert_eq!(last_words.action(), Some(Action::Disconnected));
    assert_eq!(last_words.error.unwrap().code, 80020);
    assert!(!fast.outbox.is_ending());
    for _ in 0..10 {
        fast.queue.try_recv().unwrap();
    }
}

#[test]
fn idle_channels_are_swept_and_occupancy_counts_modes() {
    let hub = Hub::default();
    let _subscriber = subscribe(&hub, "busy", "a", Format::Json, true, 8);
    publish(&hub, "quiet", "x", None, None);
    assert_eq!(hub.occupancy("busy").subscribers, 1);
    assert_eq!(hub.occupancy("busy").publishers, 1);
    hub.sweep(10);
    assert_eq!(
        hub.channel_count(),
        2,
        "history keeps a channel nobody is attached to"
    );
    hub.sweep(AFTER_RETENTION);
    assert_eq!(
        hub.channel_count(),
        1,
        "once its history has aged out it is gone"
    );
    hub.detach("busy", "a");
    assert_eq!(hub.occupancy("busy").connections, 0);
    hub.sweep(AFTER_RETENTION);
    assert_eq!(hub.channel_count(), 0);
}

#[test]
fn serials_stay_unique_when_a_channel_is_made_again() {
    let hub = Hub::default();
    let first = publish(&hub, "c", "x", None, None);
    hub.sweep(AFTER_RETENTION);
    assert_eq!(hub.channel_count(), 0);
    let second = publish(&hub, "c", "x", None, None);
    assert!(second[0] > first[0], "{second:?} after {first:?}");
}
