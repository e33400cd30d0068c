//! Every read the service makes is answered from an index, on SQLite and on PostgreSQL: the
//! test reads each query's plan and fails on a scan of a whole table or index, or on a sort of all
//! the matching rows (the query would slow down as the table grows).

use super::outbox::{DUE_EVENTS, LINE_HEAD};
use super::tenant_events::{EVENT_COLUMNS, list_events_query};
use super::*;

/// Each read, by name, with binds of the right shape.
fn reads(postgres: bool) -> Vec<(String, String, Vec<String>)> {
    let id = "ver_1000401".to_string();
    let one = |name: &str, condition: &str, binds: &[&str]| {
        (
            name.to_string(),
            format!("SELECT {COLUMNS} FROM verifications WHERE {condition}"),
            binds.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        )
    };
    let mut reads = vec![
        one("get by id", BY_ID, &["t1", &id]),
        one("by reference", BY_REFERENCE, &["t1", "ref-401"]),
        one(
            "by provider reference",
            BY_PROVIDER_REFERENCE,
            &["p1", "pr-401"],
        ),
        one("subject's latest", SUBJECT_LATEST, &["t1", "s1"]),
        one("subject's approval", SUBJECT_APPROVED, &["t1", "s1"]),
        (
            "subject's re-verifications".into(),
            super::subjects::SUBJECT_REVERIFICATIONS.into(),
            vec!["t1".into(), "s1".into()],
        ),
        (
            "final verifications past retention".into(),
            super::removal::past_retention_sql(500, postgres),
            vec!["t1".into(), ts(now())],
        ),
        (
            "a subject's holdings".into(),
            "SELECT id, status, provider, provider_reference FROM verifications \
             WHERE tenant = $1 AND subject_id = $2 ORDER BY id"
                .into(),
            vec!["t1".into(), "s1".into()],
        ),
        (
            "a tenant's unsealed history".into(),
            super::audit::unsealed_sql(500),
            vec!["t1".into()],
        ),
        (
            "a page of a tenant's chain".into(),
            super::audit::chain_page_sql(500),
            vec!["t1".into(), "0".into()],
        ),
        (
            "a page of a tenant's history by time".into(),
            super::audit::history_page_sql(500),
            vec!["t1".into(), "chg_0".into(), "chg_9".into()],
        ),
        (
            "a tenant's unsealed count".into(),
            "SELECT COUNT(*) AS n FROM status_changes WHERE tenant = $1 AND seq IS NULL".into(),
            vec!["t1".into()],
        ),
        (
            "approvals after a lapse cursor".into(),
            super::lapses::approvals_after_sql(500),
            vec![
                "t1".into(),
                ts(now() - chrono::Duration::days(400)),
                String::new(),
                ts(now() - chrono::Duration::days(335)),
            ],
        ),
        one(
            "unfinished",
            &format!("{UNFINISHED} LIMIT 200"),
            &["p1", "ver_1005000", &ts(now())],
        ),
        (
            "reconciler's claim".into(),
            claim_unfinished_sql(postgres, 200),
            vec!["p1".into(), "ver_1005000".into(), ts(now()), ts(now())],
        ),
        (
            "history".into(),
            HISTORY.into(),
            vec!["t1".into(), id.clone()],
        ),
        (
            "due events".into(),
            format!("{DUE_EVENTS} LIMIT 50"),
            vec![ts(now())],
        ),
        (
            "a line's head".into(),
            LINE_HEAD.into(),
            vec!["t1".into(), id.clone()],
        ),
        (
            "a tenant's parked events".into(),
            "SELECT id FROM events WHERE tenant = $1 AND parked = 1".into(),
            vec!["t1".into()],
        ),
        (
            "event attempts of a page".into(),
            "SELECT event_id, at, status_code, latency_ms, error FROM event_attempts \
             WHERE event_id IN ($1, $2, $3) ORDER BY event_id, attempt"
                .into(),
            vec![
                "evt_1000401".into(),
                "evt_1000801".into(),
                "evt_1001201".into(),
            ],
        ),
        (
            "event by id".into(),
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant = $1 AND id = $2"),
            vec!["t1".into(), "evt_1000401".into()],
        ),
        (
            "subject ref".into(),
            "SELECT subject_ref FROM subject_refs WHERE tenant = $1 AND provider = $2 \
             AND subject_id = $3"
                .into(),
            vec!["t1".into(), "p1".into(), "s1".into()],
        ),
    ];
    let plain = |name: &str, sql: &str, binds: &[&str]| {
        (
            name.to_string(),
            sql.to_string(),
            binds.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        )
    };
    reads.extend([
        plain(
            "experiment counts",
            &experiment_counts_sql(postgres),
            &["t1", "e1", "2026-01-01T00:00:00.000000Z", "172800"],
        ),
        plain(
            "an arm's decision times",
            &arm_decision_times_sql(postgres),
            &["t1", "e1", "challenger"],
        ),
        plain(
            "an instance's outcomes",
            &instance_outcomes_sql(postgres, 2),
            &[
                "t1",
                "ver_1000401",
                "ver_1005000",
                "2026-01-01T00:00:00.000000Z",
                "2026-02-01T00:00:00.000000Z",
                "172800",
                "p1",
                "CL",
                "AR",
            ],
        ),
        plain(
            "an instance's failed calls",
            &instance_errors_sql(1),
            &["t1", "2026-01-01", "2026-01-31", "p1", "CL"],
        ),
        plain(
            "routed since",
            &format!("{ROUTED_SINCE} LIMIT 1000"),
            &[
                "t1",
                "ver_1000401",
                "ver_1005000",
                "2026-01-01T00:00:00.000000Z",
                "2026-02-01T00:00:00.000000Z",
                "ver_1000401",
            ],
        ),
        plain(
            "decision days",
            DECISION_DAYS,
            &["t1", "2026-01-01", "2026-01-31"],
        ),
    ]);
    let page = |f: ListFilter| ListFilter { limit: 51, ..f };
    let lists = [
        ("list", page(ListFilter::default())),
        (
            "list by reference",
            page(ListFilter {
                reference: Some("ref-401".into()),
                ..Default::default()
            }),
        ),
        (
            "list by subject",
            page(ListFilter {
                subject_id: Some("s1".into()),
                before_id: Some(id.clone()),
                ..Default::default()
            }),
        ),
        (
            "list by status",
            page(ListFilter {
                status: Some(Status::Pending),
                before_id: Some(id.clone()),
                ..Default::default()
            }),
        ),
        (
            "list next page",
            page(ListFilter {
                before_id: Some(id.clone()),
                ..Default::default()
            }),
        ),
    ];
    for (name, filter) in lists {
        let (sql, binds) = list_query("t1", &filter);
        reads.push((name.into(), sql, binds));
    }
    let events = [
        ("events", EventFilter::default()),
        (
            "events of a verification",
            EventFilter {
                verification_id: Some(id.clone()),
                ..Default::default()
            },
        ),
        (
            "events by state",
            EventFilter {
                state: Some(EventState::Failed),
                before_id: Some("evt_1015000".into()),
                ..Default::default()
            },
        ),
    ];
    for (name, filter) in events {
        let (sql, binds) = list_events_query(
            "t1",
            &EventFilter {
                limit: 51,
                ..filter
            },
        );
        reads.push((name.into(), sql, binds));
    }
    reads
}

