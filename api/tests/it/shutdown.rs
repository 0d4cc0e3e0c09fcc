//! Graceful shutdown: resolving the future given to `api::serve` drains the realtime clients.

use std::time::Duration;

use crate::support::*;

/// Connections beyond the two checked frame by frame; they make the drain take a moment, so a
/// `serve` that returns before its connections are gone shows up.
const N_EXTRA_CLIENTS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_clients_with_80003_and_serve_returns() {
    // Connections are handed over at random moments in the first 60% of the grace: with 7 s,
    // all within 4.2 s, before `WAIT` (5 s) runs out and well before the grace does.
    let mut config = config();
    config.timing.shutdown_grace = Duration::from_secs(7);
    let mut server = Server::with_config(config).await;
    let mut json_client = server.attached(&full_key("json"), "drain").await;
    let mut msgpack_client = server.connect(&full_key("msgpack")).await;
    let mut extra = Vec::new();
    for _ in 0..N_EXTRA_CLIENTS {
        extra.push(server.connect(&full_key("json")).await);
    }
    assert_eq!(server.gateway.live_connections(), N_EXTRA_CLIENTS + 2);

    let serve = server.begin_shutdown();
    // `serve` says it returns once every connection is gone (or the grace is over).
    let grace = server.gateway.config().timing.shutdown_grace;
    assert!(grace > WAIT);
    let result = tokio::time::timeout(WAIT, serve)
        .await
        .expect("api::serve did not return after its clients were drained")
        .expect("serve task panicked");
    result.expect("api::serve failed");
    assert_eq!(
        server.gateway.live_connections(),
        0,
        "api::serve returned while connections were still being drained"
    );

    for client in [&mut json_client, &mut msgpack_client]
        .into_iter()
        .chain(extra.iter_mut())
    {
        let disconnected = client.expect(DISCONNECTED).await;
        let status = disconnected["error"]["statusCode"]
            .as_u64()
            .unwrap_or_default();
        // Any non-token status works for clients; a drain is usually 503 (reference §4.5).
        assert_error(&disconnected, 80003, status);
        client.expect_closed().await;
    }
    assert!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(server.addr)
        )
        .await
        .is_ok_and(|connected| connected.is_err()),
        "still accepting connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_the_drain_begins_while_healthz_stays_ok() {
    let server = Server::start().await;
    assert_eq!(server.http(Request::get("/readyz")).await.status, 200);
    assert_eq!(server.http(Request::get("/healthz")).await.status, 200);
    // Begin the drain the way `serve` does on SIGTERM, without closing the listener yet.
    server.gateway.begin_shutdown();
    assert_eq!(server.http(Request::get("/readyz")).await.status, 503);
    assert_eq!(server.http(Request::get("/healthz")).await.status, 200);
}
