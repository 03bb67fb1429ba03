//! The spool's storage: one SQLite database in WAL mode (as Relay's spool),
//! one row per record, each with a checksum of its own.
//!
//! SQLite makes a commit durable (`synchronous = FULL` on the appending
//! connection fsyncs the WAL at each commit) and recovers a torn WAL tail by
//! itself at open: a transaction whose frames are not all there is not
//! there. The row checksum (xxh3 over every field) catches what SQLite
//! cannot: bytes changed under it on disk.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};

/// The database file inside the spool directory.
pub const DB_FILE: &str = "spool.db";

/// How long a connection waits for the other one's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spooled_at_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    checksum INTEGER NOT NULL,
    topic BLOB NOT NULL,
    key BLOB NOT NULL,
    headers BLOB NOT NULL,
    value BLOB NOT NULL
)";

/// One Kafka record exactly as it would have gone to Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub topic: String,
    pub key: Vec<u8>,
    /// In order, as produced; a `None` value is a header without one.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub value: Vec<u8>,
}

impl SpoolRecord {
    /// The bytes it counts against `ingest.spool.max_bytes`.
    pub fn size(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
        (self.topic.len() + self.key.len() + headers + self.value.len()) as u64
    }
}

/// A stored row as read back: its record, or why it cannot be trusted.
#[derive(Debug)]
pub struct Row {
    pub id: i64,
    pub size: u64,
    pub record: Result<SpoolRecord, String>,
}

/// What the spool holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    pub bytes: u64,
    /// When the oldest record was spooled (Unix ms).
    pub oldest_ms: Option<u64>,
}

/// The WAL is cut back to this after a checkpoint.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 << 20;

/// Opens (creating when missing) the database at `path`. `durable` commits
/// fsync the WAL (the appender's); others are only ordered (the drainer's
/// deletes: losing one re-sends a record, which Sentry dedupes). No
/// connection checkpoints by itself: an automatic checkpoint runs inside
/// the commit that crosses its threshold, copying megabytes and fsyncing the
/// database while every request of that batch waits; the writer calls
/// [`checkpoint`] between batches instead, after it has answered one.
pub fn open(path: &Path, durable: bool) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!("journal_mode is {mode}, not wal")));
    }
    conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Copies what the WAL holds into the database (PASSIVE: it waits for no
/// reader). Run by the only appender between its commits, it completes, and
/// the next commit starts the WAL over: it never grows past a checkpoint's
/// worth (and `journal_size_limit`). A checkpoint on another connection
/// would not complete under a steady load, and the WAL would grow without end.
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// Whether `error` says the file is not a database SQLite can use.
pub fn is_corrupt(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(error.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase))
}

/// Appends `records` in one transaction: all of them are durable once this
/// returns `Ok`, none of them otherwise.
pub fn insert<'a>(
    conn: &mut Connection,
    records: impl Iterator<Item = &'a SpoolRecord>,
    now_ms: u64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO records (spooled_at_ms, size, checksum, topic, key, headers, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for record in records {
            let headers = encode_headers(&record.headers);
            let sum = checksum(record.topic.as_bytes(), &record.key, &headers, &record.value);
            insert.execute(params![
                now_ms as i64,
                record.size() as i64,
                sum as i64,
                record.topic.as_bytes(),
                record.key,
                headers,
                record.value
            ])?;
        }
    }
    tx.commit()
}

