//! Benchmark: presence at scale, on the hub itself (no sockets, so it measures our work only).
//!
//! 1. Sync: time and bytes to send 10,000 members to a new subscriber.
//! 2. Join storm: 1,000 members join a channel with 1,000 presence subscribers; frames sent,
//!    against the naive one-event-per-subscriber count (N²).
//! 3. Occupancy storm: 5,000 viewers attach with `occupancy=metrics` and enter presence, one
//!    after another (they follow the counts, not the member list, so no presence_subscribe);
//!    time until every viewer has the settled `[meta]occupancy` event.
//!
//! `cargo run --release --example presence_bench -- [members] [storm] [viewers]`

use std::sync::Arc;
use std::time::Instant;

use gateway::config::HubConfig;
use gateway::hub::{AttachRequest, Hub, Subscriber};
use gateway::outbox::Outbox;
use protocol::message::Modes;
use protocol::{Action, Data, Format, PresenceMessage, ProtocolMessage};

fn main() {
    let mut args = std::env::args().skip(1);
    let members: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let storm: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let viewers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        sync(members);
        join_storm(storm);
        occupancy_storm(viewers);
    });
}

fn enter(hub: &Hub, channel: &str, i: usize) {
    hub.presence(
        channel,
        vec![PresenceMessage {
            id: Some(format!("conn{i}:0:0")),
            action: 2,
            client_id: Some(format!("user-{i}")),
            connection_id: Some(format!("conn{i}")),
            data: Some(Data::String("viewer".into())),
            timestamp: Some(protocol::now_ms()),
            ..Default::default()
        }],
    )
    .expect("enter");
}

fn subscriber(id: &str, capacity: usize) -> (Subscriber, gateway::outbox::Receiver) {
    let outbox = Arc::new(Outbox::new(
        Format::Msgpack,
        gateway::config::OutboundQueue {
            bytes: capacity * 1024,
            ..Default::default()
        },
    ));
    let queue = outbox.receiver();
    let subscriber = Subscriber {
        connection_id: id.into(),
        channel_name: "live:1".into(),
        modes: Modes::DEFAULT,
        occupancy_events: false,
        echo: true,
        append_full: false,
        seen_from: Default::default(),
        view: Default::default(),
        outbox,
    };
    (subscriber, queue)
}

fn attached(_: &gateway::hub::AttachOutcome) -> ProtocolMessage {
    ProtocolMessage::new(Action::Attached)
}

fn sync(members: usize) {
    let hub = Hub::new(HubConfig {
        max_presence_members: members,
        ..HubConfig::default()
    });
    for i in 0..members {
        enter(&hub, "live:1", i);
    }
    hub.flush_presence();
    let (subscriber, mut queue) = subscriber("newcomer", members + 16);
    let started = Instant::now();
    hub.attach("live:1", subscriber, &AttachRequest::default(), attached);
    let elapsed = started.elapsed();
    let (mut frames, mut bytes) = (0, 0);
    while let Ok(frame) = queue.try_recv() {
        frames += 1;
        bytes += frame.len();
    }
    println!(
        "sync {members} members: {:.2} ms, {frames} frames (ATTACHED + SYNC pages), {bytes} bytes msgpack ({:.0} bytes/member)",
        elapsed.as_secs_f64() * 1000.0,
        bytes as f64 / members as f64
    );
}

fn join_storm(n: usize) {
    let hub = Hub::default();
    let mut queues = Vec::with_capacity(n);
    for i in 0..n {
        let (subscriber, queue) = subscriber(&format!("sub{i}"), 4 * n + 16);
        hub.attach("live:1", subscriber, &AttachRequest::default(), attached);
        queues.push(queue);
    }
    let drain = |queues: &mut Vec<gateway::outbox::Receiver>| {
        let (mut frames, mut bytes) = (0usize, 0usize);
        for queue in queues.iter_mut() {
            while let Ok(frame) = queue.try_recv() {
                frames += 1;
                bytes += frame.len();
            }
        }
        (frames, bytes)
    };
    drain(&mut queues);
    let started = Instant::now();
    for i in 0..n {
        enter(&hub, "live:1", i);
    }
    hub.flush_presence();
    let elapsed = started.elapsed();
    let (frames, bytes) = drain(&mut queues);
    println!(
        "join storm {n} members x {n} presence subscribers: {frames} frames, {bytes} bytes, {:.1} ms; naive one-frame-per-event would be {} frames ({:.0}x more)",
        elapsed.as_secs_f64() * 1000.0,
        n * n,
        (n * n) as f64 / frames.max(1) as f64
    );
}

fn occupancy_storm(n: usize) {
    let hub = Hub::default();
    let mut queues = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let (mut viewer, queue) = subscriber(&format!("conn{i}"), 16);
        viewer.modes = Modes::DEFAULT - Modes::PRESENCE_SUBSCRIBE;
        viewer.occupancy_events = true;
        hub.attach("live:1", viewer, &AttachRequest::default(), attached);
        enter(&hub, "live:1", i);
        queues.push(queue);
    }
    hub.flush_presence();
    hub.flush_occupancy();
    let elapsed = started.elapsed();
    let mut frames = 0;
    for queue in &mut queues {
        while queue.try_recv().is_ok() {
            frames += 1;
        }
    }
    assert_eq!(hub.occupancy("live:1").presence_members, n);
    assert_eq!(
        frames,
        2 * n,
        "each viewer: its ATTACHED and one [meta]occupancy"
    );
    println!(
        "occupancy storm {n} viewers attach + enter, occupancy watched: {:.1} ms to settle",
        elapsed.as_secs_f64() * 1000.0
    );
}
