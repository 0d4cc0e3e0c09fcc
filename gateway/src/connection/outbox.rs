//! A connection's bounded outgoing queue, shared with the hub.
//!
//! Everything for one connection (replies and deliveries alike) goes through one bounded queue,
//! so order is preserved and memory per connection is capped. Pushing never waits: a full queue
//! means the client cannot keep up, and it is disconnected rather than buffered without end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use protocol::{Action, ErrorInfo, Format, ProtocolMessage};
use tokio::sync::{mpsc, Notify};

use crate::frame::Frame;

pub struct Outbox {
    pub format: Format,
    tx: mpsc::Sender<Frame>,
    /// Set once: the connection is going away and `last_words` jumps the queue.
    ending: AtomicBool,
    end_code: std::sync::atomic::AtomicU32,
    last_words: Mutex<Option<Frame>>,
    pub(crate) wake_writer: Notify,
    pub(crate) wake_reader: Notify,
}

impl Outbox {
    pub fn new(format: Format, capacity: usize) -> (Outbox, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(capacity);
        let outbox = Outbox {
            format,
            tx,
            ending: AtomicBool::new(false),
            end_code: std::sync::atomic::AtomicU32::new(0),
            last_words: Mutex::new(None),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
        };
        (outbox, rx)
    }

    /// Queues a frame. Returns false if the connection is ending or was just found too slow.
    pub fn push(&self, frame: Frame) -> bool {
        if self.ending.load(Ordering::Relaxed) {
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.is_ending() {
                    ::metrics::counter!("realtime_slow_consumer_disconnects_total").increment(1);
                }
                self.end_with(
                    Action::Disconnected,
                    protocol::ErrorCode::ContinuityLost
                        .info("slow consumer: outbound queue full, disconnecting"),
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
