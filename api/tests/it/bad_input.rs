//! Every kind of bad input gets its Ably error, and nobody else on the server notices: in each
//! test a second, unrelated client keeps receiving exactly what is published meanwhile.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt as _;
use serde_json::{json, Value};

use crate::support::*;

/// A connection-level ERROR: no `channel`, then the socket closes.
async fn expect_fatal(victim: &mut Client, code: u64, status: u64) {
    let error = victim.expect(ERROR).await;
    assert_error(&error, code, status);
    assert!(error.get("channel").is_none(), "{error}");
    victim.expect_closed().await;
}

/// A NACK of msgSerial 0 for its one message, with `code` and `status`.
async fn expect_nack(victim: &mut Client, code: u64, status: u64) {
    let nack = victim.expect(NACK).await;
    assert_eq!(nack["msgSerial"], 0, "{nack}");
    assert_eq!(nack["count"], 1, "{nack}");
    assert_error(&nack, code, status);
}

/// A fresh server (keep it: dropping it shuts it down), its bystanders, and a JSON victim
/// connected with `key`.
async fn beside_bystanders(key: &str) -> (Server, Bystanders, Client) {
    let server = Server::start().await;
    let others = Bystanders::join(&server).await;
    let victim = server.connect(&format!("key={key}&format=json")).await;
    (server, others, victim)
}

/// The victim's connection still works: a HEARTBEAT round trip.
async fn expect_alive(victim: &mut Client) {
    victim
        .send(json!({"action": HEARTBEAT, "id": "alive"}))
        .await;
    let pong = victim.expect(HEARTBEAT).await;
    assert_eq!(pong["id"], "alive", "{pong}");
}

/// What a victim sends once its socket is open.
enum Input {
    Text(&'static str),
    Binary(&'static [u8]),
    Frame(Value),
    /// Nothing: the refusal comes from the query string alone.
    Nothing,
}

/// What the victim must get for it.
enum Outcome {
    /// An ERROR with no `channel`, then the socket closes.
    Fatal { code: u64, status: u64 },
    /// A NACK of msgSerial 0 (one message), and the connection keeps working.
    Nack { code: u64, status: u64 },
}

/// One row: a victim opens `query` (expecting CONNECTED first when `connected`), sends `input`
/// and gets `outcome`, while the bystanders publish beside it.
struct Row {
    name: &'static str,
    query: String,
    connected: bool,
    input: Input,
    outcome: Outcome,
}

fn rows() -> Vec<Row> {
    use Input::*;
    use Outcome::*;
    let json = full_key("json");
    let msgpack = full_key("msgpack");
    let row = |name, query: &str, connected, input, outcome| Row {
        name,
        query: query.to_owned(),
        connected,
        input,
        outcome,
    };
    let fatal = |code, status| Fatal { code, status };
    let nack = |code, status| Nack { code, status };
    vec![
        row(
            "malformed JSON",
            &json,
            true,
            Text("{\"action\":15,\"channel\":"),
            fatal(40000, 400),
        ),
        row(
            "JSON of the wrong shape",
            &json,
            true,
            Text("[1,2,3]"),
            fatal(40000, 400),
        ),
        // 0xc1 is the one byte msgpack never uses.
        row(
            "msgpack's unused byte",
            &msgpack,
            true,
            Binary(&[0xc1, 0x00, 0x42]),
            fatal(40000, 400),
        ),
        // The map header promises entries that never come.
        row(
            "truncated msgpack map",
            &msgpack,
            true,
            Binary(&[0x83, 0xa6, b'a', b'c']),
            fatal(40000, 400),
        ),
        row(
            "unknown action with msgSerial",
            &json,
            true,
            Frame(json!({"action": 99, "msgSerial": 0, "channel": Bystanders::CHANNEL})),
            nack(40000, 400),
        ),
        row(
            "unknown action without msgSerial",
            &msgpack,
            true,
            Frame(json!({"action": 99})),
            fatal(40000, 400),
        ),
        row(
            "message without channel",
            &msgpack,
            true,
            Frame(json!({"action": MESSAGE, "msgSerial": 0, "messages": [{"name": "lost"}]})),
            nack(40000, 400),
        ),
        row(
            "missing credentials",
            "format=json",
            false,
            Nothing,
            fatal(40101, 401),
        ),
        row(
            "wrong secret",
            "key=app1.full:wrong&format=msgpack",
            false,
            Nothing,
            fatal(40101, 401),
        ),
        row(
            "unknown key",
            "key=app1.nosuchkey:secret&format=msgpack",
            false,
            Nothing,
            fatal(40101, 401),
        ),
    ]
}

async fn run_row(server: &Server, others: &mut Bystanders, row: Row) {
    let mut victim = if row.connected {
        server.connect(&row.query).await
    } else {
        server.open(&row.query).await
    };
    match row.input {
        Input::Text(text) => victim.send_text(text).await,
        Input::Binary(bytes) => victim.send_binary(bytes.to_vec()).await,
        Input::Frame(frame) => victim.send(frame).await,
        Input::Nothing => {}
    }
    others.publish(row.name).await;
    match row.outcome {
        Outcome::Fatal { code, status } => expect_fatal(&mut victim, code, status).await,
        Outcome::Nack { code, status } => {
            expect_nack(&mut victim, code, status).await;
            expect_alive(&mut victim).await;
        }
    }
}

/// Each row on one server beside the same bystanders, who must notice none of them. A failing
/// row is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_and_credentials_get_their_error_and_nobody_else_notices() {
    let server = Server::start().await;
    let mut others = Bystanders::join(&server).await;
    for row in rows() {
        let name = row.name;
        let ran = AssertUnwindSafe(run_row(&server, &mut others, row))
            .catch_unwind()
            .await;
        if let Err(panic) = ran {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            panic!("row {name:?}: {why}");
        }
    }
    others.assert_undisturbed().await;
}

/// 64 KiB of data is the limit: one byte over is NACKed 40009 and never delivered; exactly the
/// limit goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_64_kib_is_nacked_40009() {
    let (_server, mut others, mut victim) = beside_bystanders(FULL_KEY).await;
    let too_big = "x".repeat(64 * 1024 + 1);
    victim
        .publish(Bystanders::CHANNEL, 0, json!([{"data": too_big}]))
        .await;
    others.publish("meanwhile").await;
    expect_nack(&mut victim, 40009, 413).await;

