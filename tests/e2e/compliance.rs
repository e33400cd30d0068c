//! What a compliance officer relies on: re-verification notices before and when an approval
//! lapses, once each, signed, at a real receiver.

use crate::events::{Delivery, Receiver, world_for};
use crate::harness::*;
use chrono::{Duration as Days, SecondsFormat, Utc};
use kyc_sandbox::Outcome;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Moves a verification's approval back in time by rewriting its completion time in the store:
/// how the tests shorten a year's validity to seconds.
async fn approved_at(w: &World, v: &Value, at: chrono::DateTime<Utc>) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&w.db_url).await.unwrap();
    let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let changed = sqlx::query("UPDATE verifications SET completed_at = $1 WHERE id = $2")
        .bind(at)
        .bind(v["id"].as_str().unwrap())
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    pool.close().await;
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
