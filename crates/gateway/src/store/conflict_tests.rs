//! A transaction that PostgreSQL ends to break a deadlock is run again, and one that keeps
//! losing is a 503, never a 500. Found by the fault campaign (seed 405 on PostgreSQL): two
//! `POST /v1/events/recover` at two replicas, meeting the outbox's writes, answered 500.

use super::{StoreError, retrying_conflicts};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Increments rows `first` then `second` in one transaction; on its first try only, waits after
/// the first row for the other transaction to hold its own first row.
async fn cross(
    pool: &sqlx::AnyPool,
    first: i32,
    second: i32,
    meet: &tokio::sync::Barrier,
    first_try: &AtomicBool,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE counters SET v = v + 1 WHERE id = $1")
        .bind(first)
        .execute(&mut *tx)
        .await?;
    if first_try.swap(false, Ordering::SeqCst) {
        meet.wait().await;
    }
    sqlx::query("UPDATE counters SET v = v + 1 WHERE id = $1")
        .bind(second)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn a_deadlock_on_postgresql_is_a_conflict_and_its_loser_runs_again() {
    let schema = super::tests::PgSchema::create("conflict").await;
    let pool = sqlx::pool::PoolOptions::<sqlx::Any>::new()
        .max_connections(4)
        .connect(&schema.url)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE counters (id INT PRIMARY KEY, v INT NOT NULL); \
                   INSERT INTO counters VALUES (1, 0), (2, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();

    // Without the retry, one of the two loses the deadlock, and it is a conflict.
    let meet = Arc::new(tokio::sync::Barrier::new(2));
    let (a, b) = (AtomicBool::new(true), AtomicBool::new(true));
    let (one, two) = tokio::join!(cross(&pool, 1, 2, &meet, &a), cross(&pool, 2, 1, &meet, &b));
    let lost: Vec<StoreError> = [one, two].into_iter().filter_map(Result::err).collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        lost[0].is_conflict() && lost[0].is_transient(),
        "{:?}",
        lost[0]
    );

    // With it, the loser runs again and both land.
    sqlx::query("UPDATE counters SET v = 0")
        .execute(&pool)
        .await
        .unwrap();
    let (a, b) = (AtomicBool::new(true), AtomicBool::new(true));
    let (one, two) = tokio::join!(
        retrying_conflicts(|| cross(&pool, 1, 2, &meet, &a)),
        retrying_conflicts(|| cross(&pool, 2, 1, &meet, &b)),
    );
    one.unwrap();
    two.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT CAST(SUM(v) AS BIGINT) FROM counters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 4, "each transaction incremented both rows once");
    pool.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn an_error_that_is_no_conflict_is_not_run_again() {
    // Not a conflict: returned at once.
    let runs = AtomicU32::new(0);
    let done: Result<(), StoreError> = retrying_conflicts(|| async {
        runs.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Interrupted)
    })
    .await;
    assert!(matches!(done, Err(StoreError::Interrupted)));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
