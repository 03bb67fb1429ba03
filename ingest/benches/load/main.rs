//! Load benchmark of `cyclops-ingest` (not a test: it prints numbers and
//! asserts nothing). Run with `make bench`.
//!
//! Seven servers (eight with a baseline) are measured the same way, each pinned to one core (core 0)
//! while this load generator runs on another (core 1):
//!
//! - **accept**: ingest storing every event (`acks=all`, flood filter in
//!   Redis but with a limit no event reaches);
//! - **cluster**: the accept path on `stack/cluster.sh`'s three brokers,
//!   topics replicated 3 times with `min.insync.replicas` 2 (`acks=all`
//!   then waits for a second broker), beside the single broker's;
//! - **spool**: the accept path with Kafka stopped (the brokers' port is
//!   closed): after the first events wait out a 500 ms produce timeout,
//!   every event is fsynced in the spool before its 200;
//! - **baseline** (only with `CYCLOPS_BENCH_BASELINE_INGEST=PATH`): the
//!   accept path of another `cyclops-ingest` binary, say an older commit's,
//!   for a before/after in one run;
//! - **slow**: one ingest's accept path measured clean, then while
//!   `SLOW_CLIENTS` slow clients ([`slow`]) hold connections open
//!   throughout, then clean again (the clean runs bracket the slow one);
//! - **drop**: ingest with the flood filter at its defaults (10 per second
//!   per fingerprint), so nearly every event of the flood is dropped;
//! - **null**: a handler that reads the body and answers `{}` — the ceiling
//!   of this HTTP stack on one core;
//! - **bare produce** ([`bare`]): axum and ingest's producer with its
//!   settings, each body produced as it came — the ceiling of any
//!   HTTP-to-Kafka service here. The accept path is judged against it, and
//!   the drop path against null: ratios in one run travel between machines,
//!   absolute rates do not (they differ threefold between machines of one kind).
//!
//! The events are realistic gzipped SDK error events (a Python exception
//! with a stack trace, about 2.5 KB of JSON), most of them repeats of five
//! fingerprints, as in a flood. For each server: the highest rate with
//! `CONNECTIONS` keep-alive connections in a closed loop, then p50/p99/p99.9
//! latency at half that rate (open loop: latency counted from each request's
//! scheduled time, less at most the timer's 1 ms resolution, so a stall is
//! not hidden; recorded after a warm-up at that rate, over `LATENCY_WINDOW`),
//! and the server's peak RSS.
//! "Per server core" divides the rate by the CPU time the server used while
//! measured: it is pinned to core 0, but Kafka and Redis run on both cores
//! and take part of it.
#![expect(clippy::disallowed_types, reason = "a benchmark measures wall-clock time")]

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use tokio::net::{TcpListener, TcpStream};

mod bare;
mod slow;

/// Keep-alive connections: many, as a farm's clients are; with `acks=all`
/// each request waits for Kafka, so a few connections would measure latency, not capacity.
const CONNECTIONS: usize = 256;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(10);
/// The latency window at half rate: long, because its tail comes from rare
/// stalls (a Kafka young-generation pause every 20 s or so on this stack), and
/// a short window would catch zero or two of them by luck.
/// `CYCLOPS_BENCH_LATENCY_SECS` overrides it.
const LATENCY_WINDOW: Duration = Duration::from_secs(30);
const CORPUS: usize = 2000;
/// Slow clients holding connections during the `slow` run.
const SLOW_CLIENTS: usize = 100;
const SLOW_NAME: &str = "ingest, accept path, 100 slow clients holding connections";
const FINGERPRINTS: usize = 5;
const BARE_NAME: &str = "bare produce (axum + ingest's producer)";
/// Set for the child that serves [`bare`], to its configuration's path.
const BARE_CONF_ENV: &str = "CYCLOPS_BENCH_BARE_CONF";
const KEY: &str = "be4c4be4c4be4c4be4c4be4c4be4c401";
const PROJECT: u64 = 1;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A Python-style exception event; `fingerprint` picks the stack trace.
fn event(fingerprint: usize, n: usize) -> Vec<u8> {
    let frames: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"filename":"app/module_{fingerprint}_{i}.py","abs_path":"/srv/app/module_{fingerprint}_{i}.py","function":"handler_{i}","lineno":{},"context_line":"    result = compute(value, {i})","in_app":true,"vars":{{"value":"{n}","attempt":{i}}}}}"#,
                10 + i * 7
            )
        })
        .collect();
    let json = format!(
        r#"{{"event_id":"{id}","timestamp":{ts},"platform":"python","level":"error","logger":"app","server_name":"web-{host}","release":"shop@2.4.1","environment":"production","sdk":{{"name":"sentry.python","version":"2.19.0"}},"exception":{{"values":[{{"type":"ZeroDivisionError","value":"division by zero (order {n})","module":"builtins","stacktrace":{{"frames":[{frames}]}}}}]}},"tags":{{"route":"/checkout","customer":"{n}"}},"breadcrumbs":{{"values":[{{"category":"http","message":"GET /api/cart {n}"}}]}}}}"#,
        id = uuid::Uuid::new_v4().simple(),
        ts = 1_795_000_000 + n,
        host = n % 16,
        frames = frames.join(","),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.as_bytes()).expect("gzip");
    gz.finish().expect("gzip")
}

