//! A bare HTTP/1.1 client: one request per connection (`connection: close`), the whole response
//! read. [`Request`] builds well-formed requests with [`basic`] auth; [`raw_http`] sends any bytes,
//! for malformed input only.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a whole exchange may take on a loaded CI box; a passing test never waits for it.
const HTTP_WAIT: Duration = Duration::from_secs(10);

/// `Basic base64(key)`, the value of an `Authorization` header for `key` (`name:secret`).
pub fn basic(key: &str) -> String {
    format!("Basic {}", STANDARD.encode(key))
}

/// A well-formed HTTP/1.1 request.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: Cow<'a, str>,
    pub headers: Vec<(&'a str, String)>,
    pub body: Vec<u8>,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: impl Into<Cow<'a, str>>) -> Request<'a> {
        Request {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: impl Into<Cow<'a, str>>) -> Request<'a> {
        Request::new("GET", path)
    }

    /// A POST of `body` as `content_type`.
    pub fn post(path: impl Into<Cow<'a, str>>, content_type: &str, body: Vec<u8>) -> Request<'a> {
        Request::new("POST", path).with_body(content_type, body)
    }

    pub fn post_json(path: impl Into<Cow<'a, str>>, body: &Value) -> Request<'a> {
        Request::post(path, "application/json", body.to_string().into_bytes())
    }

    /// `body` as `content_type`.
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Request<'a> {
        self.body = body;
        self.header("content-type", content_type)
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Request<'a> {
        self.headers.push((name, value.into()));
        self
    }

    /// `Authorization: Basic base64(key)`.
    pub fn basic(self, key: &str) -> Request<'a> {
        self.header("authorization", basic(key))
    }

    fn to_bytes(&self, addr: SocketAddr) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

pub async fn http(addr: SocketAddr, request: Request<'_>) -> Response {
    raw_http(addr, &request.to_bytes(addr)).await
}

/// Sends `bytes` as they are and reads the response to the end: for malformed requests.
pub async fn raw_http(addr: SocketAddr, bytes: &[u8]) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(HTTP_WAIT, exchange)
        .await
        .expect("an HTTP response within 10 s");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Response {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let head_end = split.unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut body = split.map(|at| raw[at + 4..].to_vec()).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size_text = std::str::from_utf8(&raw[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        if size == 0 {
            return body;
        }
        let start = line_end + 2;
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}
