//! Per-connection and per-message limits, connection timing and socket bounds, with their
//! defaults. The logic that enforces them lives with its feature (`limits::RateBucket`, the
//! outbox, the read loop, `api::serve`).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest publish (Ably's `maxMessageSize`, 64 KiB): the sum over its messages of name +
    /// clientId + data + extras (as JSON), as Ably counts it. Over it: NACK / HTTP 413 with 40009.
    pub max_message_bytes: usize,
    /// Most messages in one publish (a realtime MESSAGE, a REST publish, one spec of a batch
    /// publish). Over it: NACK / HTTP 400 with 40030, before anything is acknowledged.
    pub max_messages_per_publish: usize,
    /// Most messages one batch publish (`POST /messages`) makes: each spec's messages times its
    /// channels, summed. Over it: HTTP 400 with 40030 for the whole request.
    pub max_batch_messages: usize,
    /// Publish rate of one realtime connection. Over it: NACK 42911, the connection stays.
    pub connection_publish_rate: PublishRate,
    /// Publish rate of one key's REST publishes (Supabase users: one bucket per clientId),
    /// counted per node. Over it: HTTP 429 with 42910.
    pub key_publish_rate: PublishRate,
    /// Largest WebSocket frame read. Above `max_message_bytes` so an oversized message still
    /// decodes and gets a proper 40009 instead of a dropped socket; JSON base64 adds a third.
    pub max_frame_bytes: usize,
    /// When a connection that does not read counts as a slow consumer (DISCONNECTED 80020).
    pub outbound_queue: OutboundQueue,
    /// Channels one connection may have attached at once (90010 beyond).
    pub max_channels_per_connection: usize,
    /// tungstenite's read buffer, allocated per connection for its whole life (its 128 KiB default
    /// would cost gigabytes at 10k connections). Clients send small frames; a bigger one grows it.
    pub ws_read_buffer_bytes: usize,
    /// Bytes buffered before a write goes to the socket; the writer flushes each batch anyway.
    pub ws_write_buffer_bytes: usize,
    /// Bytes a connection may have unsent in tungstenite before writes fail.
    pub ws_max_write_buffer_bytes: usize,
    /// Frames the writer feeds before one flush.
    pub write_batch_frames: usize,
    /// Least time between two flushes to one socket. A connection receiving faster than this
    /// gets its frames in fewer, bigger writes (each write is a syscall and, on the receiving
    /// side, a wake-up); one receiving slower is flushed at once, so it adds no latency there.
    pub min_flush_interval: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_messages_per_publish: 1000,
            max_batch_messages: 10_000,
            // ably-js publishing 2,000 messages without awaiting stays inside the burst; a chat
            // client types a few per second. Benchmarks that saturate a connection turn it off.
            connection_publish_rate: PublishRate {
                messages_per_sec: 1000,
                burst_messages: 2000,
                bytes_per_sec: 4 * 1024 * 1024,
                burst_bytes: 16 * 1024 * 1024,
            },
            // A backend publishing for many users through one key.
            key_publish_rate: PublishRate {
                messages_per_sec: 5000,
                burst_messages: 10_000,
                bytes_per_sec: 16 * 1024 * 1024,
                burst_bytes: 32 * 1024 * 1024,
            },
            max_frame_bytes: 256 * 1024,
            outbound_queue: OutboundQueue::default(),
            max_channels_per_connection: 1000,
            ws_read_buffer_bytes: 1024,
            ws_write_buffer_bytes: 8 * 1024,
            ws_max_write_buffer_bytes: 1024 * 1024,
            write_batch_frames: 64,
            // 1 × 1,000 at 335 publications/s: server CPU 94 % → 66 %, p99 34 → 16 ms.
            min_flush_interval: std::time::Duration::from_millis(10),
        }
    }
}

/// The slow-consumer bounds of one connection's outgoing queue (`outbox::Outbox`). Only
/// deliveries (other connections' messages and presence) count against `bytes`; replies to the
/// client's own requests (and echoes of its own messages) pause its reader instead, so a client
/// that sends fast but keeps reading is slowed down, never disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundQueue {
    /// Bytes of deliveries queued for one connection; more and it is a slow consumer.
    pub bytes: usize,
    /// Age of the oldest unsent frame (delivery or reply); older and it is a slow consumer.
    pub age: Duration,
}

