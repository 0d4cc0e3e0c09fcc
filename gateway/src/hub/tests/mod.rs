//! The hub's unit tests, one file per topic; the helpers they share are here.

mod batch;
mod catch_up;
mod ephemeral;
mod fan_out;
mod occupancy;
mod presence;
mod resume;
mod retention;
mod rewind;
mod rules;
mod serials;
mod views;

use std::collections::{BTreeSet, HashMap as Map};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use protocol::message::{flags, Modes};
use protocol::{Action, ErrorInfo, Format, Message, PresenceMessage, ProtocolMessage};

use super::*;
use crate::frame::Frame;
use crate::hub::presence::{ENTER, LEAVE, PRESENT, UPDATE};
use crate::outbox::{Outbox, Receiver};

/// Past the default history retention of a message published at t=1.
const AFTER_RETENTION: u64 = 2 + 10 * 60 * 1000;

struct TestSubscriber {
    outbox: Arc<Outbox>,
    queue: Receiver,
}

/// Room for `frames` frames of up to 64 KiB before a subscriber counts as slow.
fn budget(frames: usize) -> crate::config::OutboundQueue {
    crate::config::OutboundQueue {
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
    let subscriber = subscriber(channel, connection_id, Modes::DEFAULT, echo, outbox);
    attach_subscriber(hub, channel, subscriber, &AttachRequest::default()).0
}

/// A subscriber as the connection makes one.
fn subscriber(
    channel: &str,
    connection_id: &str,
    modes: Modes,
    echo: bool,
    outbox: Arc<Outbox>,
) -> Subscriber {
    Subscriber {
        connection_id: connection_id.into(),
        channel_name: channel.into(),
        modes,
        occupancy_events: false,
        echo,
        append_full: false,
        seen_from: Default::default(),
        view: Default::default(),
        outbox,
    }
}

/// Attaches `subscriber` with `request`; returns it and its ATTACHED, whose `flags` are the
/// modes plus the outcome's flags (as the connection builds it).
fn attach_subscriber(
    hub: &Hub,
    channel: &str,
    subscriber: Subscriber,
    request: &AttachRequest,
) -> (TestSubscriber, ProtocolMessage) {
    let (outbox, modes) = (subscriber.outbox.clone(), subscriber.modes);
    let mut queue = outbox.receiver();
    hub.attach(channel, subscriber, request, |outcome| ProtocolMessage {
        channel: Some(channel.to_owned()),
        flags: Some(modes.bits() | outcome.flags),
        channel_serial: Some(outcome.channel_serial.clone()),
        error: outcome.error.clone(),
        ..ProtocolMessage::new(Action::Attached)
    });
    let attached = decode(
        queue.try_recv().expect("ATTACHED queued first"),
        outbox.format,
    );
    assert_eq!(attached.action(), Some(Action::Attached), "{attached:?}");
    (TestSubscriber { outbox, queue }, attached)
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

/// Attaches a JSON subscriber with `modes` and `request`; see `attach_subscriber`.
fn attach_as(
    hub: &Hub,
    channel: &str,
    connection_id: &str,
    modes: Modes,
    request: &AttachRequest,
    capacity: usize,
) -> (TestSubscriber, ProtocolMessage) {
    let outbox = Arc::new(Outbox::new(Format::Json, budget(capacity)));
    let subscriber = subscriber(channel, connection_id, modes, true, outbox);
    attach_subscriber(hub, channel, subscriber, request)
}

/// Attaches to channel "c" with the default modes and room for 64 frames.
fn attach_to_c(
    hub: &Hub,
    connection_id: &str,
    request: &AttachRequest,
) -> (TestSubscriber, ProtocolMessage) {
    attach_as(hub, "c", connection_id, Modes::DEFAULT, request, 64)
}

/// Attaches to channel "room" with `modes` and no replay.
fn attach_to_room(
    hub: &Hub,
    connection_id: &str,
    modes: Modes,
) -> (TestSubscriber, ProtocolMessage) {
    attach_as(
        hub,
        "room",
        connection_id,
        modes,
        &AttachRequest::default(),
        64,
    )
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

/// Publishes `data` on "c" now, which `subscriber` must get, alone.
fn assert_gets_live(hub: &Hub, subscriber: &mut TestSubscriber, data: &str, context: &str) {
    publish_now(hub, "c", data);
    assert_eq!(datas(&drain(subscriber)), strings(&[data]), "{context}");
}

/// Resumes `connection_id` on "c" from `serial`, which must be kept (RESUMED); the data replayed.
fn resumed_replay(hub: &Hub, connection_id: &str, serial: &str) -> Vec<String> {
    let (mut resumed, attached) = attach_to_c(hub, connection_id, &resume_from(serial));
    assert!(has_flag(&attached, flags::RESUMED), "{attached:?}");
    datas(&drain(&mut resumed))
}

/// Attaches `connection_id` to "c" with `request`, a resume that must be refused (90003, no
/// RESUMED, nothing replayed); returns the subscriber, live from now on.
fn refused_resume(
    hub: &Hub,
    connection_id: &str,
    request: &AttachRequest,
    context: &str,
) -> TestSubscriber {
    let (mut subscriber, attached) = attach_to_c(hub, connection_id, request);
    assert_refused(&attached, context);
    assert!(drain(&mut subscriber).is_empty(), "{context}: no replay");
    subscriber
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
        vec![presence_event(ENTER, client_id, connection_id)],
    )
}

fn member_keys(hub: &Hub, channel: &str) -> BTreeSet<(String, String)> {
    hub.presence_members(channel)
        .into_iter()
        .map(|m| (m.client_id.unwrap(), m.connection_id.unwrap()))
        .collect()
}
