//! A stand-in for Sentry for local demos: it accepts every request and
//! prints what would have reached Sentry. It is not Sentry and stores
//! nothing; `make run` starts it only when no Sentry is configured.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use cyclops_common::shutdown::CancellationToken;
use tokio::net::TcpListener;

/// Largest body preview printed, in bytes.
const PREVIEW_BYTES: usize = 300;

/// Headers worth showing: they decide how Sentry reads the request.
const SHOWN_HEADERS: [&str; 4] = ["content-type", "content-encoding", "x-sentry-auth", "x-forwarded-for"];

/// Serves the demo sink on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().fallback(record);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Binds `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// One line per request plus a body preview, so the demo shows what the
/// forwarder delivered.
async fn record(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> &'static str {
    let shown: Vec<String> = SHOWN_HEADERS
        .iter()
        .filter_map(|name| headers.get(*name).map(|v| format!("{name}: {}", String::from_utf8_lossy(v.as_bytes()))))
        .collect();
    let preview = String::from_utf8_lossy(&body[..body.len().min(PREVIEW_BYTES)]).replace('\n', "\\n");
    let more = if body.len() > PREVIEW_BYTES { "…" } else { "" };
    println!(
        "[DEMO SINK — stand-in for Sentry, nothing is stored] {method} {uri} ({} bytes) [{}]\n    {preview}{more}",
        body.len(),
        shown.join("; ")
    );
    "{}"
}
