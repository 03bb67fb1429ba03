//! Credentials: Redis with a password and over TLS, and no configured
//! secret in any log line, even at `-vvv` (debug).

use std::time::Duration;

use cyclops_common::config::ProjectKey;
use cyclops_tests::cluster::Cluster;
use cyclops_tests::fake_sentry::FakeSentry;
use cyclops_tests::load::{Target, load};
use cyclops_tests::process::{ServiceProcess, Which, signal};
use cyclops_tests::redis_server::OwnRedis;
use cyclops_tests::{postgres_url, sentry_auth, spawn_ingest, test_config, wait_for};
use serde_json::Value;

const KEY: &str = "5ec5ec5ec5ec5ec5ec5ec5ec5ec5ec5e";

async fn redis_check(base: &str) -> Option<Value> {
    let ready: Value = reqwest::get(format!("{base}/ready")).await.ok()?.json().await.ok()?;
    ready["checks"].as_array()?.iter().find(|c| c["name"] == "redis").cloned()
}

#[tokio::test]
async fn the_flood_filter_shares_its_counts_through_a_redis_with_a_password_over_tls() {
    let cluster = Cluster::lock().await.expect("cluster (for its certificates)");
    let tls = cluster.server_tls();
    drop(cluster);
    let redis = OwnRedis::start_with(Some("redis-pw-4711"), Some(&tls)).await.expect("rediss with requirepass");
    assert!(redis.url.starts_with("rediss://"), "{}", redis.url);
    let mut config = test_config();
    config.redis.url = Some(redis.url.clone().into());
    config.redis.tls_ca_location = Some(tls.ca.clone());
    config.projects = vec![ProjectKey { id: 31, public_key: KEY.into(), secret_key: None }];
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let check = wait_for(Duration::from_secs(20), "the redis check to pass", || async {
        redis_check(&ingest.url("")).await.filter(|c| c["ok"] == true)
    })
    .await
    .expect("redis answers PING with the password over TLS");
    assert!(!check.to_string().contains("redis-pw-4711"), "{check}");
    let answers = load(&Target { base: ingest.url(""), project: 31, key: KEY.into() }, 3, 1).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    // The counts are in that Redis, under this test's prefix.
    let mut conn = redis.client().get_multiplexed_async_connection().await.expect("connect");
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", config.redis.key_prefix)).query_async(&mut conn).await.expect("KEYS");
    assert!(!keys.is_empty(), "no flood counter under {}", config.redis.key_prefix);
    ingest.stop().await.expect("ingest stops");

    // The wrong password: refused, reported without it.
    let mut wrong = config.clone();
    wrong.redis.url = Some(redis.url.replace("redis-pw-4711", "not-it-0815").into());
    let ingest = spawn_ingest(wrong).await.expect("ingest");
    let check = wait_for(Duration::from_secs(20), "the redis check to fail", || async {
        redis_check(&ingest.url("")).await.filter(|c| c["ok"] == false)
    })
    .await
    .expect("refused");
    assert!(!check.to_string().contains("not-it-0815"), "{check}");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn no_configured_secret_appears_in_any_log_line_at_debug() {
    let cluster = Cluster::lock().await.expect("cluster");
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let redis = OwnRedis::start_with(Some("redis-secret-9731"), None).await.expect("redis with requirepass");
    let mut config = cluster.config();
    config.kafka = cluster.sasl_ssl(&config.kafka, &cluster.password());
    config.sentry.base_url = sentry.url();
    config.redis.url = Some(redis.url.clone().into());
    // PostgreSQL here trusts loopback, so any password is accepted: it still has to stay out of the log.
    let pg = postgres_url();
    let field = |name: &str| pg.split_whitespace().find_map(|kv| kv.strip_prefix(name)).unwrap_or_default().to_owned();
    config.ingest.sentry_database_url =
        Some(format!("postgres://postgres:pg-secret-5521@127.0.0.1:{}/postgres", field("port=")).into());
    config.projects = vec![ProjectKey { id: 32, public_key: KEY.into(), secret_key: Some("dsn-secret-3390".into()) }];
    let secrets = [cluster.password(), "redis-secret-9731".into(), "pg-secret-5521".into(), "dsn-secret-3390".into()];

    let ingest = ServiceProcess::spawn_verbose(Which::Ingest, &config, &[], "-vvv").await.expect("ingest");
    let forwarder = ServiceProcess::spawn_verbose(Which::Forwarder, &config, &[], "-vvv").await.expect("forwarder");
    let answers = load(&Target { base: ingest.url(""), project: 32, key: KEY.into() }, 5, 1).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    // A wrong secret key: refused, and the refusal is logged without either.
    let refused = reqwest::Client::new()
        .post(ingest.url("/api/32/store/"))
        .header("x-sentry-auth", format!("{}, sentry_secret=wrong-secret-1", sentry_auth(KEY)))
        .body(r#"{"message":"x"}"#)
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status().as_u16(), 403);
    wait_for(Duration::from_secs(60), "the events at Sentry", || async {
        (sentry.requests().len() >= 5).then_some(())
    })
    .await
    .expect("delivered over SASL_SSL");
    for service in [&ingest, &forwarder] {
        reqwest::get(service.url("/ready")).await.expect("ready");
        reqwest::get(service.url("/count")).await.expect("count");
    }
    let mut logs = Vec::new();
    for mut service in [ingest, forwarder] {
        signal(service.pid().expect("pid"), "-TERM").expect("SIGTERM");
        service.wait_exit(Duration::from_secs(30)).await.expect("exits");
        logs.push(service.log());
    }
    let log = logs.join("\n");
    assert!(log.contains("DEBUG"), "not a debug log: {log}");
    for secret in &secrets {
        let line = log.lines().find(|l| l.contains(secret.as_str()));
        assert!(line.is_none(), "a configured secret in the log: {line:?}");
    }
}
