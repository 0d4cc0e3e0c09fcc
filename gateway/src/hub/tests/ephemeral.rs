//! Ephemeral messages: delivered live, never logged, never moving the channel's position.

use super::*;

fn ephemeral(data: &str, id: Option<&str>) -> Message {
    let mut message = text_message(data, protocol::now_ms());
    message.id = id.map(str::to_owned);
    mark_ephemeral(&mut message);
    message
}

fn publish_ephemeral(
    hub: &Hub,
    channel: &str,
    messages: Vec<Message>,
    from: Option<&str>,
) -> Serials {
    let client_ids = messages.iter().map(|m| m.id.is_some()).collect();
    hub.publish_ephemeral(Publication {
        channel,
        messages,
        client_ids,
        connection_id: from,
        id: None,
        timestamp: protocol::now_ms(),
    })
    .expect("published")
}

#[test]
fn an_ephemeral_publish_reaches_subscribers_without_serials_and_is_not_logged() {
    let hub = Hub::default();
    let (mut subscriber, _) = attach_to_c(&hub, "sub", &AttachRequest::default());
    let stored = publish_now(&hub, "c", "stored");
    let serials = publish_ephemeral(&hub, "c", vec![ephemeral("typing", None)], None);
    assert_eq!(serials, vec![None]);
    let frames = drain(&mut subscriber);
    assert_eq!(datas(&frames), strings(&["stored", "typing"]));
    let live = &frames[1];
    assert_eq!(
        live.channel_serial, None,
        "no position to resume from: {live:?}"
    );
    let message = &live.messages.as_ref().unwrap()[0];
    assert_eq!(message.serial, None, "{message:?}");
    assert_eq!(message.extras, Some(serde_json::json!({"ephemeral": true})));
    assert_eq!(history_data(&hub, "c"), strings(&["stored"]));
    assert_eq!(
        hub.last_serial("c").map(|(serial, _)| serial),
        Some(stored.clone()),
        "the position stays at the last stored message"
    );
    let next = publish_now(&hub, "c", "after");
    assert_eq!(log::next(&stored), Some(next), "no serial was spent on it");
}

#[test]
fn rewind_and_resume_skip_ephemeral_messages_and_keep_continuity() {
    let hub = Hub::default();
    let (mut first, _) = attach_to_c(&hub, "conn", &AttachRequest::default());
    let seen = publish_now(&hub, "c", "0");
    drain(&mut first);
    hub.detach("c", "conn");
    publish_ephemeral(&hub, "c", vec![ephemeral("gone", None)], None);
    publish_now(&hub, "c", "1");
    publish_ephemeral(&hub, "c", vec![ephemeral("gone too", None)], None);
    assert_eq!(resumed_replay(&hub, "conn", &seen), strings(&["1"]));
    let (mut late, _) = attach_to_c(&hub, "late", &rewind(Rewind::Messages(10)));
    assert_eq!(datas(&drain(&mut late)), strings(&["0", "1"]));
}

#[test]
fn a_repeated_ephemeral_id_is_delivered_once_and_echo_rules_hold() {
    let hub = Hub::default();
    let (mut other, _) = attach_to_room(&hub, "other", Modes::DEFAULT);
    let outbox = Arc::new(Outbox::new(Format::Json, budget(64)));
    let quiet = subscriber("room", "me", Modes::DEFAULT, false, outbox);
    let (mut me, _) = attach_subscriber(&hub, "room", quiet, &AttachRequest::default());
    for _ in 0..2 {
        let serials =
            publish_ephemeral(&hub, "room", vec![ephemeral("hi", Some("e-1"))], Some("me"));
        assert_eq!(serials, vec![None]);
    }
    let frames = drain(&mut other);
    assert_eq!(datas(&frames), strings(&["hi"]), "once");
    assert_eq!(frames[0].connection_id.as_deref(), Some("me"));
    assert!(
        drain(&mut me).is_empty(),
        "echo=false: not to its publisher"
    );
}

