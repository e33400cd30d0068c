//! SQLite reads by key on the calling thread.
//!
//! sqlx runs each SQLite statement on its connection's worker thread and wakes the caller when it
//! is done: two thread hand-offs per query, about a quarter of the gateway's CPU in a profile of
//! `GET /v1/verifications/{id}` at 64 connections. A read by key takes microseconds, less than
//! the hand-offs, so these run where the request is. A read that would wait (every connection
//! taken, or the database busy) is not made here: the caller takes the pool's way instead, so
//! nothing here blocks a thread longer than the read itself.
use super::StoreError;
use rusqlite::{Connection, OpenFlags, Row};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// A few read-only connections to the store's SQLite file.
pub(super) struct InlineReads {
    connections: Vec<Mutex<Connection>>,
}

impl InlineReads {
    /// Opens `count` connections to the file `path`, which must exist (the pool made it).
    pub(super) fn open(path: &Path, count: usize) -> Result<InlineReads, StoreError> {
        let connections = (0..count)
            .map(|_| {
                let connection = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                // Never wait for a lock: a busy database sends the read to the pool.
                connection.busy_timeout(Duration::ZERO)?;
                connection.pragma_update(None, "query_only", true)?;
                Ok(Mutex::new(connection))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(InlineReads { connections })
    }

    /// The first row `sql` finds with `binds` (text, in the order of `$1`, `$2`, …), mapped;
    /// `None` when no connection is free or SQLite is busy, for the caller to read elsewhere.
    pub(super) fn first_row<T>(
        &self,
        sql: &str,
        binds: &[&str],
        map: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<Option<T>, StoreError>> {
        let connection = self.connections.iter().find_map(|c| c.try_lock().ok())?;
        let read = || {
            let mut statement = connection.prepare_cached(sql)?;
            let mut rows = statement.query(rusqlite::params_from_iter(binds))?;
            match rows.next()? {
                Some(row) => map(row).map(Some),
                None => Ok(None),
            }
        };
        match read() {
            Err(StoreError::Sqlite(e)) if is_busy(&e) => None,
            result => Some(result),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inline.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT); INSERT INTO t VALUES ('a', 'one');",
            )
            .unwrap();
        (dir, path)
    }

    fn value(reads: &InlineReads, key: &str) -> Option<Result<Option<String>, StoreError>> {
        reads.first_row(
            "SELECT v FROM t WHERE k = $1",
            &[key],
            |row| Ok(row.get(0)?),
        )
    }

    #[test]
    fn reads_by_key_and_declines_when_it_would_wait() {
        let (_dir, path) = database();
        let reads = InlineReads::open(&path, 1).unwrap();
        assert_eq!(value(&reads, "a").unwrap().unwrap().as_deref(), Some("one"));
        assert_eq!(value(&reads, "b").unwrap().unwrap(), None);

        // Its one connection taken: the caller is told to read elsewhere, not made to wait.
        let taken = reads.connections[0].lock().unwrap();
        assert!(value(&reads, "a").is_none());
        drop(taken);

        // The file locked by a writer (no WAL here, so readers are locked out): the same.
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("BEGIN EXCLUSIVE; UPDATE t SET v = 'two';")
            .unwrap();
        let started = std::time::Instant::now();
        assert!(value(&reads, "a").is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
        writer.execute_batch("COMMIT").unwrap();
        assert_eq!(value(&reads, "a").unwrap().unwrap().as_deref(), Some("two"));

        // It only reads.
        let write = reads.first_row("UPDATE t SET v = 'three' RETURNING v", &[], |row| {
            Ok(row.get::<_, String>(0)?)
        });
        assert!(matches!(write, Some(Err(StoreError::Sqlite(_)))));
    }
}
