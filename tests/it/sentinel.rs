//! Redis failovers under the nodes: a master demoted with its sockets alive, Sentinel following
//! a failover, and `--redis-min-replicas`. Readiness must tell the truth throughout, and no
//! publish is acknowledged that a failover can lose.

use std::time::Duration;

use tokio::time::Instant;

use test_support::RedisSentinelSet;

use crate::support::{
    attached, block_on, eventually, nodes, nodes_at, numbered, publish, rest, until_live,
    until_readyz, RedisServer, Request, Server, KEY,
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

#[test]
fn nodes_find_the_master_through_sentinel_and_share_one_bus() {
    let set = RedisSentinelSet::start();
    let nodes = nodes_at(&set.url(), 2, &[]);
    block_on(async {
        for node in &nodes {
            until_readyz(node, 200).await;
        }
        let channel = "sentinel:start";
        let mut subscriber = [attached(&nodes[1], "b", "", channel).await];
        until_live(&nodes[0], &[channel], &mut subscriber).await;
        let serial = try_publish(&nodes[0], channel, 1)
            .await
            .expect("acknowledged");
        assert_eq!(numbered(&mut subscriber[0], 1).await, ["1"]);
        assert!(history(&nodes[1], channel).await.contains(&serial));
        // Both nodes' connections are on the master, none on the replica.
        let clients = set.master.cli(&["CLIENT", "LIST"]);
        assert!(
            clients.lines().filter(|l| l.contains("cmd=")).count() >= 4,
            "{clients}"
        );
    });
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
    let port = master.port.to_string();
    let mut replica = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
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