/// Fills the tables with 20,000 verifications, a history row and an event each, then gathers
/// statistics, so that the planner chooses as it would on a real table: the tenant the reads ask
/// for (`t1`) is one small tenant among large ones, and 4% of verifications are unfinished.
/// `rows` names the number source `n` from 1 to 20,000; `with` is what must come before the
/// statement to define it.
async fn populate(store: &SqlStore, rows: &str, with: &str) {
    let tenant = "CASE WHEN n % 400 = 1 THEN 't1' ELSE 't' || (2 + n % 19) END";
    let statements = [
        format!(
            "{with}INSERT INTO verifications (id, tenant, reference, subject_id, provider, \
             provider_reference, status, request_hash, created_at, updated_at, completed_at) \
             SELECT 'ver_' || (1000000 + n), {tenant}, 'ref-' || n, 's' || (n % 5000), \
             'p' || (n % 2), 'pr-' || n, \
             CASE n % 50 WHEN 0 THEN 'pending' WHEN 1 THEN 'in_progress' \
             WHEN 2 THEN 'approved' ELSE 'rejected' END, 'h', '2026-01-01T00:00:00.000000Z', \
             '2026-01-01T00:00:00.000000Z', '2026-01-02T00:00:00.000000Z' FROM {rows}"
        ),
        format!(
            "{with}INSERT INTO status_changes (id, tenant, verification_id, from_status, \
             to_status, source, at, seq) SELECT 'chg_' || n, {tenant}, 'ver_' || (1000000 + n), \
             NULL, 'pending', 'create', '2026-01-01T00:00:00.000000Z', \
             CASE WHEN n % 100 <> 0 THEN n END FROM {rows}"
        ),
        format!(
            "{with}INSERT INTO events (id, tenant, verification_id, event_type, payload, \
             created_at, state, attempts, next_attempt_at, seq, due_at, parked) \
             SELECT 'evt_' || (1000000 + n), \
             {tenant}, 'ver_' || (1000000 + n), 'verification.updated', '{{}}', \
             '2026-01-01T00:00:00.000000Z', CASE n % 3 WHEN 0 THEN 'pending' \
             WHEN 1 THEN 'delivered' ELSE 'failed' END, 1, '2026-01-01T00:00:00.000000Z', 1, \
             CASE WHEN n % 60 = 0 THEN '2026-01-01T00:00:00.000000Z' END, \
             CASE WHEN n % 60 = 30 THEN 1 ELSE 0 END \
             FROM {rows}"
        ),
        "ANALYZE".to_string(),
    ];
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&store.pool)
            .await
            .unwrap();
    }
}

