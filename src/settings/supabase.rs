//! Supabase access tokens: the project's secret or URL (JWKS), the audience, the claims
//! policy, and which keys may revoke Supabase users.

use gateway::config::ApiKey;
use gateway::config::{Policy, SupabaseConfig};

use super::cli::ServeArgs;
use super::http_host;

/// Each entry names a configured key (a typo would silently leave the key unable to revoke).
pub(super) fn supabase_revoke_keys(
    list: Vec<String>,
    keys: &[ApiKey],
) -> Result<Vec<String>, String> {
    list.into_iter()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .map(|name| {
            if keys.iter().any(|key| key.name == name) {
                Ok(name)
            } else {
                Err(format!(
                    "--supabase-revoke-keys / REALTIME_SUPABASE_REVOKE_KEYS {name:?}: not a configured key name (appId.keyId)"
                ))
            }
        })
        .collect()
}

/// Supabase tokens are accepted only with a secret or a key source (`--supabase-url`,
/// `--supabase-jwks-url`); `None` without either.
pub(super) fn supabase_config(args: &ServeArgs) -> Result<Option<SupabaseConfig>, String> {
    let http_url = |value: &str, setting: &str| {
        let trimmed = value.trim().trim_end_matches('/');
        match http_host(trimmed) {
            Some(_) => Ok(trimmed.to_owned()),
            None => Err(format!("{setting} {value:?}: expected an http(s) URL")),
        }
    };
    let url = args
        .supabase_url
        .as_deref()
        .map(|url| http_url(url, "--supabase-url / REALTIME_SUPABASE_URL"))
        .transpose()?;
    let jwks_url = match (&args.supabase_jwks_url, &url) {
        (Some(jwks), _) => Some(http_url(
            jwks,
            "--supabase-jwks-url / REALTIME_SUPABASE_JWKS_URL",
        )?),
        (None, Some(url)) => Some(format!("{url}/auth/v1/.well-known/jwks.json")),
        (None, None) => None,
    };
    if let Some(secret) = &args.supabase_jwt_secret {
        if secret.trim().is_empty() {
            return Err("--supabase-jwt-secret / REALTIME_SUPABASE_JWT_SECRET is empty".into());
        }
    }
    let policy = match &args.policy {
        None => Policy::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--policy {}: {e}", path.display()))?;
            let policy: Policy =
                toml::from_str(&text).map_err(|e| format!("--policy {}: {e}", path.display()))?;
            policy
                .validate()
                .map_err(|e| format!("--policy {}: {e}", path.display()))?;
            policy
        }
    };
    if args.supabase_jwt_secret.is_none() && jwks_url.is_none() {
        if args.policy.is_some() {
            return Err(
                "--policy needs --supabase-jwt-secret, --supabase-url or --supabase-jwks-url"
                    .into(),
            );
        }
        return Ok(None);
    }
    let audience: Vec<String> = args
        .supabase_audience
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if audience.is_empty() {
        return Err("--supabase-audience / REALTIME_SUPABASE_AUDIENCE is empty".into());
    }
    Ok(Some(SupabaseConfig {
        jwt_secret: args.supabase_jwt_secret.clone(),
        jwks_url,
        issuer: url.map(|url| format!("{url}/auth/v1")),
        audience,
        policy,
        jwks_min_refresh_interval: std::time::Duration::from_millis(args.supabase_jwks_refresh_ms),
        ..SupabaseConfig::default()
    }))
}
