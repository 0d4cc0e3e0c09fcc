use std::time::Duration;

use super::*;

fn frame() -> Frame {
    Frame::encode(&ProtocolMessage::new(Action::Heartbeat), Format::Json).unwrap()
}

fn delivery(bulk: bool) -> Delivery {
    Delivery {
        at: Instant::now(),
        bulk,
        own: false,
        channel_tag: 0,
    }
}

fn budget(bytes: usize) -> OutboundQueue {
    OutboundQueue {
        bytes,
        age: Duration::from_secs(10),
    }
}

fn action(frame: Frame) -> Option<Action> {
    match frame.into_ws() {
        axum::extract::ws::Message::Text(text) => {
            protocol::codec::decode::<ProtocolMessage>(text.as_bytes(), Format::Json)
                .unwrap()
                .action()
        }
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[test]
fn bulk_deliveries_may_wait_but_anything_else_is_urgent() {
    let outbox = Outbox::new(Format::Json, budget(1 << 20));
    assert!(outbox.deliver(frame(), delivery(true)));
    assert!(!outbox.take_urgent(), "a bulk delivery alone may be held");
    assert!(outbox.deliver(frame(), delivery(false)));
    assert!(outbox.take_urgent());
    assert!(!outbox.take_urgent(), "taken once");
    assert!(outbox.reply(&ProtocolMessage::new(Action::Ack)));
    assert!(outbox.take_urgent(), "replies are urgent");
}

#[test]
fn deliveries_over_the_byte_budget_end_the_connection_and_order_is_kept() {
    let one = frame().len();
    let outbox = Arc::new(Outbox::new(Format::Json, budget(2 * one)));
    let mut receiver = outbox.receiver();
    assert!(outbox.deliver(frame(), delivery(false)));
    assert!(outbox.reply(&ProtocolMessage::new(Action::Ack)));
    assert!(outbox.deliver(frame(), delivery(false)), "two fit");
    assert!(!outbox.is_ending());
    assert!(!outbox.deliver(frame(), delivery(false)), "a third is over");
    assert!(outbox.is_ending());
    assert_eq!(outbox.end_code(), protocol::ErrorCode::SlowConsumer.code());
    let actions: Vec<_> = std::iter::from_fn(|| receiver.try_recv().ok())
        .map(action)
        .collect();
    assert_eq!(
        actions,
        [
            Some(Action::Heartbeat),
            Some(Action::Ack),
            Some(Action::Heartbeat)
        ]
    );
}

#[test]
fn replies_and_echoes_never_count_against_the_budget_but_pause_the_reader() {
    let outbox = Arc::new(Outbox::new(Format::Json, budget(1)));
    let mut receiver = outbox.receiver();
    let echo = Delivery {
        own: true,
        ..delivery(false)
    };
    let mut n = 0;
    while !outbox.pause_reader_if_behind() {
        assert!(outbox.reply(&ProtocolMessage::new(Action::Heartbeat)));
        assert!(outbox.deliver(frame(), echo));
        n += 2;
    }
    assert!(!outbox.is_ending(), "replies never make a slow consumer");
    assert!(n > 100, "paused only past the high-water mark ({n} frames)");
    assert!(outbox.reader_paused());
    // The writer drains; below the low-water mark the reader is woken, and not before.
    let mut drained = 0;
    while outbox.reader_paused() {
        receiver.try_recv().unwrap();
        drained += 1;
    }
    assert!(drained > n / 2, "woken only below the low-water mark");
    assert!(!outbox.pause_reader_if_behind());
    // The wake-up is stored for a reader not waiting yet.
    let woken = outbox.wake_reader.notified();
    futures_util::pin_mut!(woken);
    assert!(futures_util::FutureExt::now_or_never(woken).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_frame_unsent_past_the_age_bound_ends_the_connection() {
    let outbox = Outbox::new(
        Format::Json,
        OutboundQueue {
            bytes: 1 << 20,
            age: Duration::from_millis(500),
        },
    );
    assert!(outbox.reply(&ProtocolMessage::new(Action::Ack)));
    tokio::time::advance(Duration::from_millis(400)).await;
    assert!(outbox.deliver(frame(), delivery(false)));
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(!outbox.deliver(frame(), delivery(false)));
    assert_eq!(outbox.end_code(), protocol::ErrorCode::SlowConsumer.code());
}

#[test]
fn an_emptied_queue_gives_its_memory_back() {
    let outbox = Outbox::new(Format::Json, budget(1 << 20));
    for _ in 0..40 {
        outbox.push(frame());
    }
    outbox.shrink_if_empty();
    assert!(
        outbox.queue.lock().unwrap().entries.capacity() >= 40,
        "not empty: kept"
    );
    while outbox.pop().is_some() {}
    outbox.shrink_if_empty();
    let queue = outbox.queue.lock().unwrap();
    assert_eq!(queue.entries.capacity(), 0);
    assert_eq!((queue.delivery_bytes, queue.reply_bytes), (0, 0));
}
