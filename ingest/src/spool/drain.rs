//! The drainer: moves spooled records into Kafka, oldest first, and deletes
//! only the ones Kafka acknowledged (`acks=all`, idempotent producer).
//!
//! It runs whenever the spool holds records, from the start of the process
//! (what an earlier run or a dead node left drains first). Each pass reads
//! batches after a cursor, so a record Kafka keeps refusing does not hold
//! back the ones behind it; a pass that delivers nothing waits (100 ms,
//! doubling to `ingest.spool.drain_retry_max_ms`) before the next. A record
//! whose checksum fails is deleted, counted and logged: it cannot be
//! trusted, and it must not stop the rest. Duplicates are possible (a delete
//! lost in a crash, a record spooled after a late acknowledgement); Sentry
//! dedupes them by event id.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyclops_common::shutdown::CancellationToken;
use futures::future::join_all;

use super::store::{self, Row};
use super::{Shared, kafka_headers, sub};
use crate::durable::KafkaState;
use crate::producer::{EventProducer, ProduceError};

/// First wait after a pass that delivered nothing.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// How often the gauges (the oldest record's age grows) are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// Why the drainer stopped.
#[derive(Debug, thiserror::Error)]
#[error("spool drainer: {0}")]
pub struct DrainError(String);

/// What the drainer needs.
#[derive(Debug)]
pub struct Drainer {
    pub conn: rusqlite::Connection,
    pub shared: Arc<Shared>,
    pub producer: Arc<EventProducer>,
    pub kafka: Arc<KafkaState>,
    pub batch: usize,
    pub retry_max: Duration,
    pub max_age: Duration,
}

impl Drainer {
    /// Drains until `stop` (cancelled by ingest after its final flush, so that
    /// it drains through the shutdown); what is left stays on disk for the
    /// next start.
    pub async fn run(self, stop: CancellationToken) -> Result<(), DrainError> {
        let Self { conn, shared, producer, kafka, batch, retry_max, max_age } = self;
        let conn = Arc::new(Mutex::new(conn));
        let mut retry = RETRY_MIN;
        let mut undeleted = Undeleted::default();
        let mut warned_age = false;
        while !stop.is_cancelled() {
            shared.publish();
            let too_old = shared.oldest_age().is_some_and(|age| age > max_age);
            if too_old && !warned_age {
                tracing::error!(
                    max_age_secs = max_age.as_secs(),
                    "spooled records are older than ingest.spool.max_age_secs (still kept and drained)"
                );
            }
            warned_age = too_old;
            let records = shared.records.load(Ordering::Relaxed);
            if records > 0 && shared.oldest_ms.load(Ordering::Relaxed) == 0 {
                // A drain that emptied the spool raced a new record's commit.
                let oldest = blocking(&conn, |c| store::oldest(c)).await.ok().flatten();
                shared.oldest_ms.store(oldest.unwrap_or(0), Ordering::Relaxed);
            }
            if records == 0 {
                tokio::select! {
                    () = shared.arrived.notified() => {}
                    () = tokio::time::sleep(GAUGE_EVERY) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
            let delivered = match pass(&conn, &shared, &producer, &kafka, batch, &mut undeleted, &stop).await {
                Ok(delivered) => delivered,
                // The disk may recover (and a restart would meet the same disk): retry.
                Err(e) => {
                    tracing::error!(error = %e, "spool drain failed; retrying");
                    shared.set_error(Some(e.to_string()));
                    false
                }
            };
            if delivered {
                retry = RETRY_MIN;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = stop.cancelled() => break,
                }
                retry = (retry * 2).min(retry_max);
            }
        }
        shared.publish();
        Ok(())
    }
}

/// Rows Kafka already has (or corrupt ones to drop) whose delete failed —
/// a full disk: SQLite needs room in the WAL to delete. They are not sent
/// again, and their delete is retried at each pass. A restart forgets them
/// (they are sent once more; Sentry dedupes by event id).
#[derive(Debug, Default)]
pub struct Undeleted {
    /// id → (size, corrupt)
    rows: HashMap<i64, (u64, bool)>,
}

/// Most rows kept undeleted; past it the drainer stops sending until it can delete.
const UNDELETED_MAX: usize = 100_000;

/// Deletes `rows` (id, size, corrupt) and accounts for them; on failure
/// keeps them in `undeleted`.
async fn delete_done(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    shared: &Shared,
    undeleted: &mut Undeleted,
    rows: Vec<(i64, u64, bool)>,
    retrying: bool,
) -> Result<(), DrainError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|(id, _, _)| *id).collect();
    if let Err(e) = blocking(conn, move |c| store::delete(c, &ids)).await {
        if retrying {
            tracing::debug!(error = %e, records = rows.len(), "drained records still cannot be deleted");
        } else {
            tracing::error!(error = %e, records = rows.len(), "cannot delete drained records (disk full?): they are kept, not sent again, and deleted later");
        }
        shared.set_error(Some(e.to_string()));
        undeleted.rows.extend(rows.into_iter().map(|(id, size, corrupt)| (id, (size, corrupt))));
        return Ok(());
    }
    let corrupt = rows.iter().filter(|(_, _, c)| *c).count() as u64;
    let delivered = rows.len() as u64 - corrupt;
    let freed: u64 = rows.iter().map(|(_, size, _)| size).sum();
    let oldest = blocking(conn, |c| store::oldest(c)).await?;
    sub(&shared.records, rows.len() as u64);
    sub(&shared.bytes, freed);
    shared.oldest_ms.store(oldest.unwrap_or(0), Ordering::Relaxed);
    shared.drained.fetch_add(delivered, Ordering::Relaxed);
    shared.corrupt.fetch_add(corrupt, Ordering::Relaxed);
    metrics::counter!(crate::metrics::SPOOL_DRAINED).increment(delivered);
    metrics::counter!(crate::metrics::SPOOL_CORRUPT).increment(corrupt);
    shared.publish();
    Ok(())
}

