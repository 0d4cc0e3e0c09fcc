//! Presence and connection state across `realtime` nodes sharing one `redis-server`.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    attach, attach_resumed, attached, block_on, client, enter, eventually, next_json,
    next_presence, nodes, numbered, on_nodes, publish_serial, rest, rest_members, resume_ids,
    send_json, until_graces_recorded, RedisServer, Request, Socket, ENTER, LEAVE, RESUMED,
};

#[test]
fn presence_entered_on_one_node_is_seen_on_every_node() {
    on_nodes(3, &[], async |_, nodes| {
        let mut watcher = attached(&nodes[1], "watcher", "", "call:1").await;
        let mut alice = attached(&nodes[0], "alice", "", "call:1").await;
        enter(&mut alice, "call:1", "hi").await;

        let event = next_presence(&mut watcher).await;
        assert_eq!(
            (
                event["action"].as_u64(),
                event["clientId"].as_str(),
                event["data"].as_str()
            ),
            (Some(ENTER), Some("alice"), Some("hi")),
            "node B hears node A's enter: {event}"
        );
        assert_eq!(
            rest_members(&nodes[2], "call:1").await,
            ["alice"],
            "node C's REST"
        );

        // A late subscriber on node C gets alice in its SYNC.
        let (mut late, _) = client(&nodes[2], "late", "").await;
        send_json(&mut late, json!({"action": 10, "channel": "call:1"})).await;
        let attached = next_json(&mut late).await;
        assert_eq!(attached["action"], 11);
        let sync = next_json(&mut late).await;
        assert_eq!(sync["action"], 16, "{sync}");
        assert_eq!(sync["presence"][0]["clientId"], "alice");

        // A clean close leaves everywhere.
        send_json(&mut alice, json!({"action": 7})).await;
        let event = next_presence(&mut watcher).await;
        assert_eq!(event["action"].as_u64(), Some(LEAVE), "{event}");
        assert!(rest_members(&nodes[2], "call:1").await.is_empty());
    });
}

/// A clean close sent right behind an ENTER reaches the node before the ENTER comes back to it
/// from Redis: the member still leaves, on every node, after its enter.
#[test]
fn a_member_that_closes_right_after_entering_leaves_on_every_node() {
    on_nodes(2, &[], async |_, nodes| {
        let mut watcher = attached(&nodes[1], "watcher", "", "call:7").await;
        let quick: Vec<String> = (0..5).map(|i| format!("quick{i}")).collect();
        for client_id in &quick {
            let mut socket = attached(&nodes[0], client_id, "", "call:7").await;
            let enter = json!({"action": 14, "channel": "call:7", "msgSerial": 0,
                               "presence": [{"action": ENTER, "data": "hi"}]});
            send_json(&mut socket, enter).await;
            send_json(&mut socket, json!({"action": 7})).await;
            // As a client does, wait for CLOSED: dropping the socket at once would reset it,
            // and the server could lose the unread CLOSE and take it for a dropped transport.
            while next_json(&mut socket).await["action"] != 8 {}
        }
        // Presence events come batched: every item of every PRESENCE frame counts.
        let mut seen: Vec<(String, u64)> = Vec::new();
        while seen.iter().filter(|(_, action)| *action == LEAVE).count() < quick.len() {
            let frame = tokio::time::timeout(Duration::from_secs(5), next_json(&mut watcher))
                .await
                .unwrap_or_else(|_| panic!("a LEAVE for every quick member; saw {seen:?}"));
            if frame["action"] != 14 {
                continue;
            }
            for event in frame["presence"].as_array().into_iter().flatten() {
                let client_id = event["clientId"].as_str().unwrap_or_default().to_owned();
                seen.push((client_id, event["action"].as_u64().unwrap_or(0)));
            }
        }
        for client_id in &quick {
            let actions: Vec<u64> = seen
                .iter()
                .filter(|(id, _)| id == client_id)
                .map(|(_, action)| *action)
                .collect();
            assert_eq!(actions, [ENTER, LEAVE], "{client_id}: {seen:?}");
        }
        for node in &nodes {
            eventually("no member left behind", Duration::from_secs(5), || async {
                let members = rest_members(node, "call:7").await;
                if members.is_empty() {
                    Ok(())
                } else {
                    Err(members)
                }
            })
            .await;
        }
    });
}

