use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use protocol::message::flags;
use protocol::{Action, Format, Message, ProtocolMessage};

use super::*;
use crate::connection::{Outbox, Receiver};
use crate::frame::Frame;

/// Past the default history retention of a message published at t=1.
const AFTER_RETENTION: u64 = 2 + 10 * 60 * 1000;

struct TestSubscriber {
    outbox: Arc<Outbox>,
    queue: Receiver,
}

/// Room for `frames` frames of up to 64 KiB before a subscriber counts as slow.
fn budget(frames: usize) -> crate::limits::OutboundQueue {
    crate::limits::OutboundQueue {
        bytes: frames * 64 * 1024,
        ..Default::default()
    }
}

fn subscribe(
    hub: &Hub,
    channel: &str,
    connection_id: &str,
    format: Format,
    echo: bool,
    capacity: usize,
) -> TestSubscriber {
    let outbox = Arc::new(Outbox::new(format, budget(capacity)));
    let mut queue = outbox.receiver();
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
    // No room beyond the one delivery a queue always takes.
    let slow = subscribe(&hub, "c", "slow", Format::Json, true, 0);
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

// Continuity: serial order, retention, rewind, resume from a channelSerial, presence SYNC paging,
// presence batching and the member cap.

use std::collections::{BTreeSet, HashMap as Map};

use protocol::{ErrorInfo, PresenceMessage};

fn hub_with(configure: impl FnOnce(&mut HubConfig)) -> Hub {
    let mut config = HubConfig::default();
    configure(&mut config);
    Hub::new(config)
}

/// A message stamped as `Gateway::publish` stamps them: the log ages messages by their own
/// timestamp.
fn text_message(data: &str, timestamp: u64) -> Message {
    Message {
        data: Some(protocol::Data::String(data.to_owned())),
        timestamp: Some(timestamp),
        ..Default::default()
    }
}

/// Publishes one message stamped `timestamp` (ms since the Unix epoch); returns its serial.
fn publish_stamped(hub: &Hub, channel: &str, data: &str, timestamp: u64) -> String {
    hub.publish(Publication {
        channel,
        messages: vec![text_message(data, timestamp)],
        client_ids: vec![false],
        connection_id: None,
        id: None,
        timestamp,
    })
    .unwrap()[0]
        .clone()
        .expect("a fresh message gets a serial")
}

/// Attach and history read the wall clock, so logs they look at are stamped with it.
fn publish_now(hub: &Hub, channel: &str, data: &str) -> String {
    publish_stamped(hub, channel, data, protocol::now_ms())
}

/// Attaches with `request`; returns the subscriber and its ATTACHED, whose `flags` are the modes
/// plus the outcome's flags (as the connection builds it).
fn attach_as(
    hub: &Hub,
    channel: &str,
    connection_id: &str,
    modes: u64,
    request: &AttachRequest,
    capacity: usize,
) -> (TestSubscriber, ProtocolMessage) {
    let outbox = Arc::new(Outbox::new(Format::Json, budget(capacity)));
    let mut queue = outbox.receiver();
    hub.attach(
        channel,
        Subscriber {
            connection_id: connection_id.into(),
            channel_name: channel.into(),
            modes,
            echo: true,
            outbox: outbox.clone(),
        },
        request,
        |outcome| ProtocolMessage {
            channel: Some(channel.to_owned()),
            flags: Some(modes | outcome.flags),
            channel_serial: Some(outcome.channel_serial.clone()),
            error: outcome.error.clone(),
            ..ProtocolMessage::new(Action::Attached)
        },
    );
    let attached = decode(
        queue.try_recv().expect("ATTACHED queued first"),
        Format::Json,
    );
    assert_eq!(attached.action(), Some(Action::Attached), "{attached:?}");
    (TestSubscriber { outbox, queue }, attached)
}

fn resume_from(serial: &str) -> AttachRequest {
    AttachRequest {
        channel_serial: Some(serial.to_owned()),
        rewind: None,
        resume_allowed: true,
        presence_lost: false,
    }
}

fn rewind(rewind: Rewind) -> AttachRequest {
    AttachRequest {
        rewind: Some(rewind),
        ..Default::default()
    }
}

/// Everything queued for the subscriber so far, decoded.
fn drain(subscriber: &mut TestSubscriber) -> Vec<ProtocolMessage> {
    let mut frames = Vec::new();
    while let Ok(frame) = subscriber.queue.try_recv() {
        frames.push(decode(frame, Format::Json));
    }
    frames
}

fn data_of(message: &Message) -> String {
    match &message.data {
        Some(protocol::Data::String(text)) => text.clone(),
        other => panic!("expected text data, got {other:?}"),
    }
}

/// The data of every message in `frames`, which must all be MESSAGE frames.
fn datas(frames: &[ProtocolMessage]) -> Vec<String> {
    frames
        .iter()
        .flat_map(|frame| {
            assert_eq!(frame.action(), Some(Action::Message), "{frame:?}");
            frame.messages.as_deref().unwrap_or_default()
        })
        .map(data_of)
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn range(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| i.to_string()).collect()
}

fn history_data(hub: &Hub, channel: &str) -> Vec<String> {
    let query = HistoryQuery {
        limit: 10_000,
        ..Default::default()
    };
    hub.history(channel, &query)
        .iter()
        .map(|m| data_of(m))
        .collect()
}

fn has_flag(attached: &ProtocolMessage, flag: u64) -> bool {
    attached.flags.unwrap_or(0) & flag != 0
}

/// `{epoch:012x}-{n:010x}` split into its two numbers.
fn serial_parts(serial: &str) -> (u64, u64) {
    assert!(log::is_serial(serial), "not one of our serials: {serial:?}");
    let (epoch, n) = serial.split_once('-').unwrap();
    (
        u64::from_str_radix(epoch, 16).unwrap(),
        u64::from_str_radix(n, 16).unwrap(),
    )
}

#[test]
fn serials_are_consecutive_and_strictly_increasing_per_channel() {
    let hub = Hub::default();
    let now = protocol::now_ms();
    let mut by_channel: Map<&str, Vec<String>> = Map::new();
    for round in 0..30 {
        for channel in ["a", "b", "ns:c"] {
            let n_messages = 1 + round % 3;
            let serials = hub
                .publish(Publication {
                    channel,
                    messages: (0..n_messages).map(|_| text_message("x", now)).collect(),
                    client_ids: vec![false; n_messages],
                    connection_id: None,
                    id: None,
                    timestamp: now,
                })
                .unwrap();
            assert_eq!(serials.len(), n_messages);
            by_channel
                .entry(channel)
                .or_default()
                .extend(serials.into_iter().map(|s| s.expect("serial")));
        }
    }
    let mut epochs = BTreeSet::new();
    for (channel, serials) in &by_channel {
        for pair in serials.windows(2) {
            assert!(pair[0] < pair[1], "{channel}: {} then {}", pair[0], pair[1]);
        }
        let parts: Vec<(u64, u64)> = serials.iter().map(|s| serial_parts(s)).collect();
        let epoch = parts[0].0;
        assert!(
            parts.iter().all(|(e, _)| *e == epoch),
            "{channel}: one epoch per incarnation: {serials:?}"
        );
        let counters: Vec<u64> = parts.iter().map(|(_, n)| *n).collect();
        let expected: Vec<u64> = (1..=serials.len() as u64).collect();
        assert_eq!(counters, expected, "{channel}: consecutive from 1");
        epochs.insert(epoch);
    }
    assert_eq!(epochs.len(), 3, "every channel has its own epoch");
}

#[test]
fn duplicates_do_not_use_up_a_serial() {
    let hub = Hub::default();
    let first = publish(&hub, "c", "x", Some("dup:0"), None)[0]
        .clone()
        .unwrap();
    assert_eq!(publish(&hub, "c", "x", Some("dup:0"), None), vec![None]);
    let next = publish(&hub, "c", "y", None, None)[0].clone().unwrap();
    assert_eq!(serial_parts(&next).1, serial_parts(&first).1 + 1);
}

#[test]
fn concurrent_publishers_are_delivered_in_serial_order() {
    const THREADS: usize = 4;
    const EACH: usize = 500;
    let hub = Hub::default();
    let mut subscriber = subscribe(&hub, "c", "s", Format::Json, true, THREADS * EACH + 8);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let hub = &hub;
            scope.spawn(move || {
                for i in 0..EACH {
                    publish_now(hub, "c", &format!("{thread}:{i}"));
                }
            });
        }
    });
    let frames = drain(&mut subscriber);
    assert_eq!(frames.len(), THREADS * EACH);
    let serials: Vec<&str> = frames
        .iter()
        .map(|f| f.channel_serial.as_deref().expect("channelSerial"))
        .collect();
    for pair in serials.windows(2) {
        assert!(pair[0] < pair[1], "delivered out of serial order: {pair:?}");
    }
    let mut next = [0usize; THREADS];
    for data in datas(&frames) {
        let (thread, i) = data.split_once(':').unwrap();
        let thread: usize = thread.parse().unwrap();
        assert_eq!(i, next[thread].to_string(), "publisher {thread} reordered");
        next[thread] += 1;
    }
}

