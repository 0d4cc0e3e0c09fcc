//! The WebSocket upgrade at `/`, where ably-js and ably-python connect.

use std::collections::HashMap;

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::connection::{self, ConnectParams};
use crate::Gateway;

pub(crate) fn router(gateway: Gateway) -> Router {
    Router::new().route("/", get(upgrade)).with_state(gateway)
}

async fn upgrade(
    State(gateway): State<Gateway>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let params = ConnectParams::from_query(&query);
    let limits = &gateway.config().limits;
    ws.read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
        .max_write_buffer_size(limits.ws_max_write_buffer_bytes)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| connection::run(gateway, socket, params))
}