/// Enters presence with `msg_serial` (a connection's later PRESENCE frames) and waits for the
/// ACK.
async fn enter_with(socket: &mut Socket, channel: &str, data: &str, msg_serial: u64) {
    send_json(
        socket,
        json!({"action": 14, "channel": channel, "msgSerial": msg_serial,
               "presence": [{"action": ENTER, "data": data}]}),
    )
    .await;
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 1 && frame["msgSerial"] == msg_serial {
            return;
        }
        assert_ne!(frame["action"], 2, "NACK: {frame}");
    }
}

/// Every presence event (channel, clientId, action) in the next frames, until each of `until`
/// was among them.
async fn presence_until(
    socket: &mut Socket,
    until: &[(&str, &str, u64)],
) -> Vec<(String, String, u64)> {
    let mut seen: Vec<(String, String, u64)> = Vec::new();
    while !until.iter().all(|wanted| {
        seen.iter()
            .any(|(c, id, a)| (c.as_str(), id.as_str(), *a) == *wanted)
    }) {
        let frame = next_json(socket).await;
        if frame["action"] != 14 {
            continue;
        }
        for event in frame["presence"].as_array().into_iter().flatten() {
            seen.push((
                frame["channel"].as_str().unwrap_or_default().to_owned(),
                event["clientId"].as_str().unwrap_or_default().to_owned(),
                event["action"].as_u64().unwrap_or(0),
            ));
        }
    }
    seen
}

/// Polls `ZCARD rt:orphans` until it is `n` (the reaper orphaned the dead node's members).
async fn until_orphans(redis: &RedisServer, n: u64) {
    eventually(
        format!("{n} orphans indexed"),
        Duration::from_secs(15),
        || async {
            if redis.cli(&["ZCARD", "rt:orphans"]).trim().parse::<u64>() == Ok(n) {
                Ok(())
            } else {
                Err(redis.cli(&["ZRANGE", "rt:orphans", "0", "-1", "WITHSCORES"]))
            }
        },
    )
    .await;
}

#[test]
fn a_dead_nodes_member_that_never_returns_leaves_once_after_its_grace_seen_on_every_node() {
    let redis = RedisServer::start();
    let mut nodes = nodes(&redis, 3, &["--node-lease-ms", "1000"]);
    block_on(async {
        let mut watchers = Vec::new();
        for node in &nodes[1..] {
            let watcher = attached(node, "watcher", "", "live:9").await;
            watchers.push(watcher);
        }
        let mut alice = attached(&nodes[0], "alice", "&remainPresentFor=1500", "live:9").await;
        enter(&mut alice, "live:9", "here").await;
        for watcher in &mut watchers {
            assert_eq!(next_presence(watcher).await["action"].as_u64(), Some(ENTER));
        }

        until_graces_recorded(&redis, 1).await;
        let killed_at = std::time::Instant::now();
        nodes[0].kill(); // SIGKILL: no goodbye, no parking.
                         // Reaped: orphaned, not gone. Every node still has her.
        until_orphans(&redis, 1).await;
        for node in &nodes[1..] {
            assert_eq!(
                rest_members(node, "live:9").await,
                ["alice"],
                "orphaned, still present"
            );
        }

        for (n, watcher) in watchers.iter_mut().enumerate() {
            let events = presence_until(watcher, &[("live:9", "alice", LEAVE)]).await;
            assert_eq!(
                events,
                [("live:9".to_owned(), "alice".to_owned(), LEAVE)],
                "node {}: one LEAVE, nothing before it",
                n + 1
            );
        }
        assert!(
            killed_at.elapsed() >= Duration::from_millis(1500),
            "she stayed for her grace (remainPresentFor) at least: {:?}",
            killed_at.elapsed()
        );
        for node in &nodes[1..] {
            assert!(rest_members(node, "live:9").await.is_empty());
        }
        until_orphans(&redis, 0).await;
        // Announced once: nothing more arrives on either node.
        for watcher in &mut watchers {
            let more =
                tokio::time::timeout(Duration::from_millis(1500), next_presence(watcher)).await;
            assert!(more.is_err(), "a second announcement: {more:?}");
        }
        drop(alice);
    });
}

