//! The HTTP/1.1 listener: what a client may hold of ingest before a request
//! reaches the intake.
//!
//! `axum::serve` has no deadline on a request's head, none on an idle
//! kept-alive connection and no cap on connections, so one slow or silent
//! client per descriptor could lock everybody out. This loop adds them:
//!
//! - at most `ingest.connections.max_connections` open at once; one more is
//!   answered 503 and closed, so that descriptors stay for real clients;
//! - a request's head must arrive within `request_head_timeout_ms`, and a
//!   kept-alive connection may wait `keepalive_idle_timeout_ms` for its next
//!   request ([`watchdog`]);
//! - the body's deadline is the intake's (the whole body, not per chunk).
//!
//! Each hit is counted in `cyclops_ingest_limit_hits_total{limit}`.

pub mod watchdog;
mod watched;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use cyclops_common::config::ConnectionsConfig;
use cyclops_common::shutdown::CancellationToken;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use self::watchdog::{Deadlines, Next};
use self::watched::{Activity, Watched};
use crate::metrics::{CONNECTIONS, LIMIT_HITS};

/// The answer to a connection past `max_connections`.
const REFUSAL_BODY: &str = r#"{"detail":"too many connections: retry later"}"#;
/// Refusals written at once; past it a connection over the cap is just closed.
const REFUSALS_AT_ONCE: usize = 64;
/// Longest a refusal may take to write.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// Pause after a failed accept (no descriptor left): the error repeats until one frees.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The listener's limits, from `[ingest.connections]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub deadlines: Deadlines,
}

impl Limits {
    pub fn new(config: &ConnectionsConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            deadlines: Deadlines {
                head: Duration::from_millis(config.request_head_timeout_ms),
                idle: Duration::from_millis(config.keepalive_idle_timeout_ms),
            },
        }
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then closes
/// kept-alive connections and lets requests in progress finish; returns
/// once every connection is closed (the caller bounds that wait).
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let open = Arc::new(Semaphore::new(max as usize));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let refusal = refusal_response();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and ENFILE: the process or the host is out of descriptors.
                    metrics::counter!(LIMIT_HITS, "limit" => "accept_error").increment(1);
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            metrics::counter!(LIMIT_HITS, "limit" => "max_connections").increment(1);
            if let Ok(writing) = refusals.clone().try_acquire_owned() {
                let refusal = refusal.clone();
                tokio::spawn(async move {
                    refuse(stream, &refusal).await;
                    drop(writing);
                });
            }
            continue;
        };
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            metrics::gauge!(CONNECTIONS).increment(1.0);
            connection(stream, peer, router, limits.deadlines, stop).await;
            metrics::gauge!(CONNECTIONS).decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    // Every connection holds a slot: all slots back means all closed.
    let _all_closed = open.acquire_many(max).await;
}

/// Serves one connection, closing it when the client keeps it past a deadline.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    deadlines: Deadlines,
    stop: CancellationToken,
) {
    // Small answers go out at once rather than waiting for the client's ACK.
    stream.set_nodelay(true).ok();
    let activity = Arc::new(Activity::new(tokio::time::Instant::now()));
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = activity.busy();
            let answer = router.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let answer = answer.await;
                drop(busy);
                answer
            }
        }
    });
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let mut conn = std::pin::pin!(
        hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            // The watchdog owns the head deadline (see its module doc).
            .header_read_timeout(None)
            .serve_connection(io, service)
    );
    let mut stopping = false;
    loop {
        let check_at = match activity.phase().next(tokio::time::Instant::now(), deadlines) {
            Next::Close(expired) => {
                metrics::counter!(LIMIT_HITS, "limit" => expired.label()).increment(1);
                tracing::debug!(%peer, limit = expired.label(), "connection closed");
                return;
            }
            Next::CheckAt(at) => at,
        };
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(check_at) => {}
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

fn refusal_response() -> Arc<[u8]> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    )
    .into_bytes()
    .into()
}

/// Answers a connection over the cap without reading its request.
async fn refuse(mut stream: TcpStream, refusal: &[u8]) {
    let write = async {
        stream.write_all(refusal).await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(REFUSAL_WRITE, write).await {
        tracing::debug!(error = %e, "refusal not written");
    }
}

/// Raises the soft limit on open files to the hard limit and logs both;
/// warns when `max_connections` would not fit under it.
pub fn raise_file_limit(max_connections: usize) {
    // Kafka, Redis, the spool and the status server need descriptors of their own.
    const OTHERS: u64 = 256;
    let before = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
        }
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(soft, |(_, hard)| hard);
            tracing::info!(soft_before = before, soft, hard, "open-file limit");
            let wanted = max_connections as u64 + OTHERS;
            if soft < wanted {
                tracing::warn!(
                    soft,
                    max_connections,
                    "the open-file limit is below ingest.connections.max_connections plus {OTHERS}: lower \
                     max_connections or raise the hard limit (ulimit -Hn, LimitNOFILE=)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, soft = before, "cannot raise the open-file limit"),
    }
}
