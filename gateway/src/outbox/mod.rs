//! A connection's bounded outgoing queue, shared with the hub.
//!
//! Everything for one connection (replies and deliveries alike) goes through one queue, so
//! order is preserved. Pushing never waits. What bounds it depends on who made the frame:
//!
//! - Deliveries (other connections' messages and presence) are the slow-consumer budget:
//!   `OutboundQueue::bytes` of them queued, or a frame unsent for `OutboundQueue::age`, and the
//!   client is disconnected (80020) rather than buffered without end.
//! - Replies to the client's own requests (ACK/NACK, ATTACHED and its replay and SYNC, DETACHED,
//!   HEARTBEAT, errors) and echoes of its own messages never count against that budget: the
//!   client makes them as fast as it sends, so when they pile up (`REPLY_HIGH_WATER_BYTES`) the
//!   connection's reader stops reading until the writer has drained them below
//!   `REPLY_LOW_WATER_BYTES`. Backpressure, not disconnect: a client that sends 10,000
//!   HEARTBEATs in a burst and keeps reading gets 10,000 replies, and its queue holds at most
//!   the high-water mark plus what one request makes. Echoes belong here because a publisher
//!   echoing its own burst would otherwise be cut off for publishing fast; the pause throttles
//!   its publishes, and with them its echoes.
//! - The age bound covers both: a frame of either kind unsent that long means the client is not
//!   reading at all. It is checked when anything is queued and while the writer is blocked on the
//!   socket (see `Writer`), so a silent client is cut off even when nothing more is sent to it.
//!
//! The queue is a `VecDeque` that allocates on first use and is given back when the writer finds
//! it empty on its keep-alive tick, so an idle connection holds no queue memory at all (a tokio
//! channel keeps a block of slots per connection).

pub(crate) mod coalesce;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use protocol::{Action, ErrorInfo, Format, ProtocolMessage};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::OutboundQueue;
use crate::frame::Frame;

/// Reply bytes queued (each frame counted with `ENTRY_OVERHEAD_BYTES`) at which the reader
/// stops reading. 64 KiB is ~700 HEARTBEAT replies or ~400 ACKs: enough that a client sending in
/// bursts is rarely paused at all, small enough that 10,000 connections doing it hold little.
pub(crate) const REPLY_HIGH_WATER_BYTES: usize = 64 * 1024;
/// Reply bytes below which a paused reader reads again: a quarter, so a fast sender is woken
/// once per ~48 KiB of replies written rather than once per frame.
pub(crate) const REPLY_LOW_WATER_BYTES: usize = 16 * 1024;
/// What a queued frame costs beyond its bytes (its queue slot and buffer header): a 30-byte
/// HEARTBEAT reply takes ~100 bytes of memory.
const ENTRY_OVERHEAD_BYTES: usize = 64;

pub struct Outbox {
    pub format: Format,
    budget: OutboundQueue,
    queue: Mutex<Queue>,
    /// The writer's waker, woken when something is queued into an empty queue (or urgently):
    /// one consumer, so a lock-free slot rather than a `Notify` and its waiter list.
    queued: AtomicWaker,
    /// Something other than a bulk delivery was queued (a reply the client waits on, a message
    /// on a small channel): the writer flushes at once rather than gathering frames for a moment.
    urgent_queued: AtomicBool,
    /// Set once: the connection is going away and `last_words` jumps the queue.
    ending: AtomicBool,
    end_code: AtomicU32,
    last_words: Mutex<Option<Frame>>,
    pub(crate) wake_writer: Notify,
    /// The connection is ending, or a paused reader may read again (`Outbox::reader_paused`
    /// tells which).
    pub(crate) wake_reader: Notify,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Bytes of the queued deliveries: the slow-consumer budget.
    delivery_bytes: usize,
    /// Bytes (with `ENTRY_OVERHEAD_BYTES` each) of the queued replies: what pauses the reader.
    reply_bytes: usize,
    /// The reader stopped reading until the replies drain (set by it, cleared by the writer).
    reader_paused: bool,
}

/// A queued frame.
pub(crate) struct Entry {
    pub(crate) frame: Frame,
    /// When it was queued (for a delivery, when its fan-out began).
    pub(crate) at: Instant,
    /// Counted in `delivery_bytes`, else in `reply_bytes`.
    delivery: bool,
    /// For a MESSAGE frame, `coalesce::channel_tag` of its channel (never 0); 0 otherwise.
    pub(crate) channel_tag: u64,
}

/// What the writer took off the queue, and what it knows about what is behind it.
pub(crate) struct Popped {
    pub(crate) entry: Entry,
    /// The next queued frame is a MESSAGE with the same channel tag.
    pub(crate) run: bool,
    /// Delivery bytes still queued.
    pub(crate) backlog_bytes: usize,
}

