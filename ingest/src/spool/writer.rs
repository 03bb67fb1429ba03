//! The spool's only appender: a loop on a blocking thread that takes every
//! append waiting at that moment (up to `batch_max_records`) and commits them
//! in one transaction, so that concurrent requests share one fsync.
//!
//! While one fsync runs, the next requests queue up and become the next
//! batch; `ingest.spool.commit_delay_us` (like the producer's `linger.ms`)
//! lets a batch gather a moment longer, so that a busy spool makes fewer,
//! larger commits.
#![expect(clippy::disallowed_types, reason = "the writer is a blocking thread timing its fsyncs")]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{Shared, SpoolError, SpoolRecord, now_ms, store, sub};

/// One record waiting to be made durable, and whom to tell.
#[derive(Debug)]
pub(super) struct Append {
    pub record: SpoolRecord,
    pub done: oneshot::Sender<Result<(), SpoolError>>,
}

/// The writer loop's state; [`Writer::run`] consumes it.
#[derive(Debug)]
pub struct Writer {
    conn: rusqlite::Connection,
    queue: mpsc::Receiver<Append>,
    shared: Arc<Shared>,
    max_bytes: u64,
    batch_max: usize,
    linger: std::time::Duration,
    /// Record bytes committed since the last checkpoint.
    since_checkpoint: u64,
}

/// The WAL is checkpointed once this many record bytes went into it: a
/// quarter of SQLite's own default (1000 pages), so that each checkpoint
/// holds the next batch back for a shorter time.
const CHECKPOINT_BYTES: u64 = 1 << 20;

impl Writer {
    pub(super) fn new(
        conn: rusqlite::Connection,
        queue: mpsc::Receiver<Append>,
        shared: Arc<Shared>,
        config: &cyclops_common::config::SpoolConfig,
    ) -> Self {
        Self {
            conn,
            queue,
            shared,
            max_bytes: config.max_bytes,
            batch_max: config.batch_max_records,
            linger: std::time::Duration::from_micros(config.commit_delay_us),
            since_checkpoint: 0,
        }
    }

    /// Runs until every [`super::Spool`] handle is gone. Blocking: run it on
    /// a blocking thread. A failed write is answered to its requests (503)
    /// and the loop goes on: the disk may recover.
    pub fn run(mut self) -> Result<(), SpoolError> {
        let mut batch = Vec::with_capacity(self.batch_max);
        while let Some(first) = self.queue.blocking_recv() {
            batch.push(first);
            self.take_waiting(&mut batch);
            // Under load, a moment's wait fills the batch: fewer, larger
            // commits (each fsync is a disk flush and, in a VM, an exit).
            if !self.linger.is_zero() && batch.len() < self.batch_max {
                std::thread::sleep(self.linger);
                self.take_waiting(&mut batch);
            }
            self.commit(&mut batch);
        }
        Ok(())
    }

    fn take_waiting(&mut self, batch: &mut Vec<Append>) {
        while batch.len() < self.batch_max {
            match self.queue.try_recv() {
                Ok(append) => batch.push(append),
                Err(_) => break,
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<Append>) {
        // Refuse, in arrival order, what would not fit; nothing spooled is touched.
        let mut bytes = self.shared.bytes.load(Ordering::Relaxed);
        let mut taken = Vec::with_capacity(batch.len());
        for append in batch.drain(..) {
            let size = append.record.size();
            if bytes + size > self.max_bytes {
                append.done.send(Err(SpoolError::Full { max_bytes: self.max_bytes })).ok();
            } else {
                bytes += size;
                taken.push(append);
            }
        }
        if taken.is_empty() {
            return;
        }
        let now = now_ms();
        let s = &self.shared;
        // Counted before the commit: the drainer may read, deliver and
        // subtract these records before this thread gets to count them.
        let added: u64 = taken.iter().map(|a| a.record.size()).sum();
        s.bytes.fetch_add(added, Ordering::Relaxed);
        s.records.fetch_add(taken.len() as u64, Ordering::Relaxed);
        let started = Instant::now();
        let written = store::insert(&mut self.conn, taken.iter().map(|a| &a.record), now);
        metrics::histogram!(crate::metrics::SPOOL_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                s.appended.fetch_add(taken.len() as u64, Ordering::Relaxed);
                // Only the first record into an empty spool sets the oldest.
                s.oldest_ms.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed).ok();
                metrics::counter!(crate::metrics::SPOOL_APPENDED).increment(taken.len() as u64);
                s.set_error(None);
                s.publish();
                for append in taken {
                    append.done.send(Ok(())).ok();
                }
                s.arrived.notify_one();
                // After the answers: the next batch waits for it, this one does not.
                self.since_checkpoint += added;
                if self.since_checkpoint >= CHECKPOINT_BYTES {
                    self.since_checkpoint = 0;
                    if let Err(e) = store::checkpoint(&self.conn) {
                        tracing::warn!(error = %e, "spool checkpoint failed; trying again later");
                    }
                }
            }
            Err(e) => {
                sub(&s.bytes, added);
                sub(&s.records, taken.len() as u64);
                let message = e.to_string();
                tracing::error!(error = %message, records = taken.len(), "spool write failed: answering 503");
                self.shared.set_error(Some(message.clone()));
                for append in taken {
                    append.done.send(Err(SpoolError::Write(message.clone()))).ok();
                }
            }
        }
    }
}
