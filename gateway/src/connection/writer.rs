//! The writer task: drains a connection's queue onto the socket, many frames per flush, and
//! keeps the link visibly alive when there is nothing to say.
//!
//! A socket write that cannot finish at once (the client is not reading) races the outbox's age
//! bound, counted from the oldest frame of the batch: a client that stops reading is cut off as a
//! slow consumer (80020) even when nothing more is queued for it. The timer for that is only
//! set up when a write blocks. A connection whose writes block, or that has a backlog of
//! deliveries, gets consecutive MESSAGE frames of one channel merged (`coalesce`).

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::time::Instant;

use crate::frame::Frame;
use crate::outbox::coalesce::{self, Run};
use crate::outbox::{Outbox, Popped};

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
    /// The last socket write had to wait for the client: it is behind.
    pub blocked: bool,
}

/// How long the last words and the close may take: `serve` gives the writer 5 s in all.
const GOODBYE: Duration = Duration::from_secs(2);

/// The connection is over: the socket failed, or the client was found too slow.
struct Stopped;

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
                _ = self.outbox.wake_writer.notified() => break,
                popped = self.outbox.recv() => {
                    match self.write_batch(popped).await {
                        Ok(ControlFlow::Continue(())) => wrote_since_tick = true,
                        Ok(ControlFlow::Break(())) | Err(Stopped) => break,
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
        // Ended by `Outbox::end_with` (here or elsewhere): its frame goes ahead of anything
        // queued. Bounded, like the close: a client that reads nothing would hold them forever.
        if let Some(frame) = self.outbox.take_last_words() {
            let _ = tokio::time::timeout(GOODBYE, self.sink.send(frame.into_ws())).await;
        }
        let _ = tokio::time::timeout(GOODBYE, self.sink.close()).await;
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
    async fn write_batch(&mut self, first: Popped) -> Result<ControlFlow<()>, Stopped> {
        // The first frame is the oldest unsent one until the flush is done.
        let deadline = first.entry.at + self.outbox.budget().age;
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
        self.blocked = false;
        loop {
            while let Some(popped) = next.take() {
                let message = self.coalesce(popped)?.into_ws();
                let closing = matches!(message, WsMessage::Close(_));
                self.write(deadline, Write::Feed(message)).await?;
                if closing {
                    self.write(deadline, Write::Flush).await?;
                    return Ok(ControlFlow::Break(()));
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
        self.write(deadline, Write::Flush).await?;
        if !urgent {
            self.last_flush = Some(Instant::now());
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The frame to write for what was popped: merged with the MESSAGE frames of the same channel
    /// queued right behind it when this connection is behind (see `coalesce`).
    fn coalesce(&mut self, popped: Popped) -> Result<Frame, Stopped> {
        let behind = self.blocked || popped.backlog_bytes >= coalesce::LAGGING_BACKLOG_BYTES;
        if !popped.run || !behind {
            return Ok(popped.entry.frame);
        }
        let tag = popped.entry.channel_tag;
        let mut run = match Run::start(popped.entry.frame, self.outbox.format) {
            Ok(run) => run,
            Err(frame) => return Ok(frame),
        };
        while let Some(next) = self.outbox.peek_run(
            tag,
            coalesce::MAX_MERGED_FRAME_BYTES.saturating_sub(run.bytes()),
        ) {
            if !run.push(&next) {
                break;
            }
            // Only this task takes frames: the front is still the one just merged.
            self.outbox.pop();
        }
        run.finish().map_err(|error| {
            // Never seen: these frames were encoded in this format before. The merged ones are
            // off the queue, so say so and let the client resume from its last channelSerial.
            tracing::error!(%error, "could not encode merged messages");
            self.outbox.end_with(
                protocol::Action::Disconnected,
                crate::error::Error::EncodeFailed.info(),
            );
            Stopped
        })
    }

    /// One socket write. If it cannot finish at once, the client is not reading: it may take
    /// until `deadline`, and past it the client is a slow consumer.
    async fn write(&mut self, deadline: Instant, write: Write) -> Result<(), Stopped> {
        let outcome = match write {
            Write::Feed(message) => {
                within(deadline, self.sink.feed(message), &mut self.blocked).await
            }
            Write::Flush => within(deadline, self.sink.flush(), &mut self.blocked).await,
        };
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(Stopped),
            None => {
                self.outbox
                    .slow_consumer("slow consumer: the client stopped reading, disconnecting");
                Err(Stopped)
            }
        }
    }
}

enum Write {
    Feed(WsMessage),
    Flush,
}

/// Runs `write` to the end, or until `deadline` if it does not finish at once (then also sets
/// `blocked`): `None` when the deadline passed first. The timer exists only in that case.
async fn within<F: Future>(deadline: Instant, write: F, blocked: &mut bool) -> Option<F::Output> {
    let mut write = std::pin::pin!(write);
    let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = write.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        *blocked = true;
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}
