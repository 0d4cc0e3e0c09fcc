//! APNs against a loopback HTTP/2 (h2c) server: the provider token is an ES256 JWT verified with
//! the test key's public half; headers and body as Apple documents them.

use std::sync::Arc;

use p256::pkcs8::EncodePrivateKey as _;
use serde_json::json;

use crate::receiver::{
    eventually, fast_delivery, gone_channel, now_secs, split_jwt, Receiver, Reply,
};

const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn config(receiver: &Receiver, key: &p256::SecretKey) -> push::Config {
    let p8 = key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let mut apns = push::ApnsConfig::new(&p8, "KEY123ABCD", "TEAM456XYZ", "cc.digis.app").unwrap();
    apns.endpoint = receiver.url("");
    push::Config {
        apns: Some(apns),
        delivery: fast_delivery(),
        ..push::Config::default()
    }
}

fn job(token: &str, payload: serde_json::Value) -> push::Job {
    push::Job {
        device_id: Some(format!("ios-{}", &token[..4])),
        recipient: json!({"transportType": "apns", "deviceToken": token}),
        payload,
    }
}

#[tokio::test]
async fn sends_over_http2_with_a_verified_provider_token() {
    let mut receiver = Receiver::start(Arc::new(|_, _| Reply::status(200))).await;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config(&receiver, &key), on_gone);
    let payload = json!({
        "notification": {"title": "Incoming call", "body": "Ava is calling", "sound": "ring.caf", "collapseKey": "call"},
        "data": {"callId": "c-9"}
    });
    push.send(job(TOKEN, payload.clone())).unwrap();
    push.send(job(TOKEN, payload)).unwrap();
    eventually("both sent", || push.metrics().apns.sent == 2).await;

    let first = receiver.next().await;
    let second = receiver.next().await;
    assert_eq!(first.version, axum::http::Version::HTTP_2);
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, format!("/3/device/{TOKEN}"));
    assert_eq!(first.header("apns-topic"), "cc.digis.app");
    assert_eq!(first.header("apns-push-type"), "alert");
    assert_eq!(first.header("apns-priority"), "10");
    assert_eq!(
        first.json(),
        json!({"callId": "c-9", "aps": {"alert": {"title": "Incoming call", "body": "Ava is calling"},
                                         "sound": "ring.caf", "thread-id": "call"}})
    );
    let token = first
        .header("authorization")
        .strip_prefix("bearer ")
        .expect("bearer");
    assert_eq!(
        second.header("authorization"),
        first.header("authorization"),
        "the token is reused"
    );
    let (header, claims, signing_input, signature) = split_jwt(token);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "KEY123ABCD");
    assert_eq!(claims["iss"], "TEAM456XYZ");
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat <= now_secs() && iat + 60 > now_secs());
    let verifying = p256::ecdsa::VerifyingKey::from(p256::ecdsa::SigningKey::from(&key));
    let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
    p256::ecdsa::signature::Verifier::verify(&verifying, signing_input.as_bytes(), &signature)
        .expect("the provider token verifies with the .p8 key's public half");
}

#[tokio::test]
async fn background_push_takes_the_given_headers() {
    let mut receiver = Receiver::start(Arc::new(|_, _| Reply::status(200))).await;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config(&receiver, &key), on_gone);
    push.send(job(TOKEN, json!({
        "data": {"sync": true},
        "apns": {"aps": {"content-available": 1}, "apns-headers": {"apns-push-type": "background", "apns-priority": "5"}}
    })))
    .unwrap();
    let request = receiver.next().await;
    assert_eq!(request.header("apns-push-type"), "background");
    assert_eq!(request.header("apns-priority"), "5");
    assert_eq!(
        request.json(),
        json!({"sync": true, "aps": {"content-available": 1}})
    );
}

#[tokio::test]
async fn unregistered_and_bad_device_tokens_are_gone() {
    let stale = "aaaa".repeat(16);
    let bad = "bbbb".repeat(16);
    let receiver = Receiver::start({
        let stale = stale.clone();
        let bad = bad.clone();
        Arc::new(move |request, _| {
            if request.path.ends_with(&stale) {
                Reply::json(
                    410,
                    json!({"reason": "Unregistered", "timestamp": 1700000000000u64}),
                )
            } else if request.path.ends_with(&bad) {
                Reply::json(400, json!({"reason": "BadDeviceToken"}))
            } else {
                Reply::json(400, json!({"reason": "PayloadTooLarge"}))
            }
        })
    })
    .await;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let (on_gone, mut gone) = gone_channel();
    let push = push::Push::start(config(&receiver, &key), on_gone);
    for token in [&stale, &bad, &"cccc".repeat(16)] {
        push.send(job(token, json!({"notification": {"title": "x"}})))
            .unwrap();
    }
    eventually("all answered", || {
        let m = push.metrics().apns;
        m.gone + m.failed == 3
    })
    .await;
    let mut reports = vec![gone.recv().await.unwrap(), gone.recv().await.unwrap()];
    reports.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    assert_eq!(
        reports,
        vec![
            push::Gone {
                device_id: Some("ios-aaaa".into()),
                reason: "Unregistered".into()
            },
            push::Gone {
                device_id: Some("ios-bbbb".into()),
                reason: "BadDeviceToken".into()
            },
        ]
    );
    assert_eq!(receiver.hits(), 3, "no retries");
}
