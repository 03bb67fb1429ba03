//! The local spool: where an event goes when Kafka cannot take it, so that
//! a Kafka outage costs no event an SDK was answered 200 for.
//!
//! - [`Spool::open`] takes the directory's lock file (one process per
//!   directory), opens the SQLite database ([`store`]) and reads what an
//!   earlier run left, which the drainer sends first.
//! - [`Spool::append`] hands a record to the writer ([`writer`]), which
//!   commits the records of every request waiting at that moment in one
//!   transaction: one fsync for all of them (group commit). It returns once
//!   the record is durable.
//! - The drainer ([`drain`]) re-produces records oldest first and deletes
//!   only what Kafka acknowledged.

pub mod drain;
pub mod store;
mod writer;

use cyclops_api::count::SpoolState;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cyclops_common::config::SpoolConfig;
use cyclops_common::status::CheckResult;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tokio::sync::{mpsc, oneshot};

pub use store::SpoolRecord;
pub use writer::Writer;

/// The lock file inside the spool directory.
const LOCK_FILE: &str = "LOCK";
/// Appends waiting for the writer; requests wait when it is full.
const QUEUE: usize = 4096;

/// Why the spool cannot take a record, or cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {dir} is in use by another process ({holder}); give each ingest its own ingest.spool.dir")]
    Locked { dir: PathBuf, holder: String },
    #[error("cannot use spool directory {dir}: {message}")]
    Dir { dir: PathBuf, message: String },
    #[error("cannot open the spool database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("spool full ({max_bytes} bytes, ingest.spool.max_bytes)")]
    Full { max_bytes: u64 },
    #[error("spool write failed: {0}")]
    Write(String),
    #[error("the spool writer has stopped")]
    Stopped,
}

/// Counters shared by the appender, the writer and the drainer.
#[derive(Debug, Default)]
pub struct Shared {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    /// When the oldest record was spooled (Unix ms); 0 when empty.
    pub oldest_ms: AtomicU64,
    pub appended: AtomicU64,
    pub drained: AtomicU64,
    pub corrupt: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Wakes the drainer when records arrive.
    pub arrived: tokio::sync::Notify,
}

impl Shared {
    /// Publishes the gauges.
    pub fn publish(&self) {
        use crate::metrics as m;
        metrics::gauge!(m::SPOOL_RECORDS).set(self.records.load(Ordering::Relaxed) as f64);
        metrics::gauge!(m::SPOOL_BYTES).set(self.bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!(m::SPOOL_OLDEST_AGE).set(self.oldest_age().map_or(0.0, |d| d.as_secs_f64()));
    }

    pub fn oldest_age(&self) -> Option<Duration> {
        match self.oldest_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }

    pub(super) fn set_error(&self, error: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }
}

/// The spool of one ingest instance.
#[derive(Debug)]
pub struct Spool {
    appends: mpsc::Sender<writer::Append>,
    shared: std::sync::Arc<Shared>,
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    /// Longest wait for a commit (a hung disk must not hold requests forever).
    append_timeout: Duration,
    /// Held for the process's life: the directory's lock.
    _lock: File,
}

/// What [`Spool::open`] returns besides the spool: the two loops to run
/// (supervised), each with its own connection.
#[derive(Debug)]
pub struct Parts {
    pub writer: Writer,
    pub drain_conn: rusqlite::Connection,
}

impl Spool {
    /// Opens the spool in `config.dir` for an ingest on `port`: creates the
    /// directory, takes its lock, opens (or, when it is not a database any
    /// more, moves aside and recreates) the database, and counts what an
    /// earlier run left.
    pub fn open(config: &SpoolConfig, port: u16, append_timeout: Duration) -> Result<(Self, Parts), SpoolError> {
        let dir = config.dir_for(port);
        let dir_error = |e: std::io::Error| SpoolError::Dir { dir: dir.clone(), message: e.to_string() };
        std::fs::create_dir_all(&dir).map_err(dir_error)?;
        let lock = lock(&dir)?;
        let path = dir.join(store::DB_FILE);
        let shared = std::sync::Arc::new(Shared::default());
        let open_all = || -> rusqlite::Result<_> {
            let append = store::open(&path, true)?;
            let totals = store::totals(&append)?;
            Ok((append, store::open(&path, false)?, totals))
        };
        let (append_conn, drain_conn, totals) = match open_all() {
            Ok(opened) => opened,
            Err(e) if store::is_corrupt(&e) => {
                let aside = move_aside(&path).map_err(dir_error)?;
                shared.corrupt.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::SPOOL_CORRUPT).increment(1);
                tracing::error!(error = %e, moved_to = %aside.display(), "the spool database is corrupt: moved aside, starting an empty one");
                open_all().map_err(|e| SpoolError::Open { path: path.clone(), message: e.to_string() })?
            }
            Err(e) => return Err(SpoolError::Open { path, message: e.to_string() }),
        };
        shared.records.store(totals.records, Ordering::Relaxed);
        shared.bytes.store(totals.bytes, Ordering::Relaxed);
        shared.oldest_ms.store(totals.oldest_ms.unwrap_or(0), Ordering::Relaxed);
        shared.publish();
        if totals.records > 0 {
            tracing::warn!(records = totals.records, bytes = totals.bytes, dir = %dir.display(), "the spool holds records from an earlier run: draining them into Kafka");
        }
        let (appends, queue) = mpsc::channel(QUEUE);
        let writer = Writer::new(append_conn, queue, shared.clone(), config);
        let spool = Self {
            appends,
            shared,
            dir,
            max_bytes: config.max_bytes,
            max_age: Duration::from_secs(config.max_age_secs),
            append_timeout,
            _lock: lock,
        };
        Ok((spool, Parts { writer, drain_conn }))
    }

