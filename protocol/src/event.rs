//! Domain events (`POST /events`): typed session, call, stream and payment events, the fields
//! each type requires and the channels each is delivered on.
//!
//! A `Catalog` is data, not code: the built-in Digis types are its `Default`, and a deployment's
//! config file may add or replace types (`[[events.types]]`), so another product defines its own
//! without a release. Checking an event against it is pure (`Catalog::check`): it names the
//! first thing wrong (`data.call_type must be "voice" or "video"`) and renders the channel
//! templates, so the caller can check a whole batch before publishing any of it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::{ChannelName, ErrorCode, ErrorInfo};

/// Longest event id accepted; ids become message ids (`evt:<id>:<n>`) and Redis keys.
pub const MAX_EVENT_ID_BYTES: usize = 256;

/// What a field's value must be.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum FieldKind {
    /// `"id"` (a non-empty string or an integer: what channel templates use), `"string"`
    /// (non-empty), `"number"`, `"integer"`, `"boolean"`, `"object"` or `"array"`.
    Kind(String),
    /// One of these strings, e.g. `["voice", "video"]`.
    OneOf(Vec<String>),
}

const KINDS: &[&str] = &[
    "id", "string", "number", "integer", "boolean", "object", "array",
];

/// One event type: its name (`call.ringing`, also the delivered message's `name`), its fields
/// and the channels it goes to (`"call:{call_id}"`: `{field}` is replaced by the field's value).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventType {
    pub name: String,
    #[serde(default)]
    pub required: BTreeMap<String, FieldKind>,
    /// Checked when present.
    #[serde(default)]
    pub optional: BTreeMap<String, FieldKind>,
    pub channels: Vec<String>,
    /// Push notifications the event also sends (`extras.push` on its message on these channels).
    #[serde(default)]
    pub push: Option<EventPush>,
}

/// An event type's push notification: sent to the devices subscribed (for push) to each of
/// `channels`, which must be among the type's own channel templates; `title` and `body` are
/// templates like the channels' (`{field}`: the field's value).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPush {
    pub channels: Vec<String>,
    pub title: String,
    #[serde(default)]
    pub body: String,
}

/// Every event type a deployment accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub types: Vec<EventType>,
}

/// A checked event, ready to publish: its channels rendered and parsed.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub data: Value,
    pub channels: Vec<ChannelName>,
    /// `"ephemeral": true`: delivered live on each channel, never stored (no serial, no
    /// history, no webhook), for frequent state like `stream.viewers`.
    pub ephemeral: bool,
    /// The type's push notification, rendered (Ably's push payload: `notification`, and the
    /// event as `data`), and the channels whose message carries it as `extras.push`.
    pub push: Option<(Value, Vec<ChannelName>)>,
}

impl Default for Catalog {
    /// The Digis types. Stream events go to the stream and the creator's own channel (their
    /// other devices and dashboard learn they are live), except `stream.viewers`, which is
    /// frequent and only interests people watching the stream.
    fn default() -> Self {
        let id = || FieldKind::Kind("id".into());
        let fields = |names: &[&str]| -> BTreeMap<String, FieldKind> {
            names.iter().map(|n| ((*n).to_owned(), id())).collect()
        };
        let mut types = Vec::new();
        let mut add = |names: &[&str],
                       required: BTreeMap<String, FieldKind>,
                       optional: BTreeMap<String, FieldKind>,
                       channels: &[&str]| {
            for name in names {
                types.push(EventType {
                    name: (*name).to_owned(),
                    required: required.clone(),
                    optional: optional.clone(),
                    channels: channels.iter().map(|c| (*c).to_owned()).collect(),
                    push: None,
                });
            }
        };
        add(
            &["session.started", "session.updated", "session.ended"],
            fields(&["session_id", "creator_id", "fan_id"]),
            BTreeMap::new(),
            &["session:{session_id}", "user:{creator_id}", "user:{fan_id}"],
        );
        let mut call = fields(&["call_id", "creator_id", "fan_id"]);
        call.insert(
            "call_type".into(),
            FieldKind::OneOf(vec!["voice".into(), "video".into()]),
        );
        add(
            &[
                "call.ringing",
                "call.accepted",
                "call.declined",
                "call.ended",
            ],
            call,
            BTreeMap::new(),
            &["call:{call_id}", "user:{creator_id}", "user:{fan_id}"],
        );
        add(
            &["stream.started", "stream.ended"],
            fields(&["stream_id", "creator_id"]),
            BTreeMap::new(),
            &["stream:{stream_id}", "user:{creator_id}"],
        );
        add(
            &["stream.viewers"],
            fields(&["stream_id", "creator_id"]),
            BTreeMap::new(),
            &["stream:{stream_id}"],
        );
        let balance: BTreeMap<String, FieldKind> =
            [("balance".to_owned(), FieldKind::Kind("number".into()))].into();
        let mut payment = fields(&["user_id"]);
        payment.insert("amount".into(), FieldKind::Kind("number".into()));
        payment.insert("currency".into(), FieldKind::Kind("string".into()));
        add(
            &["payment.succeeded", "payment.failed"],
            payment,
            balance.clone(),
            &["user:{user_id}"],
        );
        let mut tokens = fields(&["user_id"]);
        tokens.insert("tokens".into(), FieldKind::Kind("number".into()));
        add(
            &["tokens.credited", "tokens.debited"],
            tokens,
            balance,
            &["user:{user_id}"],
        );
        Catalog { types }
    }
}

