//! Writes: each is one transaction body, written once against [`WriteTx`] and run on either
//! backend.
//!
//! On PostgreSQL a body runs in a transaction of its own from the pool; the server makes
//! concurrent commits durable together itself. On SQLite every body goes to one writer thread
//! ([`group_commit`](super::group_commit)), which commits whatever is waiting as one batch: one
//! `fsync` for many writes.

use super::StoreError;
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row as _};
use std::future::Future;
use std::pin::Pin;

/// A boxed future that may borrow for `'a`.
pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One bound value: text or an integer, either possibly NULL (all the store binds).
#[derive(Debug, Clone)]
pub(super) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_owned()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::Text(v)
    }
}

impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Arg {
        Arg::Text(v.clone())
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_owned))
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::Int(v)
    }
}

/// The binds of a statement, `$1` first, as an array of [`Arg`].
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        [$($crate::store::write::Arg::from($value)),*]
    };
}
pub(super) use args;

/// One value read back by a write (a `RETURNING` row or a read inside the transaction).
#[derive(Debug, Clone)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Text(String),
    /// A type the store never reads back (a real, a blob).
    Other,
}

/// A row read inside a write.
#[derive(Debug, Clone)]
pub(super) struct Row(pub(super) Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> &Cell {
        self.0.get(i).unwrap_or(&Cell::Other)
    }

    /// Column `i` as text, possibly NULL; `column` names it in the error.
    pub(super) fn opt_text(
        &self,
        i: usize,
        column: &'static str,
    ) -> Result<Option<String>, StoreError> {
        match self.cell(i) {
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s.clone())),
            _ => Err(unexpected(column)),
        }
    }

    /// Column `i` as text.
    pub(super) fn text(&self, i: usize, column: &'static str) -> Result<String, StoreError> {
        self.opt_text(i, column)?.ok_or(unexpected(column))
    }

    /// Column `i` as an integer.
    pub(super) fn int(&self, i: usize, column: &'static str) -> Result<i64, StoreError> {
        match self.cell(i) {
            Cell::Int(n) => Ok(*n),
            _ => Err(unexpected(column)),
        }
    }
}

fn unexpected(column: &'static str) -> StoreError {
    StoreError::Corrupt {
        table: "a row read by a write",
        column,
    }
}

/// The transaction a write body runs in. Statements use `$1`, `$2`… on both backends.
#[async_trait]
pub(super) trait WriteTx: Send {
    /// PostgreSQL (row locks to take) rather than SQLite (one writer).
    fn postgres(&self) -> bool;

    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, StoreError>;

    /// Runs a statement and reads every row it returns.
    async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, StoreError>;

    /// Runs a statement and reads its first row, if any.
    async fn fetch_optional(&mut self, sql: &str, args: &[Arg]) -> Result<Option<Row>, StoreError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }
}

/// A PostgreSQL transaction from the pool.
struct PgTx(sqlx::Transaction<'static, sqlx::Any>);

/// `sql` with `args` bound in order, `$1` first.
fn with_args<'q>(
    sql: &str,
    args: &[Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    args.iter().fold(
        sqlx::query(AssertSqlSafe(sql.to_owned())),
        |query, arg| match arg {
            Arg::Text(v) => query.bind(v.clone()),
            Arg::Int(v) => query.bind(*v),
        },
    )
}

#[async_trait]
impl WriteTx for PgTx {
    fn postgres(&self) -> bool {
        true
    }

    async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        Ok(with_args(sql, args)
            .execute(&mut *self.0)
            .await?
            .rows_affected())
    }

    async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, StoreError> {
        let rows = with_args(sql, args).fetch_all(&mut *self.0).await?;
        Ok(rows
            .iter()
            .map(|row| {
                Row((0..row.len())
                    .map(|i| {
                        if let Ok(n) = row.try_get::<Option<i64>, _>(i) {
                            n.map_or(Cell::Null, Cell::Int)
                        } else if let Ok(s) = row.try_get::<Option<String>, _>(i) {
                            s.map_or(Cell::Null, Cell::Text)
                        } else {
                            Cell::Other
                        }
                    })
                    .collect())
            })
            .collect())
    }
}

/// Runs `body` in a transaction of its own from `pool` (PostgreSQL), committed when it succeeds.
pub(super) async fn in_transaction<T, F>(pool: &sqlx::AnyPool, body: F) -> Result<T, StoreError>
where
    F: for<'t> FnOnce(&'t mut dyn WriteTx) -> BoxFuture<'t, Result<T, StoreError>>,
{
    let mut tx = PgTx(pool.begin().await?);
    match body(&mut tx).await {
        Ok(value) => {
            tx.0.commit().await?;
            Ok(value)
        }
        Err(error) => {
            // Dropping it rolls back as well; a failed rollback changes nothing.
            let _ = tx.0.rollback().await;
            Err(error)
        }
    }
}
