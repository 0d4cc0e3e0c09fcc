//! Redis failovers under the nodes: a master demoted with its sockets alive, Sentinel following
//! a failover, and `--redis-min-replicas`. Readiness must tell the truth throughout, and no
//! publish is acknowledged that a failover can lose.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use test_support::{next_json_within, RedisSentinelSet};

use crate::support::{
    attached, block_on, eventually, next_json, nodes, nodes_at, numbered, publish, rest, send_json,
    until_live, until_readyz, RedisServer, Request, Server, Socket, KEY,
};

const BODY: &str = r#"{"name":"n","data":"x"}"#;

/// A REST publish's status on `node`.
async fn publish_status(node: &Server, channel: &str) -> u16 {
    rest(node.addr, publish(channel, BODY)).await.0
}

#[test]
fn a_node_on_a_demoted_master_turns_unready_and_refuses_publishes() {
    let redis = RedisServer::start();
    let other = RedisServer::start();
    let nodes = nodes(&redis, 1, &[]);
    let node = &nodes[0];
    block_on(async {
        until_readyz(node, 200).await;
        assert_eq!(publish_status(node, "demoted:a").await, 201);

        // A read-only replica now, its sockets alive: it still accepts PUBLISH and SUBSCRIBE.
        let port = other.port.to_string();
        assert_eq!(redis.cli(&["REPLICAOF", "127.0.0.1", &port]).trim(), "OK");
        until_readyz(node, 503).await;
        let (status, body) = rest(node.addr, publish("demoted:a", BODY)).await;
        assert_eq!(status, 503, "a publish on a replica: {body}");

        assert_eq!(redis.cli(&["REPLICAOF", "NO", "ONE"]).trim(), "OK");
        until_readyz(node, 200).await;
        eventually(
            "publishes succeed again",
            Duration::from_secs(10),
            || async { publish_status(node, "demoted:a").await == 201 },
        )
        .await;
        let (status, _) = rest(node.addr, Request::get("/readyz")).await;
        assert_eq!(status, 200);
    });
}

