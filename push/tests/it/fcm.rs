//! FCM HTTP v1 against a loopback OAuth token endpoint and messages endpoint: the JWT grant is
//! verified (RS256, the test service account's public key), tokens are reused and renewed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::receiver::{
    eventually, fast_delivery, gone_channel, gone_reports, now_secs, Receiver, Recorded, Reply,
    Script,
};

const PRIVATE_KEY: &str = include_str!("fixtures/fcm-test-key.pem");
const PUBLIC_KEY: &str = include_str!("fixtures/fcm-test-key.pub.pem");
const MESSAGES: &str = "/v1/projects/digis-test/messages:send";

fn config(receiver: &Receiver) -> push::Config {
    let account = json!({
        "type": "service_account",
        "project_id": "digis-test",
        "private_key_id": "key-1",
        "private_key": PRIVATE_KEY,
        "client_email": "push@digis-test.iam.gserviceaccount.com",
        "token_uri": receiver.url("/token"),
    });
    let mut fcm =
        push::FcmConfig::new(push::ServiceAccount::from_json(&account.to_string()).unwrap());
    fcm.endpoint = receiver.url("");
    push::Config {
        fcm: Some(fcm),
        delivery: fast_delivery(),
        ..push::Config::default()
    }
}

/// A token endpoint granting `tok-1`, `tok-2`, ... each for `expires_in` seconds, and a messages
/// endpoint answering `messages(request)`.
fn script(
    expires_in: u64,
    messages: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> Script {
    let grants = AtomicUsize::new(0);
    Arc::new(move |request, _| {
        if request.path == "/token" {
            let n = grants.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::json(
                200,
                json!({"access_token": format!("tok-{n}"), "expires_in": expires_in, "token_type": "Bearer"}),
            )
        } else {
            messages(request)
        }
    })
}

fn job(token: &str) -> push::Job {
    push::Job {
        device_id: Some(format!("device-{token}")),
        recipient: json!({"transportType": "fcm", "registrationToken": token}),
        payload: json!({
            "notification": {"title": "New message", "body": "Hi!", "sound": "default", "collapseKey": "dm"},
            "data": {"dmId": "m1", "unread": 2}
        }),
    }
}

/// Checks the grant request: form fields and an RS256 assertion with Google's claims.
fn assert_grant(request: &Recorded, token_uri: &str) {
    assert_eq!(
        request.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let form = std::str::from_utf8(&request.body).unwrap();
    let fields: std::collections::HashMap<&str, &str> = form
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    assert_eq!(
        fields["grant_type"],
        "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    );
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[token_uri]);
    validation.set_issuer(&["push@digis-test.iam.gserviceaccount.com"]);
    let decoded = jsonwebtoken::decode::<serde_json::Value>(
        fields["assertion"],
        &jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap(),
        &validation,
    )
    .expect("the assertion verifies with the service account's public key");
    assert_eq!(decoded.header.kid.as_deref(), Some("key-1"));
    let claims = decoded.claims;
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat <= now_secs() && iat + 60 > now_secs());
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3600);
}

#[tokio::test]
async fn grants_a_verified_token_and_reuses_it() {
    let mut receiver = Receiver::start(script(3600, |_| {
        Reply::json(200, json!({"name": "projects/digis-test/messages/1"}))
    }))
    .await;
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config(&receiver), on_gone);
    for n in 1..=3 {
        push.send(job(&format!("reg-{n}"))).unwrap();
        eventually("sent", || push.metrics().fcm.sent == n).await;
    }
    let grant = receiver.next().await;
    assert_eq!(grant.path, "/token");
    assert_grant(&grant, &receiver.url("/token"));
    for n in 1..=3 {
        let message = receiver.next().await;
        assert_eq!(message.path, MESSAGES);
        assert_eq!(
            message.header("authorization"),
            "Bearer tok-1",
            "one token for every send"
        );
        assert_eq!(
            message.json(),
            json!({"message": {
                "token": format!("reg-{n}"),
                "notification": {"title": "New message", "body": "Hi!"},
                "data": {"dmId": "m1", "unread": "2"},
                "android": {"collapse_key": "dm", "notification": {"sound": "default"}}
            }})
        );
    }
    assert_eq!(receiver.hits(), 4, "one grant, three messages");
}

#[tokio::test]
async fn renews_a_token_near_its_expiry() {
    // 60 s tokens against the default 5-minute margin: each is already due for renewal.
    let mut receiver = Receiver::start(script(60, |_| Reply::json(200, json!({})))).await;
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config(&receiver), on_gone);
    for n in 1..=2 {
        push.send(job("reg")).unwrap();
        eventually("sent", || push.metrics().fcm.sent == n).await;
    }
    let paths: Vec<(String, Option<String>)> = {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let r = receiver.next().await;
            let auth = r
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.push((r.path, auth));
        }
        seen
    };
    assert_eq!(
        paths,
        vec![
            ("/token".to_owned(), None),
            (MESSAGES.to_owned(), Some("Bearer tok-1".to_owned())),
            ("/token".to_owned(), None),
            (MESSAGES.to_owned(), Some("Bearer tok-2".to_owned())),
        ]
    );
}

#[tokio::test]
async fn unauthorized_drops_the_token_and_tries_once_more() {
    let receiver = Receiver::start(script(3600, |request| {
        if request.header("authorization") == "Bearer tok-1" {
            Reply::json(
                401,
                json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}),
            )
        } else {
            Reply::json(200, json!({}))
        }
    }))
    .await;
    let (on_gone, _gone) = gone_channel();
    let push = push::Push::start(config(&receiver), on_gone);
    push.send(job("reg")).unwrap();
    eventually("sent", || push.metrics().fcm.sent == 1).await;
    assert_eq!(receiver.hits(), 4, "grant, 401, grant, 200");
    assert_eq!(push.metrics().fcm.retried, 0, "a renewal is not a retry");
}

#[tokio::test]
async fn unregistered_and_invalid_tokens_are_gone() {
    let receiver = Receiver::start(script(3600, |request| {
        let token = request.json()["message"]["token"].as_str().unwrap().to_owned();
        match token.as_str() {
            "stale" => Reply::json(404, json!({"error": {"code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}})),
            "garbage" => Reply::json(400, json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                "message": "The registration token is not a valid FCM registration token",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]}})),
            // A bad payload is not the device's fault: failed, not gone.
            _ => Reply::json(400, json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                "message": "Invalid value at 'message.data[0].value'",
                "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                             "fieldViolations": [{"field": "message.data[0].value"}]}]}})),
        }
    }))
    .await;
    let (on_gone, mut gone) = gone_channel();
    let push = push::Push::start(config(&receiver), on_gone);
    for token in ["stale", "garbage", "fine-device"] {
        push.send(job(token)).unwrap();
    }
    eventually("all answered", || {
        let m = push.metrics().fcm;
        m.gone + m.failed == 3
    })
    .await;
    assert_eq!(
        gone_reports(&mut gone, 2).await,
        [
            (
                "device-garbage".to_owned(),
                "INVALID_ARGUMENT: registration token".to_owned()
            ),
            ("device-stale".to_owned(), "UNREGISTERED".to_owned()),
        ]
    );
    let metrics = push.metrics().fcm;
    assert_eq!((metrics.gone, metrics.failed, metrics.retried), (2, 1, 0));
}
