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