impl Default for OutboundQueue {
    fn default() -> Self {
        OutboundQueue {
            // 1,000 messages of 4 KiB of backlog: seconds of a busy channel for a client on a
            // bad link, a few MiB of shared frames at most (the frames are refcounted clones).
            bytes: 4 * 1024 * 1024,
            // A client that reads nothing for this long is not coming back soon; ably-js gives
            // up on a silent transport after maxIdleInterval + 10 s anyway.
            age: Duration::from_secs(10),
        }
    }
}

/// A publish rate: a token bucket for messages and one for bytes, each refilled at its rate up
/// to its burst. 0 messages per second turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRate {
    pub messages_per_sec: u32,
    pub burst_messages: u32,
    pub bytes_per_sec: u64,
    pub burst_bytes: u64,
}

impl PublishRate {
    pub fn is_unlimited(&self) -> bool {
        self.messages_per_sec == 0
    }
}

/// Connection timing, as announced in CONNECTED.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Longest quiet spell on our side: a HEARTBEAT (or ping) goes out at least this often.
    pub max_idle_interval: Duration,
    /// How long clients keep trying to resume before they give up on the connection.
    pub connection_state_ttl: Duration,
    /// A peer silent this long (not even a pong) is dropped.
    pub peer_idle_timeout: Duration,
    /// AUTH goes out this long before a token expires (or at half its remaining life if shorter).
    pub token_renew_lead: Duration,
    /// On shutdown (SIGTERM), how long the process takes to hand its clients over: each
    /// connection is told to reconnect (DISCONNECTED) at a random moment in the first 60% of
    /// this, so they resume elsewhere in a spread rather than a storm; the process exits when
    /// the last one is gone, or at the end of it.
    pub shutdown_grace: Duration,
    /// After an abrupt drop, how long a connection's presence members stay before they leave
    /// (Ably's 15 s), unless it resumes.
    pub presence_grace: Duration,
    /// How often waiting presence events go out (one frame per subscriber per flush).
    pub presence_flush_interval: Duration,
    /// Clustered: a node renews its lease in Redis every third of this; a node silent for this
    /// long is dead, and its presence members leave after the presence grace unless their
    /// clients resume on another node.
    pub node_lease: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            max_idle_interval: Duration::from_secs(15),
            connection_state_ttl: Duration::from_secs(120),
            peer_idle_timeout: Duration::from_secs(45),
            token_renew_lead: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            presence_grace: Duration::from_secs(15),
            presence_flush_interval: Duration::from_millis(50),
            node_lease: Duration::from_secs(5),
        }
    }
}

/// Bounds on the sockets the server holds, so silent or slow peers cannot hold file descriptors
/// forever and a flood of them cannot take the last one (`api::serve` applies them).
#[derive(Debug, Clone)]
pub struct Sockets {
    /// A request's head (request line and headers, the WebSocket upgrade included) must arrive
    /// within this, counted from the connection's start or from the head's first byte: a silent
    /// socket and a slowloris upgrade are closed after it.
    pub header_timeout: Duration,
    /// An idle keep-alive connection (between requests) is closed after this; above the 60 s
    /// load balancers and ingresses keep idle upstream connections, so they close first.
    pub keep_alive_timeout: Duration,
    /// A request body must arrive completely within this after its head; after it the request
    /// fails with 408 and the connection is closed.
    pub body_timeout: Duration,
    /// Connections (HTTP and WebSocket) held at once; a connection over it is answered 503
    /// (50003) or, for a WebSocket upgrade, DISCONNECTED with 50003, and closed. 0: no cap.
    pub max_connections: usize,
    /// Connections held at once from one source address; 0: no cap (behind a proxy or load
    /// balancer every client shares its address).
    pub max_connections_per_ip: usize,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets {
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(30),
            max_connections: 0,
            max_connections_per_ip: 0,
        }
    }
}