#[test]
fn the_log_keeps_at_most_max_messages() {
    let hub = hub_with(|c| c.retention.max_messages = 5);
    for i in 0..12 {
        publish_now(&hub, "c", &i.to_string());
    }
    assert_eq!(
        history_data(&hub, "c"),
        strings(&["11", "10", "9", "8", "7"])
    );
}

#[test]
fn the_log_drops_messages_older_than_max_age() {
    let hub = hub_with(|c| {
        c.retention = Retention {
            max_messages: 1000,
            max_age: Duration::from_secs(60),
        }
    });
    let now = protocol::now_ms();
    publish_stamped(&hub, "c", "ancient", now - 100_000);
    publish_stamped(&hub, "c", "old", now - 50_000);
    publish_stamped(&hub, "c", "recent", now - 10_000);
    assert_eq!(
        history_data(&hub, "c"),
        strings(&["recent", "old"]),
        "'ancient' is past the 60 s max age"
    );
    // 20 s on, "old" is 70 s old.
    hub.sweep(now + 20_000);
    assert_eq!(history_data(&hub, "c"), strings(&["recent"]));
    // A minute on, "recent" has gone too, and with it the channel.
    hub.sweep(now + 60_000);
    assert!(history_data(&hub, "c").is_empty());
    assert_eq!(hub.channel_count(), 0);
}

#[test]
fn namespace_retention_overrides_the_default() {
    let hub = hub_with(|c| {
        c.retention = Retention {
            max_messages: 3,
            max_age: Duration::from_secs(10 * 60),
        };
        c.namespace_retention = vec![(
            "payments".into(),
            Retention {
                max_messages: 50,
                max_age: Duration::from_secs(3600),
            },
        )];
    });
    let twenty_minutes_ago = protocol::now_ms() - 20 * 60 * 1000;
    for channel in ["payments:eu", "chat:eu", "paymentsx:eu"] {
        publish_stamped(&hub, channel, "early", twenty_minutes_ago);
        for i in 0..10 {
            publish_now(&hub, channel, &i.to_string());
        }
    }
    let payments = history_data(&hub, "payments:eu");
    assert_eq!(
        payments.len(),
        11,
        "payments keeps 50 for an hour: {payments:?}"
    );
    assert_eq!(payments.last().map(String::as_str), Some("early"));
    assert_eq!(history_data(&hub, "chat:eu"), strings(&["9", "8", "7"]));
    assert_eq!(
        history_data(&hub, "paymentsx:eu"),
        strings(&["9", "8", "7"]),
        "a namespace matches whole, not as a prefix"
    );
}

#[test]
fn a_channel_named_like_the_namespace_is_in_it() {
    // Ably: "If the channel name contains no colon, the namespace is the entire channel name."
    let hub = hub_with(|c| {
        c.retention.max_messages = 3;
        c.namespace_retention = vec![(
            "payments".into(),
            Retention {
                max_messages: 50,
                max_age: Duration::from_secs(3600),
            },
        )];
    });
    for i in 0..10 {
        publish_now(&hub, "payments", &i.to_string());
    }
    assert_eq!(history_data(&hub, "payments").len(), 10);
}

