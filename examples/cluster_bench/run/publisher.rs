//! A publisher: paced (open loop) or window-bound (closed loop), timing each ACK.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::{Published, Publisher};
use crate::wire::{action, describe, Format, OutgoingMessage, Payload, Publish, Socket};
use crate::{new_histogram, now_us, DRAIN_TIMEOUT};

/// Publishes until `until`, then waits for the last ACK. Channels round-robin; every publish is
/// its own MESSAGE with the next msgSerial.
pub(super) async fn publish(
    publisher: Publisher,
    socket: Socket,
    acked: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
) -> Published {
    let (mut sink, stream) = socket.split();
    let window = Arc::new(Semaphore::new(publisher.window));
    // Send times by msgSerial, for the ACK latency; at most `window` long.
    let in_flight = Arc::new(Mutex::new(std::collections::VecDeque::<u64>::new()));
    let finished = Arc::new(AtomicBool::new(false));
    let acks = tokio::spawn(read_acks(
        stream,
        publisher.format,
        window.clone(),
        in_flight.clone(),
        acked,
        finished.clone(),
    ));
    let channels = publisher.channel_names.len();
    let mut sent = vec![0u64; channels];
    let mut msg_serial = 0u64;
    // Publishers start a fraction of a millisecond apart, so open-loop sends do not coincide.
    let phase = publisher.index as f64 / publisher.publishers as f64;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failure = None;
    while Instant::now() < publisher.until && failure.is_none() {
        let due = if publisher.rate > 0.0 {
            ticks.tick().await;
            let elapsed = publisher.started.elapsed().as_secs_f64();
            ((elapsed * publisher.rate + phase) as u64).saturating_sub(msg_serial)
        } else {
            // Closed loop: one permit awaited, then whatever else the window has free.
            match window.clone().acquire_owned().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            1 + take_permits(&window, 63) as u64
        };
        for _ in 0..due {
            if publisher.rate > 0.0 {
                // Open loop: a full window means the node stalled; wait, and fall behind.
                match window.clone().acquire_owned().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
            }
            let channel = (msg_serial as usize + publisher.index) % channels;
            let t = now_us();
            in_flight.lock().unwrap().push_back(t);
            let frame = publisher.format.encode(&Publish {
                action: action::MESSAGE,
                channel: &publisher.channel_names[channel],
                msg_serial,
                messages: [OutgoingMessage {
                    name: "bench",
                    data: Payload {
                        p: publisher.index,
                        n: sent[channel],
                        t,
                    },
                }],
            });
            if let Err(error) = sink.feed(frame).await {
                failure = Some(format!("publisher {}: send: {error}", publisher.index));
                break;
            }
            sent[channel] += 1;
            msg_serial += 1;
        }
        if let Err(error) = sink.flush().await {
            failure = Some(format!("publisher {}: flush: {error}", publisher.index));
        }
    }
    // Every publish acknowledged: the whole window is free again.
    let all_acked =
        tokio::time::timeout(DRAIN_TIMEOUT, window.acquire_many(publisher.window as u32)).await;
    if !matches!(all_acked, Ok(Ok(_))) && failure.is_none() {
        failure = Some(format!(
            "publisher {}: not every publish acknowledged",
            publisher.index
        ));
    }
    finished.store(true, Ordering::Release);
    let _ = sink.close().await;
    let (ack_latency, ack_failure) = acks.await.expect("ACK reader");
    for failure in failure.into_iter().chain(ack_failure) {
        failures.lock().unwrap().push(failure);
    }
    Published { sent, ack_latency }
}

fn take_permits(window: &Semaphore, most: usize) -> usize {
    let mut taken = 0;
    while taken < most {
        match window.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        taken += 1;
    }
    taken
}

/// Reads ACKs (msgSerial order, `count` each), frees window permits, records publish → ACK.
async fn read_acks(
    mut stream: SplitStream<Socket>,
    format: Format,
    window: Arc<Semaphore>,
    in_flight: Arc<Mutex<std::collections::VecDeque<u64>>>,
    acked: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
) -> (Histogram<u64>, Option<String>) {
    let mut latency = new_histogram();
    while let Some(frame) = stream.next().await {
        let message = match frame.map_err(|e| e.to_string()).map(|f| format.decode(&f)) {
            Ok(Some(Ok(message))) => message,
            Ok(None) => continue,
            Ok(Some(Err(error))) | Err(error) => {
                if finished.load(Ordering::Acquire) {
                    break;
                }
                window.close();
                return (latency, Some(format!("publisher: {error}")));
            }
        };
        match message.action {
            action::ACK => {
                let count = message.count.unwrap_or(1);
                let now = now_us();
                {
                    let mut in_flight = in_flight.lock().unwrap();
                    for _ in 0..count {
                        if let Some(sent_at) = in_flight.pop_front() {
                            latency.saturating_record(now.saturating_sub(sent_at).max(1));
                        }
                    }
                }
                acked.fetch_add(count, Ordering::Relaxed);
                window.add_permits(count as usize);
            }
            action::HEARTBEAT => {}
            other => {
                window.close();
                let what = if other == action::NACK {
                    "NACK"
                } else {
                    "unexpected action"
                };
                return (
                    latency,
                    Some(format!(
                        "publisher: {what} {other} (msgSerial {:?}): {}",
                        message.msg_serial,
                        describe(&message.error)
                    )),
                );
            }
        }
    }
    (latency, None)
}
