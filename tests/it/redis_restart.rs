//! Redis restarts under the nodes: what was acknowledged is delivered, what was lost is told.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::{
    block_on, connect, eventually, nodes, on_nodes, publish, publish_serial, rest, send_json,
    RedisServer, Server, Socket,
};

const PUBLISHERS: usize = 50;
const CHANNELS: [&str; 2] = ["live:restart-a", "live:restart-b"];

/// A raw WebSocket subscriber and what it received.
struct Subscriber {
    socket: Socket,
    msgpack: bool,
    /// Per channel: (serial, data) in arrival order.
    got: BTreeMap<String, Vec<(String, String)>>,
    /// Continuity notices (ATTACHED with an error) received.
    notices: Vec<Value>,
    what: String,
}

impl Subscriber {
    /// Connected to `node` in JSON or msgpack, attached to every one of `channels`.
    async fn attach(node: &Server, msgpack: bool, channels: &[&str], what: String) -> Subscriber {
        let format = if msgpack { "msgpack" } else { "json" };
        let socket = connect(node.addr, &format!("key=app.k:secret&format={format}")).await;
        let mut subscriber = Subscriber {
            socket,
            msgpack,
            got: BTreeMap::new(),
            notices: Vec::new(),
            what,
        };
        assert_eq!(subscriber.next().await["action"], 4, "CONNECTED");
        for channel in channels {
            let attach = json!({"action": 10, "channel": channel});
            if msgpack {
                let bytes = rmp_serde::to_vec_named(&attach).unwrap();
                futures_util::SinkExt::send(
                    &mut subscriber.socket,
                    WsMessage::Binary(bytes.into()),
                )
                .await
                .expect("send");
            } else {
                send_json(&mut subscriber.socket, attach).await;
            }
            let attached = subscriber.next().await;
            assert_eq!(attached["action"], 11, "{attached}");
            assert!(attached["error"].is_null(), "{attached}");
        }
        subscriber
    }

