//! Redis failovers under the nodes: a master demoted with its sockets alive, Sentinel following
//! a failover, and `--redis-min-replicas`. Readiness must tell the truth throughout, and no
//! publish is acknowledged that a failover can lose.

use std::time::Duration;

use crate::support::{
    block_on, eventually, nodes, publish, rest, until_readyz, RedisServer, Request, Server,
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
