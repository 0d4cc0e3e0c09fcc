//! A server that breaks what it promises, so the soak's checks can be seen to catch it: it
//! announces `maxIdleInterval` 300 ms and never sends a HEARTBEAT, and after each ATTACHED its
//! first MESSAGE skips a serial. REST calls (tokens, publishes, events) get a fixed 201 answer.

use futures_util::{SinkExt, StreamExt};
use protocol::message::flags;
use protocol::{codec, Action, ConnectionDetails, Data, Format, Message, ProtocolMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ATTACHED_AT: &str = "000000000001-0000000005";
/// Not the next after `ATTACHED_AT` (6): one message lost.
const FIRST_SENT: &str = "000000000001-0000000007";

pub(crate) async fn serve(listener: TcpListener) {
    let mut n = 0;
    while let Ok((stream, _)) = listener.accept().await {
        n += 1;
        tokio::spawn(connection(stream, n));
    }
}

async fn connection(stream: TcpStream, n: u64) {
    let mut first = [0u8; 4];
    if stream.peek(&mut first).await.is_err() {
        return;
    }
    if &first == b"GET " {
        let _ = realtime(stream, n).await;
    } else {
        let _ = rest(stream).await;
    }
}

/// Reads one request (headers and `content-length` body) and answers 201 with what every caller
/// reads: a token, no serials, no channels.
async fn rest(mut stream: TcpStream) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&request);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let body = r#"{"token":"broken","serials":[],"channels":[]}"#;
    let response = format!(
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn realtime(stream: TcpStream, n: u64) -> anyhow::Result<()> {
    // The request line is in the first packet: its query says the format.
    let mut head = [0u8; 1024];
    let peeked = stream.peek(&mut head).await?;
    let request_line = String::from_utf8_lossy(&head[..peeked]);
    let format = if request_line
        .lines()
        .next()
        .unwrap_or_default()
        .contains("format=msgpack")
    {
        Format::Msgpack
    } else {
        Format::Json
    };
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    let send = |message: &ProtocolMessage| -> anyhow::Result<WsMessage> {
        let bytes = codec::encode_message(message, format)?;
        Ok(match format {
            Format::Json => WsMessage::Text(String::from_utf8(bytes)?.into()),
            Format::Msgpack => WsMessage::Binary(bytes.into()),
        })
    };
    let connected = ProtocolMessage {
        connection_id: Some(format!("broken{n}")),
        connection_details: Some(ConnectionDetails {
            connection_key: format!("broken{n}!key"),
            client_id: None,
            max_message_size: 65_536,
            max_frame_size: 262_144,
            max_inbound_rate: 50,
            max_idle_interval: 300,
            connection_state_ttl: 120_000,
            server_id: "broken".into(),
        }),
        ..ProtocolMessage::new(Action::Connected)
    };
    ws.send(send(&connected)?).await?;
    while let Some(frame) = ws.next().await {
        let message: ProtocolMessage = match frame? {
            WsMessage::Text(text) => codec::decode(text.as_bytes(), Format::Json)?,
            WsMessage::Binary(bytes) => codec::decode(&bytes, Format::Msgpack)?,
            WsMessage::Close(_) => break,
            _ => continue,
        };
        match message.action() {
            Some(Action::Attach) => {
                let resumed = message.channel_serial.is_some();
                let attached = ProtocolMessage {
                    channel: message.channel.clone(),
                    channel_serial: Some(ATTACHED_AT.into()),
                    flags: Some(if resumed { flags::RESUMED } else { 0 }),
                    ..ProtocolMessage::new(Action::Attached)
                };
                ws.send(send(&attached)?).await?;
                let delivery = ProtocolMessage {
                    channel: message.channel,
                    channel_serial: Some(FIRST_SENT.into()),
                    messages: Some(vec![Message {
                        name: Some("note".into()),
                        data: Some(Data::String("hello".into())),
                        serial: Some(FIRST_SENT.into()),
                        ..Default::default()
                    }]),
                    ..ProtocolMessage::new(Action::Message)
                };
                ws.send(send(&delivery)?).await?;
            }
            Some(Action::Close) => {
                ws.send(send(&ProtocolMessage::new(Action::Closed))?)
                    .await?;
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
