//! `api::serve_with` inside the test process, on `127.0.0.1:0`, with a shutdown future (STYLE.md:
//! servers take a listener and a shutdown future).

use std::net::SocketAddr;
use std::sync::OnceLock;

use gateway::{Config, Gateway};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The process-wide recorder `/metrics` renders: `main` installs it in the binary, this once
/// per test process.
fn metrics() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| api::prometheus().install_recorder().ok())
        .clone()
}

/// A gateway served on a loopback port by a task of the current runtime; dropping it (or
/// [`InProcess::begin_shutdown`]) resolves the shutdown future.
pub struct InProcess {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    shutdown: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    /// Joins the cluster first when `config.redis` is set (as `main` does before serving).
    pub async fn start(config: Config) -> InProcess {
        let gateway = Gateway::new(config);
        gateway
            .connect_bus()
            .await
            .expect("the Redis of Config::redis reachable");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let (shutdown, on_shutdown) = oneshot::channel::<()>();
        let api = api::Config {
            metrics: metrics(),
            ..api::Config::default()
        };
        let serve = tokio::spawn(api::serve_with(
            listener,
            gateway.clone(),
            api,
            async move {
                let _ = on_shutdown.await;
            },
        ));
        InProcess {
            addr,
            gateway,
            shutdown: Some(shutdown),
            serve: Some(serve),
        }
    }

    /// Resolves the shutdown future given to `api::serve` and hands back the serve task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.serve.take().expect("shut down once")
    }
}