#[test]
fn delivering_an_ephemeral_arrival_keeps_the_bus_continuity_check() {
    let hub = Hub::default();
    let (mut subscriber, _) = attach_to_c(&hub, "sub", &AttachRequest::default());
    let stored = |serial: &str, data: &str| Message {
        serial: Some(serial.to_owned()),
        ..text_message(data, protocol::now_ms())
    };
    let first = log::serial(1, 1);
    let second = log::next(&first).unwrap();
    assert!(hub
        .deliver("c", vec![stored(&first, "0")], None, None)
        .unwrap());
    let mut arrived = ephemeral("typing", None);
    arrived.serial = Some("a publisher's own".into());
    hub.deliver_ephemeral("c", vec![arrived], None, None)
        .unwrap();
    assert!(
        hub.deliver("c", vec![stored(&second, "1")], None, None)
            .unwrap(),
        "the next stored message still follows on"
    );
    let frames = drain(&mut subscriber);
    assert_eq!(datas(&frames), strings(&["0", "typing", "1"]));
    assert_eq!(frames[1].messages.as_ref().unwrap()[0].serial, None);
    assert_eq!(
        history_data(&hub, "c"),
        strings(&["1", "0"]),
        "newest first"
    );
}

#[test]
fn an_ephemeral_arrival_for_a_channel_nobody_holds_makes_no_state() {
    let hub = Hub::default();
    hub.deliver_ephemeral("nobody", vec![ephemeral("x", None)], None, None)
        .unwrap();
    publish_ephemeral(&hub, "nobody", vec![ephemeral("x", None)], None);
    assert!(!hub.is_held("nobody"));
}

#[test]
fn a_publish_is_ephemeral_whole_or_not_at_all() {
    let plain = text_message("plain", 1);
    let mut with_extras = text_message("e", 1);
    with_extras.extras = Some(serde_json::json!({"headers": {"a": "b"}}));
    mark_ephemeral(&mut with_extras);
    assert_eq!(
        with_extras.extras,
        Some(serde_json::json!({"headers": {"a": "b"}, "ephemeral": true})),
        "other extras are kept"
    );
    assert_eq!(
        is_ephemeral_publish(std::slice::from_ref(&plain)),
        Ok(false)
    );
    assert_eq!(
        is_ephemeral_publish(std::slice::from_ref(&with_extras)),
        Ok(true)
    );
    assert_eq!(
        is_ephemeral_publish(&[plain.clone(), with_extras, plain]),
        Err(crate::error::Error::MixedEphemeral {
            ephemeral: 1,
            stored: 2
        })
    );
    let mut not_true = text_message("x", 1);
    not_true.extras = Some(serde_json::json!({"ephemeral": "true"}));
    assert!(!is_ephemeral(&not_true), "only the boolean true counts");
}

/// A lagging subscriber's writer merges runs of MESSAGE frames of one channel
/// (`outbox::coalesce`); a frame without a channelSerial is never part of a run, so it is
/// neither merged into a stored one nor dropped, and goes out in its place.
#[tokio::test]
async fn an_ephemeral_frame_is_never_merged_with_stored_ones() {
    let hub = Hub::default();
    let (subscriber, _) = attach_to_c(&hub, "sub", &AttachRequest::default());
    publish_now(&hub, "c", "0");
    publish_now(&hub, "c", "1");
    let first = subscriber.outbox.recv().await;
    assert!(first.run, "two stored frames of one channel may merge");
    subscriber.outbox.recv().await;
    publish_now(&hub, "c", "2");
    publish_ephemeral(&hub, "c", vec![ephemeral("typing", None)], None);
    publish_now(&hub, "c", "3");
    let stored = subscriber.outbox.recv().await;
    assert!(!stored.run, "the ephemeral frame behind it is not merged");
    let live = subscriber.outbox.recv().await;
    assert_eq!(live.entry.channel_tag, 0, "no run starts at it");
    assert!(!live.run);
    let frame = decode(live.entry.frame, Format::Json);
    assert_eq!(datas(&[frame]), strings(&["typing"]));
}
