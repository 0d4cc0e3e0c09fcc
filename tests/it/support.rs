use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A `realtime` process on a free loopback port, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) stdout: String,
}

impl Server {
    /// Starts `realtime` with `--listen 127.0.0.1:0` plus `args`, and waits for its listen log.
    pub(crate) fn start(args: &[&str]) -> Server {
        Server::start_role("serve", args)
    }

    /// `start` for `realtime <role>` (`serve`, `gateway`, `api`).
    pub(crate) fn start_role(role: &str, args: &[&str]) -> Server {
        Server::start_with_env(role, args, &[])
    }

    /// `start_role` with more environment variables for the process.
    pub(crate) fn start_with_env(role: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_realtime"))
            .args([role, "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("REALTIME_KEYS")
            .env_remove("REALTIME_LISTEN")
            .env_remove("REALTIME_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start realtime");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listen=").nth(1) {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("realtime logged its listen address");
        // The dev-key banner is printed before the listen log; read what is there.
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut first = [0u8; 4096];
                let n = out.read(&mut first).unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&first[..n]).into_owned());
                let _ = std::io::copy(&mut out, &mut std::io::sink());
            });
            stdout = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
        }
        Server {
            child,
            addr: addr.parse().expect("socket address"),
            stdout,
        }
    }

    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(addr: SocketAddr, query: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/?{query}"))
        .await
        .expect("websocket connects");
    socket
}

/// Next protocol message (JSON), skipping pings; panics after 10 s.
pub(crate) async fn next_json(socket: &mut Socket) -> serde_json::Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame");
        match frame {
            WsMessage::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub(crate) async fn send_json(socket: &mut Socket, value: serde_json::Value) {
    socket
        .send(WsMessage::Text(value.to_string().into()))
        .await
        .expect("send");
}

/// Closes as a client should: CLOSE, then CLOSED, then the socket. Dropping the socket right
/// after CLOSE, with frames still unread, makes the kernel send a reset, which can discard the
/// CLOSE before the server reads it (and the server then sees a dropped client).
pub(crate) async fn close(mut socket: Socket) {
    send_json(&mut socket, serde_json::json!({"action": 7})).await;
    while next_json(&mut socket).await["action"] != 8 {}
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
pub(crate) async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("response within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