/// The plan of every read, one line per step, as the backend words it.
async fn plans(store: &SqlStore, explain: &str) -> Vec<(String, Vec<String>)> {
    let mut conn = store.pool.acquire().await.unwrap();
    if explain.starts_with("EXPLAIN (") {
        // Without statistics PostgreSQL prefers scans on small tables; make it show whether an
        // index could serve at all.
        for setting in ["SET enable_seqscan = off", "SET enable_sort = off"] {
            sqlx::query(setting).execute(&mut *conn).await.unwrap();
        }
    }
    let mut out = Vec::new();
    let postgres = matches!(store.writer, super::Writer::Postgres);
    for (name, sql, binds) in reads(postgres) {
        let mut query = sqlx::query(AssertSqlSafe(format!("{explain} {sql}")));
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(&mut *conn).await.unwrap();
        let lines = rows
            .iter()
            .map(|r| {
                r.try_get::<String, _>("detail")
                    .or_else(|_| r.try_get::<String, _>(0))
                    .unwrap()
            })
            .collect();
        out.push((name, lines));
    }
    out
}

/// Fails on a plan step that starts with one of `bad`, on SQLite's sort ("USE TEMP B-TREE"), and
/// on a PostgreSQL index scan with no `Index Cond` (a walk through the whole index). SQLite's scan
/// of the reconciler's claimed page (`SCAN due`) is not one: that page holds at most its LIMIT.
fn assert_indexed(plans: Vec<(String, Vec<String>)>, bad: &[&str]) {
    for (name, lines) in plans {
        let text = lines.join("\n");
        let steps: Vec<&str> = lines
            .iter()
            .map(|l| l.trim_start_matches(['-', '>', ' ']))
            .filter(|l| *l != "SCAN due")
            .collect();
        for (i, step) in steps.iter().enumerate() {
            assert!(
                !bad.iter().any(|word| step.starts_with(word)) && !step.contains("TEMP B-TREE"),
                "{name}: a scan or a sort of all matching rows:\n{text}"
            );
            let whole_index = step.starts_with("Index Scan")
                && !steps[i + 1..]
                    .iter()
                    .take_while(|s| !s.contains("Scan"))
                    .any(|s| s.starts_with("Index Cond"));
            assert!(!whole_index, "{name}: an index scanned whole:\n{text}");
        }
    }
}

#[tokio::test]
async fn every_read_uses_an_index_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plans.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    populate(
        &store,
        "g",
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000) ",
    )
    .await;
    let plans = plans(&store, "EXPLAIN QUERY PLAN").await;
    assert_eq!(plans.len(), reads(false).len());
    assert_indexed(plans, &["SCAN"]);
}

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn every_read_uses_an_index_on_postgresql() {
    let schema = tests::PgSchema::create("plans").await;
    let store = SqlStore::connect(&schema.url).await.unwrap();
    populate(&store, "generate_series(1, 20000) AS g(n)", "").await;
    let plans = plans(&store, "EXPLAIN (FORMAT TEXT)").await;
    store.pool.close().await;
    schema.drop().await;
    assert_indexed(plans, &["Seq Scan", "Sort", "Incremental Sort"]);
}

#[test]
fn the_check_catches_a_scan_and_a_sort() {
    let scan = vec![("x".to_string(), vec!["SCAN verifications".to_string()])];
    assert!(std::panic::catch_unwind(|| assert_indexed(scan, &["SCAN"])).is_err());
    let sort = vec![(
        "x".to_string(),
        vec!["Limit".to_string(), "  ->  Sort  (cost=1..2)".to_string()],
    )];
    assert!(std::panic::catch_unwind(|| assert_indexed(sort, &["Sort"])).is_err());
}
