//! On the replicated 3-node cluster (`stack/cluster.sh`, replication 3,
//! `min.insync.replicas` 2): what a broker failure does to ingest and the
//! forwarder, and the SASL_SSL listener with SCRAM.
//!
//! The consumer group on the cluster is `cluster_group.rs`'s.
//!
//! Each test holds [`Cluster::lock`]: they kill nodes, so they run one at a
//! time, and each leaves every node running.
#![expect(clippy::disallowed_types, reason = "these tests measure wall-clock failover times")]

use cyclops_common::ids::ProjectId;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use cyclops_common::config::{Config, ProjectKey};
use cyclops_common::record::topic_name;
use cyclops_tests::cluster::Cluster;
use cyclops_tests::fake_sentry::FakeSentry;
use cyclops_tests::load::{Answer, Target, delivered, duplicates, load, load_until, spooled};
use cyclops_tests::process::{ServiceProcess, Which};
use cyclops_tests::sdk::{python_sends, rust_sends};
use cyclops_tests::{TestService, spawn_forwarder, spawn_ingest, wait_for};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub(crate) const KEY: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";

pub(crate) fn config(cluster: &Cluster, project: u64, sentry: &FakeSentry) -> Config {
    let mut config = cluster.config();
    config.projects = vec![ProjectKey { id: project, public_key: KEY.into(), secret_key: None }];
    config.sentry.base_url = sentry.url();
    // One partition: one leader to kill.
    config.kafka.topic_partitions = 1;
    config.ingest.produce_timeout_ms = 3000;
    config.ingest.spool.drain_retry_max_ms = 500;
    config.ingest.flood.window_secs = 0;
    config.forwarder.topic_refresh_secs = 1;
    config
}

pub(crate) fn target(ingest: &TestService, project: u64) -> Target {
    Target { base: ingest.url(""), project, key: KEY.into() }
}

async fn ready(service: &TestService) -> (u16, Value) {
    let response = reqwest::get(service.url("/ready")).await.expect("ready");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// Waits until the fake Sentry has every one of `ids`; panics naming the missing.
pub(crate) async fn all_arrive(sentry: &FakeSentry, ids: &HashSet<String>) {
    if let Err(missing) = arrival(sentry, ids).await {
        panic!("{missing}");
    }
}

/// Waits until the fake Sentry has every one of `ids`; names the missing when it does not.
pub(crate) async fn arrival(sentry: &FakeSentry, ids: &HashSet<String>) -> Result<(), String> {
    let arrived = wait_for(Duration::from_secs(180), "every event at the fake Sentry", || async {
        (delivered(&sentry.requests(), ids).len() == ids.len()).then_some(())
    })
    .await;
    let missing: Vec<String> = ids.difference(&delivered(&sentry.requests(), ids)).cloned().collect();
    match arrived {
        Ok(()) => Ok(()),
        Err(_) => {
            Err(format!("{} of {} events answered 200 never reached Sentry: {missing:?}", missing.len(), ids.len()))
        }
    }
}

#[tokio::test]
async fn killing_the_partition_leader_under_load_loses_no_event() {
    let cluster = Cluster::lock().await.expect("cluster");
    let sentry = FakeSentry::start().await.expect("fake sentry");
    const PROJECT: u64 = 1001;
    let config = config(&cluster, PROJECT, &sentry);
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config.clone()).await.expect("forwarder");
    let target = target(&ingest, PROJECT);
    let dsn = format!("http://{KEY}@{}/{PROJECT}", ingest.addr);
    let first = load(&target, 5, 1).await;
    assert!(first.iter().all(|a| a.status == 200), "{first:?}");
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let leader = cluster.leader_of(&topic, 0).await.expect("leader");

    let stop = CancellationToken::new();
    let sending = tokio::spawn({
        let (target, stop) = (target.clone(), stop.clone());
        // At most 4 / 25 ms = 160 events/s, as a steady load the debug-built
        // forwarder delivers well within the deadline.
        async move { load_until(&target, 4, Duration::from_millis(25), 10_000, stop).await }
    });
    wait_for(Duration::from_secs(60), "deliveries under load", || async {
        (sentry.requests().len() >= 30).then_some(())
    })
    .await
    .expect("delivering");
    let killed_at = Instant::now();
    cluster.kill(leader).await.expect("kill -9 the leader");
    let (python, rust) = tokio::join!(python_sends(2, &dsn, "python during the election"), async {
        rust_sends(&dsn, "rust during the election").await
    });
    let new_leader = wait_for(Duration::from_secs(60), "a new leader", || async {
        cluster.leader_of(&topic, 0).await.ok().filter(|l| *l != leader)
    })
    .await
    .expect("leadership moved");
    let elected_after = killed_at.elapsed();
    // Delivery goes on after the election: more arrive than had at the kill.
    let at_election = sentry.requests().len();
    wait_for(Duration::from_secs(60), "deliveries after the election", || async {
        (sentry.requests().len() >= at_election + 50).then_some(())
    })
    .await
    .expect("the forwarder delivers again");
    stop.cancel();
    let answers = sending.await.expect("load");
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(refused.is_empty(), "every event answered 200 through the election: {refused:?}");

    let mut ids: HashSet<String> = first.iter().chain(&answers).map(|a| a.id.clone()).collect();
    ids.insert(python.expect("sentry-sdk sends").event_id);
    ids.insert(rust.expect("the sentry crate sends").event_id);
    all_arrive(&sentry, &ids).await;
    let (spooled, span) = spooled(&answers);
    let dups = duplicates(&sentry.requests(), &ids);
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!(
        "leader kill: node {leader} -> {new_leader} after {elected_after:?}; {} events answered 200, {spooled} from the \
         spool over {span:?}, slowest answer {slowest:?}; lost 0; duplicates at Sentry {dups}",
        answers.len()
    );
    // At least once: a retry after a lost acknowledgement may repeat what was in flight, never more.
    assert!(dups <= answers.len() / 10 + 20, "{dups} duplicates of {} events", answers.len());
    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
    cluster.up().await.expect("the node back");
}

