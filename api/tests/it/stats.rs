//! `GET /stats` roll-ups and paging, `POST /stats` fixtures (`--sandbox`), live publish counts:
//! what ably-js's `rest/stats` checks, without its checkout.

use serde_json::{json, Value};

use crate::support::{
    assert_error_info, config, from_msgpack, post_msgpack, Request, Response, Server, FULL_KEY,
    LIMITED_KEY,
};

async fn sandbox() -> Server {
    let mut config = config();
    config.sandbox = true;
    Server::with_config(config).await
}

/// A fresh sandbox app's full key.
async fn app_key(server: &Server) -> String {
    let app = server
        .http(Request::post_json("/apps", &json!({"keys": [{}]})))
        .await
        .json();
    app["keys"][0]["keyStr"].as_str().unwrap().to_owned()
}

/// Minute fixtures as ably-js's `rest/stats` posts them.
fn fixture(interval_id: &str, inbound: u64, outbound: u64) -> Value {
    json!({
        "intervalId": interval_id,
        "inbound": {"realtime": {"messages": {"count": inbound, "data": inbound * 100}}},
        "outbound": {"realtime": {"messages": {"count": outbound, "data": outbound * 100}}},
    })
}

fn fixtures() -> Value {
    json!([
        fixture("2023-02-03:15:03", 50, 20),
        fixture("2023-02-03:15:04", 60, 10),
        fixture("2023-02-03:16:05", 70, 40),
        fixture("2023-02-04:00:00", 5, 1),
        fixture("2023-03-01:12:00", 7, 2),
    ])
}

async fn post_fixtures(server: &Server, key: &str, body: &Value) -> Response {
    server
        .http(Request::post_json("/stats", body).basic(key))
        .await
}

async fn get_stats(server: &Server, key: &str, query: &str) -> (Vec<Value>, Response) {
    let response = server
        .http(Request::get(format!("/stats?{query}")).basic(key))
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    (response.json().as_array().unwrap().clone(), response)
}

/// `(intervalId, inbound count, outbound count)` of each record.
fn summary(records: &[Value]) -> Vec<(String, u64, u64)> {
    records
        .iter()
        .map(|r| {
            (
                r["intervalId"].as_str().unwrap().to_owned(),
                r["entries"]["messages.inbound.all.messages.count"]
                    .as_u64()
                    .unwrap(),
                r["entries"]["messages.outbound.all.messages.count"]
                    .as_u64()
                    .unwrap(),
            )
        })
        .collect()
}

/// The path of a relation in the `Link` header, resolved against `/stats`.
fn link(response: &Response, rel: &str) -> Option<String> {
    let url = crate::support::relative_link(response, rel)?;
    assert!(url.starts_with("./stats?"), "relative link: {url}");
    Some(url.replacen("./", "/", 1))
}

fn owned(rows: &[(&str, u64, u64)]) -> Vec<(String, u64, u64)> {
    rows.iter()
        .map(|(i, a, b)| (i.to_string(), *a, *b))
        .collect()
}

#[tokio::test]
async fn stats_fixtures_are_refused_without_the_sandbox_flag() {
    let server = Server::start().await;
    let response = post_fixtures(&server, FULL_KEY, &fixtures()).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.header("x-ably-errorcode"), Some("40400"));
}

