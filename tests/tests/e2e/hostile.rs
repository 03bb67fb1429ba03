//! Clients that try to shut the gate: silent and trickling connections,
//! descriptor exhaustion, compression bombs, huge ids echoed back, and
//! strangers whose bodies should never be decoded. Each runs against an
//! ingest process of its own (its own descriptors, memory and metrics),
//! with the attackers on another loopback address than the real clients.
#![expect(clippy::disallowed_types, reason = "these tests measure wall-clock answer times")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cyclops_common::config::{Config, ProjectKey};
use cyclops_tests::process::{ServiceProcess, Which};
use cyclops_tests::sdk::{python_sends, rust_sends};
use cyclops_tests::{event_id, gzip, sentry_auth, test_config, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const KEY: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";
const PROJECT: u64 = 4242;
/// Where the attackers connect from: not the real clients' 127.0.0.1.
const ATTACKER: &str = "127.0.0.2";

fn config() -> Config {
    let mut config = test_config();
    config.projects = vec![ProjectKey { id: PROJECT, public_key: KEY.into(), secret_key: None }];
    config
}

async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().map_err(std::io::Error::other)?)?;
    socket.connect(to).await
}

/// The status of the answer on `stream`, `None` when it closed without one
/// (or nothing came within `deadline`).
async fn status_of(stream: &mut TcpStream, deadline: Duration) -> Option<u16> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&buf[..n]);
            if let Some(line) = seen.split(|b| *b == b'\n').next().filter(|_| seen.contains(&b'\n')) {
                return std::str::from_utf8(line).ok()?.split(' ').nth(1)?.parse().ok();
            }
        }
    };
    tokio::time::timeout(deadline, read).await.ok().flatten()
}

/// Whether the server closed `stream` (EOF or reset) within `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let drained = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(deadline, drained).await.is_ok()
}

fn head(path: &str, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nhost: ingest\r\ncontent-type: application/json\r\n{extra}\r\n")
}

