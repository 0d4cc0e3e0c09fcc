//! Push fan-out throughput: `n` notifications on one transport to a receiver on loopback that
//! answers at once, through `Push::send_waiting` as a channel's fan-out would go. Prints
//! deliveries per second and the process's peak memory.
//!
//! `cargo run --release -p push --example fanout -- 100000 web` (or `fcm`, `apns`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::json;

const FCM_TEST_KEY: &str = include_str!("../tests/it/fixtures/fcm-test-key.pem");

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let transport = args.next().unwrap_or_else(|| "web".to_owned());

    // The receiver: every request answered at once (a token for FCM's grant).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        if uri.path() == "/token" {
            (
                axum::http::StatusCode::OK,
                json!({"access_token": "t", "expires_in": 3600}).to_string(),
            )
        } else {
            (axum::http::StatusCode::CREATED, String::new())
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut config = push::Config::default();
    let recipients: Vec<serde_json::Value> = match transport.as_str() {
        "web" => {
            let mut web =
                push::WebPushConfig::new(push::VapidKeys::generate(), "mailto:bench@example.com")
                    .unwrap();
            // The receiver is on loopback.
            web.endpoint_hosts.push("127.0.0.1".into());
            config.web_push = Some(web);
            // A hundred browsers' keys, reused: the cost per notification is the same.
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            (0..100)
                .map(|i| {
                    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
                    let point = key.public_key().to_encoded_point(false);
                    json!({"transportType": "web", "targetUrl": format!("{base}/sub/{i}"),
                           "encryptionKey": {"p256dh": url.encode(point.as_bytes()), "auth": url.encode([7u8; 16])}})
                })
                .collect()
        }
        "fcm" => {
            let account = json!({"project_id": "bench", "client_email": "b@bench.iam",
                                 "private_key": FCM_TEST_KEY, "token_uri": format!("{base}/token")});
            let mut fcm = push::FcmConfig::new(
                push::ServiceAccount::from_json(&account.to_string()).unwrap(),
            );
            fcm.endpoint = base.clone();
            config.fcm = Some(fcm);
            vec![json!({"transportType": "fcm", "registrationToken": "bench-token"})]
        }
        "apns" => {
            let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
            let p8 = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, Default::default()).unwrap();
            let mut apns = push::ApnsConfig::new(&p8, "K", "T", "cc.digis.bench").unwrap();
            apns.endpoint = base.clone();
            config.apns = Some(apns);
            vec![json!({"transportType": "apns", "deviceToken": "ab".repeat(32)})]
        }
        other => panic!("transport {other:?}: web, fcm or apns"),
    };
    let push = push::Push::start(config, Arc::new(|_| {}));
    let payload = json!({"notification": {"title": "Ava is live", "body": "Tap to watch"},
                         "data": {"streamId": "s-1"}});

    let started = Instant::now();
    for i in 0..n {
        let job = push::Job {
            device_id: Some(format!("device-{i}")),
            recipient: recipients[i as usize % recipients.len()].clone(),
            payload: payload.clone(),
        };
        push.send_waiting(job).await.unwrap();
    }
    let metrics = |push: &push::Push| match transport.as_str() {
        "web" => push.metrics().web,
        "fcm" => push.metrics().fcm,
        _ => push.metrics().apns,
    };
    while metrics(&push).sent + metrics(&push).failed < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let done = metrics(&push);
    println!(
        "{transport}: {} sent, {} failed in {:.2} s: {:.0} deliveries/s; peak RSS {} MiB",
        done.sent,
        done.failed,
        elapsed.as_secs_f64(),
        done.sent as f64 / elapsed.as_secs_f64(),
        peak_rss_kib() / 1024
    );
}

/// VmHWM from /proc/self/status, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