#[tokio::test]
async fn fixtures_roll_up_by_minute_hour_day_and_month() {
    let server = sandbox().await;
    let key = app_key(&server).await;
    let posted = post_fixtures(&server, &key, &fixtures()).await;
    assert_eq!(posted.status, 201, "{posted:?}");

    let (minutes, _) = get_stats(&server, &key, "direction=forwards").await;
    assert_eq!(
        summary(&minutes),
        owned(&[
            ("2023-02-03:15:03", 50, 20),
            ("2023-02-03:15:04", 60, 10),
            ("2023-02-03:16:05", 70, 40),
            ("2023-02-04:00:00", 5, 1),
            ("2023-03-01:12:00", 7, 2),
        ])
    );
    let record = &minutes[0];
    let app_id = key.split('.').next().unwrap();
    assert_eq!(record["unit"], "minute");
    assert_eq!(record["appId"], app_id);
    assert!(record["schema"].as_str().unwrap().starts_with("https://"));
    assert!(record.get("inProgress").is_none(), "{record}");
    let entries = &record["entries"];
    assert_eq!(entries["messages.inbound.realtime.messages.count"], 50);
    assert_eq!(entries["messages.inbound.realtime.messages.data"], 5000);
    assert_eq!(entries["messages.all.all.count"], 70);

    let by = |unit: &'static str| {
        let server = &server;
        let key = key.clone();
        async move {
            let (records, _) =
                get_stats(server, &key, &format!("unit={unit}&direction=forwards")).await;
            assert!(records.iter().all(|r| r["unit"] == unit));
            summary(&records)
        }
    };
    assert_eq!(
        by("hour").await,
        owned(&[
            ("2023-02-03:15", 110, 30),
            ("2023-02-03:16", 70, 40),
            ("2023-02-04:00", 5, 1),
            ("2023-03-01:12", 7, 2),
        ])
    );
    assert_eq!(
        by("day").await,
        owned(&[
            ("2023-02-03:00", 180, 70),
            ("2023-02-04:00", 5, 1),
            ("2023-03-01:00", 7, 2)
        ])
    );
    assert_eq!(
        by("month").await,
        owned(&[("2023-02-01:00", 185, 71), ("2023-03-01:00", 7, 2)])
    );
    // ably-js's own tests still say `by=hour`.
    let (hours, _) = get_stats(
        &server,
        &key,
        "by=hour&start=2023-02-03:15&end=2023-02-03:18&direction=forwards",
    )
    .await;
    assert_eq!(
        summary(&hours),
        owned(&[("2023-02-03:15", 110, 30), ("2023-02-03:16", 70, 40)])
    );
}

#[tokio::test]
async fn start_end_limit_and_direction_select_and_links_page() {
    let server = sandbox().await;
    let key = app_key(&server).await;
    post_fixtures(&server, &key, &fixtures()).await;

    // An interval-id `end` takes in the whole interval; epoch milliseconds work too.
    let (records, _) = get_stats(
        &server,
        &key,
        "start=2023-02-03:15:03&end=2023-02-03:16:05&direction=forwards",
    )
    .await;
    assert_eq!(records.len(), 3);
    let start_ms = 1_675_436_580_000u64; // 2023-02-03T15:03:00Z
    let (records, _) = get_stats(
        &server,
        &key,
        &format!("start={start_ms}&end={}", start_ms + 60_000),
    )
    .await;
    assert_eq!(
        summary(&records),
        owned(&[("2023-02-03:15:04", 60, 10), ("2023-02-03:15:03", 50, 20)]),
        "backwards by default"
    );

    for (direction, expected) in [
        (
            "forwards",
            ["2023-02-03:15:03", "2023-02-03:15:04", "2023-02-03:16:05"],
        ),
        (
            "backwards",
            ["2023-02-03:16:05", "2023-02-03:15:04", "2023-02-03:15:03"],
        ),
    ] {
        let mut path = format!("/stats?end=2023-02-03:16:05&limit=1&direction={direction}");
        let mut seen = Vec::new();
        let mut first = None;
        loop {
            let response = server.http(Request::get(&path).basic(&key)).await;
            let records = response.json();
            assert_eq!(
                records.as_array().unwrap().len(),
                1,
                "{direction}: {response:?}"
            );
            seen.push(records[0]["intervalId"].as_str().unwrap().to_owned());
            first.get_or_insert_with(|| link(&response, "first").expect("first link"));
            match link(&response, "next") {
                Some(next) => path = next,
                None => break,
            }
        }
        assert_eq!(seen, expected, "{direction}");
        let first = server.http(Request::get(first.unwrap()).basic(&key)).await;
        assert_eq!(first.json()[0]["intervalId"], expected[0], "{direction}");
    }

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "direction=sideways",
        "unit=week",
        "start=2023-02-30",
        "end=yesterday",
        "start=2023-02-04&end=2023-02-03",
    ] {
        let response = server
            .http(Request::get(format!("/stats?{bad}")).basic(&key))
            .await;
        assert_eq!(response.status, 400, "{bad}: {response:?}");
        assert_error_info(&response.json()["error"], 40003, 400, &bad);
    }
}

