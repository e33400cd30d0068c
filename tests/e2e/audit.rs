//! The tamper-evident history: the hash chain over every history row, checked by `kyc-gateway
//! audit verify` after changes made by two gateways, and broken by any edit made with SQL; the
//! export of a period, equal to the API's history and read in bounded memory.

use crate::harness::*;
use futures_util::StreamExt;
use kyc_sandbox::Outcome;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub async fn pool(w: &World) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&w.db_url).await.unwrap()
}

async fn sql(pool: &sqlx::AnyPool, statement: &str) -> u64 {
    sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
        .execute(pool)
        .await
        .unwrap()
        .rows_affected()
}

async fn scalar(pool: &sqlx::AnyPool, query: &str) -> String {
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(query.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until every history row of tenant alpha is sealed; answers the head.
async fn sealed(w: &World, rows: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, head) = w.get("/v1/audit/head", ALPHA_KEY).await;
        assert_eq!(status, StatusCode::OK, "{head}");
        if head["unsealed"] == 0 && head["seq"].as_u64() >= Some(rows) {
            return head;
        }
        assert!(Instant::now() < deadline, "not sealed: {head}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kyc-gateway audit verify` on the policy: its exit code, stdout and stderr.
pub fn verify(w: &World) -> (Option<i32>, String, String) {
    let config = w.policy_path().to_str().unwrap();
    let out = w.command(&["audit", "verify", "--config", config]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates `n` verifications of tenant alpha, alternately through `bases`, 16 at a time, and
/// has each person finish (approved or rejected): at least two history rows each.
async fn changes(w: &World, bases: &[String], n: usize) -> Vec<Value> {
    let made: Vec<Value> = futures_util::stream::iter(0..n)
        .map(|i| {
            let base = bases[i % bases.len()].clone();
            let country = if i % 3 == 0 { "AR" } else { "CL" };
            let body = person(&format!("chain-{i}"), &format!("sub-chain-{i}"), country);
            async move {
                create_retrying(&w.http, &base, ALPHA_KEY, &body, Duration::from_secs(30))
                    .await
                    .0
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    futures_util::stream::iter(made.iter().enumerate())
        .for_each_concurrent(16, |(i, v)| async move {
            let outcome = if i % 4 == 0 {
                Outcome::Rejected
            } else {
                Outcome::Approved
            };
            w.finish(v, outcome).await;
        })
        .await;
    w.wait_decided(&made).await
}

/// The chain after `n` verifications made through every gateway given (the world's, and a
/// replica on PostgreSQL): `audit verify` passes and ends at the head the API gives; then an
/// edit of a history row's status, of a verification's provider reference, of a row's hash, and
/// the removal of a row, each made with SQL, make it fail naming that row.
async fn the_chain_holds_and_names_an_edit(store_url: Option<String>, n: usize) {
    let w = World::start_with(Options {
        store_url,
        ..Default::default()
    })
    .await;
    let replica = w.db_url.starts_with("postgres").then(|| w.start_replica());
    let mut bases = vec![w.base.clone()];
    bases.extend(replica.as_ref().map(|r| r.base.clone()));
    let made = changes(&w, &bases, n).await;
    let db = pool(&w).await;
    let rows: u64 = scalar(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM status_changes WHERE tenant = 'alpha'",
    )
    .await
    .parse()
    .unwrap();
    assert!(rows >= 2 * n as u64, "{rows} history rows");
    let head = sealed(&w, rows).await;
    assert_eq!(head["seq"], rows, "{head}");

    let (code, out, err) = verify(&w);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!(
            "tenant alpha: {rows} rows chained, unbroken, ending at {}",
            head["hash"]
        )),
        "{out}"
    );
    assert!(out.contains("tenant beta: 0 rows chained"), "{out}");

    // A status rewritten.
    let middle = rows / 2;
    let row = scalar(
        &db,
        &format!("SELECT id FROM status_changes WHERE tenant = 'alpha' AND seq = {middle}"),
    )
    .await;
    let to = scalar(
        &db,
        &format!("SELECT to_status FROM status_changes WHERE id = '{row}'"),
    )
    .await;
    let other = if to == "rejected" {
        "approved"
    } else {
        "rejected"
    };
    sql(
        &db,
        &format!("UPDATE status_changes SET to_status = '{other}' WHERE id = '{row}'"),
    )
    .await;
    let (code, _, err) = verify(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("history row {row} (seq {middle}")),
        "{err}"
    );
    assert!(err.contains("its to status differs"), "{err}");
    sql(
        &db,
        &format!("UPDATE status_changes SET to_status = '{to}' WHERE id = '{row}'"),
    )
    .await;
    assert_eq!(verify(&w).0, Some(0));

    // A verification's provider reference rewritten: its creation row is named.
    let target = &made[made.len() / 3];
    let id = target["id"].as_str().unwrap();
    let reference = target["provider_reference"].as_str().unwrap();
    sql(
        &db,
        &format!("UPDATE verifications SET provider_reference = 'forged' WHERE id = '{id}'"),
    )
    .await;
    let (code, _, err) = verify(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "verification {id}): its verification's provider reference differs"
        )),
        "{err}"
    );
    sql(
        &db,
        &format!("UPDATE verifications SET provider_reference = '{reference}' WHERE id = '{id}'"),
    )
    .await;

    // A hash replaced, and then a row removed.
    let last = scalar(
        &db,
        &format!("SELECT id FROM status_changes WHERE tenant = 'alpha' AND seq = {rows}"),
    )
    .await;
    sql(
        &db,
        &format!("UPDATE status_changes SET hash = '00' WHERE id = '{last}'"),
    )
    .await;
    let (code, _, err) = verify(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("history row {last} (seq {rows}")),
        "{err}"
    );
    assert!(
        err.contains("its hash is not the hash of its record"),
        "{err}"
    );
    let gone = scalar(
        &db,
        "SELECT id FROM status_changes WHERE tenant = 'alpha' AND seq = 3",
    )
    .await;
    let next = scalar(
        &db,
        "SELECT id FROM status_changes WHERE tenant = 'alpha' AND seq = 4",
    )
    .await;
    sql(
        &db,
        &format!("DELETE FROM status_changes WHERE id = '{gone}'"),
    )
    .await;
    let (code, _, err) = verify(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("history row {next} (seq 4")), "{err}");
    assert!(err.contains("a row before it is missing"), "{err}");
    db.close().await;
    drop(replica);
}

#[tokio::test]
async fn the_chain_holds_and_names_an_edit_on_sqlite() {
    the_chain_holds_and_names_an_edit(None, 60).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: KYC_TEST_POSTGRES_URL"]
async fn a_chain_of_1000_changes_from_two_gateways_holds_and_names_an_edit_on_postgresql() {
    let schema = PgSchema::create().await;
    the_chain_holds_and_names_an_edit(Some(schema.url.clone()), 500).await;
    schema.drop().await;
}

/// Reads the export of a period as lines, with its status.
pub async fn export(w: &World, from: &str, to: &str) -> (StatusCode, Vec<Value>) {
    let response = w
        .http
        .get(format!(
            "{}/v1/audit/export?from={}&to={}",
            w.base,
            from.replace('+', "%2B"),
            to.replace('+', "%2B")
        ))
        .bearer_auth(ALPHA_KEY)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| json!({"unparsed": l})))
        .collect();
    (status, lines)
}

pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The export of a period holds each history row recorded in it, and read as the API reads a
/// history (a decision row naming who decided the change to its status, and why) it equals each
/// verification's `GET .../history`; each line carries the verification's provider instance and
/// reference, and its place in the chain once sealed. A period that starts later leaves the
/// earlier rows out.
#[tokio::test]
async fn the_export_of_a_period_equals_the_apis_history() {
    let w = World::start().await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let a = w.create(person("exp-a", "sub-exp-a", "CL")).await;
    w.finish(&a, Outcome::Approved).await;
    let b = w.create(person("exp-b", "sub-exp-b", "AR")).await;
    w.finish(&b, Outcome::InReview).await;
    w.wait_status(&b, ALPHA_KEY, "in_review").await;
    let decision = json!({"outcome": "reject", "reason": "The photo does not match"});
    let path = format!("/v1/verifications/{}/decision", b["id"].as_str().unwrap());
    let (status, decided) = w.post(&path, ALPHA_CI_KEY, decision).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = w.create(person("exp-c", "sub-exp-c", "CL")).await;
    w.wait_decided(std::slice::from_ref(&a)).await;
    sealed(&w, 6).await;

    let end = rfc3339(chrono::Utc::now() + chrono::Duration::seconds(1));
    let (status, lines) = export(&w, &rfc3339(started), &end).await;
    assert_eq!(status, StatusCode::OK);
    let mut by_verification: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in &lines {
        let id = line["verification_id"].as_str().unwrap().to_string();
        by_verification.entry(id).or_default().push(line.clone());
    }
    assert_eq!(by_verification.len(), 3, "{lines:#?}");
    for v in [&a, &b, &c] {
        let id = v["id"].as_str().unwrap();
        let (_, history) = w
            .get(&format!("/v1/verifications/{id}/history"), ALPHA_KEY)
            .await;
        let (_, stored) = w.get(&format!("/v1/verifications/{id}"), ALPHA_KEY).await;
        let mut read: Vec<Value> = Vec::new();
        for line in &by_verification[id] {
            assert_eq!(line["provider"], stored["provider"]);
            assert_eq!(line["provider_reference"], stored["provider_reference"]);
            assert_eq!(line["subject_id"], stored["subject_id"]);
            assert!(
                line["hash"].as_str().is_some_and(|h| h.len() == 64),
                "{line}"
            );
            let mut change = json!({"from": line["from"], "to": line["to"],
                "source": line["source"], "at": line["at"]});
            for field in ["actor", "note"] {
                if !line[field].is_null() {
                    change[field] = line[field].clone();
                }
            }
            if line["kind"] == "decision" {
                let earlier = read
                    .iter_mut()
                    .rev()
                    .find(|c| c["to"] == line["to"])
                    .unwrap();
                earlier["source"] = json!("decision");
                earlier["actor"] = line["actor"].clone();
                earlier["note"] = line["note"].clone();
            } else {
                read.push(change);
            }
        }
        // Times as the API writes them.
        let history: Vec<Value> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let mut c = c.clone();
                let at: chrono::DateTime<chrono::Utc> = c["at"].as_str().unwrap().parse().unwrap();
                c["at"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
                c
            })
            .collect();
        assert_eq!(Value::from(read), Value::from(history), "{id}");
    }
    let first = &by_verification[a["id"].as_str().unwrap()][0];
    assert_eq!(first["routing"], "default", "{first}");
    let decided = by_verification[b["id"].as_str().unwrap()].last().unwrap();
    assert_eq!(decided["kind"], "decision");
    assert_eq!(decided["note"], "The photo does not match");

    // The command line exports the same lines from the store.
    let config = w.policy_path().to_str().unwrap().to_string();
    let from = rfc3339(started);
    let out = w.command(&[
        "audit", "export", "--config", &config, "--tenant", "alpha", "--from", &from, "--to", &end,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed, lines);

    let (_, later) = export(&w, &rfc3339(middle), &end).await;
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0]["verification_id"], c["id"]);

    let (status, problem) = w
        .get("/v1/audit/export?to=2026-01-01T00:00:00Z", ALPHA_KEY)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "from");
    let (status, _) = w
        .get(
            &format!("/v1/audit/export?from={}", rfc3339(started)),
            ALPHA_READ_KEY,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a read-only key exports nothing"
    );
}

