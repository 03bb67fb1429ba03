//! The spool: with Kafka dead, hung or back, every event answered 200 ends
//! in Kafka (and at Sentry); a full spool answers 503; a corrupt record is
//! counted and skipped; one process per spool directory; and a dead
//! background task stops the service.

use cyclops_common::ids::ProjectId;
use std::collections::HashSet;
use std::time::Duration;

use cyclops_common::config::{Config, ProjectKey};
use cyclops_common::record::topic_name;
use cyclops_tests::fake_sentry::FakeSentry;
use cyclops_tests::kafka::read_keys_until;
use cyclops_tests::load::{Answer, Target, delivered};
use cyclops_tests::own_kafka::OwnKafka;
use cyclops_tests::process::{ServiceProcess, Which};
use cyclops_tests::sdk::{python_sends, rust_sends};
use cyclops_tests::{sentry_auth, spawn_forwarder, spawn_ingest, test_config, unique, wait_for};
use serde_json::Value;

const KEY: &str = "5b0015b0015b0015b0015b0015b00150";
const PROJECT: u64 = 909;

fn config(brokers: &str) -> Config {
    let mut config = test_config();
    config.projects = vec![ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None }];
    config.kafka.brokers = brokers.into();
    config.kafka.topic_partitions = 1;
    config.ingest.produce_timeout_ms = 1500;
    config.ingest.spool.drain_retry_max_ms = 500;
    // Every event here is distinct; none may be dropped as a flood.
    config.ingest.flood.window_secs = 0;
    config.forwarder.topic_refresh_secs = 1;
    // One directory whatever the port: these tests restart ingest on its spool.
    config.ingest.spool.dir = std::env::temp_dir().join("cyclops-tests").join(unique("spool")).display().to_string();
    config
}

fn target(base: &str) -> Target {
    Target { base: base.to_owned(), project: PROJECT, key: KEY.to_owned() }
}

async fn send_one(client: &reqwest::Client, base: &str, body_bytes: usize) -> Answer {
    cyclops_tests::load::send_one(client, &target(base), body_bytes).await
}

async fn load(base: &str, n: usize, concurrency: usize) -> Vec<Answer> {
    cyclops_tests::load::load(&target(base), n, concurrency).await
}

/// 8 KiB events, one at a time, until one is not answered 200 (at most
/// `most`): the ids answered 200, and the first refusal.
async fn send_until_refused(client: &reqwest::Client, base: &str, most: usize) -> (HashSet<String>, Option<Answer>) {
    let mut stored = HashSet::new();
    for _ in 0..most {
        let answer = send_one(client, base, 8 << 10).await;
        if answer.status != 200 {
            return (stored, Some(answer));
        }
        stored.insert(answer.id);
    }
    (stored, None)
}

async fn count(base: &str) -> Value {
    reqwest::get(format!("{base}/count")).await.expect("count").json().await.expect("json")
}

