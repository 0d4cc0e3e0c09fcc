//! Ably's push payload (`notification {title, body, icon, sound, collapseKey}`, `data`, and the
//! per-transport overrides `web`, `fcm`, `apns`) turned into each service's request, as Ably
//! maps it ("Push notification payload structure" in Ably's docs):
//!
//! | Ably                       | FCM HTTP v1                        | APNs               | Web Push        |
//! |----------------------------|------------------------------------|--------------------|-----------------|
//! | `notification.title, body` | `notification.title, body`         | `aps.alert.*`      | as given        |
//! | `notification.icon`        | `android.notification.icon`        | dropped            | as given        |
//! | `notification.sound`       | `android.notification.sound`       | `aps.sound`        | as given        |
//! | `notification.collapseKey` | `android.collapse_key`             | `aps.thread-id`    | `Topic` header  |
//! | `data`                     | `data` (values as strings)         | merged into root   | as given        |
//!
//! An override is merged over the generic result key by key (a `null` removes one). The `fcm`
//! override is in the legacy FCM shape Ably documents (`notification.color`, `collapse_key`,
//! `time_to_live`, `priority`), mapped onto v1's `android` block; v1's own blocks (`android`,
//! `apns`, `webpush`, `fcm_options`) pass through. `apns.apns-headers` become request headers.
//! Apple's `sound` lives in `aps`, not in `aps.alert` as Ably's table has it: devices ignore it
//! there.

use serde_json::{json, Map, Value};

/// The JSON a browser's service worker gets from `event.data.json()`.
pub(crate) fn web_body(payload: &Value) -> Value {
    let mut body = Map::new();
    for key in ["notification", "data"] {
        if let Some(value) = payload.get(key) {
            body.insert(key.into(), value.clone());
        }
    }
    let mut body = Value::Object(body);
    if let Some(web) = payload.get("web") {
        merge(&mut body, web);
    }
    body
}

/// The Web Push `Topic` header for a collapse key, when it is one (RFC 8030: at most 32
/// base64url characters); otherwise messages simply do not replace each other.
pub(crate) fn web_topic(payload: &Value) -> Option<&str> {
    let key = payload.pointer("/notification/collapseKey")?.as_str()?;
    let fits = !key.is_empty()
        && key.len() <= 32
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    fits.then_some(key)
}

/// `{"message": {...}}` for `messages:send`.
pub(crate) fn fcm_body(payload: &Value, registration_token: &str) -> Value {
    // The legacy shape first, so that Ably's `fcm` override (documented in it) merges as written.
    let mut legacy = json!({});
    if let Some(notification) = payload.get("notification").and_then(Value::as_object) {
        let mut mapped = Map::new();
        for (key, value) in notification {
            if key == "collapseKey" {
                legacy["collapse_key"] = value.clone();
            } else {
                mapped.insert(key.clone(), value.clone());
            }
        }
        legacy["notification"] = Value::Object(mapped);
    }
    if let Some(data) = payload.get("data") {
        legacy["data"] = data.clone();
    }
    if let Some(fcm) = payload.get("fcm") {
        merge(&mut legacy, fcm);
    }

    let mut message = Map::new();
    message.insert("token".into(), registration_token.into());
    let mut android = Map::new();
    let mut android_notification = Map::new();
    let Value::Object(legacy) = legacy else {
        unreachable!("built as an object")
    };
    for (key, value) in legacy {
        match key.as_str() {
            "notification" => {
                let mut common = Map::new();
                for (field, value) in value.as_object().into_iter().flatten() {
                    if matches!(field.as_str(), "title" | "body" | "image") {
                        common.insert(field.clone(), value.clone());
                    } else {
                        android_notification.insert(field.clone(), value.clone());
                    }
                }
                if !common.is_empty() {
                    message.insert("notification".into(), Value::Object(common));
                }
            }
            "data" => {
                if let Some(data) = fcm_data(&value) {
                    message.insert("data".into(), data);
                }
            }
            "collapse_key" => {
                android.insert("collapse_key".into(), value);
            }
            "priority" => {
                android.insert("priority".into(), value);
            }
            "time_to_live" => {
                if let Some(seconds) = value.as_u64() {
                    android.insert("ttl".into(), format!("{seconds}s").into());
                }
            }
            "android" | "apns" | "webpush" | "fcm_options" => {
                message.insert(key, value);
            }
            // Legacy-only fields with no v1 meaning (`dry_run`, `content_available`, ...).
            _ => {}
        }
    }
    if !android_notification.is_empty() {
        android.insert("notification".into(), Value::Object(android_notification));
    }
    if !android.is_empty() {
        let mut generated = Value::Object(android);
        if let Some(given) = message.get("android") {
            merge(&mut generated, given);
        }
        message.insert("android".into(), generated);
    }
    json!({ "message": message })
}

