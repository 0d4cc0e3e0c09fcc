//! A subscriber that fell behind catches up in fewer, bigger frames: every message once, in
//! order, and a resume from a merged frame's channelSerial continues exactly after it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const RESUMED: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_gets_merged_frames_and_resumes_exactly_after_one() {
    // More than loopback buffers hold unread (~2.5 MB), so the rest queues on the server.
    const N: usize = 5000;
    let mut config = config();
    // This test is about merging, not about the limits.
    config.limits.outbound_queue = gateway::config::OutboundQueue {
        bytes: 64 * 1024 * 1024,
        age: Duration::from_secs(60),
    };
    config.hub.retention.max_messages = 10_000;
    config.limits.connection_publish_rate.messages_per_sec = 0;
    let server = Server::with_config(config).await;
    let mut lagging = server
        .connect_with_recv_buffer(&full_key("json"), 4096)
        .await;
    lagging.attach("lag").await;
    let mut publisher = server.connect(&full_key("msgpack")).await;
    let payload = "m".repeat(1024);
    let mut serials = Vec::new();
    for i in 0..N {
        let serial = publisher
            .publish_acked(
                "lag",
                i as u64,
                json!([{"name": i.to_string(), "data": payload}]),
            )
            .await;
        serials.extend(serial);
    }

    // Now it reads: every message once, in order, in fewer frames.
    let mut names = Vec::new();
    let mut frames = 0;
    let mut merged: Option<(Value, usize)> = None;
    while names.len() < N {
        let frame = lagging.expect(MESSAGE).await;
        let messages = frame["messages"].as_array().unwrap();
        frames += 1;
        let last = messages.last().unwrap();
        assert_eq!(
            frame["channelSerial"], last["serial"],
            "a frame's channelSerial is its last message's serial"
        );
        for message in messages {
            assert!(
                message["id"].is_string() && message["timestamp"].is_u64(),
                "{message}"
            );
            names.push(message["name"].as_str().unwrap().to_owned());
        }
        if messages.len() > 1 && names.len() < N - 10 {
            merged = Some((frame["channelSerial"].clone(), names.len()));
        }
    }
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(names, expected, "every message once, in order");
    assert!(
        frames < N,
        "{frames} frames for {N} messages: nothing merged"
    );
    eprintln!("lagging subscriber: {N} messages in {frames} frames");

    // A client that saw that merged frame last resumes right after it.
    let (channel_serial, seen) = merged.expect("a merged frame");
    let mut resumed = server.connect(&full_key("json")).await;
    resumed
        .send(json!({"action": ATTACH, "channel": "lag", "channelSerial": channel_serial}))
        .await;
    let attached = resumed.expect(ATTACHED).await;
    assert_ne!(
        attached["flags"].as_u64().unwrap() & RESUMED,
        0,
        "{attached}"
    );
    let mut replayed = Vec::new();
    while replayed.len() < N - seen {
        let frame = resumed.expect(MESSAGE).await;
        for message in frame["messages"].as_array().unwrap() {
            replayed.push(message["serial"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(replayed, serials[seen..], "exactly what came after it");
}
