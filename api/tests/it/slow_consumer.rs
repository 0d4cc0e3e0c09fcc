//! A subscriber that stops reading is cut off, alone: the others get everything, in order. It
//! is found by the byte budget on its queued deliveries or by the age of its oldest unsent frame.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const PAYLOAD_BYTES: usize = 4096;

/// A server with small write buffers, so a client that stops reading backs the server up soon.
async fn server(outbound_queue: gateway::config::OutboundQueue) -> Server {
    let mut config = config();
    config.limits.outbound_queue = outbound_queue;
    config.limits.ws_write_buffer_bytes = 4 * 1024;
    config.limits.ws_max_write_buffer_bytes = 16 * 1024;
    Server::with_config(config).await
}

/// A subscriber that reads nothing (its kernel receive buffer small), one that reads everything
/// (msgpack), and a publisher, all on `firehose`.
async fn clients(server: &Server) -> (Client, Client, Client) {
    let mut slow = server
        .connect_with_recv_buffer(&full_key("json"), 4096)
        .await;
    slow.attach("firehose").await;
    let fast = server.attached(&full_key("msgpack"), "firehose").await;
    let publisher = server.connect(&full_key("json")).await;
    (slow, fast, publisher)
}

/// Publishes `n` messages of 4 KiB; the fast subscriber reads each before the next is
/// published, so its queue never holds more than one.
async fn publish_while_fast_reads(publisher: &mut Client, fast: &mut Client, n: u64) {
    let payload = "p".repeat(PAYLOAD_BYTES);
    for i in 0..n {
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
}

/// The slow subscriber reads what reached it: a gap-free prefix of the stream (frames may hold
/// several messages), then DISCONNECTED 80020 or the socket closing, never the whole stream.
async fn read_until_cut_off(slow: &mut Client, n: u64) -> u64 {
    let mut received = 0u64;
    let mut ending = None;
    while ending.is_none() {
        match slow.event().await {
            Event::Frame(frame) => match frame["action"].as_u64() {
                Some(MESSAGE) => {
                    for message in frame["messages"].as_array().unwrap() {
                        assert_eq!(
                            message["name"],
                            received.to_string(),
                            "slow subscriber got a gap instead of a disconnect"
                        );
                        received += 1;
                    }
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
        received < n,
        "the slow subscriber was never cut off ({received} messages, then {ending:?})"
    );
    eprintln!("slow subscriber: {received} of {n} messages, then {ending:?}");
    received
}

async fn slow_consumer_disconnects(server: &Server, n: u64) {
    eventually(
        "the dashboard counts the slow-consumer disconnect",
        WAIT,
        || async { server.gateway.node_pulse().slow_consumer_disconnects == n },
    )
    .await;
}

/// The server is fine: the fast subscriber still gets new messages, and newcomers work.
async fn others_carry_on(server: &Server, publisher: &mut Client, fast: &mut Client, serial: u64) {
    let mut newcomer = server.attached(&full_key("json"), "firehose").await;
    publisher.publish_named("firehose", serial, "after").await;
    for client in [fast, &mut newcomer] {
        client.expect_named("after", "").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_byte_budget_a_slow_subscriber_is_disconnected_while_a_fast_one_gets_everything() {
    const N_MESSAGES: u64 = 1000;
    // 16 deliveries of 4 KiB; the age bound is far away.
    let server = server(gateway::config::OutboundQueue {
        bytes: 64 * 1024,
        age: Duration::from_secs(60),
    })
    .await;
    let (mut slow, mut fast, mut publisher) = clients(&server).await;
    publish_while_fast_reads(&mut publisher, &mut fast, N_MESSAGES).await;
    read_until_cut_off(&mut slow, N_MESSAGES).await;
    slow_consumer_disconnects(&server, 1).await;
    others_carry_on(&server, &mut publisher, &mut fast, N_MESSAGES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_is_disconnected_by_age_even_when_nothing_more_comes() {
    // 1.2 MB in all, far under the byte budget but more than the socket takes unread.
    const N_MESSAGES: u64 = 1000;
    let server = server(gateway::config::OutboundQueue {
        bytes: 64 * 1024 * 1024,
        age: Duration::from_millis(500),
    })
    .await;
    let (mut slow, mut fast, mut publisher) = clients(&server).await;
    publish_while_fast_reads(&mut publisher, &mut fast, N_MESSAGES).await;
    // Nothing more is published: the writer, stuck on the socket, finds it too old.
    slow_consumer_disconnects(&server, 1).await;
    read_until_cut_off(&mut slow, N_MESSAGES).await;
    others_carry_on(&server, &mut publisher, &mut fast, N_MESSAGES).await;
}
