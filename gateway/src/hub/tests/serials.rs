//! Serials: order, idempotency, epochs.

use super::*;

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
fn serials_stay_unique_when_a_channel_is_made_again() {
    let hub = Hub::default();
    let first = publish(&hub, "c", "x", None, None);
    hub.sweep(AFTER_RETENTION);
    assert_eq!(hub.channel_count(), 0);
    let second = publish(&hub, "c", "x", None, None);
    assert!(second[0] > first[0], "{second:?} after {first:?}");
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
