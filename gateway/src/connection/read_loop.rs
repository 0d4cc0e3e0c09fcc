//! The read loop: frames in, one handler per action, and the deadlines (idle peer, drain
//! hand-over, token renewal and expiry) that end or interrupt it.

use std::ops::ControlFlow;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::{FutureExt, StreamExt};
use protocol::{Action, ErrorInfo, Format, ProtocolMessage};
use tokio::time::Instant;

use super::close::close_reason;
use super::Connection;
use crate::auth::AuthError;
use crate::error::Error;

impl Connection {
    pub(super) async fn read_loop(&mut self, stream: &mut SplitStream<WebSocket>) {
        let idle_timeout = self.gateway.config().timing.peer_idle_timeout;
        let mut shutdown = self.gateway.shutdown_signal();
        let mut idle_deadline = Instant::now() + idle_timeout;
        // Set once draining: when this connection is told to go (jittered across the drain).
        let mut handover_at: Option<Instant> = None;
        // One timer for every deadline (idle, drain, token renewal and expiry), re-armed only
        // when it fires or a deadline moves earlier: a frame costs no timer work, and an idle
        // connection's task stays small.
        let timer = tokio::time::sleep_until(self.next_deadline(idle_deadline, handover_at));
        tokio::pin!(timer);
        // The replies queued for the client are over the high-water mark: read nothing until
        // the writer has drained them (`Outbox::pause_reader_if_behind`). The client is sending
        // faster than it reads; it is slowed down, not disconnected.
        let mut paused = false;
        loop {
            let flow = tokio::select! {
                biased;
                _ = self.outbox.wake_reader.notified() => {
                    if self.outbox.is_ending() {
                        self.close_reason = close_reason(self.outbox.end_code());
                        // A CLOSE the client sent before its next connection came to resume this
                        // one may still wait unread: then it closed, and is not to be taken over.
                        if self.closed_unread(stream) {
                            self.ended_cleanly = true;
                            self.close_reason = "client_closed";
                        }
                        ControlFlow::Break(())
                    } else {
                        // The writer drained the replies (or a stale wake-up: asked again).
                        if paused && !self.outbox.reader_paused() {
                            paused = false;
                            // We were not listening: the peer's silence was ours.
                            idle_deadline = Instant::now() + idle_timeout;
                        }
                        ControlFlow::Continue(())
                    }
                }
                _ = async { drop(shutdown.wait_for(|draining| *draining).await) }, if handover_at.is_none() => {
                    let spread = self.gateway.config().timing.shutdown_grace * 3 / 5;
                    let jitter = spread.mul_f64(rand::random::<f64>());
                    handover_at = Some(Instant::now() + jitter);
                    ControlFlow::Continue(())
                }
                _ = &mut timer => {
                    if paused {
                        // Not listening, so not the peer's silence.
                        idle_deadline = idle_deadline.max(Instant::now() + idle_timeout);
                    }
                    self.on_deadline(idle_deadline, handover_at)
                }
                // Before reading more: the ACKs of what the bus has stored.
                (msg_serial, submitted, stored) = super::pipeline::oldest_settled(&mut self.pipeline), if !self.pipeline.is_empty() => {
                    self.on_settled(msg_serial, submitted, stored);
                    ControlFlow::Continue(())
                }
                frame = stream.next(), if !paused && self.pipeline.len() < super::pipeline::MAX_PIPELINED => match frame {
                    None => ControlFlow::Break(()),
                    Some(Err(error)) => self.on_read_error(error),
                    Some(Ok(frame)) => {
                        idle_deadline = Instant::now() + idle_timeout;
                        // Boxed: the handlers' state would otherwise sit in every idle
                        // connection's task (several KiB each).
                        let flow = Box::pin(self.on_frame(frame)).await;
                        paused = self.outbox.pause_reader_if_behind();
                        flow
                    }
                },
            };
            if flow.is_break() || self.outbox.is_ending() {
                return;
            }
            let next = self.next_deadline(idle_deadline, handover_at);
            if timer.is_elapsed() || next < timer.deadline() {
                timer.as_mut().reset(next);
            }
        }
    }

