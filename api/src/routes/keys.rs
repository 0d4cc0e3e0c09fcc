use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use gateway::auth::{Credential, Revocation, TokenRequest, SUPABASE_ISSUER};
use gateway::Gateway;
use protocol::{ErrorCode, ErrorInfo};
use serde::{Deserialize, Serialize};

use crate::body::respond;
use crate::error::ApiError;
use crate::extract::{Accept, MaybeCaller, Payload, Rest};

/// `POST /keys/{keyName}/requestToken`: a signed TokenRequest (or an unsigned one with Basic
/// auth for that key) in, TokenDetails out.
pub(crate) async fn request_token(
    State(gateway): State<Gateway>,
    Path(key_name): Path<String>,
    Accept(format): Accept,
    MaybeCaller(basic): MaybeCaller,
    body: Payload,
) -> Result<Response, ApiError> {
    let request: TokenRequest = body.decode()?;
    let details = gateway
        .tokens()
        .request_token(&key_name, &request, basic.as_ref(), protocol::now_ms())
        .await?;
    respond(StatusCode::OK, &details, format, false)
}

/// Ably's `allowReauthMargin` delay.
const REAUTH_MARGIN_MS: u64 = 30_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokeRequest {
    targets: Vec<String>,
    #[serde(default)]
    issued_before: Option<u64>,
    /// Ably's reauth margin: the revocation applies 30 s from now, so clients can renew first.
    #[serde(default)]
    allow_reauth_margin: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchResult {
    success_count: usize,
    failure_count: usize,
    results: Vec<RevokeResult>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase", untagged)]
enum RevokeResult {
    #[serde(rename_all = "camelCase")]
    Revoked {
        target: String,
        issued_before: u64,
        applies_at: u64,
    },
    Failed {
        target: String,
        error: ErrorInfo,
    },
}

/// `POST /keys/{keyName}/revokeTokens` (Basic auth with that key): for each `clientId:<id>`
/// target, tokens for that client issued by this key before now (or `issuedBefore`) are refused
/// and the client's live connections holding one end with 40141 at once, on every node. A key
/// named in `--supabase-revoke-keys` also revokes the Supabase user with that id; no key reaches
/// tokens another key issued.
pub(crate) async fn revoke_tokens(
    State(gateway): State<Gateway>,
    Path(key_name): Path<String>,
    Rest { format, caller }: Rest,
    body: Payload,
) -> Result<Response, ApiError> {
    if caller.via != Credential::Key {
        return Err(ApiError::code(
            ErrorCode::BasicAuthRequired,
            "revoking tokens needs Basic auth with the key that names them",
        ));
    }
    if caller.key_name != key_name {
        // As Ably: a key revokes only the tokens it issued.
        return Err(ApiError::code(
            ErrorCode::WrongKeyForRevocation,
            "can only revoke tokens using the same key that issued them",
        ));
    }
    let request: RevokeRequest = body.decode()?;
    let now = protocol::now_ms();
    let issued_before = request.issued_before.unwrap_or(now).min(now);
    let applies_at = if request.allow_reauth_margin {
        now + REAUTH_MARGIN_MS
    } else {
        now
    };
    let mut issuers = vec![caller.key_name.clone()];
    if gateway.tokens().may_revoke_supabase(&caller.key_name) {
        issuers.push(SUPABASE_ISSUER.to_owned());
    }
    let mut revocations = Vec::new();
    let results: Vec<RevokeResult> = request
        .targets
        .into_iter()
        .map(|target| match target.split_once(':') {
            Some(("clientId", client_id)) if !client_id.is_empty() => {
                revocations.extend(issuers.iter().map(|issuer| Revocation {
                    issuer: issuer.clone(),
                    client_id: client_id.to_owned(),
                    issued_before,
                    applies_at,
                }));
                RevokeResult::Revoked {
                    target,
                    issued_before,
                    applies_at,
                }
            }
            _ => RevokeResult::Failed {
                error: ErrorCode::InvalidParameterValue.info(format!(
                    "unsupported revocation target {target:?}; use clientId:<id>"
                )),
                target,
            },
        })
        .collect();
    if !revocations.is_empty() {
        gateway.tokens().revoke_tokens(revocations).await?;
    }
    let failure_count = results
        .iter()
        .filter(|r| matches!(r, RevokeResult::Failed { .. }))
        .count();
    let batch = BatchResult {
        success_count: results.len() - failure_count,
        failure_count,
        results,
    };
    respond(StatusCode::OK, &batch, format, false)
}
