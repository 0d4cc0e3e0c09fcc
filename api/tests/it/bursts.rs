//! A client that sends faster than it reads is slowed down, never disconnected: its replies
//! pause its reader rather than count against the slow-consumer budget.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

fn actions(frames: &[Value], action: u64) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["action"].as_u64() == Some(action))
        .collect()
}

/// A bystander on another channel still gets its messages.
async fn bystander_receives(server: &Server, bystander: &mut Client) {
    let mut publisher = server.connect(&full_key("json")).await;
    publisher.publish_named("quiet", 0, "still here").await;
    let delivery = bystander.expect(MESSAGE).await;
    assert_eq!(delivery["messages"][0]["name"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_heartbeats_is_answered_in_full_while_the_client_reads() {
    const N: usize = 10_000;
    let server = Server::start().await;
    let mut bystander = server.attached(&full_key("json"), "quiet").await;
    for format in ["json", "msgpack"] {
        let mut client = server
            .connect(&format!("key={FULL_KEY}&format={format}"))
            .await;
        let frames: Vec<Value> = (0..N)
            .map(|i| json!({"action": HEARTBEAT, "id": i.to_string()}))
            .collect();
        let (read, closed) = client
            .burst(&frames, Duration::ZERO, |read| read.len() >= N)
            .await;
        assert_eq!(closed, None, "{format}: the connection ended");
        let ids: Vec<&str> = read.iter().map(|f| f["id"].as_str().unwrap()).collect();
        let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(
            ids, expected,
            "{format}: every HEARTBEAT answered, in order"
        );
        assert!(actions(&read, HEARTBEAT).len() == N, "{format}");
        // Still connected and usable.
        client.attach("after").await;
    }
    bystander_receives(&server, &mut bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_publishes_is_all_acked_and_echoed_to_a_client_busy_for_a_moment() {
    const N: u64 = 1000;
    let server = Server::start().await;
    let mut bystander = server.attached(&full_key("json"), "quiet").await;
    let payload = "x".repeat(4096);
    for format in ["json", "msgpack"] {
        let channel = format!("burst:{format}");
        let mut client = server
            .connect_with_recv_buffer(&format!("key={FULL_KEY}&format={format}"), 4096)
            .await;
        client.attach(&channel).await;
        let frames: Vec<Value> = (0..N)
            .map(|i| {
                json!({
                    "action": MESSAGE,
                    "channel": channel,
                    "msgSerial": i,
                    "messages": [{"name": i.to_string(), "data": payload}],
                })
            })
            .collect();
        let echoed = |read: &[Value]| -> usize {
            actions(read, MESSAGE)
                .iter()
                .map(|f| f["messages"].as_array().unwrap().len())
                .sum()
        };
        // Busy for a second after sending: more ACKs and echoes than the socket holds wait.
        let (read, closed) = client
            .burst(&frames, Duration::from_secs(1), |read| {
                actions(read, ACK).len() as u64 >= N && echoed(read) as u64 >= N
            })
            .await;
        assert_eq!(closed, None, "{format}: the connection ended");
        assert!(
            actions(&read, DISCONNECTED).is_empty() && actions(&read, NACK).is_empty(),
            "{format}: refused or disconnected"
        );
        for (i, ack) in actions(&read, ACK).into_iter().enumerate() {
            assert_ack(ack, i as u64, 1);
        }
        let names: Vec<String> = actions(&read, MESSAGE)
            .iter()
            .flat_map(|f| f["messages"].as_array().unwrap().clone())
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(names, expected, "{format}: every echo once, in order");
        client.publish_named("elsewhere", N, "after").await;
    }
    bystander_receives(&server, &mut bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_flood_gets_90010_past_the_cap_and_the_connection_stays() {
    const N: usize = 10_000;
    let server = Server::start().await;
    let cap = server.gateway.config().limits.max_channels_per_connection;
    let mut bystander = server.attached(&full_key("json"), "quiet").await;
    let mut client = server.connect(&full_key("msgpack")).await;
    let frames: Vec<Value> = (0..N)
        .map(|i| json!({"action": ATTACH, "channel": format!("flood:{i}")}))
        .collect();
    let (read, closed) = client
        .burst(&frames, Duration::ZERO, |read| read.len() >= N)
        .await;
    assert_eq!(closed, None, "the connection ended");
    let attached = actions(&read, ATTACHED);
    let refused = actions(&read, ERROR);
    assert_eq!(attached.len(), cap, "up to the cap");
    assert_eq!(refused.len(), N - cap, "the rest refused");
    for (i, frame) in read.iter().enumerate() {
        assert_eq!(frame["channel"], format!("flood:{i}"), "in order: {frame}");
    }
    for frame in refused {
        assert_error(frame, 90010, 400);
    }
    // Still usable: a publish on an attached channel is acknowledged and delivered.
    client
        .publish("flood:0", 0, json!([{"name": "after"}]))
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(client.frame().await["action"].as_u64().unwrap());
    }
    got.sort();
    assert_eq!(got, [ACK, MESSAGE]);
    bystander_receives(&server, &mut bystander).await;
}
