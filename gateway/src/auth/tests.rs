use jsonwebtoken::{EncodingKey, Header};

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn auth() -> Auth {
    Auth::new(
        vec![
            ApiKey::parse("app1.key1:secret", Capability::all()).unwrap(),
            ApiKey::parse(
                "app1.limited:other",
                Capability::parse(r#"{"chat:*":["publish","subscribe"]}"#).unwrap(),
            )
            .unwrap(),
        ],
        None,
    )
}

impl Auth {
    /// A signed token request checked and its nonce claimed in this process, as the embedded
    /// back-end's `Tokens::request_token` does.
    fn request_token(
        &self,
        key_name: &str,
        request: &TokenRequest,
        now_ms: u64,
    ) -> Result<TokenDetails, AuthError> {
        let prepared = self.prepare_token(key_name, request, None, now_ms)?;
        if let Some(claim) = &prepared.nonce {
            self.claim_nonce(claim, now_ms)?;
        }
        Ok(prepared.details)
    }
}

fn signed(key_name: &str, secret: &str, mut request: TokenRequest) -> TokenRequest {
    request.key_name = Some(key_name.into());
    request.mac = Some(request.sign(key_name, secret));
    request
}

fn request(client_id: Option<&str>, nonce: &str) -> TokenRequest {
    TokenRequest {
        ttl: Some("3600000".into()),
        capability: Some(r#"{"*":["subscribe"],"chat:*":["publish","subscribe"]}"#.into()),
        client_id: client_id.map(str::to_owned),
        timestamp: Some(NOW.to_string()),
        nonce: Some(nonce.into()),
        ..Default::default()
    }
}

/// A token for `app1.key1` from a signed `request(client_id, nonce)`, issued at `NOW`.
fn issue(auth: &Auth, client_id: Option<&str>, nonce: &str) -> TokenDetails {
    auth.request_token(
        "app1.key1",
        &signed("app1.key1", "secret", request(client_id, nonce)),
        NOW,
    )
    .unwrap()
}

#[test]
fn mac_matches_the_reference_vectors() {
    let full = request(Some("alice"), "0123456789abcdef");
    assert_eq!(
        full.sign("app1.key1", "secret"),
        "JfMe0x7ZdRu1eMrGk/zp9/aNVJckreupztNL6sDZb+A="
    );
    let bare = TokenRequest {
        timestamp: Some(NOW.to_string()),
        nonce: Some("0123456789abcdef".into()),
        ..Default::default()
    };
    assert_eq!(
        bare.sign("app1.key1", "secret"),
        "GxcaHt2fVohv9BsvTzHuZyuUyDzjR/Y1sRBkjGLQ97U="
    );
}

#[test]
fn signed_request_gives_a_token_that_verifies() {
    let auth = auth();
    let details = issue(&auth, Some("alice"), "0123456789abcdef");
    assert_eq!(details.expires - details.issued, 3_600_000);
    assert_eq!(details.client_id.as_deref(), Some("alice"));
    let principal = block_on(auth.verify_token(&details.token, NOW + 1)).unwrap();
    assert_eq!(principal.client_id.as_deref(), Some("alice"));
    assert_eq!(principal.expires_at, Some(details.expires));
    assert!(principal.allows(&ChannelName::parse("chat:1").unwrap(), Operation::Publish));
    assert!(!principal.allows(&ChannelName::parse("news").unwrap(), Operation::Publish));
    assert!(matches!(
        block_on(auth.verify_token(&details.token, details.expires)),
        Err(AuthError::TokenExpired)
    ));
}

#[test]
fn refuses_bad_mac_stale_timestamp_and_reused_nonce() {
    let auth = auth();
    let refusal = |request: &TokenRequest, now_ms: u64| {
        let result = auth.request_token("app1.key1", request, now_ms);
        result.unwrap_err().code().code()
    };
    let forged = signed("app1.key1", "wrong", request(None, "aaaaaaaaaaaaaaaa"));
    assert_eq!(refusal(&forged, NOW), 40101);

    let stale = signed("app1.key1", "secret", request(None, "bbbbbbbbbbbbbbbb"));
    let later = NOW + TIMESTAMP_WINDOW_MS + 1;
    assert_eq!(refusal(&stale, later), 40104);

    let once = signed("app1.key1", "secret", request(None, "cccccccccccccccc"));
    auth.request_token("app1.key1", &once, NOW).unwrap();
    assert_eq!(refusal(&once, NOW), 40105);
}

const TIMESTAMP_WINDOW_MS: u64 = 120_000;

#[test]
fn token_capability_is_intersected_with_the_key() {
    let auth = auth();
    let asked = TokenRequest {
        capability: Some(r#"{"*":["*"]}"#.into()),
        ..request(None, "dddddddddddddddd")
    };
    let details = auth
        .request_token("app1.limited", &signed("app1.limited", "other", asked), NOW)
        .unwrap();
    assert_eq!(details.capability, r#"{"chat:*":["publish","subscribe"]}"#);
}

#[test]
fn tampered_tokens_are_refused() {
    let auth = auth();
    let details = issue(&auth, None, "eeeeeeeeeeeeeeee");
    let mut tampered = details.token.clone();
    tampered.insert(6, 'x');
    assert!(matches!(
        block_on(auth.verify_token(&tampered, NOW)),
        Err(AuthError::InvalidToken)
    ));
    assert!(matches!(
        block_on(auth.verify_token("garbage", NOW)),
        Err(AuthError::InvalidToken)
    ));
}

#[test]
fn ably_jwts_signed_with_a_key_secret_are_accepted() {
    let auth = auth();
    let claims = serde_json::json!({
        "iat": NOW / 1000, "exp": NOW / 1000 + 60,
        "x-ably-capability": r#"{"chat:*":["subscribe"]}"#, "x-ably-clientId": "bob",
    });
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("app1.key1".into());
    let jwt = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"secret")).unwrap();
    let principal = block_on(auth.verify_token(&jwt, NOW)).unwrap();
    assert_eq!(principal.client_id.as_deref(), Some("bob"));
    assert!(principal.allows(&ChannelName::parse("chat:x").unwrap(), Operation::Subscribe));
    assert!(!principal.allows(&ChannelName::parse("chat:x").unwrap(), Operation::Publish));
    assert!(matches!(
        block_on(auth.verify_token(&jwt, NOW + 61_000)),
        Err(AuthError::TokenExpired)
    ));

    let forged =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"nope")).unwrap();
    assert_eq!(
        block_on(auth.verify_token(&forged, NOW))
            .unwrap_err()
            .code()
            .code(),
        40144
    );
}