/// One store event sent by a plain client: its status and how long it took.
async fn store_one(client: &reqwest::Client, ingest: &ServiceProcess) -> (u16, Duration) {
    let id = event_id();
    let started = Instant::now();
    let status = client
        .post(ingest.url(&format!("/api/{PROJECT}/store/")))
        .header("x-sentry-auth", sentry_auth(KEY))
        .body(format!(r#"{{"event_id":"{id}","message":"real client {id}"}}"#))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

async fn metric(ingest: &ServiceProcess, name: &str) -> f64 {
    let text = reqwest::get(ingest.url("/metrics")).await.expect("metrics").text().await.expect("text");
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test]
async fn silent_and_trickling_clients_do_not_hold_back_real_sdks() {
    let ingest = ServiceProcess::spawn(Which::Ingest, &config(), &[]).await.expect("ingest");
    let path = format!("/api/{PROJECT}/envelope/");
    let auth = format!("x-sentry-auth: {}\r\n", sentry_auth(KEY));
    let mut silent = Vec::new();
    let mut trickling = Vec::new();
    // 50 that declare 20 MiB without credentials, then send nothing: to the
    // store endpoint (refused on its headers) and to the envelope endpoint
    // (whose body may hold its `dsn`, so it is read: it holds a connection
    // until the body deadline, and no memory).
    let store_path = format!("/api/{PROJECT}/store/");
    for i in 0..50 {
        let mut s = connect_from(ATTACKER, ingest.addr).await.expect("connect");
        let to = if i % 2 == 0 { &store_path } else { &path };
        s.write_all(head(to, "content-length: 20971520\r\n").as_bytes()).await.expect("head");
        silent.push((s, i % 2 == 0));
    }
    // 50 with credentials (their body is read) trickling a byte a second,
    // half declaring 20 MiB, half chunked as @sentry/node sends.
    for i in 0..50 {
        let mut s = connect_from(ATTACKER, ingest.addr).await.expect("connect");
        let framing = if i % 2 == 0 { "content-length: 20971520\r\n" } else { "transfer-encoding: chunked\r\n" };
        s.write_all(head(&path, &format!("{auth}content-encoding: gzip\r\n{framing}")).as_bytes()).await.expect("head");
        trickling.push((s, i % 2 == 1));
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            for (s, chunked) in &mut trickling {
                let byte: &[u8] = if *chunked { b"1\r\nx\r\n" } else { b"x" };
                s.write_all(byte).await.ok();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        trickling
    });

    // Meanwhile, real SDKs and a plain client get their 200s without waiting.
    let dsn = format!("http://{KEY}@{}/{PROJECT}", ingest.addr);
    python_sends(2, &dsn, "real sdk during the attack").await.expect("sentry-sdk 2 answered");
    rust_sends(&dsn, "real rust sdk during the attack").await.expect("sentry crate answered");
    let client = reqwest::Client::new();
    let mut took = Vec::new();
    for _ in 0..100 {
        let (status, t) = store_one(&client, &ingest).await;
        assert_eq!(status, 200, "a real client is answered during the attack");
        took.push(t);
    }
    took.sort();
    let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!("during the attack: median {median:?}, slowest {slowest:?} of {} events", took.len());
    assert!(median < Duration::from_millis(100), "median {median:?}");
    // Before the fix, every one of them waited for the silent ones: no answer at all.
    assert!(slowest < Duration::from_secs(2), "slowest {slowest:?}");

    // The silent ones at the store endpoint were refused on their headers alone.
    for (s, _) in silent.iter_mut().filter(|(_, store)| *store) {
        assert_eq!(status_of(s, Duration::from_secs(5)).await, Some(401), "no credentials: 401 before any body");
    }
    drop(trickle);
    ingest.kill9().await.ok();
}

#[tokio::test]
async fn a_slow_client_is_held_to_one_deadline_for_its_head_and_one_for_its_body() {
    let mut config = config();
    config.ingest.connections.request_head_timeout_ms = 2_000;
    config.ingest.connections.body_timeout_ms = 3_000;
    config.ingest.connections.keepalive_idle_timeout_ms = 2_000;
    let ingest = ServiceProcess::spawn(Which::Ingest, &config, &[]).await.expect("ingest");
    let path = format!("/api/{PROJECT}/store/");

    // A body trickled at a byte a second: 408 at the body deadline, not one per byte.
    let mut body = connect_from(ATTACKER, ingest.addr).await.expect("connect");
    let auth = format!("x-sentry-auth: {}\r\ncontent-length: 1000\r\n", sentry_auth(KEY));
    body.write_all(head(&path, &auth).as_bytes()).await.expect("head");
    let started = Instant::now();
    let (mut reader, mut writer) = body.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = vec![0u8; 256];
    let n =
        tokio::time::timeout(Duration::from_secs(15), reader.read(&mut answer)).await.expect("answered").expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10), "408 after {:?}", started.elapsed());
    trickle.abort();

    // A head trickled at a byte a second: the connection is closed at the head deadline.
    let mut slow = connect_from(ATTACKER, ingest.addr).await.expect("connect");
    let started = Instant::now();
    let bytes = head(&path, "").into_bytes();
    let closed = async {
        for b in bytes.iter().cycle() {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            let mut buf = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), closed).await.expect("closed");
    assert!(started.elapsed() < Duration::from_secs(8), "closed after {:?}", started.elapsed());

    // A connection that never sends anything: closed at the head deadline too.
    let mut silent = connect_from(ATTACKER, ingest.addr).await.expect("connect");
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await, "a silent connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(1_900), "not before its deadline: {:?}", started.elapsed());

    // A kept-alive connection, idle after its answer: closed at the idle deadline.
    let mut kept = connect_from(ATTACKER, ingest.addr).await.expect("connect");
    let event = format!(r#"{{"event_id":"{}","message":"kept alive"}}"#, event_id());
    let request = head(&path, &format!("x-sentry-auth: {}\r\ncontent-length: {}\r\n", sentry_auth(KEY), event.len()));
    kept.write_all(format!("{request}{event}").as_bytes()).await.expect("request");
    assert_eq!(status_of(&mut kept, Duration::from_secs(10)).await, Some(200));
    let started = Instant::now();
    assert!(closed_within(&mut kept, Duration::from_secs(10)).await, "an idle kept-alive connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(1_900), "not before its deadline: {:?}", started.elapsed());

    let hits = metric(&ingest, "cyclops_ingest_limit_hits_total").await;
    assert!(hits >= 4.0, "each deadline hit is counted: {hits}");
    ingest.kill9().await.ok();
}

#[tokio::test]
async fn thousands_of_idle_connections_past_the_descriptor_limit_do_not_lock_out_clients() {
    // The test itself holds the attackers' ends.
    if let Err(e) = rlimit::increase_nofile_limit(8192) {
        eprintln!("cannot raise the test's own open-file limit: {e}");
    }
    let mut config = config();
    // Under the 256 descriptors, beside Kafka's, Redis's and the spool's.
    config.ingest.connections.max_connections = 100;
    config.ingest.connections.request_head_timeout_ms = 2_000;
    let ingest = ServiceProcess::spawn_with_open_files(Which::Ingest, &config, 256).await.expect("ingest");
    let pid = ingest.pid().expect("pid");
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    eprintln!("ingest holds {open} descriptors before the attack");
    let mut idle = Vec::new();
    let mut refused = 0usize;
    for _ in 0..2_000 {
        match connect_from(ATTACKER, ingest.addr).await {
            Ok(s) => idle.push(s),
            Err(_) => refused += 1,
        }
    }
    // Past the cap a connection is answered 503 and closed, not left hanging;
    // the ones within it are closed at the head deadline.
    let answers = futures::future::join_all(idle.iter_mut().map(|s| status_of(s, Duration::from_secs(20)))).await;
    let answered_503 = answers.iter().filter(|a| **a == Some(503)).count();
    let closed = answers.iter().filter(|a| a.is_none()).count();
    eprintln!(
        "{} connected, {refused} refused by the kernel; {answered_503} answered 503, {closed} closed without an answer",
        idle.len()
    );
    assert!(answered_503 > 0, "connections past max_connections are refused with 503");

    // The silent ones are closed at the head deadline, and a real client gets in.
    let client = reqwest::Client::new();
    let started = Instant::now();
    wait_for(Duration::from_secs(30), "a real client answered 200", || async {
        (store_one(&client, &ingest).await.0 == 200).then_some(())
    })
    .await
    .expect("a real client is answered while 2,000 idle connections were opened");
    eprintln!("a real client was answered {:?} after the 2,000 connections", started.elapsed());
    assert!(!ingest.log().contains("Too many open files"), "descriptors never ran out");
    drop(idle);
    ingest.kill9().await.ok();
}

/// A gzip envelope whose event item decodes to `mib` MiB of spaces.
fn bomb(mib: usize) -> Vec<u8> {
    let mut envelope = format!("{{\"event_id\":\"{}\"}}\n{{\"type\":\"attachment\"}}\n", event_id()).into_bytes();
    envelope.extend(std::iter::repeat_n(b' ', mib << 20));
    gzip(&envelope)
}

#[tokio::test]
async fn compression_bombs_stay_within_the_memory_budget() {
    let mut config = config();
    config.ingest.max_in_flight_bytes = 64 << 20;
    config.ingest.in_flight_client_percent = 100;
    let ingest = ServiceProcess::spawn(Which::Ingest, &config, &[]).await.expect("ingest");
    let pid = ingest.pid().expect("pid");
    let bomb = bomb(30);
    let post = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(ingest.url(&format!("/api/{PROJECT}/envelope/")))
            .header("x-sentry-auth", sentry_auth(KEY))
            .header("content-encoding", "gzip")
            .body(body)
            .timeout(Duration::from_secs(60))
            .send()
    };
    let one = post(bomb.clone()).await.expect("answered").status().as_u16();
    let after_one = peak_rss_mib(pid);
    let many = futures::future::join_all((0..32).map(|_| post(bomb.clone()))).await;
    let statuses: Vec<u16> = many.iter().map(|r| r.as_ref().map_or(0, |r| r.status().as_u16())).collect();
    let after_32 = peak_rss_mib(pid);
    eprintln!(
        "bomb of {} KiB: {one}; peak RSS {after_one:.1} MiB; 32 at once: {statuses:?}, peak {after_32:.1} MiB",
        bomb.len() >> 10
    );
    assert_eq!(one, 413);
    assert!(statuses.iter().all(|s| *s == 413 || *s == 503), "{statuses:?}");
    assert!(after_one < 150.0 && after_32 < 150.0, "peak RSS {after_one:.1} then {after_32:.1} MiB");
    ingest.kill9().await.ok();
}

#[tokio::test]
async fn a_megabyte_event_id_is_refused_with_a_short_detail() {
    let mut config = config();
    config.ingest.max_event_bytes = 4 << 20;
    let ingest = ServiceProcess::spawn(Which::Ingest, &config, &[]).await.expect("ingest");
    let body = format!(r#"{{"event_id":"{}","message":"m"}}"#, "e".repeat(1 << 20));
    let response = reqwest::Client::new()
        .post(ingest.url(&format!("/api/{PROJECT}/store/")))
        .header("x-sentry-auth", sentry_auth(KEY))
        .body(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 400);
    let text = response.text().await.expect("body");
    assert!(text.len() < 1024 && text.contains("event_id"), "{} bytes: {}", text.len(), &text[..text.len().min(200)]);
    ingest.kill9().await.ok();
}

#[tokio::test]
async fn a_stranger_with_a_bad_body_is_refused_401_and_never_decoded() {
    let ingest = ServiceProcess::spawn(Which::Ingest, &config(), &[]).await.expect("ingest");
    let client = reqwest::Client::new();
    let garbage = gzip(&vec![b'{'; 2 << 20]);
    for path in [format!("/api/{PROJECT}/store/"), format!("/api/{PROJECT}/envelope/")] {
        let response =
            client.post(ingest.url(&path)).header("content-encoding", "gzip").body(garbage.clone()).send().await;
        let response = response.expect("answered");
        assert_eq!(response.status().as_u16(), 401, "{path}");
        let text = response.text().await.expect("body");
        assert!(text.contains("missing authorization information"), "{path}: {text}");
    }
    assert_eq!(metric(&ingest, "cyclops_ingest_decoded_bytes_total").await, 0.0, "nothing was decoded");
    // The counter does count: the same body with credentials is decoded (and refused as bad JSON).
    let response = client
        .post(ingest.url(&format!("/api/{PROJECT}/store/")))
        .header("x-sentry-auth", sentry_auth(KEY))
        .header("content-encoding", "gzip")
        .body(garbage)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 413, "decoded past max_event_bytes");
    assert!(metric(&ingest, "cyclops_ingest_decoded_bytes_total").await > 0.0);
    ingest.kill9().await.ok();
}
