//! The one table of Ably error codes we send, with their HTTP status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Writes `ErrorCode` from its rows: each variant beside its Ably code and HTTP status, so no
/// boundary reports one without the other.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal => $status:literal,)+) => {
        /// An Ably error code. The HTTP status lives beside it so every boundary reports the
        /// same pair.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every variant, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            pub const fn code(self) -> u32 {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The HTTP status: by Ably's convention the code's first three digits, except
            /// where the row says otherwise.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)+
                }
            }
        }
    };
}

codes! {
    BadRequest = 40000 => 400,
    InvalidRequestBody = 40001 => 400,
    InvalidParameterValue = 40003 => 400,
    MalformedCredentials = 40005 => 400,
    InvalidConnectionIdMessage = 40006 => 400,
    MessageTooLarge = 40009 => 413,
    InvalidChannelName = 40010 => 400,
    InvalidClientId = 40012 => 400,
    /// A publish Ably would not take as a whole (40030, "invalid publish request"): more
    /// messages in one publish than the server accepts.
    InvalidPublishRequest = 40030 => 400,
    Unauthorized = 40100 => 401,
    AuthenticationFailed = 40101 => 401,
    IncompatibleCredentials = 40102 => 401,
    TimestampOutsideWindow = 40104 => 401,
    NonceReused = 40105 => 401,
    NoAuthMethod = 40106 => 401,
    KeyUnknown = 40130 => 401,
    TokenInvalid = 40140 => 401,
    TokenRevoked = 40141 => 401,
    TokenExpired = 40142 => 401,
    TokenUnrecognised = 40143 => 401,
    JwtInvalid = 40144 => 401,
    CapabilityDenied = 40160 => 401,
    /// An annotation type that counts clients (flag, distinct, unique) from an anonymous client.
    IdentifiedClientRequired = 40161 => 401,
    BasicAuthRequired = 40162 => 401,
    /// An `-own` capability (`message-update-own`, `message-delete-own`) held by a client with
    /// no clientId: whose messages are its own cannot be told.
    OwnNeedsClientId = 40166 => 401,
    /// `revokeTokens` authenticated with another key than the one named in the path.
    WrongKeyForRevocation = 40133 => 401,
    NotFound = 40400 => 404,
    MethodNotAllowed = 40500 => 405,
    /// A request (its body) that did not arrive in time.
    RequestTimeout = 40800 => 408,
    /// A before-publish moderation rule rejected the message (Ably's
    /// `content_rejected_by_moderation`, @ably/chat's `MessageRejectedByModeration`); its reason
    /// travels in `ErrorInfo::detail`.
    MessageRejectedByModeration = 42213 => 422,
    /// Ably's account-wide rate limit: REST publishes over a key's rate.
    RateLimited = 42910 => 429,
    /// Ably's per-connection publish rate limit: NACKed, the connection stays.
    ConnectionPublishRateLimited = 42911 => 429,
    /// A request target longer than the server reads.
    UriTooLong = 41400 => 414,
    /// Request headers bigger than the server reads.
    HeadersTooLarge = 43100 => 431,
    Internal = 50000 => 500,
    InternalChannel = 50001 => 500,
    InternalConnection = 50002 => 500,
    /// A dependency (the JWKS endpoint, Redis) is unreachable: the client should retry.
    ServiceUnavailable = 50003 => 503,
    /// The server holds as many connections as it may (in all, or from this address): retry.
    OverCapacity = 50003 => 503,
    ProtocolError = 80013 => 400,
    /// The server is draining: reconnect elsewhere.
    Disconnected = 80003 => 503,
    ConnectionClosed = 80017 => 400,
    /// The connection's outbound queue overflowed: it is cut off, and may resume.
    SlowConsumer = 80020 => 400,
    ChannelStateInvalid = 90001 => 400,
    ContinuityNotGuaranteed = 90003 => 400,
    UnableToRecover = 80008 => 400,
    InvalidConnectionKey = 80018 => 400,
    TooManyChannels = 90010 => 400,
    PresenceNoClientId = 91000 => 400,
    PresenceWrongState = 91001 => 400,
    TooManyPresenceMembers = 91003 => 400,
    /// An update, delete, append or annotation on a channel without the mutable-messages rule.
    MutableMessagesNotEnabled = 93002 => 400,
}

/// Whose fault an error is, read from its status: a client's (a 4xx: it should change the
/// request) or the server's (a 5xx: draining, a dependency down; the client should retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Server,
}

impl ErrorCode {
    /// The first variant with this Ably code (50003 has two), or `None` for a code we never
    /// send (0 among them).
    pub fn from_code(code: u32) -> Option<ErrorCode> {
        Self::ALL
            .iter()
            .copied()
            .find(|variant| variant.code() == code)
    }

    pub const fn blame(self) -> Blame {
        if self.status() >= 500 {
            Blame::Server
        } else {
            Blame::Client
        }
    }

    pub fn info(self, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo {
            message: message.into(),
            code: self.code(),
            status_code: self.status(),
            href: Some(format!("https://help.ably.io/error/{}", self.code())),
            detail: None,
        }
    }
}

/// Ably's ErrorInfo. `message`, `code` and `statusCode` are all mandatory: ably-js drops a frame
/// whose error lacks one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    pub message: String,
    pub code: u32,
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// Structured metadata about the error, string to string (ably-js 2.19+ `ErrorInfo.detail`):
    /// a moderation rejection's reason. Sent only when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests;
