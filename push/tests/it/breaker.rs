//! The breaker: consecutive failures open it and the queue is held (no requests) until the
//! cooldown's one probe, whose success closes it again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::receiver::{eventually, fast_delivery, gone_channel, Receiver, Reply};

fn config(cooldown: Duration) -> push::Config {
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let p8 =
        p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, p256::pkcs8::LineEnding::LF).unwrap();
    push::Config {
        apns: Some(push::ApnsConfig::new(&p8, "K", "T", "cc.digis.app").unwrap()),
        delivery: push::Delivery {
            senders: 1,
            max_retries: 0,
            breaker_failures: 3,
            breaker_cooldown: cooldown,
            ..fast_delivery()
        },
        ..push::Config::default()
    }
}

fn job(n: usize) -> push::Job {
    push::Job {
        device_id: Some(format!("d{n}")),
        recipient: json!({"transportType": "apns", "deviceToken": format!("{n:064x}")}),
        payload: json!({"notification": {"title": "x"}}),
    }
}

#[tokio::test]
async fn an_open_breaker_holds_the_queue() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::status(503))).await;
    let mut config = config(Duration::from_secs(3600));
    config.apns.as_mut().unwrap().endpoint = receiver.url("");
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config, on_gone);
    // All five at once: the breaker opens on the third failure, with two still queued.
    for n in 0..5 {
        push.send(job(n)).unwrap();
    }
    eventually("three failures", || push.metrics().apns.failed == 3).await;
    let metrics = push.metrics().apns;
    assert!(metrics.breaker_open);
    assert_eq!(metrics.queue_depth, 2, "held while open");
    assert_eq!(receiver.hits(), 3);
}

#[tokio::test]
async fn after_the_cooldown_one_probe_closes_it() {
    let cooldown = Duration::from_millis(300);
    let healthy = Arc::new(AtomicBool::new(false));
    let receiver = Receiver::start({
        let healthy = healthy.clone();
        Arc::new(move |_, _| {
            Reply::status(if healthy.load(Ordering::SeqCst) {
                200
            } else {
                500
            })
        })
    })
    .await;
    let mut config = config(cooldown);
    config.apns.as_mut().unwrap().endpoint = receiver.url("");
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config, on_gone);
    for n in 0..3 {
        push.send(job(n)).unwrap();
    }
    eventually("breaker open", || push.metrics().apns.breaker_open).await;
    healthy.store(true, Ordering::SeqCst);
    for n in 3..6 {
        push.send(job(n)).unwrap();
    }
    eventually("the held jobs delivered", || push.metrics().apns.sent == 3).await;
    let metrics = push.metrics().apns;
    assert!(!metrics.breaker_open);
    assert_eq!((metrics.failed, metrics.queue_depth), (3, 0));
    let answered = receiver.answered.lock().unwrap().clone();
    assert_eq!(answered.len(), 6);
    // The probe (request 4) came no sooner than the cooldown after the third failure's answer.
    let mut requests = Vec::new();
    let mut receiver = receiver;
    for _ in 0..6 {
        requests.push(receiver.next().await.at);
    }
    assert!(
        requests[3] - answered[2] >= cooldown,
        "probe after {:?}",
        requests[3] - answered[2]
    );
}
