//! Web Push: the receiver holds the subscription's private key and auth secret, checks the
//! VAPID token with p256's ECDSA and decrypts the body itself (HKDF and AES-GCM, RFC 8291 and
//! RFC 8188 written out here), independently of our encrypt path.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;
use tokio::sync::Semaphore;

use test_support::WebPushSubscription as Subscription;

use crate::receiver::{
    eventually, fast_delivery, gone_channel, gone_reports, now_secs, split_jwt, Receiver, Reply,
};

const SUBJECT: &str = "mailto:ops@digis.example";

fn config(vapid: push::VapidKeys) -> push::Config {
    let mut web = push::WebPushConfig::new(vapid, SUBJECT).unwrap();
    // The test's push service is on loopback.
    web.endpoint_hosts.push("127.0.0.1".into());
    push::Config {
        web_push: Some(web),
        delivery: fast_delivery(),
        ..push::Config::default()
    }
}

#[tokio::test]
async fn delivers_an_encrypted_vapid_signed_payload() {
    let mut receiver = Receiver::start(Arc::new(|_, _| Reply::status(201))).await;
    let vapid = push::VapidKeys::generate();
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config(vapid.clone()), on_gone);
    assert_eq!(
        push.vapid_public_key(),
        Some(vapid.public_key_base64url().as_str())
    );
    let browser = Subscription::new();
    let payload = json!({
        "notification": {"title": "Ava is live", "body": "Tap to watch", "icon": "/ava.png", "collapseKey": "live-ava"},
        "data": {"streamId": "s-1"},
        "fcm": {"notification": {"color": "#fff"}}
    });
    push.send(push::Job {
        device_id: Some("browser-1".into()),
        recipient: browser.recipient(&receiver.url("/push/sub-1")),
        payload,
    })
    .unwrap();

    let request = receiver.next().await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/push/sub-1");
    assert_eq!(request.header("content-encoding"), "aes128gcm");
    assert_eq!(request.header("ttl"), "86400");
    assert_eq!(request.header("urgency"), "normal");
    assert_eq!(request.header("topic"), "live-ava");

    // Authorization: vapid t=<jwt>, k=<our public key>
    let authorization = request.header("authorization");
    let rest = authorization.strip_prefix("vapid ").expect("vapid scheme");
    let mut token = "";
    let mut key = "";
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').expect("name=value");
        match name {
            "t" => token = value,
            "k" => key = value,
            other => panic!("unexpected vapid parameter {other}"),
        }
    }
    assert_eq!(key, vapid.public_key_base64url());
    let (header, claims, signing_input, signature) = split_jwt(token);
    assert_eq!(header["alg"], "ES256");
    let key_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key)
        .unwrap();
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key_bytes).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&signature).expect("r||s");
    p256::ecdsa::signature::Verifier::verify(&verifying, signing_input.as_bytes(), &signature)
        .expect("the VAPID token verifies against our public key");
    assert_eq!(claims["aud"], format!("http://{}", receiver.addr));
    assert_eq!(claims["sub"], SUBJECT);
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(
        exp > now_secs() && exp <= now_secs() + 24 * 3600,
        "exp within a day: {exp}"
    );

    let plain = browser.decrypt(&request.body);
    let delivered: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        delivered,
        json!({
            "notification": {"title": "Ava is live", "body": "Tap to watch", "icon": "/ava.png", "collapseKey": "live-ava"},
            "data": {"streamId": "s-1"}
        })
    );
    eventually("sent counted", || push.metrics().web.sent == 1).await;
}

#[tokio::test]
async fn not_found_and_gone_are_reported_once_without_retry() {
    let receiver = Receiver::start(Arc::new(|request, _| {
        Reply::status(if request.path == "/sub-404" { 404 } else { 410 })
    }))
    .await;
    let (on_gone, mut gone) = gone_channel();
    let push = push::Push::start(config(push::VapidKeys::generate()), on_gone);
    for (device, path) in [("d-404", "/sub-404"), ("d-410", "/sub-410")] {
        push.send(push::Job {
            device_id: Some(device.into()),
            recipient: Subscription::new().recipient(&receiver.url(path)),
            payload: json!({"notification": {"title": "t"}}),
        })
        .unwrap();
    }
    assert_eq!(
        gone_reports(&mut gone, 2).await,
        [
            ("d-404".to_owned(), "HTTP 404".to_owned()),
            ("d-410".to_owned(), "HTTP 410".to_owned()),
        ]
    );
    let metrics = push.metrics().web;
    assert_eq!(
        (metrics.gone, metrics.retried, metrics.sent, metrics.failed),
        (2, 0, 0, 0)
    );
    assert_eq!(receiver.hits(), 2, "no retry after gone");
    assert!(gone.try_recv().is_err(), "each reported once");
}

