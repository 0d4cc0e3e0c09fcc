//! Occupancy: counts and `[meta]occupancy` events.

use super::*;

/// `[meta]occupancy` goes only to subscribers that asked, once per flush, and only after a change.
#[test]
fn occupancy_events_go_to_those_who_asked_once_per_change() {
    let hub = Hub::default();
    let outbox = Arc::new(Outbox::new(Format::Json, budget(64)));
    let watcher = Subscriber {
        occupancy_events: true,
        ..subscriber("live", "watcher", Modes::DEFAULT, true, outbox)
    };
    let (mut watcher, _) = attach_subscriber(&hub, "live", watcher, &AttachRequest::default());
    let mut viewers: Vec<TestSubscriber> = (0..3)
        .map(|i| subscribe(&hub, "live", &format!("viewer{i}"), Format::Json, true, 64))
        .collect();

    hub.flush_occupancy();
    let event = decode(
        watcher.queue.try_recv().expect("an occupancy event"),
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
    assert!(watcher.queue.try_recv().is_err(), "one event per flush");
    for viewer in &mut viewers {
        assert!(
            viewer.queue.try_recv().is_err(),
            "only the watcher asked for occupancy"
        );
    }

    hub.flush_occupancy();
    assert!(watcher.queue.try_recv().is_err(), "no change, no event");

    // A renewed token that narrows a viewer's modes changes the counts: one event.
    hub.set_modes("live", "viewer2", Modes::PUBLISH);
    hub.flush_occupancy();
    let event = decode(
        watcher
            .queue
            .try_recv()
            .expect("an event after a mode change"),
        Format::Json,
    );
    let Some(protocol::Data::Other(data)) = &event.messages.expect("messages")[0].data else {
        panic!("occupancy data is an object");
    };
    assert_eq!(data["metrics"]["subscribers"], 3, "{data}");

    hub.detach("live", "viewer0");
    hub.detach("live", "viewer1");
    hub.flush_occupancy();
    let event = decode(
        watcher.queue.try_recv().expect("an event after the change"),
        Format::Json,
    );
    let Some(protocol::Data::Other(data)) = &event.messages.expect("messages")[0].data else {
        panic!("occupancy data is an object");
    };
    assert_eq!(data["metrics"]["connections"], 2, "{data}");
    assert!(watcher.queue.try_recv().is_err(), "two detaches, one event");
}

/// The counts occupancy reports follow attaches, re-attaches with other modes, mode changes,
/// detaches and presence changes (kept as they change, not recounted).
#[test]
fn occupancy_counts_follow_attaches_detaches_and_mode_changes() {
    let hub = Hub::default();
    let attach = |connection_id: &str, modes: Modes| {
        attach_as(
            &hub,
            "live",
            connection_id,
            modes,
            &AttachRequest::default(),
            8,
        )
        .0
    };
    let occupancy = |connections, publishers, subscribers, presence_subscribers| Occupancy {
        connections,
        publishers,
        subscribers,
        presence_subscribers,
        ..Occupancy::default()
    };
    let _x = attach("x", Modes::DEFAULT);
    let _y = attach("y", Modes::SUBSCRIBE);
    let _z = attach("z", Modes::PUBLISH | Modes::PRESENCE);
    assert_eq!(hub.occupancy("live"), occupancy(3, 2, 2, 1));
    let _y = attach("y", Modes::PUBLISH | Modes::PRESENCE_SUBSCRIBE);
    assert_eq!(
        hub.occupancy("live"),
        occupancy(3, 3, 1, 2),
        "a re-attach replaces the connection's modes, it does not add a subscriber"
    );
    hub.set_modes("live", "z", Modes::SUBSCRIBE);
    assert_eq!(hub.occupancy("live"), occupancy(3, 2, 2, 2));
    hub.detach("live", "x");
    assert_eq!(hub.occupancy("live"), occupancy(2, 1, 1, 1));
    hub.detach("live", "x");
    assert_eq!(
        hub.occupancy("live"),
        occupancy(2, 1, 1, 1),
        "detached twice"
    );

    for (client_id, connection_id) in [("alice", "y"), ("bob", "y"), ("carol", "z")] {
        enter(&hub, "live", client_id, connection_id).unwrap();
    }
    let present = |members, connections| Occupancy {
        presence_members: members,
        presence_connections: connections,
        ..occupancy(2, 1, 1, 1)
    };
    assert_eq!(hub.occupancy("live"), present(3, 2));
    let leave = |client_id: &str, connection_id: &str| {
        let event = presence_event(LEAVE, client_id, connection_id);
        hub.presence("live", vec![event]).unwrap();
    };
    leave("alice", "y");
    assert_eq!(hub.occupancy("live"), present(2, 2));
    leave("carol", "z");
    assert_eq!(hub.occupancy("live"), present(1, 1));
    leave("bob", "y");
    hub.detach("live", "y");
    hub.detach("live", "z");
    assert_eq!(hub.occupancy("live"), Occupancy::default());
}
