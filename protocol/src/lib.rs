//! Ably wire protocol: the types that cross the socket and the REST API, and their codecs.
//!
//! This crate is pure data: `ProtocolMessage` and friends, JSON and msgpack codecs, the error-code
//! table (`ErrorCode`), capabilities and channel names. It does no I/O and knows nothing of tokio,
//! sockets or Redis; the gateway and the api build on it.
//!
//! Start at `message::ProtocolMessage` and `codec::Format`.

pub mod capability;
pub mod channel;
pub mod codec;
pub mod error;
pub mod event;
pub mod filter;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod message;

pub use capability::{Capability, Operation};
pub use channel::ChannelName;
pub use codec::{DecodeError, Format};
pub use error::{Blame, ErrorCode, ErrorInfo};
pub use filter::{Filter, FilterError};
pub use message::{
    Action, Annotation, ConnectionDetails, Data, Message, MessageAnnotations, MessageVersion,
    PresenceMessage, ProtocolMessage,
};

/// Milliseconds since the Unix epoch: Ably's clock unit everywhere on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
