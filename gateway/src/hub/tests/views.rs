//! Views: what filtered and delta attachments are sent, checked by undoing it as ably-js does.

use base64::Engine as _;
use protocol::filter::Filter;
use protocol::Data;

use super::*;
use crate::hub::{DeltaCursor, View};

/// Attaches `connection_id` to `channel` as `name` with a view; returns it and its ATTACHED.
fn viewer(
    hub: &Hub,
    channel: &str,
    connection_id: &str,
    format: Format,
    filter: Option<&str>,
    delta: bool,
    request: &AttachRequest,
) -> TestSubscriber {
    let outbox = Arc::new(Outbox::new(format, budget(256)));
    let mut subscriber = subscriber(channel, connection_id, Modes::DEFAULT, true, outbox);
    subscriber.view = View {
        filter: filter.map(|source| Arc::new(Filter::parse(source).expect("a valid filter"))),
        delta: delta.then(DeltaCursor::default),
    };
    attach_subscriber(hub, channel, subscriber, request).0
}

/// A message as `Gateway::publish` stamps one: an id, a new message.
fn stamped(id: &str, name: &str, data: Data, encoding: Option<&str>) -> Message {
    Message {
        id: Some(id.to_owned()),
        name: Some(name.to_owned()),
        data: Some(data),
        encoding: encoding.map(str::to_owned),
        action: Some(0),
        timestamp: Some(protocol::now_ms()),
        ..Default::default()
    }
}

fn json_state(id: &str, state: &serde_json::Value) -> Message {
    stamped(id, "state", Data::String(state.to_string()), Some("json"))
}

fn publish_all(hub: &Hub, channel: &str, messages: Vec<Message>, from: Option<&str>) -> Serials {
    let n = messages.len();
    hub.publish(Publication {
        channel,
        messages,
        client_ids: vec![false; n],
        connection_id: from,
        id: None,
        timestamp: protocol::now_ms(),
    })
    .unwrap()
}

/// Every MESSAGE frame queued for `subscriber`, in order, as its messages.
fn frames(subscriber: &mut TestSubscriber) -> Vec<Vec<Message>> {
    let mut frames = Vec::new();
    while let Ok(frame) = subscriber.queue.try_recv() {
        let frame = decode(frame, subscriber.outbox.format);
        if frame.action() == Some(Action::Message) {
            frames.push(frame.messages.unwrap_or_default());
        }
    }
    frames
}

/// Every message queued for `subscriber`, in order.
fn received(subscriber: &mut TestSubscriber) -> Vec<Message> {
    frames(subscriber).into_iter().flatten().collect()
}

/// What ably-js makes of `messages`, in order: each payload's bytes after base64, vcdiff (the
/// patch must name the message before it) and utf-8 are undone. Returns (id, payload, patched).
fn as_the_client_decodes(messages: &[Message]) -> Vec<(String, Vec<u8>, bool)> {
    let mut previous: Option<(String, Vec<u8>)> = None;
    let mut out = Vec::new();
    for message in messages {
        let id = message.id.clone().expect("every message has an id");
        let delta = message
            .extras
            .as_ref()
            .and_then(|extras| extras.get("delta"));
        let mut bytes: Vec<u8> = match message.data.as_ref().expect("a payload") {
            Data::String(text) => text.clone().into_bytes(),
            Data::Binary(bytes) => bytes.to_vec(),
            Data::Other(value) => panic!("unexpected {value}"),
        };
        let mut base = bytes.clone();
        let steps: Vec<&str> = message
            .encoding
            .as_deref()
            .map(|e| e.split('/').collect())
            .unwrap_or_default();
        for step in steps.iter().rev() {
            match *step {
                "base64" => {
                    bytes = base64::engine::general_purpose::STANDARD
                        .decode(&bytes)
                        .expect("base64");
                    base = bytes.clone();
                }
                "vcdiff" => {
                    let delta = delta.expect("a patch names what it patches");
                    let (from, source) = previous.as_ref().expect("a message before a patch");
                    assert_eq!(
                        delta["from"],
                        serde_json::json!(from),
                        "patches the one before"
                    );
                    assert_eq!(delta["format"], "vcdiff");
                    bytes = vcdiff::decode(source, &bytes).expect("a valid VCDIFF patch");
                    base = bytes.clone();
                }
                "utf-8" => {
                    String::from_utf8(bytes.clone()).expect("utf-8");
                }
                _ => break,
            }
        }
        assert!(
            delta.is_none() || steps.contains(&"vcdiff"),
            "extras.delta only on patches"
        );
        out.push((id, bytes, delta.is_some()));
        previous = Some((out.last().unwrap().0.clone(), base));
    }
    out
}

