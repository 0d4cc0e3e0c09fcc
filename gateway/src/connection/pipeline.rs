//! Pipelined publishes: a MESSAGE is handed to the bus in frame order and its ACK waits here,
//! so the read loop goes on reading while Redis stores it. ACKs and NACKs leave strictly in
//! msgSerial order: only the oldest publish is awaited, and any other reply carrying a
//! msgSerial (a refusal, an operation, PRESENCE, ANNOTATION) first drains what is pending.

use std::collections::VecDeque;
use std::future::Future;
use std::task::{ready, Poll};

use futures_util::FutureExt as _;
use protocol::message::PublishResult;
use protocol::{Action, ProtocolMessage};

use super::Connection;
use crate::backend::{self, Ticket};
use crate::hub::Serials;
use crate::publish::{Receipt, Submitted};

/// Most publishes one connection may have in flight; beyond it the read loop stops reading
/// until the oldest is answered (backpressure, not an error).
pub(super) const MAX_PIPELINED: usize = 64;

/// A publish handed to the bus, waiting for its ACK.
pub(super) struct Pending {
    msg_serial: u64,
    ticket: Ticket,
    submitted: Submitted,
}

/// The oldest pending publish once its ticket resolves (taken off the queue then; dropping the
/// future before that leaves it queued).
pub(super) fn oldest_settled(
    pipeline: &mut VecDeque<Pending>,
) -> impl Future<Output = (u64, Submitted, backend::Result<Serials>)> + '_ {
    std::future::poll_fn(move |cx| {
        let Some(front) = pipeline.front_mut() else {
            return Poll::Pending;
        };
        let stored = ready!(front.ticket.as_mut().poll(cx));
        let Pending {
            msg_serial,
            submitted,
            ..
        } = pipeline.pop_front().expect("front exists");
        Poll::Ready((msg_serial, submitted, stored))
    })
}

impl Connection {
    /// Queues a submitted publish for its ACK; answered at once when nothing is ahead of it and
    /// it is already stored (the in-memory bus).
    pub(super) fn pipeline_publish(
        &mut self,
        msg_serial: u64,
        mut ticket: Ticket,
        submitted: Submitted,
    ) {
        if self.pipeline.is_empty() {
            if let Some(stored) = (&mut ticket).now_or_never() {
                return self.answer(msg_serial, submitted, stored);
            }
        }
        self.pipeline.push_back(Pending {
            msg_serial,
            ticket,
            submitted,
        });
    }

    /// Answers the publish that settled, and every one behind it that is already stored, with
    /// one ACK for consecutive successes (RTN7: `count` and a result per message).
    pub(super) fn on_settled(
        &mut self,
        msg_serial: u64,
        submitted: Submitted,
        stored: backend::Result<Serials>,
    ) {
        let mut first = msg_serial;
        let mut results = Vec::new();
        let mut next = Some((msg_serial, submitted, stored));
        while let Some((serial, submitted, stored)) = next.take() {
            match self.gateway.settle(&self.principal, submitted, stored) {
                Ok(receipt) => results.push(result_of(receipt)),
                Err(error) => {
                    self.ack(first, std::mem::take(&mut results));
                    self.nack(serial, error);
                    first = serial + 1;
                }
            }
            let ready = self
                .pipeline
                .front_mut()
                .and_then(|front| (&mut front.ticket).now_or_never());
            if let Some(stored) = ready {
                let pending = self.pipeline.pop_front().expect("front exists");
                next = Some((pending.msg_serial, pending.submitted, stored));
            }
        }
        self.ack(first, results);
    }

    /// Waits for every pending publish and answers it: before any other reply that carries a
    /// msgSerial.
    pub(super) async fn drain_pipeline(&mut self) {
        while let Some(pending) = self.pipeline.pop_front() {
            let stored = pending.ticket.await;
            self.answer(pending.msg_serial, pending.submitted, stored);
        }
    }

    fn answer(&mut self, msg_serial: u64, submitted: Submitted, stored: backend::Result<Serials>) {
        match self.gateway.settle(&self.principal, submitted, stored) {
            Ok(receipt) => self.ack(msg_serial, vec![result_of(receipt)]),
            Err(error) => self.nack(msg_serial, error),
        }
    }

    /// One ACK for `results.len()` publishes from `msg_serial` on (none: nothing sent).
    pub(super) fn ack(&self, msg_serial: u64, results: Vec<PublishResult>) {
        if results.is_empty() {
            return;
        }
        self.outbox.reply(&ProtocolMessage {
            msg_serial: Some(msg_serial),
            count: Some(results.len() as _),
            res: Some(results),
            ..ProtocolMessage::new(Action::Ack)
        });
    }
}

pub(super) fn result_of(receipt: Receipt) -> PublishResult {
    PublishResult {
        serials: receipt.serials,
    }
}