    /// Makes `record` durable; returns once it is fsynced, or fails after
    /// the append timeout (a commit that lands later only makes a duplicate).
    pub async fn append(&self, record: SpoolRecord) -> Result<(), SpoolError> {
        let (done, outcome) = oneshot::channel();
        let append = async {
            self.appends.send(writer::Append { record, done }).await.map_err(|_| SpoolError::Stopped)?;
            outcome.await.map_err(|_| SpoolError::Stopped)?
        };
        tokio::time::timeout(self.append_timeout, append).await.unwrap_or_else(|_| {
            Err(SpoolError::Write(format!("no commit within {} ms", self.append_timeout.as_millis())))
        })
    }

    pub fn shared(&self) -> &std::sync::Arc<Shared> {
        &self.shared
    }

    pub fn records(&self) -> u64 {
        self.shared.records.load(Ordering::Relaxed)
    }

    /// Whether another record of `size` bytes would not fit.
    pub fn is_full(&self, size: u64) -> bool {
        self.shared.bytes.load(Ordering::Relaxed) + size > self.max_bytes
    }

    /// The spool in `/count`; `kafka_down` is [`crate::durable::KafkaState`]'s.
    pub fn count(&self, kafka_down: bool) -> SpoolState {
        let s = &self.shared;
        SpoolState {
            kafka_down,
            dir: self.dir.display().to_string(),
            records: s.records.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            oldest_age_secs: s.oldest_age().map(|d| d.as_secs()),
            appended: s.appended.load(Ordering::Relaxed),
            drained: s.drained.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
            last_error: s.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// The spool in `/ready`: degraded while it holds records or Kafka is
    /// away (ingest still accepts: a load balancer must keep sending);
    /// unready only when it is full while Kafka is away, when nothing more
    /// can be taken.
    pub fn check(&self, kafka_down_for: Option<Duration>) -> CheckResult {
        let s = &self.shared;
        let (records, bytes) = (s.records.load(Ordering::Relaxed), s.bytes.load(Ordering::Relaxed));
        let percent = bytes as f64 * 100.0 / self.max_bytes as f64;
        let full = self.is_full(1);
        let mut detail = match kafka_down_for {
            Some(down) => format!(
                "kafka unavailable for {} s: spooling ({records} records, {bytes} bytes, {percent:.1}% of max_bytes)",
                down.as_secs()
            ),
            None if records > 0 => format!("draining {records} records ({bytes} bytes) into kafka"),
            None => "empty".to_owned(),
        };
        if full {
            detail.push_str("; full: events kafka cannot take are refused with 503");
        }
        if let Some(age) = s.oldest_age().filter(|age| *age > self.max_age) {
            detail.push_str(&format!("; oldest record spooled {} s ago, past max_age_secs", age.as_secs()));
        }
        if let Some(error) = s.last_error.lock().ok().and_then(|e| e.clone()) {
            detail.push_str(&format!("; last write failed: {error}"));
        }
        let ok = records == 0 && kafka_down_for.is_none();
        CheckResult { name: "spool", ok, critical: full && kafka_down_for.is_some(), detail }
    }
}

/// Takes `dir`'s lock file, writing this process's id into it.
fn lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let dir_error = |e: std::io::Error| SpoolError::Dir { dir: dir.to_owned(), message: e.to_string() };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(dir_error)?;
    if let Err(e) = file.try_lock() {
        let mut holder = String::new();
        file.read_to_string(&mut holder).ok();
        let holder = match holder.trim() {
            "" => format!("{e}"),
            pid => format!("pid {pid}, per {}", path.display()),
        };
        return Err(SpoolError::Locked { dir: dir.to_owned(), holder });
    }
    file.set_len(0).and_then(|()| file.rewind()).map_err(dir_error)?;
    writeln!(file, "{}", std::process::id()).and_then(|()| file.sync_all()).map_err(dir_error)?;
    Ok(file)
}

/// Renames a database SQLite cannot read (and its WAL) out of the way, so
/// that ingest starts instead of failing on it at every restart.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let aside = path.with_extension(format!("db.corrupt-{}", now_ms()));
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            std::fs::rename(&side, format!("{}{suffix}", aside.display()))?;
        }
    }
    Ok(aside)
}

