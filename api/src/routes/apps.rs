//! `--sandbox` only: `POST /apps` and `DELETE /apps/{appId}`, the provisioning Ably's SDK test
//! suites call. Without the flag these answer 404 (as does `POST /stats`, see `stats.rs`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use gateway::apps::AppSpec;
use gateway::Gateway;
use protocol::{ErrorCode, Format};
use serde::Serialize;

use crate::auth::principal;
use crate::body::{decode, respond};
use crate::error::ApiError;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedApp {
    app_id: String,
    account_id: String,
    keys: Vec<CreatedKey>,
    namespaces: serde_json::Value,
    channels: serde_json::Value,
    /// Where the app's clients connect (the harness's local-sandbox mode reads these).
    endpoint: String,
    port: u16,
    tls: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedKey {
    id: String,
    key_name: String,
    key_secret: String,
    key_str: String,
    capability: String,
}

pub(crate) fn sandbox_only(gateway: &Gateway) -> Result<(), ApiError> {
    if gateway.config().sandbox {
        Ok(())
    } else {
        Err(ApiError::code(ErrorCode::NotFound, "no such resource").in_format(Format::Json))
    }
}

pub(crate) async fn create(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    sandbox_only(&gateway)?;
    let format = Format::Json;
    let raw: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        decode(&headers, &body).map_err(|error| error.in_format(format))?
    };
    let spec: AppSpec = serde_json::from_value(raw.clone()).map_err(|e| {
        ApiError::code(ErrorCode::InvalidRequestBody, format!("invalid app: {e}")).in_format(format)
    })?;
    let (app_id, keys) = gateway
        .create_app(&spec)
        .await
        .map_err(|e| ApiError::from(e).in_format(format))?;
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let (endpoint, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name.to_owned(), port.parse().unwrap_or(80)),
        None => (host.to_owned(), 80),
    };
    let created = CreatedApp {
        account_id: format!("account-{app_id}"),
        keys: keys
            .iter()
            .map(|key| CreatedKey {
                id: key.name.split_once('.').map_or("", |(_, id)| id).to_owned(),
                key_name: key.name.clone(),
                key_secret: key.secret.clone(),
                key_str: format!("{}:{}", key.name, key.secret),
                capability: key.capability.to_json(),
            })
            .collect(),
        namespaces: raw
            .get("namespaces")
            .cloned()
            .unwrap_or_else(|| serde_json::json!([])),
        channels: raw
            .get("channels")
            .cloned()
            .unwrap_or_else(|| serde_json::json!([])),
        app_id,
        endpoint,
        port,
        tls: false,
    };
    respond(StatusCode::CREATED, &created, format, false)
}

pub(crate) async fn delete(
    State(gateway): State<Gateway>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    sandbox_only(&gateway)?;
    let format = Format::Json;
    let caller = principal(&gateway, &headers)
        .await
        .map_err(|error| error.in_format(format))?;
    if caller.scope.as_deref() != Some(app_id.as_str()) {
        return Err(ApiError::code(
            ErrorCode::Unauthorized,
            "deleting an app needs one of its keys",
        )
        .in_format(format));
    }
    gateway.delete_app(&app_id).await;
    respond(StatusCode::OK, &serde_json::json!({}), format, false)
}
