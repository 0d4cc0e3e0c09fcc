//! Before-publish moderation against a moderator the test runs: an accepted publish passes
//! (REST and realtime, the question signed and shaped as documented), a rejected one is refused
//! with 42213 and the moderator's reason in `detail` and is neither delivered nor in history, an
//! unanswered one publishes (fail open) or is refused with 50003 (fail closed) after its retries,
//! a chat room's pattern covers its `::$chat` channel and its edits, ephemeral messages pass
//! unless the rule asks for them, and a rule at its bound refuses rather than queues.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::support::{
    attached, block_on, client, next_json, next_signed_request, publish, rest, send_json, Request,
    Server, Signed, Socket, KEY,
};

const SECRET: &str = "modsec";

/// A question as it arrived: its `X-Ably-Signature` and body.
struct Question {
    signature: String,
    body: Vec<u8>,
}

/// A moderator: rejects a question whose body mentions "bad" (reason "no bad words"), answers
/// 500 to one mentioning "broken", answers one mentioning "slow" only after 3 s (past every
/// rule's budget), accepts the rest.
#[derive(Clone)]
struct Moderator {
    addr: SocketAddr,
    /// Each question, in arrival order.
    questions: Arc<Mutex<Vec<Question>>>,
}

impl Moderator {
    async fn start() -> Moderator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let moderator = Moderator {
            addr: listener.local_addr().unwrap(),
            questions: Arc::default(),
        };
        let serving = moderator.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(stream));
            }
        });
        moderator
    }

    async fn serve(self, stream: tokio::net::TcpStream) {
        let mut stream = BufReader::new(stream);
        while let Some(Signed { signature, body }) = next_signed_request(&mut stream).await {
            let text = String::from_utf8_lossy(&body).into_owned();
            self.questions
                .lock()
                .unwrap()
                .push(Question { signature, body });
            let status = if text.contains("broken") {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let answer = if text.contains("bad") {
                json!({"action": "reject", "reason": "no bad words",
                       "rejectionDetail": {"rule": "words"}})
            } else {
                if text.contains("slow") {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                json!({"action": "accept"})
            }
            .to_string();
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            );
            if stream
                .get_mut()
                .write_all(response.as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    fn questions(&self) -> Vec<Value> {
        let questions = self.questions.lock().unwrap();
        questions
            .iter()
            .map(|q| serde_json::from_slice(&q.body).expect("a JSON question"))
            .collect()
    }

    /// Questions about `channel`.
    fn about(&self, channel: &str) -> Vec<Value> {
        self.questions()
            .into_iter()
            .filter(|q| q["channel"] == channel)
            .collect()
    }
}

/// A node whose rules all ask `moderator`: `mod:*` (signed, 300 ms, one retry, fail closed),
/// `open:*` (fail open), `stage` (a chat room's name), `eph:*` (ephemeral too) and `busy:*`
/// (one question at a time, 2 s, fail open).
fn node(moderator: &Moderator, name: &str) -> Server {
    let path = std::env::temp_dir().join(format!(
        "realtime-moderation-{}-{name}.toml",
        std::process::id()
    ));
    let url = format!("http://{}/moderate", moderator.addr);
    std::fs::write(
        &path,
        format!(
            r#"
[[keys]]
key = "{KEY}"
[[history.namespace]]
name = "mod"
mutable_messages = true
[[history.namespace]]
name = "stage"
mutable_messages = true
[[moderation]]
channels = "mod:*"
url = "{url}"
timeout_ms = 300
retries = 1
secret = "{SECRET}"
[[moderation]]
channels = "open:*"
url = "{url}"
timeout_ms = 300
fail = "open"
[[moderation]]
channels = "stage"
url = "{url}"
[[moderation]]
channels = "eph:*"
url = "{url}"
ephemeral = true
[[moderation]]
channels = "busy:*"
url = "{url}"
timeout_ms = 2000
fail = "open"
max_in_flight = 1
"#
        ),
    )
    .unwrap();
    Server::start(&["--config", path.to_str().unwrap()])
}

/// REST publish of `data` on `channel`: (status, body as JSON).
async fn post(node: &Server, channel: &str, data: &str) -> (u16, Value) {
    let body = json!({"name": "said", "data": data}).to_string();
    let (status, body) = rest(node.addr, publish(channel, &body)).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A realtime publish of `data` on `channel`; returns its ACK or NACK.
async fn send(socket: &mut Socket, channel: &str, msg_serial: u64, data: &str) -> Value {
    send_json(
        socket,
        json!({"action": 15, "channel": channel, "msgSerial": msg_serial,
               "messages": [{"name": "said", "data": data}]}),
    )
    .await;
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 1 || frame["action"] == 2 {
            assert_eq!(frame["msgSerial"], msg_serial, "{frame}");
            return frame;
        }
    }
}

/// The data of the next MESSAGE `socket` gets.
async fn next_data(socket: &mut Socket) -> Value {
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 15 {
            return frame["messages"][0]["data"].clone();
        }
    }
}

async fn history(node: &Server, channel: &str) -> Vec<Value> {
    let request = Request::get(format!("/channels/{channel}/messages")).basic(KEY);
    let (status, body) = rest(node.addr, request).await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    page.as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect()
}

fn assert_rejected(error: &Value) {
    assert_eq!(error["code"], 42213, "{error}");
    assert_eq!(error["statusCode"], 422, "{error}");
    assert_eq!(
        error["detail"],
        json!({"reason": "no bad words", "rule": "words"}),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("no bad words"),
        "{error}"
    );
}

#[test]
fn accepted_publishes_pass_and_questions_are_signed() {
    block_on(async {
        let moderator = Moderator::start().await;
        let node = node(&moderator, "accept");
        let mut reader = attached(&node, "reader", "", "mod:1").await;
        let (mut writer, connected) = client(&node, "alice", "").await;
        let connection_id = connected["connectionId"].as_str().unwrap().to_owned();

        let (status, body) = post(&node, "mod:1", "hello").await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(next_data(&mut reader).await, "hello");
        let ack = send(&mut writer, "mod:1", 0, "hi").await;
        assert_eq!(ack["action"], 1, "{ack}");
        assert_eq!(next_data(&mut reader).await, "hi");

        let questions = moderator.about("mod:1");
        assert_eq!(questions.len(), 2, "{questions:?}");
        assert_eq!(questions[0]["messages"][0]["data"], "hello");
        assert!(questions[0].get("connectionId").is_none());
        assert_eq!(questions[1]["clientId"], "alice");
        assert_eq!(questions[1]["connectionId"], connection_id.as_str());
        assert_eq!(questions[1]["messages"][0]["data"], "hi");
        assert_eq!(questions[1]["messages"][0]["name"], "said");
        for question in moderator.questions.lock().unwrap().iter() {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(&question.body);
            let expected =
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            assert_eq!(question.signature, expected, "X-Ably-Signature verifies");
        }
        // A channel no rule covers is never asked about.
        let (status, _) = post(&node, "free:1", "bad").await;
        assert_eq!(status, 201);
        assert!(moderator.about("free:1").is_empty());
    });
}

#[test]
fn a_rejection_is_42213_with_detail_and_nothing_is_stored_or_delivered() {
    block_on(async {
        let moderator = Moderator::start().await;
        let node = node(&moderator, "reject");
        let mut reader = attached(&node, "reader", "", "mod:2").await;
        let (mut writer, _) = client(&node, "alice", "").await;

        let (status, body) = post(&node, "mod:2", "a bad word").await;
        assert_eq!(status, 422, "{body}");
        assert_rejected(&body["error"]);
        let nack = send(&mut writer, "mod:2", 0, "bad again").await;
        assert_eq!(nack["action"], 2, "{nack}");
        assert_rejected(&nack["error"]);

        // The connection goes on; the next delivery is the next accepted message.
        let ack = send(&mut writer, "mod:2", 1, "fine").await;
        assert_eq!(ack["action"], 1, "{ack}");
        assert_eq!(next_data(&mut reader).await, "fine");
        assert_eq!(history(&node, "mod:2").await, [json!("fine")]);
        assert_eq!(moderator.about("mod:2").len(), 3);
    });
}

#[test]
fn an_unanswered_question_fails_open_or_closed() {
    block_on(async {
        let moderator = Moderator::start().await;
        let node = node(&moderator, "fail");
        let mut reader = attached(&node, "reader", "", "open:1").await;

        let (mut writer, _) = client(&node, "alice", "").await;

        let (status, body) = post(&node, "open:1", "slow").await;
        assert_eq!(status, 201, "fail open publishes: {body}");
        assert_eq!(next_data(&mut reader).await, "slow");
        let ack = send(&mut writer, "open:1", 0, "slow and live").await;
        assert_eq!(ack["action"], 1, "fail open publishes: {ack}");
        assert_eq!(next_data(&mut reader).await, "slow and live");

        // Fail closed: a moderator slower than the budget is asked once (the budget includes
        // retries), one that answers 500 is asked again (retries = 1); both refuse.
        let (status, body) = post(&node, "mod:3", "slow").await;
        assert_eq!(status, 503, "fail closed refuses: {body}");
        assert_eq!(body["error"]["code"], 50003, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("moderation did not answer (timed out)"),
            "{body}"
        );
        assert_eq!(moderator.about("mod:3").len(), 1);
        let nack = send(&mut writer, "mod:3", 1, "broken").await;
        assert_eq!(nack["action"], 2, "{nack}");
        assert_eq!(nack["error"]["code"], 50003, "{nack}");
        assert_eq!(nack["error"]["statusCode"], 503, "{nack}");
        assert!(
            nack["error"]["message"]
                .as_str()
                .unwrap()
                .contains("HTTP 500"),
            "{nack}"
        );
        assert_eq!(moderator.about("mod:3").len(), 3);
        assert!(history(&node, "mod:3").await.is_empty());
    });
}

#[test]
fn a_room_pattern_covers_its_chat_channel_edits_too() {
    block_on(async {
        let moderator = Moderator::start().await;
        let node = node(&moderator, "room");
        let chat = |method: &'static str, path: String, body: Value| {
            Request::new(method, path)
                .with_body("application/json", body.to_string().into_bytes())
                .basic(KEY)
                .header(
                    "x-ably-clientid",
                    base64::engine::general_purpose::STANDARD.encode("alice"),
                )
        };
        let base = "/chat/v4/rooms/stage/messages";

        let (status, body) = rest(
            node.addr,
            chat("POST", base.into(), json!({"text": "bad news"})),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert_rejected(&serde_json::from_str::<Value>(&body).unwrap()["error"]);

        let (status, body) = rest(
            node.addr,
            chat("POST", base.into(), json!({"text": "good news"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let serial = serde_json::from_str::<Value>(&body).unwrap()["serial"]
            .as_str()
            .unwrap()
            .to_owned();
        let question = &moderator.about("stage::$chat")[0];
        assert_eq!(question["room"], "stage");
        assert_eq!(question["messages"][0]["data"]["text"], "bad news");

        // An edit is asked about; a refused one leaves the message as it was.
        let (status, body) = rest(
            node.addr,
            chat(
                "PUT",
                format!("{base}/{serial}"),
                json!({"message": {"text": "bad edit"}}),
            ),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert_rejected(&serde_json::from_str::<Value>(&body).unwrap()["error"]);
        let edit = moderator.about("stage::$chat")[2].clone();
        assert_eq!(edit["messages"][0]["action"], 1, "{edit}");
        assert_eq!(edit["messages"][0]["serial"], serial.as_str(), "{edit}");
        let (status, body) = rest(
            node.addr,
            Request::get(format!("{base}/{serial}")).basic(KEY),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["text"],
            "good news"
        );
        // A delete brings no content: not asked.
        let asked = moderator.about("stage::$chat").len();
        let (status, body) = rest(
            node.addr,
            chat("POST", format!("{base}/{serial}/delete"), json!({})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(moderator.about("stage::$chat").len(), asked);
    });
}

#[test]
fn ephemeral_messages_pass_unless_the_rule_asks_for_them() {
    block_on(async {
        let moderator = Moderator::start().await;
        let node = node(&moderator, "ephemeral");
        let typing = |channel: &str| {
            let body = json!({"name": "typing.started", "data": "bad",
                              "extras": {"ephemeral": true}});
            publish(channel, &body.to_string())
        };
        let (status, body) = rest(node.addr, typing("stage::$chat")).await;
        assert_eq!(status, 201, "{body}");
        assert!(moderator.about("stage::$chat").is_empty());
        let (status, body) = rest(node.addr, typing("eph:1")).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(moderator.about("eph:1").len(), 1);
    });
}

#[test]
fn a_rule_at_its_bound_refuses_rather_than_queues() {
    block_on(async {
        let moderator = Moderator::start().await;
        let node = node(&moderator, "busy");
        let (first, second) = tokio::join!(
            post(&node, "busy:1", "slow one"),
            post(&node, "busy:1", "slow two")
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(statuses, [201, 503], "{first:?} {second:?}");
        let refused = if first.0 == 503 { first.1 } else { second.1 };
        assert_eq!(refused["error"]["code"], 50003, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("moderation is busy"),
            "{refused}"
        );
        assert_eq!(moderator.about("busy:1").len(), 1);
    });
}
