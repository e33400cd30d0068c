//! The reconciler backs off with a verification's age, ends sessions the provider will never
//! finish, and keeps to its share of an instance's outbound rate limit.

use crate::events::{Receiver, world_for};
use crate::harness::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

fn path_of(v: &Value, tail: &str) -> String {
    format!("/v1/verifications/{}{tail}", v["id"].as_str().unwrap())
}

async fn store(w: &World) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&w.db_url).await.unwrap()
}

/// A verification whose BeTrust link lapsed (the instance gives links 1 s, and the policy
/// expires 1 s after that) is read once more and, still pending, ends as `expired` with its
/// history row and its event; a gu1 session of the same age is well within gu1's 7 days and
/// stays pending, read again and again.
#[tokio::test]
async fn a_lapsed_session_is_read_once_more_then_expired_with_its_event() {
    let receiver = Receiver::start(vec![], 200).await;
    let w = world_for(
        &receiver,
        Options {
            reconcile_every: 1,
            betrust_extra: vec!["expiration_seconds = 1".into()],
            reconciler_extra: vec!["lapse_margin_seconds = 1".into()],
            ..Options::webhooks_lost()
        },
    )
    .await;
    let lapsed = w.create(person("lapse-1", "sub-lapse-1", "CL")).await;
    let young = w.create(person("lapse-2", "sub-lapse-2", "AR")).await;
    let deliveries = receiver.wait_for(1).await;
    let event = &deliveries[0].body;
    assert_eq!(event["data"]["id"], lapsed["id"], "{event}");
    assert_eq!(event["data"]["status"], "expired", "{event}");
    assert_eq!(
        event["data"]["reason"]["code"], "session_expired",
        "{event}"
    );
    let (_, stored) = w.get(&path_of(&lapsed, ""), ALPHA_KEY).await;
    assert_eq!(stored["status"], "expired", "{stored}");
    let (_, history) = w.get(&path_of(&lapsed, "/history"), ALPHA_KEY).await;
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["to"].as_str(), last["source"].as_str()),
        (Some("expired"), Some("reconciler")),
        "{history}"
    );
    // Read one last time before it ended.
    let uuid = lapsed["provider_reference"].as_str().unwrap();
    assert!(
        w.betrust
            .requests_seen(&format!("GET /transaction-engine/v1/transactions/{uuid}"))
            >= 1
    );
    // The gu1 session keeps being read, and stays pending.
    let validation = young["provider_reference"].as_str().unwrap();
    let reads = || {
        w.gu1
            .requests_seen(&format!("GET /api/kyc/validations/{validation}"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while reads() < 3 {
        assert!(Instant::now() < deadline, "gu1 read {} times", reads());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, stored) = w.get(&path_of(&young, ""), ALPHA_KEY).await;
    assert_eq!(stored["status"], "pending", "{stored}");
    assert_eq!(receiver.seen().len(), 1, "only the lapsed one changed");
}

/// A young verification is read every period; one a day old is read at the longest interval
/// (4 s here), a quarter as often.
#[tokio::test]
async fn old_verifications_are_read_less_often() {
    let w = World::start_with(Options {
        reconcile_every: 1,
        reconciler_extra: vec!["max_interval_seconds = 4".into()],
        ..Options::webhooks_lost()
    })
    .await;
    let young = w.create(person("age-1", "sub-age-1", "AR")).await;
    let old = w.create(person("age-2", "sub-age-2", "AR")).await;
    let day_ago = (kyc_gateway::store::now() - chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    sqlx::query("UPDATE verifications SET created_at = $1, reconcile_at = NULL WHERE id = $2")
        .bind(day_ago)
        .bind(old["id"].as_str().unwrap())
        .execute(&store(&w).await)
        .await
        .unwrap();
    let reads = |v: &Value| {
        let id = v["provider_reference"].as_str().unwrap();
        w.gu1
            .requests_seen(&format!("GET /api/kyc/validations/{id}"))
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = (reads(&young), reads(&old));
    tokio::time::sleep(Duration::from_secs(12)).await;
    let during = (reads(&young) - before.0, reads(&old) - before.1);
    eprintln!("reads in 12 s: young {}, a day old {}", during.0, during.1);
    assert!((9..=14).contains(&during.0), "young: {during:?}");
    assert!((2..=4).contains(&during.1), "a day old: {during:?}");
}

/// 10,000 unfinished verifications at an instance limited to 20 calls a second: the reconciler
/// reads them at its share (25 %, 5 a second), and 60 creates made meanwhile at 10 a second all
/// succeed at that instance (its tenant has no fallback) without waiting for a turn.
#[tokio::test]
async fn a_large_backlog_of_reads_leaves_creates_their_share_of_the_rate_limit() {
    let w = World::start_with(Options {
        reconcile_every: 1,
        betrust_extra: vec!["rate_limit = { per_second = 20, burst = 20 }".into()],
        ..Options::webhooks_lost()
    })
    .await;
    let template = w.create(person("backlog-0", "sub-backlog-0", "CL")).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) \
         INSERT INTO verifications (id, tenant, reference, subject_id, provider, \
             provider_reference, status, verification_url, expires_at, metadata, request_hash, \
             created_at, updated_at, routing, country) \
         SELECT id || printf('-%05d', i), tenant, printf('backlog-%05d', i), subject_id, \
             provider, provider_reference, status, verification_url, expires_at, metadata, \
             request_hash, created_at, updated_at, routing, country \
         FROM verifications, n WHERE id = $1",
    )
    .bind(template["id"].as_str().unwrap())
    .execute(&store(&w).await)
    .await
    .unwrap();
    let uuid = template["provider_reference"].as_str().unwrap().to_string();
    let reads = || {
        w.betrust
            .requests_seen(&format!("GET /transaction-engine/v1/transactions/{uuid}"))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = reads();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 1..=60 {
        let sent = Instant::now();
        let (status, body) = w
            .post(
                "/v1/verifications",
                ALPHA_KEY,
                person(&format!("during-{i}"), &format!("sub-during-{i}"), "CL"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create {i}: {body}");
        assert_eq!(body["provider"], "betrust-cl", "{body}");
        slowest = slowest.max(sent.elapsed());
        let next = started + Duration::from_millis(100 * i);
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
    }
    let window = started.elapsed().as_secs_f64();
    let read = reads() - before;
    eprintln!(
        "{read} reconciler reads in {window:.1} s; slowest of 60 creates {} ms",
        slowest.as_millis()
    );
    // Each create answered without waiting for a turn at the limit (a starved one waits up to
    // 1 s, then fails).
    assert!(slowest < Duration::from_millis(900), "{slowest:?}");
    // The reads went on meanwhile, at their share: 5 a second (and a burst of 5).
    assert!(
        read >= (window * 3.0) as usize,
        "{read} reads in {window} s"
    );
    assert!(
        read <= (window * 5.0) as usize + 8,
        "{read} reads in {window} s"
    );
}
