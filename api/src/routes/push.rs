//! Ably's push admin API (`/push/*`): device registrations, channel push subscriptions, the
//! channels with subscribers and direct publish, in Ably's shapes. The rules on who may do what
//! are the gateway's (`gateway::push::Push`); here are the credentials (a key or token, and a
//! device's `X-Ably-DeviceToken`/`X-Ably-DeviceSecret`, or its identity token as a Bearer
//! credential, as ably-js sends it for its own registration), the query and the paging, with
//! relative `Link` headers as the other lists have them.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gateway::push::{
    self, DeviceFilter, Page, Paged, PushCaller, Subscription, SubscriptionFilter,
};
use gateway::Gateway;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use protocol::ErrorCode;
use serde_json::Value;

use crate::body::{respond, respond_paged};
use crate::error::ApiError;
use crate::extract::{Enveloped, Payload};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The caller of a push route: a principal, device credentials, or both.
pub(crate) struct Caller(PushCaller);

impl FromRequestParts<Gateway> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let bearer_device_token = bearer_device_token(headers);
        let principal = if bearer_device_token.is_some() {
            None
        } else {
            crate::auth::optional_principal(gateway, headers).await?
        };
        let caller = PushCaller {
            principal,
            device_token: header("x-ably-devicetoken").or(bearer_device_token),
            device_secret: header("x-ably-devicesecret"),
        };
        if caller.principal.is_none() && caller.device_token.is_none() {
            return Err(ApiError::from(gateway::auth::AuthError::NoCredentials));
        }
        Ok(Caller(caller))
    }
}

/// A Bearer credential that is a device identity token (base64'd, as ably-js sends tokens).
fn bearer_device_token(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let (scheme, credentials) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let credentials = credentials.trim();
    let token = STANDARD
        .decode(credentials)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| credentials.to_owned());
    push::is_device_token(&token).then_some(token)
}

/// The query of a list: its filters and page.
struct ListQuery {
    params: HashMap<String, String>,
    page: Page,
}

fn list_query(params: HashMap<String, String>) -> Result<ListQuery, ApiError> {
    let bad = |name: &str| {
        ApiError::code(
            ErrorCode::InvalidParameterValue,
            format!("invalid {name} parameter"),
        )
    };
    let limit = match params.get("limit").filter(|v| !v.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(v) => v.parse().map_err(|_| bad("limit (1 to 1000)"))?,
    };
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad("limit (1 to 1000)"));
    }
    let offset = match params.get("cursor").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => v.parse().map_err(|_| bad("cursor"))?,
    };
    Ok(ListQuery {
        params,
        page: Page { offset, limit },
    })
}

