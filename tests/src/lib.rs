//! Helpers for the end-to-end tests: where the local stack is, unique names,
//! services started in-process on port 0, and polling with a deadline.
//!
//! The stack comes from `stack/stack.sh up` (`make test` runs it). Addresses
//! follow the same environment variables as the script: `KAFKA_PORT`,
//! `REDIS_PORT`, `PG_PORT`.
//!
//! [`fake_sentry::FakeSentry`] stands in for Sentry.

pub mod cluster;
pub mod fake_sentry;
pub mod fuzz_seeds;
pub mod kafka;
pub mod load;
pub mod own_kafka;
pub mod process;
pub mod redis_server;
pub mod sdk;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cyclops_common::config::Config;
use cyclops_common::shutdown::CancellationToken;
use tokio::task::JoinHandle;

/// Kafka bootstrap address of the local stack.
pub fn kafka_brokers() -> String {
    format!("127.0.0.1:{}", std::env::var("KAFKA_PORT").unwrap_or_else(|_| "9092".into()))
}

/// Redis URL of the local stack.
pub fn redis_url() -> String {
    format!("redis://127.0.0.1:{}/0", std::env::var("REDIS_PORT").unwrap_or_else(|_| "6379".into()))
}

/// PostgreSQL connection string of the local stack (user `postgres`, trust auth).
pub fn postgres_url() -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10",
        std::env::var("PG_PORT").unwrap_or_else(|_| "5432".into())
    )
}

/// `name` with a random suffix, so that tests never share topics, groups or keys.
pub fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// A configuration pointing at the local stack, on loopback port 0, with a
/// topic prefix of its own.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.kafka.brokers = kafka_brokers();
    config.kafka.topic_prefix = format!("{}-", unique("test"));
    config.redis.url = Some(redis_url().into());
    config.redis.key_prefix = format!("{}:", unique("flood"));
    // The services share one test thread of a debug build with the test's own
    // client: a 50 ms Redis deadline there would be a scheduling lottery, and
    // a flood count that falls back to in-process counting changes what passes.
    // (Tests of the fallback stop Redis, which fails fast.)
    config.redis.timeout_ms = 2_000;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    config.ingest.bind = loopback;
    config.ingest.port = 0;
    config.forwarder.bind = loopback;
    config.forwarder.port = 0;
    config.ingest.drain_timeout_secs = 5;
    // A spool of its own per test and per instance (several ingests may
    // share a config), outside the work tree.
    let spool = std::env::temp_dir().join("cyclops-tests").join(unique("spool"));
    config.ingest.spool.dir = spool.join("{port}").display().to_string();
    config.ingest.shutdown_delay_ms = 0;
    config.forwarder.group_id = unique("group");
    config.forwarder.drain_timeout_secs = 5;
    config
}

/// An `X-Sentry-Auth` header value for `key`.
pub fn sentry_auth(key: &str) -> String {
    format!("Sentry sentry_version=7, sentry_key={key}, sentry_client=cyclops-tests/1.0")
}

/// `data` gzipped.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    encoder.write_all(data).ok();
    encoder.finish().unwrap_or_default()
}

/// A random event id (32 lowercase hex characters).
pub fn event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A service started in-process. Dropped (a test that panics drops it), it
/// is told to stop: its background threads would otherwise keep the test's
/// runtime from shutting down, and a failing test would hang the suite
/// instead of failing.
#[derive(Debug)]
pub struct TestService {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestService {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Cancels the service and waits (bounded) for it to stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().ok_or_else(|| anyhow::anyhow!("stopped twice"))?;
        tokio::time::timeout(Duration::from_secs(15), task).await??
    }
}

/// Starts `cyclops-ingest` with `config`.
pub async fn spawn_ingest(config: Config) -> anyhow::Result<TestService> {
    cyclops_common::telemetry::init_tracing(1);
    let shutdown = CancellationToken::new();
    let ingest = cyclops_ingest::Ingest::build(config, shutdown.clone()).await?;
    let addr = ingest.local_addr();
    let task = tokio::spawn(async move { Ok(ingest.run().await?) });
    Ok(TestService { addr, shutdown, task: Some(task) })
}

/// Starts `cyclops-forwarder` with `config`.
pub async fn spawn_forwarder(config: Config) -> anyhow::Result<TestService> {
    cyclops_common::telemetry::init_tracing(1);
    let shutdown = CancellationToken::new();
    let forwarder = cyclops_forwarder::Forwarder::build(config, shutdown.clone()).await?;
    let addr = forwarder.local_addr();
    let task = tokio::spawn(async move { Ok(forwarder.run().await?) });
    Ok(TestService { addr, shutdown, task: Some(task) })
}

/// Polls `probe` until it returns `Some`, for at most `deadline`, backing off
/// from 10 ms to 500 ms between attempts.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= end {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
