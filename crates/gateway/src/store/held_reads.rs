//! PostgreSQL reads by key on connections the store keeps itself.
//!
//! sqlx 0.9 tests every connection with a ping as it goes back to its pool (`return_to_pool`
//! pings unconditionally, in a task of its own): a second round trip to the database and a task
//! for every read. A read by key takes one of these kept connections instead (opened with the
//! pool's options and the store's time limits, at most [`MAX_HELD`] of them, beside the pool's)
//! and puts it back as it is. A connection whose read was cut off (a caller gone) or that broke
//! is dropped, never put back. A read that failed for its connection (not for its SQL) drops
//! every idle kept connection too (a database restart breaks them all) and is tried once more on
//! a new one, which is safe for a read.
use super::{StoreError, bound};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most connections kept for reads, beside the pool's own.
pub(super) const MAX_HELD: usize = 8;

/// Connections taken out of the pool for reads by key.
pub(super) struct HeldReads {
    pool: AnyPool,
    /// The `SET` statements of the store's time limits, run on each new connection.
    limits: String,
    idle: Mutex<Vec<AnyConnection>>,
    /// Connections taken out and not dropped (idle or in use).
    held: AtomicUsize,
}

/// A kept connection in use; dropped unless given back.
struct Held<'a> {
    connection: Option<AnyConnection>,
    owner: &'a HeldReads,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.connection.take().is_some() {
            self.owner.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Held<'_> {
    fn give_back(mut self) {
        if let Some(connection) = self.connection.take() {
            let mut idle = self.owner.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(connection);
        }
    }
}

/// Whether a read failed for its connection (gone, broken, or ended by the server: SQLSTATE
/// classes 08 and 57P) rather than for its statement.
fn connection_failed(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

impl HeldReads {
    pub(super) fn new(pool: AnyPool, limits: String) -> HeldReads {
        HeldReads {
            pool,
            limits,
            idle: Mutex::new(Vec::new()),
            held: AtomicUsize::new(0),
        }
    }

    /// An idle kept connection (unless `fresh`), or a new one while fewer than [`MAX_HELD`] are
    /// kept; `None` when all are in use.
    async fn take(&self, fresh: bool) -> Result<Option<Held<'_>>, StoreError> {
        let idle = if fresh {
            // Every idle one is dropped: what broke one has likely broken the others.
            let dropped = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
            self.held.fetch_sub(dropped.len(), Ordering::Relaxed);
            None
        } else {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
        };
        if let Some(connection) = idle {
            return Ok(Some(Held {
                connection: Some(connection),
                owner: self,
            }));
        }
        let counted = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_HELD).then_some(n + 1)
            })
            .is_ok();
        if !counted {
            return Ok(None);
        }
        let mut held = Held {
            connection: None,
            owner: self,
        };
        let opened = async {
            let mut connection = self.pool.connect_options().connect().await?;
            sqlx::raw_sql(AssertSqlSafe(self.limits.clone()))
                .execute(&mut connection)
                .await?;
            Ok::<_, sqlx::Error>(connection)
        };
        match opened.await {
            Ok(connection) => {
                held.connection = Some(connection);
                Ok(Some(held))
            }
            Err(error) => {
                self.held.fetch_sub(1, Ordering::Relaxed);
                Err(error.into())
            }
        }
    }

    /// The first row `sql` finds with `binds` (text, `$1` first).
    pub(super) async fn fetch_optional(
        &self,
        sql: &str,
        binds: &[&str],
    ) -> Result<Option<AnyRow>, StoreError> {
        let query = || {
            bound(
                sql.to_owned(),
                binds.iter().map(|b| b.to_string()).collect(),
            )
        };
        let mut retried = false;
        loop {
            let Some(mut held) = self.take(retried).await? else {
                return Ok(query().fetch_optional(&self.pool).await?);
            };
            let connection = held.connection.as_mut().expect("taken with a connection");
            match query().fetch_optional(&mut *connection).await {
                Ok(row) => {
                    held.give_back();
                    return Ok(row);
                }
                Err(error) if connection_failed(&error) => {
                    drop(held);
                    if retried {
                        return Err(error.into());
                    }
                    retried = true;
                }
                Err(error) => {
                    // The statement failed; the connection is as good as before.
                    held.give_back();
                    return Err(error.into());
                }
            }
        }
    }
}