/// Ends the transport without a CLOSE: the server parks the connection.
async fn drop_transport(socket: Socket) {
    drop(socket);
}

#[test]
fn a_connection_resumes_on_another_node_with_its_id_and_every_missed_message() {
    on_nodes(2, &[], async |_, nodes| {
        let (mut bob, connected) = client(&nodes[0], "bob", "").await;
        let (id, key) = resume_ids(&connected);
        attach(&mut bob, "session:2").await;
        publish_serial(&nodes[1], "session:2", 0).await;
        let frame = next_json(&mut bob).await;
        let seen = frame["channelSerial"].as_str().unwrap().to_owned();
        drop_transport(bob).await;
        for n in 1..4 {
            publish_serial(&nodes[1], "session:2", n).await;
        }

        let (mut bob, connected) = client(&nodes[1], "bob", &format!("&resume={key}")).await;
        assert_eq!(
            connected["connectionId"],
            id.as_str(),
            "same connection: {connected}"
        );
        assert!(connected.get("error").is_none(), "{connected}");
        attach_resumed(&mut bob, "session:2", &seen, "").await;
        assert_eq!(numbered(&mut bob, 3).await, ["1", "2", "3"]);
        publish_serial(&nodes[0], "session:2", 4).await;
        assert_eq!(
            numbered(&mut bob, 1).await,
            ["4"],
            "live after the replay, once"
        );

        // The key it resumed with is spent everywhere.
        let (_, again) = client(&nodes[0], "bob", &format!("&resume={key}")).await;
        assert_ne!(again["connectionId"], id.as_str(), "{again}");
    });
}

