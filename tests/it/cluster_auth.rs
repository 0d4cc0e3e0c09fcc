//! Auth state shared through Redis: two `realtime` processes on one own `redis-server`. A token
//! request's nonce is single-use on every node; a revocation made through one node ends live
//! connections on the other, is refused there for new connections and REST, and still holds on
//! a restarted node; a key revokes only tokens it issued, Supabase users only when allowed.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gateway::auth::TokenRequest;
use serde_json::{json, Value};

use crate::support::{
    block_on, connect, next_json, rest, send_json, RedisCluster, RedisServer, Request, Server,
    Socket,
};

const KEYS: &str = "app.k:secret,app.b:secretb";
const SUPABASE_SECRET: &str = "cluster-auth-test-secret-with-at-least-32-characters";

/// A node with two keys and Supabase HS256 tokens; key `app.k` may revoke Supabase users.
fn node(redis: &RedisServer) -> Server {
    node_at(&redis.url())
}

/// `node` on the Redis (or Redis Cluster) at `url`.
fn node_at(url: &str) -> Server {
    Server::start(&[
        "--keys",
        KEYS,
        "--redis",
        url,
        "--supabase-jwt-secret",
        SUPABASE_SECRET,
        "--supabase-revoke-keys",
        "app.k",
    ])
}

/// A POST of JSON text `body` to `path`, without credentials.
fn post<'a>(path: impl Into<Cow<'a, str>>, body: &str) -> Request<'a> {
    Request::post(path, "application/json", body.as_bytes().to_vec())
}

async fn json_of(addr: SocketAddr, request: Request<'_>) -> (u16, Value) {
    let (status, body) = rest(addr, request).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The signed token request `request` (JSON text) for key `app.k`, sent to `addr`.
async fn signed_token(addr: SocketAddr, request: &str) -> (u16, Value) {
    json_of(addr, post("/keys/app.k/requestToken", request)).await
}

/// A revocation of alice's tokens on key `app.k`'s path, without credentials.
fn revoke_alice_by_k() -> Request<'static> {
    post(
        "/keys/app.k/revokeTokens",
        r#"{"targets":["clientId:alice"]}"#,
    )
}

/// A token for `client_id` from `key` (`name:secret`), by an unsigned request with Basic auth.
async fn token(addr: SocketAddr, key: &str, client_id: &str) -> String {
    let name = key.split(':').next().unwrap();
    let (status, body) = json_of(
        addr,
        post(
            format!("/keys/{name}/requestToken"),
            &json!({"keyName": name, "clientId": client_id}).to_string(),
        )
        .basic(key),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// An HS256 Supabase access token for `sub`, issued a few seconds ago.
fn supabase_token(sub: &str) -> String {
    let now = protocol::now_ms() / 1000;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "iat": now - 5, "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SUPABASE_SECRET.as_bytes()),
    )
    .unwrap()
}

/// `revokeTokens` through `addr` with `key`, for `clientId:` targets.
async fn revoke(addr: SocketAddr, key: &str, client_ids: &[&str]) -> (u16, Value) {
    let name = key.split(':').next().unwrap();
    let targets: Vec<String> = client_ids.iter().map(|c| format!("clientId:{c}")).collect();
    json_of(
        addr,
        post(
            format!("/keys/{name}/revokeTokens"),
            &json!({ "targets": targets }).to_string(),
        )
        .basic(key),
    )
    .await
}

/// A REST publish with a token (Bearer): 201, or the refusal's status and code.
async fn publish_with(addr: SocketAddr, token: &str, channel: &str) -> (u16, Value) {
    json_of(
        addr,
        post(
            format!("/channels/{channel}/messages"),
            r#"{"name":"x","data":"y"}"#,
        )
        .header(
            "authorization",
            format!("Bearer {}", STANDARD.encode(token)),
        ),
    )
    .await
}

/// A refusal: `status` with the Ably error `code` in the body.
fn assert_refused((status, body): (u16, Value), expected_status: u16, code: u64) {
    assert_eq!(
        (status, &body["error"]["code"]),
        (expected_status, &json!(code)),
        "{body}"
    );
}

/// A WebSocket connection with a token: its first frame (CONNECTED or ERROR) and the socket.
async fn open(addr: SocketAddr, token: &str) -> (Value, Socket) {
    let mut socket = connect(addr, &format!("access_token={token}&format=json")).await;
    let first = next_json(&mut socket).await;
    (first, socket)
}

async fn connected(addr: SocketAddr, token: &str) -> Socket {
    let (first, socket) = open(addr, token).await;
    assert_eq!(first["action"], 4, "CONNECTED: {first}");
    socket
}

/// Alice's and Bob's tokens from key `app.k`, requested on `issuer`, and a connection with each
/// to `node`: the user about to be revoked and a bystander.
async fn alice_and_bob(issuer: SocketAddr, node: SocketAddr) -> (String, String, Socket, Socket) {
    let alice = token(issuer, "app.k:secret", "alice").await;
    let bob = token(issuer, "app.k:secret", "bob").await;
    let alice_socket = connected(node, &alice).await;
    let bob_socket = connected(node, &bob).await;
    (alice, bob, alice_socket, bob_socket)
}

/// The connection is still served: an ATTACH is answered with ATTACHED (not an ERROR).
async fn still_served(socket: &mut Socket, channel: &str) {
    send_json(socket, json!({"action": 10, "channel": channel})).await;
    let reply = next_json(socket).await;
    assert_eq!(reply["action"], 11, "ATTACHED on {channel}: {reply}");
}

/// Waits (bounded) for the server to end the connection with 40141.
async fn ended_as_revoked(socket: &mut Socket) {
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let frame = next_json(socket).await;
            if frame["action"] == 9 || frame["action"] == 6 {
                return frame;
            }
        }
    })
    .await
    .expect("the revoked connection ends within 5 s");
    assert_eq!(frame["error"]["code"], 40141, "{frame}");
}

