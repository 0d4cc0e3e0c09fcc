//! Heartbeats on time: a client hears from the server at least every `maxIdleInterval` (as
//! CONNECTED announces), counted from whatever the server wrote last. Clients that asked for
//! protocol heartbeats (`heartbeats=true`, or no parameter: ably-python) count only frames;
//! `heartbeats=false` clients count WebSocket pings too.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::support::*;

const INTERVAL: Duration = Duration::from_millis(500);
/// Timer granularity and a loaded CI box; well under the extra interval a late heartbeat costs.
const SLACK: Duration = Duration::from_millis(250);

/// What one client saw while watched for four intervals.
struct Watched {
    longest_silence: Duration,
    keep_alives: usize,
}

/// Connects, attaches, and watches for signs of life for four intervals; right after the first
/// keep-alive another client publishes to the channel, so a write lands just after the server's
/// timer fired (a heartbeat skipped because of it would leave almost two intervals of silence).
async fn watch(server: &Server, format: &str, heartbeats: Option<bool>) -> Watched {
    let mode = heartbeats.map_or(String::new(), |on| format!("&heartbeats={on}"));
    let mut client = server
        .connect(&format!("key={FULL_KEY}&format={format}{mode}"))
        .await;
    let mut last = Instant::now();
    assert_eq!(
        client.connected["connectionDetails"]["maxIdleInterval"],
        INTERVAL.as_millis() as u64,
        "{}",
        client.connected
    );
    let channel = format!("heartbeats-{format}{mode}");
    let mut publisher = server.connect(&format!("key={FULL_KEY}")).await;
    client
        .send(json!({"action": ATTACH, "channel": channel}))
        .await;
    let pings = heartbeats == Some(false);
    let end = last + INTERVAL * 4;
    let mut watched = Watched {
        longest_silence: Duration::ZERO,
        keep_alives: 0,
    };
    let mut published = false;
    loop {
        let seen = client.sign_of_life_before(end, pings).await;
        let now = Instant::now();
        watched.longest_silence = watched.longest_silence.max(now - last);
        last = now;
        let Some(frame) = seen else { break };
        let keep_alive = if pings {
            frame["ping"] == true
        } else {
            frame["action"] == HEARTBEAT && frame.get("id").is_none()
        };
        if keep_alive {
            watched.keep_alives += 1;
            if !published {
                published = true;
                publisher
                    .publish_acked(&channel, 0, json!([{"name": "tick", "data": "x"}]))
                    .await;
            }
        }
    }
    watched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_silence_stays_within_max_idle_interval_in_every_mode() {
    let mut config = config();
    config.timing.max_idle_interval = INTERVAL;
    let server = Server::with_config(config).await;
    let modes = [Some(true), None, Some(false)];
    let runs = ["json", "msgpack"]
        .into_iter()
        .flat_map(|format| modes.map(|mode| (format, mode)));
    let watched = futures_util::future::join_all(
        runs.clone()
            .map(|(format, mode)| watch(&server, format, mode)),
    )
    .await;
    for ((format, mode), watched) in runs.zip(watched) {
        assert!(
            watched.longest_silence <= INTERVAL + SLACK,
            "{format}, heartbeats={mode:?}: {:?} without a sign of life (maxIdleInterval {INTERVAL:?})",
            watched.longest_silence
        );
        assert!(
            watched.keep_alives >= 3,
            "{format}, heartbeats={mode:?}: {} keep-alives in four intervals",
            watched.keep_alives
        );
    }
}
