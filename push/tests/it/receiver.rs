//! A push service on 127.0.0.1:0 (HTTP/1.1 and HTTP/2 without TLS): records every request and
//! answers as the test's script says.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) at: Instant,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header on {} {}", self.method, self.path))
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An answer: status, JSON or text body, extra headers; `hold` makes it wait for a permit.
#[derive(Clone, Default)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) hold: Option<Arc<Semaphore>>,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Reply {
        Reply {
            status,
            ..Reply::default()
        }
    }

    pub(crate) fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            headers: vec![("content-type", "application/json".into())],
            hold: None,
        }
    }
}

/// Given the request and how many came before it, the answer.
pub(crate) type Script = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

/// One TLS connection: the ALPN protocol agreed and the client's certificate (DER), if any.
pub(crate) struct Handshake {
    pub(crate) alpn: Option<Vec<u8>>,
    pub(crate) client_cert: Option<Vec<u8>>,
}

pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: mpsc::Receiver<Recorded>,
    hits: Arc<AtomicUsize>,
    /// Each answer's send time, in arrival order (for the breaker's cooldown).
    pub(crate) answered: Arc<Mutex<Vec<Instant>>>,
    /// Over TLS, what each connection's handshake agreed.
    pub(crate) tls: Arc<Mutex<Vec<Handshake>>>,
    scheme: &'static str,
}

impl Receiver {
    /// Plain HTTP/1.1 and HTTP/2 (h2c).
    pub(crate) async fn start(script: Script) -> Receiver {
        let (listener, receiver, app) = Receiver::parts(script, "http").await;
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        receiver
    }

    /// HTTPS with `tls`'s certificate, HTTP/2 agreed by ALPN.
    pub(crate) async fn start_tls(script: Script, tls: rustls::ServerConfig) -> Receiver {
        let (listener, receiver, app) = Receiver::parts(script, "https").await;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let seen = receiver.tls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    // A client refusing our certificate ends here, before any request.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, connection) = stream.get_ref();
                    seen.lock().unwrap().push(Handshake {
                        alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
                        client_cert: connection
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|cert| cert.to_vec()),
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await;
                });
            }
        });
        receiver
    }

    async fn parts(
        script: Script,
        scheme: &'static str,
    ) -> (tokio::net::TcpListener, Receiver, axum::Router) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (record, requests) = mpsc::channel(1024);
        let hits = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let handler = {
            let hits = hits.clone();
            let answered = answered.clone();
            move |method: Method, uri: Uri, version: Version, headers: HeaderMap, body: Bytes| {
                let hits = hits.clone();
                let answered = answered.clone();
                let script = script.clone();
                let record = record.clone();
                async move {
                    let recorded = Recorded {
                        method,
                        path: uri.path().to_owned(),
                        version,
                        headers,
                        body,
                        at: Instant::now(),
                    };
                    let index = hits.fetch_add(1, Ordering::SeqCst);
                    let reply = script(&recorded, index);
                    record
                        .try_send(recorded)
                        .expect("the test reads its requests");
                    if let Some(hold) = &reply.hold {
                        let _permit = hold.acquire().await.expect("open");
                    }
                    answered.lock().unwrap().push(Instant::now());
                    let mut response =
                        axum::response::Response::new(axum::body::Body::from(reply.body));
                    *response.status_mut() = StatusCode::from_u16(reply.status).expect("status");
                    for (name, value) in reply.headers {
                        response
                            .headers_mut()
                            .insert(name, value.parse().expect("header value"));
                    }
                    response
                }
            }
        };
        let receiver = Receiver {
            addr,
            requests,
            hits,
            answered,
            tls: Arc::new(Mutex::new(Vec::new())),
            scheme,
        };
        (listener, receiver, axum::Router::new().fallback(handler))
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The next request, or a panic after 10 s.
    pub(crate) async fn next(&mut self) -> Recorded {
        tokio::time::timeout(Duration::from_secs(10), self.requests.recv())
            .await
            .expect("a request within 10 s")
            .expect("receiver running")
    }
}

/// Polls `condition` (every 5 ms) until it holds; panics naming `what` after 10 s.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A `Gone` callback feeding a channel the test reads.
pub(crate) fn gone_channel() -> (
    Arc<dyn Fn(push::Gone) + Send + Sync>,
    mpsc::Receiver<push::Gone>,
) {
    let (tx, rx) = mpsc::channel(1024);
    (
        Arc::new(move |gone| {
            tx.try_send(gone).expect("the test reads its Gone reports");
        }),
        rx,
    )
}

/// The next `n` Gone reports, as (device, reason), sorted by device.
pub(crate) async fn gone_reports(
    gone: &mut mpsc::Receiver<push::Gone>,
    n: usize,
) -> Vec<(String, String)> {
    let mut reports = Vec::with_capacity(n);
    for _ in 0..n {
        let report = gone.recv().await.expect("a Gone report");
        reports.push((report.device_id.unwrap_or_default(), report.reason));
    }
    reports.sort();
    reports
}

/// Quick retries so tests run fast; everything else as in production.
pub(crate) fn fast_delivery() -> push::Delivery {
    push::Delivery {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(50),
        ..push::Delivery::default()
    }
}

/// The JWT's three parts: header and claims as JSON, the signing input, the raw signature.
pub(crate) fn split_jwt(token: &str) -> (serde_json::Value, serde_json::Value, String, Vec<u8>) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token: {token}");
    let header =
        serde_json::from_slice(&b64.decode(parts[0]).expect("header b64")).expect("header");
    let claims =
        serde_json::from_slice(&b64.decode(parts[1]).expect("claims b64")).expect("claims");
    let signature = b64.decode(parts[2]).expect("signature b64");
    (
        header,
        claims,
        format!("{}.{}", parts[0], parts[1]),
        signature,
    )
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The test CA (`fixtures/tls/`, made once with openssl, valid until 2126).
pub(crate) const TEST_CA: &str = include_str!("fixtures/tls/ca.pem");

/// A server certificate for 127.0.0.1 signed by `TEST_CA`, offering only h2; with
/// `client_auth`, a client certificate signed by `TEST_CA` is required.
pub(crate) fn tls_config(client_auth: bool) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(include_bytes!("fixtures/tls/server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .expect("server certificate");
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("fixtures/tls/server.key"))
        .expect("server key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(TEST_CA.as_bytes()).expect("CA"))
            .expect("CA added");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}