/// (id, whether patched) per decoded message.
fn ids_patched(decoded: &[(String, Vec<u8>, bool)]) -> Vec<(&str, bool)> {
    decoded
        .iter()
        .map(|(id, _, patched)| (id.as_str(), *patched))
        .collect()
}

/// Whether each decoded message came as a patch.
fn patched_flags(decoded: &[(String, Vec<u8>, bool)]) -> Vec<bool> {
    decoded.iter().map(|(_, _, patched)| *patched).collect()
}

/// A 2 KB state object (a stream's viewers and tips) with `round` changing about 5 % of it.
fn state(round: usize) -> serde_json::Value {
    let viewers: Vec<serde_json::Value> = (0..60)
        .map(|i| serde_json::json!({ "user": format!("viewer-{i:03}"), "tips": if i % 20 == round % 20 { round * 10 } else { i } }))
        .collect();
    serde_json::json!({ "stream": "stream:42", "round": round, "viewers": viewers })
}

#[test]
fn a_delta_attachment_gets_the_first_message_whole_then_patches_of_the_one_before() {
    let hub = Hub::default();
    let request = AttachRequest::default();
    let mut json = viewer(&hub, "s", "json", Format::Json, None, true, &request);
    let mut msgpack = viewer(&hub, "s", "msgpack", Format::Msgpack, None, true, &request);
    let mut plain = viewer(&hub, "s", "plain", Format::Json, None, false, &request);
    let states: Vec<serde_json::Value> = (0..5).map(state).collect();
    for (i, state) in states.iter().enumerate() {
        publish_all(&hub, "s", vec![json_state(&format!("m{i}"), state)], None);
    }
    let whole: Vec<Vec<u8>> = states.iter().map(|s| s.to_string().into_bytes()).collect();
    for subscriber in [&mut json, &mut msgpack] {
        let messages = received(subscriber);
        let decoded = as_the_client_decodes(&messages);
        assert_eq!(decoded.len(), 5);
        for (i, (id, payload, patched)) in decoded.iter().enumerate() {
            assert_eq!(id, &format!("m{i}"));
            assert_eq!(
                payload, &whole[i],
                "message {i} decodes to what was published"
            );
            assert_eq!(*patched, i > 0, "only the first goes whole");
        }
        for message in &messages[1..] {
            let expected = if subscriber.outbox.format == Format::Json {
                "json/utf-8/vcdiff/base64"
            } else {
                "json/utf-8/vcdiff"
            };
            assert_eq!(message.encoding.as_deref(), Some(expected));
        }
        let patch = match messages[1].data.as_ref().unwrap() {
            Data::Binary(bytes) => bytes.len(),
            Data::String(text) => text.len() * 3 / 4,
            Data::Other(_) => unreachable!(),
        };
        assert!(
            patch * 5 < whole[1].len(),
            "a 5 % change patches in well under a fifth: {patch} of {}",
            whole[1].len()
        );
    }
    let plain = received(&mut plain);
    assert!(plain
        .iter()
        .all(|m| m.extras.is_none() && m.encoding.as_deref() == Some("json")));
    assert_eq!(plain.len(), 5);
}

