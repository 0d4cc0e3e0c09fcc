//! Silent and greedy sockets (issue 18, item 2): a request must arrive within its deadlines,
//! a silent WebSocket is dropped, connections are capped in all and per address, and running out
//! of file descriptors backs `accept` off. Each attack runs beside a bystander (a publisher and
//! a second reader on their own channel, connected before it) that must keep working.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    block_on, close, connect, next_json, rest, send_json, Request, Server, Socket,
};

const KEY: &str = "app.k:secret";
/// Generous bound for "the server closed it": far above every deadline set here.
const CLOSED_WITHIN: Duration = Duration::from_secs(15);

/// A publisher and another reader of one channel, both attached.
struct Bystander {
    publisher: Socket,
    reader: Socket,
    channel: String,
    sent: u32,
}

impl Bystander {
    async fn join(addr: SocketAddr, channel: &str) -> Bystander {
        let mut publisher = connect(addr, &format!("key={KEY}&format=json")).await;
        let mut reader = connect(addr, &format!("key={KEY}&format=json")).await;
        for socket in [&mut publisher, &mut reader] {
            until_action(socket, 4).await;
            send_json(socket, json!({"action": 10, "channel": channel})).await;
            until_action(socket, 11).await;
        }
        Bystander {
            publisher,
            reader,
            channel: channel.to_owned(),
            sent: 0,
        }
    }

    /// One publish, ACKed, received by both.
    async fn still_works(&mut self) {
        self.sent += 1;
        let data = format!("still here {}", self.sent);
        send_json(
            &mut self.publisher,
            json!({"action": 15, "channel": self.channel, "msgSerial": self.sent - 1,
                   "messages": [{"name": "n", "data": data}]}),
        )
        .await;
        let mut acked = false;
        let mut echoed = false;
        while !(acked && echoed) {
            let frame = next_json(&mut self.publisher).await;
            match frame["action"].as_u64() {
                Some(1) => acked = true,
                Some(15) if frame["messages"][0]["data"] == data.as_str() => echoed = true,
                _ => {}
            }
        }
        loop {
            let frame = next_json(&mut self.reader).await;
            if frame["action"] == 15 && frame["messages"][0]["data"] == data.as_str() {
                break;
            }
        }
    }

    /// Reads (and so answers pings) for `span`, as a live client always does.
    async fn listen_for(&mut self, span: Duration) {
        use futures_util::StreamExt;
        let _ = tokio::time::timeout(span, async {
            loop {
                tokio::select! {
                    _ = self.publisher.next() => {}
                    _ = self.reader.next() => {}
                }
            }
        })
        .await;
    }

    async fn leave(self) {
        close(self.publisher).await;
        close(self.reader).await;
    }
}

async fn until_action(socket: &mut Socket, action: u64) -> Value {
    loop {
        let frame = next_json(socket).await;
        if frame["action"] == action {
            return frame;
        }
    }
}

/// Reads until the server closes the socket; panics if it is still open after `CLOSED_WITHIN`.
/// Returns what was read.
async fn closed_by_server(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(CLOSED_WITHIN, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: still open after {CLOSED_WITHIN:?}");
    seen
}

/// One response off a keep-alive connection: its head, then a body of its `content-length`.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let head_end = loop {
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut rest = vec![0u8; (head_end + length).saturating_sub(seen.len())];
    stream.read_exact(&mut rest).await.unwrap();
    seen.extend_from_slice(&rest);
    String::from_utf8_lossy(&seen).into_owned()
}

/// A TCP connection to `addr` from the loopback address `source` (127.0.0.x: each is its own
/// source for the per-address cap).
async fn tcp_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.expect("connect")
}

