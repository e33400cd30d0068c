//! What a compliance officer relies on: re-verification notices before and when an approval
//! lapses, once each, signed, at a real receiver.

use crate::events::{Delivery, Receiver, world_for};
use crate::harness::*;
use chrono::{Duration as Days, SecondsFormat, Utc};
use kyc_sandbox::Outcome;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Sets a verification's `column` (`completed_at`, `updated_at`) to `at` in the store: how the
/// tests move an approval or a last change back in time, shortening a year to seconds.
async fn set_time(w: &World, v: &Value, column: &str, at: chrono::DateTime<Utc>) {
    let pool = crate::audit::pool(w).await;
    let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let sql = format!("UPDATE verifications SET {column} = $1 WHERE id = $2");
    let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(at)
        .bind(v["id"].as_str().unwrap())
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    pool.close().await;
}

async fn approved_at(w: &World, v: &Value, at: chrono::DateTime<Utc>) {
    set_time(w, v, "completed_at", at).await;
}

async fn approve(w: &World, reference: &str, subject: &str) -> Value {
    let v = w.create(person(reference, subject, "CL")).await;
    w.finish(&v, Outcome::Approved).await;
    w.wait_status(&v, ALPHA_KEY, "approved").await;
    v
}

/// The lapse notices the receiver got, by type.
fn notices<'a>(seen: &'a [Delivery], event: &str) -> Vec<&'a Delivery> {
    seen.iter().filter(|d| d.body["type"] == event).collect()
}