#[tokio::test]
async fn server_errors_are_retried_then_delivered_once() {
    // 500, then 429 asking to wait 0 s, then created.
    let mut receiver = Receiver::start(Arc::new(|_, index| match index {
        0 => Reply::status(500),
        1 => Reply {
            headers: vec![("retry-after", "0".into())],
            ..Reply::status(429)
        },
        _ => Reply::status(201),
    }))
    .await;
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config(push::VapidKeys::generate()), on_gone);
    let browser = Subscription::new();
    push.send(push::Job {
        device_id: None,
        recipient: browser.recipient(&receiver.url("/sub")),
        payload: json!({"data": {"n": 1}}),
    })
    .unwrap();
    eventually("delivered", || push.metrics().web.sent == 1).await;
    let metrics = push.metrics().web;
    assert_eq!((metrics.sent, metrics.retried, metrics.failed), (1, 2, 0));
    assert_eq!(receiver.hits(), 3);
    // Each attempt is a complete, decryptable request, under one VAPID token for the origin.
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..3 {
        let request = receiver.next().await;
        assert_eq!(browser.decrypt(&request.body), br#"{"data":{"n":1}}"#);
        tokens.insert(request.header("authorization").to_owned());
    }
    assert_eq!(tokens.len(), 1, "the token is reused");
}

/// The backoff here is an hour: the retry comes at once only because `Retry-After: 0` says so.
#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = Receiver::start(Arc::new(|_, index| match index {
        0 => Reply {
            headers: vec![("retry-after", "0".into())],
            ..Reply::status(503)
        },
        _ => Reply::status(201),
    }))
    .await;
    let (on_gone, _gone) = gone_channel();
    let mut config = config(push::VapidKeys::generate());
    config.delivery.retry_initial = std::time::Duration::from_secs(3600);
    config.delivery.retry_max = std::time::Duration::from_secs(3600);
    let push = push::Push::start(config, on_gone);
    push.send(push::Job {
        device_id: None,
        recipient: Subscription::new().recipient(&receiver.url("/sub")),
        payload: json!({"data": {}}),
    })
    .unwrap();
    eventually("delivered on the retry", || push.metrics().web.sent == 1).await;
    assert_eq!(push.metrics().web.retried, 1);
}

/// A Web Push job for `endpoint`.
fn web_job(endpoint: &str) -> push::Job {
    push::Job {
        device_id: None,
        recipient: Subscription::new().recipient(endpoint),
        payload: json!({"data": {}}),
    }
}

/// Web Push with one sender and a queue of one job, against a receiver that holds every
/// request until `hold` has permits, with one job in flight and one waiting: the queue full.
struct FullQueue {
    hold: Arc<Semaphore>,
    push: push::Push,
    /// Where the jobs go.
    endpoint: String,
    _receiver: Receiver,
    _gone: tokio::sync::mpsc::Receiver<push::Gone>,
}

async fn full_queue() -> FullQueue {
    let hold = Arc::new(Semaphore::new(0));
    let mut receiver = Receiver::start({
        let hold = hold.clone();
        Arc::new(move |_, _| Reply {
            hold: Some(hold.clone()),
            ..Reply::status(201)
        })
    })
    .await;
    let (on_gone, gone) = gone_channel();
    let mut config = config(push::VapidKeys::generate());
    config.delivery.senders = 1;
    config.delivery.queue_max_jobs = 1;
    let push = push::Push::start(config, on_gone);
    let endpoint = receiver.url("/sub");
    push.send(web_job(&endpoint)).unwrap();
    receiver.next().await; // in flight, held
    push.send(web_job(&endpoint)).unwrap(); // waits in the queue, which is full now
    FullQueue {
        hold,
        push,
        endpoint,
        _receiver: receiver,
        _gone: gone,
    }
}

