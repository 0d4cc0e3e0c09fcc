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
