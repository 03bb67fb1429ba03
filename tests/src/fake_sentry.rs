//! A fake Sentry for the tests: records every request and answers with
//! whatever status the test scripts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio_util::sync::CancellationToken;

/// One request as the fake Sentry received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// Statuses to answer, in order; 200 once empty.
    script: VecDeque<u16>,
}

/// A running fake Sentry; stops when dropped.
#[derive(Debug)]
pub struct FakeSentry {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl FakeSentry {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let stop = CancellationToken::new();
        let app = Router::new().fallback(record).with_state(inner.clone());
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(until).await });
        Ok(Self { addr, inner, stop })
    }

    /// The base URL to configure as `sentry.base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer the next requests with these statuses, then 200 again.
    pub fn script(&self, statuses: &[u16]) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.script.extend(statuses);
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().map(|i| i.requests.clone()).unwrap_or_default()
    }
}

impl Drop for FakeSentry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let status = match inner.lock() {
        Ok(mut inner) => {
            inner.requests.push(Recorded {
                method,
                path: uri.path().to_owned(),
                query: uri.query().map(str::to_owned),
                headers,
                body,
            });
            inner.script.pop_front().unwrap_or(200)
        }
        Err(_) => 500,
    };
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "{}")
}
