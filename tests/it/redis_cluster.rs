//! Several `realtime` processes on a real 3-master Redis Cluster (`redis+cluster://`): channels
//! sharded by hash slot, sharded pub/sub, node state spread over the shards.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    attach, attach_resumed, attached, block_on, client, connect, enter, eventually, next_json,
    next_presence, nodes_at, numbered, publish, publish_serial, rest, rest_members, resume_ids,
    rewind_two, send_json, until_live, until_readyz, RedisCluster, Request, Server, Socket, ENTER,
    KEY, LEAVE,
};

/// Runs `test` on a fresh runtime (`block_on`) with a cluster, `one_channel_per_master` and `n`
/// nodes on it, each with `extra` flags.
fn on_cluster(
    n: usize,
    extra: &[&str],
    test: impl AsyncFnOnce(&RedisCluster, Vec<String>, Vec<Server>),
) {
    let cluster = RedisCluster::start();
    let channels = one_channel_per_master(&cluster);
    let nodes = nodes_at(&cluster.url(), n, extra);
    block_on(test(&cluster, channels, nodes));
}

/// One channel per master: channel names whose topics' slots land on masters 0, 1 and 2.
pub(crate) fn one_channel_per_master(cluster: &RedisCluster) -> Vec<String> {
    let mut channels: Vec<Option<String>> = vec![None; 3];
    for n in 0..200 {
        let channel = format!("room:{n}");
        let master = cluster.master_of(&format!("rt:ch:{{{channel}}}"));
        assert_eq!(
            master,
            cluster.master_of(&format!("rt:{{{channel}}}:log")),
            "a channel's topic and log share a slot"
        );
        channels[master].get_or_insert(channel);
        if channels.iter().all(Option::is_some) {
            return channels.into_iter().flatten().collect();
        }
    }
    panic!("no channel for some master: {channels:?}");
}

pub(crate) async fn subscriber(node: &Server, channels: &[String]) -> Socket {
    let mut socket = connect(node.addr, "key=app.k:secret&format=json").await;
    assert_eq!(next_json(&mut socket).await["action"], 4);
    for channel in channels {
        send_json(&mut socket, json!({"action": 10, "channel": channel})).await;
        assert_eq!(next_json(&mut socket).await["action"], 11);
    }
    socket
}

/// Per channel, `seen` (channel, data, serial, _) holds exactly `expected` (channel, data,
/// serial): every message once, in publish order, with the publisher's serials.
fn assert_per_channel(
    seen: &[(String, String, String, String)],
    expected: &[(String, String, String)],
    channels: &[String],
    context: &str,
) {
    for channel in channels {
        let got: Vec<(&str, &str)> = seen
            .iter()
            .filter(|(c, ..)| c == channel)
            .map(|(_, data, serial, _)| (data.as_str(), serial.as_str()))
            .collect();
        let want: Vec<(&str, &str)> = expected
            .iter()
            .filter(|(c, ..)| c == channel)
            .map(|(_, data, serial)| (data.as_str(), serial.as_str()))
            .collect();
        assert_eq!(
            got, want,
            "{context}: {channel} once each, in order, with the publisher's serials"
        );
    }
}

