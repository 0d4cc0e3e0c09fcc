//! The dashboard across processes: two nodes on one private `redis-server` each list both nodes
//! with their own numbers, and a node that dies stops being shown as ready.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    block_on, connect, eventually, next_json, nodes, rest, send_json, RedisServer, Request, KEY,
};

async fn overview(addr: SocketAddr) -> Value {
    let (status, body) = rest(addr, Request::get("/dashboard/api/overview").basic(KEY)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("overview JSON")
}

/// Polls `addr`'s overview until `done` holds, for at most 15 s (nodes share every second).
async fn until(addr: SocketAddr, done: impl Fn(&Value) -> bool) -> Value {
    eventually(
        "the overview gets there",
        Duration::from_secs(15),
        || async {
            let value = overview(addr).await;
            if done(&value) {
                Ok(value)
            } else {
                Err(value)
            }
        },
    )
    .await
}

fn node<'a>(overview: &'a Value, id: &str) -> Option<&'a Value> {
    overview["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == id)
}

#[test]
fn every_node_lists_every_node_with_its_numbers() {
    let redis = RedisServer::start();
    let mut cluster = nodes(&redis, 2, &["--node-lease-ms", "1000"]);
    block_on(async {
        let a = cluster[0].addr;
        let b = cluster[1].addr;
        let id_a = overview(a).await["node"].as_str().unwrap().to_owned();
        let id_b = overview(b).await["node"].as_str().unwrap().to_owned();
        assert_ne!(id_a, id_b);

        // Two connections on node B, attached to one channel.
        let mut sockets = Vec::new();
        for _ in 0..2 {
            let mut socket = connect(b, &format!("key={KEY}&format=json")).await;
            assert_eq!(next_json(&mut socket).await["action"], 4);
            send_json(&mut socket, json!({"action": 10, "channel": "room:1"})).await;
            assert_eq!(next_json(&mut socket).await["action"], 11);
            sockets.push(socket);
        }

        for (here, other) in [(a, &id_b), (b, &id_a)] {
            let seen = until(here, |o| {
                o["clustered"] == true
                    && o["nodes"].as_array().is_some_and(|n| n.len() == 2)
                    && node(o, other).is_some_and(|n| n["state"] == "ready")
            })
            .await;
            assert_eq!(seen["cluster"]["nodes"], 2, "{seen}");
        }
        let from_a = until(a, |o| {
            node(o, &id_b).is_some_and(|n| n["connections"] == 2 && n["attachments"] == 2)
        })
        .await;
        assert_eq!(node(&from_a, &id_a).unwrap()["connections"], 0, "{from_a}");
        assert_eq!(from_a["nodes"][0]["node"], id_a.as_str(), "this node first");
        assert_eq!(from_a["cluster"]["connections"], 2, "{from_a}");

        // A publish on node A is counted in there and delivered out on node B.
        let publish = Request::post_json(
            "/dashboard/api/channels/room:1/messages",
            &json!({"name": "t", "data": "x"}),
        );
        let (status, response) = rest(a, publish.basic(KEY)).await;
        assert_eq!(status, 201, "{response}");
        for socket in &mut sockets {
            assert_eq!(next_json(socket).await["messages"][0]["name"], "t");
        }
        let totals = until(b, |o| {
            o["cluster"]["messagesIn"] == 1 && o["cluster"]["messagesOut"] == 2
        })
        .await;
        assert_eq!(node(&totals, &id_a).unwrap()["messagesIn"], 1, "{totals}");
        assert_eq!(node(&totals, &id_b).unwrap()["messagesOut"], 2, "{totals}");

        // The channel inspector on node A reads the shared history.
        let (status, body) =
            rest(a, Request::get("/dashboard/api/channels/room:1").basic(KEY)).await;
        assert_eq!(status, 200, "{body}");
        let inspection: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(inspection["messages"][0]["data"], "x", "{inspection}");

        // Node B dies without a goodbye: A stops showing it ready (lease lapsed, then gone).
        drop(sockets);
        cluster[1].kill();
        until(a, |o| node(o, &id_b).is_none_or(|n| n["state"] != "ready")).await;
    });
    cluster.clear();
}
