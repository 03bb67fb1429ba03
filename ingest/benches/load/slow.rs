//! Slow clients for the load benchmark: connections that hold a slot in
//! ingest for as long as its deadlines let them and come straight back when
//! cut off, so that they are there throughout a measurement. Half send a
//! request head one byte a second (the head deadline cuts them), half send a
//! complete head declaring a 1 MB body and then one byte a second of it (the
//! body deadline cuts them), all with valid credentials: the worst a client
//! that passed auth can do to the accept path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The slow clients; dropping them closes their connections.
pub struct SlowClients {
    tasks: JoinSet<()>,
    open: Arc<AtomicU64>,
    connects: Arc<AtomicU64>,
}

impl SlowClients {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections opened so far (the first ones and every reconnect).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

/// Starts `n` slow clients against `addr`, sending `key`'s auth to `path`.
pub fn start(addr: SocketAddr, n: usize, path: &str, key: &str) -> SlowClients {
    let (open, connects) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             x-sentry-auth: Sentry sentry_version=7, sentry_key={key}\r\ncontent-length: 1000000\r\n\r\n"
        );
        let (open, connects) = (open.clone(), connects.clone());
        let trickle_head = i % 2 == 0;
        tasks.spawn(async move {
            loop {
                if let Ok(mut stream) = TcpStream::connect(addr).await {
                    connects.fetch_add(1, Ordering::Relaxed);
                    open.fetch_add(1, Ordering::Relaxed);
                    hold(&mut stream, head.as_bytes(), trickle_head).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    SlowClients { tasks, open, connects }
}

/// Sends one byte a second until ingest closes the connection.
async fn hold(stream: &mut TcpStream, head: &[u8], trickle_head: bool) {
    let (sent_at_once, trickled): (&[u8], &[u8]) = if trickle_head { (&[], head) } else { (head, &[b' '; 1_000_000]) };
    if stream.write_all(sent_at_once).await.is_err() {
        return;
    }
    for byte in trickled.chunks(1) {
        if stream.write_all(byte).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