fn corpus() -> Arc<Vec<Bytes>> {
    Arc::new((0..CORPUS).map(|n| Bytes::from(event(n % FINGERPRINTS, n))).collect())
}

fn request(addr: SocketAddr, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(format!("/api/{PROJECT}/store/"))
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("user-agent", "sentry.python/2.19.0")
        .header(
            "x-sentry-auth",
            format!("Sentry sentry_version=7, sentry_key={KEY}, sentry_client=sentry.python/2.19.0"),
        )
        .body(Full::new(body))
        .expect("request")
}

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Every connection opened before a measurement starts: SDKs keep theirs
/// alive, and a connect stuck in the listen backlog (a SYN retried after
/// 1 s) is not request latency.
async fn connect_all(addr: SocketAddr) -> Vec<Sender> {
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr).await);
    }
    senders
}

async fn send(sender: &mut Sender, addr: SocketAddr, body: Bytes) -> u16 {
    if sender.ready().await.is_err() {
        *sender = connect(addr).await;
    }
    match sender.send_request(request(addr, body)).await {
        Ok(response) => {
            let status = response.status().as_u16();
            response.into_body().collect().await.ok();
            status
        }
        Err(_) => 0,
    }
}

/// Closed loop: every connection sends as fast as answers come. Returns requests/s and non-200s.
async fn max_rate(addr: SocketAddr, bodies: Arc<Vec<Bytes>>, duration: Duration) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (c, mut sender) in connect_all(addr).await.into_iter().enumerate() {
        let (done, failed, stop, bodies) = (done.clone(), failed.clone(), stop.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let status = send(&mut sender, addr, bodies[i % bodies.len()].clone()).await;
                i += CONNECTIONS;
                done.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        t.await.ok();
    }
    (done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(), failed.load(Ordering::Relaxed))
}

/// Latency quantiles in ms.
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Tokio's timers fire on a 1 ms wheel and round up: a request can leave up
/// to this late while generator and server are both idle.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Open loop at `rate`/s: returns the latency quantiles (NaN when nothing was
/// recorded), counted from each request's schedule, and the number of non-200 answers. The first `WARMUP`
/// runs at the same rate but is not recorded: it is the server settling from
/// the closed loop's saturation, on fresh connections, not its steady state.
async fn latency_at(addr: SocketAddr, bodies: Arc<Vec<Bytes>>, rate: f64, duration: Duration) -> (Latency, u64) {
    let failed = Arc::new(AtomicU64::new(0));
    // 1 µs to 60 s: explicit bounds, so that no latency is clamped.
    let histogram = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let interval = Duration::from_secs_f64(CONNECTIONS as f64 / rate.max(1.0));
    let senders = connect_all(addr).await;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let record_from = start + WARMUP;
    let end = record_from + duration;
    let mut tasks = Vec::new();
    for (c, mut sender) in senders.into_iter().enumerate() {
        let (histogram, bodies, failed) = (histogram.clone(), bodies.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut due = start + interval.mul_f64(c as f64 / CONNECTIONS as f64);
            let mut answered = start;
            let mut i = c;
            while due < end {
                tokio::time::sleep_until(due).await;
                // An open loop counts from `due`, so that a stall is never
                // hidden. One excuse: when this connection was free at `due`
                // (its previous answer came before), up to the timer's
                // resolution of lateness is the generator's, not the server's;
                // anything beyond (a generator starved of CPU) still counts.
                let late = tokio::time::Instant::now().saturating_duration_since(due);
                let from = if answered > due { due } else { due + late.min(TIMER_RESOLUTION) };
                if send(&mut sender, addr, bodies[i % bodies.len()].clone()).await != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                answered = tokio::time::Instant::now();
                let micros = answered.saturating_duration_since(from).as_micros() as u64;
                if due >= record_from {
                    histogram.lock().map(|mut h| h.saturating_record(micros.max(1))).ok();
                }
                due += interval;
                i += CONNECTIONS;
            }
        }));
    }
    for t in tasks {
        t.await.ok();
    }
    let h = histogram.lock().expect("histogram");
    let ms = |q: f64| if h.is_empty() { f64::NAN } else { h.value_at_quantile(q) as f64 / 1000.0 };
    (Latency { p50: ms(0.5), p99: ms(0.99), p999: ms(0.999) }, failed.load(Ordering::Relaxed))
}