#[test]
fn a_connection_on_a_killed_node_resumes_on_another_every_channel_resumed_its_presence_kept() {
    let redis = RedisServer::start();
    let mut nodes = nodes(&redis, 2, &["--node-lease-ms", "1000"]);
    block_on(async {
        let channels = ["call:8", "call:9"];
        let (mut watcher, _) = client(&nodes[1], "watcher", "").await;
        for channel in channels {
            attach(&mut watcher, channel).await;
        }
        // Carol comes back; dave, on the same node with the same grace, never does.
        let grace = "&remainPresentFor=2500";
        let (mut carol, connected) = client(&nodes[0], "carol", grace).await;
        let (id, key) = resume_ids(&connected);
        let (mut dave, _) = client(&nodes[0], "dave", grace).await;
        let mut seen = Vec::new();
        for (n, channel) in channels.into_iter().enumerate() {
            attach(&mut carol, channel).await;
            enter_with(&mut carol, channel, "watching", n as u64).await;
            attach(&mut dave, channel).await;
            enter_with(&mut dave, channel, "watching", n as u64).await;
            publish_serial(&nodes[1], channel, 0).await;
            let frame = loop {
                let frame = next_json(&mut carol).await;
                if frame["action"] == 15 {
                    break frame;
                }
            };
            seen.push(frame["channelSerial"].as_str().unwrap().to_owned());
        }
        let mut events = presence_until(
            &mut watcher,
            &[("call:8", "dave", ENTER), ("call:9", "dave", ENTER)],
        )
        .await;

        until_graces_recorded(&redis, 2).await;
        nodes[0].kill();
        for channel in channels {
            publish_serial(&nodes[1], channel, 1).await;
        }

        let (mut carol, connected) = client(&nodes[1], "carol", &format!("&resume={key}")).await;
        assert_eq!(connected["connectionId"], id.as_str(), "{connected}");
        assert!(connected.get("error").is_none(), "{connected}");
        for (channel, seen) in channels.into_iter().zip(&seen) {
            send_json(
                &mut carol,
                json!({"action": 10, "channel": channel, "channelSerial": seen}),
            )
            .await;
            let attached = loop {
                let frame = next_json(&mut carol).await;
                if frame["action"] == 11 {
                    break frame;
                }
            };
            assert_ne!(
                attached["flags"].as_u64().unwrap() & RESUMED,
                0,
                "{channel}: RESUMED, presence kept: {attached}"
            );
            assert_eq!(
                numbered(&mut carol, 1).await,
                ["1"],
                "{channel}: the missed one, once"
            );
        }
        // ably-js re-enters its members on every re-attach, with the ids the server gave them:
        // acknowledged, and a repeat nobody sees.
        for (n, channel) in channels.into_iter().enumerate() {
            let msg_serial = (channels.len() + n) as u64;
            send_json(
                &mut carol,
                json!({"action": 14, "channel": channel, "msgSerial": msg_serial,
                       "presence": [{"action": ENTER, "id": format!("{id}:{n}:0"), "data": "watching"}]}),
            )
            .await;
            loop {
                let frame = next_json(&mut carol).await;
                assert_ne!(frame["action"], 2, "NACK: {frame}");
                if frame["action"] == 1 && frame["msgSerial"] == msg_serial {
                    break;
                }
            }
        }

        // Dave's LEAVE comes when both their graces have passed: carol's members, adopted,
        // never left nor entered again (had her re-entries been announced, they would have come
        // before it).
        events.extend(
            presence_until(
                &mut watcher,
                &[("call:8", "dave", LEAVE), ("call:9", "dave", LEAVE)],
            )
            .await,
        );
        let carols: Vec<_> = events.iter().filter(|(_, id, _)| id == "carol").collect();
        assert_eq!(
            carols,
            [
                &("call:8".to_owned(), "carol".to_owned(), ENTER),
                &("call:9".to_owned(), "carol".to_owned(), ENTER)
            ],
            "the watcher saw carol enter once per channel, nothing more: {events:?}"
        );
        for channel in channels {
            assert_eq!(
                rest_members(&nodes[1], channel).await,
                ["carol"],
                "{channel}"
            );
        }
        drop(dave);
    });
}

#[test]
fn another_client_cannot_resume_someone_elses_connection_across_nodes() {
    on_nodes(2, &[], async |redis, nodes| {
        let (dave, connected) = client(&nodes[0], "dave", "").await;
        let (id, key) = resume_ids(&connected);
        // Written before CONNECTED went out: a resume elsewhere right away finds it.
        assert_eq!(
            redis.cli(&["EXISTS", &format!("rt:conn:{key}")]).trim(),
            "1"
        );
        drop_transport(dave).await;
        let (_, refused) = client(&nodes[1], "mallory", &format!("&resume={key}")).await;
        assert_ne!(refused["connectionId"], id.as_str(), "{refused}");
        assert_eq!(refused["error"]["code"], 80008, "{refused}");
        let (_, owner) = client(&nodes[1], "dave", &format!("&resume={key}")).await;
        assert_eq!(
            owner["connectionId"],
            id.as_str(),
            "the owner still can: {owner}"
        );
    });
}