/// (channel, data, serial, id) of the next `n` messages named "n" on `socket`.
async fn numbered_on_channels(
    socket: &mut Socket,
    n: usize,
) -> Vec<(String, String, String, String)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let frame = next_json(socket).await;
        for message in frame["messages"].as_array().into_iter().flatten() {
            if message["name"] == "n" {
                seen.push((
                    frame["channel"].as_str().unwrap_or_default().to_owned(),
                    message["data"].as_str().unwrap_or_default().to_owned(),
                    message["serial"].as_str().unwrap_or_default().to_owned(),
                    message["id"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    seen
}

#[test]
fn a_publish_to_one_node_reaches_every_node_once_in_order_on_every_shard() {
    on_cluster(3, &[], async |cluster, channels, nodes| {
        let mut sockets = Vec::new();
        for node in &nodes[1..] {
            sockets.push(subscriber(node, &channels).await);
        }
        until_live(&nodes[0], &channels, &mut sockets).await;

        // Each channel's topic is a shard channel on the master holding its slot, not a
        // cluster-wide one.
        for (master, channel) in channels.iter().enumerate() {
            let topic = format!("rt:ch:{{{channel}}}");
            let shard = cluster.cli(master, &["PUBSUB", "SHARDCHANNELS"]);
            assert!(shard.contains(&topic), "master {master}: {shard}");
            for other in (0..3).filter(|o| *o != master) {
                let elsewhere = cluster.cli(other, &["PUBSUB", "SHARDCHANNELS"]);
                assert!(!elsewhere.contains(&topic), "master {other}: {elsewhere}");
            }
            let plain = cluster.cli(master, &["PUBSUB", "CHANNELS", "rt:ch:*"]);
            assert!(plain.trim().is_empty(), "no plain topics: {plain}");
        }

        let mut expected = Vec::new();
        for n in 0..12 {
            let channel = &channels[n % channels.len()];
            let serial = publish_serial(&nodes[0], channel, n).await;
            expected.push((channel.clone(), n.to_string(), serial));
        }
        let mut seen_by_node = Vec::new();
        for (i, socket) in sockets.iter_mut().enumerate() {
            let seen = numbered_on_channels(socket, expected.len()).await;
            assert_per_channel(&seen, &expected, &channels, &format!("node {}", i + 1));
            seen_by_node.push(seen);
        }
        // Channels on different shards interleave differently on each node; per channel the
        // order is the same (checked above), so compare each node's messages channel by channel.
        for seen in &mut seen_by_node {
            seen.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
        }
        assert_eq!(
            seen_by_node[0], seen_by_node[1],
            "nodes B and C saw the same messages, serials and ids"
        );
        assert!(seen_by_node[0].iter().all(|(.., id)| !id.is_empty()));
    });
}

#[test]
fn history_and_presence_work_across_nodes_on_a_cluster() {
    on_cluster(
        3,
        &["--node-lease-ms", "1000"],
        async |cluster, channels, mut nodes| {
            // History: stored on the channel's shard by node A, read by node B, rewound on node C.
            for channel in &channels {
                let mut serials = Vec::new();
                for n in 0..3 {
                    serials.push(publish_serial(&nodes[0], channel, n).await);
                }
                let (status, body) = rest(
                    nodes[1].addr,
                    Request::get(format!("/channels/{channel}/messages")).basic(KEY),
                )
                .await;
                assert_eq!(status, 200, "{body}");
                let page: serde_json::Value = serde_json::from_str(&body).unwrap();
                let got: Vec<String> = page
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["serial"].as_str().unwrap().to_owned())
                    .collect();
                serials.reverse();
                assert_eq!(got, serials, "{channel}: node A's publishes, newest first");

                let rewound = rewind_two(&nodes[2], channel).await;
                assert_eq!(rewound, ["1", "2"], "{channel}: rewind on node C");
            }

            // Presence: entered on node A (later killed), seen on B live and on C by REST.
            let channel = &channels[1];
            let mut watcher = attached(&nodes[1], "watcher", "", channel).await;
            let mut alice = attached(&nodes[0], "alice", "&remainPresentFor=1000", channel).await;
            enter(&mut alice, channel, "hi").await;
            let event = next_presence(&mut watcher).await;
            assert_eq!(
                (event["action"].as_u64(), event["clientId"].as_str()),
                (Some(ENTER), Some("alice")),
                "{event}"
            );
            assert_eq!(rest_members(&nodes[2], channel).await, ["alice"]);

            // Node A dies without a goodbye: a survivor orphans its members, and once alice's
            // grace (her remainPresentFor, recorded before the kill) has passed without a resume
            // she leaves once, through the cluster (leases, node sets, the orphan index and member
            // hashes on different shards).
            eventually(
                "alice's grace recorded",
                Duration::from_secs(10),
                || async {
                    (0..3).any(|i| {
                        let graces = cluster.cli(i, &["KEYS", "rt:node:*:graces"]);
                        !graces.trim().is_empty()
                    })
                },
            )
            .await;
            nodes[0].kill();
            let event = next_presence(&mut watcher).await;
            assert_eq!(
                (event["action"].as_u64(), event["clientId"].as_str()),
                (Some(LEAVE), Some("alice")),
                "{event}"
            );
            assert!(rest_members(&nodes[2], channel).await.is_empty());
            drop(alice);
        },
    );
}

#[test]
fn readyz_follows_every_shard_link() {
    let mut cluster = RedisCluster::start();
    // One seed is enough: the other masters are discovered.
    let node = Server::start(&["--keys", "app.k:secret", "--redis", &cluster.seed_url(2)]);
    block_on(async {
        until_readyz(&node, 200).await;
        cluster.stop_node(1);
        until_readyz(&node, 503).await;
        cluster.restart_node(1);
        until_readyz(&node, 200).await;

        // And the links carry channels again, on whichever shard.
        let channels = one_channel_per_master(&cluster);
        let mut sockets = vec![subscriber(&node, &channels).await];
        until_live(&node, &channels, &mut sockets).await;
        let body = r#"{"name":"n","data":"after"}"#;
        assert_eq!(rest(node.addr, publish(&channels[1], body)).await.0, 201);
        assert_eq!(numbered(&mut sockets[0], 1).await, ["after"]);
    });
}

#[test]
fn dropped_shard_links_are_re_established_and_back_filled() {
    on_cluster(2, &[], async |cluster, channels, nodes| {
        let mut sockets = vec![subscriber(&nodes[1], &channels).await];
        until_live(&nodes[0], &channels, &mut sockets).await;

        // Cut the pub/sub links on every shard (losing one makes a node rebuild them all, so
        // later kills may find them already gone); what is published now misses pub/sub and
        // must come back through the back-fill from each channel's shard.
        let killed = cluster.cli(0, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert_ne!(killed.trim(), "0", "master 0 had pub/sub links");
        for master in 1..3 {
            cluster.cli(master, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
        let mut expected = Vec::new();
        for n in 0..6 {
            let channel = &channels[n % channels.len()];
            let serial = publish_serial(&nodes[0], channel, n).await;
            expected.push((channel.clone(), n.to_string(), serial));
        }
        let seen = numbered_on_channels(&mut sockets[0], expected.len()).await;
        assert_per_channel(&seen, &expected, &channels, "after the links dropped");
    });
}

/// The ids of every master's pub/sub connections: a rebuilt link shows as new ids.
fn pubsub_connections(cluster: &RedisCluster) -> Vec<String> {
    let mut ids: Vec<String> = (0..3)
        .flat_map(|master| {
            let clients = cluster.cli(master, &["CLIENT", "LIST", "TYPE", "pubsub"]);
            let ids: Vec<String> = clients
                .split_whitespace()
                .filter(|field| field.starts_with("id="))
                .map(|id| format!("master {master} {id}"))
                .collect();
            ids
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_detach_leaves_the_shard_channel_without_rebuilding_the_link() {
    let cluster = RedisCluster::start();
    let channels = one_channel_per_master(&cluster);
    // The channel left, on master 1, and its topic there.
    let left = &channels[1];
    let (master, topic) = (1, format!("rt:ch:{{{left}}}"));
    let node = &Server::start(&["--keys", KEY, "--redis", &cluster.url()]);
    block_on(async {
        let mut sockets = vec![subscriber(node, &channels).await];
        until_live(node, &channels, &mut sockets).await;
        let links = pubsub_connections(&cluster);
        assert!(!links.is_empty());

        send_json(&mut sockets[0], json!({"action": 12, "channel": left})).await;
        assert_eq!(next_json(&mut sockets[0]).await["action"], 13);
        eventually(
            "the node left the shard channel",
            Duration::from_secs(10),
            || async {
                !cluster
                    .cli(master, &["PUBSUB", "SHARDCHANNELS"])
                    .contains(&topic)
            },
        )
        .await;

        // Publishes still flow on the same shard's connection, and the channel can be joined
        // again there (a join waits behind the leave in the link's queue).
        let body = r#"{"name":"n","data":"kept"}"#;
        let others = [&channels[0], &channels[2]];
        for channel in others {
            assert_eq!(rest(node.addr, publish(channel, body)).await.0, 201);
        }
        assert_eq!(numbered(&mut sockets[0], 2).await, ["kept", "kept"]);
        attach(&mut sockets[0], left).await;
        let body = r#"{"name":"n","data":"back"}"#;
        assert_eq!(rest(node.addr, publish(left, body)).await.0, 201);
        assert_eq!(numbered(&mut sockets[0], 1).await, ["back"]);
        assert_eq!(
            pubsub_connections(&cluster),
            links,
            "the leave completed on the link; it was not timed out and rebuilt"
        );
    });
}

#[test]
fn a_connection_resumes_on_another_node_on_a_cluster() {
    on_cluster(2, &[], async |_, channels, nodes| {
        let channel = &channels[2];
        let (mut bob, connected) = client(&nodes[0], "bob", "").await;
        let (id, key) = resume_ids(&connected);
        attach(&mut bob, channel).await;
        publish_serial(&nodes[1], channel, 0).await;
        let seen = next_json(&mut bob).await["channelSerial"]
            .as_str()
            .unwrap()
            .to_owned();
        drop(bob);
        for n in 1..3 {
            publish_serial(&nodes[1], channel, n).await;
        }
        let (mut bob, connected) = client(&nodes[1], "bob", &format!("&resume={key}")).await;
        assert_eq!(connected["connectionId"], id.as_str(), "{connected}");
        attach_resumed(&mut bob, channel, &seen, "").await;
        assert_eq!(numbered(&mut bob, 2).await, ["1", "2"]);
    });
}

/// Ephemeral publishes are sharded pub/sub too (`SPUBLISH` on the slot's master): one on each
/// shard reaches a subscriber on another node once, without a serial, and is not stored.
#[test]
fn an_ephemeral_publish_reaches_every_node_on_every_shard() {
    on_cluster(2, &[], async |_cluster, channels, nodes| {
        let mut sockets = vec![subscriber(&nodes[1], &channels).await];
        until_live(&nodes[0], &channels, &mut sockets).await;
        for (n, channel) in channels.iter().enumerate() {
            let path = format!("/channels/{channel}/messages?ephemeral=true");
            let body = format!(r#"{{"id":"e{n}","name":"n","data":"{n}"}}"#);
            for _ in 0..2 {
                let request =
                    Request::post(path.clone(), "application/json", body.clone().into()).basic(KEY);
                let (status, answer) = rest(nodes[0].addr, request).await;
                assert_eq!(status, 201, "{answer}");
            }
            publish_serial(&nodes[0], channel, 100 + n).await;
        }
        let seen = numbered_on_channels(&mut sockets[0], 2 * channels.len()).await;
        let expected: Vec<(String, String, bool)> = channels
            .iter()
            .enumerate()
            .flat_map(|(n, channel)| {
                [
                    (channel.clone(), n.to_string(), false),
                    (channel.clone(), (100 + n).to_string(), true),
                ]
            })
            .collect();
        let mut got: Vec<(String, String, bool)> = seen
            .into_iter()
            .map(|(channel, data, serial, _)| (channel, data, !serial.is_empty()))
            .collect();
        // In order per channel; shards are not ordered with each other.
        got.sort_by_key(|(channel, ..)| channels.iter().position(|c| c == channel));
        assert_eq!(
            got, expected,
            "once each, only the stored ones with a serial"
        );
        for channel in &channels {
            let request = Request::get(format!("/channels/{channel}/messages")).basic(KEY);
            let (status, body) = rest(nodes[1].addr, request).await;
            assert_eq!(status, 200, "{body}");
            let history: serde_json::Value = serde_json::from_str(&body).unwrap();
            let mut ids = history.as_array().unwrap().iter().map(|m| &m["id"]);
            let ephemeral: Vec<_> = (0..channels.len())
                .map(|n| json!(format!("e{n}")))
                .collect();
            assert!(
                ids.all(|id| !ephemeral.contains(id)),
                "{channel}: the ephemeral one is not stored: {body}"
            );
        }
    });
}
