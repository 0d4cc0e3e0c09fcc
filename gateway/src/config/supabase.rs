//! Accepting Supabase access tokens: where the keys are, what a token must say, and the policy
//! that turns its claims into a capability (`auth::supabase` applies it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Supabase settings. `main` derives `jwks_url` and `issuer` from the project URL.
#[derive(Debug, Clone)]
pub struct SupabaseConfig {
    /// The project's legacy JWT secret, for HS256 tokens.
    pub jwt_secret: Option<String>,
    /// Where the signing keys are (`{url}/auth/v1/.well-known/jwks.json`).
    pub jwks_url: Option<String>,
    /// Required `iss` (`{url}/auth/v1`), when known.
    pub issuer: Option<String>,
    /// Accepted `aud` values; Supabase user tokens say `authenticated`.
    pub audience: Vec<String>,
    /// Clock skew forgiven on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    pub jwks_fetch_timeout: Duration,
    /// At most one JWKS fetch per this interval, however many unknown `kid`s arrive.
    pub jwks_min_refresh_interval: Duration,
    pub policy: Policy,
}

impl Default for SupabaseConfig {
    fn default() -> Self {
        SupabaseConfig {
            jwt_secret: None,
            jwks_url: None,
            issuer: None,
            audience: vec!["authenticated".to_owned()],
            leeway: Duration::from_secs(10),
            jwks_fetch_timeout: Duration::from_secs(5),
            jwks_min_refresh_interval: Duration::from_secs(5),
            policy: Policy::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(rename = "rule", default)]
    pub(crate) rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rule {
    /// Matches when the token's `role` is this one (or one of `roles`).
    pub(crate) role: Option<String>,
    pub(crate) roles: Option<Vec<String>>,
    /// Matches when the token's `aal` equals this (`aal1`, `aal2`).
    pub(crate) aal: Option<String>,
    pub(crate) is_anonymous: Option<bool>,
    /// Channel pattern (may contain `{claim.path}`) -> operations.
    pub(crate) capability: BTreeMap<String, Vec<String>>,
    /// Channel or chat room pattern -> the `userClaim` the user's messages, presence, typing and
    /// reactions there carry, e.g. `"{app_metadata.display_name}"` (claims in braces).
    #[serde(default)]
    pub(crate) user_claim: BTreeMap<String, String>,
    /// Channel or chat room pattern -> most messages per second one attachment may publish
    /// there (e.g. 0.5: one every two seconds).
    #[serde(default)]
    pub(crate) publish_rate: BTreeMap<String, f64>,
}

impl Default for Policy {
    /// Digis: signed-in users subscribe to and enter presence on sessions and calls, and hear
    /// their own `user:{sub}` channel; the service role may do everything; `anon` nothing.
    fn default() -> Policy {
        let ops = |ops: &[&str]| ops.iter().map(|op| op.to_string()).collect::<Vec<_>>();
        Policy {
            rules: vec![
                Rule {
                    role: Some("authenticated".into()),
                    roles: None,
                    aal: None,
                    is_anonymous: None,
                    capability: BTreeMap::from([
                        ("session:*".into(), ops(&["subscribe", "presence"])),
                        ("call:*".into(), ops(&["subscribe", "presence"])),
                        ("user:{sub}".into(), ops(&["subscribe"])),
                    ]),
                    user_claim: BTreeMap::new(),
                    publish_rate: BTreeMap::new(),
                },
                Rule {
                    role: Some("service_role".into()),
                    roles: None,
                    aal: None,
                    is_anonymous: None,
                    capability: BTreeMap::from([("[*]*".into(), ops(&["*"]))]),
                    user_claim: BTreeMap::new(),
                    publish_rate: BTreeMap::new(),
                },
            ],
        }
    }
}