async fn wait_notices(receiver: &Receiver, expiring: usize, expired: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = receiver.seen();
        if notices(&seen, "verification.expiring").len() >= expiring
            && notices(&seen, "verification.expired").len() >= expired
        {
            return seen;
        }
        assert!(Instant::now() < deadline, "{seen:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tenant alpha keeps approvals 365 days and is told 30 days before (the defaults). One
/// subject's approval is made to lapse 8 seconds from now: `verification.expiring` comes at once,
/// `verification.expired` 8 seconds later, each once, signed, even with two gateways running the
/// job on one PostgreSQL. A subject approved again since, and an approval that had lapsed before
/// the gateway first met the tenant, get none. Then the subject's standing needs a
/// re-verification, and one started now is counted in its standing and in the stats.
async fn lapse_notices_arrive_once_each(store_url: Option<String>) {
    let receiver = Receiver::start(vec![], 200).await;
    let w = world_for(
        &receiver,
        Options {
            store_url,
            ..Default::default()
        },
    )
    .await;
    let replica = w.db_url.starts_with("postgres").then(|| w.start_replica());
    let lapsing = approve(&w, "lapse-1", "sub-lapse").await;
    let old = approve(&w, "lapse-2a", "sub-again").await;
    let newer = approve(&w, "lapse-2b", "sub-again").await;
    let long_gone = approve(&w, "lapse-3", "sub-gone").await;
    receiver.wait_for(4).await;

    let now = Utc::now();
    let year = Days::days(365);
    approved_at(&w, &lapsing, now - year + Days::seconds(8)).await;
    approved_at(&w, &old, now - year + Days::seconds(8)).await;
    approved_at(&w, &newer, now - Days::days(100)).await;
    approved_at(&w, &long_gone, now - Days::days(400)).await;

    let seen = wait_notices(&receiver, 1, 0).await;
    let expiring = notices(&seen, "verification.expiring");
    assert_eq!(expiring.len(), 1, "{seen:#?}");
    assert!(expiring[0].verified, "signed: {:?}", expiring[0]);
    let data = &expiring[0].body["data"];
    assert_eq!(data["verification_id"], lapsing["id"]);
    assert_eq!(data["subject_id"], "sub-lapse");
    assert_eq!(data["reference"], "lapse-1");
    assert_eq!(data["provider"], "betrust-cl");
    let expires_at: chrono::DateTime<Utc> = data["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (expires_at - (now + Days::seconds(8)))
            .num_milliseconds()
            .abs()
            < 1000
    );
    // Not lapsed yet: the standing still holds.
    let (_, standing) = w.get("/v1/subjects/sub-lapse/kyc", ALPHA_KEY).await;
    assert_eq!(standing["verified"], true, "{standing}");

    let seen = wait_notices(&receiver, 1, 1).await;
    let expired = notices(&seen, "verification.expired");
    assert!(
        expired[0].at >= expiring[0].at + Duration::from_secs(5),
        "expired comes when the approval lapses, not before"
    );
    assert!(expired[0].verified);
    assert_eq!(expired[0].body["data"], *data);
    // Three more job periods on each gateway: nothing more.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = receiver.seen();
    assert_eq!(
        notices(&seen, "verification.expiring").len(),
        1,
        "{seen:#?}"
    );
    assert_eq!(notices(&seen, "verification.expired").len(), 1, "{seen:#?}");
    assert_eq!(seen.len(), 6, "four approvals and two notices: {seen:#?}");

    let (_, standing) = w.get("/v1/subjects/sub-lapse/kyc", ALPHA_KEY).await;
    assert_eq!(standing["verified"], false, "{standing}");
    assert_eq!(standing["needs_reverification"], true);
    assert_eq!(standing["reverifications"], 0);
    w.create(person("lapse-1-again", "sub-lapse", "CL")).await;
    // A subject still within its approval is verified again too, but that is no re-verification.
    w.create(person("lapse-2-again", "sub-again", "CL")).await;
    let (_, standing) = w.get("/v1/subjects/sub-lapse/kyc", ALPHA_KEY).await;
    assert_eq!(standing["reverifications"], 1, "{standing}");
    let (_, standing) = w.get("/v1/subjects/sub-again/kyc", ALPHA_KEY).await;
    assert_eq!(standing["reverifications"], 0, "{standing}");
    let (status, stats) = w.get("/v1/stats?group_by=provider", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let groups = stats["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{stats}");
    assert_eq!(groups[0]["provider"], "betrust-cl");
    assert_eq!(groups[0]["started"], 6, "{stats}");
    assert_eq!(groups[0]["reverifications"], 1, "{stats}");
    drop(replica);
}

#[tokio::test]
async fn lapse_notices_arrive_once_each_on_sqlite() {
    lapse_notices_arrive_once_each(None).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: KYC_TEST_POSTGRES_URL"]
async fn lapse_notices_arrive_once_each_from_two_gateways_on_postgresql() {
    let schema = PgSchema::create().await;
    lapse_notices_arrive_once_each(Some(schema.url.clone())).await;
    schema.drop().await;
}

/// Sets a verification's last change back to `days` ago.
async fn last_changed_days_ago(w: &World, v: &Value, days: i64) {
    set_time(w, v, "updated_at", Utc::now() - Days::days(days)).await;
}

/// Waits until the tenant's history is all sealed; answers the chain's length.
async fn sealed_seq(w: &World) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, head) = w.get("/v1/audit/head", ALPHA_KEY).await;
        if head["unsealed"] == 0 {
            return head["seq"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "{head}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status_of(w: &World, v: &Value) -> StatusCode {
    let path = format!("/v1/verifications/{}", v["id"].as_str().unwrap());
    w.get(&path, ALPHA_KEY).await.0
}

/// Tenant alpha is given `retention_days = 30` by a live edit: its final verifications last
/// changed 40 days ago go, each with one tombstone in its history (however many gateways run
/// the job); a final one of 20 days and an unfinished one of 40 stay; the stats of the period
/// and the chain stay right.
async fn retention_removes_exactly_what_is_past_it(store_url: Option<String>) {
    let w = World::start_with(Options {
        store_url,
        ..Default::default()
    })
    .await;
    let replica = w.db_url.starts_with("postgres").then(|| w.start_replica());
    let approved_old = approve(&w, "ret-1", "sub-ret-1").await;
    let rejected_old = w.create(person("ret-2", "sub-ret-2", "CL")).await;
    w.finish(&rejected_old, Outcome::Rejected).await;
    w.wait_status(&rejected_old, ALPHA_KEY, "rejected").await;
    let approved_recent = approve(&w, "ret-3", "sub-ret-3").await;
    let unfinished_old = w.create(person("ret-4", "sub-ret-4", "CL")).await;
    for (v, days) in [
        (&approved_old, 40),
        (&rejected_old, 40),
        (&approved_recent, 20),
        (&unfinished_old, 40),
    ] {
        last_changed_days_ago(&w, v, days).await;
    }
    let chain = sealed_seq(&w).await;
    let (_, stats) = w
        .get("/v1/stats?group_by=provider,country", ALPHA_KEY)
        .await;

    w.edit_policy(|p| {
        p.replacen(
            "[tenants.alpha]\n",
            "[tenants.alpha]\nretention_days = 30\n",
            1,
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(&w, &approved_old).await != StatusCode::NOT_FOUND
        || status_of(&w, &rejected_old).await != StatusCode::NOT_FOUND
    {
        assert!(Instant::now() < deadline, "not removed:\n{}", w.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status_of(&w, &approved_recent).await, StatusCode::OK);
    assert_eq!(status_of(&w, &unfinished_old).await, StatusCode::OK);
    // A few more runs on every gateway change nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, after) = w
        .get("/v1/stats?group_by=provider,country", ALPHA_KEY)
        .await;
    assert_eq!(
        after["groups"], stats["groups"],
        "the stats keep what was removed"
    );
    assert_eq!(sealed_seq(&w).await, chain + 2, "one tombstone each");
    let (code, out, err) = crate::audit::verify(&w);
    assert_eq!(code, Some(0), "{out}{err}");
    let from = (Utc::now() - Days::minutes(10)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let to = crate::audit::rfc3339(Utc::now() + Days::seconds(1));
    let (_, lines) = crate::audit::export(&w, &from, &to).await;
    let tombstones: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "removed").collect();
    assert_eq!(tombstones.len(), 2, "{tombstones:?}");
    for (v, status) in [(&approved_old, "approved"), (&rejected_old, "rejected")] {
        let line = tombstones
            .iter()
            .find(|l| l["verification_id"] == v["id"])
            .unwrap();
        assert_eq!(line["source"], "retention");
        assert_eq!(line["to"], status);
        assert!(line["provider_reference"].is_null(), "{line}");
    }
    drop(replica);
}

#[tokio::test]
async fn retention_removes_exactly_what_is_past_it_on_sqlite() {
    retention_removes_exactly_what_is_past_it(None).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: KYC_TEST_POSTGRES_URL"]
async fn retention_removes_exactly_what_is_past_it_from_two_gateways_on_postgresql() {
    let schema = PgSchema::create().await;
    retention_removes_exactly_what_is_past_it(Some(schema.url.clone())).await;
    schema.drop().await;
}

/// Which of `needles` the store still holds anywhere: in the SQLite file and its write-ahead
/// log, or in any row of any PostgreSQL table of the test's schema.
async fn traces(w: &World, needles: &[String]) -> Vec<String> {
    let mut haystack = Vec::new();
    if let Some(path) = w.db_url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap();
        for file in [path.to_string(), format!("{path}-wal")] {
            haystack.extend(std::fs::read(&file).unwrap_or_default());
        }
    } else {
        let pool = crate::audit::pool(w).await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(tables.len() > 10, "{tables:?}");
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(row_to_json(t) AS TEXT) FROM \"{table}\" t"
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            for row in rows {
                haystack.extend(row.into_bytes());
            }
        }
        pool.close().await;
    }
    needles
        .iter()
        .filter(|n| haystack.windows(n.len()).any(|w| w == n.as_bytes()))
        .cloned()
        .collect()
}

/// A subject with an approval at each provider and a gu1 verification in flight is erased:
/// the in-flight one is cancelled first, the answer names both instances with their references
/// (and gu1's id for the subject), a signed `subject.erased` event arrives once, and afterwards
/// neither the subject id, nor the caller's or the providers' references, are anywhere in the
/// store; the verifications still count in the stats, the chain still verifies, another subject
/// is untouched, and erasing again changes nothing. A subject with a BeTrust verification in
/// flight (BeTrust cannot cancel) is refused until it has finished.
async fn erasure_leaves_no_trace(store_url: Option<String>) {
    let receiver = Receiver::start(vec![], 200).await;
    let w = world_for(
        &receiver,
        Options {
            store_url,
            ..Default::default()
        },
    )
    .await;
    let subject = "sub-erase-7f3a9c";
    let at_betrust = approve(&w, "erase-ref-1", subject).await;
    let at_gu1 = w.create(person("erase-ref-2", subject, "AR")).await;
    w.finish(&at_gu1, Outcome::Approved).await;
    w.wait_status(&at_gu1, ALPHA_KEY, "approved").await;
    let in_flight = w.create(person("erase-ref-3", subject, "AR")).await;
    let kept = approve(&w, "keep-ref-1", "sub-keep").await;
    let waiting = w.create(person("wait-ref-1", "sub-wait", "CL")).await;
    receiver.wait_for(3).await;
    let (_, stats) = w
        .get("/v1/stats?group_by=provider,country", ALPHA_KEY)
        .await;

    let (status, problem) = w.delete("/v1/subjects/sub-wait", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "in_flight");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(waiting["id"].as_str().unwrap())
    );

    let (status, erased) = w
        .delete(&format!("/v1/subjects/{subject}"), ALPHA_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(erased["verifications"], 3, "{erased}");
    assert_eq!(erased["cancelled"], 1, "{erased}");
    let providers = erased["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 2, "{erased}");
    assert_eq!(providers[0]["provider"], "betrust-cl");
    assert_eq!(
        providers[0]["verification_references"],
        serde_json::json!([at_betrust["provider_reference"]])
    );
    assert_eq!(providers[1]["provider"], "gu1");
    assert_eq!(
        providers[1]["verification_references"],
        serde_json::json!([
            at_gu1["provider_reference"],
            in_flight["provider_reference"]
        ])
    );
    let gu1_subject = providers[1]["subject_reference"]
        .as_str()
        .unwrap()
        .to_string();

    let deadline = Instant::now() + Duration::from_secs(20);
    let event = loop {
        let seen = receiver.seen();
        if let Some(d) = seen.iter().find(|d| d.body["type"] == "subject.erased") {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "{seen:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(event.verified);
    assert_eq!(event.body["data"]["erasure_id"], erased["erasure_id"]);
    // The delivery log names its line after the erasure.
    let line = format!("erasure:{}", erased["erasure_id"].as_str().unwrap());
    let (status, log) = w
        .get(&format!("/v1/events?verification_id={line}"), ALPHA_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert_eq!(log["items"][0]["type"], "subject.erased", "{log}");

    let mut needles: Vec<String> = vec![subject.into(), gu1_subject];
    for v in [&at_betrust, &at_gu1, &in_flight] {
        needles.push(v["reference"].as_str().unwrap().into());
        needles.push(v["provider_reference"].as_str().unwrap().into());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = traces(&w, &needles).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the store still holds {left:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The check finds what is there: the subject kept is.
    assert_eq!(traces(&w, &["sub-keep".to_string()]).await.len(), 1);

    let (_, standing) = w
        .get(&format!("/v1/subjects/{subject}/kyc"), ALPHA_KEY)
        .await;
    assert_eq!(standing["verified"], false, "{standing}");
    assert!(standing["current"].is_null(), "{standing}");
    let (_, kept_standing) = w.get("/v1/subjects/sub-keep/kyc", ALPHA_KEY).await;
    assert_eq!(kept_standing["current"]["id"], kept["id"]);
    let (_, anonymous) = w
        .get(
            &format!("/v1/verifications/{}", at_gu1["id"].as_str().unwrap()),
            ALPHA_KEY,
        )
        .await;
    assert_eq!(anonymous["status"], "approved", "{anonymous}");
    assert_eq!(anonymous["subject_id"], "", "{anonymous}");
    let (_, after) = w
        .get("/v1/stats?group_by=provider,country", ALPHA_KEY)
        .await;
    // They still count: the same started and approved, and the cancelled one now cancelled.
    let counts = |stats: &Value| -> Vec<(Value, Value, Value, Value)> {
        let groups = stats["groups"].as_array().unwrap();
        groups
            .iter()
            .map(|g| {
                let f = &g["finished"];
                let cancelled = f["cancelled"].clone();
                (
                    g["provider"].clone(),
                    g["started"].clone(),
                    f["approved"].clone(),
                    cancelled,
                )
            })
            .collect()
    };
    let mut expected = counts(&stats);
    for group in &mut expected {
        if group.0 == "gu1" {
            group.3 = serde_json::json!(group.3.as_u64().unwrap() + 1);
        }
    }
    assert_eq!(counts(&after), expected, "{after}");
    sealed_seq(&w).await;
    let (code, out, err) = crate::audit::verify(&w);
    assert_eq!(code, Some(0), "{out}{err}");

    let (status, again) = w
        .delete(&format!("/v1/subjects/{subject}"), ALPHA_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["verifications"], 0, "{again}");
    assert!(again["erasure_id"].is_null(), "{again}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = receiver.seen();
    assert_eq!(
        seen.iter()
            .filter(|d| d.body["type"] == "subject.erased")
            .count(),
        1
    );

    w.finish(&waiting, Outcome::Approved).await;
    w.wait_status(&waiting, ALPHA_KEY, "approved").await;
    let (status, _) = w.delete("/v1/subjects/sub-wait", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn erasure_leaves_no_trace_in_the_sqlite_file() {
    erasure_leaves_no_trace(None).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: KYC_TEST_POSTGRES_URL"]
async fn erasure_leaves_no_trace_in_the_postgresql_tables() {
    let schema = PgSchema::create().await;
    erasure_leaves_no_trace(Some(schema.url.clone())).await;
    schema.drop().await;
}