#[tokio::test]
async fn below_min_insync_replicas_ingest_spools_and_everything_arrives_once_the_brokers_return() {
    let cluster = Cluster::lock().await.expect("cluster");
    let sentry = FakeSentry::start().await.expect("fake sentry");
    const PROJECT: u64 = 1002;
    let config = config(&cluster, PROJECT, &sentry);
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config.clone()).await.expect("forwarder");
    let target = target(&ingest, PROJECT);
    let before = load(&target, 10, 2).await;
    assert!(before.iter().all(|a| a.status == 200 && a.durability.as_deref() == Some("kafka")), "{before:?}");
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let leader = cluster.leader_of(&topic, 0).await.expect("leader");
    // Two followers down: the leader lives and refuses writes (NOT_ENOUGH_REPLICAS).
    let followers: Vec<i32> = (1..=3).filter(|n| *n != leader).collect();
    for n in &followers {
        cluster.stop(*n).await.expect("stop a follower");
    }
    let during = load(&target, 60, 4).await;
    let refused: Vec<&Answer> = during.iter().filter(|a| a.status != 200).collect();
    assert!(refused.is_empty(), "answered 200 below min.insync.replicas: {refused:?}");
    let (spooled, span) = spooled(&during);
    assert!(spooled > 0, "spooled while Kafka refuses writes: {during:?}");
    let (_, ingest_ready) = ready(&ingest).await;
    assert_eq!(ingest_ready["ready"], true, "ingest takes events: {ingest_ready}");

    cluster.up().await.expect("the followers back");
    let ids: HashSet<String> = before.iter().chain(&during).map(|a| a.id.clone()).collect();
    all_arrive(&sentry, &ids).await;
    let spool = wait_for(Duration::from_secs(60), "an empty spool", || async {
        let count: Value = reqwest::get(ingest.url("/count")).await.ok()?.json().await.ok()?;
        (count["spool"]["records"] == 0).then_some(count["spool"].clone())
    })
    .await
    .expect("drained");
    eprintln!(
        "below min.insync.replicas: {spooled} of {} events spooled over {span:?}; drained {}; lost 0; duplicates {}",
        during.len(),
        spool["drained"],
        duplicates(&sentry.requests(), &ids)
    );
    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn both_services_run_over_sasl_ssl_with_scram() {
    let cluster = Cluster::lock().await.expect("cluster");
    let sentry = FakeSentry::start().await.expect("fake sentry");
    const PROJECT: u64 = 1003;
    let mut config = config(&cluster, PROJECT, &sentry);
    config.kafka = cluster.sasl_ssl(&config.kafka, &cluster.password());
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config.clone()).await.expect("forwarder");
    let answers = load(&target(&ingest, PROJECT), 5, 1).await;
    assert!(answers.iter().all(|a| a.status == 200 && a.durability.as_deref() == Some("kafka")), "{answers:?}");
    let ids: HashSet<String> = answers.iter().map(|a| a.id.clone()).collect();
    all_arrive(&sentry, &ids).await;
    assert!(sentry.requests().iter().all(|r| r.header("x-sentry-auth").is_some_and(|a| a.contains(KEY))));
    for service in [&ingest, &forwarder] {
        let (status, body) = ready(service).await;
        assert_eq!(status, 200, "{body}");
    }
    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn a_wrong_kafka_password_makes_both_services_unready_naming_authentication() {
    let cluster = Cluster::lock().await.expect("cluster");
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let mut config = config(&cluster, 1004, &sentry);
    config.kafka = cluster.sasl_ssl(&config.kafka, "not-the-password");
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config.clone()).await.expect("forwarder");
    for service in [&ingest, &forwarder] {
        let last = std::sync::Mutex::new(Value::Null);
        let body = wait_for(Duration::from_secs(30), "/ready to say authentication failed", || async {
            let (status, body) = ready(service).await;
            if let Ok(mut last) = last.lock() {
                *last = body.clone();
            }
            let kafka = body["checks"].as_array()?.iter().find(|c| c["name"] == "kafka")?.clone();
            let names_it = kafka["detail"].as_str().is_some_and(|d| d.contains("authentication failed"));
            (status == 503 && names_it).then_some(body)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; /ready said {:?}", last.lock().map(|l| l.to_string())));
        let detail = body.to_string();
        assert!(detail.contains("kafka.sasl_password"), "says what to fix: {detail}");
        assert!(!detail.contains("not-the-password"), "never the password: {detail}");
    }
    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn an_existing_topic_with_fewer_replicas_than_configured_is_named_at_start() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let cluster = Cluster::lock().await.expect("cluster");
    let sentry = FakeSentry::start().await.expect("fake sentry");
    const PROJECT: u64 = 1005;
    let config = config(&cluster, PROJECT, &sentry);
    // Made before the factor was raised: one replica.
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        cyclops_common::kafka::ClientBuilder::new(&config.kafka, "cyclops-tests").create_plain().expect("admin");
    let created = admin
        .create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    for which in [Which::Ingest, Which::Forwarder] {
        let service = ServiceProcess::spawn(which, &config, &[]).await.expect("service");
        let line = wait_for(Duration::from_secs(30), "the under-replication warning", || async {
            service.log().lines().find(|l| l.contains("fewer replicas") && l.contains(&topic)).map(str::to_owned)
        })
        .await
        .expect("warned, naming the topic");
        assert!(line.contains("replicas=1") && line.contains("configured=3"), "{line}");
        service.kill9().await.ok();
    }
}