#[test]
fn client_id_binding() {
    let auth = auth();
    let key = auth.verify_key("app1.key1:secret").unwrap();
    assert_eq!(
        key.clone().with_client_id(Some("x")).unwrap().identity(),
        Some("x")
    );
    assert!(key.may_act_as("anyone"));
    assert!(matches!(
        auth.verify_key("app1.key1:nope"),
        Err(AuthError::InvalidKey)
    ));
    assert!(matches!(
        auth.verify_key("nocolon"),
        Err(AuthError::MalformedKey)
    ));

    let details = issue(&auth, Some("alice"), "ffffffffffffffff");
    let alice = block_on(auth.verify_token(&details.token, NOW)).unwrap();
    assert!(alice.may_act_as("alice") && !alice.may_act_as("bob"));
    assert!(matches!(
        alice.clone().with_client_id(Some("bob")),
        Err(AuthError::ClientIdMismatch)
    ));
    assert!(alice.with_client_id(Some("alice")).is_ok());
}

#[test]
fn revoked_client_tokens_are_refused_and_newer_ones_accepted() {
    let auth = auth();
    let details = issue(&auth, Some("alice"), "gggggggggggggggg");
    auth.revoke_client("app1.key1", "alice", NOW + 1);
    assert!(matches!(
        block_on(auth.verify_token(&details.token, NOW + 2)),
        Err(AuthError::Revoked)
    ));
    let newer = TokenRequest {
        timestamp: Some((NOW + 5).to_string()),
        ..request(Some("alice"), "hhhhhhhhhhhhhhhh")
    };
    let details = auth
        .request_token("app1.key1", &signed("app1.key1", "secret", newer), NOW + 5)
        .unwrap();
    assert!(block_on(auth.verify_token(&details.token, NOW + 6)).is_ok());
    // Keys are never revoked this way.
    assert!(!auth.is_revoked(
        &auth
            .verify_key("app1.key1:secret")
            .unwrap()
            .with_client_id(Some("alice"))
            .unwrap()
    ));
}