#[tokio::test]
async fn with_kafka_killed_under_sdks_and_load_every_event_is_answered_200_and_reaches_sentry() {
    let sentry = FakeSentry::start().await.expect("fake sentry");
    let mut kafka = OwnKafka::start().await.expect("own kafka");
    kafka.warm_up().await.expect("warm");
    let mut config = config(&kafka.brokers);
    config.sentry.base_url = sentry.url();
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let forwarder = spawn_forwarder(config.clone()).await.expect("forwarder");
    let base = ingest.url("");
    let dsn = format!("http://{KEY}@{}/{PROJECT}", ingest.addr);

    let before = load(&base, 20, 4).await;
    assert!(before.iter().all(|a| a.status == 200 && a.durability.as_deref() == Some("kafka")), "{before:?}");

    kafka.kill().await.expect("kafka killed");
    let (during, python, rust) =
        tokio::join!(load(&base, 150, 8), python_sends(2, &dsn, "python during the outage"), async {
            rust_sends(&dsn, "rust during the outage").await
        });
    let refused: Vec<&Answer> = during.iter().filter(|a| a.status != 200).collect();
    assert!(refused.is_empty(), "every event answered 200 while Kafka is dead: {refused:?}");
    assert!(during.iter().any(|a| a.durability.as_deref() == Some("spool")), "spooled once Kafka is gone");
    let spool = &count(&base).await["spool"];
    assert!(spool["appended"].as_u64() >= Some(150), "{spool}");
    let ready: Value = reqwest::get(ingest.url("/ready")).await.expect("ready").json().await.expect("json");
    assert_eq!(ready["ready"], true, "still takes events: {ready}");
    assert_eq!(ready["degraded"], true, "{ready}");
    let spool_check = ready["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "spool")).cloned();
    assert!(spool_check.is_some_and(|c| c["detail"].as_str().is_some_and(|d| d.contains("spooling"))), "{ready}");

    kafka.restart().await.expect("kafka back");
    let mut ids: HashSet<String> = before.iter().chain(&during).map(|a| a.id.clone()).collect();
    ids.insert(python.expect("sentry-sdk sends").event_id);
    ids.insert(rust.expect("the sentry crate sends").event_id);
    let arrived = wait_for(Duration::from_secs(180), "every event at the fake Sentry", || async {
        (delivered(&sentry.requests(), &ids).len() == ids.len()).then_some(())
    })
    .await;
    let missing: Vec<String> = ids.difference(&delivered(&sentry.requests(), &ids)).cloned().collect();
    assert!(arrived.is_ok(), "{} of {} events never reached Sentry: {missing:?}", missing.len(), ids.len());
    let spool = wait_for(Duration::from_secs(30), "an empty spool", || async {
        let spool = count(&base).await["spool"].clone();
        (spool["records"] == 0).then_some(spool)
    })
    .await
    .expect("drained");
    assert!(spool["drained"].as_u64() >= Some(150), "{spool}");
    forwarder.stop().await.expect("forwarder stops");
    ingest.stop().await.expect("ingest stops");
}

#[tokio::test]
async fn ingest_killed_while_it_spools_delivers_every_answered_event_after_a_restart() {
    let mut kafka = OwnKafka::start().await.expect("own kafka");
    kafka.warm_up().await.expect("warm");
    let config = config(&kafka.brokers);
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    kafka.kill().await.expect("kafka killed");
    let first = ServiceProcess::spawn(Which::Ingest, &config, &[]).await.expect("ingest");
    let base = first.url("");
    // kill -9 while requests are being appended and fsynced.
    let sending = tokio::spawn({
        let base = base.clone();
        async move { load(&base, 400, 8).await }
    });
    wait_for(Duration::from_secs(30), "events spooling", || async {
        let spooled = reqwest::get(format!("{base}/count")).await.ok()?.json::<Value>().await.ok()?;
        (spooled["spool"]["appended"].as_u64() >= Some(50)).then_some(())
    })
    .await
    .expect("spooling");
    first.kill9().await.expect("kill -9");
    let answers = sending.await.expect("load");
    let answered: HashSet<String> = answers.iter().filter(|a| a.status == 200).map(|a| a.id.clone()).collect();
    assert!(answered.len() >= 50, "{} answered", answered.len());

    kafka.restart().await.expect("kafka back");
    let second = ServiceProcess::spawn(Which::Ingest, &config, &[]).await.expect("a new ingest on the same spool");
    let keys = read_keys_until(&kafka.brokers, &topic, &answered, Duration::from_secs(120)).await;
    let lost: Vec<&String> = answered.difference(&keys).collect();
    assert!(lost.is_empty(), "{} events answered 200 were lost: {lost:?}", lost.len());
    second.kill9().await.ok();
}

#[tokio::test]
async fn a_hung_broker_costs_one_produce_timeout_then_the_spool_answers() {
    let kafka = OwnKafka::start().await.expect("own kafka");
    kafka.warm_up().await.expect("warm");
    let mut config = config(&kafka.brokers);
    config.ingest.produce_timeout_ms = 1000;
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let base = ingest.url("");
    assert_eq!(load(&base, 1, 1).await[0].status, 200, "the topic exists");

    kafka.pause().expect("SIGSTOP");
    let first = load(&base, 4, 4).await;
    let then = load(&base, 40, 4).await;
    kafka.resume().expect("SIGCONT");
    for answer in first.iter().chain(&then) {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.took < Duration::from_millis(2500), "bounded by the produce timeout: {answer:?}");
    }
    let mut later: Vec<Duration> = then.iter().map(|a| a.took).collect();
    later.sort();
    let p99 = later[later.len() * 99 / 100];
    assert!(p99 < Duration::from_millis(500), "once Kafka is known hung, the spool answers: p99 {p99:?}");
    assert!(then.iter().all(|a| a.durability.as_deref() == Some("spool")), "{then:?}");

    let ids: HashSet<String> = first.iter().chain(&then).map(|a| a.id.clone()).collect();
    // A hung broker still writes what it had read before it hung: some
    // events are in Kafka twice (Sentry dedupes them by id).
    let keys = read_keys_until(&kafka.brokers, &topic, &ids, Duration::from_secs(120)).await;
    assert!(ids.is_subset(&keys), "{} of {} in Kafka", ids.intersection(&keys).count(), ids.len());
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn a_full_spool_answers_503_and_what_it_holds_still_drains() {
    let mut kafka = OwnKafka::start().await.expect("own kafka");
    kafka.warm_up().await.expect("warm");
    let mut config = config(&kafka.brokers);
    config.ingest.max_event_bytes = 16 << 10;
    config.ingest.max_envelope_bytes = 16 << 10;
    config.ingest.spool.max_bytes = 64 << 10;
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let base = ingest.url("");
    assert_eq!(load(&base, 1, 1).await[0].status, 200, "the topic exists");
    kafka.kill().await.expect("kafka killed");

    let client = reqwest::Client::new();
    let (spooled, full) = send_until_refused(&client, &base, 40).await;
    let full = full.expect("the spool fills up");
    assert_eq!(full.status, 503, "{full:?}");
    assert!((5..=8).contains(&spooled.len()), "64 KiB holds about seven 8 KiB events: {}", spooled.len());
    let response = client
        .post(format!("{base}/api/{PROJECT}/store/"))
        .header("x-sentry-auth", sentry_auth(KEY))
        .body(format!(r#"{{"message":"{}"}}"#, "y".repeat(9000)))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some(), "Retry-After");
    let counted = count(&base).await;
    assert!(counted["rejected_by_reason"]["spool_full"].as_u64() >= Some(2), "{counted}");

    kafka.restart().await.expect("kafka back");
    let keys = read_keys_until(&kafka.brokers, &topic, &spooled, Duration::from_secs(120)).await;
    assert!(spooled.is_subset(&keys), "what was spooled before the spool filled drains");
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn a_corrupt_spooled_record_is_counted_and_skipped_and_the_rest_drains_at_start() {
    // Spool five events against a Kafka that is not there (a closed port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut config = config(&format!("127.0.0.1:{closed}"));
    config.ingest.produce_timeout_ms = 500;
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config.clone()).await.expect("ingest");
    let answers = load(&ingest.url(""), 5, 1).await;
    assert!(answers.iter().all(|a| a.status == 200 && a.durability.as_deref() == Some("spool")), "{answers:?}");
    ingest.stop().await.expect("stops");

    // Change one stored byte of the third record, as a failing disk would.
    let db = std::path::Path::new(&config.ingest.spool.dir).join("spool.db");
    let conn = rusqlite::Connection::open(&db).expect("open the spool");
    let changed = conn
        .execute("UPDATE records SET value = CAST('garbage' AS BLOB) WHERE id = (SELECT id FROM records ORDER BY id LIMIT 1 OFFSET 2)", [])
        .expect("corrupt one");
    assert_eq!(changed, 1);
    drop(conn);

    // An ingest on the same spool, with the real Kafka: it drains at start.
    config.kafka.brokers = cyclops_tests::kafka_brokers();
    config.ingest.produce_timeout_ms = 5000;
    let ingest = spawn_ingest(config).await.expect("ingest on the same spool");
    let spool = wait_for(Duration::from_secs(60), "the spool drained", || async {
        let spool = count(&ingest.url("")).await["spool"].clone();
        (spool["records"] == 0).then_some(spool)
    })
    .await
    .expect("drained");
    assert_eq!((spool["drained"].as_u64(), spool["corrupt"].as_u64()), (Some(4), Some(1)), "{spool}");
    let expected: HashSet<String> =
        answers.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, a)| a.id.clone()).collect();
    let keys = read_keys_until(&cyclops_tests::kafka_brokers(), &topic, &expected, Duration::from_secs(30)).await;
    assert_eq!(keys, expected, "the four intact records, and not the corrupt one: {answers:?}, {spool}");
    ingest.stop().await.expect("stops");
}

#[tokio::test]
async fn a_second_ingest_on_the_same_spool_dir_refuses_to_start() {
    let config = config(&cyclops_tests::kafka_brokers());
    let first = spawn_ingest(config.clone()).await.expect("first");
    let second = spawn_ingest(config).await.expect_err("the spool dir is taken");
    let text = format!("{second:#}");
    assert!(text.contains("in use by another process") && text.contains("ingest.spool.dir"), "{text}");
    first.stop().await.expect("stops");
}

async fn ready_body(url: &str) -> Option<(u16, Value)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

#[tokio::test]
async fn a_failed_background_task_makes_each_service_unready_and_exit_non_zero() {
    let mut config = config(&cyclops_tests::kafka_brokers());
    config.ingest.shutdown_delay_ms = 3000;
    let fault = [(cyclops_common::supervise::FAULT_ENV, "1500")];
    let mut ingest = ServiceProcess::spawn(Which::Ingest, &config, &fault).await.expect("ingest");
    let ready = wait_for(Duration::from_secs(20), "/ready to turn 503", || async {
        ready_body(&ingest.url("/ready")).await.filter(|(status, _)| *status == 503)
    })
    .await
    .expect("unready");
    let tasks = ready.1["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "tasks")).cloned();
    assert!(
        tasks.is_some_and(|t| t["ok"] == false && t["detail"].to_string().contains("fault-injection")),
        "{ready:?}"
    );
    let exit = ingest.wait_exit(Duration::from_secs(30)).await.expect("ingest exits");
    assert!(!exit.success(), "non-zero, so that a supervisor restarts it: {exit:?}");

    let mut forwarder = ServiceProcess::spawn(Which::Forwarder, &config, &fault).await.expect("forwarder");
    let exit = forwarder.wait_exit(Duration::from_secs(30)).await.expect("forwarder exits");
    assert!(!exit.success(), "{exit:?}");
}

#[tokio::test]
async fn with_its_log_pipes_closed_ingest_still_serves_and_stops_on_sigterm() {
    let mut config = config(&cyclops_tests::kafka_brokers());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    config.ingest.port = port;
    let mut conf = tempfile::NamedTempFile::new().expect("conf");
    std::io::Write::write_all(&mut conf, toml::to_string(&config).expect("toml").as_bytes()).expect("write");
    let mut child = tokio::process::Command::new(cyclops_tests::process::binary("cyclops-ingest").expect("binary"))
        .arg("--conf")
        .arg(conf.path())
        .arg("-vvv")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    // The readers go away, as a `| tee` or a log shipper that died.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let base = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), "ingest to serve", || async {
        reqwest::get(format!("{base}/live")).await.ok().filter(|r| r.status() == 200)
    })
    .await
    .expect("serves with nobody reading its logs");
    // Requests log at debug: every line is a write to a closed pipe.
    assert!(load(&base, 5, 1).await.iter().all(|a| a.status == 200));
    cyclops_tests::process::signal(child.id().expect("pid"), "-TERM").expect("SIGTERM");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let exit = exit.expect("SIGTERM still stops it").expect("wait");
    assert!(exit.success(), "a graceful stop: {exit:?}");
}

