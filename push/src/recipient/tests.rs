use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::json;

use super::*;

fn keys() -> (Vec<u8>, [u8; 16]) {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let point = secret
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    (point, [0xfb; 16])
}

#[test]
fn web_takes_the_endpoint_plain_or_base64_and_keys_in_either_alphabet() {
    let (point, auth) = keys();
    let endpoint = "https://fcm.googleapis.com/fcm/send/abc:APA91b?x=1";
    let standard = base64::engine::general_purpose::STANDARD;
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for (target_url, p256dh, auth) in [
        // ably-js: btoa(endpoint), keys base64url.
        (
            standard.encode(endpoint),
            url_safe.encode(&point),
            url_safe.encode(auth),
        ),
        // A server registering for a browser: the URL itself, keys standard and padded.
        (
            endpoint.to_owned(),
            standard.encode(&point),
            standard.encode(auth),
        ),
    ] {
        let recipient = json!({"transportType": "web", "targetUrl": target_url,
                               "encryptionKey": {"p256dh": p256dh, "auth": auth}});
        let Ok(Target::Web {
            endpoint: parsed,
            p256dh,
            auth: parsed_auth,
        }) = Target::parse(&recipient)
        else {
            panic!("{recipient}")
        };
        assert_eq!(parsed.as_str(), endpoint);
        assert_eq!(p256dh.to_encoded_point(false).as_bytes(), &point[..]);
        assert_eq!(parsed_auth, [0xfb; 16]);
    }
}

#[test]
fn web_refuses_a_short_auth_secret_and_a_point_off_the_curve() {
    let (point, _) = keys();
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let with = |p256dh: String, auth: String| {
        Target::parse(
            &json!({"transportType": "web", "targetUrl": "https://push.example/1",
                              "encryptionKey": {"p256dh": p256dh, "auth": auth}}),
        )
    };
    assert!(matches!(
        with(url_safe.encode(&point), url_safe.encode([1u8; 15])),
        Err(Refused::Malformed(m)) if m.contains("auth")
    ));
    let mut off_curve = point.clone();
    off_curve[64] ^= 1;
    assert!(matches!(
        with(url_safe.encode(off_curve), url_safe.encode([1u8; 16])),
        Err(Refused::Malformed(m)) if m.contains("p256dh")
    ));
}

#[test]
fn fcm_gcm_and_apns_recipients() {
    for transport in ["fcm", "gcm"] {
        let target = Target::parse(&json!({"transportType": transport, "registrationToken": "r"}));
        assert!(
            matches!(target, Ok(Target::Fcm { registration_token }) if registration_token == "r")
        );
    }
    let apns = Target::parse(&json!({"transportType": "apns", "deviceToken": "0aF9"}));
    assert!(matches!(apns, Ok(Target::Apns { device_token }) if device_token == "0aF9"));
    assert!(Target::parse(&json!({"transportType": "fcm"})).is_err());
    assert!(Target::parse(&json!({"transportType": "ablyChannel", "channel": "x"})).is_err());
}