/// The serials of the messages named "n" in `channel`'s history on `node` (of the last
/// 1000, oldest first).
async fn history(node: &Server, channel: &str) -> Vec<String> {
    let path = format!("/channels/{channel}/messages?direction=forwards&limit=1000");
    let (status, body) = rest(node.addr, Request::get(path).basic(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let messages: serde_json::Value = serde_json::from_str(&body).unwrap();
    messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "n")
        .map(|m| m["serial"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Publishes message "n" with data `n`; the serial if it was acknowledged (201), else the
/// status, which must be 503.
async fn try_publish(node: &Server, channel: &str, n: usize) -> Option<String> {
    let body = format!(r#"{{"name":"n","data":"{n}"}}"#);
    let (status, answer) = rest(node.addr, publish(channel, &body)).await;
    if status != 201 {
        assert_eq!(status, 503, "refused only while the bus is away: {answer}");
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    Some(answer["serials"][0].as_str().unwrap().to_owned())
}

/// REST publishes one after another, alternating between the nodes, keeping the serials
/// acknowledged.
#[derive(Default)]
struct Steady {
    n: usize,
    acked: Vec<String>,
}

impl Steady {
    async fn step(&mut self, nodes: &[Server], channel: &str) {
        self.n += 1;
        let node = &nodes[self.n % nodes.len()];
        if let Some(serial) = try_publish(node, channel, self.n).await {
            self.acked.push(serial);
        }
    }
}

/// Once both nodes are ready: a subscriber on B of `channel` and the serial of message "1",
/// published on A and delivered to it.
async fn one_bus(nodes: &[Server], channel: &str) -> ([Socket; 1], String) {
    for node in nodes {
        until_readyz(node, 200).await;
    }
    let mut subscriber = [attached(&nodes[1], "b", "", channel).await];
    until_live(&nodes[0], &[channel], &mut subscriber).await;
    let serial = try_publish(&nodes[0], channel, 1)
        .await
        .expect("acknowledged");
    assert_eq!(numbered(&mut subscriber[0], 1).await, ["1"]);
    (subscriber, serial)
}

#[test]
fn nodes_find_the_master_through_sentinel_and_share_one_bus() {
    let set = RedisSentinelSet::start();
    let nodes = nodes_at(&set.url(), 2, &[]);
    block_on(async {
        let channel = "sentinel:start";
        let (_subscriber, serial) = one_bus(&nodes, channel).await;
        assert!(history(&nodes[1], channel).await.contains(&serial));
        // Both nodes' connections are on the master, none on the replica.
        let clients = set.master.cli(&["CLIENT", "LIST"]);
        assert!(
            clients.lines().filter(|l| l.contains("cmd=")).count() >= 4,
            "{clients}"
        );
    });
}

/// `rediss+sentinel://` with a private CA: the sentinels, the master and the replica speak
/// only TLS; nodes verify every one of them against `--redis-ca-file`, share the bus, and
/// follow a failover to the replica over TLS. Without the CA (or with another) they refuse to
/// start.
#[test]
fn nodes_follow_a_tls_sentinel_set_verified_by_the_private_ca() {
    let made = crate::redis_tls::Made::new("sentinel");
    let set = RedisSentinelSet::start_tls(&made.certificates);
    assert!(set.url().starts_with("rediss+sentinel://"), "{}", set.url());
    let nodes = nodes_at(&set.url(), 2, &["--redis-ca-file", made.ca()]);
    let old_master = set.master.port;
    block_on(async {
        let channel = "sentinel:tls";
        let (mut subscriber, first) = one_bus(&nodes, channel).await;
        let answer = set.sentinel_cli(0, &["SENTINEL", "FAILOVER", "m"]);
        assert_eq!(answer.trim(), "OK", "{answer}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while set.master_port() == Some(old_master)
            || !set.master.cli(&["ROLE"]).starts_with("slave")
        {
            assert!(Instant::now() < deadline, "the failover never happened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for node in &nodes {
            until_readyz(node, 200).await;
        }
        let mut acked = vec![first];
        for n in 2..6 {
            let serial = eventually("a publish is acknowledged", Duration::from_secs(10), || {
                try_publish(&nodes[n % 2], channel, n)
            })
            .await;
            acked.push(serial);
        }
        assert_eq!(numbered(&mut subscriber[0], 4).await, ["2", "3", "4", "5"]);
        assert_eq!(history(&nodes[1], channel).await, acked);
        // Both nodes moved to the new master (the replica at the start), over TLS.
        let clients = set.replica.cli(&["CLIENT", "LIST"]);
        let ours = clients
            .lines()
            .filter(|l| l.contains("cmd=subscribe") || l.contains("cmd=evalsha"))
            .count();
        assert!(ours >= 2, "{clients}");
    });
    drop(nodes);
    crate::redis_tls::assert_verification_refuses(&set.url());
}

#[test]
fn a_manual_failover_moves_every_node_to_the_new_master() {
    let set = RedisSentinelSet::start();
    let nodes = nodes_at(&set.url(), 2, &[]);
    let old_master = set.master.port;
    block_on(async {
        let (during, after) = ("sentinel:manual", "sentinel:after");
        let mut subscriber = [attached(&nodes[1], "b", "", after).await];
        until_live(&nodes[0], &[after], &mut subscriber).await;
        let mut publisher = Steady::default();
        let answer = set.sentinel_cli(0, &["SENTINEL", "FAILOVER", "m"]);
        assert_eq!(answer.trim(), "OK", "{answer}");
        // Publishing on through the switch: the old master turns replica with its sockets
        // open, and what it still acknowledged before is Redis's asynchronous-replication
        // window (README), not counted here.
        let deadline = Instant::now() + Duration::from_secs(20);
        while set.master_port() == Some(old_master)
            || !set.master.cli(&["ROLE"]).starts_with("slave")
        {
            assert!(Instant::now() < deadline, "the failover never happened");
            publisher.step(&nodes, during).await;
        }
        assert_eq!(set.master_port(), Some(set.replica.port));
        for node in &nodes {
            until_readyz(node, 200).await;
        }
        // From now on every publish is acknowledged by the new master, stored and delivered
        // through the moved pub/sub links; none is refused as READONLY.
        let mut acked = Vec::new();
        for n in 0..10 {
            let serial = eventually("a publish is acknowledged", Duration::from_secs(10), || {
                try_publish(&nodes[n % 2], after, n)
            })
            .await;
            acked.push(serial);
        }
        let data: Vec<String> = (0..10).map(|n| n.to_string()).collect();
        assert_eq!(numbered(&mut subscriber[0], 10).await, data);
        for node in &nodes {
            assert_eq!(history(node, after).await, acked);
        }
        // No node keeps a connection on the old master (sentinels name theirs).
        let on_old = set.master.cli(&["CLIENT", "LIST"]);
        let ours: Vec<&str> = on_old
            .lines()
            .filter(|l| {
                !l.contains("name=sentinel")
                    && (l.contains("cmd=subscribe") || l.contains("cmd=evalsha"))
            })
            .collect();
        assert!(ours.is_empty(), "left on the old master: {ours:?}");
    });
}

#[test]
fn min_replicas_refuse_publishes_while_no_replica_confirms() {
    let master = RedisServer::start();
    let mut replica = RedisServer::start_replica_of(&master);
    let nodes = nodes(
        &master,
        1,
        &[
            "--redis-min-replicas",
            "1",
            "--redis-min-replicas-timeout",
            "300",
        ],
    );
    let node = &nodes[0];
    block_on(async {
        eventually("the replica confirms", Duration::from_secs(10), || async {
            publish_status(node, "replicas:a").await == 201
        })
        .await;
        replica.stop();
        for _ in 0..3 {
            let started = Instant::now();
            let (status, body) = rest(node.addr, publish("replicas:a", BODY)).await;
            assert_eq!(status, 503, "no replica to confirm it: {body}");
            assert!(body.contains("replicas"), "the refusal says why: {body}");
            assert!(
                started.elapsed() < Duration::from_millis(1300),
                "refused within the WAIT timeout + 1 s: {:?}",
                started.elapsed()
            );
        }
        replica.restart();
        eventually(
            "publishes are confirmed again",
            Duration::from_secs(20),
            || async { publish_status(node, "replicas:a").await == 201 },
        )
        .await;
    });
}

/// One realtime publisher at a steady pace: message `seq` has id `pub-{seq}` and data `seq`;
/// a NACKed message is sent again with the same msgSerial and id until it is ACKed.
struct Publisher {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<usize>>>,
    nacked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(mut socket: Socket, channel: &'static str) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let nacked = Arc::new(AtomicUsize::new(0));
        let (stopped, acks, nacks) = (stop.clone(), acked.clone(), nacked.clone());
        let task = tokio::spawn(async move {
            // About 200 a second while Redis answers.
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            for seq in 0.. {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                loop {
                    pace.tick().await;
                    let message =
                        json!({"id": format!("pub-{seq}"), "name": "n", "data": seq.to_string()});
                    let frame = json!({"action": 15, "channel": channel, "msgSerial": seq, "messages": [message]});
                    send_json(&mut socket, frame).await;
                    let answer = loop {
                        let frame = next_json(&mut socket).await;
                        if matches!(frame["action"].as_u64(), Some(1 | 2))
                            && frame["msgSerial"] == seq
                        {
                            break frame;
                        }
                    };
                    if answer["action"] == 1 {
                        acks.lock().unwrap().push(seq);
                        break;
                    }
                    assert_eq!(answer["error"]["code"], 50003, "{answer}");
                    nacks.fetch_add(1, Ordering::AcqRel);
                }
            }
        });
        Publisher {
            stop,
            acked,
            nacked,
            task,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn until_acked(&self, n: usize) {
        eventually(
            format!("{n} acknowledged"),
            Duration::from_secs(30),
            || async { self.acked() >= n },
        )
        .await;
    }

    /// Stops after the message in flight is ACKed; the acknowledged seqs, in ACK order.
    async fn finish(self) -> (Vec<usize>, usize) {
        self.stop.store(true, Ordering::Release);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the publisher stops")
            .expect("the publisher");
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.nacked.load(Ordering::Acquire))
    }
}

/// Reads `socket` until every one of `acked` arrived (or nothing came for 10 s); returns the
/// data of the messages named "n" in arrival order and the continuity notices (ATTACHED).
async fn deliveries(socket: &mut Socket, acked: &[usize]) -> (Vec<usize>, Vec<Value>) {
    let (mut got, mut notices) = (Vec::new(), Vec::new());
    let wanted: HashSet<usize> = acked.iter().copied().collect();
    let mut held = HashSet::new();
    while held.len() < wanted.len() {
        let Ok(frame) = tokio::time::timeout(Duration::from_secs(10), next_json(socket)).await
        else {
            break;
        };
        match frame["action"].as_u64() {
            Some(15) => {
                for message in frame["messages"].as_array().into_iter().flatten() {
                    if message["name"] != "n" {
                        continue;
                    }
                    let seq: usize = message["data"].as_str().unwrap().parse().unwrap();
                    got.push(seq);
                    if wanted.contains(&seq) {
                        held.insert(seq);
                    }
                }
            }
            Some(11) => notices.push(frame),
            _ => {}
        }
    }
    (got, notices)
}

/// The data of the messages named "n" in `channel`'s history on `node`.
async fn history_data(node: &Server, channel: &str) -> BTreeSet<usize> {
    let path = format!("/channels/{channel}/messages?direction=forwards&limit=1000");
    let (status, body) = rest(node.addr, Request::get(path).basic(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let messages: Value = serde_json::from_str(&body).unwrap();
    messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "n")
        .filter_map(|m| m["data"].as_str()?.parse().ok())
        .collect()
}

#[test]
fn with_min_replicas_a_killed_master_loses_no_acknowledged_message() {
    let mut set = RedisSentinelSet::start();
    let nodes = nodes_at(&set.url(), 3, &["--redis-min-replicas", "1"]);
    let channel = "failover:kill";
    block_on(async {
        let mut subscribers = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            subscribers.push(attached(node, &format!("sub{i}"), "", channel).await);
        }
        until_live(&nodes[0], &[channel], &mut subscribers).await;
        let publisher =
            Publisher::start(attached(&nodes[0], "publisher", "", channel).await, channel);
        publisher.until_acked(150).await;

        assert_eq!(set.master_port(), Some(set.master.port));
        set.master.stop();
        for node in &nodes {
            until_readyz(node, 503).await;
        }
        let new_master = set.replica.port;
        eventually(
            "Sentinel promotes the replica",
            Duration::from_secs(30),
            || async { set.master_port() == Some(new_master) },
        )
        .await;
        for node in &nodes {
            until_readyz(node, 200).await;
        }
        // With no replica left nothing is confirmed: the old master comes back as a replica.
        // Sentinel demotes it only after seeing it as a master for 8 s, on INFO rounds 10 s apart.
        set.master.restart();
        eventually(
            "the old master is a replica again",
            Duration::from_secs(60),
            || async {
                let info = set.master.cli(&["INFO", "replication"]);
                info.contains("role:slave") && info.contains("master_link_status:up")
            },
        )
        .await;
        let before = publisher.acked();
        publisher.until_acked(before + 100).await;
        let (acked, nacked) = publisher.finish().await;

        let mut delivered_everywhere = usize::MAX;
        for (i, subscriber) in subscribers.iter_mut().enumerate() {
            let (got, notices) = deliveries(subscriber, &acked).await;
            let unique: BTreeSet<usize> = got.iter().copied().collect();
            let lost: Vec<&usize> = acked.iter().filter(|seq| !unique.contains(seq)).collect();
            let delivered = acked.len() - lost.len();
            delivered_everywhere = delivered_everywhere.min(delivered);
            println!(
                "node {i}: acknowledged {} / delivered {delivered} / lost {} (NACKs {nacked}, notices {})",
                acked.len(),
                lost.len(),
                notices.len()
            );
            assert!(
                lost.is_empty(),
                "node {i}: acknowledged, never delivered: {lost:?}"
            );
            // Once each and in ACK order; a repeat only with a discontinuity told (a NACKed
            // message announced by the dying master, then stored again by its retry).
            let firsts: Vec<usize> = {
                let mut seen = HashSet::new();
                got.iter()
                    .copied()
                    .filter(|seq| seen.insert(*seq))
                    .collect()
            };
            let in_ack_order: Vec<usize> = firsts
                .iter()
                .copied()
                .filter(|seq| acked.contains(seq))
                .collect();
            assert_eq!(in_ack_order, acked, "node {i}: in ACK order");
            assert!(
                got.len() == firsts.len() || !notices.is_empty(),
                "node {i}: a repeat with nothing told: {got:?}"
            );
        }
        for (i, node) in nodes.iter().enumerate() {
            let stored = history_data(node, channel).await;
            let missing: Vec<&usize> = acked.iter().filter(|seq| !stored.contains(seq)).collect();
            assert!(
                missing.is_empty(),
                "node {i}: acknowledged, not in history: {missing:?}"
            );
        }
        println!(
            "failover with --redis-min-replicas 1: acknowledged {} / delivered {delivered_everywhere} (on each of 3 nodes) / lost {}",
            acked.len(),
            acked.len() - delivered_everywhere
        );
    });
}

#[test]
fn without_min_replicas_a_failover_loses_unreplicated_acks_and_subscribers_are_told() {
    let mut set = RedisSentinelSet::start();
    let nodes = nodes_at(&set.url(), 2, &[]);
    let channel = "failover:lossy";
    block_on(async {
        let mut subscriber = [attached(&nodes[1], "sub", "", channel).await];
        until_live(&nodes[0], &[channel], &mut subscriber).await;
        let mut replicated = Vec::new();
        for n in 0..5 {
            replicated.push(
                try_publish(&nodes[0], channel, n)
                    .await
                    .expect("acknowledged"),
            );
        }
        assert_eq!(set.master.cli(&["WAIT", "1", "2000"]).trim(), "1");
        // The replica is cut off (a password it does not know, its link killed): the next
        // publishes are acknowledged by the master alone.
        assert_eq!(
            set.master
                .cli(&["CONFIG", "SET", "requirepass", "cut"])
                .trim(),
            "OK"
        );
        set.master
            .cli(&["-a", "cut", "CLIENT", "KILL", "TYPE", "replica"]);
        eventually(
            "the replica is cut off",
            Duration::from_secs(10),
            || async {
                set.replica
                    .cli(&["INFO", "replication"])
                    .contains("master_link_status:down")
            },
        )
        .await;
        let mut unreplicated = Vec::new();
        for n in 5..10 {
            unreplicated.push(
                try_publish(&nodes[0], channel, n)
                    .await
                    .expect("acknowledged"),
            );
        }
        set.master.stop();
        eventually(
            "Sentinel promotes the replica",
            Duration::from_secs(30),
            || async { set.master_port() == Some(set.replica.port) },
        )
        .await;
        // The subscriber saw the lost five live; once its node is back on the new master it
        // is told of the discontinuity (nothing is published meanwhile: what the new master
        // acknowledges before a node catches up is abandoned with the old epoch, see the
        // report), then gets what follows.
        let mut notices = Vec::new();
        let mut got: Vec<usize> = Vec::new();
        let mut read = async |notices: &mut Vec<Value>, got: &mut Vec<usize>| {
            // Sentinel's detection and the node's catch-up come first: longer than one frame
            // usually takes under the suite's load.
            let frame = next_json_within(&mut subscriber[0], Duration::from_secs(30)).await;
            match frame["action"].as_u64() {
                Some(11) => notices.push(frame),
                Some(15) => got.extend(
                    frame["messages"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|m| m["name"] == "n")
                        .filter_map(|m| m["data"].as_str()?.parse::<usize>().ok()),
                ),
                _ => {}
            }
        };
        while notices.is_empty() {
            read(&mut notices, &mut got).await;
        }
        eventually(
            "publishes are acknowledged again",
            Duration::from_secs(20),
            || async { try_publish(&nodes[0], channel, 100).await },
        )
        .await;
        while !got.contains(&100) {
            read(&mut notices, &mut got).await;
        }
        assert!(
            notices.iter().any(|n| n["error"]["code"] == 90003),
            "told of the loss: {notices:?}"
        );
        let stored: HashSet<String> = history(&nodes[1], channel).await.into_iter().collect();
        let lost = unreplicated.iter().filter(|s| !stored.contains(*s)).count();
        // (The five replicated ones are still in the stream, but the channel moved to a new
        // epoch and its history starts there.)
        println!(
            "failover without --redis-min-replicas: acknowledged {} / lost {lost} (acknowledged by the master alone) / 90003 told",
            replicated.len() + unreplicated.len(),
        );
        assert_eq!(
            lost,
            unreplicated.len(),
            "the unreplicated acknowledgements are lost"
        );
    });
}