/// Up to `limit` rows after `after_id`, oldest first. A row whose fields
/// cannot be read comes back as a corrupt row, not as an error for all.
pub fn read_after(conn: &Connection, after_id: i64, limit: usize) -> rusqlite::Result<Vec<Row>> {
    let mut select = conn.prepare_cached(
        "SELECT id, size, checksum, topic, key, headers, value FROM records WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = select.query_map(params![after_id, limit as i64], |r| Ok(row(r)))?;
    rows.collect()
}

/// Up to `limit` ids after `after_id`: what is left to read one row at a
/// time when a batch read fails (a corrupt page).
pub fn ids_after(conn: &Connection, after_id: i64, limit: usize) -> rusqlite::Result<Vec<i64>> {
    let mut select = conn.prepare_cached("SELECT id FROM records WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let ids = select.query_map(params![after_id, limit as i64], |r| r.get(0))?;
    ids.collect()
}

/// The row `id` alone; unreadable, it comes back corrupt.
pub fn read_one(conn: &Connection, id: i64) -> Row {
    let read = conn
        .prepare_cached("SELECT id, size, checksum, topic, key, headers, value FROM records WHERE id = ?1")
        .and_then(|mut select| select.query_row([id], |r| Ok(row(r))));
    read.unwrap_or_else(|e| Row { id, size: 0, record: Err(format!("unreadable row: {e}")) })
}

fn row(r: &rusqlite::Row<'_>) -> Row {
    let id: i64 = r.get(0).unwrap_or(-1);
    let fields = (|| -> rusqlite::Result<(i64, i64, [Vec<u8>; 4])> {
        Ok((r.get(1)?, r.get(2)?, [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?]))
    })();
    match fields {
        Ok((size, sum, [topic, key, headers, value])) => {
            Row { id, size: u64::try_from(size).unwrap_or(0), record: decode(sum as u64, topic, key, &headers, value) }
        }
        Err(e) => Row { id, size: 0, record: Err(format!("unreadable row: {e}")) },
    }
}

fn decode(sum: u64, topic: Vec<u8>, key: Vec<u8>, headers: &[u8], value: Vec<u8>) -> Result<SpoolRecord, String> {
    if checksum(&topic, &key, headers, &value) != sum {
        return Err("checksum mismatch".into());
    }
    let topic = String::from_utf8(topic).map_err(|_| "topic is not UTF-8".to_owned())?;
    let headers = decode_headers(headers).ok_or_else(|| "headers do not decode".to_owned())?;
    Ok(SpoolRecord { topic, key, headers, value })
}

/// Deletes the rows `ids`.
pub fn delete(conn: &mut Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM records WHERE id = ?1")?;
        for id in ids {
            delete.execute([id])?;
        }
    }
    tx.commit()
}

/// What the database holds now.
pub fn totals(conn: &Connection) -> rusqlite::Result<Totals> {
    let (records, bytes): (i64, i64) =
        conn.query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Totals { records: records.max(0) as u64, bytes: bytes.max(0) as u64, oldest_ms: oldest(conn)? })
}

/// When the oldest record still here was spooled.
pub fn oldest(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    let mut select = conn.prepare_cached("SELECT spooled_at_ms FROM records ORDER BY id LIMIT 1")?;
    let mut rows = select.query([])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get::<_, i64>(0)?.max(0) as u64),
        None => None,
    })
}

/// xxh3 over every field, each preceded by its length (so that bytes cannot
/// move from one field to the next unnoticed).
fn checksum(topic: &[u8], key: &[u8], headers: &[u8], value: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for field in [topic, key, headers, value] {
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.digest()
}

/// No value (as opposed to an empty one).
const NO_VALUE: u32 = u32::MAX;

/// Headers as `len name len value` pairs, lengths as u32 little-endian.
fn encode_headers(headers: &[(String, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.iter().map(|(k, v)| 8 + k.len() + v.as_ref().map_or(0, Vec::len)).sum());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        match value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&NO_VALUE.to_le_bytes()),
        }
    }
    out
}

