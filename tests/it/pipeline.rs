//! A connection's publishes through Redis, pipelined: many in flight, stored in batches, ACKed
//! strictly in msgSerial order.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::support::{connect, next_json, numbered, on_nodes, send_json, Socket};

/// Reads ACK/NACK frames until `n` msgSerials are answered; returns, per msgSerial in the
/// order answered, its serial (ACK) or error code (NACK).
pub(crate) async fn answers(socket: &mut Socket, n: u64) -> Vec<(u64, Result<String, i64>)> {
    let mut answered = Vec::new();
    while (answered.len() as u64) < n {
        let frame = next_json(socket).await;
        let first = frame["msgSerial"].as_u64().unwrap_or_default();
        match frame["action"].as_u64() {
            Some(1) => {
                let count = frame["count"].as_u64().unwrap();
                let res = frame["res"].as_array().expect("res per message");
                assert_eq!(res.len() as u64, count, "{frame}");
                for (i, result) in res.iter().enumerate() {
                    let serial = result["serials"][0].as_str().unwrap_or_default();
                    answered.push((first + i as u64, Ok(serial.to_owned())));
                }
            }
            Some(2) => {
                let count = frame["count"].as_u64().unwrap_or(1);
                for i in 0..count {
                    let code = frame["error"]["code"].as_i64().unwrap_or_default();
                    answered.push((first + i, Err(code)));
                }
            }
            _ => {}
        }
    }
    answered
}

pub(crate) async fn publisher(node: &crate::support::Server) -> Socket {
    let mut socket = connect(node.addr, "key=app.k:secret&format=json").await;
    assert_eq!(next_json(&mut socket).await["action"], 4);
    socket
}

async fn subscriber(node: &crate::support::Server, channel: &str) -> Socket {
    let mut socket = connect(node.addr, "key=app.k:secret&format=json").await;
    assert_eq!(next_json(&mut socket).await["action"], 4);
    send_json(&mut socket, json!({"action": 10, "channel": channel})).await;
    assert_eq!(next_json(&mut socket).await["action"], 11);
    socket
}

pub(crate) fn message_frame(msg_serial: u64, channel: &str, data: &str) -> Value {
    json!({"action": 15, "msgSerial": msg_serial, "channel": channel,
           "messages": [{"name": "n", "data": data}]})
}

#[test]
fn pipelined_publishes_are_acked_in_msg_serial_order_and_stored_in_send_order() {
    on_nodes(2, &[], async |_, nodes| {
        let channels: Vec<String> = (0..5).map(|c| format!("pipe:{c}")).collect();
        let mut subscribers = Vec::new();
        for channel in &channels {
            subscribers.push(subscriber(&nodes[1], channel).await);
        }
        let mut socket = publisher(&nodes[0]).await;
        // 100 publishes sent without waiting; msgSerial 50 is refused before it reaches the
        // bus (an update on a channel without mutable messages), so its NACK must wait for
        // the 50 ACKs before it.
        for n in 0..100u64 {
            let channel = &channels[n as usize % channels.len()];
            let frame = if n == 50 {
                json!({"action": 15, "msgSerial": n, "channel": channel,
                       "messages": [{"action": 1, "serial": "x", "data": "edit"}]})
            } else {
                message_frame(n, channel, &n.to_string())
            };
            send_json(&mut socket, frame).await;
        }
        let answered = answers(&mut socket, 100).await;
        let order: Vec<u64> = answered.iter().map(|(serial, _)| *serial).collect();
        assert_eq!(
            order,
            (0..100).collect::<Vec<_>>(),
            "answered in msgSerial order"
        );
        let mut serials: HashMap<usize, Vec<String>> = HashMap::new();
        for (n, answer) in &answered {
            match (n, answer) {
                (50, Err(code)) => assert!(*code > 0),
                (50, Ok(serial)) => panic!("the refused publish was ACKed: {serial}"),
                (_, Ok(serial)) => serials
                    .entry(*n as usize % channels.len())
                    .or_default()
                    .push(serial.clone()),
                (_, Err(code)) => panic!("msgSerial {n} NACKed with {code}"),
            }
        }
        for (c, got) in &serials {
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(got, &sorted, "channel {c}: serials follow send order");
        }
        for (c, socket) in subscribers.iter_mut().enumerate() {
            let expected: Vec<String> = (0..100)
                .filter(|n| n % channels.len() == c && *n != 50)
                .map(|n| n.to_string())
                .collect();
            assert_eq!(
                numbered(socket, expected.len()).await,
                expected,
                "channel {c}: delivered on the other node once each, in send order"
            );
        }
    });
}

#[test]
fn a_channel_whose_store_fails_nacks_only_its_publishes() {
    on_nodes(1, &[], async |redis, nodes| {
        // A key of the wrong type where the channel's counters live: its part of a batch fails.
        redis.cli(&["SET", "rt:{pipe-bad}:meta", "not a hash"]);
        let channels = ["pipe-ok-a", "pipe-bad", "pipe-ok-b"];
        let mut socket = publisher(&nodes[0]).await;
        for n in 0..30u64 {
            let channel = channels[n as usize % channels.len()];
            send_json(&mut socket, message_frame(n, channel, &n.to_string())).await;
        }
        let answered = answers(&mut socket, 30).await;
        for (i, (n, answer)) in answered.iter().enumerate() {
            assert_eq!(*n, i as u64, "answered in msgSerial order");
            match (channels[*n as usize % channels.len()], answer) {
                ("pipe-bad", Err(code)) => assert_eq!(*code, 50003, "msgSerial {n}"),
                ("pipe-bad", Ok(serial)) => panic!("msgSerial {n} ACKed as {serial}"),
                (_, Ok(serial)) => assert!(!serial.is_empty(), "msgSerial {n}"),
                (channel, Err(code)) => panic!("{channel} msgSerial {n} NACKed with {code}"),
            }
        }
        // Repaired, the channel publishes again.
        redis.cli(&["DEL", "rt:{pipe-bad}:meta"]);
        send_json(&mut socket, message_frame(30, "pipe-bad", "30")).await;
        let answered = answers(&mut socket, 1).await;
        assert!(answered[0].1.is_ok(), "{answered:?}");
    });
}
