//! Benchmark: what `delta=vcdiff` saves, on the hub itself (no sockets, so it measures our work
//! only). A stream's ~2 KB state (viewers and their tips) is republished with about 5 % of it
//! changed each time, to subscribers half on JSON and half on msgpack, first whole to all of
//! them, then with deltas. Bytes per delivery are the frames queued for the sockets; CPU per
//! delivery is the publishes' time (fan-out included, one patch per update, not per subscriber)
//! over the deliveries.
//!
//! `cargo run --release --example delta_bench -- [subscribers] [updates]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::hub::{AttachRequest, DeltaCursor, Hub, Publication, Subscriber, View};
use gateway::outbox::{Outbox, Receiver};
use protocol::message::Modes;
use protocol::{Action, Data, Format, Message, ProtocolMessage};

fn main() {
    let mut args = std::env::args().skip(1);
    let subscribers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let updates: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("{subscribers} subscribers (half JSON, half msgpack), {updates} updates of a {} B state, ~5 % changed each", state(0).len());
        let whole = run(subscribers, updates, false);
        let deltas = run(subscribers, updates, true);
        for (label, run) in [("whole messages", &whole), ("delta=vcdiff", &deltas)] {
            println!(
                "{label:>15}: JSON {:.0} B/delivery, msgpack {:.0} B/delivery, {:.2} µs CPU/delivery, {:.0} µs/update",
                run.bytes[0] as f64 / run.deliveries[0] as f64,
                run.bytes[1] as f64 / run.deliveries[1] as f64,
                run.cpu.as_secs_f64() * 1e6 / (run.deliveries[0] + run.deliveries[1]) as f64,
                run.cpu.as_secs_f64() * 1e6 / updates as f64,
            );
        }
        let total = |run: &Run| run.bytes[0] + run.bytes[1];
        println!(
            "deltas send {:.1} % of the bytes",
            100.0 * total(&deltas) as f64 / total(&whole) as f64
        );
    });
}

/// A ~2 KB stream state; each round changes the tips of three of its 60 viewers (5 %).
fn state(round: usize) -> String {
    let viewers: Vec<serde_json::Value> = (0..60)
        .map(|i| {
            let tips = if i % 20 == round % 20 { round * 10 } else { i };
            serde_json::json!({ "user": format!("viewer-{i:03}"), "tips": tips })
        })
        .collect();
    serde_json::json!({ "stream": "stream:42", "round": round, "viewers": viewers }).to_string()
}

struct Run {
    /// JSON, msgpack.
    bytes: [usize; 2],
    deliveries: [usize; 2],
    cpu: Duration,
}

fn run(subscribers: usize, updates: usize, delta: bool) -> Run {
    let hub = Hub::default();
    let mut queues: Vec<(Format, Receiver)> = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let format = if i % 2 == 0 {
            Format::Json
        } else {
            Format::Msgpack
        };
        let outbox = Arc::new(Outbox::new(
            format,
            gateway::config::OutboundQueue::default(),
        ));
        queues.push((format, outbox.receiver()));
        let subscriber = Subscriber {
            connection_id: format!("sub{i}").into(),
            channel_name: "stream:42".into(),
            modes: Modes::DEFAULT,
            occupancy_events: false,
            echo: true,
            append_full: false,
            seen_from: Default::default(),
            view: View {
                filter: None,
                delta: delta.then(DeltaCursor::default),
            },
            outbox,
        };
        let attached = |_: &gateway::hub::AttachOutcome| ProtocolMessage::new(Action::Attached);
        hub.attach("stream:42", subscriber, &AttachRequest::default(), attached);
    }
    drain(&mut queues);
    let mut run = Run {
        bytes: [0; 2],
        deliveries: [0; 2],
        cpu: Duration::ZERO,
    };
    for round in 0..updates {
        let message = Message {
            id: Some(format!("publisher:{round}:0")),
            name: Some("state".into()),
            data: Some(Data::String(state(round))),
            encoding: Some("json".into()),
            action: Some(0),
            timestamp: Some(protocol::now_ms()),
            ..Default::default()
        };
        let started = Instant::now();
        hub.publish(Publication {
            channel: "stream:42",
            messages: vec![message],
            client_ids: vec![false],
            connection_id: None,
            id: None,
            timestamp: protocol::now_ms(),
        })
        .expect("published");
        run.cpu += started.elapsed();
        let (bytes, deliveries) = drain(&mut queues);
        for f in 0..2 {
            run.bytes[f] += bytes[f];
            run.deliveries[f] += deliveries[f];
        }
    }
    run
}

/// Frames queued since the last drain: (bytes, frames) per format (JSON, msgpack).
fn drain(queues: &mut [(Format, Receiver)]) -> ([usize; 2], [usize; 2]) {
    let (mut bytes, mut frames) = ([0; 2], [0; 2]);
    for (format, queue) in queues.iter_mut() {
        let f = usize::from(*format == Format::Msgpack);
        while let Ok(frame) = queue.try_recv() {
            bytes[f] += frame.len();
            frames[f] += 1;
        }
    }
    (bytes, frames)
}