#[test]
fn binary_payloads_patch_as_bytes_whichever_way_they_were_published() {
    let hub = Hub::default();
    let request = AttachRequest::default();
    let mut json = viewer(&hub, "b", "json", Format::Json, None, true, &request);
    let mut msgpack = viewer(&hub, "b", "msgpack", Format::Msgpack, None, true, &request);
    let payloads: Vec<Vec<u8>> = (0..4u8)
        .map(|round| {
            (0..600u32)
                .map(|i| (i % 251) as u8 ^ if i % 97 == 0 { round } else { 0 })
                .collect()
        })
        .collect();
    for (i, bytes) in payloads.iter().enumerate() {
        // A msgpack publisher's bytes, then a JSON publisher's base64, alternately.
        let message = if i % 2 == 0 {
            stamped(
                &format!("b{i}"),
                "bin",
                Data::Binary(bytes.clone().into()),
                None,
            )
        } else {
            let text = base64::engine::general_purpose::STANDARD.encode(bytes);
            stamped(&format!("b{i}"), "bin", Data::String(text), Some("base64"))
        };
        publish_all(&hub, "b", vec![message], None);
    }
    for subscriber in [&mut json, &mut msgpack] {
        let decoded = as_the_client_decodes(&received(subscriber));
        let payloads_seen: Vec<&Vec<u8>> = decoded.iter().map(|(_, p, _)| p).collect();
        assert_eq!(payloads_seen, payloads.iter().collect::<Vec<_>>());
        assert_eq!(patched_flags(&decoded), [false, true, true, true]);
    }
}

#[test]
fn a_message_an_attachment_was_not_sent_makes_its_next_one_whole() {
    let hub = Hub::default();
    let request = AttachRequest::default();
    // Does not hear its own publishes.
    let outbox = Arc::new(Outbox::new(Format::Json, budget(64)));
    let mut quiet = subscriber("q", "quiet", Modes::DEFAULT, false, outbox);
    quiet.view.delta = Some(DeltaCursor::default());
    let (mut quiet, _) = attach_subscriber(&hub, "q", quiet, &request);
    let mut other = viewer(&hub, "q", "other", Format::Json, None, true, &request);
    publish_all(&hub, "q", vec![json_state("q0", &state(0))], None);
    publish_all(&hub, "q", vec![json_state("q1", &state(1))], Some("quiet"));
    publish_all(&hub, "q", vec![json_state("q2", &state(2))], None);
    let quiet = as_the_client_decodes(&received(&mut quiet));
    assert_eq!(
        ids_patched(&quiet),
        [("q0", false), ("q2", false)],
        "q2 cannot patch q1, which it never got"
    );
    let other = as_the_client_decodes(&received(&mut other));
    assert_eq!(patched_flags(&other), [false, true, true]);
}

