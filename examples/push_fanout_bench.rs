//! Benchmark: one channel message with `extras.push` fanned out to many registered browsers.
//!
//! Starts `target/release/realtime` (build it first: `cargo build --release`) with Web Push
//! configured (keys from `realtime push generate-vapid-keys`) and a loopback push service that
//! counts what arrives and answers 201. Registers `--devices` browsers (one subscription's keys
//! for all, each its own endpoint path, so every notification is encrypted and signed as for a
//! real browser), subscribes each to `push:live`, then publishes one message with `extras.push`
//! and measures the time until every device's notification has reached the service:
//! deliveries/s, and the server's RSS before and its peak (`VmHWM`).
//!
//! `cargo run --release --example push_fanout_bench -- [devices] [--redis]`

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::json;
use test_support::{Realtime, RedisServer, WebPushSubscription};

const KEY: &str = "bench.k:secret";
const IN_FLIGHT: usize = 64;

fn main() {
    let mut devices = 100_000usize;
    let mut with_redis = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--redis" => with_redis = true,
            n => devices = n.parse().expect("[devices] [--redis]"),
        }
    }
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/realtime");
    let keys = std::process::Command::new(&binary)
        .args(["push", "generate-vapid-keys"])
        .output()
        .expect("run realtime");
    let printed = String::from_utf8_lossy(&keys.stdout).into_owned();
    let after = |label: &str| {
        let mut lines = printed.lines().skip_while(|l| *l != label);
        lines.nth(1).expect("a key").to_owned()
    };
    let (public, private) = (after("Public Key:"), after("Private Key:"));
    let dir = std::env::temp_dir().join(format!("push-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("realtime.toml");
    std::fs::write(
        &config,
        "[[history.namespace]]\nname = \"push\"\npush_enabled = true\n",
    )
    .unwrap();
    let redis = with_redis.then(RedisServer::start);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let service = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { axum::http::StatusCode::CREATED }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, service).await });

        let mut args = vec![
            "--keys".to_owned(),
            KEY.to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
            "--push-vapid-public-key".to_owned(),
            public,
            "--push-vapid-private-key".to_owned(),
            private,
            "--push-vapid-subject".to_owned(),
            "mailto:ops@digis.example".to_owned(),
            "--push-web-endpoint-hosts".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        if let Some(redis) = &redis {
            args.extend(["--redis".to_owned(), redis.url()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Realtime::start(&binary, "serve", &args, &[]);
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::new();
        let browser = WebPushSubscription::new();

        let started = Instant::now();
        futures_util::stream::iter(0..devices)
            .map(|n| {
                let (client, base) = (&client, &base);
                let recipient = browser.recipient(&format!("{endpoint}/sub/{n}"));
                async move {
                    let id = format!("browser{n}");
                    let device = json!({"id": id, "platform": "browser", "formFactor": "desktop",
                        "deviceSecret": "s", "push": {"recipient": recipient}});
                    post(client, &format!("{base}/push/deviceRegistrations"), device).await;
                    let subscription = json!({"channel": "push:live", "deviceId": id});
                    post(client, &format!("{base}/push/channelSubscriptions"), subscription).await;
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<()>()
            .await;
        println!(
            "registered and subscribed {devices} devices in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let rss_before = status_kib(server.child.id(), "VmRSS");

        let started = Instant::now();
        let message = json!({"name": "live", "data": "Ann is live", "extras": {"push": {
            "notification": {"title": "Ann is live", "body": "Join the stream"},
            "data": {"stream": "s1"}}}});
        post(&client, &format!("{base}/channels/push:live/messages"), message).await;
        let deadline = started + Duration::from_secs(600);
        while received.load(Ordering::Relaxed) < devices && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let got = received.load(Ordering::Relaxed);
        println!(
            "push fan-out: {got} of {devices} notifications delivered in {elapsed:.2} s = {:.0}/s{}",
            got as f64 / elapsed,
            if redis.is_some() { " (state in Redis)" } else { "" }
        );
        println!(
            "server RSS: {:.1} MiB before the publish, peak {:.1} MiB",
            rss_before as f64 / 1024.0,
            status_kib(server.child.id(), "VmHWM") as f64 / 1024.0
        );
        if got < devices {
            std::process::exit(1);
        }
    });
}

async fn post(client: &reqwest::Client, url: &str, body: serde_json::Value) {
    let response = client
        .post(url)
        .basic_auth("bench.k", Some("secret"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    assert!(
        status.is_success(),
        "{url}: {status} {:?}",
        response.text().await
    );
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
