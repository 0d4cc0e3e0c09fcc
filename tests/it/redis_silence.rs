//! A Redis that goes silent without closing (a partition, a host gone without a reset): the node
//! stops waiting on its dead command connection and makes a new one.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{eventually, publish, rest, RedisServer, Server, KEY};

/// A TCP relay to Redis whose open connections can be silenced: they stay open and forward
/// nothing more, as across a partition; connections made afterwards relay normally.
struct Relay {
    addr: SocketAddr,
    silenced: watch::Sender<u64>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (silenced, watch) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(to).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, watch.clone()));
            }
        });
        Relay { addr, silenced }
    }

    /// Every connection open now goes silent.
    fn silence(&self) {
        self.silenced.send_modify(|generation| *generation += 1);
    }
}

/// Copies both ways until the relay is silenced, then holds both sockets open, forwarding
/// nothing.
async fn relay(mut client: TcpStream, mut server: TcpStream, mut silenced: watch::Receiver<u64>) {
    let born = *silenced.borrow_and_update();
    let (mut to_client, mut to_server) = ([0u8; 8192], [0u8; 8192]);
    loop {
        tokio::select! {
            read = client.read(&mut to_server) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&to_server[..n]).await.is_err() { return },
            },
            read = server.read(&mut to_client) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&to_client[..n]).await.is_err() { return },
            },
            changed = silenced.changed() => {
                if changed.is_err() || *silenced.borrow() != born {
                    let _held = (client, server);
                    std::future::pending::<()>().await;
                    return;
                }
            }
        }
    }
}

// Multi-threaded: the relay must run while `Server::start` blocks for the node to come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_command_connection_is_replaced() {
    let redis = RedisServer::start();
    let redis_addr: SocketAddr = redis
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let relay = Relay::start(redis_addr).await;
    let url = format!("redis://{}", relay.addr);
    let node = Server::start(&["--keys", KEY, "--redis", &url]);
    let body = r#"{"name":"n","data":"x"}"#;
    let (status, answer) = rest(node.addr, publish("silence:a", body)).await;
    assert_eq!(status, 201, "{answer}");

    relay.silence();
    // The publish in flight on the silent connection fails loudly (never a false 201)...
    let (status, answer) = rest(node.addr, publish("silence:a", body)).await;
    assert!(
        status >= 500,
        "a publish on a silent Redis: {status} {answer}"
    );
    // ...and the node does not keep waiting on that connection: later publishes succeed.
    eventually(
        "publishes succeed again",
        Duration::from_secs(30),
        || async {
            let (status, answer) = rest(node.addr, publish("silence:a", body)).await;
            (status == 201)
                .then_some(())
                .ok_or(format!("{status} {answer}"))
        },
    )
    .await;
}
