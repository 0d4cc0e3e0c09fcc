//! APNs against a loopback HTTP/2 server, h2c or TLS (a test CA, ALPN h2, optionally a client
//! certificate): the provider token is an ES256 JWT verified with the test key's public half;
//! headers and body as Apple documents them.

use std::sync::Arc;

use p256::pkcs8::EncodePrivateKey as _;
use serde_json::json;

use crate::receiver::{
    eventually, fast_delivery, gone_channel, gone_reports, now_secs, split_jwt, tls_config,
    Receiver, Reply, TEST_CA,
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
    assert_eq!(
        gone_reports(&mut gone, 2).await,
        [
            ("ios-aaaa".to_owned(), "Unregistered".to_owned()),
            ("ios-bbbb".to_owned(), "BadDeviceToken".to_owned()),
        ]
    );
    assert_eq!(receiver.hits(), 3, "no retries");
}

/// The APNs path production takes: TLS, HTTP/2 agreed by ALPN, the server's certificate
/// verified (against the test CA, given as an extra root).
#[tokio::test]
async fn token_auth_over_tls_agrees_on_http2() {
    let mut receiver =
        Receiver::start_tls(Arc::new(|_, _| Reply::status(200)), tls_config(false)).await;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let mut config = config(&receiver, &key);
    assert!(receiver.url("").starts_with("https://127.0.0.1:"));
    config.apns.as_mut().unwrap().extra_roots_pem = Some(TEST_CA.as_bytes().to_vec());
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config, on_gone);
    push.send(job(TOKEN, json!({"notification": {"title": "hi"}})))
        .unwrap();
    let request = receiver.next().await;
    assert_eq!(request.version, axum::http::Version::HTTP_2);
    assert!(request.header("authorization").starts_with("bearer "));
    assert_eq!(
        receiver.tls.lock().unwrap()[0].alpn.as_deref(),
        Some(&b"h2"[..])
    );
    eventually("sent", || push.metrics().apns.sent == 1).await;
}

/// Without the test CA the server's certificate is refused: verification stays on.
#[tokio::test]
async fn an_untrusted_server_certificate_is_refused() {
    let receiver =
        Receiver::start_tls(Arc::new(|_, _| Reply::status(200)), tls_config(false)).await;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let mut config = config(&receiver, &key);
    config.delivery.max_retries = 0;
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config, on_gone);
    push.send(job(TOKEN, json!({"notification": {"title": "hi"}})))
        .unwrap();
    eventually("failed", || push.metrics().apns.failed == 1).await;
    assert_eq!(receiver.hits(), 0);
}

/// Certificate auth: the client certificate is presented in the handshake and no token is sent.
#[tokio::test]
async fn certificate_auth_presents_the_client_certificate() {
    use rustls::pki_types::pem::PemObject as _;
    let mut receiver =
        Receiver::start_tls(Arc::new(|_, _| Reply::status(200)), tls_config(true)).await;
    let identity = include_bytes!("fixtures/tls/client-identity.pem");
    let mut apns = push::ApnsConfig::with_certificate(identity, "cc.digis.app").unwrap();
    apns.endpoint = receiver.url("");
    apns.extra_roots_pem = Some(TEST_CA.as_bytes().to_vec());
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(
        push::Config {
            apns: Some(apns),
            delivery: fast_delivery(),
            ..push::Config::default()
        },
        on_gone,
    );
    push.send(job(TOKEN, json!({"notification": {"title": "hi"}})))
        .unwrap();
    let request = receiver.next().await;
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(request.header("apns-topic"), "cc.digis.app");
    let client_cert = rustls::pki_types::CertificateDer::from_pem_slice(include_bytes!(
        "fixtures/tls/client.pem"
    ))
    .unwrap();
    assert_eq!(
        receiver.tls.lock().unwrap()[0].client_cert.as_deref(),
        Some(client_cert.as_ref())
    );
    eventually("sent", || push.metrics().apns.sent == 1).await;
}
