//! A connection's bounded outgoing queue, shared with the hub.
//!
//! Everything for one connection (replies and deliveries alike) goes through one bounded queue,
//! so order is preserved and memory per connection is capped. Pushing never waits: a full queue
//! means the client cannot keep up, and it is disconnected rather than buffered without end.
//!
//! The queue is a `VecDeque` that allocates on first use and is given back when the writer finds
//! it empty on its keep-alive tick, so an idle connection holds no queue memory at all (a tokio
//! channel keeps a block of slots per connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use protocol::{Action, ErrorInfo, Format, ProtocolMessage};
use tokio::sync::Notify;

use crate::frame::Frame;

pub struct Outbox {
    pub format: Format,
    capacity: usize,
    queue: Mutex<VecDeque<Frame>>,
    /// Something was queued into an empty queue (a permit is kept if the writer is busy).
    queued: Notify,
    /// Set once: the connection is going away and `last_words` jumps the queue.
    ending: AtomicBool,
    end_code: std::sync::atomic::AtomicU32,
    last_words: Mutex<Option<Frame>>,
    pub(crate) wake_writer: Notify,
    pub(crate) wake_reader: Notify,
}

impl Outbox {
    pub fn new(format: Format, capacity: usize) -> Outbox {
        Outbox {
            format,
            capacity,
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            ending: AtomicBool::new(false),
            end_code: std::sync::atomic::AtomicU32::new(0),
            last_words: Mutex::new(None),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
        }
    }

    /// Queues a frame. Returns false if the connection is ending or was just found too slow.
    pub fn push(&self, frame: Frame) -> bool {
        if self.ending.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut queue) = self.queue.lock() else {
            return false;
        };
        if queue.len() >= self.capacity {
            drop(queue);
            if !self.is_ending() {
                ::metrics::counter!("realtime_slow_consumer_disconnects_total").increment(1);
            }
            self.end_with(
                Action::Disconnected,
                protocol::ErrorCode::ContinuityLost
                    .info("slow consumer: outbound queue full, disconnecting"),
            );
            return false;
        }
        let was_empty = queue.is_empty();
        queue.push_back(frame);
        drop(queue);
        if was_empty {
            self.queued.notify_one();
        }
        true
    }

    /// The next queued frame, if any.
    pub(crate) fn pop(&self) -> Option<Frame> {
        self.queue.lock().ok()?.pop_front()
    }

    /// Waits for the next queued frame. Cancel-safe: a frame is only taken when returned.
    pub(crate) async fn recv(&self) -> Frame {
        loop {
            if let Some(frame) = self.pop() {
                return frame;
            }
            self.queued.notified().await;
        }
    }

    /// Gives the queue's memory back if it is empty (called by the writer when idle).
    pub(crate) fn shrink_if_empty(&self) {
        if let Ok(mut queue) = self.queue.lock() {
            if queue.is_empty() && queue.capacity() > 0 {
                *queue = VecDeque::new();
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
        if self.ending.swap(true, Ordering::AcqRel) {
            return;
        }
        self.end_code.store(error.code, Ordering::Release);
        let frame = Frame::encode(&ProtocolMessage::error(action, error), self.format).ok();
        if let Ok(mut slot) = self.last_words.lock() {
            *slot = frame;
        }
        self.wake_writer.notify_one();
        self.wake_reader.notify_one();
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
        self.0.pop().ok_or(Empty)
    }

    pub async fn recv(&mut self) -> Option<Frame> {
        Some(self.0.recv().await)
    }
}