#[tokio::test]
async fn a_full_queue_refuses_and_counts_the_drop() {
    let FullQueue {
        hold,
        push,
        endpoint,
        _receiver,
        _gone,
    } = full_queue().await;
    assert_eq!(
        push.send(web_job(&endpoint)),
        Err(push::Refused::QueueFull("web"))
    );
    let metrics = push.metrics().web;
    assert_eq!((metrics.queue_depth, metrics.dropped), (1, 1));
    hold.add_permits(2);
    eventually("both delivered", || push.metrics().web.sent == 2).await;
    assert_eq!(push.metrics().web.queue_depth, 0);
}

#[tokio::test]
async fn send_waiting_waits_for_room_instead_of_refusing() {
    let FullQueue {
        hold,
        push,
        endpoint,
        _receiver,
        _gone,
    } = full_queue().await;
    let waiting = tokio::spawn({
        let push = push.clone();
        async move { push.send_waiting(web_job(&endpoint)).await }
    });
    // The test's runtime has one thread: one yield lets the task run until it waits.
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "waits while the queue is full");
    hold.add_permits(3);
    waiting.await.unwrap().expect("queued once there was room");
    eventually("all three delivered", || push.metrics().web.sent == 3).await;
    assert_eq!(push.metrics().web.dropped, 0);
}

#[tokio::test]
async fn malformed_or_unconfigured_recipients_are_refused() {
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config(push::VapidKeys::generate()), on_gone);
    let refused = |recipient: serde_json::Value| {
        push.send(push::Job {
            device_id: None,
            recipient,
            payload: json!({}),
        })
        .unwrap_err()
    };
    assert_eq!(
        refused(json!({"transportType": "fcm", "registrationToken": "x"})),
        push::Refused::NotConfigured("fcm")
    );
    assert_eq!(
        refused(json!({"transportType": "apns", "deviceToken": "abc123"})),
        push::Refused::NotConfigured("apns")
    );
    for bad in [
        json!({"transportType": "web", "targetUrl": "https://push.example/x"}),
        json!({"transportType": "web", "targetUrl": "ftp://x", "encryptionKey": {"p256dh": "AA", "auth": "AA"}}),
        json!({"transportType": "web", "targetUrl": "https://push.example/x", "encryptionKey": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}),
        json!({"transportType": "apns", "deviceToken": "../../x"}),
        json!({"transportType": "pigeon"}),
        json!({}),
    ] {
        assert!(
            matches!(refused(bad.clone()), push::Refused::Malformed(_)),
            "{bad}"
        );
    }
    assert_eq!(push.metrics().fcm, push::TransportMetrics::default());
}

/// A subscription's endpoint comes from whoever registers the device, so only the listed push
/// services are sent to: an endpoint elsewhere (an internal service, say) is refused before any
/// request, as is plain HTTP to a host that is not loopback; by default only the browsers' push
/// services are listed.
#[tokio::test]
async fn only_listed_push_services_are_sent_to() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::status(201))).await;
    let browser = Subscription::new();
    let (on_gone, _gone) = gone_channel();
    let vapid = push::VapidKeys::generate();
    let defaults = push::WebPushConfig::new(vapid.clone(), SUBJECT).unwrap();
    let job = |url: &str| push::Job {
        device_id: None,
        recipient: browser.recipient(url),
        payload: json!({"notification": {"title": "t"}}),
    };
    let by_default = push::Push::start(
        push::Config {
            web_push: Some(defaults.clone()),
            delivery: fast_delivery(),
            ..push::Config::default()
        },
        on_gone.clone(),
    );
    for url in [
        receiver.url("/sub"),
        "https://metadata.internal/latest".to_owned(),
        "http://fcm.googleapis.com/fcm/send/x".to_owned(),
        "https://fcm.googleapis.com.evil.example/x".to_owned(),
    ] {
        assert!(
            matches!(by_default.send(job(&url)), Err(push::Refused::Malformed(_))),
            "{url}"
        );
    }
    for url in [
        "https://fcm.googleapis.com/fcm/send/x",
        "https://updates.push.services.mozilla.com/wpush/v2/x",
        "https://web.push.apple.com/x",
    ] {
        let endpoint = reqwest::Url::parse(url).unwrap();
        assert!(defaults.sends_to(&endpoint), "{url}");
    }
    // Listed, the loopback service is sent to.
    let listed = push::Push::start(config(vapid), on_gone);
    listed.send(job(&receiver.url("/sub"))).expect("queued");
    eventually("the listed service's request", || receiver.hits() == 1).await;
}