/// The do-nothing handler, run in a child process pinned like ingest.
async fn null_server(port: u16) {
    let app = axum::Router::new().fallback(|body: Bytes| async move {
        let _ = body.len();
        "{}"
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A command pinned to core 0 when the machine has two or more cores.
fn pinned(program: &str) -> tokio::process::Command {
    tokio::process::Command::from(cyclops_bench_support::pinned(program, 0))
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if reqwest_get_ok(url).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} not ready within 60 s");
}

async fn reqwest_get_ok(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else { return false };
    let Some(authority) = uri.authority().cloned() else { return false };
    let Ok(stream) = TcpStream::connect(authority.as_str()).await else { return false };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    let request = Request::get(uri.path()).header("host", authority.as_str()).body(Full::new(Bytes::new()));
    let Ok(request) = request else { return false };
    sender.send_request(request).await.is_ok_and(|r: Response<_>| r.status().is_success())
}

struct Row {
    name: &'static str,
    rate: f64,
    /// Cores the server used while measured at its highest rate (at most 1: it is pinned).
    cores: f64,
    failed: u64,
    latency: Latency,
    rss: f64,
}

impl Row {
    fn skipped(name: &'static str) -> Self {
        let latency = Latency { p50: f64::NAN, p99: f64::NAN, p999: f64::NAN };
        Row { name, rate: f64::NAN, cores: f64::NAN, failed: 0, latency, rss: f64::NAN }
    }

    /// Events per second of server CPU: the rate one fully used core would
    /// carry. The server is pinned to one core, but Kafka and Redis share
    /// the machine's two, so the server may not get all of it.
    fn per_core(&self) -> f64 {
        if self.cores > 0.05 { self.rate / self.cores.min(1.0) } else { self.rate }
    }
}

fn latency_window() -> Duration {
    match std::env::var("CYCLOPS_BENCH_LATENCY_SECS") {
        Err(_) => LATENCY_WINDOW,
        Ok(secs) => match secs.parse::<u64>() {
            Ok(secs) if secs > 0 => Duration::from_secs(secs),
            _ => panic!("CYCLOPS_BENCH_LATENCY_SECS must be a whole number of seconds above 0, not {secs:?}"),
        },
    }
}

async fn measure(name: &'static str, addr: SocketAddr, pid: u32, bodies: Arc<Vec<Bytes>>) -> Row {
    max_rate(addr, bodies.clone(), WARMUP).await;
    let (cpu_before, started) = (cyclops_bench_support::cpu_time(pid), Instant::now());
    let (rate, failed) = max_rate(addr, bodies.clone(), MEASURE).await;
    let cores = (cyclops_bench_support::cpu_time(pid) - cpu_before).as_secs_f64() / started.elapsed().as_secs_f64();
    let (latency, failed_at_half) = latency_at(addr, bodies, rate / 2.0, latency_window()).await;
    Row {
        name,
        rate,
        cores,
        failed: failed + failed_at_half,
        latency,
        rss: cyclops_bench_support::memory_mib(pid, "VmHWM:"),
    }
}

/// How the measured ingest stores events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// Into the stack's Kafka.
    Kafka,
    /// Into the 3-broker cluster, replication factor 3, min.insync.replicas 2.
    Cluster,
    /// Kafka stopped (a closed port): every event goes to the spool.
    Spool,
}

fn ingest_config(
    port: u16,
    max_uses: u64,
    storage: Storage,
    spool_dir: Option<&std::path::Path>,
) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    let prefix = format!("bench-{}-", uuid::Uuid::new_v4().simple());
    let brokers = match storage {
        Storage::Kafka => format!("127.0.0.1:{}", env_or("KAFKA_PORT", "9092")),
        Storage::Cluster => {
            let base: u16 = env_or("KAFKA_CLUSTER_PORT", "19092").parse().expect("KAFKA_CLUSTER_PORT");
            (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",")
        }
        Storage::Spool => format!("127.0.0.1:{}", free_port()),
    };
    let replication = match storage {
        Storage::Cluster => "topic_replication_factor = 3\ntopic_min_insync_replicas = 2\n",
        Storage::Kafka | Storage::Spool => "",
    };
    write!(
        file,
        "[kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{prefix}\"\n{replication}\
         [redis]\nurl = \"redis://127.0.0.1:{redis}/0\"\nkey_prefix = \"{prefix}\"\n\
         [ingest]\nbind = \"127.0.0.1\"\nport = {port}\nshutdown_delay_ms = 0\nproduce_timeout_ms = {timeout}\n\
         [ingest.flood]\nmax_uses = {max_uses}\nwindow_secs = 1\n\
         {spool}\
         [[projects]]\nid = {PROJECT}\npublic_key = \"{KEY}\"\n",
        redis = env_or("REDIS_PORT", "6379"),
        // Kafka stopped: only the first events wait this out.
        timeout = if storage == Storage::Spool { 500 } else { 5000 },
        // A run at full rate spools a few GB; the directory is deleted after it.
        spool = spool_dir.map_or(String::new(), |dir| {
            format!("[ingest.spool]\ndir = \"{}\"\nmax_bytes = {}\n", dir.display(), 32u64 << 30)
        }),
    )
    .expect("write config");
    file
}

