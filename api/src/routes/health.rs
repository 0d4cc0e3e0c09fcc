//! Probes for load balancers and Kubernetes: `/healthz` (the process is alive) and `/readyz`
//! (it should get traffic: not draining).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gateway::Gateway;

pub(crate) async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// 503 from the moment a drain begins (so the pod leaves the Service before its clients are told
/// to reconnect elsewhere), and while a clustered node cannot hear its own probe through Redis.
pub(crate) async fn readyz(State(gateway): State<Gateway>) -> Response {
    if gateway.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !gateway.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "message bus unreachable\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}
