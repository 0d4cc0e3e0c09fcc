use crate::support::{block_on, Server};

/// A browser on a listed origin (`--cors-origins`): the preflight for the SDK's headers passes,
/// and the real request's response (errors included) is readable with credentials, which
/// ably-js asks for whenever it sends an Authorization header.
#[test]
fn browsers_on_listed_origins_may_use_the_rest_api_with_credentials() {
    let server = Server::start(&[
        "--keys",
        "app.k:secret",
        "--cors-origins",
        "https://app.example,https://other.example",
    ]);
    block_on(async {
        let preflight = "OPTIONS /channels/session%3A1/messages HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type, ably-agent, x-ably-version, x-ably-clientid\r\nConnection: close\r\n\r\n";
        let (status, head) = http_head(server.addr, preflight).await;
        assert!((200..300).contains(&status), "{head}");
        let allowed = header(&head, "access-control-allow-headers");
        for name in [
            "authorization",
            "content-type",
            "ably-agent",
            "x-ably-version",
            "x-ably-clientid",
        ] {
            assert!(allowed.contains(name), "{name} not allowed: {allowed}");
        }
        assert!(
            header(&head, "access-control-allow-methods").contains("post"),
            "{head}"
        );
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            "https://app.example"
        );
        assert_eq!(header(&head, "access-control-allow-credentials"), "true");

        let refused = "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let (status, head) = http_head(server.addr, refused).await;
        assert_eq!(status, 401);
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            "https://app.example"
        );
        assert_eq!(header(&head, "access-control-allow-credentials"), "true");
        assert!(
            header(&head, "access-control-expose-headers").contains("x-ably-errorcode"),
            "{head}"
        );
        assert_eq!(header(&head, "x-ably-errorcode"), "40101");

        // A refusal made at the edge (before any route) is readable cross-origin too.
        let long = format!(
            "GET /time?x={} HTTP/1.1\r\nHost: x\r\nOrigin: https://other.example\r\nConnection: close\r\n\r\n",
            "a".repeat(20 * 1024)
        );
        let (status, head) = http_head(server.addr, &long).await;
        assert_eq!(status, 414);
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            "https://other.example"
        );

        // Any other origin gets no Allow-Origin: its page cannot read the answer.
        let stranger = "GET /time HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n";
        let (status, head) = http_head(server.addr, stranger).await;
        assert_eq!(status, 200);
        assert_eq!(header(&head, "access-control-allow-origin"), "", "{head}");
    });
}

/// With no origins listed, any origin may read responses, but never with credentials: a page
/// elsewhere cannot make the browser send what it holds for this server.
#[test]
fn unlisted_origins_get_a_wildcard_without_credentials() {
    let server = Server::start(&["--keys", "app.k:secret"]);
    block_on(async {
        let preflight = "OPTIONS /channels/x/messages HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n";
        let (_, head) = http_head(server.addr, preflight).await;
        assert_eq!(header(&head, "access-control-allow-origin"), "*", "{head}");
        assert_eq!(
            header(&head, "access-control-allow-credentials"),
            "",
            "{head}"
        );

        let (status, head) = http_head(server.addr, "GET /time HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status, 200);
        assert_eq!(header(&head, "access-control-allow-origin"), "*", "{head}");
        assert_eq!(
            header(&head, "access-control-allow-credentials"),
            "",
            "{head}"
        );
    });
}

/// Status and the whole response head.
async fn http_head(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .expect("response within 10 s")
    .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (status, head)
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or("")
}
