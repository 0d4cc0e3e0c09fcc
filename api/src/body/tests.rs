use axum::http::{HeaderMap, HeaderValue};
use protocol::Message;
use serde_json::Value;

use super::{decode, OneOrMany};

fn json() -> HeaderMap {
    HeaderMap::new()
}

#[test]
fn one_item_or_an_array_of_them() {
    let one = decode::<OneOrMany<Message>>(&json(), br#"{"name":"a"}"#).unwrap();
    assert!(one.is_one());
    let many = decode::<OneOrMany<Message>>(&json(), br#"[{},{"name":"b"}]"#).unwrap();
    assert_eq!((many.is_one(), many.len()), (false, 2));
    let channel = decode::<OneOrMany<String>>(&json(), br#""a""#).unwrap();
    assert_eq!(channel.into_vec(), ["a"]);
    let null = decode::<OneOrMany<Value>>(&json(), b"null").unwrap();
    assert_eq!(null.into_vec(), [Value::Null]);
}

#[test]
fn an_array_is_many_even_when_it_spells_one_message() {
    // Found by fuzzing: serde reads a struct from an array of its fields, so this decoded as
    // one message with id "" and name "json" while the skim counted two.
    let error = decode::<OneOrMany<Message>>(&json(), br#"["","json"]"#)
        .err()
        .unwrap();
    assert_eq!((error.info.code, error.info.status_code), (40001, 400));
    assert!(
        error.info.message.contains("expected struct Message"),
        "{}",
        error.info.message
    );
}

#[test]
fn an_unsupported_content_type_is_a_400() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let error = decode::<OneOrMany<Message>>(&headers, b"name=a")
        .err()
        .unwrap();
    assert_eq!((error.info.code, error.info.status_code), (40001, 400));
}
