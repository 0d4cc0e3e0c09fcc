//! The REST API beside the gateway: publish (one channel, a batch, domain events), history and
//! presence, channel status, token requests and revocation, stats, time, the sandbox's apps,
//! `/metrics` and the operator dashboard.
//!
//! It reaches the realtime side only through `gateway::Gateway` (auth, publish, hub occupancy),
//! never through connections. Start at `router`; `serve_with` runs it and the WebSocket
//! endpoint on one listener with a graceful drain. Handlers take their preamble (answer
//! format, caller) from `extract`, and fail with `ApiError`.

mod auth;
mod body;
mod config;
mod edges;
mod error;
mod extract;
mod routes;
mod server;

use std::future::Future;

use axum::http::{header, HeaderName, Method};
use axum::Router;
use gateway::Gateway;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub use config::{prometheus, Config, Role};
pub use error::ApiError;

/// The routes of `config.role`, with CORS for browsers on other origins: `Gateway` has the
/// WebSocket endpoint with `/time` and the health probes, `Api` the REST API without
/// WebSockets, `Both` everything.
pub fn router(gateway: Gateway, config: &Config) -> Router {
    let cors = cors(&gateway);
    let mut routes = match config.role {
        Role::Both => routes::router(gateway.clone()).merge(gateway.router()),
        Role::Gateway => routes::probes(gateway.clone()).merge(gateway.router()),
        Role::Api => routes::router(gateway.clone()),
    };
    if config.admin_listen.is_none() {
        let metrics = config.metrics.clone();
        let for_key = move |caller| routes::metrics_for_key(caller, metrics.clone());
        routes = routes.route(
            "/metrics",
            axum::routing::get(for_key).with_state(gateway.clone()),
        );
    }
    // The dashboard stays out of CORS: no other origin may read it with the browser's cached
    // credentials.
    let dashboard =
        routes::dashboard::router(gateway).layer(axum::middleware::from_fn(count_requests));
    // Inside CORS, so refusals made at the edge are readable cross-origin too.
    routes
        .layer(axum::middleware::from_fn(count_requests))
        .layer(axum::middleware::from_fn(edges::honest_errors))
        .layer(cors)
        .merge(dashboard)
}

/// CORS for browsers on other origins, on every answer of the public port (refusals too).
fn cors(gateway: &Gateway) -> CorsLayer {
    // ably-js sends `credentials: include` with an Authorization header, which browsers allow
    // only for an exact origin with credentials: listed origins get that, others `*` without.
    let origins = &gateway.config().cors_origins;
    let cors = if origins.is_empty() {
        CorsLayer::new().allow_origin(AllowOrigin::any())
    } else {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(
                origins
                    .iter()
                    .filter_map(|origin| header::HeaderValue::from_str(origin).ok()),
            ))
            .allow_credentials(true)
    };
    cors.allow_methods([
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ])
    // Mirrors whatever the browser asks for: Authorization, Ably-Agent, X-Ably-Version, ...
    .allow_headers(AllowHeaders::mirror_request())
    .expose_headers([
        header::LINK,
        HeaderName::from_static("x-ably-errorcode"),
        HeaderName::from_static("x-ably-errormessage"),
        HeaderName::from_static("x-ably-serverid"),
        HeaderName::from_static("idempotent-replayed"),
    ])
    .max_age(std::time::Duration::from_secs(86400))
}

/// What `--admin-listen` serves: `/metrics`, the probes and the dashboard, off the public port.
pub fn admin_router(gateway: Gateway, metrics: Option<PrometheusHandle>) -> Router {
    let render = move || std::future::ready(routes::metrics(metrics.as_ref()));
    routes::probes(gateway.clone())
        .route("/metrics", axum::routing::get(render))
        .layer(axum::middleware::from_fn(edges::honest_errors))
        .merge(routes::dashboard::router(gateway))
}

/// Serves `admin_router` on its own listener for the life of the process.
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Gateway,
    metrics: Option<PrometheusHandle>,
) {
    // Timeouts apply; the caps are the public port's.
    let sockets = gateway::config::Sockets {
        max_connections: 0,
        max_connections_per_ip: 0,
        ..gateway.config().sockets.clone()
    };
    server::serve(
        listener,
        admin_router(gateway, metrics),
        None,
        sockets,
        std::future::pending(),
    )
    .await;
}

/// `realtime_rest_requests_total` by route template (bounded), method and status.
async fn count_requests(
    matched: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = matched.map_or("unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    if route != "/" && route != "/metrics" {
        ::metrics::counter!(
            "realtime_rest_requests_total",
            "route" => route,
            "method" => method,
            "status" => response.status().as_u16().to_string()
        )
        .increment(1);
    }
    response
}

/// `serve_with` the default `Config`: both roles, `/metrics` on this port with nothing recorded.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, gateway, Config::default(), shutdown).await
}

/// Serves until `shutdown` resolves, then drains: stops accepting, tells every realtime client
/// to reconnect elsewhere, and returns once they are gone or the grace period has passed.
pub async fn serve_with(
    listener: TcpListener,
    gateway: Gateway,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let draining = gateway.clone();
    let server = server::serve(
        listener,
        router(gateway.clone(), &config),
        Some(cors(&gateway)),
        gateway.config().sockets.clone(),
        async move {
            shutdown.await;
            draining.begin_shutdown();
            let _ = signalled.send(());
        },
    );
    let mut server = tokio::spawn(server);
    // The HTTP server may finish first (upgraded sockets are not its to wait for); either way,
    // once the signal came, the realtime connections get their grace period to leave.
    let finished = tokio::select! {
        result = &mut server => Some(result),
        _ = on_signal => None,
    };
    if !gateway.is_shutting_down() {
        return finished.map_or(Ok(()), |r| r.map_err(std::io::Error::other));
    }
    let deadline = tokio::time::Instant::now() + gateway.config().timing.shutdown_grace;
    if tokio::time::timeout_at(deadline, gateway.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            left = gateway.live_connections(),
            "shutdown grace period over; closing remaining connections"
        );
    }
    gateway.hand_over_parked().await;
    let result = match finished {
        Some(result) => result,
        None => match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(result) => result,
            Err(_) => {
                server.abort();
                return Ok(());
            }
        },
    };
    result.map_err(std::io::Error::other)
}
