//! Publish floods against the binary, with the `--publish-*` limits set low: a connection over
//! its rate is NACKed 42911 and stays connected, a key over its REST rate gets 429 / 42910, and
//! neither touches another connection, key or channel. Every refusal is counted once.

use serde_json::{json, Value};

use crate::support::{
    block_on, connect, next_json, publish, publish_as, publish_until_echoed, rest, sample, scrape,
    send_json, Server, Socket,
};

/// A second key with its own REST budget.
const OTHER_KEY: &str = "app.o:other";

async fn attached(addr: std::net::SocketAddr, channel: &str) -> Socket {
    let mut socket = connect(addr, "key=app.k:secret&format=json").await;
    assert_eq!(next_json(&mut socket).await["action"], 4);
    send_json(&mut socket, json!({"action": 10, "channel": channel})).await;
    assert_eq!(next_json(&mut socket).await["action"], 11);
    socket
}

fn ten(tag: &str) -> Value {
    Value::Array(
        (0..10)
            .map(|i| json!({"name": format!("{tag}-{i}")}))
            .collect(),
    )
}

/// The names in the next MESSAGE frame.
async fn delivered(socket: &mut Socket) -> Vec<String> {
    let frame = next_json(socket).await;
    assert_eq!(frame["action"], 15, "{frame}");
    frame["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

fn names(tag: &str) -> Vec<String> {
    (0..10).map(|i| format!("{tag}-{i}")).collect()
}

#[test]
fn publish_floods_are_refused_by_rate_and_nobody_else_notices() {
    let admin_port = test_support::free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    // Budgets of 20 messages refilled at 1 per second: a third publish of 10 at once is over.
    let server = Server::start(&[
        "--keys",
        "app.k:secret,app.o:other",
        "--admin-listen",
        &admin_addr,
        "--publish-max-messages",
        "10",
        "--publish-max-batch-messages",
        "10",
        "--publish-connection-messages-per-sec",
        "1",
        "--publish-connection-burst-messages",
        "20",
        "--publish-key-messages-per-sec",
        "1",
        "--publish-key-burst-messages",
        "20",
    ]);
    let admin: std::net::SocketAddr = admin_addr.parse().unwrap();
    block_on(async {
        let mut reader = attached(server.addr, "flood").await;
        let mut bystander = attached(server.addr, "calm").await;

        // Three publishes of 10 sent at once: two fit the burst, the third is NACKed.
        let mut flooder = connect(server.addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut flooder).await["action"], 4);
        for msg_serial in 0..3 {
            let frame = json!({"action": 15, "channel": "flood", "msgSerial": msg_serial,
                "messages": ten(&format!("rt{msg_serial}"))});
            send_json(&mut flooder, frame).await;
        }
        // More than a publish may hold is refused for that, not for the rate.
        let eleven: Vec<Value> = (0..11).map(|_| json!({})).collect();
        send_json(
            &mut flooder,
            json!({"action": 15, "channel": "flood", "msgSerial": 3, "messages": eleven}),
        )
        .await;
        for msg_serial in 0..2 {
            let ack = next_json(&mut flooder).await;
            assert_eq!(
                (ack["action"].clone(), ack["msgSerial"].clone()),
                (json!(1), json!(msg_serial)),
                "{ack}"
            );
        }
        let nack = next_json(&mut flooder).await;
        assert_eq!(nack["action"], 2, "{nack}");
        assert_eq!(nack["msgSerial"], 2, "{nack}");
        assert_eq!(nack["error"]["code"], 42911, "{nack}");
        assert_eq!(nack["error"]["statusCode"], 429, "{nack}");
        assert!(
            nack["error"]["message"].as_str().unwrap().contains("rate"),
            "{nack}"
        );
        let nack = next_json(&mut flooder).await;
        assert_eq!(
            (nack["action"].clone(), nack["msgSerial"].clone()),
            (json!(2), json!(3)),
            "{nack}"
        );
        assert_eq!(nack["error"]["code"], 40030, "{nack}");
        // The flooder is still connected.
        send_json(&mut flooder, json!({"action": 0, "id": "alive"})).await;
        let pong = next_json(&mut flooder).await;
        assert_eq!(
            (pong["action"].clone(), pong["id"].clone()),
            (json!(0), json!("alive"))
        );

        // Another connection on the same key has its own budget; the reader got the two
        // accepted publishes, then this, and nothing of the refused ones.
        let mut second = connect(server.addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut second).await["action"], 4);
        send_json(
            &mut second,
            json!({"action": 15, "channel": "flood", "msgSerial": 0, "messages": ten("second")}),
        )
        .await;
        assert_eq!(next_json(&mut second).await["action"], 1);
        assert_eq!(delivered(&mut reader).await, names("rt0"));
        assert_eq!(delivered(&mut reader).await, names("rt1"));
        assert_eq!(delivered(&mut reader).await, names("second"));

        // REST: the key's budget (separate from its connections') holds two publishes of 10.
        let body = ten("rest").to_string();
        for _ in 0..2 {
            assert_eq!(rest(server.addr, publish("flood", &body)).await.0, 201);
        }
        let (status, envelope) = rest(server.addr, publish("flood", &body)).await;
        assert_eq!(status, 429, "{envelope}");
        let envelope: Value = serde_json::from_str(&envelope).unwrap();
        assert_eq!(envelope["error"]["code"], 42910, "{envelope}");
        assert_eq!(envelope["error"]["statusCode"], 429, "{envelope}");
        // Another key is not limited by this one.
        let (status, answer) = rest(server.addr, publish_as(OTHER_KEY, "flood", &body)).await;
        assert_eq!(status, 201, "{answer}");
        for _ in 0..3 {
            assert_eq!(delivered(&mut reader).await, names("rest"));
        }

        // The bystander on another channel publishes and hears itself, undisturbed.
        publish_until_echoed(&mut bystander, "calm", json!({"name": "hi"})).await;

        // A frame over 256 KiB ends its own connection (40009), nobody else's.
        let mut oversized = connect(server.addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut oversized).await["action"], 4);
        let huge = json!({"action": 15, "channel": "flood", "msgSerial": 0,
            "messages": [{"data": "x".repeat(300 * 1024)}]});
        send_json(&mut oversized, huge).await;
        let error = next_json(&mut oversized).await;
        assert_eq!(
            (error["action"].clone(), error["error"]["code"].clone()),
            (json!(9), json!(40009)),
            "{error}"
        );
        send_json(&mut bystander, json!({"action": 0, "id": "still"})).await;
        let mut pong = next_json(&mut bystander).await;
        while pong["action"] != 0 || pong["id"] != "still" {
            assert_ne!(
                pong["action"], 15,
                "nothing more on the calm channel: {pong}"
            );
            pong = next_json(&mut bystander).await;
        }

        let (status, page) = scrape(admin).await;
        assert_eq!(status, 200);
        let refused = |reason, source| {
            sample(
                &page,
                "realtime_publish_refused_total",
                &[("reason", reason), ("source", source)],
            )
        };
        assert_eq!(refused("rate_messages", "realtime"), 1.0, "{page}");
        assert_eq!(refused("too_many_messages", "realtime"), 1.0, "{page}");
        assert_eq!(refused("rate_messages", "rest"), 1.0, "{page}");
        assert_eq!(refused("frame_too_large", "realtime"), 1.0, "{page}");
        assert_eq!(refused("rate_bytes", "realtime"), 0.0, "{page}");
    });
}
