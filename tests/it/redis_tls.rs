//! `rediss://` with a private CA: nodes on a TLS-only Redis, and on a TLS-only Redis Cluster
//! (sharded pub/sub included), verify the server against `--redis-ca-file`; without that CA, or
//! with another one, they refuse to start. (A TLS-only Sentinel set: `sentinel.rs`.)

use std::path::PathBuf;
use std::process::Command;

use test_support::Certificates;

use crate::redis_cluster::{one_channel_per_master, subscriber};
use crate::support::{
    block_on, nodes_at, numbered, publish_serial, rest, until_live, until_readyz, RedisCluster,
    RedisServer, Request, KEY,
};

/// A directory of certificates for one test, removed on drop.
pub(crate) struct Made {
    dir: PathBuf,
    pub(crate) certificates: Certificates,
}

impl Made {
    pub(crate) fn new(what: &str) -> Made {
        let dir = std::env::temp_dir().join(format!(
            "realtime-tls-{what}-{}-{}",
            std::process::id(),
            test_support::free_port()
        ));
        let certificates = Certificates::make(&dir);
        Made { dir, certificates }
    }

    pub(crate) fn ca(&self) -> &str {
        self.certificates.ca.to_str().expect("a UTF-8 path")
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `realtime serve` on `url` with `extra` flags, expected to fail at start: its stderr.
fn refused_start(url: &str, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_realtime"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            KEY,
            "--redis",
            url,
        ])
        .args(extra)
        .env_remove("REALTIME_REDIS_CA_FILE")
        .output()
        .expect("run realtime");
    assert!(!output.status.success(), "started: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Neither an unknown CA nor no CA at all (the public roots) gets past verification.
pub(crate) fn assert_verification_refuses(url: &str) {
    let stderr = refused_start(url, &[]);
    assert!(
        stderr.contains("--redis") && stderr.contains("certificate"),
        "without --redis-ca-file: {stderr}"
    );
    let other = Made::new("other");
    let stderr = refused_start(url, &["--redis-ca-file", other.ca()]);
    assert!(
        stderr.contains("--redis") && stderr.contains("certificate"),
        "with another CA: {stderr}"
    );
}

#[test]
fn nodes_on_a_tls_redis_share_the_bus_verified_by_the_private_ca() {
    let made = Made::new("node");
    let redis = RedisServer::start_tls(&made.certificates);
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let nodes = nodes_at(&redis.url(), 2, &["--redis-ca-file", made.ca()]);
    block_on(async {
        for node in &nodes {
            until_readyz(node, 200).await;
        }
        let channels = ["tls:1".to_owned()];
        let mut sockets = [subscriber(&nodes[1], &channels).await];
        until_live(&nodes[0], &channels, &mut sockets).await;

        let serial = publish_serial(&nodes[0], "tls:1", 7).await;
        assert_eq!(numbered(&mut sockets[0], 1).await, ["7"], "delivered on B");
        let (status, body) = rest(
            nodes[1].addr,
            Request::get("/channels/tls:1/messages").basic(KEY),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (page[0]["data"].as_str(), page[0]["serial"].as_str()),
            (Some("7"), Some(serial.as_str())),
            "in B's history: {page}"
        );
    });
    assert_verification_refuses(&redis.url());
}

#[test]
fn nodes_on_a_tls_redis_cluster_use_sharded_pub_sub_over_tls() {
    let made = Made::new("cluster");
    let cluster = RedisCluster::start_tls(&made.certificates);
    assert!(
        cluster.url().starts_with("rediss+cluster://"),
        "{}",
        cluster.url()
    );
    let channels = one_channel_per_master(&cluster);
    // One seed: the other masters are found through the slot map and reached over TLS too.
    let nodes = nodes_at(&cluster.seed_url(0), 2, &["--redis-ca-file", made.ca()]);
    block_on(async {
        for node in &nodes {
            until_readyz(node, 200).await;
        }
        let mut sockets = [subscriber(&nodes[1], &channels).await];
        until_live(&nodes[0], &channels, &mut sockets).await;
        for (master, channel) in channels.iter().enumerate() {
            let shard = cluster.cli(master, &["PUBSUB", "SHARDCHANNELS"]);
            assert!(
                shard.contains(&format!("rt:ch:{{{channel}}}")),
                "SSUBSCRIBEd on master {master}: {shard}"
            );
        }
        for (n, channel) in channels.iter().enumerate() {
            publish_serial(&nodes[0], channel, n).await;
            assert_eq!(
                numbered(&mut sockets[0], 1).await,
                [n.to_string()],
                "{channel} delivered on B"
            );
        }
    });
    assert_verification_refuses(&cluster.url());
}

#[test]
fn a_redis_asking_for_client_certificates_gets_the_configured_one() {
    let made = Made::new("mutual");
    let redis = RedisServer::start_mutual_tls(&made.certificates);
    let stderr = refused_start(&redis.url(), &["--redis-ca-file", made.ca()]);
    assert!(
        stderr.contains("--redis"),
        "without a client certificate: {stderr}"
    );
    let path = |p: &PathBuf| p.to_str().expect("a UTF-8 path").to_owned();
    let (cert, key) = (
        path(&made.certificates.client_cert),
        path(&made.certificates.client_key),
    );
    let flags = [
        "--redis-ca-file",
        made.ca(),
        "--redis-client-cert",
        &cert,
        "--redis-client-key",
        &key,
    ];
    let nodes = nodes_at(&redis.url(), 2, &flags);
    block_on(async {
        for node in &nodes {
            until_readyz(node, 200).await;
        }
        let channels = ["mtls:1".to_owned()];
        let mut sockets = [subscriber(&nodes[1], &channels).await];
        until_live(&nodes[0], &channels, &mut sockets).await;
    });
}
