//! A quick check of the store's reads at scale (the full benchmark harness is a later issue):
//! 100,000 verifications over 20 tenants on a SQLite file, then each read timed from 16 tasks at
//! once, printed beside its floor; then a write made alone (one durable commit), beside the
//! share of a create's budget it may take.
//!
//! Run: `cargo bench -p kyc-gateway --bench store_at_scale`

mod common;

use kyc_core::Status;
use kyc_gateway::store::{ListFilter, SqlStore, SubjectStore, VerificationStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROWS: u32 = 100_000;
const TASKS: u32 = 16;
const PER_TASK: u32 = 200;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("scale.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let started = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {ROWS}) \
         INSERT INTO verifications (id, tenant, reference, subject_id, provider, \
         provider_reference, status, request_hash, created_at, updated_at, completed_at) \
         SELECT 'ver_' || (1000000 + n), 't' || (n % 20), 'ref-' || n, 's' || (n % 50000), \
         'p' || (n % 2), 'pr-' || n, \
         CASE n % 10 WHEN 0 THEN 'pending' WHEN 1 THEN 'in_review' WHEN 2 THEN 'rejected' \
         ELSE 'approved' END, 'h', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', \
         '2026-01-02T00:00:00.000000Z' FROM g"
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    println!("{ROWS} rows written in {:.1?}\n", started.elapsed());
    println!(
        "{:<28} {:>9} {:>9} {:>9}",
        "read (16 tasks)", "p50", "p90", "floor"
    );

    let standing = time(&store, |store, i| async move {
        let subject = format!("s{}", i % 50_000);
        store
            .subject_history(&format!("t{}", i % 20), &subject)
            .await
            .unwrap();
    })
    .await;
    report("subject standing", &standing, Duration::from_millis(5));

    let by_status = time(&store, |store, i| async move {
        let filter = ListFilter {
            status: Some(Status::Pending),
            limit: 51,
            ..Default::default()
        };
        store.list(&format!("t{}", i % 20), &filter).await.unwrap();
    })
    .await;
    report("list by status (50)", &by_status, Duration::from_millis(20));

    let by_id = time(&store, |store, i| async move {
        let id = format!("ver_{}", 1_000_000 + (i * 7919) % ROWS);
        store.get(&format!("t{}", i % 20), &id).await.unwrap();
    })
    .await;
    report("get by id", &by_id, Duration::from_millis(5));

    // A create makes two durable commits one after the other (its reservation, then its
    // verification), so half of the create budget of issue 24 (0.35 ms added) is the floor of
    // one commit made alone, as a lone create makes it: the write handed to the store's writer,
    // its WAL frames written and synced, and the answer handed back.
    let mut lone = Vec::new();
    for i in 0..LONE_WRITES {
        let (row, change) =
            common::pending("t0", &format!("ver_lone_{i}"), &format!("lone-{i}"), "p0");
        let started = Instant::now();
        store
            .insert(&row, &change, chrono::DateTime::<chrono::Utc>::MIN_UTC)
            .await
            .unwrap();
        lone.push(started.elapsed());
    }
    lone.sort();
    report("lone write (one commit)", &lone, Duration::from_micros(175));
}

/// Writes made one at a time, nothing else waiting, for the lone-commit figure.
const LONE_WRITES: u32 = 1_000;

/// Runs `read` from [`TASKS`] tasks, [`PER_TASK`] times each; the sorted latencies.
async fn time<F, Fut>(store: &Arc<SqlStore>, read: F) -> Vec<Duration>
where
    F: Fn(Arc<SqlStore>, u32) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (store, read) = (store.clone(), read.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in 0..PER_TASK {
                let started = Instant::now();
                read(store.clone(), t * PER_TASK + i).await;
                out.push(started.elapsed());
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    all.sort();
    all
}

fn report(name: &str, sorted: &[Duration], floor: Duration) {
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    let p50 = at(0.5);
    println!(
        "{name:<28} {:>9.2?} {:>9.2?} {:>9.2?} {}",
        p50,
        at(0.9),
        floor,
        if p50 <= floor { "ok" } else { "OVER" }
    );
}