/// A record's Kafka headers, as the spool keeps them.
pub fn header_pairs(headers: &OwnedHeaders) -> Vec<(String, Option<Vec<u8>>)> {
    headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect()
}

/// The Kafka headers of a spooled record.
pub fn kafka_headers(pairs: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new_with_capacity(pairs.len()), |h, (key, value)| {
        h.insert(Header { key, value: value.as_deref() })
    })
}

/// Subtracts without wrapping: a counter resynced from the database may be
/// below what an operation in flight takes back.
fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n))).ok();
}

pub(crate) use crate::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config(dir: &Path) -> SpoolConfig {
        SpoolConfig { dir: dir.join("{port}").display().to_string(), ..SpoolConfig::default() }
    }

    #[test]
    fn a_second_process_on_the_same_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("dir");
        let (_first, _parts) = Spool::open(&config(dir.path()), 3000, SECOND).expect("first");
        let second = Spool::open(&config(dir.path()), 3000, SECOND).expect_err("the same dir is locked");
        let text = second.to_string();
        assert!(text.contains("in use by another process"), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(Spool::open(&config(dir.path()), 3001, SECOND).is_ok(), "another port, another dir");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_moved_aside_and_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let spool_dir = dir.path().join("3000");
        std::fs::create_dir_all(&spool_dir).expect("dir");
        std::fs::write(spool_dir.join(store::DB_FILE), vec![0xAB; 8192]).expect("garbage");
        let (spool, _parts) = Spool::open(&config(dir.path()), 3000, SECOND).expect("opens anyway");
        assert_eq!(spool.shared.corrupt.load(Ordering::Relaxed), 1);
        let aside = std::fs::read_dir(&spool_dir)
            .expect("list")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(aside, "the bad file is kept for the operator");
    }

    #[test]
    fn headers_convert_both_ways_in_order() {
        let kafka = OwnedHeaders::new()
            .insert(Header { key: "b", value: Some("2") })
            .insert(Header { key: "a", value: None::<&[u8]> });
        let pairs = header_pairs(&kafka);
        assert_eq!(pairs, vec![("b".to_owned(), Some(b"2".to_vec())), ("a".to_owned(), None)]);
        assert_eq!(header_pairs(&kafka_headers(&pairs)), pairs);
    }
}