impl Catalog {
    /// The defaults with `types` added; a type named like a default replaces it.
    pub fn with(mut self, types: Vec<EventType>) -> Catalog {
        for event_type in types {
            self.types.retain(|t| t.name != event_type.name);
            self.types.push(event_type);
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&EventType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// Whether every type is usable: known kinds, at least one channel, templates naming only
    /// required fields that can appear in a channel name. Names the first problem.
    pub fn validate(&self) -> Result<(), String> {
        for (i, event_type) in self.types.iter().enumerate() {
            let name = &event_type.name;
            if name.is_empty() || self.types[..i].iter().any(|t| &t.name == name) {
                return Err(format!("event type {name:?}: empty or defined twice"));
            }
            let kinds = event_type.required.iter().chain(&event_type.optional);
            for (field, kind) in kinds {
                match kind {
                    FieldKind::Kind(kind) if !KINDS.contains(&kind.as_str()) => {
                        return Err(format!(
                            "event type {name:?}: field {field:?} has unknown kind {kind:?} (one of {KINDS:?}, or a list of strings)"
                        ));
                    }
                    FieldKind::OneOf(values) if values.is_empty() => {
                        return Err(format!(
                            "event type {name:?}: field {field:?} allows no value"
                        ));
                    }
                    _ => {}
                }
            }
            if event_type.channels.is_empty() {
                return Err(format!("event type {name:?}: no channels"));
            }
            for template in &event_type.channels {
                let fields = placeholders(template)
                    .ok_or_else(|| format!("channel template {template:?}: unclosed '{{'"))?;
                for field in fields {
                    let usable = match event_type.required.get(field) {
                        Some(FieldKind::Kind(kind)) => {
                            matches!(kind.as_str(), "id" | "string" | "integer")
                        }
                        Some(FieldKind::OneOf(_)) => true,
                        None => false,
                    };
                    if !usable {
                        return Err(format!(
                            "event type {name:?}: channel {template:?} uses {{{field}}}, which must be a required id, string, integer or one-of field"
                        ));
                    }
                }
            }
            if let Some(push) = &event_type.push {
                if push.channels.is_empty() || push.title.is_empty() {
                    return Err(format!(
                        "event type {name:?}: push needs channels and a title"
                    ));
                }
                if let Some(other) = push
                    .channels
                    .iter()
                    .find(|c| !event_type.channels.contains(c))
                {
                    return Err(format!(
                        "event type {name:?}: push channel {other:?} is not one of its channels"
                    ));
                }
                for text in [&push.title, &push.body] {
                    let fields = placeholders(text)
                        .ok_or_else(|| format!("push text {text:?}: unclosed '{{'"))?;
                    if let Some(field) = fields.into_iter().find(|f| {
                        !event_type.required.contains_key(*f)
                            && !event_type.optional.contains_key(*f)
                    }) {
                        return Err(format!(
                            "event type {name:?}: push text {text:?} uses {{{field}}}, which is not one of its fields"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks one event (`{"id", "type", "data"}`, optionally `"ephemeral": true`) and renders its channels. `max_bytes` bounds
    /// the delivered message (type name plus JSON data). The error names the field.
    pub fn check(&self, event: &Value, max_bytes: usize) -> Result<Event, ErrorInfo> {
        let invalid = |message: String| ErrorCode::InvalidParameterValue.info(message);
        let Some(object) = event.as_object() else {
            return Err(invalid(
                "an event must be an object with id, type and data".into(),
            ));
        };
        let id = match object.get("id") {
            Some(Value::String(id))
                if !id.is_empty()
                    && id.len() <= MAX_EVENT_ID_BYTES
                    && !id.chars().any(char::is_control) =>
            {
                id.clone()
            }
            Some(_) => {
                return Err(invalid(format!(
                    "id must be a non-empty string of at most {MAX_EVENT_ID_BYTES} bytes without control characters"
                )))
            }
            None => return Err(invalid("id is missing".into())),
        };
        let in_event = |error: ErrorInfo| ErrorInfo {
            message: format!("event {id:?}: {}", error.message),
            ..error
        };
        let name = match object.get("type") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(in_event(invalid("type must be a string".into()))),
            None => return Err(in_event(invalid("type is missing".into()))),
        };
        let Some(event_type) = self.get(name) else {
            return Err(in_event(
                ErrorCode::BadRequest.info(format!("unknown event type {name:?}")),
            ));
        };
        let Some(data) = object.get("data").and_then(Value::as_object) else {
            return Err(in_event(invalid("data must be an object".into())));
        };
        let ephemeral = match object.get("ephemeral") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(ephemeral)) => *ephemeral,
            Some(_) => return Err(in_event(invalid("ephemeral must be a boolean".into()))),
        };
        for (field, kind) in &event_type.required {
            match data.get(field) {
                None | Some(Value::Null) => {
                    return Err(in_event(invalid(format!("data.{field} is missing"))))
                }
                Some(value) => check_field(field, kind, value).map_err(|m| in_event(invalid(m)))?,
            }
        }
        for (field, kind) in &event_type.optional {
            if let Some(value) = data.get(field).filter(|v| !v.is_null()) {
                check_field(field, kind, value).map_err(|m| in_event(invalid(m)))?;
            }
        }
        let data = Value::Object(data.clone());
        let size = name.len() + data.to_string().len();
        if size > max_bytes {
            return Err(in_event(ErrorCode::MessageTooLarge.info(format!(
                "event of {size} bytes exceeds the {max_bytes}-byte limit"
            ))));
        }
        let mut channels = Vec::with_capacity(event_type.channels.len());
        for template in &event_type.channels {
            let rendered = render(template, &data);
            let channel = ChannelName::parse(&rendered).map_err(in_event)?;
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        let push = match &event_type.push {
            Some(push) => {
                let mut on = Vec::with_capacity(push.channels.len());
                for template in &push.channels {
                    on.push(ChannelName::parse(&render(template, &data)).map_err(in_event)?);
                }
                let mut fields = data.as_object().cloned().unwrap_or_default();
                fields.insert("type".into(), Value::String(name.clone()));
                fields.insert("eventId".into(), Value::String(id.clone()));
                let payload = serde_json::json!({
                    "notification": {"title": render(&push.title, &data), "body": render(&push.body, &data)},
                    "data": fields,
                });
                Some((payload, on))
            }
            None => None,
        };
        Ok(Event {
            id,
            event_type: name.clone(),
            data,
            channels,
            ephemeral,
            push,
        })
    }
}

fn check_field(field: &str, kind: &FieldKind, value: &Value) -> Result<(), String> {
    let ok = match kind {
        FieldKind::OneOf(values) => {
            if value
                .as_str()
                .is_some_and(|v| values.iter().any(|a| a == v))
            {
                return Ok(());
            }
            let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            return Err(format!("data.{field} must be {}", quoted.join(" or ")));
        }
        FieldKind::Kind(kind) => match kind.as_str() {
            "id" => {
                value.as_str().is_some_and(|s| !s.is_empty()) || value.is_i64() || value.is_u64()
            }
            "string" => value.as_str().is_some_and(|s| !s.is_empty()),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            _ => false,
        },
    };
    if ok {
        return Ok(());
    }
    let FieldKind::Kind(kind) = kind else {
        return Ok(());
    };
    let wanted = match kind.as_str() {
        "id" => "a non-empty string or an integer",
        "string" => "a non-empty string",
        "number" => "a number",
        "integer" => "an integer",
        "boolean" => "a boolean",
        "object" => "an object",
        _ => "an array",
    };
    Err(format!("data.{field} must be {wanted}"))
}

/// The `{name}` placeholders of a template, in order (empty names included); `None` if a `{` is
/// never closed. Channel templates here and the Supabase policy's patterns share it.
pub fn placeholders(template: &str) -> Option<Vec<&str>> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        names.push(&after[..close]);
        rest = &after[close + 1..];
    }
    Some(names)
}

fn render(template: &str, data: &Value) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        match data.get(&after[..close]) {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => {}
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
