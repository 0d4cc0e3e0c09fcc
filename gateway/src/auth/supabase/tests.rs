use jsonwebtoken::{encode, EncodingKey, Header};
use protocol::{ChannelName, Operation};
use serde_json::json;

use super::*;
use crate::auth::Auth;

const NOW: u64 = 1_700_000_000_000;
const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const URL: &str = "https://project.supabase.co";

fn auth() -> Auth {
    Auth::new(
        vec![],
        Some(SupabaseConfig {
            jwt_secret: Some(SECRET.into()),
            issuer: Some(format!("{URL}/auth/v1")),
            ..SupabaseConfig::default()
        }),
    )
}

fn claims(sub: &str) -> serde_json::Value {
    json!({
        "sub": sub, "role": "authenticated", "aud": "authenticated",
        "iss": format!("{URL}/auth/v1"), "iat": NOW / 1000, "exp": NOW / 1000 + 3600,
    })
}

fn sign(claims: &serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn verify(auth: &Auth, token: &str) -> Result<crate::auth::Principal, AuthError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(auth.verify_token(token, NOW))
}

#[test]
fn hs256_token_becomes_a_principal_through_the_policy() {
    let principal = verify(&auth(), &sign(&claims("u1"), SECRET)).unwrap();
    assert_eq!(principal.client_id.as_deref(), Some("u1"));
    assert_eq!(principal.expires_at, Some(NOW + 3_600_000));
    let allows = |channel: &str, op| principal.allows(&ChannelName::parse(channel).unwrap(), op);
    assert!(allows("user:u1", Operation::Subscribe));
    assert!(!allows("user:u2", Operation::Subscribe));
    assert!(allows("session:42", Operation::Subscribe));
    assert!(!allows("session:42", Operation::Publish));
}

#[test]
fn each_refusal_says_why() {
    let auth = auth();
    let mut expired = claims("u1");
    expired["exp"] = json!(NOW / 1000 - 60);
    let mut early = claims("u1");
    early["nbf"] = json!(NOW / 1000 + 600);
    let mut audience = claims("u1");
    audience["aud"] = json!("someone-else");
    let mut issuer = claims("u1");
    issuer["iss"] = json!("https://evil.example/auth/v1");
    let mut anon = claims("u1");
    anon["role"] = json!("anon");
    let cases = [
        (sign(&expired, SECRET), 40142),
        (sign(&early, SECRET), 40140),
        (sign(&audience, SECRET), 40140),
        (sign(&issuer, SECRET), 40140),
        (
            sign(&claims("u1"), "a-different-secret-of-sufficient-length!!"),
            40144,
        ),
        (sign(&anon, SECRET), 40160),
    ];
    for (token, code) in cases {
        let error = verify(&auth, &token).unwrap_err();
        assert_eq!(error.code().code(), code, "{error}");
    }
}

#[test]
fn expiry_allows_a_small_leeway() {
    let mut just_expired = claims("u1");
    just_expired["exp"] = json!(NOW / 1000 - 5);
    assert!(verify(&auth(), &sign(&just_expired, SECRET)).is_ok());
}

#[test]
fn alg_none_and_unconfigured_algorithms_are_refused() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims("u1").to_string());
    let unsigned = format!("eyJ{}.{body}.", &header[3..]);
    assert!(unsigned.starts_with("eyJ"));
    assert_eq!(verify(&auth(), &unsigned).unwrap_err().code().code(), 40144);

    // No JWKS configured: an RS256 token is refused outright, whatever its signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let fake = format!("{header}.{body}.c2ln");
    assert_eq!(verify(&auth(), &fake).unwrap_err().code().code(), 40144);
}
