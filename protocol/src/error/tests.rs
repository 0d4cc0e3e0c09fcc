use super::*;

/// The rule the table replaced: the code's first three digits, with Ably's exceptions.
fn conventional_status(code: u32) -> u16 {
    match code {
        40009 => 413,
        80003 | 50003 => 503,
        code @ 40000..=59999 => (code / 100) as u16,
        _ => 400,
    }
}

#[test]
fn every_row_keeps_the_status_ably_gives_its_code() {
    for &variant in ErrorCode::ALL {
        assert_eq!(
            variant.status(),
            conventional_status(variant.code()),
            "{variant:?}"
        );
    }
}

#[test]
fn codes_map_back_to_their_first_variant() {
    assert_eq!(ErrorCode::from_code(80020), Some(ErrorCode::SlowConsumer));
    assert_eq!(
        ErrorCode::from_code(50003),
        Some(ErrorCode::ServiceUnavailable)
    );
    assert_eq!(ErrorCode::from_code(0), None);
    for &variant in ErrorCode::ALL {
        let found = ErrorCode::from_code(variant.code()).expect("a row");
        assert_eq!(found.code(), variant.code());
    }
}

#[test]
fn blame_follows_the_status() {
    assert_eq!(ErrorCode::Disconnected.blame(), Blame::Server);
    assert_eq!(ErrorCode::ServiceUnavailable.blame(), Blame::Server);
    assert_eq!(ErrorCode::TokenRevoked.blame(), Blame::Client);
    assert_eq!(ErrorCode::SlowConsumer.blame(), Blame::Client);
}

#[test]
fn detail_is_sent_only_when_present() {
    let plain = ErrorCode::BadRequest.info("no");
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("detail").is_none(), "{json}");
    let rejected = ErrorInfo {
        detail: Some([("reason".to_owned(), "spam".to_owned())].into()),
        ..ErrorCode::MessageRejectedByModeration.info("rejected")
    };
    let json = serde_json::to_value(&rejected).unwrap();
    assert_eq!(json["detail"], serde_json::json!({"reason": "spam"}));
    assert_eq!(json["code"], 42213);
    assert_eq!(json["statusCode"], 422);
    let back: ErrorInfo = serde_json::from_value(json).unwrap();
    assert_eq!(back, rejected);
}
