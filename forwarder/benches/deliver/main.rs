//! Delivery benchmark of `cyclops-forwarder` (not a test: it prints numbers
//! and asserts nothing). Run with `make bench-forwarder`.
//!
//! The forwarder runs as its own process pinned to core 0, against the real
//! Kafka; this program (on core 1) writes the backlogs and plays Sentry: a
//! fake upstream that answers each request after a set latency and, when
//! capped, serves at most 16 requests at once (the rest wait, as at a
//! saturated Sentry). It measures, after a warm-up:
//!
//! - delivered events/s and the latency the upstream gave (arrival to
//!   answer, waiting included) with `adaptive` and with `cyclops` pacing,
//!   at 20 ms and 200 ms;
//! - the rate against an instant upstream, per core of forwarder CPU time;
//! - the rate against an instant upstream of envelopes that waited an hour
//!   in Kafka, whose `sent_at` is moved and which are compressed again
//!   (gzip), beside the same rate for store events sent as stored, and the
//!   bytes sent per event against the bytes stored;
//! - the forwarder's peak RSS while a backlog of one million events waits;
//! - the *bare consume-and-POST* loop ([`bare`]) against the same instant
//!   upstream, which the forwarder's rate is read against (a ratio holds
//!   across machines where absolute rates do not);
//! - with `CYCLOPS_BENCH_BASELINE_FORWARDER=PATH`, another build of the
//!   forwarder against the same instant upstream, for a before/after in one
//!   run (build it with `cargo build --release --bin cyclops-forwarder`).
#![expect(clippy::disallowed_types, reason = "a benchmark measures wall-clock time")]

use cyclops_common::ids::{EventId, ProjectId};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use cyclops_common::config::KafkaConfig;
use cyclops_common::config::{Config, PacingMode};
use cyclops_common::kafka::ClientBuilder;
use cyclops_common::record::{RecordHeaders, topic_name};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;

mod bare;

/// Set for the child that runs [`bare`], to its configuration's path.
const BARE_CONF_ENV: &str = "CYCLOPS_BENCH_BARE_CONF";
const BARE_NAME: &str = "bare consume-and-POST, instant upstream";

const KEY: &str = "bef0bef0bef0bef0bef0bef0bef0bef0";
const PROJECT: u64 = 1;
const CAPACITY: usize = 16;
/// Partitions of the backlog's topic (ingest's default).
const PARTITIONS: i32 = 4;

fn brokers() -> String {
    format!("127.0.0.1:{}", std::env::var("KAFKA_PORT").unwrap_or_else(|_| "9092".into()))
}

/// What the fake upstream saw.
struct Upstream {
    latency: Duration,
    slots: Option<Semaphore>,
    answered: AtomicU64,
    /// Request body bytes received.
    bytes: AtomicU64,
    /// Arrival to answer, µs.
    seen: Mutex<Histogram<u64>>,
}

async fn answer(State(up): State<Arc<Upstream>>, body: axum::body::Bytes) -> &'static str {
    let arrived = Instant::now();
    up.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let _slot = match &up.slots {
        Some(slots) => slots.acquire().await.ok(),
        None => None,
    };
    if !up.latency.is_zero() {
        tokio::time::sleep(up.latency).await;
    }
    up.answered.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut seen) = up.seen.lock() {
        seen.saturating_record(arrived.elapsed().as_micros() as u64);
    }
    "{}"
}

