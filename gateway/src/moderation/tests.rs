use std::collections::BTreeMap;

use protocol::{ChannelName, Data, Message};

use super::{verdict, Question, Verdict};

#[test]
fn answers_read_as_verdicts() {
    assert_eq!(verdict(br#"{"action":"accept"}"#), Ok(Verdict::Accept));
    let detail = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        verdict(br#"{"action":"reject"}"#),
        Ok(Verdict::Reject(detail(&[])))
    );
    assert_eq!(
        verdict(br#"{"action":"reject","reason":"no links","rejectionDetail":{"rule":"links","score":0.9}}"#),
        Ok(Verdict::Reject(detail(&[
            ("reason", "no links"),
            ("rule", "links"),
            ("score", "0.9")
        ])))
    );
    for bad in [
        &b"not json"[..],
        br#"{}"#,
        br#"{"action":"maybe"}"#,
        br#"[]"#,
    ] {
        assert!(verdict(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn the_question_names_the_room_and_makes_binary_json_safe() {
    let channel = ChannelName::parse("lobby::$chat").unwrap();
    let messages = [Message {
        name: Some("chat.message".into()),
        data: Some(Data::Binary(vec![1, 2, 3].into())),
        ..Message::default()
    }];
    let question = Question {
        channel: &channel,
        client_id: Some("alice"),
        connection_id: None,
        messages: &messages,
        ephemeral: false,
    };
    let body: serde_json::Value = serde_json::from_slice(&question.body()).unwrap();
    assert_eq!(body["channel"], "lobby::$chat");
    assert_eq!(body["room"], "lobby");
    assert_eq!(body["clientId"], "alice");
    assert!(body.get("connectionId").is_none(), "{body}");
    assert_eq!(body["messages"][0]["data"], "AQID");
    assert_eq!(body["messages"][0]["encoding"], "base64");
}
