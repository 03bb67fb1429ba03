//! The replicated 3-node cluster `stack/cluster.sh` runs (`make test` starts
//! it): its addresses, a configuration for it, and the faults the tests
//! inflict on it (kill -9, graceful stop, start again).
//!
//! Tests that use the cluster take [`Cluster::lock`] first: they kill its
//! nodes, so they run one at a time, and each leaves every node running.

use std::path::PathBuf;
use std::time::Duration;

use cyclops_common::config::{Config, KafkaConfig, SaslMechanism, SecurityProtocol};
use cyclops_common::kafka::ClientBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::{Mutex, MutexGuard};

use crate::redis_server::RedisTls;
use crate::test_config;

static LOCK: Mutex<()> = Mutex::const_new(());

fn port(var: &str, default: u16) -> u16 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tls_file(name: &str) -> String {
    let stack = std::env::var("CYCLOPS_STACK_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join(".stack"));
    stack.join("cluster/tls").join(name).display().to_string()
}

/// The cluster, held exclusively by one test.
#[derive(Debug)]
pub struct Cluster {
    _guard: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Waits for the other cluster tests, then makes sure every node runs
    /// (a test that failed midway may have left one down).
    pub async fn lock() -> anyhow::Result<Self> {
        let guard = LOCK.lock().await;
        let cluster = Self { _guard: guard };
        cluster.up().await?;
        Ok(cluster)
    }

    /// Plaintext bootstrap servers.
    pub fn brokers(&self) -> String {
        let base = port("KAFKA_CLUSTER_PORT", 19092);
        (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",")
    }

    /// SASL_SSL bootstrap servers.
    pub fn sasl_ssl_brokers(&self) -> String {
        let base = port("KAFKA_CLUSTER_SASL_SSL_PORT", 19292);
        (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",")
    }

    /// The CA that signed the brokers' certificates.
    pub fn ca(&self) -> String {
        tls_file("ca.pem")
    }

    /// The brokers' certificate and key (for 127.0.0.1), with their CA: for
    /// another loopback TLS server of a test's (a `rediss://` Redis).
    pub fn server_tls(&self) -> RedisTls {
        RedisTls { cert: tls_file("broker.pem"), key: tls_file("broker.key"), ca: self.ca() }
    }

    /// [`test_config`] on the cluster: topics replicated 3 times with
    /// `min.insync.replicas` 2, as production runs them.
    pub fn config(&self) -> Config {
        let mut config = test_config();
        config.kafka.brokers = self.brokers();
        config.kafka.topic_replication_factor = 3;
        config.kafka.topic_min_insync_replicas = Some(2);
        config
    }

    /// `[kafka]` for the SASL_SSL listener with SCRAM-SHA-512 and `password`.
    pub fn sasl_ssl(&self, kafka: &KafkaConfig, password: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: self.sasl_ssl_brokers(),
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some(std::env::var("KAFKA_CLUSTER_USER").unwrap_or_else(|_| "cyclops".into())),
            sasl_password: Some(password.into()),
            ssl_ca_location: Some(self.ca()),
            ..kafka.clone()
        }
    }

    /// The password `stack/cluster.sh` gave the SCRAM user.
    pub fn password(&self) -> String {
        std::env::var("KAFKA_CLUSTER_PASSWORD").unwrap_or_else(|_| "cyclops-secret".into())
    }

    async fn script(&self, args: &[&str]) -> anyhow::Result<()> {
        let out =
            tokio::process::Command::new("bash").arg(repo_root().join("stack/cluster.sh")).args(args).output().await?;
        anyhow::ensure!(
            out.status.success(),
            "stack/cluster.sh {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts whatever node is not running and waits until all answer.
    pub async fn up(&self) -> anyhow::Result<()> {
        self.script(&["up"]).await
    }

    /// `kill -9` of node `n` (1-3).
    pub async fn kill(&self, n: i32) -> anyhow::Result<()> {
        self.script(&["kill", &n.to_string()]).await
    }

    /// Graceful stop of node `n` (1-3).
    pub async fn stop(&self, n: i32) -> anyhow::Result<()> {
        self.script(&["stop", &n.to_string()]).await
    }

    /// The node that leads `topic`'s `partition`, from the cluster's metadata.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        let kafka = KafkaConfig { brokers: self.brokers(), ..KafkaConfig::default() };
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = ClientBuilder::new(&kafka, "cyclops-tests").create_plain()?;
            let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            metadata
                .topics()
                .first()
                .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
                .map(|p| p.leader())
                .filter(|leader| *leader >= 0)
                .ok_or_else(|| anyhow::anyhow!("{topic} partition {partition} has no leader"))
        })
        .await?
    }

    /// The node that coordinates consumer group `group`, as Kafka's own
    /// `kafka-consumer-groups --describe --state` reports it.
    pub async fn coordinator_of(&self, group: &str) -> anyhow::Result<i32> {
        let out = tokio::process::Command::new("bash")
            .arg(repo_root().join("stack/kafka-consumer-groups.sh"))
            .args(["--bootstrap-server", &self.brokers(), "--describe", "--state", "--group", group])
            .output()
            .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        // GROUP  COORDINATOR (ID)  ASSIGNMENT-STRATEGY  STATE  #MEMBERS
        // g      127.0.0.1:19093  (2)  ...
        text.lines()
            .filter(|line| line.starts_with(group))
            .find_map(|line| {
                let open = line.find('(')?;
                let close = line[open..].find(')')? + open;
                line[open + 1..close].trim().parse().ok()
            })
            .ok_or_else(|| anyhow::anyhow!("no coordinator for {group} in: {text}"))
    }
}