async fn start_upstream(latency: Duration, capped: bool) -> (String, Arc<Upstream>) {
    let up = Arc::new(Upstream {
        latency,
        slots: capped.then(|| Semaphore::new(CAPACITY)),
        answered: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        // 1 µs to 10 min, 3 significant figures.
        seen: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram")),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new().fallback(answer).with_state(up.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, up)
}

/// What a backlog holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Gzipped store events, received just now.
    Store,
    /// Gzipped envelopes (event, breadcrumbs, a session) received an hour
    /// ago: each has its `sent_at` moved and is compressed again.
    LateEnvelope,
}

/// A small gzipped store event, or a gzipped envelope, as ingest stores it.
fn body(n: usize, kind: Kind) -> Vec<u8> {
    let id = uuid::Uuid::new_v4().simple();
    let event = format!(
        r#"{{"event_id":"{id}","platform":"python","level":"error","exception":{{"values":[{{"type":"ZeroDivisionError","value":"division by zero ({n})","stacktrace":{{"frames":[{{"filename":"app/views.py","function":"checkout","lineno":42}},{{"filename":"app/cart.py","function":"total","lineno":7}}]}}}}]}},"tags":{{"route":"/checkout"}}}}"#
    );
    let plain = match kind {
        Kind::Store => event,
        Kind::LateEnvelope => {
            let crumbs: Vec<String> = (0..20)
                .map(|i| format!(r#"{{"type":"http","category":"httplib","data":{{"url":"https://api.example.com/v1/items/{i}","method":"GET","status_code":200}}}}"#))
                .collect();
            let event = event.replacen('{', &format!(r#"{{"breadcrumbs":{{"values":[{}]}},"#, crumbs.join(",")), 1);
            format!(
                "{{\"event_id\":\"{id}\",\"sent_at\":\"2026-11-22T10:00:00.000000Z\",\"sdk\":{{\"name\":\"sentry.python\",\"version\":\"2.19.0\"}}}}\n\
                 {{\"type\":\"event\",\"length\":{}}}\n{event}\n\
                 {{\"type\":\"session\"}}\n{{\"sid\":\"{id}\",\"status\":\"errored\",\"errors\":1,\"started\":\"2026-11-22T09:59:00Z\",\"attrs\":{{\"release\":\"shop@1.4.2\"}}}}\n",
                event.len()
            )
        }
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(plain.as_bytes()).expect("gzip");
    gz.finish().expect("gzip")
}

/// Writes `count` events of `kind` to the project's topic under `prefix`;
/// returns the mean stored body size, bytes.
async fn backlog(prefix: &str, count: usize, kind: Kind) -> f64 {
    // A bulk loader, tuned for throughput; the connection settings are [kafka]'s.
    let kafka = KafkaConfig { brokers: brokers(), ..KafkaConfig::default() };
    let producer: FutureProducer = ClientBuilder::new(&kafka, "cyclops-bench-loader")
        .into_client_config()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let topic = topic_name(prefix, ProjectId::new(PROJECT));
    let admin: AdminClient<DefaultClientContext> =
        ClientBuilder::new(&kafka, "cyclops-bench-admin").create_plain().expect("admin");
    let new = NewTopic::new(&topic, PARTITIONS, TopicReplication::Fixed(1));
    for created in admin.create_topics(&[new], &AdminOptions::new()).await.expect("create topic") {
        created.expect("topic created");
    }
    let bodies: Vec<Vec<u8>> = (0..256).map(|n| body(n, kind)).collect();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let received_at_ms = match kind {
        Kind::Store => 0,
        Kind::LateEnvelope => hour_ago.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as u64,
    };
    let (path, content_type) = match kind {
        Kind::Store => ("store", "application/json"),
        Kind::LateEnvelope => ("envelope", "application/x-sentry-envelope"),
    };
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for n in 0..count {
        let event_id = uuid::Uuid::new_v4().simple().to_string();
        let headers = RecordHeaders {
            method: "POST".into(),
            path: format!("/api/{PROJECT}/{path}/"),
            query: None,
            content_type: Some(content_type.into()),
            content_encoding: Some("gzip".into()),
            auth: Some(format!("Sentry sentry_version=7, sentry_key={KEY}")),
            event_id: EventId::new(event_id.clone()),
            project_id: ProjectId::new(PROJECT),
            received_at_ms,
            client_ip: Some("127.0.0.1".into()),
            user_agent: Some("sentry.python/2.19.0".into()),
            fingerprint: None,
            categories: vec!["error".into()],
        };
        let record =
            FutureRecord::to(&topic).key(&event_id).payload(&bodies[n % bodies.len()]).headers(headers.to_kafka());
        // Enqueued at once: the future only waits for Kafka's acknowledgement.
        pending.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
        if pending.len() >= 50_000 {
            while pending.len() > 25_000 {
                pending.next().await.expect("pending").expect("delivery future").expect("produced");
            }
        }
    }
    while let Some(sent) = pending.next().await {
        sent.expect("delivery future").expect("produced");
    }
    bodies.iter().map(Vec::len).sum::<usize>() as f64 / bodies.len() as f64
}

struct Forwarder {
    child: tokio::process::Child,
    pid: u32,
    _conf: tempfile::NamedTempFile,
}

/// What a run measures.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Runner {
    /// This build's forwarder.
    Forwarder,
    /// The [`bare`] loop.
    Bare,
    /// Another build of the forwarder, at this path.
    Baseline(String),
}

/// Starts `runner` on `config`.
async fn start_forwarder(config: &Config, runner: &Runner) -> Forwarder {
    let mut conf = tempfile::NamedTempFile::new().expect("temp file");
    conf.write_all(toml::to_string(config).expect("toml").as_bytes()).expect("write");
    let this = std::env::current_exe().expect("current exe");
    let program = match runner {
        Runner::Forwarder => env!("CARGO_BIN_EXE_cyclops-forwarder"),
        Runner::Bare => this.to_str().expect("utf-8 path"),
        Runner::Baseline(path) => path.as_str(),
    };
    let mut command = tokio::process::Command::from(cyclops_bench_support::pinned(program, 0));
    if *runner == Runner::Bare {
        command.env(BARE_CONF_ENV, conf.path());
    }
    let mut child = command
        .arg("--conf")
        .arg(conf.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("forwarder starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let started = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("status endpoints on") {
                return true;
            }
        }
        false
    };
    assert!(tokio::time::timeout(Duration::from_secs(30), started).await.unwrap_or(false), "forwarder started");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id().expect("pid");
    Forwarder { child, pid, _conf: conf }
}

fn config(upstream: &str, pacing: PacingMode, concurrency_max: u32) -> Config {
    let mut config = Config::default();
    let run = uuid::Uuid::new_v4().simple().to_string();
    config.kafka.brokers = brokers();
    config.kafka.topic_prefix = format!("bench-{run}-");
    config.forwarder.group_id = format!("bench-{run}");
    config.forwarder.bind = std::net::IpAddr::from([127, 0, 0, 1]);
    config.forwarder.port = 0;
    config.sentry.base_url = upstream.to_owned();
    config.forwarder.pacing = pacing;
    config.forwarder.concurrency_max = concurrency_max;
    config
}

struct Row {
    name: String,
    rate: f64,
    per_core: f64,
    p50_ms: f64,
    p90_ms: f64,
    rss_mib: f64,
    /// Mean body bytes per event, stored and sent.
    stored_bytes: f64,
    sent_bytes: f64,
}

/// One measured run: a backlog of `events` of `kind`, an upstream of
/// `latency` (serving 16 at once when `capped`), the forwarder in `pacing`.
struct Case {
    name: &'static str,
    runner: Runner,
    kind: Kind,
    pacing: PacingMode,
    latency: Duration,
    capped: bool,
    events: usize,
}

/// Runs one forwarder over a fresh backlog; measures for `measure` after `warmup`.
async fn run(case: Case, warmup: Duration, measure: Duration) -> Row {
    let Case { name, runner, kind, pacing, latency, capped, events } = case;
    let (url, up) = start_upstream(latency, capped).await;
    let config = config(&url, pacing, if capped { 64 } else { 512 });
    let stored_bytes = backlog(&config.kafka.topic_prefix, events, kind).await;
    let mut forwarder = start_forwarder(&config, &runner).await;
    tokio::time::sleep(warmup).await;
    if let Ok(mut seen) = up.seen.lock() {
        seen.reset();
    }
    let (count0, bytes0, cpu0, t0) = (
        up.answered.load(Ordering::Relaxed),
        up.bytes.load(Ordering::Relaxed),
        cyclops_bench_support::cpu_time(forwarder.pid).as_secs_f64(),
        Instant::now(),
    );
    tokio::time::sleep(measure).await;
    let (count1, bytes1, cpu1, elapsed) = (
        up.answered.load(Ordering::Relaxed),
        up.bytes.load(Ordering::Relaxed),
        cyclops_bench_support::cpu_time(forwarder.pid).as_secs_f64(),
        t0.elapsed(),
    );
    let delivered = (count1 - count0) as f64;
    let (p50_ms, p90_ms) = up
        .seen
        .lock()
        .map(|s| (s.value_at_quantile(0.5) as f64 / 1000.0, s.value_at_quantile(0.9) as f64 / 1000.0))
        .unwrap_or_default();
    let rss_mib = cyclops_bench_support::memory_mib(forwarder.pid, "VmHWM:");
    if count1 as usize >= events {
        eprintln!("warning: {name}: the backlog ran out during the measurement; the rate is a lower bound");
    }
    forwarder.child.kill().await.ok();
    Row {
        name: name.to_owned(),
        rate: delivered / elapsed.as_secs_f64(),
        per_core: delivered / (cpu1 - cpu0).max(1e-9),
        p50_ms,
        p90_ms,
        rss_mib,
        stored_bytes,
        sent_bytes: (bytes1 - bytes0) as f64 / delivered.max(1.0),
    }
}

/// Peak RSS of a forwarder with a backlog of `events` waiting (upstream 200 ms, 16 at once).
async fn rss_with_backlog(events: usize, watch: Duration) -> (f64, f64, u64) {
    let (url, up) = start_upstream(Duration::from_millis(200), true).await;
    let config = config(&url, PacingMode::Adaptive, 64);
    backlog(&config.kafka.topic_prefix, events, Kind::Store).await;
    let mut forwarder = start_forwarder(&config, &Runner::Forwarder).await;
    tokio::time::sleep(watch).await;
    let (peak, now) = (
        cyclops_bench_support::memory_mib(forwarder.pid, "VmHWM:"),
        cyclops_bench_support::memory_mib(forwarder.pid, "VmRSS:"),
    );
    forwarder.child.kill().await.ok();
    (peak, now, up.answered.load(Ordering::Relaxed))
}

/// Uncompressed to stored size of the late envelopes.
fn plain_ratio() -> f64 {
    let stored = body(0, Kind::LateEnvelope);
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&stored[..]), &mut plain).expect("gunzip");
    plain.len() as f64 / stored.len() as f64
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`.
    if let Some(conf) = std::env::var_os(BARE_CONF_ENV) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(bare::serve(std::path::Path::new(&conf), PROJECT));
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("delivery benchmark: skipped (run it with `make bench-forwarder`)");
        return;
    }
    // This program on core 1, the forwarder on core 0.
    cyclops_bench_support::run_on_core(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async {
        println!("cyclops-forwarder delivery benchmark: forwarder on core 0, Kafka backlog and fake Sentry on core 1");
        let ms20 = Duration::from_millis(20);
        let ms200 = Duration::from_millis(200);
        let (warm, warm3, measure) = (Duration::from_secs(5), Duration::from_secs(3), Duration::from_secs(10));
        let case =
            |name, kind, pacing, latency, capped, events| Case { name, runner: Runner::Forwarder, kind, pacing, latency, capped, events };
        let (store, late, instant) = (Kind::Store, Kind::LateEnvelope, Duration::ZERO);
        let (adaptive, cyclops) = (PacingMode::Adaptive, PacingMode::Cyclops);
        let baseline = std::env::var("CYCLOPS_BENCH_BASELINE_FORWARDER").ok().map(|path| {
            let name = "adaptive, instant upstream, baseline build";
            Case { runner: Runner::Baseline(path), ..case(name, store, adaptive, instant, false, 400_000) }
        });
        // CYCLOPS_BENCH_ONLY=instant: only the forwarder and the bare loop
        // against the instant upstream (a quick check, or to profile).
        if std::env::var("CYCLOPS_BENCH_ONLY").is_ok_and(|v| v == "instant") {
            let forwarder = run(case("adaptive, instant upstream", store, adaptive, instant, false, 400_000), warm3, measure).await;
            let bare = run(Case { runner: Runner::Bare, ..case(BARE_NAME, store, adaptive, instant, false, 400_000) }, warm3, measure).await;
            let before = match baseline {
                Some(case) => Some(run(case, warm3, measure).await),
                None => None,
            };
            for r in [Some(&forwarder), Some(&bare), before.as_ref()].into_iter().flatten() {
                println!("| {} | {:.0} events/s | {:.0} per core | peak RSS {:.1} MiB |", r.name, r.rate, r.per_core, r.rss_mib);
            }
            println!("forwarder: {:.0}% of bare consume-and-POST", 100.0 * forwarder.rate / bare.rate.max(1e-9));
            if let Some(before) = before {
                println!("baseline build: {:.0}% of bare consume-and-POST", 100.0 * before.rate / bare.rate.max(1e-9));
            }
            return;
        }
        let mut rows = vec![
            run(case("adaptive, 20 ms, 16 at once", store, adaptive, ms20, true, 15_000), warm, measure).await,
            run(case("cyclops, 20 ms, 16 at once", store, cyclops, ms20, true, 2_000), warm, measure).await,
            run(case("adaptive, 200 ms, 16 at once", store, adaptive, ms200, true, 2_000), warm, measure).await,
            run(case("cyclops, 200 ms, 16 at once", store, cyclops, ms200, true, 500), warm, measure).await,
            run(case("adaptive, instant upstream", store, adaptive, instant, false, 400_000), warm3, measure).await,
            run(Case { runner: Runner::Bare, ..case(BARE_NAME, store, adaptive, instant, false, 400_000) }, warm3, measure).await,
            run(
                case("adaptive, instant upstream, gzip envelopes an hour late (sent_at moved, gzip again)", late, adaptive, instant, false, 300_000),
                warm3,
                measure,
            )
            .await,
        ];
        if let Some(case) = baseline {
            rows.push(run(case, warm3, measure).await);
        }
        let (peak, now, sent) = rss_with_backlog(1_000_000, Duration::from_secs(20)).await;
        println!();
        let bare = &rows[5];
        println!("| run | events/s | vs bare consume-and-POST | events/s per forwarder core | upstream p50 ms | upstream p90 ms | peak RSS MiB | bytes stored / sent per event |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.0} | {:.0}% | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} |",
                r.name,
                r.rate,
                100.0 * r.rate / bare.rate.max(1e-9),
                r.per_core,
                r.p50_ms,
                r.p90_ms,
                r.rss_mib,
                r.stored_bytes,
                r.sent_bytes
            );
        }
        println!("| backlog of 1,000,000 events (200 ms, 16 at once; {sent} sent in 20 s) | | | | | | {peak:.1} (now {now:.1}) | |");
        let capacity = |latency: f64| CAPACITY as f64 / latency;
        let (a20, c20, a200, c200, instant, late) = (&rows[0], &rows[1], &rows[2], &rows[3], &rows[4], &rows[6]);
        println!();
        println!(
            "targets: adaptive >= 90% of capacity (20 ms: {:.0}% {}; 200 ms: {:.0}% {}); upstream p90 <= 1.2x unloaded, i.e. cyclops's one-at-a-time p50 (20 ms: {:.2}x {}; 200 ms: {:.2}x {}); \
             adaptive >= 10x cyclops (20 ms: {:.1}x {}; 200 ms: {:.1}x {}); instant >= 70% of bare consume-and-POST ({:.0}% {}); RSS <= 150 MiB with 1M waiting ({peak:.0} {})",
            100.0 * a20.rate / capacity(0.02),
            verdict(a20.rate >= 0.9 * capacity(0.02)),
            100.0 * a200.rate / capacity(0.2),
            verdict(a200.rate >= 0.9 * capacity(0.2)),
            a20.p90_ms / c20.p50_ms,
            verdict(a20.p90_ms <= 1.2 * c20.p50_ms),
            a200.p90_ms / c200.p50_ms,
            verdict(a200.p90_ms <= 1.2 * c200.p50_ms),
            a20.rate / c20.rate.max(1e-9),
            verdict(a20.rate >= 10.0 * c20.rate),
            a200.rate / c200.rate.max(1e-9),
            verdict(a200.rate >= 10.0 * c200.rate),
            100.0 * instant.rate / bare.rate.max(1e-9),
            verdict(instant.rate >= 0.7 * bare.rate),
            verdict(peak <= 150.0),
        );
        println!(
            "late envelopes: sent {:.2}x the stored bytes (uncompressed would be about {:.1}x); {:.0} events/s per core, {:.0}% of store events sent as stored",
            late.sent_bytes / late.stored_bytes.max(1.0),
            plain_ratio(),
            late.per_core,
            100.0 * late.per_core / instant.per_core.max(1e-9),
        );
    });
}