#[tokio::test]
async fn in_enqueue_mode_events_kafka_then_fails_to_take_are_spooled_and_delivered() {
    let mut kafka = OwnKafka::start().await.expect("own kafka");
    kafka.warm_up().await.expect("warm");
    let mut config = config(&kafka.brokers);
    config.ingest.ack = cyclops_common::config::AckMode::Enqueue;
    config.ingest.produce_timeout_ms = 1000;
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let base = ingest.url("");
    assert_eq!(load(&base, 1, 1).await[0].durability.as_deref(), Some("queued"), "the topic exists");

    kafka.kill().await.expect("kafka killed");
    // Answered once queued; their deliveries fail a produce timeout later.
    let queued = load(&base, 20, 4).await;
    assert!(queued.iter().all(|a| a.status == 200), "{queued:?}");
    let spooled = wait_for(Duration::from_secs(30), "the failed deliveries in the spool", || async {
        let spool = count(&base).await["spool"].clone();
        (spool["appended"].as_u64() >= Some(20)).then_some(spool)
    })
    .await;
    assert!(spooled.is_ok(), "an event answered 200 whose delivery failed was not spooled");

    kafka.restart().await.expect("kafka back");
    let ids: HashSet<String> = queued.iter().map(|a| a.id.clone()).collect();
    let keys = read_keys_until(&kafka.brokers, &topic, &ids, Duration::from_secs(120)).await;
    assert!(ids.is_subset(&keys), "{} of {} in Kafka", ids.intersection(&keys).count(), ids.len());
    ingest.stop().await.expect("stops");
}

