//! `GET /openapi.json`: the REST API described by hand in `api/src/openapi.json`, embedded at
//! build time. `api/tests/it/openapi.rs` holds it to the router (every route documented, every
//! documented route served) and `scripts/check-openapi.sh` fuzzes the server against it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const DOCUMENT: &str = include_str!("../openapi.json");

pub(crate) async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