/// How the hub's fan-out queues one delivery.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// When the fan-out began (one clock read per fan-out, not per subscriber).
    pub at: Instant,
    /// From a big fan-out: the writer may hold it a moment to batch.
    pub bulk: bool,
    /// The subscriber's own publish coming back (echo): counted with its replies.
    pub own: bool,
    /// `coalesce::channel_tag` of the channel for a MESSAGE frame, 0 for anything else.
    pub channel_tag: u64,
}

impl Outbox {
    pub fn new(format: Format, budget: OutboundQueue) -> Outbox {
        Outbox {
            format,
            budget,
            queue: Mutex::new(Queue::default()),
            queued: AtomicWaker::new(),
            urgent_queued: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            end_code: AtomicU32::new(0),
            last_words: Mutex::new(None),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
        }
    }

    pub(crate) fn budget(&self) -> OutboundQueue {
        self.budget
    }

    /// Queues a reply (or anything the client's own requests made) to be written at once.
    /// Returns false if the connection is ending or was just found too slow.
    pub fn push(&self, frame: Frame) -> bool {
        let entry = Entry {
            frame,
            at: Instant::now(),
            delivery: false,
            channel_tag: 0,
        };
        self.enqueue(entry, true)
    }

    /// Queues a delivery from the hub's fan-out. Returns false if the connection is ending or
    /// was just found too slow.
    pub fn deliver(&self, frame: Frame, delivery: Delivery) -> bool {
        let entry = Entry {
            frame,
            at: delivery.at,
            delivery: !delivery.own,
            channel_tag: delivery.channel_tag,
        };
        self.enqueue(entry, !delivery.bulk)
    }