/// Redis back empty under two nodes: each writes back its own connections' presence members
/// and resume records (on its next lease tick, finding its lease gone), and no node announces
/// the members as gone meanwhile. Afterwards a node's death is as invisible as before: its
/// client resumes on the other node with its connection and member.
#[test]
fn after_redis_comes_back_empty_members_never_flap_and_connections_still_resume_elsewhere() {
    let mut redis = RedisServer::start();
    let mut nodes = nodes(&redis, 2, &["--node-lease-ms", "1000"]);
    block_on(async {
        let channel = "stream:reseed";
        let mut watcher = attached(&nodes[1], "watcher", "", channel).await;
        let (mut alice, connected) = client(&nodes[0], "alice", "").await;
        let (id, key) = resume_ids(&connected);
        attach(&mut alice, channel).await;
        enter(&mut alice, channel, "a").await;
        let mut bob = attached(&nodes[1], "bob", "", channel).await;
        enter(&mut bob, channel, "b").await;
        let mut events = presence_until(
            &mut watcher,
            &[(channel, "alice", ENTER), (channel, "bob", ENTER)],
        )
        .await;

        tokio::task::block_in_place(|| redis.restart());
        let members = format!("rt:{{{channel}}}:presence");
        let record = format!("rt:conn:{key}");
        eventually(
            "both members and alice's resume record written back",
            Duration::from_secs(10),
            || async {
                if redis.cli(&["HLEN", &members]).trim() == "2"
                    && redis.cli(&["EXISTS", &record]).trim() == "1"
                {
                    Ok(())
                } else {
                    Err(redis.cli(&["HGETALL", &members]))
                }
            },
        )
        .await;
        // Past the moment a node re-reads members it found missing (1.5 leases after its
        // catch-up), then a new member: everything the watcher sees up to her ENTER.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let mut carol = attached(&nodes[0], "carol", "", channel).await;
        enter(&mut carol, channel, "c").await;
        events.extend(presence_until(&mut watcher, &[(channel, "carol", ENTER)]).await);
        let leaves: Vec<_> = events.iter().filter(|(_, _, a)| *a == LEAVE).collect();
        assert!(leaves.is_empty(), "nobody left: {events:?}");

        nodes[0].kill(); // SIGKILL: no goodbye, no parking.
        let (_alice, resumed) = client(&nodes[1], "alice", &format!("&resume={key}")).await;
        assert_eq!(resumed["connectionId"], id.as_str(), "{resumed}");
        assert!(resumed.get("error").is_none(), "{resumed}");
        let mut present = rest_members(&nodes[1], channel).await;
        present.sort();
        assert_eq!(present, ["alice", "bob", "carol"]);
        drop((alice, bob, carol));
    });
}

/// A `--sandbox` app's presence fixtures are stored in Redis like any member: a node catching
/// the channel up finds them there instead of taking the empty store's word and making them
/// leave (ably-js's `rest/presence` read 0 members and 6 LEAVEs); deleting the app removes them.
#[test]
fn a_sandbox_apps_presence_fixtures_are_stored_like_any_member() {
    on_nodes(1, &["--sandbox"], async |redis, nodes| {
        let spec = json!({
            "keys": [{}],
            "channels": [{"name": "persisted:presence_fixtures", "presence": [
                {"clientId": "client_bool", "data": "true"},
                {"clientId": "client_json", "data": "{\"x\":1}", "encoding": "json"},
            ]}],
        });
        let (status, body) = rest(nodes[0].addr, Request::post_json("/apps", &spec)).await;
        assert_eq!(status, 201, "{body}");
        let app: serde_json::Value = serde_json::from_str(&body).unwrap();
        let (app_id, key) = (
            app["appId"].as_str().unwrap(),
            app["keys"][0]["keyStr"].as_str().unwrap(),
        );
        let members_key = format!("rt:{{{app_id}\u{1f}persisted:presence_fixtures}}:presence");

        let path = "/channels/persisted:presence_fixtures/presence";
        let (status, body) = rest(nodes[0].addr, Request::get(path).basic(key)).await;
        assert_eq!(status, 200, "{body}");
        let members: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut ids: Vec<&str> = members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["clientId"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, ["client_bool", "client_json"], "{body}");
        assert_eq!(redis.cli(&["HLEN", &members_key]).trim(), "2");
        let history = format!("{path}/history");
        let (status, body) = rest(nodes[0].addr, Request::get(history).basic(key)).await;
        assert_eq!(status, 200, "{body}");
        let events: serde_json::Value = serde_json::from_str(&body).unwrap();
        let actions: Vec<u64> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_u64().unwrap())
            .collect();
        assert_eq!(actions, [ENTER, ENTER], "{body}");

        let delete = Request::new("DELETE", format!("/apps/{app_id}")).basic(key);
        let (status, body) = rest(nodes[0].addr, delete).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(redis.cli(&["HLEN", &members_key]).trim(), "0");
    });
}