fn signed_request(nonce: &str) -> String {
    let mut request = TokenRequest {
        key_name: Some("app.k".into()),
        client_id: Some("nonce-user".into()),
        timestamp: Some(protocol::now_ms().to_string()),
        nonce: Some(nonce.into()),
        ..Default::default()
    };
    request.mac = Some(request.sign("app.k", "secret"));
    json!({
        "keyName": request.key_name, "clientId": request.client_id,
        "timestamp": request.timestamp, "nonce": request.nonce, "mac": request.mac,
    })
    .to_string()
}

#[test]
fn a_token_request_nonce_is_single_use_on_every_node() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    block_on(async {
        let request = signed_request("nonce-used-on-a-0001");
        let (status, body) = signed_token(a.addr, &request).await;
        assert_eq!(status, 200, "{body}");
        // The same request replayed on the other node, and on the same one: refused.
        for node in [&b, &a] {
            let (status, body) = signed_token(node.addr, &request).await;
            assert_eq!(status, 401, "{body}");
            assert_eq!(body["error"]["code"], 40105, "{body}");
        }
        // A fresh nonce is fine on either node.
        let other = signed_request("nonce-fresh-on-b-0002");
        let (status, body) = signed_token(b.addr, &other).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["clientId"], "nonce-user");

        // Redis unreachable: refused as unavailable, never accepted unchecked.
        redis.stop();
        let unchecked = signed_request("nonce-redis-down-0003");
        let (status, body) = signed_token(a.addr, &unchecked).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], 50003, "{body}");
        // A revocation that cannot be stored is not reported as done.
        let (status, body) = revoke(b.addr, "app.k:secret", &["nonce-user"]).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], 50003, "{body}");
    });
}

#[test]
fn a_revocation_missed_while_the_link_was_down_is_loaded_when_it_comes_back() {
    let redis = RedisServer::start();
    let b = node(&redis);
    block_on(async {
        let (revoked, _, mut alice, mut bob) = alice_and_bob(b.addr, b.addr).await;
        // Stored without an announcement (as if made while this node's link was down), then
        // the link cut: the node reloads the set when it is back.
        let now = protocol::now_ms();
        let member = json!({"k": "app.k", "c": "alice", "b": now, "a": now}).to_string();
        redis.cli(&["ZADD", "rt:revocations", &now.to_string(), &member]);
        still_served(&mut alice, "not-yet").await;
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        ended_as_revoked(&mut alice).await;
        let (first, _) = open(b.addr, &revoked).await;
        assert_eq!(first["error"]["code"], 40141, "{first}");
        still_served(&mut bob, "bystander").await;
    });
}

