use protocol::{Blame, ErrorCode, ErrorInfo};

use super::Error;

/// The wire output clients match: code, status and message, a row per kind of refusal.
#[test]
fn refusals_keep_their_code_status_and_message() {
    let rows: &[(Error, u32, u16, &str)] = &[
        (Error::NoMessages, 40000, 400, "no messages to publish"),
        (
            Error::AnnotationPublishDenied {
                channel: "room".into(),
            },
            40160,
            401,
            "annotation-publish on channel \"room\" is not permitted by the capability",
        ),
        (
            Error::AnnotationsOff {
                channel: "room".into(),
            },
            93002,
            400,
            "annotations are not enabled on channel \"room\": a namespace rule with \
             mutable_messages turns them on",
        ),
        (
            Error::AnnotationNeedsClientId {
                annotation_type: "r:flag.v1".into(),
            },
            40161,
            401,
            "annotations of type \"r:flag.v1\" need an identified client (a clientId)",
        ),
        (
            Error::BadAnnotation {
                why: "type is required".into(),
            },
            40003,
            400,
            "invalid annotation: type is required",
        ),
        (
            Error::TooManyMessages { n: 1001, max: 1000 },
            40030,
            400,
            "publish of 1001 messages exceeds the limit of 1000 messages per publish",
        ),
        (
            Error::PublishDenied {
                channel: "room".into(),
            },
            40160,
            401,
            "publish on channel \"room\" is not permitted by the capability",
        ),
        (
            Error::ClientIdMismatch {
                claimed: "bob".into(),
                identity: "alice".into(),
            },
            40012,
            400,
            "message clientId \"bob\" does not match the connection's clientId \"alice\"",
        ),
        (
            Error::PublishTooLarge { n: 3, max: 65536 },
            40009,
            413,
            "publish of 3 messages exceeds the 65536-byte limit on the sum of their sizes",
        ),
        (
            Error::ConnectionRateLimited {
                allowed: "10 messages/s (burst 20)".into(),
            },
            42911,
            429,
            "publish rate limit exceeded: this connection may publish 10 messages/s (burst 20); \
             slow down and retry",
        ),
        (
            Error::KeyRateLimited {
                allowed: "10 messages/s (burst 20)".into(),
            },
            42910,
            429,
            "publish rate limit exceeded: this key may publish 10 messages/s (burst 20) via REST \
             on this node; slow down and retry",
        ),
        (
            Error::MutableMessagesOff {
                channel: "room".into(),
            },
            93002,
            400,
            "message updates, deletes and appends are not enabled on channel \"room\": a \
             namespace rule with mutable_messages turns them on",
        ),
        (
            Error::OperationInPublish { action: 1 },
            40003,
            400,
            "message action 1 (update, delete or append) goes alone: PATCH /channels/{channel}/messages/{serial} over REST, one message per MESSAGE over realtime",
        ),
        (
            Error::MixedEphemeral {
                ephemeral: 1,
                stored: 2,
            },
            40030,
            400,
            "publish mixes 1 ephemeral and 2 non-ephemeral messages; publish ephemeral messages \
             (extras.ephemeral) separately",
        ),
        (
            Error::UnpublishableAction(4),
            40003,
            400,
            "message action 4 cannot be published",
        ),
        (
            Error::NoSuchMessage {
                serial: "01-02".into(),
            },
            40400,
            404,
            "no message with serial \"01-02\" on this channel (never, or no longer held)",
        ),
        (
            Error::OperationDenied {
                what: "delete",
                channel: "room".into(),
                operation: "message-delete-any",
            },
            40160,
            401,
            "delete on channel \"room\" is not permitted by the capability (it needs message-delete-any)",
        ),
        (
            Error::OwnNeedsClientId { what: "update" },
            40166,
            401,
            "update: the capability allows only the client's own messages, and this client has no clientId",
        ),
        (
            Error::Draining,
            80003,
            503,
            "server shutting down; reconnect",
        ),
        (
            Error::NoMsgSerial { action: "MESSAGE" },
            40000,
            400,
            "MESSAGE without msgSerial",
        ),
        (
            Error::TooManyChannels { max: 1000 },
            90010,
            400,
            "at most 1000 channels per connection",
        ),
        (
            Error::OutsideModes {
                operation: "publish",
                channel: "room".into(),
            },
            40160,
            401,
            "publish is not among the modes channel \"room\" was attached with",
        ),
        (Error::EncodeFailed, 50002, 500, "could not encode messages"),
    ];
    for (error, code, status, message) in rows {
        let info = error.info();
        assert_eq!(
            (info.code, info.status_code, info.message.as_str()),
            (*code, *status, *message),
            "{error:?}"
        );
        assert_eq!(error.status(), *status, "{error:?}");
        assert_eq!(ErrorInfo::from(error.clone()), info);
    }
}

#[test]
fn blame_follows_the_status() {
    assert_eq!(Error::NoMessages.blame(), Blame::Client);
    assert_eq!(Error::Draining.blame(), Blame::Server);
    assert_eq!(Error::EncodeFailed.blame(), Blame::Server);
}

/// A refusal made below keeps its wire form whole, its code read back from the table.
#[test]
fn a_refusal_from_below_passes_through() {
    let below = ErrorCode::ServiceUnavailable.info("the message bus (Redis) is unavailable");
    let error = Error::from(below.clone());
    assert_eq!(error.info(), below);
    assert_eq!(error.to_string(), below.message);
    assert_eq!(error.code(), ErrorCode::ServiceUnavailable);
    assert_eq!(error.blame(), Blame::Server);
    assert_eq!(ErrorInfo::from(error), below);
}

/// A moderation rejection carries the moderator's reason in `detail` (ably-js's
/// `ErrorInfo.detail`); outages are ours to retry.
#[test]
fn a_moderation_rejection_carries_its_detail() {
    let detail = [("reason".to_owned(), "no links".to_owned())].into();
    let info = Error::ModerationRejected { detail }.info();
    assert_eq!((info.code, info.status_code), (42213, 422));
    assert_eq!(info.message, "message rejected by moderation: no links");
    assert_eq!(info.detail.unwrap()["reason"], "no links");
    let bare = Error::ModerationRejected {
        detail: Default::default(),
    };
    assert_eq!(bare.info().message, "message rejected by moderation");
    assert_eq!(bare.info().detail, None);
    let down = Error::ModerationUnavailable {
        why: "timed out".into(),
    };
    assert_eq!((down.info().code, down.status()), (50003, 503));
    assert_eq!(down.blame(), Blame::Server);
    assert_eq!(Error::ModerationBusy { max: 2 }.status(), 503);
}
