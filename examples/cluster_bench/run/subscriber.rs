//! A subscriber: checks every delivery arrives once, in per-publisher order, and times it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Progress, Received};
use crate::wire::{action, describe, Format, IncomingMessage, Socket};
use crate::{new_histogram, now_us};

pub(super) async fn receive(
    mut socket: Socket,
    format: Format,
    publishers: usize,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut received = Received {
        delivered: 0,
        next: vec![0; publishers],
        gaps: 0,
        duplicated: 0,
        latency: new_histogram(),
        failure: None,
    };
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let message = match frame {
            Some(Ok(frame)) => match format.decode(&frame) {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    received.failure = Some(format!("subscriber: {error}"));
                    break;
                }
                None => continue,
            },
            Some(Err(error)) => {
                received.failure = Some(format!("subscriber socket: {error}"));
                break;
            }
            None => {
                received.failure = Some("subscriber socket closed".into());
                break;
            }
        };
        match message.action {
            action::MESSAGE => {
                let now = now_us();
                let messages = message.messages.unwrap_or_default();
                for IncomingMessage { data } in &messages {
                    received
                        .latency
                        .saturating_record(now.saturating_sub(data.t).max(1));
                    let Some(next) = received.next.get_mut(data.p) else {
                        received.failure = Some(format!("unknown publisher {}", data.p));
                        continue;
                    };
                    if data.n < *next {
                        received.duplicated += 1;
                    } else {
                        received.gaps += data.n - *next;
                        *next = data.n + 1;
                    }
                }
                received.delivered += messages.len() as u64;
                progress
                    .delivered
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
            }
            action::HEARTBEAT => {}
            other => {
                received.failure = Some(format!(
                    "subscriber got action {other}: {}",
                    describe(&message.error)
                ));
                break;
            }
        }
    }
    if received.failure.is_some() && !*stop.borrow() {
        progress.broken_subscribers.fetch_add(1, Ordering::Relaxed);
    }
    received
}
