//! `Error`: the refusals the gateway's own checks make (publish, apps, a connection's frames, a
//! resume), each mapped to its `ErrorCode` here and nowhere else, and so knowing whose fault it
//! is.
//! Refusals made below (the hub, the back-end, auth, a protocol parse) arrive already as wire
//! errors and pass through as `Refused`. The message is the variant's `Display`, which clients
//! and tests read: change one only on purpose.
//!
//! A leaf: it names only `protocol`, so every module may use it.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use protocol::{Blame, ErrorCode, ErrorInfo};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    // A publish (`Publisher::publish`), REST or realtime.
    #[error("no messages to publish")]
    NoMessages,
    #[error("publish of {n} messages exceeds the limit of {max} messages per publish")]
    TooManyMessages { n: usize, max: usize },
    #[error("publish on channel {channel:?} is not permitted by the capability")]
    PublishDenied { channel: String },
    #[error("message clientId {claimed:?} does not match the connection's clientId {identity:?}")]
    ClientIdMismatch { claimed: String, identity: String },
    #[error("clientId \"*\" is reserved")]
    ReservedClientId,
    #[error("message of {size} bytes exceeds the {max}-byte limit")]
    MessageTooLarge { size: usize, max: usize },
    #[error("publish of {n} messages exceeds the {max}-byte limit on the sum of their sizes")]
    PublishTooLarge { n: usize, max: usize },
    #[error(
        "channel {channel:?} is filtered: it can only be subscribed to (publish, enter presence \
         and annotate on the channel itself)"
    )]
    FilteredChannel { channel: String },
    #[error("connectionKey does not name a live connection")]
    UnknownConnectionKey,
    #[error(
        "message updates, deletes and appends are not enabled on channel {channel:?}: a namespace \
         rule with mutable_messages turns them on"
    )]
    MutableMessagesOff { channel: String },
    /// An update, delete or append among the messages of a publish.
    #[error(
        "message action {action} (update, delete or append) goes alone: PATCH \
         /channels/{{channel}}/messages/{{serial}} over REST, one message per MESSAGE over realtime"
    )]
    OperationInPublish { action: u8 },
    // An update, delete or append (`Publisher::mutate`).
    #[error("an update, delete or append needs the serial of the message it changes")]
    OperationWithoutSerial,
    #[error("no message with serial {serial:?} on this channel (never, or no longer held)")]
    NoSuchMessage { serial: String },
    /// `operation` is the capability's name, e.g. `message-update-any`.
    #[error(
        "{what} on channel {channel:?} is not permitted by the capability (it needs {operation})"
    )]
    OperationDenied {
        what: &'static str,
        channel: String,
        operation: &'static str,
    },
    #[error("{what}: the capability allows only the client's own messages, and this client has no clientId")]
    OwnNeedsClientId { what: &'static str },
    #[error("{0}")]
    NotAppendable(&'static str),
    /// A message action a publisher cannot send (meta, summary, unknown).
    #[error("message action {0} cannot be published")]
    UnpublishableAction(u8),
    /// Some messages of one publish have `extras.ephemeral: true` and some do not.
    #[error(
        "publish mixes {ephemeral} ephemeral and {stored} non-ephemeral messages; publish \
         ephemeral messages (extras.ephemeral) separately"
    )]
    MixedEphemeral { ephemeral: usize, stored: usize },
    /// `allowed` says the budget, e.g. `10 messages/s (burst 20)`.
    /// Over a per-attachment limit from the principal's claims (`per_sec` may be below one).
    #[error(
        "publish rate limit exceeded on channel {channel:?}: this client may publish {per_sec} \
         messages/s there; slow down and retry"
    )]
    AttachmentRateLimited { channel: String, per_sec: f64 },
    #[error(
        "publish rate limit exceeded: this connection may publish {allowed}; slow down and retry"
    )]
    ConnectionRateLimited { allowed: String },
    #[error(
        "publish rate limit exceeded: this key may publish {allowed} via REST on this node; slow \
         down and retry"
    )]
    KeyRateLimited { allowed: String },

    // Before-publish moderation (`moderation`), of a publish or an update/append.
    /// A rule's moderator said no; `detail` is what it gave as why (`reason` among it), sent to
    /// the client as `ErrorInfo.detail`.
    #[error(
        "message rejected by moderation{}",
        .detail.get("reason").map(|reason| format!(": {reason}")).unwrap_or_default()
    )]
    ModerationRejected { detail: BTreeMap<String, String> },
    /// A fail-closed rule's moderator gave no usable answer within its budget.
    #[error("moderation did not answer ({why}); the message was not published: retry")]
    ModerationUnavailable { why: String },
    /// A rule's questions in flight are at its bound on this node.
    #[error("moderation is busy ({max} requests in flight); the message was not published: retry")]
    ModerationBusy { max: usize },

    // An annotation (`Annotator::annotate`), REST or realtime.
    #[error("no annotations to publish")]
    NoAnnotations,
    #[error("annotation-publish on channel {channel:?} is not permitted by the capability")]
    AnnotationPublishDenied { channel: String },
    #[error(
        "annotations are not enabled on channel {channel:?}: a namespace rule with \
         mutable_messages turns them on"
    )]
    AnnotationsOff { channel: String },
    /// `why` names the field and what is wrong with it.
    #[error("invalid annotation: {why}")]
    BadAnnotation { why: String },
    #[error("annotations of type {annotation_type:?} need an identified client (a clientId)")]
    AnnotationNeedsClientId { annotation_type: String },

    // A sandbox app (`Apps::create`).
    /// `ApiKey::parse`'s complaint.
    #[error("{0}")]
    InvalidAppKey(String),

    // A connection: its setup and its frames.
    #[error("format must be json or msgpack")]
    BadFormat,
    #[error("server shutting down; reconnect")]
    Draining,
    #[error("text frame is not valid UTF-8")]
    NotUtf8,
    #[error("frame exceeds the {max}-byte limit")]
    FrameTooLarge { max: usize },
    /// The decoder's complaint.
    #[error("malformed frame: {0}")]
    MalformedFrame(String),
    #[error("action {0} is not supported by this server")]
    UnsupportedAction(u8),
    /// `action` names the frame: `MESSAGE`, `PRESENCE`.
    #[error("{action} without msgSerial")]
    NoMsgSerial { action: &'static str },
    #[error("AUTH without accessToken")]
    NoAccessToken,
    #[error("no channel given")]
    NoChannel,
    #[error("attach to channel {channel:?} is not permitted by the capability")]
    AttachDenied { channel: String },
    #[error("at most {max} channels per connection")]
    TooManyChannels { max: usize },
    #[error("unknown channel mode {0:?}")]
    UnknownMode(String),
    #[error("rewind {0:?}: expected a message count or a duration like 10s or 2m")]
    BadRewind(String),
    /// `operation` is what the client tried: `publish`, `presence`.
    #[error("{operation} is not among the modes channel {channel:?} was attached with")]
    OutsideModes {
        operation: &'static str,
        channel: String,
    },
    #[error("the renewed token no longer permits this channel")]
    NoLongerPermitted,
    #[error("presence on channel {channel:?} is not permitted by the capability")]
    PresenceDenied { channel: String },
    #[error("attach the channel before entering presence")]
    PresenceNotAttached,
    #[error("PRESENCE without presence messages")]
    NoPresenceMessages,
    #[error("presence clientId {0:?} does not match the connection's clientId")]
    PresenceClientIdMismatch(String),
    #[error("presence needs a clientId: connect with one")]
    PresenceNoClientId,
    #[error("presence data of {size} bytes exceeds {max}")]
    PresenceTooLarge { size: usize, max: usize },
    #[error("could not encode messages")]
    EncodeFailed,

    // A resume (`Sessions::resume`) and the transport it supersedes.
    /// A connection we knew that cannot be taken back (expired, closed, another identity).
    #[error(
        "unable to recover the connection (expired, closed or not yours); this is a new connection"
    )]
    NotRecoverable,
    /// A key we never issued.
    #[error("invalid connection key; this is a new connection")]
    InvalidConnectionKey,
    /// Told to the transport a resume took over; `why` says where it went.
    #[error("{why}")]
    TakenOver { why: &'static str },

    /// Refused below (hub, back-end, auth, a protocol parse), already a wire error.
    #[error("{}", .0.message)]
    Refused(ErrorInfo),
}

