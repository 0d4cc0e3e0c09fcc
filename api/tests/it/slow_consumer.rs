//! A subscriber that stops reading is cut off, alone: the others get everything, in order.

use serde_json::json;

use crate::support::*;

/// Messages published while the slow subscriber sleeps; with 4 KiB each this is far more than
/// loopback TCP buffers plus the server's queue can hold for a client that never reads.
const N_MESSAGES: u64 = 2000;
const PAYLOAD_BYTES: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_is_disconnected_while_a_fast_one_gets_everything() {
    let mut config = config();
    config.limits.outbound_queue_frames = 8;
    config.limits.ws_write_buffer_bytes = 4 * 1024;
    config.limits.ws_max_write_buffer_bytes = 16 * 1024;
    let server = Server::with_config(config).await;

    // Attached, then never read until publishing is over.
    let mut slow = server
        .connect_with_recv_buffer(&format!("key={FULL_KEY}&format=json"), 4096)
        .await;
    slow.attach("firehose").await;
    let mut fast = server
        .connect(&format!("key={FULL_KEY}&format=msgpack"))
        .await;
    fast.attach("firehose").await;
    let mut publisher = server.connect(&format!("key={FULL_KEY}&format=json")).await;

    // The fast subscriber reads each message before the next is published, so its queue never
    // holds more than one; the slow one's socket and queue fill up.
    let payload = "p".repeat(PAYLOAD_BYTES);
    for i in 0..N_MESSAGES {
        publisher
            .publish_acked(
                "firehose",
                i,
                json!([{"name": i.to_string(), "data": payload}]),
            )
            .await;
        let delivery = fast.expect(MESSAGE).await;
        assert_eq!(
            delivery["messages"][0]["name"],
            i.to_string(),
            "fast subscriber lost or reordered messages: {}",
            delivery["messages"][0]["name"]
        );
    }

    // The slow subscriber: a gap-free prefix of the stream, then DISCONNECTED 80020 or the
    // socket closing, never the whole stream.
    let mut received = 0u64;
    let mut ending = None;
    while ending.is_none() {
        match slow.event().await {
            Event::Frame(frame) => match frame["action"].as_u64() {
                Some(MESSAGE) => {
                    assert_eq!(
                        frame["messages"][0]["name"],
                        received.to_string(),
                        "slow subscriber got a gap instead of a disconnect"
                    );
                    received += 1;
                }
                Some(DISCONNECTED) => {
                    assert_error(&frame, 80020, 400);
                    slow.expect_closed().await;
                    ending = Some("DISCONNECTED 80020".to_owned());
                }
                Some(HEARTBEAT) => {}
                _ => panic!("unexpected frame for the slow subscriber: {frame}"),
            },
            Event::Closed(why) => ending = Some(why),
        }
    }
    assert!(
        received < N_MESSAGES,
        "the slow subscriber was never cut off ({received} messages, then {ending:?})"
    );
    eprintln!("slow subscriber: {received} of {N_MESSAGES} messages, then {ending:?}");
    // The dashboard counts it once the connection has ended.
    tokio::time::timeout(WAIT, async {
        while server.gateway.node_pulse().slow_consumer_disconnects != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dashboard counts the slow-consumer disconnect");

    // The server is fine: the fast subscriber still gets new messages, and newcomers work.
    let mut newcomer = server.connect(&format!("key={FULL_KEY}&format=json")).await;
    newcomer.attach("firehose").await;
    publisher
        .publish_acked("firehose", N_MESSAGES, json!([{"name": "after"}]))
        .await;
    for client in [&mut fast, &mut newcomer] {
        let delivery = client.expect(MESSAGE).await;
        assert_eq!(delivery["messages"][0]["name"], "after", "{delivery}");
    }
}