fn decode_headers(mut bytes: &[u8]) -> Option<Vec<(String, Option<Vec<u8>>)>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    fn length(bytes: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?))
    }
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let name_len = length(&mut bytes)?;
        let name = std::str::from_utf8(take(&mut bytes, name_len as usize)?).ok()?.to_owned();
        let value = match length(&mut bytes)? {
            NO_VALUE => None,
            n => Some(take(&mut bytes, n as usize)?.to_vec()),
        };
        headers.push((name, value));
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(n: u32) -> SpoolRecord {
        SpoolRecord {
            topic: format!("t-{n}"),
            key: format!("{n:032x}").into_bytes(),
            headers: vec![("cyclops-contract".into(), Some(b"2".to_vec())), ("empty".into(), None)],
            value: vec![n as u8; 100 + n as usize],
        }
    }

    #[test]
    fn records_come_back_exactly_oldest_first() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = open(&dir.path().join(DB_FILE), true).expect("open");
        let written: Vec<SpoolRecord> = (0..5).map(record).collect();
        insert(&mut conn, written.iter(), 7).expect("insert");
        let rows = read_after(&conn, 0, 10).expect("read");
        let read: Vec<SpoolRecord> = rows.iter().map(|r| r.record.clone().expect("intact")).collect();
        assert_eq!(read, written);
        assert_eq!(rows[2].size, written[2].size());
        let totals = totals(&conn).expect("totals");
        assert_eq!(totals.records, 5);
        assert_eq!(totals.bytes, written.iter().map(SpoolRecord::size).sum::<u64>());
        assert_eq!(totals.oldest_ms, Some(7));
        delete(&mut conn, &[rows[0].id, rows[1].id]).expect("delete");
        assert_eq!(read_after(&conn, 0, 10).expect("read").len(), 3);
        assert_eq!(read_after(&conn, rows[3].id, 10).expect("read").len(), 1, "the cursor skips what it saw");
    }

    #[test]
    fn a_changed_byte_is_a_corrupt_row_and_the_others_still_read() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = open(&dir.path().join(DB_FILE), true).expect("open");
        insert(&mut conn, (0..3).map(record).collect::<Vec<_>>().iter(), 1).expect("insert");
        conn.execute("UPDATE records SET value = X'00' WHERE id = 2", []).expect("corrupt one");
        conn.execute("UPDATE records SET topic = X'FF' WHERE id = 3", []).expect("corrupt another");
        let rows = read_after(&conn, 0, 10).expect("read");
        assert!(rows[0].record.is_ok());
        assert_eq!(rows[1].record.as_ref().err().map(String::as_str), Some("checksum mismatch"));
        assert!(rows[2].record.is_err());
    }

    #[test]
    fn headers_round_trip_and_garbage_does_not_decode() {
        let headers = record(1).headers;
        assert_eq!(decode_headers(&encode_headers(&headers)), Some(headers));
        assert_eq!(decode_headers(&[1, 0, 0, 0]), None, "a name longer than the bytes");
        assert_eq!(decode_headers(&[]), Some(vec![]));
    }

    /// A crash mid-append leaves a WAL whose last frames are torn: SQLite
    /// drops the unfinished transaction and keeps every committed one.
    #[test]
    fn a_torn_wal_tail_loses_only_the_unfinished_transaction() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(DB_FILE);
        let mut conn = open(&path, true).expect("open");
        conn.pragma_update(None, "wal_autocheckpoint", 0).expect("no checkpoint: everything stays in the WAL");
        for n in 0..10 {
            insert(&mut conn, std::iter::once(&record(n)), 1).expect("insert");
        }
        // Copy the files as a crash would leave them (no checkpoint, no close).
        let crashed = tempfile::tempdir().expect("dir");
        std::fs::copy(&path, crashed.path().join(DB_FILE)).expect("copy db");
        let wal = std::fs::read(dir.path().join("spool.db-wal")).expect("wal");
        assert!(wal.len() > 4096, "the records are in the WAL");
        // Tear the last transaction: cut its final frame in half.
        std::fs::write(crashed.path().join("spool.db-wal"), &wal[..wal.len() - 2000]).expect("torn wal");
        let reopened = open(&crashed.path().join(DB_FILE), true).expect("a torn tail opens");
        let rows = read_after(&reopened, 0, 100).expect("read");
        assert_eq!(rows.len(), 9, "the torn transaction is gone, the nine before it are intact");
        assert!(rows.iter().all(|r| r.record.is_ok()));
    }
}
