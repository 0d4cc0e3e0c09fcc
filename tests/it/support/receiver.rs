//! Reading the HTTP requests the server POSTs to a test's receiver (webhooks, moderation).

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

/// One request as a receiver sees it: its `X-Ably-Signature` and its body.
pub(crate) struct Signed {
    pub(crate) signature: String,
    pub(crate) body: Vec<u8>,
}

/// The next request on a kept-alive connection; `None` once the connection ends.
pub(crate) async fn next_signed_request(stream: &mut BufReader<TcpStream>) -> Option<Signed> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let (mut length, mut signature) = (0, String::new());
    loop {
        line.clear();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "x-ably-signature" => signature = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(Signed { signature, body })
}
