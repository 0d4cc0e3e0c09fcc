//! JSON clients on the test key and the protocol steps process tests share: connect as a
//! client id, attach, enter presence, read numbered messages, read presence over REST.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::{connect, eventually, next_json, send_json, RedisServer, Request, Socket};

use super::server::{publish, rest, Server, KEY};

pub(crate) const ENTER: u64 = 2;
pub(crate) const LEAVE: u64 = 3;
pub(crate) const RESUMED: u64 = 1 << 2;

/// A JSON connection as `client_id`; returns it with its CONNECTED.
pub(crate) async fn client(
    node: &Server,
    client_id: &str,
    extra: &str,
) -> (Socket, serde_json::Value) {
    let mut socket = connect(
        node.addr,
        &format!("key={KEY}&format=json&clientId={client_id}{extra}"),
    )
    .await;
    let connected = next_json(&mut socket).await;
    assert_eq!(connected["action"], 4, "{connected}");
    (socket, connected)
}

/// A `client` attached to `channel`.
pub(crate) async fn attached(node: &Server, client_id: &str, extra: &str, channel: &str) -> Socket {
    let (mut socket, _) = client(node, client_id, extra).await;
    attach(&mut socket, channel).await;
    socket
}

pub(crate) async fn attach(socket: &mut Socket, channel: &str) -> serde_json::Value {
    send_json(socket, json!({"action": 10, "channel": channel})).await;
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 11 {
            return frame;
        }
    }
}

/// Attaches `channel` from `channel_serial`; the next frame must be an ATTACHED with RESUMED
/// (`context` opens the failure message).
pub(crate) async fn attach_resumed(
    socket: &mut Socket,
    channel: &str,
    channel_serial: &str,
    context: &str,
) {
    let attach = json!({"action": 10, "channel": channel, "channelSerial": channel_serial});
    send_json(socket, attach).await;
    let attached = next_json(socket).await;
    assert_eq!(attached["action"], 11, "{context}{attached}");
    let flags = attached["flags"].as_u64().unwrap();
    assert_ne!(flags & RESUMED, 0, "{context}{attached}");
}

/// A new JSON connection on `node` attaches to `channel` with `rewind=2` (CONNECTED and ATTACHED
/// its first frames); returns the data of the two messages it replays.
pub(crate) async fn rewind_two(node: &Server, channel: &str) -> Vec<String> {
    let mut socket = connect(node.addr, &format!("key={KEY}&format=json")).await;
    assert_eq!(next_json(&mut socket).await["action"], 4);
    let attach = json!({"action": 10, "channel": channel, "params": {"rewind": "2"}});
    send_json(&mut socket, attach).await;
    assert_eq!(next_json(&mut socket).await["action"], 11);
    numbered(&mut socket, 2).await
}

/// Enters presence and waits for the ACK.
pub(crate) async fn enter(socket: &mut Socket, channel: &str, data: &str) {
    send_json(
        socket,
        json!({"action": 14, "channel": channel, "msgSerial": 0,
               "presence": [{"action": ENTER, "data": data}]}),
    )
    .await;
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 1 {
            return;
        }
        assert_ne!(frame["action"], 2, "NACK: {frame}");
    }
}

/// The next presence event on `socket` (SYNC and message frames skipped).
pub(crate) async fn next_presence(socket: &mut Socket) -> serde_json::Value {
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == 14 {
            return frame["presence"][0].clone();
        }
    }
}

pub(crate) async fn rest_members(node: &Server, channel: &str) -> Vec<String> {
    let path = format!("/channels/{channel}/presence");
    let (status, body) = rest(node.addr, Request::get(path).basic(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let members: serde_json::Value = serde_json::from_str(&body).unwrap();
    members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["clientId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Reads until `n` messages named "n" arrived; returns their data in arrival order.
pub(crate) async fn numbered(socket: &mut Socket, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let frame = next_json(socket).await;
        for message in frame["messages"].as_array().into_iter().flatten() {
            if message["name"] == "n" {
                seen.push(message["data"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    seen
}

/// Polls until one node has recorded `n` connections' own graces (`remainPresentFor`): record
/// writes are asynchronous, and a node killed before they land gives the default grace.
pub(crate) async fn until_graces_recorded(redis: &RedisServer, n: u64) {
    eventually(
        format!("{n} graces recorded"),
        Duration::from_secs(10),
        || async {
            let keys = redis.cli(&["KEYS", "rt:node:*:graces"]);
            keys.lines()
                .filter_map(|key| redis.cli(&["HLEN", key.trim()]).trim().parse::<u64>().ok())
                .max()
                .filter(|recorded| *recorded == n)
                .ok_or(keys)
        },
    )
    .await;
}

/// Publishes markers through `via` on every channel until each socket heard one on each: the bus
/// is live end to end.
pub(crate) async fn until_live(via: &Server, channels: &[impl AsRef<str>], sockets: &mut [Socket]) {
    let mut heard = vec![vec![false; channels.len()]; sockets.len()];
    for attempt in 0..100 {
        for channel in channels {
            let body = format!(r#"{{"name":"marker","data":"{attempt}"}}"#);
            rest(via.addr, publish(channel.as_ref(), &body)).await;
        }
        for (i, socket) in sockets.iter_mut().enumerate() {
            while let Ok(frame) =
                tokio::time::timeout(Duration::from_millis(100), next_json(socket)).await
            {
                if frame["action"] == 15 {
                    if let Some(c) = channels.iter().position(|c| frame["channel"] == c.as_ref()) {
                        heard[i][c] = true;
                    }
                }
            }
        }
        if heard.iter().flatten().all(|h| *h) {
            return;
        }
    }
    panic!("the bus never carried a marker everywhere: {heard:?}");
}

/// Publishes `message` (msgSerial 0) and reads until both its ACK and its echo (a MESSAGE whose
/// first message has every field of `message`) have come.
pub(crate) async fn publish_until_echoed(socket: &mut Socket, channel: &str, message: Value) {
    let frame = json!({"action": 15, "channel": channel, "msgSerial": 0, "messages": [&message]});
    send_json(socket, frame).await;
    let fields = message.as_object().expect("a message object");
    let (mut acked, mut echoed) = (false, false);
    while !(acked && echoed) {
        let frame = next_json(socket).await;
        acked |= frame["action"] == 1;
        echoed |= frame["action"] == 15
            && fields
                .iter()
                .all(|(field, value)| &frame["messages"][0][field] == value);
    }
}

/// A CONNECTED's connectionId and connectionKey: what a resume needs.
pub(crate) fn resume_ids(connected: &serde_json::Value) -> (String, String) {
    let id = connected["connectionId"].as_str().unwrap().to_owned();
    let key = connected["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, key)
}