/// The gateway's resident memory in KiB: now (`VmRSS`) or at its peak (`VmHWM`).
fn memory_kib(pid: u32, which: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(which))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 100,000 history rows of one day are exported in full while the gateway's memory grows by
/// far less than what it sends: it reads and writes one page at a time.
#[tokio::test]
async fn an_export_of_100k_rows_streams_in_bounded_memory() {
    let w = World::start().await;
    let db = pool(&w).await;
    let day = chrono::DateTime::parse_from_rfc3339("2020-03-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let time = ulid::Ulid::from_parts(day.timestamp_millis() as u64 + 1000, 0).to_string();
    // Sealed-looking rows (a place each), so that the sealer leaves them be.
    let inserted = sql(
        &db,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
             INSERT INTO status_changes (id, tenant, verification_id, from_status, to_status, \
             source, at, seq, record, prev_hash, hash) SELECT 'chg_{}' || printf('%016d', i), \
             'alpha', 'ver_bulk_' || (i / 3), 'pending', 'in_progress', 'webhook', \
             '2020-03-01T00:00:01.000000Z', 1000000 + i, '{{\"v\":1}}', '{hash}', '{hash}' FROM n",
            &time[..10],
            hash = "0".repeat(64),
        ),
    )
    .await;
    assert_eq!(inserted, 100_000);
    let before = memory_kib(w.pid(), "VmRSS:");
    let response = w
        .http
        .get(format!(
            "{}/v1/audit/export?from=2020-03-01T00:00:00Z&to=2020-03-02T00:00:00Z",
            w.base
        ))
        .bearer_auth(ALPHA_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/jsonl");
    let (mut bytes, mut lines) = (0usize, 0usize);
    let mut response = response;
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 100_000);
    let peak = memory_kib(w.pid(), "VmHWM:");
    let grown_kib = peak.saturating_sub(before);
    assert!(bytes > 40 << 20, "{bytes} bytes sent");
    assert!(
        grown_kib < 16 << 10,
        "memory grew by {grown_kib} KiB while sending {} KiB",
        bytes >> 10
    );
    db.close().await;
}