/// A WebSocket from `source`: the socket and its first protocol message.
async fn ws_from(source: &str, addr: SocketAddr) -> (Socket, Value) {
    let stream = tcp_from(source, addr).await;
    let (mut socket, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/?key={KEY}&format=json"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("upgrade");
    let first = next_json(&mut socket).await;
    (socket, first)
}

/// `GET /time` from `source`: the status, the whole response as text.
async fn time_from(source: &str, addr: SocketAddr) -> (u16, String) {
    let mut stream = tcp_from(source, addr).await;
    stream
        .write_all(b"GET /time HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(CLOSED_WITHIN, stream.read_to_end(&mut response))
        .await
        .expect("response")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `GET /time` from `source` until it answers 200 (a slot given back is seen a moment after the
/// client sees its socket closed).
async fn until_time_ok(source: &str, addr: SocketAddr) {
    for _ in 0..100 {
        if time_from(source, addr).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("GET /time from {source} never answered 200 again");
}

fn assert_over_capacity(text: &str, message_part: &str) {
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-ably-errorcode: 50003"),
        "{text}"
    );
    // A browser on another origin can read why (the request carried an Origin).
    assert!(
        text.to_ascii_lowercase()
            .contains("access-control-allow-origin: *"),
        "{text}"
    );
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], 50003, "{text}");
    assert_eq!(body["error"]["statusCode"], 503, "{text}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(message_part),
        "{text}"
    );
}

/// The head deadline runs from a connection's start and from a head's first byte, not over an
/// idle keep-alive connection: that one stays (a load balancer's pooled connection must not be
/// closed under a request it sends), and a head begun on it late is cut off like any other.
#[test]
fn silent_sockets_and_slowloris_are_closed_at_the_header_deadline_idle_keepalive_is_not() {
    // A keep-alive bound far past CLOSED_WITHIN: whatever closes within it is the head deadline.
    let server = Server::start(&[
        "--keys",
        KEY,
        "--header-timeout-ms",
        "1500",
        "--keep-alive-timeout-ms",
        "600000",
    ]);
    block_on(async {
        let mut bystander = Bystander::join(server.addr, "calm").await;

        // Silent sockets: connect, send nothing.
        let mut silent = Vec::new();
        for _ in 0..20 {
            silent.push(TcpStream::connect(server.addr).await.unwrap());
        }
        // Slowloris: a WebSocket upgrade, one byte a second.
        let request = format!(
            "GET /?key={KEY}&format=json HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let slow = TcpStream::connect(server.addr).await.unwrap();
        let (mut slow_read, mut slow_write) = slow.into_split();
        let dribble = tokio::spawn(async move {
            for byte in request.bytes() {
                if slow_write.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        // An idle keep-alive connection after one answered request.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /time HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();

        bystander.still_works().await;

        for (i, socket) in silent.iter_mut().enumerate() {
            let seen = closed_by_server(socket, &format!("silent socket {i}")).await;
            assert!(seen.is_empty() || seen.starts_with(b"HTTP/1.1 408"));
        }
        let slow_closed = tokio::time::timeout(CLOSED_WITHIN, async {
            let mut buf = [0u8; 1024];
            loop {
                match slow_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(slow_closed.is_ok(), "slowloris upgrade still open");
        dribble.abort();
        // Idle past the head deadline (the silent sockets, opened before it, are closed): it
        // still takes a request.
        let first = read_response(&mut idle).await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        idle.write_all(b"GET /time HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let second = read_response(&mut idle).await;
        assert!(
            second.starts_with("HTTP/1.1 200"),
            "a request after the idle time: {second}"
        );
        // A head begun on it and never finished is cut off at its deadline.
        idle.write_all(b"GET /time HTTP/1.1\r\nHo").await.unwrap();
        closed_by_server(&mut idle, "a late head on a keep-alive connection").await;

        bystander.still_works().await;
        // New connections are served as before.
        assert_eq!(rest(server.addr, Request::get("/time")).await.0, 200);
        bystander.leave().await;
    });
}

/// An idle keep-alive connection is closed at `--keep-alive-timeout-ms` (the head deadline,
/// far past CLOSED_WITHIN here, does not apply to it).
#[test]
fn an_idle_keepalive_connection_is_closed_at_its_own_bound() {
    let server = Server::start(&[
        "--keys",
        KEY,
        "--header-timeout-ms",
        "600000",
        "--keep-alive-timeout-ms",
        "1000",
    ]);
    block_on(async {
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /time HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let seen = closed_by_server(&mut idle, "idle keep-alive connection").await;
        assert!(
            String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"),
            "the request on it was answered first"
        );
        assert_eq!(rest(server.addr, Request::get("/time")).await.0, 200);
    });
}

#[test]
fn a_request_body_must_arrive_within_its_deadline() {
    let server = Server::start(&["--keys", KEY, "--body-timeout-ms", "1000"]);
    block_on(async {
        let mut bystander = Bystander::join(server.addr, "calm").await;
        let mut slow = TcpStream::connect(server.addr).await.unwrap();
        // Basic app.k:secret; 100 bytes promised, 10 sent.
        slow.write_all(
            b"POST /channels/slow/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YXBwLms6c2VjcmV0\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":\"x",
        )
        .await
        .unwrap();
        bystander.still_works().await;
        let seen = closed_by_server(&mut slow, "slow body").await;
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("\"code\":40800"), "{text}");
        bystander.still_works().await;
        bystander.leave().await;
    });
}

#[test]
fn a_websocket_that_neither_reads_nor_sends_is_dropped() {
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Server::start(&[
        "--keys",
        KEY,
        "--max-idle-interval-ms",
        "300",
        "--peer-idle-timeout-ms",
        "1000",
        "--admin-listen",
        &admin.to_string(),
    ]);
    block_on(async {
        let mut bystander = Bystander::join(server.addr, "calm").await;
        let upgrade = |query: &str| {
            format!(
                "GET /?{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
        };
        // Authenticated, then silent and never reading: the server's pings go unanswered.
        let mut mute = TcpStream::connect(server.addr).await.unwrap();
        mute.write_all(upgrade(&format!("key={KEY}&format=json")).as_bytes())
            .await
            .unwrap();
        // No credentials: ERROR, then closed, whether or not the client reads.
        let mut anonymous = TcpStream::connect(server.addr).await.unwrap();
        anonymous
            .write_all(upgrade("format=json").as_bytes())
            .await
            .unwrap();

        // Not reading until the server has dropped it for silence.
        let mut dropped = false;
        for _ in 0..150 {
            let (_, page) = rest(admin, Request::get("/metrics")).await;
            dropped = page.lines().any(|line| {
                line.starts_with("realtime_connections_closed_total{reason=\"idle\"}")
                    && !line.ends_with(" 0")
            });
            if dropped {
                break;
            }
            bystander.listen_for(Duration::from_millis(100)).await;
        }
        assert!(dropped, "the mute WebSocket was never dropped as idle");
        bystander.still_works().await;
        let seen = closed_by_server(&mut mute, "mute WebSocket").await;
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert!(
            text.contains("\"action\":4"),
            "it had been CONNECTED: {text}"
        );
        let seen = closed_by_server(&mut anonymous, "WebSocket without credentials").await;
        let text = String::from_utf8_lossy(&seen);
        assert!(text.contains("\"action\":9"), "ERROR first: {text}");
        assert!(text.contains("40101") || text.contains("40106"), "{text}");
        bystander.still_works().await;
        bystander.leave().await;
    });
}

#[test]
fn connection_caps_answer_503_and_accept_again_once_connections_close() {
    // Bystander from 127.0.0.1 (2), attacker from 127.0.0.2 (3 = its cap), others from .3/.4.
    let server = Server::start(&[
        "--keys",
        KEY,
        "--max-connections",
        "6",
        "--max-connections-per-ip",
        "3",
    ]);
    let addr = server.addr;
    block_on(async {
        let mut bystander = Bystander::join(addr, "calm").await;
        let mut held = Vec::new();
        for _ in 0..3 {
            let (socket, first) = ws_from("127.0.0.2", addr).await;
            assert_eq!(first["action"], 4, "{first}");
            held.push(socket);
        }
        // Over the per-address cap: an upgrade is told DISCONNECTED 50003, a request 503.
        let (mut refused, first) = ws_from("127.0.0.2", addr).await;
        assert_eq!(first["action"], 6, "{first}");
        assert_eq!(first["error"]["code"], 50003, "{first}");
        assert_eq!(first["error"]["statusCode"], 503, "{first}");
        assert!(
            futures_util::StreamExt::next(&mut refused)
                .await
                .is_none_or(|frame| frame.is_err() || frame.unwrap().is_close()),
            "closed after the refusal"
        );
        let (status, text) = time_from("127.0.0.2", addr).await;
        assert_eq!(status, 503);
        assert_over_capacity(&text, "this address");
        // Another address is not over it.
        assert_eq!(time_from("127.0.0.3", addr).await.0, 200);
        bystander.still_works().await;

        // The sixth connection fills the server: anyone's next one is refused.
        let (other, first) = ws_from("127.0.0.3", addr).await;
        assert_eq!(first["action"], 4, "{first}");
        let (status, text) = time_from("127.0.0.4", addr).await;
        assert_eq!(status, 503);
        assert_over_capacity(&text, "server");
        bystander.still_works().await;

        // Slots come back when connections close.
        close(other).await;
        until_time_ok("127.0.0.4", addr).await;
        close(held.pop().unwrap()).await;
        let mut attempts = 0;
        loop {
            let (socket, first) = ws_from("127.0.0.2", addr).await;
            if first["action"] == 4 {
                held.push(socket);
                break;
            }
            attempts += 1;
            assert!(
                attempts < 100,
                "the freed slot was never given back: {first}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bystander.still_works().await;
        for socket in held {
            close(socket).await;
        }
        bystander.leave().await;
    });
}

/// `realtime` under `prlimit --nofile=N:N` with its log lines on a channel.
struct Limited {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_limited(files: u32, args: &[&str]) -> Option<Limited> {
    let limit = format!("--nofile={files}:{files}");
    let mut child = Command::new("prlimit")
        .arg(&limit)
        .arg(env!("CARGO_BIN_EXE_realtime"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("REALTIME_KEYS")
        .env_remove("REALTIME_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut limited = Limited {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
        lines,
    };
    loop {
        let line = limited.lines.recv_timeout(Duration::from_secs(20)).ok()?;
        if let Some(addr) = line.split("listen=").nth(1) {
            limited.addr = addr.split_whitespace().next()?.parse().ok()?;
            return Some(limited);
        }
    }
}

#[test]
fn accept_backs_off_when_the_process_runs_out_of_file_descriptors() {
    let Some(server) = start_limited(
        64,
        &[
            "--keys",
            KEY,
            "--max-connections",
            "0",
            "--header-timeout-ms",
            "60000",
        ],
    ) else {
        panic!("could not start realtime under prlimit (util-linux)");
    };
    block_on(async {
        let mut bystander = Bystander::join(server.addr, "calm").await;
        // Far more connections than the server has descriptors: the kernel completes them
        // (backlog), the server cannot accept them all.
        let mut flood = Vec::new();
        for _ in 0..120 {
            flood.push(TcpStream::connect(server.addr).await.unwrap());
        }
        // The loop backs off, doubling its wait: three lines with growing waits.
        let mut waits = Vec::new();
        while waits.len() < 3 {
            let line = server
                .lines
                .recv_timeout(Duration::from_secs(20))
                .expect("an accept backoff log line");
            if line.contains("accept failed; backing off") {
                let wait: u64 = line
                    .split("wait_ms=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .expect("wait_ms in the log line");
                waits.push(wait);
            }
        }
        assert!(
            waits.windows(2).all(|pair| pair[1] > pair[0]),
            "waits grow: {waits:?}"
        );
        // Descriptors are short, but the connections already open keep working.
        bystander.still_works().await;

        drop(flood);
        // With descriptors back, new connections are accepted again.
        let mut served = false;
        for _ in 0..100 {
            let answer = tokio::time::timeout(
                Duration::from_secs(3),
                rest(server.addr, Request::get("/time")),
            )
            .await;
            if matches!(answer, Ok((200, _))) {
                served = true;
                break;
            }
        }
        assert!(served, "no connection accepted after the flood left");
        bystander.still_works().await;
        bystander.leave().await;
    });
}
