//! The one table of Ably error codes we send, with their HTTP status.

use serde::{Deserialize, Serialize};

/// An Ably error code. The HTTP status lives beside it so every boundary reports the same pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidRequestBody,
    InvalidParameterValue,
    MalformedCredentials,
    InvalidConnectionIdMessage,
    MessageTooLarge,
    InvalidChannelName,
    InvalidClientId,
    /// A publish Ably would not take as a whole (40030, "invalid publish request"): more
    /// messages in one publish than the server accepts.
    InvalidPublishRequest,
    Unauthorized,
    AuthenticationFailed,
    IncompatibleCredentials,
    TimestampOutsideWindow,
    NonceReused,
    NoAuthMethod,
    KeyUnknown,
    TokenInvalid,
    TokenRevoked,
    TokenExpired,
    TokenUnrecognised,
    JwtInvalid,
    CapabilityDenied,
    BasicAuthRequired,
    /// `revokeTokens` authenticated with another key than the one named in the path.
    WrongKeyForRevocation,
    NotFound,
    MethodNotAllowed,
    /// A request (its body) that did not arrive in time.
    RequestTimeout,
    /// Ably's account-wide rate limit (42910, HTTP 429): REST publishes over a key's rate.
    RateLimited,
    /// Ably's per-connection publish rate limit (42911, HTTP 429): NACKed, the connection stays.
    ConnectionPublishRateLimited,
    /// A request target longer than the server reads.
    UriTooLong,
    /// Request headers bigger than the server reads.
    HeadersTooLarge,
    Internal,
    InternalChannel,
    InternalConnection,
    /// A dependency (the JWKS endpoint, Redis) is unreachable: the client should retry.
    ServiceUnavailable,
    /// The server holds as many connections as it may (in all, or from this address): retry.
    OverCapacity,
    ProtocolError,
    Disconnected,
    ConnectionClosed,
    ContinuityLost,
    ChannelStateInvalid,
    ContinuityNotGuaranteed,
    TooManyChannels,
    PresenceNoClientId,
    PresenceWrongState,
    TooManyPresenceMembers,
    UnableToRecover,
    InvalidConnectionKey,
}

impl ErrorCode {
    pub const fn code(self) -> u32 {
        use ErrorCode::*;
        match self {
            BadRequest => 40000,
            InvalidRequestBody => 40001,
            InvalidParameterValue => 40003,
            MalformedCredentials => 40005,
            InvalidConnectionIdMessage => 40006,
            MessageTooLarge => 40009,
            InvalidChannelName => 40010,
            InvalidClientId => 40012,
            InvalidPublishRequest => 40030,
            Unauthorized => 40100,
            AuthenticationFailed => 40101,
            IncompatibleCredentials => 40102,
            TimestampOutsideWindow => 40104,
            NonceReused => 40105,
            NoAuthMethod => 40106,
            KeyUnknown => 40130,
            TokenInvalid => 40140,
            TokenRevoked => 40141,
            TokenExpired => 40142,
            TokenUnrecognised => 40143,
            JwtInvalid => 40144,
            CapabilityDenied => 40160,
            BasicAuthRequired => 40162,
            WrongKeyForRevocation => 40133,
            NotFound => 40400,
            MethodNotAllowed => 40500,
            RequestTimeout => 40800,
            RateLimited => 42910,
            ConnectionPublishRateLimited => 42911,
            UriTooLong => 41400,
            HeadersTooLarge => 43100,
            Internal => 50000,
            InternalChannel => 50001,
            InternalConnection => 50002,
            ServiceUnavailable | OverCapacity => 50003,
            ProtocolError => 80013,
            Disconnected => 80003,
            ConnectionClosed => 80017,
            ContinuityLost => 80020,
            ChannelStateInvalid => 90001,
            ContinuityNotGuaranteed => 90003,
            UnableToRecover => 80008,
            InvalidConnectionKey => 80018,
            TooManyChannels => 90010,
            PresenceNoClientId => 91000,
            PresenceWrongState => 91001,
            TooManyPresenceMembers => 91003,
        }
    }

    /// The HTTP status, by Ably's convention: the code's first three digits, with the
    /// exceptions Ably makes.
    pub const fn status(self) -> u16 {
        match self.code() {
            40009 => 413,
            // Draining or an unreachable auth dependency: the client should retry.
            80003 | 50003 => 503,
            code @ 40000..=59999 => (code / 100) as u16,
            _ => 400,
        }
    }

    /// Token errors (40140..40150) make clients renew their token rather than give up.
    pub const fn is_token_error(self) -> bool {
        let code = self.code();
        code >= 40140 && code < 40150
    }

    pub fn info(self, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo {
            message: message.into(),
            code: self.code(),
            status_code: self.status(),
            href: Some(format!("https://help.ably.io/error/{}", self.code())),
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
}
