//! The writer task: drains a connection's queue onto the socket, many frames per flush, and
//! keeps the link visibly alive when there is nothing to say.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::time::Instant;

use super::outbox::Outbox;
use crate::frame::Frame;

pub(crate) struct Writer {
    pub sink: SplitSink<WebSocket, WsMessage>,
    pub outbox: Arc<Outbox>,
    /// Sent every `idle_interval` if the client asked for protocol heartbeats; a WebSocket ping
    /// goes too, so a dead peer shows up as silence on the read side.
    pub heartbeat: Option<Frame>,
    pub idle_interval: Duration,
    pub batch: usize,
    pub min_flush_interval: Duration,
    pub last_flush: Option<Instant>,
}

impl Writer {
    pub(crate) async fn run(mut self) {
        // A HEARTBEAT (or ping) goes out every interval, busy or not: skipping it after a write
        // would let the client's silence reach almost two intervals, past what it waits
        // (maxIdleInterval + realtimeRequestTimeout). While busy it is one small frame per
        // interval, and a client that only listens sends nothing else: its pongs are what keep
        // the reader's idle timer from firing. One timer, no clock read per write.
        let mut tick =
            tokio::time::interval_at(Instant::now() + self.idle_interval, self.idle_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wrote_since_tick = false;
        loop {
            tokio::select! {
                biased;
                _ = self.outbox.wake_writer.notified() => {
                    if let Some(frame) = self.outbox.take_last_words() {
                        let _ = self.sink.send(frame.into_ws()).await;
                    }
                    break;
                }
                frame = self.outbox.recv() => {
                    match self.write_batch(frame).await {
                        Ok(Flow::Continue) => wrote_since_tick = true,
                        Ok(Flow::Closed) | Err(_) => break,
                    }
                }
                _ = tick.tick() => {
                    if self.keep_alive().await.is_err() {
                        break;
                    }
                    if !wrote_since_tick {
                        self.outbox.shrink_if_empty();
                    }
                    wrote_since_tick = false;
                }
            }
        }
        let _ = self.sink.close().await;
        // The reader may be waiting on a socket nobody writes to any more.
        self.outbox.mark_ended();
    }

    /// A WebSocket ping, preceded by a protocol HEARTBEAT when the client asked for them
    /// (browsers cannot see pings).
    async fn keep_alive(&mut self) -> Result<(), axum::Error> {
        if let Some(heartbeat) = self.heartbeat.clone() {
            self.sink.feed(heartbeat.into_ws()).await?;
        }
        self.sink.send(WsMessage::Ping(Default::default())).await
    }

    /// Feeds the frame and whatever else is already queued (up to a batch), then flushes once;
    /// if the last flush was under `min_flush_interval` ago and only bulk deliveries are
    /// waiting, first waits out the rest of it and takes what arrived meanwhile. A close frame
    /// in the queue ends the connection after everything queued before it.
    async fn write_batch(&mut self, first: Frame) -> Result<Flow, axum::Error> {
        let mut next = Some(first);
        let mut fed = 0;
        // Urgent batches neither wait nor read the clock (most batches on small channels).
        let urgent = self.outbox.take_urgent();
        let hold_until = if urgent {
            None
        } else {
            self.last_flush
                .map(|at| at + self.min_flush_interval)
                .filter(|until| *until > Instant::now())
        };
        let mut held = hold_until.is_none();
        loop {
            while let Some(frame) = next.take() {
                let message = frame.into_ws();
                let closing = matches!(message, WsMessage::Close(_));
                self.sink.feed(message).await?;
                if closing {
                    self.sink.flush().await?;
                    return Ok(Flow::Closed);
                }
                fed += 1;
                if fed < self.batch {
                    next = self.outbox.pop();
                }
            }
            if held || fed >= self.batch {
                break;
            }
            held = true;
            if let Some(until) = hold_until {
                // Boxed: a timer inline would sit in every idle connection's writer.
                let hold = Box::pin(tokio::time::sleep_until(until));
                tokio::select! {
                    biased;
                    // Ending: flush what was fed and let the loop send the last words.
                    _ = self.outbox.wake_writer.notified() => {
                        self.outbox.wake_writer.notify_one();
                        break;
                    }
                    _ = hold => {}
                    _ = self.outbox.urgent() => {}
                }
            }
            next = self.outbox.pop();
        }
        self.sink.flush().await?;
        if !urgent {
            self.last_flush = Some(Instant::now());
        }
        Ok(Flow::Continue)
    }
}

enum Flow {
    Continue,
    Closed,
}