/// One pass over the spool; true when it delivered anything.
async fn pass(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    shared: &Shared,
    producer: &EventProducer,
    kafka: &KafkaState,
    batch: usize,
    undeleted: &mut Undeleted,
    stop: &CancellationToken,
) -> Result<bool, DrainError> {
    let retry: Vec<(i64, u64, bool)> = undeleted.rows.drain().map(|(id, (size, c))| (id, size, c)).collect();
    delete_done(conn, shared, undeleted, retry, true).await?;
    let mut cursor = 0;
    let mut delivered_any = false;
    // Records Kafka refused one by one (not as a whole) in this pass.
    let mut refused: Option<(u64, ProduceError)> = None;
    while !stop.is_cancelled() && undeleted.rows.len() < UNDELETED_MAX {
        // While Kafka is down, one record probes it: not a whole batch of
        // sends each waiting out the produce timeout.
        let limit = if kafka.down_for().is_some() { 1 } else { batch };
        let mut rows = read_batch(conn, cursor, limit).await?;
        let Some(last) = rows.last() else {
            if cursor == 0 && undeleted.rows.is_empty() {
                resync(conn, shared).await?;
            }
            break;
        };
        cursor = last.id;
        rows.retain(|row| !undeleted.rows.contains_key(&row.id));
        let sends = rows.iter().map(|row| async move {
            let record = row.record.as_ref().ok()?;
            let headers = || kafka_headers(&record.headers);
            Some(producer.send_acknowledged(&record.topic, &record.key, &record.value, headers).await)
        });
        let outcomes = join_all(sends).await;
        let (mut done, mut failure) = (Vec::new(), None);
        for (row, outcome) in rows.iter().zip(outcomes) {
            match outcome {
                Some(Ok(())) => done.push((row.id, row.size, false)),
                Some(Err(e)) => failure = Some(e),
                None => {
                    corrupt_row(row);
                    done.push((row.id, row.size, true));
                }
            }
        }
        let delivered = done.iter().filter(|(_, _, corrupt)| !corrupt).count();
        let failed = (rows.len() - done.len()) as u64;
        delete_done(conn, shared, undeleted, done, false).await?;
        if delivered > 0 {
            delivered_any = true;
            kafka.up();
        }
        if let Some(e) = failure {
            tracing::debug!(error = %e, "spool drain: kafka did not take a record; retrying later");
            // Kafka is failing as a whole: the rest of this pass would wait
            // out the same timeouts. (One refused record does not say so.)
            if delivered == 0 && e.kafka_unavailable() {
                kafka.down(&e);
                break;
            }
            refused = Some((refused.map_or(0, |(n, _)| n) + failed, e));
        }
    }
    // Once per pass, and passes that deliver nothing back off to
    // drain_retry_max_ms: a record Kafka refuses for good is seen in the log.
    if let Some((records, error)) = refused {
        tracing::warn!(records, error = %error, "kafka refused spooled records one by one; they stay spooled and are retried");
    }
    Ok(delivered_any)
}

/// The next rows; when a corrupt page fails the batch read, its rows one at
/// a time (the unreadable ones come back corrupt, to be counted and deleted).
async fn read_batch(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    cursor: i64,
    batch: usize,
) -> Result<Vec<Row>, DrainError> {
    match blocking(conn, move |c| store::read_after(c, cursor, batch)).await {
        Ok(rows) => Ok(rows),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a batch of spooled records: reading them one by one");
            blocking(conn, move |c| {
                let ids = store::ids_after(c, cursor, batch)?;
                Ok(ids.into_iter().map(|id| store::read_one(c, id)).collect())
            })
            .await
        }
    }
}

/// The counters from the database itself, when a pass finds it empty:
/// whatever drift a failed write or an unreadable row left is gone.
async fn resync(conn: &Arc<Mutex<rusqlite::Connection>>, shared: &Shared) -> Result<(), DrainError> {
    let totals = blocking(conn, |c| store::totals(c)).await?;
    if totals.records == 0 {
        shared.records.store(0, Ordering::Relaxed);
        shared.bytes.store(0, Ordering::Relaxed);
        shared.oldest_ms.store(0, Ordering::Relaxed);
    }
    Ok(())
}

fn corrupt_row(row: &Row) {
    if let Err(why) = &row.record {
        tracing::error!(id = row.id, size = row.size, why, "a spooled record is corrupt: skipped and deleted");
    }
}

/// Runs `work` on the drainer's connection, off the runtime.
async fn blocking<T: Send + 'static>(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, DrainError> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = conn.lock().map_err(|_| DrainError("connection lock poisoned".into()))?;
        work(&mut conn).map_err(|e| DrainError(e.to_string()))
    })
    .await
    .map_err(|e| DrainError(e.to_string()))?
}
