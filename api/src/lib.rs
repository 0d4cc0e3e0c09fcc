//! The REST API beside the gateway: publish, token requests, channel status, time.
//!
//! It reaches the realtime side only through `gateway::Gateway` (auth, publish, hub occupancy),
//! never through connections. Start at `router`; `serve` runs it and the WebSocket endpoint on
//! one listener with a graceful drain.

mod auth;
mod body;
mod error;
mod routes;

use std::future::{Future, IntoFuture};

use axum::http::{header, HeaderName, Method};
use axum::Router;
use gateway::Gateway;
use tokio::net::TcpListener;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub use error::ApiError;

/// REST routes plus the gateway's WebSocket endpoint, with CORS for browsers on other origins.
pub fn router(gateway: Gateway) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([
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
        ])
        .max_age(std::time::Duration::from_secs(86400));
    routes::router(gateway.clone())
        .merge(gateway.router())
        .layer(cors)
}

/// Serves until `shutdown` resolves, then drains: stops accepting, tells every realtime client
/// to reconnect elsewhere, and returns once they are gone or the grace period has passed.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let draining = gateway.clone();
    let server = axum::serve(listener, router(gateway.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            draining.begin_shutdown();
            let _ = signalled.send(());
        })
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        result = &mut server => return result.map_err(std::io::Error::other)?,
        _ = on_signal => {}
    }
    let deadline = tokio::time::Instant::now() + gateway.config().timing.shutdown_grace;
    let _ = tokio::time::timeout_at(deadline, gateway.drained()).await;
    match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(result) => result.map_err(std::io::Error::other)?,
        Err(_) => {
            server.abort();
            tracing::warn!("shutdown grace period over; closing remaining connections");
            Ok(())
        }
    }
}
