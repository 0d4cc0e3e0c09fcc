//! Catch-up from the shared store: gaps, holes and new epochs.

use super::*;

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
fn caught_up_to_three() -> (Hub, TestSubscriber) {
    let hub = hub_with(|c| c.retention.max_messages = 500);
    hub.catch_up("c", log::serial(7, 0), stored(7, 1..=3), false);
    let (subscriber, _) = attach_to_c(&hub, "sub", &resume_from(&log::serial(7, 0)));
    (hub, subscriber)
}

/// `caught_up_to_three`, its replay read, then caught up again with these arguments: the hub,
/// its subscriber, and what that second catch-up sent it (see `stream_of`).
fn caught_up_again(
    floor: String,
    stored: Vec<Message>,
    old_epoch_complete: bool,
) -> (Hub, TestSubscriber, Vec<String>) {
    let (hub, mut subscriber) = caught_up_to_three();
    drain(&mut subscriber);
    hub.catch_up("c", floor, stored, old_epoch_complete);
    let sent = stream_of(&drain(&mut subscriber));
    (hub, subscriber, sent)
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
    let (hub, mut subscriber) = caught_up_to_three();
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
    let mut holey = stored(7, 4..=5);
    holey.extend(stored(7, 8..=9));
    let (hub, _, sent) = caught_up_again(log::serial(7, 7), holey, false);
    assert_eq!(
        sent,
        strings(&["4", "5", "90003", "8", "9"]),
        "what exists, in order, with the loss told where 6 and 7 are missing"
    );
    let request = resume_from(&log::serial(7, 5));
    refused_resume(&hub, "late", &request, "resume across the hole");
}

#[test]
fn a_new_epoch_continues_the_log_when_the_node_heard_the_old_one_to_its_end() {
    // Redis came back empty: a new epoch, whole from its first message.
    let (hub, mut subscriber, sent) = caught_up_again(log::serial(9, 0), stored(9, 1..=2), true);
    assert_eq!(
        sent,
        strings(&["1", "2"]),
        "the new epoch's messages, no notice"
    );
    hub.deliver("c", stored(9, 3..=3), None, None).unwrap();
    assert_eq!(datas(&drain(&mut subscriber)), strings(&["3"]));
    // A client that saw the old epoch's second message still resumes: old tail, then the new.
    assert_eq!(
        resumed_replay(&hub, "back", &log::serial(7, 2)),
        strings(&["3", "1", "2", "3"])
    );
}

#[test]
fn a_new_epoch_is_a_loss_when_the_node_cannot_show_it_heard_the_old_one_out() {
    let (hub, _, sent) = caught_up_again(log::serial(9, 0), stored(9, 1..=2), false);
    assert_eq!(sent, strings(&["90003", "1", "2"]));
    let request = resume_from(&log::serial(7, 2));
    refused_resume(&hub, "back", &request, "resume from the lost epoch");
}

#[test]
fn a_new_epoch_missing_its_first_messages_is_a_loss_even_when_the_old_one_was_heard_out() {
    let (_, _, sent) = caught_up_again(log::serial(9, 1), stored(9, 2..=3), true);
    assert_eq!(sent, strings(&["90003", "2", "3"]));
}

#[test]
fn a_new_epoch_with_nothing_stored_yet_is_where_the_channel_continues() {
    let (hub, mut subscriber, sent) = caught_up_again(log::serial(9, 0), Vec::new(), true);
    assert!(sent.is_empty(), "nothing to send, nothing lost");
    assert_eq!(
        hub.deliver("c", stored(9, 1..=1), None, None),
        Ok(true),
        "the new epoch follows on"
    );
    assert_eq!(datas(&drain(&mut subscriber)), strings(&["1"]));
}