    /// The next protocol message, JSON or msgpack; `Null` if none came within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Value {
        loop {
            let Ok(frame) = tokio::time::timeout(wait, self.socket.next()).await else {
                return Value::Null;
            };
            match frame.expect("socket open").expect("frame") {
                WsMessage::Text(text) => return serde_json::from_str(&text).expect("JSON"),
                WsMessage::Binary(bytes) => {
                    assert!(self.msgpack, "binary frame on a JSON connection");
                    return rmp_serde::from_slice(&bytes).expect("msgpack");
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> Value {
        let frame = self.next_within(Duration::from_secs(10)).await;
        assert!(!frame.is_null(), "{}: a frame within 10 s", self.what);
        frame
    }

    /// Reads until it holds every message of `expected` (per channel), or nothing came for a
    /// while; keeps every message and notice.
    async fn read_until_holding(&mut self, expected: &BTreeMap<String, Vec<(String, String)>>) {
        let holds = |got: &BTreeMap<String, Vec<(String, String)>>| {
            expected.iter().all(|(channel, messages)| {
                let seen: HashSet<&String> = got
                    .get(channel)
                    .map(|m| m.iter().map(|(serial, _)| serial).collect())
                    .unwrap_or_default();
                messages.iter().all(|(serial, _)| seen.contains(serial))
            })
        };
        while !holds(&self.got) {
            let frame = self.next_within(Duration::from_secs(10)).await;
            if frame.is_null() {
                return;
            }
            self.record(frame);
        }
    }

    fn record(&mut self, frame: Value) {
        match frame["action"].as_u64() {
            Some(15) => {
                let channel = frame["channel"].as_str().unwrap_or_default().to_owned();
                for message in frame["messages"].as_array().into_iter().flatten() {
                    let serial = message["serial"].as_str().unwrap_or_default().to_owned();
                    let data = message["data"].as_str().unwrap_or_default().to_owned();
                    self.got
                        .entry(channel.clone())
                        .or_default()
                        .push((serial, data));
                }
            }
            Some(11) => self.notices.push(frame),
            _ => {}
        }
    }

    /// Every acknowledged message once, in serial order, and no continuity notice.
    fn assert_received(&self, acked: &BTreeMap<String, Vec<(String, String)>>) {
        assert!(
            self.notices.is_empty(),
            "{}: nothing was lost, yet told {:?}",
            self.what,
            self.notices
        );
        for (channel, expected) in acked {
            let got = self.got.get(channel).cloned().unwrap_or_default();
            let serials: Vec<&String> = got.iter().map(|(serial, _)| serial).collect();
            assert!(
                serials.windows(2).all(|pair| pair[0] < pair[1]),
                "{} on {channel}: each message once, in serial order: {serials:?}",
                self.what
            );
            let got: HashSet<&(String, String)> = got.iter().collect();
            let missing: Vec<&(String, String)> =
                expected.iter().filter(|m| !got.contains(m)).collect();
            assert!(
                missing.is_empty(),
                "{} on {channel}: {} of {} acknowledged messages never arrived: {missing:?}",
                self.what,
                missing.len(),
                expected.len()
            );
        }
    }
}

/// Publishers, each publishing one message after another through REST to node `i % n` on
/// channel `i % 2` until told to stop, keeping what was acknowledged (channel, serial, data).
struct Publishers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String, String)>>>,
    count: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publishers {
    fn start(nodes: &[Server], n: usize) -> Publishers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let tasks = (0..n)
            .map(|i| {
                let addr = nodes[i % nodes.len()].addr;
                let channel = CHANNELS[i % CHANNELS.len()];
                let (stop, acked, count, refused) =
                    (stop.clone(), acked.clone(), count.clone(), refused.clone());
                tokio::spawn(async move {
                    for seq in 0.. {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        let data = format!("p{i}-{seq}");
                        let body = json!({"name": "n", "data": data}).to_string();
                        let (status, reply) = rest(addr, publish(channel, &body)).await;
                        if status != 201 {
                            assert_eq!(status, 503, "refused only while Redis is away: {reply}");
                            refused.fetch_add(1, Ordering::AcqRel);
                            continue;
                        }
                        let reply: Value = serde_json::from_str(&reply).unwrap();
                        let serial = reply["serials"][0].as_str().unwrap().to_owned();
                        acked
                            .lock()
                            .unwrap()
                            .push((channel.to_owned(), serial, data));
                        count.fetch_add(1, Ordering::AcqRel);
                    }
                })
            })
            .collect();
        Publishers {
            stop,
            acked,
            count,
            refused,
            tasks,
        }
    }

    /// Waits (bounded) until `n` publishes in all were acknowledged.
    async fn until_acked(&self, n: usize) {
        let what = format!("publishers get {n} acknowledged");
        eventually(what, Duration::from_secs(60), || async {
            self.count.load(Ordering::Acquire) >= n
        })
        .await;
    }

    /// Stops them; returns the acknowledged messages per channel, in serial order.
    async fn finish(self) -> BTreeMap<String, Vec<(String, String)>> {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            task.await.expect("publisher");
        }
        let mut per_channel: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (channel, serial, data) in self.acked.lock().unwrap().drain(..) {
            per_channel.entry(channel).or_default().push((serial, data));
        }
        for messages in per_channel.values_mut() {
            messages.sort();
        }
        per_channel
    }
}

#[test]
fn acknowledged_publishes_survive_a_redis_kill_and_empty_restart() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 3, &[]);
    block_on(async {
        let mut subscribers = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            for msgpack in [false, true] {
                let what = format!("node {i} {}", if msgpack { "msgpack" } else { "JSON" });
                subscribers.push(Subscriber::attach(node, msgpack, &CHANNELS, what).await);
            }
        }
        let publishers = Publishers::start(&nodes, PUBLISHERS);
        publishers.until_acked(100).await;
        // Killed with 50 publishes in flight and back empty at once: the publishes acknowledged
        // first after it are stored before the nodes' pub/sub links are back.
        tokio::task::block_in_place(|| redis.restart());
        let at_restart = publishers.count.load(Ordering::Acquire);
        publishers.until_acked(at_restart + 300).await;
        let refused = publishers.refused.load(Ordering::Acquire);
        let acked = publishers.finish().await;
        for (channel, messages) in &acked {
            let epochs: HashSet<&str> = messages
                .iter()
                .map(|(serial, _)| serial.split('-').next().unwrap())
                .collect();
            assert_eq!(
                epochs.len(),
                2,
                "{channel}: published before and after the restart ({refused} refused meanwhile)"
            );
        }
        for subscriber in subscribers.iter_mut() {
            subscriber.read_until_holding(&acked).await;
            subscriber.assert_received(&acked);
        }
    });
}