async fn run_ingest(name: &'static str, max_uses: u64, storage: Storage, bodies: Arc<Vec<Bytes>>) -> Row {
    run_binary(name, env!("CARGO_BIN_EXE_cyclops-ingest"), max_uses, storage, bodies).await
}

/// An ingest process being measured; killed when dropped.
struct Server {
    _child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    _config: tempfile::NamedTempFile,
    _spool_dir: tempfile::TempDir,
}

async fn start_server(bin: &str, max_uses: u64, storage: Storage) -> Server {
    let port = free_port();
    let spool_dir = tempfile::tempdir().expect("spool dir");
    // A build from before the spool refuses its section.
    let spool = (bin == env!("CARGO_BIN_EXE_cyclops-ingest")).then_some(spool_dir.path());
    let config = ingest_config(port, max_uses, storage, spool);
    let child = pinned(bin)
        .arg("--conf")
        .arg(config.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ingest starts");
    let pid = child.id().expect("pid");
    wait_ready(&format!("http://127.0.0.1:{port}/ready")).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Server { _child: child, pid, addr, _config: config, _spool_dir: spool_dir }
}

async fn run_binary(name: &'static str, bin: &str, max_uses: u64, storage: Storage, bodies: Arc<Vec<Bytes>>) -> Row {
    let server = start_server(bin, max_uses, storage).await;
    measure(name, server.addr, server.pid, bodies).await
}

/// The accept path of one ingest measured three times in a row: clean, with
/// `SLOW_CLIENTS` slow clients holding connections, clean again. The clean
/// runs bracket the slow one, so that the drift between consecutive
/// measurements (Kafka's log growing, the broker's JIT) cancels out.
async fn run_slow(bodies: Arc<Vec<Bytes>>) -> [Row; 3] {
    let server = start_server(env!("CARGO_BIN_EXE_cyclops-ingest"), u64::MAX / 2, Storage::Kafka).await;
    let before = measure("ingest, accept path, before the slow clients", server.addr, server.pid, bodies.clone()).await;
    let slow = slow::start(server.addr, SLOW_CLIENTS, &format!("/api/{PROJECT}/store/"), KEY);
    let during = measure(SLOW_NAME, server.addr, server.pid, bodies.clone()).await;
    println!(
        "{SLOW_NAME}: {} slow connections open at the end, {} opened in all (cut off by the deadlines and back)",
        slow.open(),
        slow.connects()
    );
    slow.stop();
    let after = measure("ingest, accept path, after the slow clients", server.addr, server.pid, bodies).await;
    [before, during, after]
}

async fn run_bare(bodies: Arc<Vec<Bytes>>) -> Row {
    let port = free_port();
    let config = ingest_config(port, u64::MAX / 2, Storage::Kafka, None);
    let exe = std::env::current_exe().expect("current exe");
    let mut child = pinned(exe.to_str().expect("utf-8 path"))
        .env(BARE_CONF_ENV, config.path())
        .kill_on_drop(true)
        .spawn()
        .expect("bare produce server starts");
    let pid = child.id().expect("pid");
    wait_ready(&format!("http://127.0.0.1:{port}/ready")).await;
    let row = measure(BARE_NAME, SocketAddr::from(([127, 0, 0, 1], port)), pid, bodies).await;
    child.kill().await.ok();
    row
}

async fn run_null(bodies: Arc<Vec<Bytes>>) -> Row {
    let port = free_port();
    let exe = std::env::current_exe().expect("current exe");
    let mut child = pinned(exe.to_str().expect("utf-8 path"))
        .env("CYCLOPS_BENCH_NULL_PORT", port.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("null server starts");
    let pid = child.id().expect("pid");
    wait_ready(&format!("http://127.0.0.1:{port}/")).await;
    let row = measure("null handler", SocketAddr::from(([127, 0, 0, 1], port)), pid, bodies).await;
    child.kill().await.ok();
    row
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`:
    // the benchmark only runs under `cargo bench` (`make bench`).
    let is_child = ["CYCLOPS_BENCH_NULL_PORT", BARE_CONF_ENV, "CYCLOPS_BENCH_PINNED"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !is_child && !std::env::args().any(|a| a == "--bench") {
        println!("load benchmark: skipped (run it with `make bench`)");
        return;
    }
    if let Ok(port) = std::env::var("CYCLOPS_BENCH_NULL_PORT") {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(null_server(port.parse().expect("port")));
        return;
    }
    if let Some(conf) = std::env::var_os(BARE_CONF_ENV) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(bare::serve(std::path::Path::new(&conf), PROJECT));
        return;
    }
    // The generator runs on core 1, the measured server on core 0.
    cyclops_bench_support::run_on_core(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let bodies = corpus();
        let average = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len();
        println!(
            "cyclops-ingest load benchmark: {CORPUS} gzipped events (~{average} B each, {FINGERPRINTS} fingerprints), \
             {CONNECTIONS} keep-alive connections; {}s at the highest rate, {}s at half of it; \
             server on core 0, generator on core 1",
            MEASURE.as_secs(),
            latency_window().as_secs()
        );
        // CYCLOPS_BENCH_ONLY=accept (or slow, cluster, spool, drop, null, bare, baseline; or a
        // comma-separated list) measures those servers; the others print as skipped.
        let only = std::env::var("CYCLOPS_BENCH_ONLY").ok();
        let wanted = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|o| o == name));
        let null = if wanted("null") { run_null(bodies.clone()).await } else { Row::skipped("null handler") };
        let bare = if wanted("bare") { run_bare(bodies.clone()).await } else { Row::skipped(BARE_NAME) };
        // CYCLOPS_BENCH_BASELINE_INGEST=PATH: the accept path of another
        // build (an older commit's binary) in the same run, for a before/after.
        let baseline_bin = std::env::var("CYCLOPS_BENCH_BASELINE_INGEST").ok();
        let baseline = match baseline_bin.as_deref().filter(|_| wanted("baseline")) {
            Some(bin) => run_binary("ingest, accept path, baseline build", bin, u64::MAX / 2, Storage::Kafka, bodies.clone()).await,
            None => Row::skipped("ingest, accept path, baseline build"),
        };
        let accept = if wanted("accept") {
            run_ingest("ingest, accept path", u64::MAX / 2, Storage::Kafka, bodies.clone()).await
        } else {
            Row::skipped("ingest, accept path")
        };
        let [slow_before, slow, slow_after] = if wanted("slow") {
            run_slow(bodies.clone()).await
        } else {
            [Row::skipped("ingest, accept path, before the slow clients"), Row::skipped(SLOW_NAME), Row::skipped("ingest, accept path, after the slow clients")]
        };
        let cluster = if wanted("cluster") {
            run_ingest("ingest, accept path, 3-broker cluster (RF 3, min ISR 2)", u64::MAX / 2, Storage::Cluster, bodies.clone())
                .await
        } else {
            Row::skipped("ingest, accept path, 3-broker cluster (RF 3, min ISR 2)")
        };
        let spool = if wanted("spool") {
            run_ingest("ingest, spool path (Kafka stopped)", u64::MAX / 2, Storage::Spool, bodies.clone()).await
        } else {
            Row::skipped("ingest, spool path (Kafka stopped)")
        };
        let drop = if wanted("drop") {
            run_ingest("ingest, drop path", 10, Storage::Kafka, bodies).await
        } else {
            Row::skipped("ingest, drop path")
        };
        println!();
        println!(
            "| server | events/s | server CPU, cores | events/s per server core | vs null | vs bare produce | non-200 | p50 ms @ half rate | p99 ms @ half rate | p99.9 ms @ half rate | peak RSS MiB |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for row in [&null, &bare, &accept, &slow_before, &slow, &slow_after, &cluster, &baseline, &spool, &drop] {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.name,
                cell(row.rate, 0),
                cell(row.cores, 2),
                cell(row.per_core(), 0),
                cell(100.0 * row.rate / null.rate, 0) + "%",
                cell(100.0 * row.rate / bare.rate, 0) + "%",
                row.failed,
                cell(row.latency.p50, 2),
                cell(row.latency.p99, 2),
                cell(row.latency.p999, 2),
                cell(row.rss, 1)
            );
        }
        println!();
        let skipped = |rows: &[&Row]| rows.iter().any(|r| r.rate.is_nan());
        let clean_rate = (slow_before.rate + slow_after.rate) / 2.0;
        let clean_p99 = (slow_before.latency.p99 + slow_after.latency.p99) / 2.0;
        let verdict = |rows: &[&Row], ok: bool| match (skipped(rows), ok) {
            (true, _) => "not measured",
            (false, true) => "met",
            (false, false) => "MISSED",
        };
        println!(
            "targets: accept >= 70% of bare produce's rate ({}: {}%) and its p99 at half load <= 1.5x bare produce's ({}: {}x); drop >= 40% of null ({}: {}%); with 100 slow clients, rate and p99 within 10% of the clean runs before and after ({}: rate {}%, p99 {}% of their mean); cluster >= 75% of accept per core ({}); spool >= accept per core ({}); spool p99 <= accept p99 at half load ({}); p99 <= 10 ms at half load ({}); RSS <= 100 MiB ({})",
            verdict(&[&accept, &bare], accept.rate >= 0.7 * bare.rate),
            cell(100.0 * accept.rate / bare.rate, 0),
            verdict(&[&accept, &bare], accept.latency.p99 <= 1.5 * bare.latency.p99),
            cell(accept.latency.p99 / bare.latency.p99, 2),
            verdict(&[&drop, &null], drop.rate >= 0.4 * null.rate),
            cell(100.0 * drop.rate / null.rate, 0),
            verdict(&[&slow_before, &slow], slow.rate >= 0.9 * clean_rate && slow.latency.p99 <= 1.1 * clean_p99),
            cell(100.0 * slow.rate / clean_rate, 0),
            cell(100.0 * slow.latency.p99 / clean_p99, 0),
            verdict(&[&accept, &cluster], cluster.per_core() >= 0.75 * accept.per_core()),
            verdict(&[&accept, &spool], spool.per_core() >= accept.per_core()),
            verdict(&[&accept, &spool], spool.latency.p99 <= accept.latency.p99),
            verdict(&[&accept, &drop], accept.latency.p99 <= 10.0 && drop.latency.p99 <= 10.0),
            verdict(&[&accept, &drop], accept.rss <= 100.0 && drop.rss <= 100.0),
        );
    });
}

/// A number for the table; `-` for a server that was not measured.
fn cell(value: f64, decimals: usize) -> String {
    if value.is_nan() { "-".into() } else { format!("{value:.decimals$}") }
}