#[test]
fn a_revocation_reaches_only_tokens_its_issuer_issued() {
    let auth = auth();
    let by_key1 = issue(&auth, Some("alice"), "iiiiiiiiiiiiiiii");
    let by_limited = auth
        .request_token(
            "app1.limited",
            &signed(
                "app1.limited",
                "other",
                TokenRequest {
                    capability: None,
                    ..request(Some("alice"), "jjjjjjjjjjjjjjjj")
                },
            ),
            NOW,
        )
        .unwrap();
    // The other key, and a Supabase revocation, do not reach key1's token.
    auth.revoke_client("app1.limited", "alice", NOW + 1);
    auth.revoke_client(SUPABASE_ISSUER, "alice", NOW + 1);
    assert!(block_on(auth.verify_token(&by_key1.token, NOW + 2)).is_ok());
    assert!(matches!(
        block_on(auth.verify_token(&by_limited.token, NOW + 2)),
        Err(AuthError::Revoked)
    ));
    // Its own issuer's does.
    auth.revoke_client("app1.key1", "alice", NOW + 1);
    assert!(matches!(
        block_on(auth.verify_token(&by_key1.token, NOW + 2)),
        Err(AuthError::Revoked)
    ));
}

#[test]
fn a_refused_token_request_does_not_use_up_its_nonce() {
    let auth = auth();
    let bad_ttl = signed(
        "app1.key1",
        "secret",
        TokenRequest {
            ttl: Some("0".into()),
            ..request(None, "kkkkkkkkkkkkkkkk")
        },
    );
    let refused = auth.prepare_token("app1.key1", &bad_ttl, None, NOW);
    assert!(matches!(refused, Err(AuthError::InvalidTokenRequest(_))));
    let good = signed("app1.key1", "secret", request(None, "kkkkkkkkkkkkkkkk"));
    let prepared = auth.prepare_token("app1.key1", &good, None, NOW).unwrap();
    let claim = prepared
        .nonce
        .expect("a signed request has a nonce to claim");
    assert_eq!(claim.nonce, "kkkkkkkkkkkkkkkk");
    assert_eq!(claim.forget_at, NOW + TIMESTAMP_WINDOW_MS);
    auth.request_token("app1.key1", &good, NOW).unwrap();
    assert!(matches!(
        auth.request_token("app1.key1", &good, NOW),
        Err(AuthError::NonceReused)
    ));
}

/// An Ably JWT's `ably.room.<room>` and `ably.channel.<pattern>` claims are the `userClaim`s of
/// the principal's messages there; stamping replaces whatever a client wrote.
#[test]
fn ably_jwt_user_claims_are_stamped_over_a_clients_own() {
    let auth = auth();
    let claims = serde_json::json!({
        "iat": NOW / 1000, "exp": NOW / 1000 + 60, "x-ably-clientId": "bob",
        "ably.room.lobby": "vip", "ably.channel.news:*": "reader", "ably.other": "ignored",
    });
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("app1.key1".into());
    let jwt = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"secret")).unwrap();
    let principal = block_on(auth.verify_token(&jwt, NOW)).unwrap();
    let channel = |name: &str| ChannelName::parse(name).unwrap();
    assert_eq!(principal.user_claim(&channel("lobby::$chat")), Some("vip"));
    assert_eq!(principal.user_claim(&channel("news:today")), Some("reader"));
    assert_eq!(principal.user_claim(&channel("other")), None);

    let mut forged = Some(serde_json::json!({"userClaim": "admin", "headers": {"k": "v"}}));
    principal.stamp_user_claim(&channel("lobby::$chat"), &mut forged);
    assert_eq!(
        forged,
        Some(serde_json::json!({"userClaim": "vip", "headers": {"k": "v"}}))
    );
    let mut elsewhere = Some(serde_json::json!({"userClaim": "admin"}));
    principal.stamp_user_claim(&channel("other"), &mut elsewhere);
    assert_eq!(elsewhere, Some(serde_json::json!({})), "no claim: none");
    let mut none = None;
    principal.stamp_user_claim(&channel("lobby::$chat"), &mut none);
    assert_eq!(none, Some(serde_json::json!({"userClaim": "vip"})));
}