#[test]
fn a_resume_replays_its_first_message_whole_then_patches_and_joins_the_live_chain() {
    let hub = Hub::default();
    let request = AttachRequest::default();
    // Keeps the channel's chain going.
    let _live = viewer(&hub, "r", "live", Format::Json, None, true, &request);
    let serials = (0..3)
        .map(|i| {
            publish_all(
                &hub,
                "r",
                vec![json_state(&format!("r{i}"), &state(i))],
                None,
            )
        })
        .map(|serials| serials[0].clone().unwrap())
        .collect::<Vec<_>>();
    let resume = AttachRequest {
        channel_serial: Some(serials[0].clone()),
        resume_allowed: true,
        ..Default::default()
    };
    let mut back = viewer(&hub, "r", "back", Format::Msgpack, None, true, &resume);
    publish_all(&hub, "r", vec![json_state("r3", &state(3))], None);
    let frames = frames(&mut back);
    // ably-js re-attaches from the frame before one it cannot decode: the whole message goes
    // in a frame of its own, or a client failing on r2 would be sent r1 and r2 together again.
    assert_eq!(frames.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
    let decoded = as_the_client_decodes(&frames.concat());
    assert_eq!(
        ids_patched(&decoded),
        [("r1", false), ("r2", true), ("r3", true)],
        "replayed r1 whole, r2 patched, then live r3 patched against r2"
    );
    for (i, (_, payload, _)) in decoded.iter().enumerate() {
        assert_eq!(payload, &state(i + 1).to_string().into_bytes());
    }
}

#[test]
fn filters_pick_each_views_messages_and_a_connection_may_hold_a_filtered_and_a_plain_one() {
    let hub = Hub::default();
    let request = AttachRequest::default();
    let only_tips = "name == `\"tip\"`";
    let big = "headers.amount > `100`";
    let mut plain = viewer(&hub, "f", "c1", Format::Json, None, false, &request);
    let mut tips = viewer(
        &hub,
        "f",
        "c1",
        Format::Json,
        Some(only_tips),
        false,
        &request,
    );
    let mut big_ones = viewer(&hub, "f", "c2", Format::Msgpack, Some(big), false, &request);
    let mut tips_again = viewer(
        &hub,
        "f",
        "c3",
        Format::Json,
        Some(only_tips),
        false,
        &request,
    );
    let message = |name: &str, amount: Option<u64>| Message {
        name: Some(name.to_owned()),
        data: Some(Data::String(format!("{name} {amount:?}"))),
        extras: amount.map(|a| serde_json::json!({ "headers": { "amount": a } })),
        action: Some(0),
        timestamp: Some(protocol::now_ms()),
        ..Default::default()
    };
    // No ids: subsets must carry the ones the client would have given them (`<frame id>:<i>`).
    hub.publish(Publication {
        channel: "f",
        messages: vec![
            message("tip", Some(500)),
            message("chat", None),
            message("tip", Some(5)),
            message("gift", Some(101)),
        ],
        client_ids: vec![false; 4],
        connection_id: Some("publisher"),
        id: Some("publisher:7".to_owned()),
        timestamp: protocol::now_ms(),
    })
    .unwrap();
    let ids = |messages: Vec<Message>| {
        messages
            .into_iter()
            .map(|m| m.id.unwrap_or_else(|| "(given by index)".to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        received(&mut plain).len(),
        4,
        "the plain attachment gets all"
    );
    assert_eq!(ids(received(&mut tips)), ["publisher:7:0", "publisher:7:2"]);
    assert_eq!(
        ids(received(&mut tips_again)),
        ["publisher:7:0", "publisher:7:2"]
    );
    assert_eq!(
        ids(received(&mut big_ones)),
        ["publisher:7:0", "publisher:7:3"]
    );

    // The filtered attachment goes; the plain one of the same connection stays.
    hub.detach("f", &format!("c1\u{0}{only_tips}"));
    publish_all(
        &hub,
        "f",
        vec![stamped("t9", "tip", Data::String("x".into()), None)],
        None,
    );
    assert_eq!(ids(received(&mut plain)), ["t9"]);
    assert!(received(&mut tips).is_empty(), "detached");
}

#[test]
fn a_filtered_delta_view_patches_against_the_previous_message_it_matched() {
    let hub = Hub::default();
    let request = AttachRequest::default();
    let mut states = viewer(
        &hub,
        "v",
        "c1",
        Format::Json,
        Some("name == 'state'"),
        true,
        &request,
    );
    for i in 0..4 {
        publish_all(
            &hub,
            "v",
            vec![json_state(&format!("s{i}"), &state(i))],
            None,
        );
        // Between states, chat the filter drops.
        let chat = stamped(&format!("chat{i}"), "chat", Data::String("hi".into()), None);
        publish_all(&hub, "v", vec![chat], None);
    }
    let decoded = as_the_client_decodes(&received(&mut states));
    assert_eq!(
        ids_patched(&decoded),
        [("s0", false), ("s1", true), ("s2", true), ("s3", true)]
    );
}

#[test]
fn a_resume_with_no_delta_attachment_left_meanwhile_starts_the_chain_again_from_its_replay() {
    let hub = Hub::default();
    // Nobody with deltas while these are published: the channel keeps no chain.
    let serials: Vec<String> = (0..3)
        .map(|i| {
            publish_all(
                &hub,
                "l",
                vec![json_state(&format!("l{i}"), &state(i))],
                None,
            )
        })
        .map(|serials| serials[0].clone().unwrap())
        .collect();
    let resume = AttachRequest {
        channel_serial: Some(serials[0].clone()),
        resume_allowed: true,
        ..Default::default()
    };
    let mut back = viewer(&hub, "l", "back", Format::Json, None, true, &resume);
    publish_all(&hub, "l", vec![json_state("l3", &state(3))], None);
    let decoded = as_the_client_decodes(&received(&mut back));
    assert_eq!(
        ids_patched(&decoded),
        [("l1", false), ("l2", true), ("l3", true)],
        "the live l3 patches the replayed l2"
    );
}

#[test]
fn an_occupancy_event_moves_no_chain_and_the_watcher_it_went_to_gets_its_next_message_whole() {
    let hub = Hub::default();
    let request = AttachRequest::default();
    let outbox = Arc::new(Outbox::new(Format::Json, budget(64)));
    let mut watcher = subscriber("o", "watcher", Modes::DEFAULT, true, outbox);
    watcher.occupancy_events = true;
    watcher.view.delta = Some(DeltaCursor::default());
    let (mut watcher, _) = attach_subscriber(&hub, "o", watcher, &request);
    let mut other = viewer(&hub, "o", "other", Format::Json, None, true, &request);
    publish_all(&hub, "o", vec![json_state("o0", &state(0))], None);
    publish_all(&hub, "o", vec![json_state("o1", &state(1))], None);
    // Someone else attaching changes the occupancy: the watcher is told.
    let _late = viewer(&hub, "o", "late", Format::Json, None, false, &request);
    hub.flush_occupancy();
    publish_all(&hub, "o", vec![json_state("o2", &state(2))], None);
    let messages = received(&mut watcher);
    let names: Vec<&str> = messages.iter().filter_map(|m| m.name.as_deref()).collect();
    assert_eq!(names, ["state", "state", "[meta]occupancy", "state"]);
    let patched: Vec<bool> = messages
        .iter()
        .map(|m| m.extras.as_ref().is_some_and(|e| e.get("delta").is_some()))
        .collect();
    assert_eq!(
        patched,
        [false, true, false, false],
        "o2 whole after the event"
    );
    let other = as_the_client_decodes(&received(&mut other));
    assert_eq!(
        patched_flags(&other),
        [false, true, true],
        "the others' chain goes on past the event they were not sent"
    );
}

#[test]
fn a_channel_keeps_at_most_64_delta_chains_whatever_the_number_of_filters() {
    let hub = Hub::default();
    let request = AttachRequest::default();
    // 70 attachments, each with a filter of its own that every state matches.
    let mut viewers: Vec<TestSubscriber> = (0..70)
        .map(|i| {
            let filter = format!("name == 'state' || name == 'other-{i}'");
            viewer(
                &hub,
                "m",
                &format!("c{i}"),
                Format::Msgpack,
                Some(&filter),
                true,
                &request,
            )
        })
        .collect();
    publish_all(&hub, "m", vec![json_state("m0", &state(0))], None);
    publish_all(&hub, "m", vec![json_state("m1", &state(1))], None);
    let patched = viewers
        .iter_mut()
        .map(|viewer| as_the_client_decodes(&received(viewer)))
        .filter(|decoded| decoded.len() == 2 && decoded[1].2)
        .count();
    assert_eq!(
        patched, 64,
        "64 views keep a chain; the other six get whole messages"
    );
}
