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

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyclops_common::shutdown::CancellationToken;
use futures::future::join_all;

use super::store::{self, Row};
use super::{Shared, kafka_headers};
use crate::durable::KafkaState;
use crate::producer::EventProducer;

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
    /// Drains until `shutdown`; what is left stays on disk for the next start.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DrainError> {
        let Self { conn, shared, producer, kafka, batch, retry_max, max_age } = self;
        let conn = Arc::new(Mutex::new(conn));
        let mut retry = RETRY_MIN;
        let mut warned_age = false;
        while !shutdown.is_cancelled() {
            shared.publish();
            let too_old = shared.oldest_age().is_some_and(|age| age > max_age);
            if too_old && !warned_age {
                tracing::error!(
                    max_age_secs = max_age.as_secs(),
                    "spooled records are older than ingest.spool.max_age_secs (still kept and drained)"
                );
            }
            warned_age = too_old;
            if shared.records.load(Ordering::Relaxed) == 0 {
                tokio::select! {
                    () = shared.arrived.notified() => {}
                    () = tokio::time::sleep(GAUGE_EVERY) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let delivered = match pass(&conn, &shared, &producer, &kafka, batch, &shutdown).await {
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
                    () = shutdown.cancelled() => break,
                }
                retry = (retry * 2).min(retry_max);
            }
        }
        shared.publish();
        Ok(())
    }
}

/// One pass over the spool; true when it delivered anything.
async fn pass(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    shared: &Shared,
    producer: &EventProducer,
    kafka: &KafkaState,
    batch: usize,
    shutdown: &CancellationToken,
) -> Result<bool, DrainError> {
    let mut cursor = 0;
    let mut delivered_any = false;
    while !shutdown.is_cancelled() {
        let rows = blocking(conn, move |c| store::read_after(c, cursor, batch)).await?;
        let Some(last) = rows.last() else { break };
        cursor = last.id;
        let sends = rows.iter().map(|row| async move {
            let record = row.record.as_ref().ok()?;
            let headers = kafka_headers(&record.headers);
            match producer.send_acknowledged(&record.topic, &record.key, &record.value, headers).await {
                Ok(()) => Some(Ok(())),
                Err(e) => Some(Err(e)),
            }
        });
        let outcomes = join_all(sends).await;
        let (mut done, mut freed, mut failure, mut corrupt) = (Vec::new(), 0, None, 0u64);
        for (row, outcome) in rows.iter().zip(outcomes) {
            match outcome {
                Some(Ok(())) => {
                    done.push(row.id);
                    freed += row.size;
                }
                Some(Err(e)) => failure = Some(e),
                None => {
                    corrupt_row(row);
                    corrupt += 1;
                    done.push(row.id);
                    freed += row.size;
                }
            }
        }
        let delivered = done.len() as u64 - corrupt;
        if !done.is_empty() {
            let ids = done.clone();
            blocking(conn, move |c| store::delete(c, &ids)).await?;
            let oldest = blocking(conn, |c| store::oldest(c)).await?;
            shared.records.fetch_sub(done.len() as u64, Ordering::Relaxed);
            shared.bytes.fetch_sub(freed, Ordering::Relaxed);
            shared.oldest_ms.store(oldest.unwrap_or(0), Ordering::Relaxed);
            shared.drained.fetch_add(delivered, Ordering::Relaxed);
            shared.corrupt.fetch_add(corrupt, Ordering::Relaxed);
            metrics::counter!(crate::metrics::SPOOL_DRAINED).increment(delivered);
            metrics::counter!(crate::metrics::SPOOL_CORRUPT).increment(corrupt);
            shared.publish();
        }
        if delivered > 0 {
            delivered_any = true;
            kafka.up();
        }
        if let Some(e) = failure {
            kafka.down(&e);
            tracing::debug!(error = %e, "spool drain: kafka did not take a record; retrying later");
            // Kafka is failing: the rest of this pass would wait out the same timeouts.
            if delivered == 0 {
                break;
            }
        }
    }
    Ok(delivered_any)
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