    /// The earliest thing the read loop must do without hearing from the peer.
    fn next_deadline(&self, idle_deadline: Instant, handover_at: Option<Instant>) -> Instant {
        let mut next = idle_deadline;
        if let Some(at) = handover_at {
            next = next.min(at);
        }
        if let Some(timers) = &self.token_timers {
            next = next.min(timers.expires_at);
            if !timers.renew_asked {
                next = next.min(timers.renew_at);
            }
        }
        next
    }

    /// The timer fired: whichever deadlines have passed, the final ones first.
    fn on_deadline(
        &mut self,
        idle_deadline: Instant,
        handover_at: Option<Instant>,
    ) -> ControlFlow<()> {
        let now = Instant::now();
        if handover_at.is_some_and(|at| at <= now) {
            self.close_reason = "drain";
            self.outbox.reply(&ProtocolMessage::error(
                Action::Disconnected,
                Error::Draining.info(),
            ));
            return ControlFlow::Break(());
        }
        if let Some(timers) = &mut self.token_timers {
            if timers.expires_at <= now {
                self.close_reason = "token_expired";
                self.outbox.reply(&ProtocolMessage::error(
                    Action::Disconnected,
                    AuthError::TokenExpired.info(),
                ));
                return ControlFlow::Break(());
            }
            if !timers.renew_asked && timers.renew_at <= now {
                timers.renew_asked = true;
                self.outbox.reply(&ProtocolMessage::new(Action::Auth));
            }
        }
        if idle_deadline <= now {
            tracing::debug!(connection_id = %self.id, "peer idle; dropping");
            self.close_reason = "idle";
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Whether a CLOSE is among the frames already received (a few looked at, none waited for).
    fn closed_unread(&self, stream: &mut SplitStream<WebSocket>) -> bool {
        for _ in 0..16 {
            let Some(Some(Ok(frame))) = stream.next().now_or_never() else {
                return false;
            };
            let decoded = match &frame {
                WsMessage::Text(text) => protocol::codec::decode(text.as_bytes(), Format::Json),
                WsMessage::Binary(bytes) => protocol::codec::decode(bytes, Format::Msgpack),
                WsMessage::Close(_) => return false,
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            };
            if decoded.is_ok_and(|message: ProtocolMessage| message.action() == Some(Action::Close))
            {
                return true;
            }
        }
        false
    }

    /// A frame over `max_frame_bytes` is refused by tungstenite before we see it; say 40009
    /// rather than drop the socket silently (the client would reconnect and try again).
    fn on_read_error(&mut self, error: axum::Error) -> ControlFlow<()> {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let error = error.into_inner();
        let error = error.downcast_ref::<WsError>();
        if matches!(error, Some(WsError::Utf8(_))) {
            // RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection with 1007.
            let flow = self.fatal(Error::NotUtf8);
            self.outbox
                .push(crate::frame::Frame::close_with(1007, "invalid UTF-8"));
            return flow;
        }
        if matches!(error, Some(WsError::Capacity(_))) {
            crate::limits::count_refusal("frame_too_large", "realtime");
            let limit = self.gateway.config().limits.max_frame_bytes;
            return self.fatal(Error::FrameTooLarge { max: limit });
        }
        ControlFlow::Break(())
    }

    async fn on_frame(&mut self, frame: WsMessage) -> ControlFlow<()> {
        // Text frames carry JSON and binary frames msgpack, whatever `format` the client chose.
        let (bytes, format) = match &frame {
            WsMessage::Text(text) => {
                ::metrics::counter!("realtime_bytes_total", "direction" => "in", "format" => "json")
                    .increment(text.len() as u64);
                (text.as_bytes(), Format::Json)
            }
            WsMessage::Binary(bytes) => {
                ::metrics::counter!("realtime_bytes_total", "direction" => "in", "format" => "msgpack")
                    .increment(bytes.len() as u64);
                (&bytes[..], Format::Msgpack)
            }
            WsMessage::Close(_) => return ControlFlow::Break(()),
            WsMessage::Ping(_) | WsMessage::Pong(_) => return ControlFlow::Continue(()),
        };
        if let Some((msg_serial, refusal)) = self.refused_unread(bytes, format) {
            self.drain_pipeline().await;
            self.nack(msg_serial, refusal);
            return ControlFlow::Continue(());
        }
        let decoded = protocol::codec::decode(bytes, format);
        match decoded {
            Ok(message) => self.on_message(message).await,
            Err(error) => self.fatal(Error::MalformedFrame(error.to_string())),
        }
    }

    /// A MESSAGE (or PRESENCE) with many more messages than one publish may hold is NACKed from a skim of
    /// the frame, without building its messages (200,000 × `{}` fit in a 256 KiB msgpack
    /// frame). Only frames that could hold four times the limit are skimmed (a message takes
    /// at least 3 bytes in JSON, `{},`, 1 in msgpack), so an ordinary publish is parsed once;
    /// anything between is decoded and refused by `Gateway::publish`.
    fn refused_unread(&self, bytes: &[u8], format: Format) -> Option<(u64, Error)> {
        let max = self.gateway.config().limits.max_messages_per_publish;
        let least_per_message = match format {
            Format::Json => 3,
            Format::Msgpack => 1,
        };
        if bytes.len() < max.saturating_mul(4 * least_per_message) {
            return None;
        }
        let shape = protocol::codec::shape::frame_shape(bytes, format)?;
        let (Some(action), Some(msg_serial)) = (shape.action, shape.msg_serial) else {
            return None;
        };
        let n = if action == Action::Message as u8 {
            shape.messages.0
        } else if action == Action::Presence as u8 {
            shape.presence.0
        } else if action == Action::Annotation as u8 {
            shape.annotations.0
        } else {
            return None;
        };
        if n <= max {
            return None;
        }
        crate::limits::count_refusal("too_many_messages", "realtime");
        Some((msg_serial, Error::TooManyMessages { n, max }))
    }

    async fn on_message(&mut self, message: ProtocolMessage) -> ControlFlow<()> {
        let action = message.action();
        // Publishes pipeline; anything else waits for their ACKs first, so replies keep
        // msgSerial order and a DETACH or CLOSE comes after what was published before it.
        if !matches!(action, Some(Action::Message | Action::Heartbeat)) {
            self.drain_pipeline().await;
        }
        match action {
            Some(Action::Heartbeat) => {
                self.outbox.reply(&ProtocolMessage {
                    id: message.id,
                    ..ProtocolMessage::new(Action::Heartbeat)
                });
                ControlFlow::Continue(())
            }
            Some(Action::Attach) => self.on_attach(message).await,
            Some(Action::Detach) => self.on_detach(message),
            Some(Action::Message) => self.on_publish(message).await,
            Some(Action::Auth) => self.on_auth(message).await,
            Some(Action::Presence) => self.on_presence(message).await,
            Some(Action::Annotation) => self.on_annotation(message).await,
            Some(Action::Close) => {
                self.ended_cleanly = true;
                self.close_reason = "client_closed";
                self.outbox.reply(&ProtocolMessage::new(Action::Closed));
                ControlFlow::Break(())
            }
            Some(Action::Disconnect) => ControlFlow::Break(()),
            // The client asks for the member set again (ably-js `channel.sync()`).
            Some(Action::Sync) => {
                if let Ok(channel) = self.parse_channel(&message) {
                    if let Some(attachment) = self.attached.get(&self.attachment_key(&channel)) {
                        self.gateway
                            .hub()
                            .resync(&attachment.base, &attachment.slot);
                    }
                }
                ControlFlow::Continue(())
            }
            _ => self.on_unsupported(message),
        }
    }

    /// Actions we do not serve. One that expects an ACK is NACKed, so the client's ACK
    /// accounting (strictly by msgSerial) stays right; anything else is a protocol error.
    fn on_unsupported(&mut self, message: ProtocolMessage) -> ControlFlow<()> {
        let error = Error::UnsupportedAction(message.action);
        match message.msg_serial {
            Some(msg_serial) => {
                self.nack(msg_serial, error);
                ControlFlow::Continue(())
            }
            None => self.fatal(error),
        }
    }

    /// A connection-level ERROR: the client fails the connection, so close it.
    pub(super) fn fatal(&mut self, error: impl Into<ErrorInfo>) -> ControlFlow<()> {
        let error = error.into();
        self.ended_cleanly = true;
        self.close_reason = "protocol_error";
        tracing::debug!(connection_id = %self.id, code = error.code, message = %error.message, "connection error");
        self.outbox
            .reply(&ProtocolMessage::error(Action::Error, error));
        ControlFlow::Break(())
    }
}
