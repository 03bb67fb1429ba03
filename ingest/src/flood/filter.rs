//! The flood filter: at most `max_uses` events per `(project, fingerprint)`
//! per window, counted farm-wide in Redis, or in process when Redis is not
//! configured or not answering.
//!
//! Redis counting is one atomic round trip (a Lua script: `INCR`, and set the
//! window's expiry when the key is new), so N ingest instances hit by the
//! same burst together pass exactly `max_uses` per window: the window starts
//! with the first event and every instance counts in the same key. Cyclops's
//! get-then-set could let several instances pass the same slot.
//!
//! Once Redis says a window is used up, the instance remembers until when
//! and drops that fingerprint's further events without asking Redis again:
//! the farm-wide count of a window only grows, so the answer cannot change
//! before it expires. A flood then costs no Redis round trip per event.
//!
//! The connection is made in the background, never on the request path.
//! When Redis fails or is slow (`redis.timeout_ms`), or is not connected yet,
//! the event is counted in process instead and accepted or dropped by that
//! count: an infrastructure fault never drops an event by itself. Redis is
//! tried again after [`REDIS_RETRY`]; while it is skipped,
//! [`FloodFilter::fallback_active`] is true and the
//! `cyclops_flood_fallback_active` gauge is 1.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cyclops_common::config::{FloodConfig, RedisConfig};
use cyclops_common::ids::{Fingerprint, ProjectId};
use redis::aio::ConnectionManager;
use tokio::time::Instant;

/// How long Redis is left alone after it failed.
pub const REDIS_RETRY: Duration = Duration::from_secs(1);
/// Most keys the in-process counter (and the used-up windows cache) holds;
/// past it, expired windows are purged, and if that is not enough a new key
/// is not tracked (its events pass) while the keys already counted — the
/// floods — stay limited.
pub const MAX_LOCAL_KEYS: usize = 100_000;

/// Counts one event; returns its number in the window and the window's
/// remaining milliseconds. A key without expiry (lost after a failover)
/// gets one again, so no key can drop events forever.
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
";

/// Gives back one count, for an event that was counted but not stored.
const REFUND: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('DECR', KEYS[1])
end
return 0
";

/// What the filter says about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit; `count` is its number in the window.
    Pass { count: u64 },
    /// Over the limit: drop it.
    Drop { count: u64 },
}

/// Fixed windows counted in this process, with the time passed in.
#[derive(Debug, Default)]
pub struct LocalCounter {
    windows: Mutex<HashMap<String, (Instant, u64)>>,
}

