//! SQLite's writes, committed in groups.
//!
//! Every write of a store on a SQLite file goes to one thread that owns the only writing
//! connection. It takes whatever writes are waiting (at most [`MAX_BATCH`]), runs them in one
//! transaction, each in a savepoint of its own, and commits once: one `fsync` of the WAL
//! (`synchronous = FULL`) makes the whole batch durable, and only then is each caller answered.
//! A write that fails rolls back to its savepoint and fails alone. Nothing waits to fill a batch:
//! writes that arrive while one batch is being made durable form the next, so a lone write
//! commits at once and many concurrent ones share the cost of the disk.
//!
//! The thread runs the statements itself (rusqlite), so a write costs one hand-off to the thread
//! and one back, not two for each statement as through sqlx's SQLite worker.

use super::StoreError;
use super::write::{Arg, BoxFuture, Cell, Row, WriteTx};
use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::oneshot;

/// The most writes one transaction gathers: enough to share an `fsync` among every caller of a
/// busy gateway, few enough that one batch does not hold the database for long.
pub(super) const MAX_BATCH: usize = 256;

/// How long the writer waits for another process's lock on the file (a command run beside the
/// gateway) before a write fails as timed out.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for its write's answer before it is told the store did not answer in
/// time. The write, once queued, may still be made after that: the caller cannot know, as with
/// any database that times out.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The writing connection, as a write body sees it.
pub(super) struct SqliteTx {
    connection: Connection,
    counts: Arc<Counts>,
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Int(Some(n)) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Arg::Text(None) | Arg::Int(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

impl SqliteTx {
    /// The statement `sql`, cached, with `args` bound by number: SQLite numbers `$n` parameters
    /// in the order they first appear, so each parameter is bound by its name (`$3` takes
    /// `args[2]`), and one that names no argument is an error, as on PostgreSQL.
    fn prepared(&self, sql: &str, args: &[Arg]) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
        let mut statement = self.connection.prepare_cached(sql)?;
        for index in 1..=statement.parameter_count() {
            let name = statement.parameter_name(index).unwrap_or_default();
            let arg = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| args.get(n.checked_sub(1)?));
            match arg {
                Some(arg) => statement.raw_bind_parameter(index, arg)?,
                None => return Err(rusqlite::Error::InvalidParameterName(name.to_owned())),
            }
        }
        Ok(statement)
    }

    /// Runs a statement that is not a write's (the batch's own).
    fn control(&self, sql: &str) -> rusqlite::Result<()> {
        self.connection
            .prepare_cached(sql)?
            .raw_execute()
            .map(|_| ())
    }
}

#[async_trait]
impl WriteTx for SqliteTx {
    fn postgres(&self) -> bool {
        false
    }

    async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        let mut statement = self.prepared(sql, args)?;
        Ok(statement.raw_execute()? as u64)
    }

    async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, StoreError> {
        let mut statement = self.prepared(sql, args)?;
        let columns = statement.column_count();
        let mut rows = statement.raw_query();
        let mut read = Vec::new();
        while let Some(row) = rows.next()? {
            read.push(Row((0..columns)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(n) => Cell::Int(n),
                        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Real(_) | ValueRef::Blob(_) => Cell::Other,
                    })
                })
                .collect::<Result<_, StoreError>>()?));
        }
        Ok(read)
    }
}

/// Why a batch's writes were not committed, given to each of their callers.
#[derive(Debug, Clone)]
enum BatchFailure {
    /// SQLite refused a statement of the batch itself (`BEGIN`, a savepoint, `COMMIT`).
    Sqlite(rusqlite::ffi::Error, Option<String>),
    /// A write's failure ended the whole transaction (SQLite rolls back on a full disk, say),
    /// taking the batch's earlier writes with it.
    RolledBack,
}

impl BatchFailure {
    fn of(error: rusqlite::Error) -> BatchFailure {
        match error {
            rusqlite::Error::SqliteFailure(code, message) => BatchFailure::Sqlite(code, message),
            _ => BatchFailure::RolledBack,
        }
    }

    fn to_error(&self) -> StoreError {
        match self {
            BatchFailure::Sqlite(code, message) => {
                StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, message.clone()))
            }
            BatchFailure::RolledBack => StoreError::Interrupted,
        }
    }
}

/// A write waiting in the queue, its type erased.
trait Pending: Send {
    /// Runs the body; whether it succeeded (its statements are to be kept).
    fn run(&mut self, tx: &mut SqliteTx) -> bool;

    /// Answers the caller: the body's result, or the batch's failure.
    fn answer(self: Box<Self>, batch: Result<(), &BatchFailure>);
}

struct Write<T, F> {
    body: Option<F>,
    done: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Pending for Write<T, F>
where
    T: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn WriteTx) -> BoxFuture<'t, Result<T, StoreError>> + Send + 'static,
{
    fn run(&mut self, tx: &mut SqliteTx) -> bool {
        let Some(body) = self.body.take() else {
            return false;
        };
        let mut future = body(tx);
        // SQLite's statements run here and never wait: the body is done in one poll.
        let done = match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(done) => done,
            Poll::Pending => Err(StoreError::Interrupted),
        };
        let ok = done.is_ok();
        self.done = Some(done);
        ok
    }

    fn answer(self: Box<Self>, batch: Result<(), &BatchFailure>) {
        let answer = match (self.done, batch) {
            // Its own failure says most about it, whatever became of the batch.
            (Some(Err(error)), _) => Err(error),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(failure)) => Err(failure.to_error()),
            (None, Ok(())) => Err(StoreError::Interrupted),
        };
        // A caller that stopped waiting is not told.
        let _ = self.reply.send(answer);
    }
}