#[test]
fn rewind_by_count_replays_the_last_messages_then_goes_live() {
    let hub = Hub::default();
    for i in 0..10 {
        publish_now(&hub, "c", &i.to_string());
    }
    let (mut late, attached) = attach_as(
        &hub,
        "c",
        "late",
        flags::DEFAULT_MODES,
        &rewind(Rewind::Messages(3)),
        64,
    );
    assert!(has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
    assert!(!has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert_eq!(datas(&drain(&mut late)), range(7, 10));
    publish_now(&hub, "c", "live");
    assert_eq!(datas(&drain(&mut late)), strings(&["live"]));
}

#[test]
fn rewind_by_duration_replays_what_is_younger() {
    let hub = Hub::default();
    let now = protocol::now_ms();
    for (data, age_s) in [("a", 90), ("b", 40), ("c", 20), ("d", 5)] {
        publish_stamped(&hub, "c", data, now - age_s * 1000);
    }
    let (mut late, attached) = attach_as(
        &hub,
        "c",
        "late",
        flags::DEFAULT_MODES,
        &rewind(Rewind::Duration(Duration::from_secs(30))),
        64,
    );
    assert!(has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
    assert_eq!(datas(&drain(&mut late)), strings(&["c", "d"]));
}

#[test]
fn rewind_is_capped_by_max_rewind() {
    let hub = hub_with(|c| c.max_rewind = 4);
    for i in 0..10 {
        publish_now(&hub, "c", &i.to_string());
    }
    for (connection, request) in [
        ("count", rewind(Rewind::Messages(50))),
        (
            "duration",
            rewind(Rewind::Duration(Duration::from_secs(3600))),
        ),
    ] {
        let (mut late, attached) =
            attach_as(&hub, "c", connection, flags::DEFAULT_MODES, &request, 64);
        assert!(has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
        assert_eq!(
            datas(&drain(&mut late)),
            range(6, 10),
            "{connection}: the newest max_rewind messages"
        );
    }
}

#[test]
fn rewind_on_an_empty_channel_has_no_backlog() {
    let hub = Hub::default();
    let (mut late, attached) = attach_as(
        &hub,
        "c",
        "late",
        flags::DEFAULT_MODES,
        &rewind(Rewind::Messages(10)),
        64,
    );
    assert!(!has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
    assert!(drain(&mut late).is_empty());
}

#[test]
fn resume_replays_exactly_the_messages_after_the_channel_serial() {
    let hub = Hub::default();
    let (mut subscriber, _) = attach_as(
        &hub,
        "c",
        "conn",
        flags::DEFAULT_MODES,
        &AttachRequest::default(),
        64,
    );
    publish_now(&hub, "c", "0");
    publish_now(&hub, "c", "1");
    let seen = drain(&mut subscriber);
    assert_eq!(datas(&seen), range(0, 2));
    let last_seen = seen[1].channel_serial.clone().unwrap();
    // The transport drops; the connection leaves the channel; messages go on.
    hub.detach("c", "conn");
    let missed: Vec<String> = (2..6)
        .map(|i| publish_now(&hub, "c", &i.to_string()))
        .collect();

    let (mut resumed, attached) = attach_as(
        &hub,
        "c",
        "conn",
        flags::DEFAULT_MODES,
        &resume_from(&last_seen),
        64,
    );
    assert!(has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert!(!has_flag(&attached, flags::HAS_BACKLOG), "{attached:?}");
    assert!(attached.error.is_none(), "{attached:?}");
    // Clients keep the channelSerial of every ATTACHED (ably-js RTL15b): one whose transport dies
    // before the replay is read resumes from it, so it must not be past anything replayed.
    let attached_serial = attached.channel_serial.clone().expect("channelSerial");
    assert!(
        attached_serial < missed[0],
        "ATTACHED says {attached_serial}, past the replay that starts at {}",
        missed[0]
    );
    let replay = drain(&mut resumed);
    assert_eq!(
        datas(&replay),
        range(2, 6),
        "exactly the missed ones, in order"
    );
    let replay_serials: Vec<String> = replay
        .iter()
        .flat_map(|f| f.messages.clone().unwrap_or_default())
        .map(|m| m.serial.expect("serial"))
        .collect();
    assert_eq!(replay_serials, missed);
    for frame in &replay {
        let last = frame
            .messages
            .as_ref()
            .and_then(|m| m.last()?.serial.clone());
        assert_eq!(
            frame.channel_serial, last,
            "a frame's channelSerial is its last message's"
        );
    }
    publish_now(&hub, "c", "6");
    assert_eq!(
        datas(&drain(&mut resumed)),
        strings(&["6"]),
        "then live, once"
    );
}

#[test]
fn resume_from_the_newest_serial_replays_nothing() {
    let hub = Hub::default();
    let newest = (0..3)
        .map(|i| publish_now(&hub, "c", &i.to_string()))
        .last()
        .unwrap();
    let (mut resumed, attached) = attach_as(
        &hub,
        "c",
        "conn",
        flags::DEFAULT_MODES,
        &resume_from(&newest),
        64,
    );
    assert!(has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert!(drain(&mut resumed).is_empty());
}

#[test]
fn resume_from_the_start_of_an_empty_channel_is_kept() {
    let hub = Hub::default();
    let (_, first) = attach_as(
        &hub,
        "c",
        "conn",
        flags::DEFAULT_MODES,
        &AttachRequest::default(),
        64,
    );
    hub.detach("c", "conn");
    publish_now(&hub, "c", "while away");
    let position = first.channel_serial.unwrap();
    let (mut resumed, attached) = attach_as(
        &hub,
        "c",
        "conn",
        flags::DEFAULT_MODES,
        &resume_from(&position),
        64,
    );
    assert!(has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert_eq!(datas(&drain(&mut resumed)), strings(&["while away"]));
}

fn assert_refused(attached: &ProtocolMessage, context: &str) {
    assert!(
        !has_flag(attached, flags::RESUMED),
        "{context}: no RESUMED: {attached:?}"
    );
    assert_eq!(
        attached.error.as_ref().map(|e| e.code),
        Some(90003),
        "{context}: continuity loss is explained: {attached:?}"
    );
}

#[test]
fn resume_is_refused_when_the_connection_resume_failed() {
    let hub = Hub::default();
    let serial = publish_now(&hub, "c", "0");
    publish_now(&hub, "c", "1");
    let request = AttachRequest {
        resume_allowed: false,
        ..resume_from(&serial)
    };
    let (mut subscriber, attached) =
        attach_as(&hub, "c", "conn", flags::DEFAULT_MODES, &request, 64);
    assert_refused(&attached, "resume not allowed");
    assert!(drain(&mut subscriber).is_empty(), "no replay");
}

#[test]
fn resume_from_an_evicted_serial_is_refused_with_90003_and_no_replay() {
    let hub = hub_with(|c| c.retention.max_messages = 3);
    let serials: Vec<String> = (0..10)
        .map(|i| publish_now(&hub, "c", &i.to_string()))
        .collect();
    // The log holds 7, 8 and 9; 6 was the last evicted, so a client that saw 6 missed nothing
    // the log lacks, while one that saw only 5 missed 6.
    let (mut covered, attached) = attach_as(
        &hub,
        "c",
        "saw-6",
        flags::DEFAULT_MODES,
        &resume_from(&serials[6]),
        64,
    );
    assert!(has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert_eq!(datas(&drain(&mut covered)), range(7, 10));

    for seen in [5, 2, 0] {
        let connection = format!("saw-{seen}");
        let (mut refused, attached) = attach_as(
            &hub,
            "c",
            &connection,
            flags::DEFAULT_MODES,
            &resume_from(&serials[seen]),
            64,
        );
        assert_refused(&attached, &connection);
        assert!(drain(&mut refused).is_empty(), "{connection}: no replay");
        publish_now(&hub, "c", "live");
        assert_eq!(
            datas(&drain(&mut refused)),
            strings(&["live"]),
            "{connection}: live from now on"
        );
    }
}

#[test]
fn resume_from_a_serial_that_aged_out_is_refused() {
    let hub = Hub::default();
    let now = protocol::now_ms();
    let eleven_minutes_ago = now - 11 * 60 * 1000;
    let expired = publish_stamped(&hub, "c", "expired", eleven_minutes_ago);
    publish_stamped(&hub, "c", "expired too", eleven_minutes_ago + 1);
    publish_now(&hub, "c", "fresh");
    let (mut subscriber, attached) = attach_as(
        &hub,
        "c",
        "conn",
        flags::DEFAULT_MODES,
        &resume_from(&expired),
        64,
    );
    assert_refused(&attached, "a message after it aged out of the log");
    assert!(drain(&mut subscriber).is_empty());
}

#[test]
fn unusable_channel_serials_are_not_resumed() {
    let hub = Hub::default();
    let before = publish_now(&hub, "before", "x");
    let serials: Vec<String> = (0..3)
        .map(|i| publish_now(&hub, "c", &i.to_string()))
        .collect();
    let after = publish_now(&hub, "after", "x");
    let (epoch, n) = serial_parts(&serials[2]);
    let future = format!("{epoch:012x}-{:010x}", n + 5);
    let candidates = [
        ("garbage", "garbage".to_owned()),
        ("empty", String::new()),
        ("upper-case hex", serials[0].to_uppercase()),
        ("trailing junk", format!("{}x", serials[0])),
        ("truncated", serials[0][..20].to_owned()),
        ("from the future", future),
        ("the largest serial", "ffffffffffff-ffffffffff".to_owned()),
        ("another channel's, older", before),
        ("another channel's, newer", after),
        ("a sync cursor", "abcdefgh:1".to_owned()),
    ];
    for (what, serial) in candidates {
        let (mut subscriber, attached) = attach_as(
            &hub,
            "c",
            what,
            flags::DEFAULT_MODES,
            &resume_from(&serial),
            64,
        );
        assert_refused(&attached, what);
        assert!(drain(&mut subscriber).is_empty(), "{what}: no replay");
    }
}

#[test]
fn across_a_sweep_resume_is_kept_only_where_nothing_was_lost() {
    let hub = Hub::default();
    // An old incarnation whose two messages age out, after which the idle channel is swept.
    let first = publish_stamped(&hub, "c", "first", 1);
    let last = publish_stamped(&hub, "c", "last", 2);
    hub.sweep(AFTER_RETENTION + 1);
    assert_eq!(hub.channel_count(), 0);
    let next = publish_now(&hub, "c", "new incarnation");
    // The channel goes on where it left off: a reader of serials sees no gap and no restart.
    assert_eq!(Some(next.clone()), log::next(&last), "{last} then {next}");

    // A client that saw the old incarnation's last message missed only what the new one holds.
    let (mut saw_last, attached) = attach_as(
        &hub,
        "c",
        "saw-last",
        flags::DEFAULT_MODES,
        &resume_from(&last),
        64,
    );
    assert!(has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert_eq!(datas(&drain(&mut saw_last)), strings(&["new incarnation"]));
    // One that saw only the first missed "last", which aged out: continuity cannot be kept.
    let (mut saw_first, attached) = attach_as(
        &hub,
        "c",
        "saw-first",
        flags::DEFAULT_MODES,
        &resume_from(&first),
        64,
    );
    assert_refused(&attached, "a message after it aged out before the sweep");
    assert!(drain(&mut saw_first).is_empty());
}

#[test]
fn a_serial_from_a_long_gone_incarnation_is_refused() {
    let hub = Hub::default();
    let old = publish_stamped(&hub, "c", "old incarnation", 1);
    hub.sweep(AFTER_RETENTION);
    assert_eq!(hub.channel_count(), 0);
    // A day later whatever was remembered of the old incarnation is gone too.
    hub.sweep(AFTER_RETENTION + 24 * 60 * 60 * 1000);
    publish_now(&hub, "c", "new incarnation");
    let (mut subscriber, attached) = attach_as(
        &hub,
        "c",
        "conn",
        flags::DEFAULT_MODES,
        &resume_from(&old),
        64,
    );
    assert_refused(&attached, "an old incarnation's serial");
    assert!(drain(&mut subscriber).is_empty());
}

fn presence_event(action: u8, client_id: &str, connection_id: &str) -> PresenceMessage {
    PresenceMessage {
        id: Some(format!("{connection_id}:0:0")),
        action,
        client_id: Some(client_id.to_owned()),
        connection_id: Some(connection_id.to_owned()),
        timestamp: Some(protocol::now_ms()),
        ..Default::default()
    }
}

fn enter(hub: &Hub, channel: &str, client_id: &str, connection_id: &str) -> Result<(), ErrorInfo> {
    hub.presence(
        channel,
        vec![presence_event(presence::ENTER, client_id, connection_id)],
    )
}

fn member_keys(hub: &Hub, channel: &str) -> BTreeSet<(String, String)> {
    hub.presence_members(channel)
        .into_iter()
        .map(|m| (m.client_id.unwrap(), m.connection_id.unwrap()))
        .collect()
}

#[test]
fn sync_pages_hold_sync_page_members_each_and_cover_every_member() {
    for (n_members, expected_pages) in [
        (1, vec![1]),
        (100, vec![100]),
        (101, vec![100, 1]),
        (250, vec![100, 100, 50]),
    ] {
        let hub = hub_with(|c| c.sync_page_members = 100);
        for i in 0..n_members {
            enter(&hub, "room", &format!("client{i}"), &format!("conn{i}")).unwrap();
        }
        let (mut watcher, attached) = attach_as(
            &hub,
            "room",
            "watcher",
            flags::DEFAULT_MODES,
            &AttachRequest::default(),
            64,
        );
        assert!(has_flag(&attached, flags::HAS_PRESENCE), "{attached:?}");
        let pages = drain(&mut watcher);
        let sizes: Vec<usize> = pages
            .iter()
            .map(|p| p.presence.as_ref().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, expected_pages, "{n_members} members");
        let cursors: Vec<(String, String)> = pages
            .iter()
            .map(|page| {
                assert_eq!(page.action(), Some(Action::Sync), "{page:?}");
                let (id, cursor) = page
                    .channel_serial
                    .as_deref()
                    .and_then(|s| s.split_once(':'))
                    .unwrap_or_else(|| panic!("SYNC channelSerial is id:cursor: {page:?}"));
                (id.to_owned(), cursor.to_owned())
            })
            .collect();
        let sync_id = &cursors[0].0;
        assert!(
            !sync_id.is_empty()
                && sync_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "sync id must match [\\w-]+: {sync_id:?}"
        );
        assert!(cursors.iter().all(|(id, _)| id == sync_id), "{cursors:?}");
        let mut expected_cursors: Vec<String> = (1..pages.len()).map(|i| i.to_string()).collect();
        expected_cursors.push(String::new());
        let got_cursors: Vec<String> = cursors.into_iter().map(|(_, c)| c).collect();
        assert_eq!(
            got_cursors, expected_cursors,
            "the last page's cursor is empty"
        );

        let synced: Vec<(String, String)> = pages
            .iter()
            .flat_map(|p| p.presence.clone().unwrap_or_default())
            .map(|m| {
                assert_eq!(m.action, presence::PRESENT, "{m:?}");
                (m.client_id.unwrap(), m.connection_id.unwrap())
            })
            .collect();
        let unique: BTreeSet<(String, String)> = synced.iter().cloned().collect();
        assert_eq!(unique.len(), synced.len(), "no member twice");
        assert_eq!(unique, member_keys(&hub, "room"), "every member");
    }
}

#[test]
fn no_sync_without_members_or_without_presence_subscribe() {
    let hub = Hub::default();
    let (mut early, attached) = attach_as(
        &hub,
        "room",
        "early",
        flags::DEFAULT_MODES,
        &AttachRequest::default(),
        64,
    );
    assert!(!has_flag(&attached, flags::HAS_PRESENCE), "{attached:?}");
    assert!(drain(&mut early).is_empty());
    enter(&hub, "room", "alice", "a").unwrap();
    let (mut deaf, attached) = attach_as(
        &hub,
        "room",
        "deaf",
        flags::MODE_SUBSCRIBE,
        &AttachRequest::default(),
        64,
    );
    assert!(!has_flag(&attached, flags::HAS_PRESENCE), "{attached:?}");
    assert!(drain(&mut deaf).is_empty());
}

#[test]
fn a_lone_presence_event_on_a_quiet_channel_goes_out_at_once() {
    let hub = hub_with(|c| c.presence_batch_window = Duration::from_secs(60));
    let mut watcher = subscribe(&hub, "room", "watcher", Format::Json, true, 16);
    enter(&hub, "room", "alice", "a").unwrap();
    let frames = drain(&mut watcher);
    assert_eq!(frames.len(), 1, "no flush needed: {frames:?}");
    assert_eq!(frames[0].action(), Some(Action::Presence));
    // Within the window the next one waits for the flush.
    enter(&hub, "room", "bob", "b").unwrap();
    assert!(drain(&mut watcher).is_empty());
    hub.flush_presence();
    let frames = drain(&mut watcher);
    assert_eq!(frames.len(), 1);
    let clients: Vec<String> = frames[0]
        .presence
        .iter()
        .flatten()
        .map(|e| e.client_id.clone().unwrap())
        .collect();
    assert_eq!(clients, strings(&["bob"]));
}

#[test]
fn presence_goes_out_as_one_frame_per_subscriber_per_flush() {
    const N: usize = 1000;
    // A window longer than the test, so which events wait does not depend on the machine's speed.
    let hub = hub_with(|c| c.presence_batch_window = Duration::from_secs(60));
    let mut subscribers: Vec<TestSubscriber> = (0..N)
        .map(|i| subscribe(&hub, "room", &format!("conn{i}"), Format::Json, true, 16))
        .collect();
    // The first enter finds the channel quiet and goes out at once; the other 999 wait.
    for i in 0..N {
        enter(&hub, "room", &format!("client{i}"), &format!("conn{i}")).unwrap();
    }
    hub.flush_presence();
    for i in 0..N {
        hub.presence(
            "room",
            vec![presence_event(
                presence::LEAVE,
                &format!("client{i}"),
                &format!("conn{i}"),
            )],
        )
        .unwrap();
    }
    hub.flush_presence();
    // Nothing left: this one sends nothing.
    hub.flush_presence();

    let expected_waves: [(u8, std::ops::Range<usize>); 3] = [
        (presence::ENTER, 0..1),
        (presence::ENTER, 1..N),
        (presence::LEAVE, 0..N),
    ];
    let naive = 2 * N * N;
    let mut total = 0;
    let mut buffers = [BTreeSet::new(), BTreeSet::new(), BTreeSet::new()];
    for (index, subscriber) in subscribers.iter_mut().enumerate() {
        let mut frames = Vec::new();
        while let Ok(frame) = subscriber.queue.try_recv() {
            frames.push(frame);
        }
        total += frames.len();
        assert_eq!(
            frames.len(),
            expected_waves.len(),
            "subscriber {index}: the first event at once, then one frame per flush with events"
        );
        for (wave, frame) in frames.iter().enumerate() {
            buffers[wave].insert(buffer_address(frame));
        }
        if index == 0 || index == N - 1 {
            for (frame, (action, clients)) in frames.into_iter().zip(expected_waves.clone()) {
                let frame = decode(frame, Format::Json);
                assert_eq!(frame.action(), Some(Action::Presence));
                let events = frame.presence.unwrap();
                let got: Vec<String> = events
                    .iter()
                    .map(|e| e.client_id.clone().unwrap())
                    .collect();
                let expected: Vec<String> = clients.map(|i| format!("client{i}")).collect();
                assert_eq!(got, expected, "every event, in order");
                assert!(events.iter().all(|e| e.action == action));
            }
        }
    }
    assert_eq!(
        total,
        expected_waves.len() * N,
        "{N} members entering and leaving with {N} presence subscribers: {total} frames \
         (one event per frame would be {naive})"
    );
    assert_eq!(
        buffers.map(|b| b.len()),
        [1, 1, 1],
        "each broadcast is encoded once and shared"
    );
}

#[test]
fn entering_beyond_max_presence_members_is_refused_91003() {
    let hub = hub_with(|c| c.max_presence_members = 3);
    for client in ["a", "b", "c"] {
        enter(&hub, "room", client, client).unwrap();
    }
    let refused = enter(&hub, "room", "d", "d").unwrap_err();
    assert_eq!(refused.code, 91003, "{refused:?}");
    assert_eq!(
        enter(&hub, "room", "a", "other-connection")
            .unwrap_err()
            .code,
        91003,
        "the same clientId on another connection is another member"
    );
    // Members already present may enter again and update at the cap.
    enter(&hub, "room", "a", "a").unwrap();
    hub.presence("room", vec![presence_event(presence::UPDATE, "b", "b")])
        .unwrap();
    let batch = vec![
        presence_event(presence::ENTER, "e", "e"),
        presence_event(presence::ENTER, "f", "f"),
    ];
    assert_eq!(hub.presence("room", batch).unwrap_err().code, 91003);
    assert_eq!(hub.occupancy("room").presence_members, 3);
    hub.presence("room", vec![presence_event(presence::LEAVE, "a", "a")])
        .unwrap();
    enter(&hub, "room", "d", "d").unwrap();
    assert_eq!(
        member_keys(&hub, "room"),
        [("b", "b"), ("c", "c"), ("d", "d")]
            .iter()
            .map(|(c, k)| (c.to_string(), k.to_string()))
            .collect()
    );
}

#[test]
fn an_update_from_a_non_member_counts_against_the_cap() {
    let hub = hub_with(|c| c.max_presence_members = 2);
    enter(&hub, "room", "a", "a").unwrap();
    enter(&hub, "room", "b", "b").unwrap();
    // An UPDATE from someone not present makes them a member (as Ably does), so it is an enter.
    let result = hub.presence("room", vec![presence_event(presence::UPDATE, "c", "c")]);
    assert_eq!(
        result.as_ref().map_err(|e| e.code),
        Err(91003),
        "members now: {:?}",
        member_keys(&hub, "room")
    );
    assert_eq!(hub.occupancy("room").presence_members, 2);
}

#[test]
fn a_refused_presence_batch_changes_nothing() {
    let hub = Hub::default();
    let mut watcher = subscribe(&hub, "room", "watcher", Format::Json, true, 16);
    let batch = vec![
        presence_event(presence::ENTER, "alice", "a"),
        // PRESENT is for SYNC; a client may not send it.
        presence_event(presence::PRESENT, "bob", "b"),
    ];
    let refused = hub.presence("room", batch).unwrap_err();
    assert_eq!(refused.code, 40000, "{refused:?}");
    assert!(
        hub.presence_members("room").is_empty(),
        "the NACKed batch left members behind: {:?}",
        member_keys(&hub, "room")
    );
    hub.flush_presence();
    assert!(drain(&mut watcher).is_empty());
}

/// `[meta]occupancy` goes only to subscribers that asked, once per flush, and only after a change.
#[test]
fn occupancy_events_go_to_those_who_asked_once_per_change() {
    let hub = Hub::default();
    let outbox = Arc::new(Outbox::new(Format::Json, budget(64)));
    let mut watcher_queue = outbox.receiver();
    hub.attach(
        "live",
        Subscriber {
            connection_id: "watcher".into(),
            channel_name: "live".into(),
            modes: flags::DEFAULT_MODES | OCCUPANCY_EVENTS,
            echo: true,
            outbox,
        },
        &AttachRequest::default(),
        |_| ProtocolMessage::new(Action::Attached),
    );
    watcher_queue.try_recv().expect("ATTACHED");
    let mut viewers: Vec<TestSubscriber> = (0..3)
        .map(|i| subscribe(&hub, "live", &format!("viewer{i}"), Format::Json, true, 64))
        .collect();

    hub.flush_occupancy();
    let event = decode(
        watcher_queue.try_recv().expect("an occupancy event"),
        Format::Json,
    );
    let message = &event.messages.expect("messages")[0];
    assert_eq!(message.name.as_deref(), Some("[meta]occupancy"));
    let Some(protocol::Data::Other(data)) = &message.data else {
        panic!("occupancy data is an object: {message:?}");
    };
    assert_eq!(data["metrics"]["connections"], 4, "{data}");
    assert_eq!(data["metrics"]["subscribers"], 4, "{data}");
    assert!(
        event.channel_serial.is_none(),
        "meta events must not move the channel serial"
    );
    assert!(watcher_queue.try_recv().is_err(), "one event per flush");
    for viewer in &mut viewers {
        assert!(
            viewer.queue.try_recv().is_err(),
            "only the watcher asked for occupancy"
        );
    }

    hub.flush_occupancy();
    assert!(watcher_queue.try_recv().is_err(), "no change, no event");

    hub.detach("live", "viewer0");
    hub.detach("live", "viewer1");
    hub.flush_occupancy();
    let event = decode(
        watcher_queue.try_recv().expect("an event after the change"),
        Format::Json,
    );
    let Some(protocol::Data::Other(data)) = &event.messages.expect("messages")[0].data else {
        panic!("occupancy data is an object");
    };
    assert_eq!(data["metrics"]["connections"], 2, "{data}");
    assert!(watcher_queue.try_recv().is_err(), "two detaches, one event");
}

/// Messages as the store holds them: `data` = their position `n` in `epoch`, stamped now.
fn stored(epoch: u64, positions: std::ops::RangeInclusive<u64>) -> Vec<Message> {
    positions
        .map(|n| Message {
            serial: Some(log::serial(epoch, n)),
            id: Some(format!("{epoch}:{n}")),
            ..text_message(&n.to_string(), protocol::now_ms())
        })
        .collect()
}

/// A hub whose channel "c" was caught up to message 3 of epoch 7, with one subscriber.
fn caught_up_to_three(max_messages: usize) -> (Hub, TestSubscriber) {
    let hub = hub_with(|c| c.retention.max_messages = max_messages);
    hub.catch_up("c", log::serial(7, 0), stored(7, 1..=3), false);
    let (subscriber, _) = attach_as(
        &hub,
        "c",
        "sub",
        flags::DEFAULT_MODES,
        &resume_from(&log::serial(7, 0)),
        64,
    );
    (hub, subscriber)
}

/// Every frame's data (MESSAGE) or `90003` (ATTACHED with that error), in order.
fn stream_of(frames: &[ProtocolMessage]) -> Vec<String> {
    frames
        .iter()
        .flat_map(|frame| match frame.action() {
            Some(Action::Attached) => {
                assert_refused(frame, "catch-up notice");
                vec!["90003".to_owned()]
            }
            _ => datas(std::slice::from_ref(frame)),
        })
        .collect()
}

#[test]
fn a_catch_up_delivers_the_whole_gap_in_order_and_keeps_the_log() {
    let (hub, mut subscriber) = caught_up_to_three(500);
    assert_eq!(
        datas(&drain(&mut subscriber)),
        range(1, 4),
        "the resume replay"
    );
    // The store repeats what the node has (from its known position) and holds 600 more.
    hub.catch_up("c", log::serial(7, 2), stored(7, 3..=603), false);
    let frames = drain(&mut subscriber);
    assert_eq!(
        stream_of(&frames),
        range(4, 604),
        "every missed message once, in order, no notice"
    );
    assert!(
        frames.len() > 1,
        "several messages per frame, not one frame for the whole gap"
    );
    assert_eq!(
        history_data(&hub, "c").len(),
        500,
        "the log keeps its retention"
    );
    hub.deliver("c", stored(7, 604..=604), None, None).unwrap();
    assert_eq!(
        datas(&drain(&mut subscriber)),
        strings(&["604"]),
        "live again"
    );
}

#[test]
fn a_hole_in_the_gap_is_told_where_it_is() {
    let (hub, mut subscriber) = caught_up_to_three(500);
    drain(&mut subscriber);
    let mut holey = stored(7, 4..=5);
    holey.extend(stored(7, 8..=9));
    hub.catch_up("c", log::serial(7, 7), holey, false);
    assert_eq!(
        stream_of(&drain(&mut subscriber)),
        strings(&["4", "5", "90003", "8", "9"]),
        "what exists, in order, with the loss told where 6 and 7 are missing"
    );
    let (_, attached) = attach_as(
        &hub,
        "c",
        "late",
        flags::DEFAULT_MODES,
        &resume_from(&log::serial(7, 5)),
        64,
    );
    assert_refused(&attached, "resume across the hole");
}

#[test]
fn a_new_epoch_continues_the_log_when_the_node_heard_the_old_one_to_its_end() {
    let (hub, mut subscriber) = caught_up_to_three(500);
    drain(&mut subscriber);
    // Redis came back empty: a new epoch, whole from its first message.
    hub.catch_up("c", log::serial(9, 0), stored(9, 1..=2), true);
    assert_eq!(
        stream_of(&drain(&mut subscriber)),
        strings(&["1", "2"]),
        "the new epoch's messages, no notice"
    );
    hub.deliver("c", stored(9, 3..=3), None, None).unwrap();
    assert_eq!(datas(&drain(&mut subscriber)), strings(&["3"]));
    // A client that saw the old epoch's second message still resumes: old tail, then the new.
    let (mut resumed, attached) = attach_as(
        &hub,
        "c",
        "back",
        flags::DEFAULT_MODES,
        &resume_from(&log::serial(7, 2)),
        64,
    );
    assert!(has_flag(&attached, flags::RESUMED), "{attached:?}");
    assert_eq!(datas(&drain(&mut resumed)), strings(&["3", "1", "2", "3"]));
}

#[test]
fn a_new_epoch_is_a_loss_when_the_node_cannot_show_it_heard_the_old_one_out() {
    let (hub, mut subscriber) = caught_up_to_three(500);
    drain(&mut subscriber);
    hub.catch_up("c", log::serial(9, 0), stored(9, 1..=2), false);
    assert_eq!(
        stream_of(&drain(&mut subscriber)),
        strings(&["90003", "1", "2"])
    );
    let (_, attached) = attach_as(
        &hub,
        "c",
        "back",
        flags::DEFAULT_MODES,
        &resume_from(&log::serial(7, 2)),
        64,
    );
    assert_refused(&attached, "resume from the lost epoch");
}

#[test]
fn a_new_epoch_missing_its_first_messages_is_a_loss_even_when_the_old_one_was_heard_out() {
    let (hub, mut subscriber) = caught_up_to_three(500);
    drain(&mut subscriber);
    hub.catch_up("c", log::serial(9, 1), stored(9, 2..=3), true);
    assert_eq!(
        stream_of(&drain(&mut subscriber)),
        strings(&["90003", "2", "3"])
    );
}

#[test]
fn a_new_epoch_with_nothing_stored_yet_is_where_the_channel_continues() {
    let (hub, mut subscriber) = caught_up_to_three(500);
    drain(&mut subscriber);
    hub.catch_up("c", log::serial(9, 0), Vec::new(), true);
    assert!(
        drain(&mut subscriber).is_empty(),
        "nothing to send, nothing lost"
    );
    assert_eq!(
        hub.deliver("c", stored(9, 1..=1), None, None),
        Ok(true),
        "the new epoch follows on"
    );
    assert_eq!(datas(&drain(&mut subscriber)), strings(&["1"]));
}

/// A store missing members this node holds (Redis back empty, their nodes not yet written
/// back) keeps them until the re-check; the re-check then makes the missing leave.
#[test]
fn members_missing_from_the_store_stay_until_the_recheck() {
    let hub = hub_with(|_| {});
    enter(&hub, "room", "alice", "c1").unwrap();
    enter(&hub, "room", "bob", "c2").unwrap();
    let bob = presence_event(presence::ENTER, "bob", "c2");
    let carol = presence_event(presence::ENTER, "carol", "c3");

    assert!(
        hub.sync_members("room", vec![carol.clone()], false),
        "some were missing"
    );
    assert_eq!(
        member_keys(&hub, "room"),
        BTreeSet::from([
            ("alice".to_owned(), "c1".to_owned()),
            ("bob".to_owned(), "c2".to_owned()),
            ("carol".to_owned(), "c3".to_owned())
        ]),
        "nobody left; the new one entered"
    );

    assert!(!hub.sync_members("room", vec![bob, carol], true));
    assert_eq!(
        member_keys(&hub, "room"),
        BTreeSet::from([
            ("bob".to_owned(), "c2".to_owned()),
            ("carol".to_owned(), "c3".to_owned())
        ]),
        "the re-check made alice leave"
    );
}

/// `n` messages of `size` bytes of data each, with serials `s-000…` and no ids.
fn numbered(n: usize, size: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            serial: Some(format!("s-{i:04}")),
            data: Some(protocol::Data::String("x".repeat(size))),
            ..Default::default()
        })
        .collect()
}

#[test]
fn a_big_delivery_is_split_into_frames_that_fit_in_order() {
    for format in [Format::Json, Format::Msgpack] {
        let mut outgoing = ProtocolMessage {
            id: Some("conn:7".into()),
            connection_id: Some("conn".into()),
            channel: Some("c".into()),
            timestamp: Some(5),
            channel_serial: Some("s-0999".into()),
            messages: Some(numbered(1000, 200)),
            ..ProtocolMessage::new(Action::Message)
        };
        let frames = encode_split(&mut outgoing, format, 16 * 1024).unwrap();
        assert!(frames.len() >= 12, "{} frames", frames.len());
        // The caller's message is left as it was, for the next format.
        assert_eq!(outgoing.messages.as_ref().unwrap().len(), 1000);
        assert_eq!(outgoing.channel_serial.as_deref(), Some("s-0999"));
        let mut next = 0;
        for frame in frames {
            assert!(frame.len() <= 16 * 1024, "a frame of {} bytes", frame.len());
            let part = decode(frame, format);
            assert_eq!(part.action(), Some(Action::Message));
            assert_eq!(part.connection_id.as_deref(), Some("conn"));
            assert_eq!(part.timestamp, Some(5));
            let messages = part.messages.unwrap();
            assert!(!messages.is_empty());
            for message in &messages {
                // Consecutive, none lost or repeated, each with the id the whole frame gave it.
                assert_eq!(message.serial, Some(format!("s-{next:04}")));
                assert_eq!(message.id, Some(format!("conn:7:{next}")));
                next += 1;
            }
            assert_eq!(part.channel_serial, messages.last().unwrap().serial);
        }
        assert_eq!(next, 1000);
    }
}

#[test]
fn a_delivery_that_fits_or_a_lone_big_message_goes_whole() {
    let mut small = ProtocolMessage {
        messages: Some(numbered(10, 10)),
        ..ProtocolMessage::new(Action::Message)
    };
    assert_eq!(
        encode_split(&mut small, Format::Json, 16 * 1024)
            .unwrap()
            .len(),
        1
    );
    let mut lone = ProtocolMessage {
        messages: Some(numbered(1, 64 * 1024)),
        ..ProtocolMessage::new(Action::Message)
    };
    let frames = encode_split(&mut lone, Format::Msgpack, 16 * 1024).unwrap();
    assert_eq!(frames.len(), 1);
    assert!(frames[0].len() > 64 * 1024);
}

#[test]
fn a_publication_too_big_for_one_frame_reaches_every_subscriber_in_order() {
    let hub = Hub::default();
    let mut json = subscribe(&hub, "c", "a", Format::Json, true, 64);
    let mut json_too = subscribe(&hub, "c", "b", Format::Json, true, 64);
    let mut packed = subscribe(&hub, "c", "m", Format::Msgpack, true, 64);
    // 1,000 messages of 600 bytes: ~800 KB as one JSON frame, beyond what a frame may be.
    let messages: Vec<Message> = (0..1000)
        .map(|i| Message {
            id: Some(format!("p:0:{i}")),
            data: Some(protocol::Data::String(format!("{i:0600}"))),
            ..Default::default()
        })
        .collect();
    let serials = hub
        .publish(Publication {
            channel: "c",
            messages,
            client_ids: vec![],
            connection_id: Some("p"),
            id: Some("p:0".into()),
            timestamp: 1,
        })
        .unwrap();
    for (subscriber, format) in [
        (&mut json, Format::Json),
        (&mut json_too, Format::Json),
        (&mut packed, Format::Msgpack),
    ] {
        let mut received = Vec::new();
        let mut frames = 0;
        while let Ok(frame) = subscriber.queue.try_recv() {
            assert!(frame.len() <= MAX_DELIVERY_FRAME_BYTES);
            frames += 1;
            let part = decode(frame, format);
            let messages = part.messages.unwrap();
            assert_eq!(part.channel_serial, messages.last().unwrap().serial);
            received.extend(messages.into_iter().map(|m| m.serial));
        }
        assert!(frames > 1, "{format:?}: split");
        assert_eq!(received, serials, "{format:?}: all, in order");
    }
}

#[test]
fn a_big_presence_broadcast_is_split_too() {
    let events: Vec<PresenceMessage> = (0..200)
        .map(|i| PresenceMessage {
            id: Some(format!("c:{i}:0")),
            action: presence::ENTER,
            client_id: Some(format!("user-{i}")),
            data: Some(protocol::Data::String("d".repeat(500))),
            ..Default::default()
        })
        .collect();
    let mut outgoing = ProtocolMessage {
        channel: Some("c".into()),
        presence: Some(events.clone()),
        ..ProtocolMessage::new(Action::Presence)
    };
    let frames = encode_split(&mut outgoing, Format::Msgpack, 16 * 1024).unwrap();
    assert!(frames.len() >= 7, "{} frames", frames.len());
    let mut received = Vec::new();
    for frame in frames {
        assert!(frame.len() <= 16 * 1024);
        let part = decode(frame, Format::Msgpack);
        assert_eq!(part.action(), Some(Action::Presence));
        received.extend(part.presence.unwrap());
    }
    assert_eq!(received, events, "every event, in order");
    assert_eq!(outgoing.presence.as_ref(), Some(&events));
}

#[test]
fn a_flood_of_subscribers_and_members_gives_its_room_back_when_it_leaves() {
    let hub = Hub::new(HubConfig::default());
    let mut subscribers = Vec::new();
    for n in 0..500 {
        let connection_id = format!("c{n}");
        subscribers.push(subscribe(
            &hub,
            "live",
            &connection_id,
            Format::Json,
            true,
            8,
        ));
        enter(&hub, "live", &format!("u{n}"), &connection_id).unwrap();
    }
    let room = |hub: &Hub| {
        let channel = hub.existing("live").expect("live channel");
        let state = channel.lock();
        (state.subscribers.capacity(), state.presence.capacity())
    };
    let (subscribers_full, members_full) = room(&hub);
    assert!(subscribers_full >= 500 && members_full >= 500);
    for n in 10..500 {
        let connection_id = format!("c{n}");
        hub.apply_presence("live", hub.leave_events("live", &connection_id));
        hub.detach("live", &connection_id);
    }
    assert_eq!(hub.occupancy("live").subscribers, 10);
    assert_eq!(hub.presence_members("live").len(), 10);
    let (subscribers_left, members_left) = room(&hub);
    assert!(
        subscribers_left <= 4 * 10 + MIN_ROOM && members_left <= 4 * 10 + MIN_ROOM,
        "room kept: {subscribers_left} subscribers, {members_left} members"
    );
    drop(subscribers);
}

/// What `shrink` leaves alone.
const MIN_ROOM: usize = crate::shrink::MIN_CAPACITY * 2;

#[test]
fn the_sweep_shrinks_the_channel_map_after_a_flood_of_channels() {
    let hub = Hub::new(HubConfig::default());
    for n in 0..5_000 {
        drop(subscribe(
            &hub,
            &format!("user:{n}"),
            &format!("c{n}"),
            Format::Json,
            true,
            8,
        ));
        hub.detach(&format!("user:{n}"), &format!("c{n}"));
    }
    let full = hub.channels.capacity();
    assert!(full >= 5_000);
    hub.sweep(10);
    assert_eq!(hub.channel_count(), 0);
    assert!(
        hub.channels.capacity() < full / 10,
        "channel map kept room for {} of {full}",
        hub.channels.capacity()
    );
}