    fn enqueue(&self, entry: Entry, urgent: bool) -> bool {
        if self.ending.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut queue) = self.queue.lock() else {
            return false;
        };
        // The oldest unsent frame is the front one (or one the writer is blocked on, which its
        // own deadline covers).
        let too_old = queue
            .entries
            .front()
            .is_some_and(|front| entry.at.saturating_duration_since(front.at) > self.budget.age);
        let len = entry.frame.len();
        // A delivery into a queue holding none is always taken, so a budget below one frame
        // cannot cut off a client that reads.
        let too_much = entry.delivery
            && queue.delivery_bytes > 0
            && queue.delivery_bytes + len > self.budget.bytes;
        if too_old || too_much {
            drop(queue);
            self.slow_consumer(if too_old {
                "slow consumer: a frame waited too long to be sent, disconnecting"
            } else {
                "slow consumer: outbound queue full, disconnecting"
            });
            return false;
        }
        if entry.delivery {
            queue.delivery_bytes += len;
        } else {
            queue.reply_bytes += len + ENTRY_OVERHEAD_BYTES;
        }
        let was_empty = queue.entries.is_empty();
        queue.entries.push_back(entry);
        if urgent {
            // Under the lock: the writer never takes this frame without seeing the flag.
            self.urgent_queued.store(true, Ordering::Release);
        }
        drop(queue);
        // An urgent frame also ends a writer's hold.
        if was_empty || urgent {
            self.queued.wake();
        }
        true
    }

    /// Ends the connection as a slow consumer (DISCONNECTED 80020), counted once.
    pub(crate) fn slow_consumer(&self, why: &'static str) {
        let error = protocol::ErrorCode::SlowConsumer.info(why);
        if self.end(Action::Disconnected, error) {
            ::metrics::counter!("realtime_slow_consumer_disconnects_total").increment(1);
        }
    }

    /// Whether anything but bulk deliveries was queued since the last call.
    pub(crate) fn take_urgent(&self) -> bool {
        self.urgent_queued.swap(false, Ordering::AcqRel)
    }

    /// Waits until something urgent is queued (the writer's hold races this against its timer).
    pub(crate) async fn urgent(&self) {
        std::future::poll_fn(|cx| {
            if self.urgent_queued.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.queued.register(cx.waker());
            // Queued between the check and the registration: no wake is coming for it.
            if self.urgent_queued.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }

    /// The next queued frame, if any. Only the writer (or a test's `Receiver`) takes frames,
    /// so what `peek_run` saw at the front is still there for the next `pop`.
    pub(crate) fn pop(&self) -> Option<Popped> {
        let mut queue = self.queue.lock().ok()?;
        let entry = queue.entries.pop_front()?;
        let len = entry.frame.len();
        let mut resume_reader = false;
        if entry.delivery {
            queue.delivery_bytes -= len;
        } else {
            queue.reply_bytes -= len + ENTRY_OVERHEAD_BYTES;
            if queue.reader_paused && queue.reply_bytes <= REPLY_LOW_WATER_BYTES {
                queue.reader_paused = false;
                resume_reader = true;
            }
        }
        let run = entry.channel_tag != 0
            && queue
                .entries
                .front()
                .is_some_and(|next| next.channel_tag == entry.channel_tag);
        let backlog_bytes = queue.delivery_bytes;
        drop(queue);
        if resume_reader {
            self.wake_reader.notify_one();
        }
        Some(Popped {
            entry,
            run,
            backlog_bytes,
        })
    }

    /// The front frame (shared, not taken) if it is a MESSAGE with this channel tag and at most
    /// `max_bytes` long: the next candidate for merging into a run.
    pub(crate) fn peek_run(&self, channel_tag: u64, max_bytes: usize) -> Option<Frame> {
        let queue = self.queue.lock().ok()?;
        queue
            .entries
            .front()
            .filter(|next| next.channel_tag == channel_tag && next.frame.len() <= max_bytes)
            .map(|next| next.frame.clone())
    }

    /// Waits for the next queued frame. Cancel-safe: a frame is only taken when returned.
    pub(crate) async fn recv(&self) -> Popped {
        std::future::poll_fn(|cx| {
            if let Some(popped) = self.pop() {
                return Poll::Ready(popped);
            }
            self.queued.register(cx.waker());
            // Queued between the pop and the registration: no wake is coming for it.
            match self.pop() {
                Some(popped) => Poll::Ready(popped),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Called by the reader after each frame it handled: if the replies queued for this client
    /// are over the high-water mark, marks the reader paused and returns true; it then reads
    /// nothing until the writer drains them below the low-water mark and wakes it.
    pub(crate) fn pause_reader_if_behind(&self) -> bool {
        let Ok(mut queue) = self.queue.lock() else {
            return false;
        };
        if queue.reply_bytes > REPLY_HIGH_WATER_BYTES {
            queue.reader_paused = true;
        }
        queue.reader_paused
    }

    /// Whether the reader is (still) paused.
    pub(crate) fn reader_paused(&self) -> bool {
        self.queue.lock().is_ok_and(|queue| queue.reader_paused)
    }

    /// Gives the queue's memory back if it is empty (called by the writer when idle).
    pub(crate) fn shrink_if_empty(&self) {
        if let Ok(mut queue) = self.queue.lock() {
            if queue.entries.is_empty() && queue.entries.capacity() > 0 {
                queue.entries = VecDeque::new();
            }
        }
    }

    /// A handle that reads this outbox's queue (tests stand in for the writer with it).
    pub fn receiver(self: &Arc<Self>) -> Receiver {
        Receiver(self.clone())
    }

    /// Encodes and queues a reply in this connection's format.
    pub fn reply(&self, message: &ProtocolMessage) -> bool {
        match Frame::encode(message, self.format) {
            Ok(frame) => self.push(frame),
            Err(error) => {
                tracing::warn!(%error, "could not encode a reply");
                false
            }
        }
    }

    /// Ends the connection now: the writer sends this frame ahead of anything queued, then
    /// closes the socket. Idempotent; the first reason wins.
    pub fn end_with(&self, action: Action, error: ErrorInfo) {
        self.end(action, error);
    }

    /// `end_with`, saying whether this call was the one that ended it.
    fn end(&self, action: Action, error: ErrorInfo) -> bool {
        if self.ending.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.end_code.store(error.code, Ordering::Release);
        let frame = Frame::encode(&ProtocolMessage::error(action, error), self.format).ok();
        if let Ok(mut slot) = self.last_words.lock() {
            *slot = frame;
        }
        self.wake_writer.notify_one();
        self.wake_reader.notify_one();
        true
    }

    /// Queues a close: the socket closes after everything queued before it is written.
    pub fn close_after_queue(&self) {
        if !self.push(Frame::close()) {
            self.mark_ended();
        }
    }

    /// The writer is gone; nothing more can be sent.
    pub(crate) fn mark_ended(&self) {
        self.ending.store(true, Ordering::Release);
        self.wake_reader.notify_one();
    }

    /// The error code the connection was ended with by `end_with` (0 if it was not).
    pub(crate) fn end_code(&self) -> u32 {
        self.end_code.load(Ordering::Acquire)
    }

    pub fn is_ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    pub(crate) fn take_last_words(&self) -> Option<Frame> {
        self.last_words.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Reads an outbox's queue without a writer (tests).
pub struct Receiver(Arc<Outbox>);

/// The queue was empty.
#[derive(Debug)]
pub struct Empty;

impl Receiver {
    pub fn try_recv(&mut self) -> Result<Frame, Empty> {
        self.0.pop().map(|popped| popped.entry.frame).ok_or(Empty)
    }

    pub async fn recv(&mut self) -> Option<Frame> {
        Some(self.0.recv().await.entry.frame)
    }
}

#[cfg(test)]
mod tests;
