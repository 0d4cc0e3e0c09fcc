//! `storm`: N clients connect at the same instant (token auth by default: each gets its own
//! token beforehand, over REST, outside the measurement). Connects/s and connect-time
//! percentiles; then all attach one channel and one REST publish checks each got it once.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::{ably_target, account, connect_failures, ensure_fds, run_id, Readers};
use crate::cli::{Shared, StormArgs, StormAuth};
use crate::clock;
use crate::ledger::{Latencies, Schedule};
use crate::payload::Stamp;
use crate::report::{connect_time_metrics, Report};
use crate::rest::Rest;
use crate::target::ably::Credentials;
use crate::target::{Connection, Target};

/// Token requests in flight at once while preparing.
const TOKEN_CONCURRENCY: usize = 32;

pub async fn run(shared: &Shared, args: &StormArgs) -> anyhow::Result<Report> {
    ensure_fds(args.connections)?;
    let rest = Rest::new(&shared.url, &shared.key)?;
    let credentials = match args.auth {
        StormAuth::Key => Credentials::Key(shared.key.clone()),
        StormAuth::Token => Credentials::Tokens(Arc::new(
            tokens(&rest, args.connections, shared.quiet).await?,
        )),
    };
    let target = ably_target(shared, credentials)?;
    let mut report = Report::new("storm");
    report.metric("connections", args.connections);
    report.metric(
        "auth",
        match args.auth {
            StormAuth::Key => "key",
            StormAuth::Token => "token",
        },
    );

    // Every client waits for the same signal, then connects.
    let (go, on_go) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for client in 0..args.connections {
        let target = target.clone();
        let mut on_go = on_go.clone();
        tasks.spawn(async move {
            let _ = on_go.wait_for(|go| *go).await;
            let started = Instant::now();
            let connection = target.connect(client).await;
            (connection, started.elapsed().as_micros() as u64)
        });
    }
    let bar = crate::progress::counter(args.connections as u64, "storm", shared.quiet);
    tokio::task::yield_now().await;
    let started = Instant::now();
    let _ = go.send(true);
    let mut connections = Vec::with_capacity(args.connections);
    let mut connect_us = Vec::with_capacity(args.connections);
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        bar.inc(1);
        match result {
            Ok((Ok(connection), us)) => {
                connections.push(connection);
                connect_us.push(us);
            }
            Ok((Err(error), _)) => failures.push(format!("{error:#}")),
            Err(error) => failures.push(format!("connect task: {error}")),
        }
    }
    let storm = started.elapsed();
    bar.finish_and_clear();
    report.metric_f64("storm_s", storm.as_secs_f64());
    report.metric_f64(
        "connects_per_s",
        connections.len() as f64 / storm.as_secs_f64(),
    );
    connect_failures(&mut report, &failures);
    connect_time_metrics(&mut report, connect_us);
    if !failures.is_empty() {
        return Ok(report);
    }

    // Everyone on one channel; one publication each.
    let channel = format!("storm:{}", run_id());
    let permits = Arc::new(Semaphore::new(shared.connect_concurrency.max(1)));
    let mut attaching = JoinSet::new();
    for mut connection in connections {
        let channel = channel.clone();
        let permits = permits.clone();
        attaching.spawn(async move {
            let _permit = permits.acquire_owned().await;
            connection.subscribe(&channel).await.map(|()| connection)
        });
    }
    let mut attached = Vec::new();
    while let Some(result) = attaching.join_next().await {
        match result {
            Ok(Ok(connection)) => attached.push((0, connection)),
            Ok(Err(error)) => report.fail(format!("attach: {error:#}")),
            Err(error) => report.fail(format!("attach task: {error}")),
        }
    }
    let n_attached = attached.len() as u64;
    let schedule: Schedule = Arc::new(|_, _| 0);
    let latencies = Arc::new(Latencies::default());
    let readers = Readers::spawn(attached, |_| 0, &schedule, &latencies);
    let stamp = Stamp {
        publisher: 0,
        seq: 0,
        sent_us: clock::now_us(),
    };
    let mut owed = vec![0];
    match rest.publish(&channel, stamp.encode(64)).await {
        Ok(()) => {
            owed[0] = 1;
            super::wait_for_deliveries(&latencies, n_attached, shared.drain_timeout).await;
        }
        Err(error) => report.fail(format!("REST publish: {error:#}")),
    }
    let ledgers = readers.finish().await;
    account(&mut report, &ledgers, &owed);
    super::latency_metrics(&mut report, &latencies);
    Ok(report)
}

async fn tokens(rest: &Rest, n: usize, quiet: bool) -> anyhow::Result<Vec<String>> {
    let bar = crate::progress::counter(n as u64, "tokens", quiet);
    let permits = Arc::new(Semaphore::new(TOKEN_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for client in 0..n {
        let rest = rest.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let token = rest.request_token(&format!("storm-{client}"), None).await;
            (client, token)
        });
    }
    let mut tokens = vec![String::new(); n];
    while let Some(result) = tasks.join_next().await {
        let (client, token) = result.context("token task")?;
        tokens[client] = token.context("requesting a token")?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(tokens)
}
