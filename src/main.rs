//! `realtime`: read flags and env, start tracing, build the parts, run. No logic lives here.

mod allocator;
mod settings;

use std::process::ExitCode;

use settings::Cli;

fn main() -> ExitCode {
    // A bad flag value is a usage error like any other bad setting: 64, naming the flag.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(64);
        }
        Err(help_or_version) => {
            let _ = help_or_version.print();
            return ExitCode::SUCCESS;
        }
    };
    let (role, serve, check_only) = match cli.run() {
        settings::Run::Serve {
            role,
            args,
            check_only,
        } => (role, *args, check_only),
        settings::Run::Push(tool) => return settings::push_tool(tool),
    };
    let log_format = serve.log_format;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match log_format {
        settings::LogFormat::Json => logs.json().flatten_event(true).init(),
        settings::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }

    allocator::start();
    // Before the settings: the default `--max-connections` follows the raised limit.
    let file_limit = raise_file_limit();
    // Bad settings exit before anything binds, naming the setting (EX_USAGE).
    let settings = match settings::resolve(serve) {
        Ok(settings) if role != api::Role::Both && settings.gateway.redis.is_none() => {
            eprintln!(
                "realtime: --redis (REALTIME_REDIS_URL) is required: `realtime gateway` and `realtime api` are roles of a cluster sharing one Redis; `realtime serve` runs both in one process"
            );
            return ExitCode::from(64);
        }
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("realtime: {error}");
            return ExitCode::from(64);
        }
    };
    if check_only {
        println!("{}", settings.summary());
        return ExitCode::SUCCESS;
    }
    match file_limit {
        Ok(limit) => tracing::info!(
            limit,
            max_connections = settings.gateway.sockets.max_connections,
            "open files"
        ),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("realtime: cannot start the runtime: {error}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(settings, role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("realtime: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Pending connections the kernel may queue for us (capped by `net.core.somaxconn`). tokio's
/// default of 1,024 overflowed in reconnect storms (SYNs dropped, clients waiting a second to
/// retry).
const LISTEN_BACKLOG: u32 = 8192;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind does: a restarted server can take its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn run(settings: settings::Settings, role: api::Role) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = bind(settings.listen)
        .with_context(|| format!("cannot listen on {} (--listen)", settings.listen))?;
    let local = listener.local_addr()?;
    if let Some(dev_key) = &settings.generated_key {
        settings::print_dev_key(dev_key, local);
    }
    let admin = match settings.api.admin_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?,
        ),
        None => None,
    };
    // The process-wide recorder: libraries only record through the `metrics` facade.
    let mut api = settings.api;
    match api::prometheus().install_recorder() {
        Ok(handle) => api.metrics = Some(handle),
        Err(error) => tracing::warn!(%error, "metrics recorder not installed"),
    }
    api.role = role;
    let gateway = gateway::Gateway::new(settings.gateway);
    let push = settings.push;
    if push.web_push.is_some() || push.fcm.is_some() || push.apns.is_some() {
        gateway.start_push_services(push);
    }
    if let Some(admin) = admin {
        tracing::info!(admin = %admin.local_addr()?, "metrics and probes");
        tokio::spawn(api::serve_admin(
            admin,
            gateway.clone(),
            api.metrics.clone(),
        ));
    }
    gateway
        .connect_bus()
        .await
        .map_err(|e| anyhow::anyhow!("--redis: {e}"))?;
    let mode = match gateway.config().redis {
        Some(gateway::RedisTarget::Node(_)) => "clustered through Redis",
        Some(gateway::RedisTarget::Cluster(_)) => "clustered through Redis Cluster",
        Some(gateway::RedisTarget::Sentinel(_)) => "clustered through Redis Sentinel",
        None => "embedded, in-memory bus",
    };
    tracing::info!(listen = %local, server_id = gateway.server_id(), mode, ?role, allocator = allocator::NAME, "realtime serving");
    api::serve_with(listener, gateway, api, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: each connection is a file, and the
/// soft default (often 1,024) would end accepts long before memory does. Returns the new limit.
fn raise_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: draining connections");
}
