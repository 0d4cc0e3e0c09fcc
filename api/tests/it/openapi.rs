//! `GET /openapi.json` is true to the router: every route `routes::router` (and `/metrics`)
//! serves is in the document with its methods, and every documented operation reaches a
//! handler rather than the not-found fallback. The operator dashboard (`/dashboard/...`,
//! `routes/dashboard.rs`) is not Ably's REST API and stays out of the document.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{config, Request, Server, FULL_KEY};

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// (METHOD, path) pairs registered in `routes::router`, read from its source: the one list of
/// routes there is, so a route added there and not documented fails here.
fn routed() -> BTreeSet<(String, String)> {
    let source = include_str!("../../src/routes/mod.rs");
    let body = source
        .split("pub(crate) fn router(")
        .nth(1)
        .expect("routes::router");
    let mut routes = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        // The call's arguments run to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("balanced .route(...)");
        let args = &call[..end];
        let path = args.split('"').nth(1).expect("a path literal");
        for method in METHODS {
            let called = args.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0 || !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if called {
                routes.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    // Added beside the REST routes in `api::router` unless `--admin-listen` moves it.
    routes.insert(("GET".into(), "/metrics".into()));
    routes
}

fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn the_document_names_exactly_the_routes_served() {
    // Sandbox on: `/apps` routes answer only there.
    let server = Server::with_config(gateway::Config {
        sandbox: true,
        ..config()
    })
    .await;
    let response = server.http(Request::get("/openapi.json")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let document = response.json();
    assert_eq!(document["openapi"], "3.0.3");

    let routed = routed();
    assert!(routed.len() > 15, "parsed the router: {routed:?}");
    let documented = documented(&document);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    for (method, path) in &documented {
        let path = path
            .replace("{channel}", "c")
            .replace("{key_name}", "a.b")
            .replace("{app_id}", "x");
        let request = Request::new(method, &path)
            .with_body("application/json", b"{}".to_vec())
            .basic(FULL_KEY);
        let response = server.http(request).await;
        let refused = response.header("x-ably-errormessage").unwrap_or_default();
        assert!(
            !refused.starts_with("no such resource"),
            "{method} {path} reached the fallback: {refused}"
        );
    }
}