/// A tmpfs of `size`, unmounted on drop (the tests run as root, as CI does).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root (as CI has)");
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        std::process::Command::new("umount").arg("-l").arg(self.0.path()).status().ok();
    }
}

#[tokio::test]
async fn a_spool_whose_disk_is_full_answers_503_spool_error_and_keeps_what_it_has() {
    let disk = SmallDisk::mount("512k");
    let mut kafka = OwnKafka::start().await.expect("own kafka");
    kafka.warm_up().await.expect("warm");
    let mut config = config(&kafka.brokers);
    config.ingest.max_event_bytes = 16 << 10;
    config.ingest.max_envelope_bytes = 16 << 10;
    // Far more than the disk holds: the disk fills first.
    config.ingest.spool.max_bytes = 64 << 20;
    config.ingest.spool.dir = disk.0.path().join("spool").display().to_string();
    let topic = topic_name(&config.kafka.topic_prefix, ProjectId::new(PROJECT));
    let ingest = spawn_ingest(config).await.expect("ingest");
    let base = ingest.url("");
    assert_eq!(load(&base, 1, 1).await[0].status, 200, "the topic exists");
    kafka.kill().await.expect("kafka killed");

    let client = reqwest::Client::new();
    let (spooled, refused) = send_until_refused(&client, &base, 200).await;
    let refused = refused.expect("the disk fills up");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(!spooled.is_empty(), "some fit before the disk filled");
    let counted = count(&base).await;
    assert!(counted["rejected_by_reason"]["spool_error"].as_u64() >= Some(1), "{counted}");
    assert!(counted["spool"]["last_error"].as_str().is_some(), "{counted}");

    kafka.restart().await.expect("kafka back");
    let keys = read_keys_until(&kafka.brokers, &topic, &spooled, Duration::from_secs(120)).await;
    assert!(spooled.is_subset(&keys), "what was spooled before the disk filled still drains");
    // The disk is still full, so the drained records cannot be deleted:
    // they must not be sent again and again meanwhile. (A sleep, not a poll:
    // this waits for something that must not happen, through several drain
    // passes of at most 500 ms.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored =
        cyclops_tests::kafka::read_records_from(&kafka.brokers, &topic, usize::MAX, Duration::from_secs(5)).await;
    assert!(
        stored.len() <= 2 * (spooled.len() + 1),
        "{} records in Kafka for {} events",
        stored.len(),
        spooled.len() + 1
    );
    let spool = count(&base).await["spool"].clone();
    assert!(spool["records"].as_u64() >= Some(1), "not deleted while the disk is full: {spool}");
    ingest.stop().await.expect("stops");
}