    let at_limit = "y".repeat(64 * 1024);
    victim
        .publish_acked("elsewhere", 1, json!([{"data": at_limit}]))
        .await;
    others.assert_undisturbed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_channel_names_are_refused_40010() {
    let (_server, mut others, mut victim) = beside_bystanders(FULL_KEY).await;
    for name in ["", "[bogus]x"] {
        victim
            .send(json!({"action": ATTACH, "channel": name}))
            .await;
        let error = victim.expect(ERROR).await;
        assert_eq!(
            error["channel"], name,
            "channel ERROR must name the channel: {error}"
        );
        assert_error(&error, 40010, 400);
    }
    victim.publish("[bogus]x", 0, json!([{"name": "n"}])).await;
    others.publish("meanwhile").await;
    let nack = victim.expect(NACK).await;
    assert_eq!(nack["msgSerial"], 0, "{nack}");
    assert_error(&nack, 40010, 400);
    // The connection survives channel errors.
    victim.attach("fine").await;
    others.assert_undisturbed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_token_is_a_token_error_and_close() {
    let server = Server::start().await;
    let mut others = Bystanders::join(&server).await;
    for token in ["garbage", "rt1.bm90LWpzb24.AAAA"] {
        let mut victim = server
            .open(&format!("access_token={token}&format=json"))
            .await;
        others.publish(token).await;
        let error = victim.expect(ERROR).await;
        let code = error["error"]["code"].as_u64().unwrap_or_default();
        assert!(
            (40140..40150).contains(&code),
            "a bad token must be a token error (4014x) so clients renew: {error}"
        );
        assert_error(&error, code, 401);
        victim.expect_closed().await;
    }
    others.assert_undisturbed().await;
}

/// A capability refusal fails the channel (attach) or the message (publish), not the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_refusals_are_40160_and_keep_the_connection() {
    let (_server, mut others, mut victim) = beside_bystanders(LIMITED_KEY).await;
    victim
        .send(json!({"action": ATTACH, "channel": Bystanders::CHANNEL}))
        .await;
    let error = victim.expect(ERROR).await;
    assert_eq!(error["channel"], Bystanders::CHANNEL, "{error}");
    assert_error(&error, 40160, 401);

    // Not delivered to the bystander either.
    victim
        .publish(Bystanders::CHANNEL, 0, json!([{"name": "sneaky"}]))
        .await;
    others.publish("meanwhile").await;
    expect_nack(&mut victim, 40160, 401).await;

    victim.attach("allowed:ok").await;
    victim.publish_named("allowed:elsewhere", 1, "fine").await;
    others.assert_undisturbed().await;
}

/// Far over the limit (past the server's 256 KiB frame cap, as a non-Ably client might send):
/// still an Ably error saying why, not a bare close a client would retry into forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_past_the_frame_cap_still_gets_40009() {
    let (_server, mut others, mut victim) = beside_bystanders(FULL_KEY).await;
    let huge = "x".repeat(300 * 1024);
    victim
        .publish(Bystanders::CHANNEL, 0, json!([{"data": huge}]))
        .await;
    others.publish("meanwhile").await;
    match victim.event().await {
        Event::Frame(frame) => {
            let action = frame["action"].as_u64();
            assert!(action == Some(NACK) || action == Some(ERROR), "{frame}");
            let status = frame["error"]["statusCode"].as_u64().unwrap_or_default();
            assert_error(&frame, 40009, status);
        }
        Event::Closed(why) => panic!("socket closed ({why}) without an error frame"),
    }
    others.assert_undisturbed().await;
}