#[tokio::test]
async fn fixtures_and_answers_in_msgpack() {
    let server = sandbox().await;
    let key = app_key(&server).await;
    let posted = server
        .http(post_msgpack("/stats", &fixtures()).basic(&key))
        .await;
    assert_eq!(posted.status, 201, "{posted:?}");
    let response = server
        .http(
            Request::get("/stats?unit=month&direction=forwards")
                .basic(&key)
                .header("accept", "application/x-msgpack"),
        )
        .await;
    let records = from_msgpack(&response.body);
    assert_eq!(
        summary(records.as_array().unwrap()),
        owned(&[("2023-02-01:00", 185, 71), ("2023-03-01:00", 7, 2)])
    );
}

#[tokio::test]
async fn publishes_count_in_the_current_hour_while_it_is_in_progress() {
    let server = Server::start().await;
    let published = server
        .post_json("/channels/counted/messages", &json!({"data": "hello"}))
        .await;
    assert_eq!(published.status, 201);
    let mut client = server.connect(&format!("key={FULL_KEY}")).await;
    client
        .publish_acked("counted", 0, json!([{"data": "a"}, {"data": "bc"}]))
        .await;

    // The hour may turn between publish and read: sum whatever the latest hours hold.
    let (hours, _) = get_stats(&server, FULL_KEY, "unit=hour&limit=2").await;
    assert!(
        hours[0]["inProgress"]
            .as_str()
            .is_some_and(|p| p.len() == 19),
        "yyyy-mm-dd:hh:mm:ss: {}",
        hours[0]
    );
    assert_eq!(hours[0]["appId"], "app1");
    let sum = |key: &str| -> u64 {
        hours
            .iter()
            .map(|r| r["entries"][key].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(sum("messages.inbound.rest.messages.count"), 1);
    assert_eq!(sum("messages.inbound.rest.messages.data"), 5);
    assert_eq!(sum("messages.inbound.realtime.messages.count"), 2);
    assert_eq!(sum("messages.inbound.realtime.messages.data"), 3);
    assert_eq!(sum("messages.inbound.all.messages.count"), 3);

    // A refused publish counts for nothing.
    server
        .assert_publish_refused(LIMITED_KEY, "elsewhere")
        .await;
    let (hours, _) = get_stats(&server, FULL_KEY, "unit=hour&limit=2").await;
    let total: u64 = hours
        .iter()
        .map(|r| {
            r["entries"]["messages.inbound.all.messages.count"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 3);
}

#[tokio::test]
async fn apps_do_not_see_each_others_stats() {
    let server = sandbox().await;
    let one = app_key(&server).await;
    let two = app_key(&server).await;
    post_fixtures(&server, &one, &fixtures()).await;
    server
        .post_json_as(&one, "/channels/ch/messages", &json!({"data": "x"}))
        .await;
    let (mine, _) = get_stats(&server, &one, "unit=month").await;
    assert_eq!(mine.len(), 3, "this month's publish and two fixture months");
    for other in [two.as_str(), FULL_KEY] {
        let (theirs, _) = get_stats(&server, other, "unit=month").await;
        assert!(theirs.is_empty(), "{other}: {theirs:?}");
    }
}

#[tokio::test]
async fn bad_fixtures_are_refused_with_ablys_error() {
    let server = sandbox().await;
    let key = app_key(&server).await;
    for (body, code) in [
        (json!([{"intervalId": "2023-02-03:15"}]), 40000),
        (json!([{"intervalId": "2023-02-30:15:03"}]), 40000),
        (json!([{"inbound": {}}]), 40000),
        (
            json!([{"intervalId": "2023-02-03:15:03", "channels": {"peak": "many"}}]),
            40000,
        ),
        (fixture("2023-02-03:15:03", 1, 1), 40000),
        (json!("fixtures"), 40000),
    ] {
        let response = post_fixtures(&server, &key, &body).await;
        assert_eq!(response.status, 400, "{body}: {response:?}");
        assert_eq!(response.header("x-ably-errorcode"), Some("40000"));
        assert_error_info(&response.json()["error"], code, 400, &body);
    }
    let mut truncated = Request::post_json("/stats", &json!(null)).basic(&key);
    truncated.body = b"[{".to_vec();
    let garbage = server.http(truncated).await;
    assert_eq!(garbage.status, 400, "{garbage:?}");
    assert_error_info(&garbage.json()["error"], 40001, 400, &"truncated JSON");
    let anonymous = server.http(Request::post_json("/stats", &fixtures())).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let (nothing, _) = get_stats(&server, &key, "").await;
    assert!(nothing.is_empty(), "nothing stored: {nothing:?}");
}