/// The queue to the writer thread. Dropping the last store's handle ends the thread.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Box<dyn Pending>>,
    counts: Arc<Counts>,
}

/// What the writer has done, for tests to see batches form.
#[derive(Default)]
struct Counts {
    /// Writes queued and not yet taken into a batch.
    queued: AtomicUsize,
    /// Transactions committed.
    commits: AtomicU64,
}

impl GroupCommit {
    /// Opens the writing connection to the SQLite file at `path` and starts its thread.
    pub(super) fn open(path: &Path) -> Result<GroupCommit, StoreError> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        // Durable at COMMIT: the WAL is synced before a batch's callers are answered.
        connection.pragma_update(None, "synchronous", "FULL")?;
        // Each write's savepoint keeps the pages it changes in a sub-journal, to roll back to.
        // On disk that journal was a temporary file created, written and unlinked per batch
        // (a tenth of the CPU of a create at 16 callers); in memory it is a copy, bounded by
        // the batch (at most MAX_BATCH writes of a few pages each) and freed at its commit.
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        // What is deleted or overwritten is zeroed, not left in free space: an erased subject
        // leaves no trace in the file once the WAL is checkpointed.
        connection.pragma_update(None, "secure_delete", "ON")?;
        connection.set_prepared_statement_cache_capacity(128);
        let (queue, waiting) = mpsc::channel::<Box<dyn Pending>>();
        let counts = Arc::new(Counts::default());
        let mut tx = SqliteTx {
            connection,
            counts: counts.clone(),
        };
        std::thread::Builder::new()
            .name("kyc-store-writer".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match waiting.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    tx.counts.queued.fetch_sub(batch.len(), Ordering::Relaxed);
                    tx.commit_batch(batch);
                }
            })
            .map_err(|_| StoreError::Interrupted)?;
        Ok(GroupCommit { queue, counts })
    }

    /// Writes waiting for the writer.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.counts.queued.load(Ordering::Relaxed)
    }

    /// Transactions committed so far.
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.counts.commits.load(Ordering::Relaxed)
    }

    /// Queues `body` and waits for its batch to be durable.
    pub(super) async fn submit<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn WriteTx) -> BoxFuture<'t, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            body: Some(body),
            done: None,
            reply,
        };
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
        self.queue
            .send(Box::new(write))
            .map_err(|_| StoreError::Interrupted)?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(answered) => answered.map_err(|_| StoreError::Interrupted)?,
            Err(_) => Err(StoreError::WriterTimedOut),
        }
    }
}

impl SqliteTx {
    /// Runs `batch` in as few transactions as its failures allow (one when nothing fails at the
    /// transaction's level) and answers every write in it.
    fn commit_batch(&mut self, batch: Vec<Box<dyn Pending>>) {
        let mut kept: Vec<Box<dyn Pending>> = Vec::with_capacity(batch.len());
        let mut open = false;
        let mut writes = batch.into_iter();
        while let Some(mut write) = writes.next() {
            if !open {
                if let Err(e) = self.control("BEGIN IMMEDIATE") {
                    // The database cannot be written now (another process has held it past the
                    // busy timeout, say): the rest of the batch would wait as long, each in turn.
                    let failure = BatchFailure::of(e);
                    write.answer(Err(&failure));
                    for write in writes {
                        write.answer(Err(&failure));
                    }
                    return;
                }
                open = true;
            }
            if let Err(e) = self.control("SAVEPOINT write") {
                self.abandon(&mut kept, write, BatchFailure::of(e));
                open = false;
                continue;
            }
            let ok =
                std::panic::catch_unwind(AssertUnwindSafe(|| write.run(self))).unwrap_or(false);
            let settled = if ok {
                self.control("RELEASE write").map_err(BatchFailure::of)
            } else if self.connection.is_autocommit() {
                Err(BatchFailure::RolledBack)
            } else {
                self.control("ROLLBACK TO write")
                    .and_then(|()| self.control("RELEASE write"))
                    .map_err(BatchFailure::of)
            };
            match settled {
                Ok(()) => kept.push(write),
                Err(failure) => {
                    self.abandon(&mut kept, write, failure);
                    open = false;
                }
            }
        }
        if !open {
            return;
        }
        match self.control("COMMIT") {
            Ok(()) => {
                self.counts.commits.fetch_add(1, Ordering::Relaxed);
                for write in kept {
                    write.answer(Ok(()));
                }
            }
            Err(e) => {
                let failure = BatchFailure::of(e);
                if !self.connection.is_autocommit() {
                    let _ = self.control("ROLLBACK");
                }
                for write in kept {
                    write.answer(Err(&failure));
                }
            }
        }
    }

    /// Ends the open transaction without committing it and fails `failed` and every write kept
    /// in it so far.
    fn abandon(
        &mut self,
        kept: &mut Vec<Box<dyn Pending>>,
        failed: Box<dyn Pending>,
        failure: BatchFailure,
    ) {
        if !self.connection.is_autocommit() {
            let _ = self.control("ROLLBACK");
        }
        failed.answer(Err(&failure));
        for write in kept.drain(..) {
            write.answer(Err(&failure));
        }
    }
}