/// v1 `data` is a map of strings: other JSON values are sent as their JSON text.
fn fcm_data(data: &Value) -> Option<Value> {
    let object = data.as_object()?;
    let strings: Map<String, Value> = object
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), Value::String(text))
        })
        .collect();
    Some(Value::Object(strings))
}

/// One APNs request: its JSON body and its `apns-*` headers.
pub(crate) struct ApnsRequest {
    pub(crate) body: Value,
    pub(crate) headers: Vec<(String, String)>,
}

pub(crate) fn apns_request(payload: &Value) -> ApnsRequest {
    let mut body = Map::new();
    if let Some(data) = payload.get("data").and_then(Value::as_object) {
        for (key, value) in data {
            if key != "aps" {
                body.insert(key.clone(), value.clone());
            }
        }
    }
    let mut aps = Map::new();
    if let Some(notification) = payload.get("notification") {
        let mut alert = Map::new();
        for key in ["title", "body"] {
            if let Some(value) = notification.get(key) {
                alert.insert(key.into(), value.clone());
            }
        }
        if !alert.is_empty() {
            aps.insert("alert".into(), Value::Object(alert));
        }
        if let Some(sound) = notification.get("sound") {
            aps.insert("sound".into(), sound.clone());
        }
        if let Some(key) = notification.get("collapseKey") {
            aps.insert("thread-id".into(), key.clone());
        }
    }
    body.insert("aps".into(), Value::Object(aps));
    let mut body = Value::Object(body);
    let mut given_headers = Vec::new();
    if let Some(apns) = payload.get("apns").and_then(Value::as_object) {
        let mut apns = apns.clone();
        if let Some(Value::Object(headers)) = apns.remove("apns-headers") {
            for (name, value) in headers {
                let name = name.to_ascii_lowercase();
                // Only Apple's own headers; `authorization` and the like stay ours.
                if !name.starts_with("apns-") {
                    continue;
                }
                let value = match value {
                    Value::String(text) => text,
                    Value::Number(number) => number.to_string(),
                    _ => continue,
                };
                given_headers.push((name, value));
            }
        }
        merge(&mut body, &Value::Object(apns));
    }
    let aps = &body["aps"];
    let background = aps.get("alert").is_none()
        && aps.get("sound").is_none()
        && aps.get("badge").is_none()
        && aps.get("content-available").is_some();
    // Apple refuses a background push sent with priority 10.
    let (push_type, priority) = if background {
        ("background", "5")
    } else {
        ("alert", "10")
    };
    let mut headers = vec![
        ("apns-push-type".to_owned(), push_type.to_owned()),
        ("apns-priority".to_owned(), priority.to_owned()),
    ];
    for (name, value) in given_headers {
        headers.retain(|(existing, _)| *existing != name);
        headers.push((name, value));
    }
    ApnsRequest { body, headers }
}

/// `over` onto `base`, object by object; a `null` in `over` removes the key.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    merge(existing, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

#[cfg(test)]
mod tests;