impl ListQuery {
    fn text(&self, name: &str) -> Option<String> {
        self.params.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn devices(&self) -> DeviceFilter {
        DeviceFilter {
            device_id: self.text("deviceId"),
            client_id: self.text("clientId"),
        }
    }

    fn subscriptions(&self) -> SubscriptionFilter {
        SubscriptionFilter {
            channel: self.text("channel"),
            device_id: self.text("deviceId"),
            client_id: self.text("clientId"),
            concat: self.text("concatFilters").as_deref() == Some("true"),
        }
    }

    /// One page with `first`, `current` and (while more follow) `next` links, relative.
    fn respond<T: serde::Serialize>(
        &self,
        resource: &str,
        paged: &Paged<T>,
        reply: Enveloped,
    ) -> Result<Response, ApiError> {
        let kept: Vec<(&str, &String)> = ["channel", "deviceId", "clientId", "concatFilters"]
            .into_iter()
            .filter_map(|name| self.params.get(name).map(|value| (name, value)))
            .collect();
        let url = |offset: Option<usize>| {
            let mut pairs: Vec<String> = kept
                .iter()
                .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
                .collect();
            pairs.push(format!("limit={}", self.page.limit));
            if let Some(offset) = offset {
                pairs.push(format!("cursor={offset}"));
            }
            format!("./{resource}?{}", pairs.join("&"))
        };
        let mut links = vec![
            format!("<{}>; rel=\"first\"", url(None)),
            format!("<{}>; rel=\"current\"", url(Some(self.page.offset))),
        ];
        if paged.more {
            let next = self.page.offset + self.page.limit;
            links.push(format!("<{}>; rel=\"next\"", url(Some(next))));
        }
        respond_paged(
            StatusCode::OK,
            &paged.items,
            reply.format,
            reply.envelope,
            Some(links.join(", ")),
        )
    }
}

fn answer(status: StatusCode, value: &Value, reply: Enveloped) -> Result<Response, ApiError> {
    respond(status, value, reply.format, reply.envelope)
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn json_body(body: &Payload) -> Result<Value, ApiError> {
    body.decode::<Value>()
}

fn subscriptions_page(paged: Paged<Subscription>) -> Paged<Value> {
    Paged {
        items: paged.items.iter().map(push::view_subscription).collect(),
        more: paged.more,
    }
}

/// `POST /push/deviceRegistrations`: 201 with the registration and its `deviceIdentityToken`.
pub(crate) async fn register(
    State(gateway): State<Gateway>,
    reply: Enveloped,
    Caller(caller): Caller,
    body: Payload,
) -> Result<Response, ApiError> {
    let device = gateway.push().register(&caller, &json_body(&body)?).await?;
    answer(StatusCode::CREATED, &push::view_registered(&device), reply)
}

/// `GET /push/deviceRegistrations`.
pub(crate) async fn list_devices(
    State(gateway): State<Gateway>,
    Query(params): Query<HashMap<String, String>>,
    reply: Enveloped,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let query = list_query(params)?;
    let paged = gateway
        .push()
        .devices(&caller, &query.devices(), query.page)
        .await?;
    let paged = Paged {
        items: paged.items.iter().map(push::view).collect::<Vec<_>>(),
        more: paged.more,
    };
    query.respond("deviceRegistrations", &paged, reply)
}

/// `DELETE /push/deviceRegistrations?deviceId=|clientId=`.
pub(crate) async fn remove_devices(
    State(gateway): State<Gateway>,
    Query(params): Query<HashMap<String, String>>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let query = list_query(params)?;
    gateway
        .push()
        .remove_where(&caller, &query.devices())
        .await?;
    Ok(no_content())
}

/// `GET /push/deviceRegistrations/{deviceId}`.
pub(crate) async fn get_device(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    reply: Enveloped,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let device = gateway.push().device(&caller, &id).await?;
    answer(StatusCode::OK, &push::view(&device), reply)
}

/// `PUT /push/deviceRegistrations/{deviceId}`.
pub(crate) async fn save_device(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    reply: Enveloped,
    Caller(caller): Caller,
    body: Payload,
) -> Result<Response, ApiError> {
    let device = gateway
        .push()
        .save(&caller, &id, &json_body(&body)?)
        .await?;
    answer(StatusCode::OK, &push::view(&device), reply)
}

/// `PATCH /push/deviceRegistrations/{deviceId}`.
pub(crate) async fn update_device(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    reply: Enveloped,
    Caller(caller): Caller,
    body: Payload,
) -> Result<Response, ApiError> {
    let device = gateway
        .push()
        .update(&caller, &id, &json_body(&body)?)
        .await?;
    answer(StatusCode::OK, &push::view(&device), reply)
}

/// `DELETE /push/deviceRegistrations/{deviceId}`.
pub(crate) async fn remove_device(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    gateway.push().remove(&caller, &id).await?;
    Ok(no_content())
}

/// `POST /push/channelSubscriptions`: 201 with the subscription.
pub(crate) async fn subscribe(
    State(gateway): State<Gateway>,
    reply: Enveloped,
    Caller(caller): Caller,
    body: Payload,
) -> Result<Response, ApiError> {
    let subscription = gateway
        .push()
        .subscribe(&caller, &json_body(&body)?)
        .await?;
    answer(
        StatusCode::CREATED,
        &push::view_subscription(&subscription),
        reply,
    )
}

/// `GET /push/channelSubscriptions`.
pub(crate) async fn list_subscriptions(
    State(gateway): State<Gateway>,
    Query(params): Query<HashMap<String, String>>,
    reply: Enveloped,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let query = list_query(params)?;
    let paged = gateway
        .push()
        .subscriptions(&caller, &query.subscriptions(), query.page)
        .await?;
    query.respond("channelSubscriptions", &subscriptions_page(paged), reply)
}

/// `DELETE /push/channelSubscriptions`.
pub(crate) async fn unsubscribe(
    State(gateway): State<Gateway>,
    Query(params): Query<HashMap<String, String>>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let query = list_query(params)?;
    gateway
        .push()
        .unsubscribe(&caller, &query.subscriptions())
        .await?;
    Ok(no_content())
}

/// `GET /push/channels`.
pub(crate) async fn channels(
    State(gateway): State<Gateway>,
    Query(params): Query<HashMap<String, String>>,
    reply: Enveloped,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let query = list_query(params)?;
    let paged = gateway.push().channels(&caller, query.page).await?;
    query.respond("channels", &paged, reply)
}

/// `POST /push/publish`: 204 once every notification is queued for its transport.
pub(crate) async fn publish(
    State(gateway): State<Gateway>,
    Caller(caller): Caller,
    body: Payload,
) -> Result<Response, ApiError> {
    gateway.push().publish(&caller, &json_body(&body)?).await?;
    Ok(no_content())
}

/// `GET /push/publicVapidKey`: the key a browser subscribes to Web Push with (ably-js's
/// `push.activate()` reads it as text); 404 where Web Push is not configured.
pub(crate) async fn public_vapid_key(
    State(gateway): State<Gateway>,
    Caller(_caller): Caller,
) -> Result<Response, ApiError> {
    match gateway.push_services().and_then(|s| s.vapid_public_key()) {
        Some(key) => Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            key.to_owned(),
        )
            .into_response()),
        None => Err(ApiError::code(
            ErrorCode::NotFound,
            "Web Push is not configured on this server (--push-vapid-*)",
        )),
    }
}