#[test]
fn a_revocation_through_one_node_holds_on_every_node_and_after_a_restart() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    block_on(async {
        let (revoked, bystander, mut alice_on_b, mut bob_on_b) =
            alice_and_bob(a.addr, b.addr).await;
        let mut alice_on_a = connected(a.addr, &revoked).await;
        // The same user connected with the key itself is not token-revocable.
        let mut alice_by_key = connect(b.addr, "key=app.k:secret&clientId=alice&format=json").await;
        assert_eq!(next_json(&mut alice_by_key).await["action"], 4);
        assert_eq!(publish_with(b.addr, &revoked, "chat").await.0, 201);

        let (status, body) = revoke(a.addr, "app.k:secret", &["alice"]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["successCount"], 1, "{body}");

        // Ended on the other node by the announcement, and on the revoking one.
        ended_as_revoked(&mut alice_on_b).await;
        ended_as_revoked(&mut alice_on_a).await;
        // B refuses the token for new connections and REST.
        let (first, _) = open(b.addr, &revoked).await;
        assert_eq!(first["action"], 9, "{first}");
        assert_eq!(first["error"]["code"], 40141, "{first}");
        assert_refused(publish_with(b.addr, &revoked, "chat").await, 401, 40141);
        // Bystanders: another user's token, the key connection, a newer token for alice.
        still_served(&mut bob_on_b, "bystander").await;
        still_served(&mut alice_by_key, "by-key").await;
        assert_eq!(publish_with(b.addr, &bystander, "chat").await.0, 201);
        let newer = token(b.addr, "app.k:secret", "alice").await;
        let mut newer_on_b = connected(b.addr, &newer).await;
        still_served(&mut newer_on_b, "newer").await;

        // A node started after the revocation (A restarted) loads it before serving.
        drop(a);
        let a = node(&redis);
        let (first, _) = open(a.addr, &revoked).await;
        assert_eq!(first["error"]["code"], 40141, "{first}");
        assert_refused(publish_with(a.addr, &revoked, "chat").await, 401, 40141);
        assert_eq!(publish_with(a.addr, &newer, "chat").await.0, 201);
        assert_eq!(publish_with(a.addr, &bystander, "chat").await.0, 201);
    });
}

#[test]
fn a_key_revokes_only_its_own_tokens_and_supabase_users_only_when_allowed() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    block_on(async {
        let by_k = token(a.addr, "app.k:secret", "alice").await;
        let by_b = token(a.addr, "app.b:secretb", "alice").await;
        let carol = supabase_token("carol");
        let mut alice_k = connected(b.addr, &by_k).await;
        let mut alice_b = connected(b.addr, &by_b).await;
        let mut carol_on_b = connected(b.addr, &carol).await;

        // Key B (not allowed for Supabase users) revokes alice and carol: only its own token
        // for alice is reached.
        let (status, body) = revoke(a.addr, "app.b:secretb", &["alice", "carol"]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["successCount"], 2, "{body}");
        ended_as_revoked(&mut alice_b).await;
        still_served(&mut alice_k, "user:alice").await;
        still_served(&mut carol_on_b, "session:1").await;
        assert_eq!(publish_with(b.addr, &by_k, "chat").await.0, 201);
        assert_refused(publish_with(b.addr, &by_b, "chat").await, 401, 40141);
        // Carol's token still authenticates (refused only for lack of publish).
        assert_refused(publish_with(b.addr, &carol, "session:1").await, 401, 40160);

        // Key K, allowed, revokes carol: the Supabase user is thrown out on the other node.
        let (status, body) = revoke(a.addr, "app.k:secret", &["carol"]).await;
        assert_eq!(status, 200, "{body}");
        ended_as_revoked(&mut carol_on_b).await;
        assert_refused(publish_with(b.addr, &carol, "session:1").await, 401, 40141);
        // Alice's token from K was not named: still served.
        still_served(&mut alice_k, "after-carol").await;

        // A key can revoke only through its own path, with its own Basic auth.
        assert_refused(
            json_of(a.addr, revoke_alice_by_k().basic("app.b:secretb")).await,
            401,
            40133,
        );
        // Nor with a token.
        assert_refused(
            json_of(
                a.addr,
                revoke_alice_by_k().header(
                    "authorization",
                    format!("Bearer {}", STANDARD.encode(&by_k)),
                ),
            )
            .await,
            401,
            40162,
        );
        still_served(&mut alice_k, "after-refusal").await;
    });
}

#[test]
fn on_a_redis_cluster_nonces_and_revocations_are_shared_too() {
    let cluster = RedisCluster::start();
    let (a, b) = (node_at(&cluster.url()), node_at(&cluster.url()));
    block_on(async {
        let request = signed_request("nonce-on-a-cluster-01");
        let (status, body) = signed_token(a.addr, &request).await;
        assert_eq!(status, 200, "{body}");
        assert_refused(signed_token(b.addr, &request).await, 401, 40105);

        let (revoked, _, mut alice_on_b, mut bob_on_b) = alice_and_bob(a.addr, b.addr).await;
        let (status, body) = revoke(a.addr, "app.k:secret", &["alice"]).await;
        assert_eq!(status, 200, "{body}");
        ended_as_revoked(&mut alice_on_b).await;
        assert_refused(publish_with(b.addr, &revoked, "chat").await, 401, 40141);
        still_served(&mut bob_on_b, "bystander").await;
    });
}