/// Keys of the store holding `channel`'s messages and position.
fn meta_key(channel: &str) -> String {
    format!("rt:{{{channel}}}:meta")
}

/// Reads `n` messages named "n" from `subscriber` (any format); returns (serial, data) and any
/// notices in arrival order as ("90003", "") entries.
async fn numbered_with_notices(subscriber: &mut Subscriber, n: usize) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|(serial, _): &&(String, String)| serial != "90003")
        .count()
        < n
    {
        let frame = subscriber.next().await;
        match frame["action"].as_u64() {
            Some(15) => {
                for message in frame["messages"].as_array().into_iter().flatten() {
                    seen.push((
                        message["serial"].as_str().unwrap_or_default().to_owned(),
                        message["data"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            Some(11) => {
                assert_eq!(frame["error"]["code"], 90003, "{frame}");
                assert_eq!(
                    frame["flags"].as_u64().unwrap_or(0) & (1 << 2),
                    0,
                    "not RESUMED: {frame}"
                );
                seen.push(("90003".to_owned(), String::new()));
            }
            _ => {}
        }
    }
    seen
}

#[test]
fn a_redis_restored_from_an_older_snapshot_is_told_and_serials_are_never_reused() {
    let mut redis = RedisServer::start_with(&["--save", "", "--appendonly", "no"]);
    let nodes = nodes(&redis, 2, &[]);
    block_on(async {
        let mut subscriber =
            Subscriber::attach(&nodes[1], false, &["live:rdb"], "node 1".into()).await;
        let first = publish_serial(&nodes[0], "live:rdb", 0).await;
        assert_eq!(
            redis.cli(&["SAVE"]).trim(),
            "OK",
            "the snapshot holds message 0"
        );
        let mut delivered = vec![first];
        for n in 1..3 {
            delivered.push(publish_serial(&nodes[0], "live:rdb", n).await);
        }
        let got = numbered_with_notices(&mut subscriber, 3).await;
        assert_eq!(
            got.iter()
                .map(|(serial, _)| serial.clone())
                .collect::<Vec<_>>(),
            delivered
        );

        // Killed and restarted from the snapshot: messages 1 and 2 are gone from the store, and
        // its position is behind what the nodes delivered. The subscriber's node notices as its
        // link comes back and moves the channel to a new epoch, marking the abandoned one.
        tokio::task::block_in_place(|| redis.restart());
        let abandoned = u64::from_str_radix(delivered[0].split('-').next().unwrap(), 16)
            .unwrap()
            .to_string();
        eventually(
            "the roll-back is noticed",
            Duration::from_secs(20),
            || async { redis.cli(&["HGET", &meta_key("live:rdb"), "p"]).trim() == abandoned },
        )
        .await;
        let after = loop {
            let request = publish("live:rdb", r#"{"name":"n","data":"3"}"#);
            let (status, body) = rest(nodes[0].addr, request).await;
            if status == 201 {
                let body: Value = serde_json::from_str(&body).unwrap();
                break body["serials"][0].as_str().unwrap().to_owned();
            }
            assert_eq!(status, 503, "{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let got = numbered_with_notices(&mut subscriber, 1).await;
        let last = got.last().unwrap();
        assert_eq!(
            got.first().unwrap().0,
            "90003",
            "the loss is told first: {got:?}"
        );
        assert_eq!(last.1, "3", "then what follows: {got:?}");
        assert!(
            last.0 > delivered[2],
            "no serial handed out twice: {} after {}",
            last.0,
            delivered[2]
        );
        assert_eq!(after, last.0, "the publisher's serial");
    });
    drop(redis);
}

#[test]
fn with_an_append_only_file_a_redis_kill_loses_nothing_and_tells_nothing() {
    let mut redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ]);
    let nodes = nodes(&redis, 2, &[]);
    block_on(async {
        let mut subscriber =
            Subscriber::attach(&nodes[1], true, &["live:aof"], "node 1".into()).await;
        let mut published = Vec::new();
        for n in 0..3 {
            published.push((
                publish_serial(&nodes[0], "live:aof", n).await,
                n.to_string(),
            ));
        }
        tokio::task::block_in_place(|| redis.restart());
        for n in 3..6 {
            let message = format!(r#"{{"name":"n","data":"{n}"}}"#);
            loop {
                let (status, body) = rest(nodes[0].addr, publish("live:aof", &message)).await;
                if status == 201 {
                    let body: Value = serde_json::from_str(&body).unwrap();
                    published.push((
                        body["serials"][0].as_str().unwrap().to_owned(),
                        n.to_string(),
                    ));
                    break;
                }
                assert_eq!(status, 503, "{body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert_eq!(
            numbered_with_notices(&mut subscriber, 6).await,
            published,
            "every message once, in order, no notice"
        );
        let epoch = |serial: &str| serial.split('-').next().unwrap().to_owned();
        assert_eq!(
            epoch(&published[0].0),
            epoch(&published[5].0),
            "the same epoch: the store kept its place"
        );
    });
    drop(redis);
}

#[test]
fn a_store_that_handed_out_the_nodes_serials_again_is_told() {
    on_nodes(2, &[], async |redis, nodes| {
        let mut subscriber =
            Subscriber::attach(&nodes[1], false, &["live:reuse"], "node 1".into()).await;
        let mut delivered = Vec::new();
        for n in 0..3 {
            delivered.push(publish_serial(&nodes[0], "live:reuse", n).await);
        }
        assert_eq!(numbered_with_notices(&mut subscriber, 3).await.len(), 3);
        // As if Redis went back to before message 1 and took four other publishes since: the
        // same epoch, a position past the node's, other messages at its serials.
        let epoch = u64::from_str_radix(delivered[0].split('-').next().unwrap(), 16).unwrap();
        let script = "redis.call('DEL', KEYS[1]) \
            for n = 1, 4 do \
              local body = cjson.encode({name = 'n', data = 'other', id = 'other:' .. n}) \
              redis.call('XADD', KEYS[1], ARGV[1] .. '-' .. n, 'm', body, 't', ARGV[2]) \
            end \
            return redis.call('HSET', KEYS[2], 'n', 4)";
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string();
        let stream = "rt:{live:reuse}:log";
        redis.cli(&[
            "EVAL",
            script,
            "2",
            stream,
            &meta_key("live:reuse"),
            &epoch.to_string(),
            &now,
        ]);
        // The links drop (as on a restart); catching up, the node finds another message at its
        // last serial.
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        eventually("the reuse is noticed", Duration::from_secs(20), || async {
            redis.cli(&["HGET", &meta_key("live:reuse"), "p"]).trim() == epoch.to_string()
        })
        .await;
        let after = publish_serial(&nodes[0], "live:reuse", 3).await;
        let got = numbered_with_notices(&mut subscriber, 1).await;
        assert_eq!(
            got,
            [
                ("90003".to_owned(), String::new()),
                (after.clone(), "3".to_owned())
            ],
            "told, none of the other messages, then what follows"
        );
        assert!(after > delivered[2], "a serial never handed out: {after}");
    });
}

/// One connection pipelining publishes on one channel, rounds of 40 in flight, through a Redis
/// killed and restarted empty mid-round: the script is gone, so the next calls in flight all
/// meet NOSCRIPT and load it again. Whatever is acknowledged keeps the connection's order: a
/// later msgSerial never gets an earlier serial.
#[test]
fn pipelined_publishes_keep_their_order_through_an_empty_redis_restart() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 1, &[]);
    block_on(async {
        let channel = "live:restart-order";
        let mut socket = crate::pipeline::publisher(&nodes[0]).await;
        let mut acked: Vec<(u64, String)> = Vec::new();
        let mut msg_serial = 0u64;
        for round in 0..12 {
            for _ in 0..40 {
                let frame =
                    crate::pipeline::message_frame(msg_serial, channel, &msg_serial.to_string());
                send_json(&mut socket, frame).await;
                msg_serial += 1;
            }
            if round == 4 {
                tokio::task::block_in_place(|| redis.restart());
            }
            for (n, answer) in crate::pipeline::answers(&mut socket, 40).await {
                if let Ok(serial) = answer {
                    acked.push((n, serial));
                }
            }
        }
        let after_restart = acked.iter().filter(|(n, _)| *n >= 5 * 40).count();
        assert!(
            after_restart >= 200,
            "publishes go through again: {after_restart} acknowledged"
        );
        let epochs: HashSet<&str> = acked
            .iter()
            .filter_map(|(_, serial)| serial.split('-').next())
            .collect();
        assert_eq!(epochs.len(), 2, "Redis came back empty: a new epoch");
        // Serials order as strings (the hub compares them so).
        for pair in acked.windows(2) {
            let ((a, first), (b, second)) = (&pair[0], &pair[1]);
            assert!(
                first < second,
                "msgSerial {a} got {first}, the later {b} got {second}"
            );
        }
    });
}

/// A store that lost the channel's last messages (a fail-over to a replica that had not got
/// them) hands their serials out again to the next publishes, before any node catches up: a
/// node must not take those for repeats of what it delivered (another message at the same
/// serial) and drop them silently. It catches up instead, and its subscribers are told.
#[test]
fn a_publish_given_a_serial_the_nodes_already_delivered_is_not_dropped_as_a_repeat() {
    on_nodes(2, &[], async |redis, nodes| {
        let channel = "live:lost-tail";
        let mut subscriber =
            Subscriber::attach(&nodes[1], false, &[channel], "node 1".into()).await;
        let mut delivered = Vec::new();
        for n in 0..3 {
            delivered.push(publish_serial(&nodes[0], channel, n).await);
        }
        assert_eq!(numbered_with_notices(&mut subscriber, 3).await.len(), 3);
        // As if the master that stored messages 2 and 3 died before its replica had them: the
        // store ends at message 1, and the nodes' links stay up (nothing tells them).
        let keep_first = "local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1] \
            redis.call('DEL', KEYS[1]) \
            redis.call('XADD', KEYS[1], first[1], unpack(first[2])) \
            return redis.call('HSET', KEYS[2], 'n', 1)";
        let stream = format!("rt:{{{channel}}}:log");
        redis.cli(&["EVAL", keep_first, "2", &stream, &meta_key(channel)]);
        // The next publish is handed message 2's serial again.
        let reused = publish_serial(&nodes[0], channel, 3).await;
        assert_eq!(
            reused, delivered[1],
            "the store handed the serial out again"
        );
        // The node that heard it rolls the channel to a new epoch (asynchronously, as it
        // catches up); without that, every later publish would be handed a reused serial too.
        let epoch = u64::from_str_radix(delivered[0].split('-').next().unwrap(), 16).unwrap();
        eventually("the reuse is noticed", Duration::from_secs(20), || async {
            redis.cli(&["HGET", &meta_key(channel), "p"]).trim() == epoch.to_string()
        })
        .await;
        // Told: what the store handed the reused serial to is abandoned with the old epoch
        // (it is in history), and what follows comes in a new one.
        let after = publish_serial(&nodes[0], channel, 4).await;
        assert!(after > delivered[2], "a serial never handed out: {after}");
        let got = numbered_with_notices(&mut subscriber, 1).await;
        assert_eq!(
            got,
            [("90003".to_owned(), String::new()), (after, "4".to_owned())],
            "told, then what follows"
        );
    });
}
