//! `GET /stats`: the caller's app's usage statistics, rolled up by `unit` (minute, hour, day,
//! month) between `start` and `end`, paged with the relative `Link` headers ably-js follows.
//! `POST /stats` (`--sandbox` only): stats fixtures, the way Ably's sandbox takes them for the
//! SDK test suites.
//!
//! Records carry what ably-js 2.x's `Stats` reads: `intervalId`, `unit`, `schema`, `appId`,
//! `inProgress` (only while the interval runs) and flattened `entries`; not the nested form of
//! the 1.x protocol, which the schema does not allow beside `entries`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use gateway::auth::Credential;
use gateway::stats::{self, parse_interval_id, Page, Record, StatsQuery, Unit};
use gateway::Gateway;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use protocol::ErrorCode;
use serde_json::{json, Value};

use super::apps::sandbox_only;
use crate::auth::principal;
use crate::body::{decode, respond, respond_paged};
use crate::error::ApiError;
use crate::extract::{Accept, Caller, Enveloped};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// A parsed `GET /stats` query, with the `start`/`end` the client wrote (for the links).
struct Request {
    query: StatsQuery,
    start: Option<String>,
    end: Option<String>,
    cursor: Option<String>,
}

pub(crate) async fn read(
    State(gateway): State<Gateway>,
    Query(params): Query<HashMap<String, String>>,
    Enveloped { format, envelope }: Enveloped,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let now = protocol::now_ms();
    let request = parse(&params, now)?;
    let app = stats::app_of(&caller);
    let page = gateway.stats().query(app, &request.query, now);
    let records: Vec<Value> = page.records.iter().map(|r| record(app, r)).collect();
    let link = links(&request, &page);
    respond_paged(StatusCode::OK, &records, format, envelope, Some(link))
}

/// Answers 404 without `--sandbox`, before looking at credentials.
pub(crate) async fn ingest(
    State(gateway): State<Gateway>,
    Accept(format): Accept,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    sandbox_only(&gateway)?;
    let caller = principal(&gateway, &headers).await?;
    if caller.via != Credential::Key {
        return Err(ApiError::code(
            ErrorCode::BasicAuthRequired,
            "stats fixtures need HTTP Basic auth with an app key",
        ));
    }
    let Value::Array(fixtures) = decode::<Value>(&headers, &body)? else {
        return Err(ApiError::code(
            ErrorCode::BadRequest,
            "expected an array of stats fixtures",
        ));
    };
    gateway
        .stats()
        .add_fixtures(stats::app_of(&caller), &fixtures)
        .map_err(|e| ApiError::code(ErrorCode::BadRequest, e.to_string()))?;
    respond(StatusCode::CREATED, &json!({}), format, false)
}

fn parse(params: &HashMap<String, String>, now: u64) -> Result<Request, ApiError> {
    let bad = |name: &str| {
        ApiError::code(
            ErrorCode::InvalidParameterValue,
            format!("invalid {name} parameter"),
        )
    };
    let param = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    // `by` is the older name ably-js's own tests still send.
    let unit = match param("unit").or_else(|| param("by")) {
        None => Unit::Minute,
        Some(unit) => Unit::parse(&unit).ok_or_else(|| bad("unit (minute, hour, day, month)"))?,
    };
    let forwards = match param("direction").as_deref() {
        None | Some("backwards") => false,
        Some("forwards") => true,
        Some(_) => return Err(bad("direction")),
    };
    let limit = match param("limit") {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| bad("limit (1 to 1000)"))?,
    };
    let start = param("start");
    let end = param("end");
    let mut start_ms = match &start {
        None => 0,
        Some(start) => time(start, false).ok_or_else(|| bad("start"))?,
    };
    let mut end_ms = match &end {
        None => now,
        Some(end) => time(end, true).ok_or_else(|| bad("end"))?,
    };
    if start_ms > end_ms {
        return Err(bad("start (after end)"));
    }
    let cursor = param("cursor");
    if let Some(cursor) = &cursor {
        let cursor: u64 = cursor.parse().map_err(|_| bad("cursor"))?;
        if forwards {
            start_ms = start_ms.max(cursor);
        } else {
            end_ms = end_ms.min(cursor);
        }
    }
    Ok(Request {
        query: StatsQuery {
            unit,
            start: start_ms,
            end: end_ms,
            forwards,
            limit,
        },
        start,
        end,
        cursor,
    })
}

/// Milliseconds since the epoch, or an interval id: its first millisecond for `start`, its
/// last for `end` (so `end=2024-02-03:15` takes in all of that hour).
fn time(value: &str, end: bool) -> Option<u64> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok();
    }
    let (start, unit) = parse_interval_id(value)?;
    Some(if end { unit.next(start) - 1 } else { start })
}

fn record(app: &str, record: &Record) -> Value {
    let entries: serde_json::Map<String, Value> = record
        .entries
        .iter()
        .map(|(key, value)| (key.clone(), number(*value)))
        .collect();
    let mut object = json!({
        "intervalId": record.interval_id(),
        "unit": record.unit.as_str(),
        "schema": stats::SCHEMA,
        "appId": app,
        "entries": entries,
    });
    if let Some(in_progress) = &record.in_progress {
        object["inProgress"] = json!(in_progress);
    }
    object
}

/// Whole numbers as integers (counts and bytes are), others as they are (means).
fn number(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
    if value.fract() == 0.0 && value.abs() < EXACT {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// `first`, `current` and (when more records match) `next`, relative as ably-js requires. Pages
/// after the first keep the query as asked and add a `cursor`: the time the next page starts
/// from (forwards) or ends at (backwards).
fn links(request: &Request, page: &Page) -> String {
    let query = &request.query;
    let limit = query.limit.to_string();
    let direction = if query.forwards {
        "forwards"
    } else {
        "backwards"
    };
    let url = |cursor: Option<&str>| {
        let pairs = [
            ("start", request.start.as_deref()),
            ("end", request.end.as_deref()),
            ("unit", Some(query.unit.as_str())),
            ("limit", Some(limit.as_str())),
            ("direction", Some(direction)),
            ("cursor", cursor),
        ];
        let encoded: Vec<String> = pairs
            .iter()
            .filter_map(|(name, value)| {
                value.map(|v| format!("{name}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            })
            .collect();
        format!("./stats?{}", encoded.join("&"))
    };
    let mut parts = vec![
        format!("<{}>; rel=\"first\"", url(None)),
        format!("<{}>; rel=\"current\"", url(request.cursor.as_deref())),
    ];
    if let (true, Some(last)) = (page.more, page.records.last()) {
        let cursor = if query.forwards {
            query.unit.next(last.start)
        } else {
            last.start.saturating_sub(1)
        };
        parts.push(format!(
            "<{}>; rel=\"next\"",
            url(Some(&cursor.to_string()))
        ));
    }
    parts.join(", ")
}
