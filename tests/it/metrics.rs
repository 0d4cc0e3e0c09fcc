//! `/metrics` after a known sequence, on a process of its own (the counters are per process).

use std::time::Duration;

use serde_json::json;

use crate::support::{
    block_on, connect, eventually, next_json, publish, publish_as, publish_until_echoed, rest,
    sample, scrape, send_json, Server,
};

#[test]
fn metrics_count_a_known_sequence_on_the_admin_port() {
    let admin_port = test_support::free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let server = Server::start(&["--keys", "app.k:secret", "--admin-listen", &admin_addr]);
    let admin: std::net::SocketAddr = admin_addr.parse().unwrap();
    block_on(async {
        assert_eq!(
            scrape(server.addr).await.0,
            404,
            "not on the public port with --admin-listen"
        );

        let mut client = connect(server.addr, "key=app.k:secret&format=json").await;
        assert_eq!(next_json(&mut client).await["action"], 4);
        send_json(&mut client, json!({"action": 10, "channel": "session:1"})).await;
        assert_eq!(next_json(&mut client).await["action"], 11);

        let (status, _) = rest(server.addr, publish("session:1", r#"{"data":"rest"}"#)).await;
        assert_eq!(status, 201);
        assert_eq!(next_json(&mut client).await["action"], 15);
        publish_until_echoed(&mut client, "session:1", json!({"data": "rt"})).await;

        // Auth failures, one each way.
        let mut refused = connect(server.addr, "key=app.k:wrong&format=json").await;
        assert_eq!(next_json(&mut refused).await["action"], 9);
        let (status, _) = rest(
            server.addr,
            publish_as("app.k:wrong", "session:1", r#"{"data":"x"}"#),
        )
        .await;
        assert_eq!(status, 401);

        // The refused socket leaves the open gauge a moment after its ERROR is read.
        let page = eventually(
            "the refused connection no longer open",
            Duration::from_secs(5),
            || async {
                let (status, page) = scrape(admin).await;
                assert_eq!(status, 200);
                if sample(&page, "realtime_connections_open", &[]) == 1.0 {
                    Ok(page)
                } else {
                    Err(page)
                }
            },
        )
        .await;
        assert_eq!(
            sample(&page, "realtime_connections_accepted_total", &[]),
            1.0,
            "{page}"
        );
        assert_eq!(
            sample(&page, "realtime_channels_attached", &[]),
            1.0,
            "{page}"
        );
        let published = |source| {
            sample(
                &page,
                "realtime_messages_published_total",
                &[("source", source), ("namespace", "session")],
            )
        };
        assert_eq!(
            (published("rest"), published("realtime")),
            (1.0, 1.0),
            "{page}"
        );
        assert_eq!(
            sample(
                &page,
                "realtime_deliveries_total",
                &[
                    ("format", "json"),
                    ("kind", "message"),
                    ("namespace", "session")
                ]
            ),
            2.0,
            "{page}"
        );
        assert_eq!(
            sample(
                &page,
                "realtime_auth_failures_total",
                &[("via", "realtime")]
            ),
            1.0
        );
        assert_eq!(
            sample(&page, "realtime_auth_failures_total", &[("via", "rest")]),
            1.0
        );
        assert_eq!(
            sample(
                &page,
                "realtime_rest_requests_total",
                &[
                    ("route", "/channels/{channel}/messages"),
                    ("method", "POST"),
                    ("status", "201")
                ]
            ),
            1.0,
            "{page}"
        );
        assert!(
            sample(&page, "realtime_publish_delivery_seconds_count", &[]) >= 2.0,
            "{page}"
        );
        assert!(
            sample(
                &page,
                "realtime_bytes_total",
                &[("direction", "in"), ("format", "json")]
            ) > 0.0
        );

        // A subscriber that never reads is cut off as a slow consumer.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(server.addr).await.unwrap();
        let (mut slow, _) = tokio_tungstenite::client_async(
            format!("ws://{}/?key=app.k:secret&format=json", server.addr),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await
        .unwrap();
        assert_eq!(next_json(&mut slow).await["action"], 4);
        send_json(&mut slow, json!({"action": 10, "channel": "live:firehose"})).await;
        assert_eq!(next_json(&mut slow).await["action"], 11);
        let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(60_000));
        let mut cut_off = false;
        for _ in 0..2000 {
            let (status, _) = rest(server.addr, publish("live:firehose", &big)).await;
            assert_eq!(status, 201);
            let page = scrape(admin).await.1;
            if sample(&page, "realtime_slow_consumer_disconnects_total", &[]) >= 1.0 {
                cut_off = true;
                break;
            }
        }
        assert!(cut_off, "the slow consumer was never disconnected");
        drop(slow);
        // Its close is counted with the reason once the server ends it.
        eventually(
            "closed_total{reason=slow_consumer}",
            Duration::from_secs(5),
            || async {
                let page = scrape(admin).await.1;
                sample(
                    &page,
                    "realtime_connections_closed_total",
                    &[("reason", "slow_consumer")],
                ) >= 1.0
            },
        )
        .await;
        drop(client);
    });
}