impl LocalCounter {
    /// Counts one event for `key` at `now` and returns its number in the window.
    pub fn incr(&self, key: &str, window: Duration, now: Instant) -> u64 {
        let Ok(mut windows) = self.windows.lock() else { return 1 };
        if windows.len() >= MAX_LOCAL_KEYS && !windows.contains_key(key) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < window);
            if windows.len() >= MAX_LOCAL_KEYS {
                return 1;
            }
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1
    }

    /// Gives back one count of `key` (an event counted but not stored).
    pub fn refund(&self, key: &str) {
        if let Ok(mut windows) = self.windows.lock()
            && let Some(entry) = windows.get_mut(key)
        {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    pub fn len(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The Redis side: a connection made in the background, and the windows Redis
/// said are used up.
struct RedisCounter {
    /// Set by the connector task; it reconnects by itself afterwards.
    conn: std::sync::RwLock<Option<ConnectionManager>>,
    /// Told when `conn` is first set.
    connected: tokio::sync::Notify,
    count: redis::Script,
    refund: redis::Script,
    timeout: Duration,
    /// While set and in the future, Redis is skipped.
    skip_until: Mutex<Option<Instant>>,
    /// Key → (end of its used-up window, events seen since).
    used_up: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RedisCounter {
    fn connection(&self) -> Option<ConnectionManager> {
        self.conn.read().ok()?.clone()
    }

    async fn incr(&self, conn: &mut ConnectionManager, key: &str, window: Duration) -> redis::RedisResult<(u64, u64)> {
        self.count.key(key).arg(window.as_millis() as u64).invoke_async(conn).await
    }

    fn skipped(&self, now: Instant) -> bool {
        self.skip_until.lock().map(|s| s.is_some_and(|until| now < until)).unwrap_or(false)
    }

    fn skip(&self, until: Option<Instant>) {
        if let Ok(mut s) = self.skip_until.lock() {
            *s = until;
        }
    }

    /// The count to report when `key`'s window is known to be used up.
    fn known_used_up(&self, key: &str, now: Instant) -> Option<u64> {
        let mut used_up = self.used_up.lock().ok()?;
        match used_up.get_mut(key) {
            Some((until, count)) if now < *until => {
                *count += 1;
                Some(*count)
            }
            Some(_) => {
                used_up.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember_used_up(&self, key: &str, until: Instant, count: u64, now: Instant) {
        let Ok(mut used_up) = self.used_up.lock() else { return };
        if used_up.len() >= MAX_LOCAL_KEYS {
            used_up.retain(|_, (end, _)| now < *end);
            if used_up.len() >= MAX_LOCAL_KEYS {
                return;
            }
        }
        used_up.insert(key.to_owned(), (until, count));
    }
}

/// Connects to Redis in the background until it succeeds, then stops: the
/// connection manager reconnects by itself. Ends when the filter is dropped.
async fn connect_in_background(client: redis::Client, counter: std::sync::Weak<RedisCounter>) {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    loop {
        let attempt = ConnectionManager::new_with_config(client.clone(), config.clone()).await;
        let Some(counter) = counter.upgrade() else { return };
        match attempt {
            Ok(conn) => {
                if let Ok(mut slot) = counter.conn.write() {
                    *slot = Some(conn);
                }
                counter.connected.notify_waiters();
                tracing::info!("flood filter connected to redis");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect to redis yet; counting in process meanwhile"),
        }
        drop(counter);
        tokio::time::sleep(REDIS_RETRY).await;
    }
}

/// Longest a background connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The flood filter of one ingest instance.
pub struct FloodFilter {
    max_uses: u64,
    window: Duration,
    prefix: String,
    redis: Option<std::sync::Arc<RedisCounter>>,
    local: LocalCounter,
    fallback: AtomicBool,
    /// The background Redis connection, for the service to run (supervised).
    connector: Mutex<Option<Connector>>,
}

/// The future that makes the flood filter's Redis connection; it ends once
/// connected (or once the filter is gone).
pub type Connector = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl std::fmt::Debug for FloodFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodFilter")
            .field("max_uses", &self.max_uses)
            .field("window", &self.window)
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl FloodFilter {
    /// A filter passing `flood.max_uses` per `flood.window_secs` (a zero
    /// window disables it), shared through `redis` (made from `redis_config`)
    /// when given. The Redis connection is made by the future
    /// [`Self::take_connector`] returns, which the service runs in the
    /// background; until then the filter counts in process.
    pub fn new(flood: &FloodConfig, redis_config: &RedisConfig, redis: Option<redis::Client>) -> Self {
        let (max_uses, window) = (flood.max_uses, Duration::from_secs(flood.window_secs));
        let (prefix, timeout) = (redis_config.key_prefix.as_str(), Duration::from_millis(redis_config.timeout_ms));
        let mut connector: Option<Connector> = None;
        let redis = match redis {
            Some(client) => {
                let counter = std::sync::Arc::new(RedisCounter {
                    conn: std::sync::RwLock::new(None),
                    connected: tokio::sync::Notify::new(),
                    count: redis::Script::new(COUNT),
                    refund: redis::Script::new(REFUND),
                    timeout,
                    skip_until: Mutex::new(None),
                    used_up: Mutex::new(HashMap::new()),
                });
                connector = Some(Box::pin(connect_in_background(client, std::sync::Arc::downgrade(&counter))));
                Some(counter)
            }
            None => None,
        };
        metrics::gauge!(crate::metrics::FLOOD_FALLBACK_ACTIVE).set(0.0);
        Self {
            max_uses,
            window,
            prefix: prefix.to_owned(),
            redis,
            local: LocalCounter::default(),
            fallback: AtomicBool::new(false),
            connector: Mutex::new(connector),
        }
    }

    /// The future that connects to Redis (once; `None` without Redis).
    pub fn take_connector(&self) -> Option<Connector> {
        self.connector.lock().ok().and_then(|mut c| c.take())
    }

    /// Waits at most `bound` for the first Redis connection, so that an
    /// instance starts with farm-wide counts rather than a moment of
    /// in-process ones; true when connected (or when there is no Redis).
    pub async fn wait_connected(&self, bound: Duration) -> bool {
        let Some(redis) = self.redis.as_ref().filter(|_| self.enabled()) else { return true };
        // Registered before the check: a connection made in between still wakes it.
        let connected = redis.connected.notified();
        if redis.connection().is_some() {
            return true;
        }
        tokio::time::timeout(bound, connected).await.is_ok()
    }

    /// Whether the filter does anything (a window of 0 turns it off).
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// `None` without Redis; else whether the background connection is made.
    pub fn redis_connected(&self) -> Option<bool> {
        self.redis.as_ref().map(|r| r.connection().is_some())
    }

    /// True while Redis is configured but failing, so counts are per instance.
    pub fn fallback_active(&self) -> bool {
        self.fallback.load(Ordering::Relaxed)
    }

    fn key(&self, project: ProjectId, fingerprint: &Fingerprint) -> String {
        format!("{}{project}:{fingerprint}", self.prefix)
    }

    /// Counts one event of `fingerprint` in `project` and says whether it passes.
    pub async fn check(&self, project: ProjectId, fingerprint: &Fingerprint) -> Verdict {
        if !self.enabled() {
            return Verdict::Pass { count: 0 };
        }
        let key = self.key(project, fingerprint);
        let count = match &self.redis {
            Some(redis) => match self.count_in_redis(redis, &key).await {
                Some(count) => count,
                None => self.local.incr(&key, self.window, Instant::now()),
            },
            None => self.local.incr(&key, self.window, Instant::now()),
        };
        if count <= self.max_uses { Verdict::Pass { count } } else { Verdict::Drop { count } }
    }

    /// Gives back the count of an event that passed but was not stored
    /// (Kafka refused it), so that the SDK's retry is not dropped for it.
    /// Best effort: a Redis failure here is only logged.
    pub async fn refund(&self, project: ProjectId, fingerprint: &Fingerprint) {
        if !self.enabled() {
            return;
        }
        let key = self.key(project, fingerprint);
        self.local.refund(&key);
        let Some(redis) = &self.redis else { return };
        let Some(mut conn) = redis.connection() else { return };
        let invocation = redis.refund.key(&key);
        let refund = invocation.invoke_async::<i64>(&mut conn);
        if let Ok(Err(e)) = tokio::time::timeout(redis.timeout, refund).await {
            tracing::debug!(error = %e, "flood refund failed");
        }
    }

    /// `None` when Redis is skipped, not connected, or just failed.
    async fn count_in_redis(&self, redis: &RedisCounter, key: &str) -> Option<u64> {
        let now = Instant::now();
        if let Some(count) = redis.known_used_up(key, now) {
            return Some(count);
        }
        if redis.skipped(now) {
            return None;
        }
        let Some(mut conn) = redis.connection() else {
            self.redis_failed(redis, now, "not connected yet");
            return None;
        };
        let outcome = tokio::time::timeout(redis.timeout, redis.incr(&mut conn, key, self.window)).await;
        match outcome {
            Ok(Ok((count, ttl_ms))) => {
                if self.fallback.swap(false, Ordering::Relaxed) {
                    tracing::warn!("redis answers again: flood counts are farm-wide again");
                    metrics::gauge!(crate::metrics::FLOOD_FALLBACK_ACTIVE).set(0.0);
                }
                redis.skip(None);
                if count > self.max_uses {
                    redis.remember_used_up(key, now + Duration::from_millis(ttl_ms), count, now);
                }
                Some(count)
            }
            Ok(Err(e)) => self.redis_failed(redis, now, &e.to_string()),
            Err(_) => self.redis_failed(redis, now, &format!("no answer within {} ms", redis.timeout.as_millis())),
        }
    }

    fn redis_failed(&self, redis: &RedisCounter, now: Instant, error: &str) -> Option<u64> {
        metrics::counter!(crate::metrics::FLOOD_REDIS_ERRORS).increment(1);
        redis.skip(Some(now + REDIS_RETRY));
        if !self.fallback.swap(true, Ordering::Relaxed) {
            tracing::error!(error, "redis failed: flood filter counts in process until it answers again");
            metrics::gauge!(crate::metrics::FLOOD_FALLBACK_ACTIVE).set(1.0);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(max_uses: u64, window_secs: u64) -> FloodConfig {
        FloodConfig { max_uses, window_secs, ..FloodConfig::default() }
    }

    fn redis_config(timeout_ms: u64) -> RedisConfig {
        RedisConfig { key_prefix: "t:".into(), timeout_ms, ..RedisConfig::default() }
    }

    #[test]
    fn local_windows_count_and_reset() {
        let counter = LocalCounter::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(1);
        assert_eq!((1..=3).map(|_| counter.incr("a", w, t0)).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(counter.incr("b", w, t0), 1, "keys count apart");
        assert_eq!(counter.incr("a", w, t0 + Duration::from_millis(999)), 4, "same window");
        assert_eq!(counter.incr("a", w, t0 + w), 1, "a new window starts at the first event after it");
    }

    #[test]
    fn local_memory_is_bounded() {
        let counter = LocalCounter::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(1);
        for i in 0..MAX_LOCAL_KEYS + 10 {
            counter.incr(&i.to_string(), w, t0);
        }
        assert!(counter.len() <= MAX_LOCAL_KEYS);
        // Expired windows go first; live ones survive when there is room.
        let later = t0 + w * 2;
        counter.incr("fresh", w, later);
        assert_eq!(counter.incr("fresh", w, later), 2);
    }

    #[tokio::test]
    async fn in_process_filter_passes_max_uses_then_drops() {
        let filter = FloodFilter::new(&flood(3, 60), &redis_config(50), None);
        let verdicts: Vec<Verdict> = check_n(&filter, 5).await;
        assert_eq!(
            verdicts,
            [
                Verdict::Pass { count: 1 },
                Verdict::Pass { count: 2 },
                Verdict::Pass { count: 3 },
                Verdict::Drop { count: 4 },
                Verdict::Drop { count: 5 }
            ]
        );
        assert_eq!(
            filter.check(ProjectId::new(2), &Fingerprint::new("fp")).await,
            Verdict::Pass { count: 1 },
            "projects count apart"
        );
        assert!(!filter.fallback_active());
    }

    async fn check_n(filter: &FloodFilter, n: usize) -> Vec<Verdict> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(filter.check(ProjectId::new(1), &Fingerprint::new("fp")).await);
        }
        out
    }

    #[tokio::test]
    async fn a_zero_window_disables_the_filter() {
        let filter = FloodFilter::new(&flood(1, 0), &redis_config(50), None);
        for _ in 0..5 {
            assert_eq!(filter.check(ProjectId::new(1), &Fingerprint::new("fp")).await, Verdict::Pass { count: 0 });
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_counting_in_process() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).expect("url");
        let filter = FloodFilter::new(&flood(2, 60), &redis_config(200), Some(client));
        assert_eq!(filter.check(ProjectId::new(1), &Fingerprint::new("fp")).await, Verdict::Pass { count: 1 });
        assert!(filter.fallback_active());
        assert_eq!(filter.check(ProjectId::new(1), &Fingerprint::new("fp")).await, Verdict::Pass { count: 2 });
        assert_eq!(
            filter.check(ProjectId::new(1), &Fingerprint::new("fp")).await,
            Verdict::Drop { count: 3 },
            "the limit still holds, per instance"
        );
    }
}
