//! Benchmark: realtime connections established per second when each presents a Supabase ES256
//! access token (a reconnect storm), and raw ES256 verifications per second.
//!
//! `cargo run --release --example supabase_connect_bench -- [connections] [concurrency]`
//! Everything runs on loopback in one process: a JWKS server, the gateway, and the clients.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let connections: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);

    let signing = p256::ecdsa::SigningKey::random(&mut rand_core());
    let pem = signing.to_pkcs8_pem(Default::default()).expect("pkcs8");
    let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec key");
    let mut jwk: serde_json::Value =
        serde_json::from_str(&p256::PublicKey::from(signing.verifying_key()).to_jwk_string())
            .unwrap();
    jwk["kid"] = "bench-key".into();
    jwk["alg"] = "ES256".into();
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();

    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", jwks_listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || async move { jwks }),
        );
        axum::serve(jwks_listener, app).await.unwrap();
    });

    let gateway = gateway::Gateway::new(gateway::Config {
        keys: vec![
            gateway::ApiKey::parse("bench.key:secret", protocol::Capability::all()).unwrap(),
        ],
        supabase: Some(gateway::config::SupabaseConfig {
            jwks_url: Some(jwks_url),
            ..Default::default()
        }),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(
        listener,
        gateway.clone(),
        std::future::pending(),
    ));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("bench-key".into());
    let tokens: Vec<String> = (0..connections)
        .map(|i| {
            let claims = serde_json::json!({
                "sub": format!("user-{i}"), "role": "authenticated", "aud": "authenticated",
                "iat": now, "exp": now + 3600,
            });
            jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
        })
        .collect();

    // Warm the JWKS cache (the gateway prefetches it; wait until a token verifies).
    let started = Instant::now();
    while gateway
        .auth()
        .verify_token(&tokens[0], protocol::now_ms())
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "JWKS never fetched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let verifications = connections.min(20_000);
    let started = Instant::now();
    for token in tokens.iter().take(verifications) {
        gateway
            .auth()
            .verify_token(token, protocol::now_ms())
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "ES256 verify: {verifications} tokens in {:.3} s = {:.0}/s on one task",
        elapsed.as_secs_f64(),
        verifications as f64 / elapsed.as_secs_f64()
    );

    // The same storm with an API key, so the cost of verification shows as the difference.
    let keyed: Vec<String> = (0..connections)
        .map(|_| "key=bench.key:secret".to_owned())
        .collect();
    let held = storm("API key", addr, keyed, concurrency).await;
    drop(held);
    while gateway.live_connections() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let credentials = tokens
        .into_iter()
        .map(|t| format!("access_token={t}"))
        .collect();
    let held = storm("Supabase ES256", addr, credentials, concurrency).await;
    println!("live connections: {}", held.len());
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens one connection per credential, `concurrency` at a time, each until CONNECTED.
async fn storm(
    label: &str,
    addr: std::net::SocketAddr,
    credentials: Vec<String>,
    concurrency: usize,
) -> Vec<Socket> {
    let started = Instant::now();
    let sockets = futures_util::stream::iter(credentials)
        .map(|credential| async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(format!(
                "ws://{addr}/?{credential}&format=json&heartbeats=false"
            ))
            .await
            .expect("connect");
            let first = socket.next().await.expect("frame").expect("frame");
            let text = first.into_text().expect("text");
            assert!(text.contains("\"action\":4"), "not CONNECTED: {text}");
            socket
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    println!(
        "connect storm, {label}: {} connections (concurrency {concurrency}) CONNECTED in {:.3} s = {:.0} connections/s",
        sockets.len(),
        elapsed.as_secs_f64(),
        sockets.len() as f64 / elapsed.as_secs_f64(),
    );
    sockets
}

fn rand_core() -> p256::elliptic_curve::rand_core::OsRng {
    p256::elliptic_curve::rand_core::OsRng
}
