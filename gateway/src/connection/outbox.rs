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

use futures_util::task::AtomicWaker;
use protocol::{Action, ErrorInfo, Format, ProtocolMessage};
use std::task::Poll;
use tokio::sync::Notify;

use crate::frame::Frame;

pub struct Outbox {
    pub format: Format,
    capacity: usize,
    queue: Mutex<VecDeque<Frame>>,
    /// The writer's waker, woken when something is queued into an empty queue (or urgently):
    /// one consumer, so a lock-free slot rather than a `Notify` and its waiter list.
    queued: AtomicWaker,
    /// Something other than a bulk delivery was queued (a reply the client waits on, a message
    /// on a small channel): the writer flushes at once rather than gathering frames for a moment.
    urgent_queued: AtomicBool,
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
            queued: AtomicWaker::new(),
            urgent_queued: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            end_code: std::sync::atomic::AtomicU32::new(0),
            last_words: Mutex::new(None),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
        }
    }

    /// Queues a frame to be written at once. Returns false if the connection is ending or was
    /// just found too slow.
    pub fn push(&self, frame: Frame) -> bool {
        self.enqueue(frame, true)
    }

    /// Queues a delivery from a big fan-out, which the writer may hold a moment to batch.
    pub fn push_bulk(&self, frame: Frame) -> bool {
        self.enqueue(frame, false)
    }

    fn enqueue(&self, frame: Frame, urgent: bool) -> bool {
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

    /// The next queued frame, if any.
    pub(crate) fn pop(&self) -> Option<Frame> {
        self.queue.lock().ok()?.pop_front()
    }

    /// Waits for the next queued frame. Cancel-safe: a frame is only taken when returned.
    pub(crate) async fn recv(&self) -> Frame {
        std::future::poll_fn(|cx| {
            if let Some(frame) = self.pop() {
                return Poll::Ready(frame);
            }
            self.queued.register(cx.waker());
            // Queued between the pop and the registration: no wake is coming for it.
            match self.pop() {
                Some(frame) => Poll::Ready(frame),
                None => Poll::Pending,
            }
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame::encode(&ProtocolMessage::new(Action::Heartbeat), Format::Json).unwrap()
    }

    #[test]
    fn bulk_deliveries_may_wait_but_anything_else_is_urgent() {
        let outbox = Outbox::new(Format::Json, 8);
        assert!(outbox.push_bulk(frame()));
        assert!(!outbox.take_urgent(), "a bulk delivery alone may be held");
        assert!(outbox.push(frame()));
        assert!(outbox.take_urgent());
        assert!(!outbox.take_urgent(), "taken once");
        assert!(outbox.reply(&ProtocolMessage::new(Action::Ack)));
        assert!(outbox.take_urgent(), "replies are urgent");
    }

    #[test]
    fn a_full_queue_ends_the_connection_and_order_is_kept() {
        let outbox = Arc::new(Outbox::new(Format::Json, 2));
        let mut receiver = outbox.receiver();
        assert!(outbox.push_bulk(frame()));
        assert!(outbox.reply(&ProtocolMessage::new(Action::Ack)));
        assert!(!outbox.push_bulk(frame()), "third frame over capacity 2");
        assert!(outbox.is_ending());
        assert_eq!(
            outbox.end_code(),
            protocol::ErrorCode::ContinuityLost.code()
        );
        let first = receiver.try_recv().unwrap();
        let second = receiver.try_recv().unwrap();
        assert!(receiver.try_recv().is_err());
        let action = |frame: Frame| -> Option<Action> {
            match frame.into_ws() {
                axum::extract::ws::Message::Text(text) => {
                    protocol::codec::decode::<ProtocolMessage>(text.as_bytes(), Format::Json)
                        .unwrap()
                        .action()
                }
                other => panic!("expected a text frame, got {other:?}"),
            }
        };
        assert_eq!(action(first), Some(Action::Heartbeat));
        assert_eq!(action(second), Some(Action::Ack));
    }

    #[test]
    fn an_emptied_queue_gives_its_memory_back() {
        let outbox = Outbox::new(Format::Json, 64);
        for _ in 0..40 {
            outbox.push(frame());
        }
        outbox.shrink_if_empty();
        assert!(
            outbox.queue.lock().unwrap().capacity() >= 40,
            "not empty: kept"
        );
        while outbox.pop().is_some() {}
        outbox.shrink_if_empty();
        assert_eq!(outbox.queue.lock().unwrap().capacity(), 0);
    }
}