impl Error {
    /// The wire code: the one table of which refusal is which code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NoMessages
            | Error::InvalidAppKey(_)
            | Error::NotUtf8
            | Error::MalformedFrame(_)
            | Error::UnsupportedAction(_)
            | Error::NoMsgSerial { .. }
            | Error::NoAccessToken
            | Error::NoChannel
            | Error::NoPresenceMessages => ErrorCode::BadRequest,
            Error::TooManyMessages { .. } | Error::MixedEphemeral { .. } => {
                ErrorCode::InvalidPublishRequest
            }
            Error::MutableMessagesOff { .. } | Error::AnnotationsOff { .. } => {
                ErrorCode::MutableMessagesNotEnabled
            }
            Error::ModerationRejected { .. } => ErrorCode::MessageRejectedByModeration,
            Error::ModerationUnavailable { .. } | Error::ModerationBusy { .. } => {
                ErrorCode::ServiceUnavailable
            }
            Error::NoAnnotations => ErrorCode::BadRequest,
            Error::AnnotationPublishDenied { .. } => ErrorCode::CapabilityDenied,
            Error::BadAnnotation { .. } => ErrorCode::InvalidParameterValue,
            Error::AnnotationNeedsClientId { .. } => ErrorCode::IdentifiedClientRequired,
            Error::UnpublishableAction(_)
            | Error::OperationInPublish { .. }
            | Error::OperationWithoutSerial
            | Error::NotAppendable(_) => ErrorCode::InvalidParameterValue,
            Error::NoSuchMessage { .. } => ErrorCode::NotFound,
            Error::OperationDenied { .. } => ErrorCode::CapabilityDenied,
            Error::OwnNeedsClientId { .. } => ErrorCode::OwnNeedsClientId,
            Error::PublishDenied { .. }
            | Error::AttachDenied { .. }
            | Error::OutsideModes { .. }
            | Error::NoLongerPermitted
            | Error::PresenceDenied { .. } => ErrorCode::CapabilityDenied,
            Error::ClientIdMismatch { .. }
            | Error::ReservedClientId
            | Error::PresenceClientIdMismatch(_) => ErrorCode::InvalidClientId,
            Error::MessageTooLarge { .. }
            | Error::PublishTooLarge { .. }
            | Error::FrameTooLarge { .. }
            | Error::PresenceTooLarge { .. } => ErrorCode::MessageTooLarge,
            Error::UnknownConnectionKey => ErrorCode::InvalidConnectionIdMessage,
            Error::FilteredChannel { .. } => ErrorCode::InvalidChannelName,
            Error::ConnectionRateLimited { .. } | Error::AttachmentRateLimited { .. } => {
                ErrorCode::ConnectionPublishRateLimited
            }
            Error::KeyRateLimited { .. } => ErrorCode::RateLimited,
            Error::BadFormat | Error::UnknownMode(_) | Error::BadRewind(_) => {
                ErrorCode::InvalidParameterValue
            }
            Error::TooManyChannels { .. } => ErrorCode::TooManyChannels,
            Error::PresenceNotAttached => ErrorCode::PresenceWrongState,
            Error::PresenceNoClientId => ErrorCode::PresenceNoClientId,
            Error::EncodeFailed => ErrorCode::InternalConnection,
            Error::NotRecoverable => ErrorCode::UnableToRecover,
            Error::InvalidConnectionKey => ErrorCode::InvalidConnectionKey,
            Error::Draining | Error::TakenOver { .. } => ErrorCode::Disconnected,
            Error::Refused(info) => ErrorCode::from_code(info.code).unwrap_or(ErrorCode::Internal),
        }
    }

    /// The HTTP status (`statusCode` on the wire).
    pub fn status(&self) -> u16 {
        match self {
            Error::Refused(info) => info.status_code,
            _ => self.code().status(),
        }
    }

    /// The client's fault (4xx: change the request) or ours (5xx: retry).
    pub fn blame(&self) -> Blame {
        if self.status() >= 500 {
            Blame::Server
        } else {
            Blame::Client
        }
    }

    /// The wire error: made here only.
    pub fn info(&self) -> ErrorInfo {
        match self {
            Error::Refused(info) => info.clone(),
            Error::ModerationRejected { detail } if !detail.is_empty() => ErrorInfo {
                detail: Some(detail.clone()),
                ..self.code().info(self.to_string())
            },
            _ => self.code().info(self.to_string()),
        }
    }
}

impl From<Error> for ErrorInfo {
    fn from(error: Error) -> ErrorInfo {
        match error {
            Error::Refused(info) => info,
            error => error.info(),
        }
    }
}

impl From<ErrorInfo> for Error {
    fn from(info: ErrorInfo) -> Error {
        Error::Refused(info)
    }
}
