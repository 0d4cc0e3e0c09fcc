//! Presence: SYNC paging, batched broadcasts, the member cap, and syncing with the store.

use super::*;

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
        let (mut watcher, attached) = attach_to_room(&hub, "watcher", Modes::DEFAULT);
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
                assert_eq!(m.action, PRESENT, "{m:?}");
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
    let (mut early, attached) = attach_to_room(&hub, "early", Modes::DEFAULT);
    assert!(!has_flag(&attached, flags::HAS_PRESENCE), "{attached:?}");
    assert!(drain(&mut early).is_empty());
    enter(&hub, "room", "alice", "a").unwrap();
    let (mut deaf, attached) = attach_to_room(&hub, "deaf", Modes::SUBSCRIBE);
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
                LEAVE,
                &format!("client{i}"),
                &format!("conn{i}"),
            )],
        )
        .unwrap();
    }
    hub.flush_presence();
    // Nothing left: this one sends nothing.
    hub.flush_presence();

    let expected_waves: [(u8, std::ops::Range<usize>); 3] =
        [(ENTER, 0..1), (ENTER, 1..N), (LEAVE, 0..N)];
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
    hub.presence("room", vec![presence_event(UPDATE, "b", "b")])
        .unwrap();
    let batch = vec![
        presence_event(ENTER, "e", "e"),
        presence_event(ENTER, "f", "f"),
    ];
    assert_eq!(hub.presence("room", batch).unwrap_err().code, 91003);
    assert_eq!(hub.occupancy("room").presence_members, 3);
    hub.presence("room", vec![presence_event(LEAVE, "a", "a")])
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
    let result = hub.presence("room", vec![presence_event(UPDATE, "c", "c")]);
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
        presence_event(ENTER, "alice", "a"),
        // PRESENT is for SYNC; a client may not send it.
        presence_event(PRESENT, "bob", "b"),
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

/// A store missing members this node holds (Redis back empty, their nodes not yet written
/// back) keeps them until the re-check; the re-check then makes the missing leave.
#[test]
fn members_missing_from_the_store_stay_until_the_recheck() {
    let hub = hub_with(|_| {});
    enter(&hub, "room", "alice", "c1").unwrap();
    enter(&hub, "room", "bob", "c2").unwrap();
    let bob = presence_event(ENTER, "bob", "c2");
    let carol = presence_event(ENTER, "carol", "c3");

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

/// Enters racing for the last places: checked and applied in one critical section, no more pass
/// than there is room for, and every refusal is 91003.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_enters_at_the_cap_never_exceed_it() {
    const CAP: usize = 20;
    const ENTERS: usize = 400;
    let hub = Arc::new(hub_with(|c| c.max_presence_members = CAP));
    for round in 0..20 {
        let channel = format!("room{round}");
        let start = Arc::new(tokio::sync::Barrier::new(ENTERS));
        let tasks: Vec<_> = (0..ENTERS)
            .map(|i| {
                let (hub, start, channel) = (hub.clone(), start.clone(), channel.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    enter(&hub, &channel, &format!("client{i}"), &format!("conn{i}"))
                })
            })
            .collect();
        let mut entered = 0;
        for task in tasks {
            match task.await.expect("enter task") {
                Ok(()) => entered += 1,
                Err(refused) => assert_eq!(refused.code, 91003, "{refused:?}"),
            }
        }
        let members = hub.presence_members(&channel).len();
        assert!(
            members <= CAP,
            "round {round}: {members} members, cap {CAP}"
        );
        assert_eq!(
            entered, members,
            "round {round}: every accepted enter is a member"
        );
        assert_eq!(members, CAP, "round {round}: the cap is reached");
    }
}
