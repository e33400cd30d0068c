//! End-to-end tests: the real `kyc-gateway` binary, started on a free port, talking HTTP to the
//! in-process BeTrust, gu1 and Didit simulators, with a real SQLite file.

mod audit;
mod browser;
mod chaos;
mod check_config;
mod circuit;
mod compliance;
mod connections;
mod create_integrity;
mod dashboard;
mod events;
mod experiments;
mod first_run;
mod group_commit;
mod gu1_entities;
mod harness;
mod limits;
mod metrics;
mod operations;
mod optimize;
mod policy_view;
mod providers;
mod read_only;
mod reconciler;
mod reload;
mod replay;
mod replicas;
mod routing;
mod server_only;
mod shutdown;
mod spec_webhooks;
mod stats;
mod swagger_ui;
mod traces;

use harness::*;
use kyc_sandbox::{Fault, FaultRule, Outcome};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// A verification's own URL path, plus `tail` (`/refresh`, `/identity`...).
fn path_of(v: &Value, tail: &str) -> String {
    format!("/v1/verifications/{}{tail}", id(v))
}

fn provider_ref(v: &Value) -> String {
    v["provider_reference"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_on_betrust_then_get_list_and_refresh_to_approved() {
    let w = World::start_with(Options::webhooks_lost()).await;
    let created = w.create(person("order-1", "sub-cl-1", "CL")).await;
    assert_eq!(created["provider"], "betrust-cl");
    assert_eq!(created["status"], "pending");
    assert!(created["id"].as_str().unwrap().starts_with("ver_"));
    let url = created["verification_url"].as_str().unwrap();
    assert!(url.starts_with(&w.betrust.base_url()), "{url}");
    assert!(created["expires_at"].is_string());
    // No personal data in what the gateway returns about the verification.
    assert!(!created.to_string().contains("Valentina"));

    let (status, got) = w.get(&path_of(&created, ""), ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);

    // Finish at the provider with its webhook lost: the store still says pending, refresh reads it.
    w.finish(&created, Outcome::Approved).await;
    let (_, before) = w.get(&path_of(&created, ""), ALPHA_KEY).await;
    assert_eq!(before["status"], "pending", "the webhook was lost");
    let (status, refreshed) = w.act(&created, "refresh", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["status"], "approved");
    assert_eq!(refreshed["decision"]["face_match"], "pass");
    assert!(refreshed["completed_at"].is_string());
    let (_, stored) = w.get(&path_of(&created, ""), ALPHA_KEY).await;
    assert_eq!(stored["status"], "approved");

    let (status, page) = w
        .get("/v1/verifications?reference=order-1", ALPHA_KEY)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], created["id"]);
}

#[tokio::test]
async fn create_on_gu1_by_country_rule_and_refresh_to_rejected() {
    let w = World::start_with(Options::webhooks_lost()).await;
    let created = w.create(person("order-ar-1", "sub-ar-1", "AR")).await;
    assert_eq!(created["provider"], "gu1");
    assert_eq!(created["status"], "pending");
    assert!(
        created["verification_url"]
            .as_str()
            .unwrap()
            .starts_with(&w.gu1.base_url())
    );
    assert_eq!(w.gu1.entities_created(), 1);

    w.finish(&created, Outcome::Rejected).await;
    let (status, refreshed) = w.act(&created, "refresh", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["status"], "rejected");
    assert_eq!(refreshed["decision"]["face_match"], "fail");
    assert!(refreshed["reason"]["code"].is_string());

    // A second verification of the same subject reuses the remembered gu1 entity.
    let again = w.create(person("order-ar-2", "sub-ar-1", "AR")).await;
    assert_eq!(again["provider"], "gu1");
    assert_eq!(w.gu1.entities_created(), 1);
}

/// Each real status change is in the history once, with its source; a repeated or late webhook
/// and a refresh that finds nothing new add nothing.
#[tokio::test]
async fn history_records_each_real_change_once_with_its_source() {
    let w = World::start().await;
    let v = w.create(person("hist-1", "sub-hist-1", "AR")).await;
    w.finish(&v, Outcome::InProgress).await;
    w.finish(&v, Outcome::InProgress).await;
    w.finish(&v, Outcome::Approved).await;
    w.finish(&v, Outcome::InReview).await;
    let (status, _) = w.act(&v, "refresh", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK);
    let (status, history) = w.get(&path_of(&v, "/history"), ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let steps: Vec<(Value, Value, Value)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["from"].clone(), c["to"].clone(), c["source"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (Value::Null, json!("pending"), json!("create")),
            (json!("pending"), json!("in_progress"), json!("webhook")),
            (json!("in_progress"), json!("approved"), json!("webhook")),
        ]
    );
    let c = w.create(person("hist-2", "sub-hist-2", "AR")).await;
    w.act(&c, "cancel", ALPHA_KEY).await;
    let (_, history) = w.get(&path_of(&c, "/history"), ALPHA_KEY).await;
    assert_eq!(history[1]["source"], "cancel", "{history}");
    assert_eq!(history[1]["to"], "cancelled", "{history}");
    let (status, _) = w.get(&path_of(&v, "/history"), BETA_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's history");
}

/// A provider whose reads are slow delays only its own verifications: the reconciler's round for
/// another provider goes on.
#[tokio::test]
async fn a_slow_provider_does_not_stall_the_reconciler_for_the_others() {
    let w = World::start_with(Options {
        reconcile_every: 1,
        ..Options::webhooks_lost()
    })
    .await;
    for i in 0..24 {
        w.create(person(&format!("slow-{i}"), &format!("sub-slow-{i}"), "CL"))
            .await;
    }
    let on_gu1 = w.create(person("fast-1", "sub-fast-1", "AR")).await;
    // Every BeTrust read now takes 4 s: its round needs three rounds of 8 reads, 12 s.
    w.betrust
        .inject(FaultRule::always(Fault::Latency(Duration::from_secs(4))).on_path("/transaction"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.finish(&on_gu1, Outcome::Approved).await;
    let finished = Instant::now();
    loop {
        let (_, stored) = w.get(&path_of(&on_gu1, ""), ALPHA_KEY).await;
        if stored["status"] == "approved" {
            break;
        }
        assert!(
            finished.elapsed() < Duration::from_secs(6),
            "gu1 waited on BeTrust's round: {stored}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same gateway on PostgreSQL (the several-replicas store).
#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn the_gateway_runs_on_postgresql() {
    let url = postgres_url();
    let w = World::start_with(Options {
        store_url: Some(url),
        ..Default::default()
    })
    .await;
    // The database outlives the test: unique references and subjects per run.
    let run = ulid::Ulid::generate().to_string();
    let body = person(&format!("pg-{run}"), &format!("sub-pg-{run}"), "AR");
    let created = w.create(body.clone()).await;
    let (status, again) = w.post("/v1/verifications", ALPHA_KEY, body).await;
    assert_eq!((status, &again), (StatusCode::OK, &created));
    w.finish(&created, Outcome::Approved).await;
    let (_, stored) = w.get(&path_of(&created, ""), ALPHA_KEY).await;
    assert_eq!(stored["status"], "approved");
    let (_, page) = w
        .get(
            &format!("/v1/verifications?subject_id=sub-pg-{run}"),
            ALPHA_KEY,
        )
        .await;
    assert_eq!(page["items"][0]["id"], created["id"]);
    let (_, standing) = w
        .get(&format!("/v1/subjects/sub-pg-{run}/kyc"), ALPHA_KEY)
        .await;
    assert_eq!(standing["verified"], true);
    let (status, _) = w.get(&path_of(&created, ""), BETA_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A line break in a URL cannot start a forged line in the log: a webhook to a name the policy
/// does not have is logged without the name.
#[tokio::test]
async fn a_newline_in_a_path_cannot_forge_a_log_line() {
    let w = World::start().await;
    let forged = "FORGED INFO kyc_gateway: verification approved";
    let path = format!("/hooks/gu1%0a{}/token", forged.replace(' ', "%20"));
    let r = w
        .http
        .post(format!("{}{path}", w.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = w.log();
    assert!(
        log.contains("webhooks refused") && log.contains("unknown instance"),
        "the attempt is logged:\n{log}"
    );
    assert!(
        !log.contains("FORGED"),
        "the name sent is not logged:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged line:\n{log}"
    );
}

#[tokio::test]
async fn forged_webhooks_change_nothing() {
    let w = World::start().await;
    let v = w.create(person("forge-1", "sub-forge", "AR")).await;
    let body = json!({"event": "kyc.validation_approved", "payload": {"id": provider_ref(&v), "status": "approved"}});
    // Wrong URL token.
    let r = w
        .http
        .post(format!("{}/hooks/gu1/not-the-token", w.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (_, stored) = w.get(&path_of(&v, ""), ALPHA_KEY).await;
    assert_eq!(stored["status"], "pending");
}

#[tokio::test]
async fn identity_is_read_live_with_an_iso_birth_date() {
    let w = World::start().await;
    let v = w.create(person("id-1", "sub-id-1", "CL")).await;
    let path = path_of(&v, "/identity");
    let (status, body) = w.get(&path, ALPHA_KEY).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "no document data before the end: {body}"
    );
    assert_eq!(body["code"], "not_ready");

    w.finish(&v, Outcome::Approved).await;
    let (status, headers, identity) = w.call(Method::GET, &path, Some(ALPHA_KEY), None).await;
    assert_eq!(status, StatusCode::OK, "{identity}");
    assert_eq!(identity["date_of_birth"], "1990-05-20");
    assert_eq!(identity["national_id"], national_id("sub-id-1"));
    assert_eq!(headers["cache-control"], "no-store");

    let g = w.create(person("id-2", "sub-id-2", "AR")).await;
    let (status, body) = w.get(&path_of(&g, "/identity"), ALPHA_KEY).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::CONFLICT, &json!("not_ready")),
        "gu1 too: {body}"
    );
    w.finish(&g, Outcome::Approved).await;
    let (status, identity) = w.get(&path_of(&g, "/identity"), ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{identity}");
    assert_eq!(identity["date_of_birth"], "1990-05-20");
    assert_eq!(identity["first_name"], "Valentina");
}

#[tokio::test]
async fn subject_standing_follows_the_latest_approval() {
    let w = World::start().await;
    let (status, none) = w.get("/v1/subjects/sub-st-1/kyc", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(none["verified"], false);
    assert!(none["current"].is_null());

    for (reference, subject, country) in [("st-1", "sub-st-1", "CL"), ("st-2", "sub-st-2", "AR")] {
        let v = w.create(person(reference, subject, country)).await;
        let (_, pending) = w
            .get(&format!("/v1/subjects/{subject}/kyc"), ALPHA_KEY)
            .await;
        assert_eq!(pending["verified"], false);
        assert_eq!(pending["current"]["id"], v["id"]);
        w.finish(&v, Outcome::Approved).await;
        let (_, standing) = w
            .get(&format!("/v1/subjects/{subject}/kyc"), ALPHA_KEY)
            .await;
        assert_eq!(standing["verified"], true, "{standing}");
        assert_eq!(standing["needs_reverification"], false);
        assert_eq!(standing["current"]["status"], "approved");
        assert!(standing["verified_at"].is_string());
        assert!(standing["expires_at"].is_string());
    }
}

#[tokio::test]
async fn create_is_idempotent_by_reference() {
    let w = World::start().await;
    let body = person("idem-1", "sub-idem", "CL");
    let first = w.create(body.clone()).await;
    let (status, again) = w.post("/v1/verifications", ALPHA_KEY, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    assert_eq!(w.betrust.transactions_created(), 1);

    let mut other = body;
    other["subject"]["country"] = json!("PE");
    let (status, problem) = w.post("/v1/verifications", ALPHA_KEY, other).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "conflict");
    assert_eq!(w.betrust.transactions_created(), 1);
}

#[tokio::test]
async fn a_create_retried_after_a_lost_write_finds_the_first_betrust_transaction() {
    let w = World::start().await;
    let body = person("crash-1", "sub-crash", "CL");
    let first = w.create(body.clone()).await;
    // Simulate a crash between the provider call and the store write: forget the row.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&w.db_url).await.unwrap();
    sqlx::query("DELETE FROM verifications WHERE id = $1")
        .bind(id(&first))
        .execute(&pool)
        .await
        .unwrap();
    let again = w.create(body).await;
    assert_ne!(again["id"], first["id"]);
    assert_eq!(again["provider_reference"], first["provider_reference"]);
    assert_eq!(
        w.betrust.transactions_created(),
        1,
        "BeTrust's 409 Duplicated was read, not repeated"
    );
}

#[tokio::test]
async fn a_create_retried_after_a_lost_write_finds_the_first_gu1_validation() {
    let w = World::start().await;
    let body = person("crash-gu1", "sub-crash-gu1", "AR");
    let first = w.create(body.clone()).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&w.db_url).await.unwrap();
    sqlx::query("DELETE FROM verifications WHERE id = $1")
        .bind(id(&first))
        .execute(&pool)
        .await
        .unwrap();
    let again = w.create(body).await;
    assert_eq!(again["provider_reference"], first["provider_reference"]);
    assert_eq!(w.gu1.validations_created(), 1);
    assert_eq!(w.gu1.entities_created(), 1);
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401() {
    let w = World::start().await;
    let (status, headers, problem) = w.call(Method::GET, "/v1/verifications", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(problem["code"], "unauthorized");
    assert!(problem["request_id"].as_str().unwrap().starts_with("req_"));
    let (status, _, _) = w
        .call(
            Method::POST,
            "/v1/verifications",
            Some("wrong"),
            Some(person("x", "y", "CL")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(w.betrust.transactions_created(), 0);
}

#[tokio::test]
async fn another_tenants_verification_is_404() {
    let w = World::start().await;
    let v = w.create(person("tenant-1", "sub-tenant", "CL")).await;
    for path in [path_of(&v, ""), path_of(&v, "/identity")] {
        let (status, problem) = w.get(&path, BETA_KEY).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(problem["code"], "not_found");
    }
    let (status, _) = w.act(&v, "refresh", BETA_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = w.get("/v1/verifications", BETA_KEY).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let (_, standing) = w.get("/v1/subjects/sub-tenant/kyc", BETA_KEY).await;
    assert!(standing["current"].is_null());
}

#[tokio::test]
async fn list_filters_and_pages() {
    let w = World::start().await;
    for i in 0..5 {
        w.create(person(&format!("page-{i}"), "sub-page", "CL"))
            .await;
    }
    w.create(person("page-other", "sub-other", "CL")).await;
    let mut seen = Vec::new();
    let mut path = "/v1/verifications?subject_id=sub-page&limit=2".to_string();
    loop {
        let (status, page) = w.get(&path, ALPHA_KEY).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|v| v["reference"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/verifications?subject_id=sub-page&limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["page-0", "page-1", "page-2", "page-3", "page-4"]);
    let (_, pending) = w.get("/v1/verifications?status=pending", ALPHA_KEY).await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 6);
    let (_, approved) = w.get("/v1/verifications?status=approved", ALPHA_KEY).await;
    assert_eq!(approved["items"].as_array().unwrap().len(), 0);
    let (status, problem) = w.get("/v1/verifications?status=done", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["field"], "status");
    // Each parameter as the spec constrains it: an empty value is no exception.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=", "limit"),
        ("limit=%2B5", "limit"),
        ("status=", "status"),
        ("cursor=", "cursor"),
        ("cursor=ver_nope", "cursor"),
        ("reference=", "reference"),
        ("subject_id=%07bell", "subject_id"),
    ] {
        let (status, problem) = w
            .get(&format!("/v1/verifications?{query}"), ALPHA_KEY)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(problem["field"], field, "{query}: {problem}");
        assert_eq!(problem["code"], "invalid_request", "{query}: {problem}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_the_field() {
    let w = World::start().await;
    let cases = [
        (
            json!({"subject": {"id": "s", "country": "CL"}}),
            "reference",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s"}}),
            "subject.country",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "Chile"}}),
            "subject.country",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL", "date_of_birth": "20/05/1990"}}),
            "subject.date_of_birth",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL", "nickname": "x"}}),
            "subject",
        ),
        (
            json!({"reference": "", "subject": {"id": "s", "country": "CL"}}),
            "reference",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL"}, "provider": "nope"}),
            "provider",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL"}, "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL"}, "metadata": {"a": {"b": 1}}}),
            "metadata",
        ),
        (
            json!({"reference": "r\u{85}", "subject": {"id": "s", "country": "CL"}}),
            "reference",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL", "email": "20/05/1990"}}),
            "subject.email",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL", "phone": "20/05/1990"}}),
            "subject.phone",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL", "first_name": ""}}),
            "subject.first_name",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL", "provider_refs": {"": ""}}}),
            "subject.provider_refs",
        ),
        (
            json!({"reference": "r", "subject": {"id": "s", "country": "CL"}, "redirect_url": "ftp://20/05/1990"}),
            "redirect_url",
        ),
    ];
    for (body, field) in cases {
        let (status, headers, problem) = w
            .call(
                Method::POST,
                "/v1/verifications",
                Some(ALPHA_KEY),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {problem}"
        );
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["code"], "invalid_request");
        assert_eq!(problem["field"], field, "{body} -> {problem}");
        // No submitted value comes back (the short ones, "r" or "CL", are in any English text).
        for value in string_leaves(&body).into_iter().filter(|v| v.len() >= 4) {
            assert!(
                !problem.to_string().contains(&value),
                "{value} echoed: {problem}"
            );
        }
    }
    // Nor a submitted key: a 60 KB unknown field is named by where it is, not by itself.
    let long_key = "k".repeat(60_000);
    let mut in_subject = json!({"reference": "r", "subject": {"id": "s", "country": "CL"}});
    in_subject["subject"][&long_key] = json!(1);
    // Nor a key of the caller's own map.
    let mut in_metadata = json!({"reference": "r", "subject": {"id": "s", "country": "CL"}});
    in_metadata["metadata"] = json!({ long_key.as_str(): {"nested": 1} });
    for (body, field) in [(in_subject, "subject"), (in_metadata, "metadata")] {
        let (status, _, problem) = w
            .call(
                Method::POST,
                "/v1/verifications",
                Some(ALPHA_KEY),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem:.200}");
        let text = problem.to_string();
        assert!(text.len() < 1_000, "{text:.300}");
        assert_eq!(problem["field"], field);
    }
    let r = w
        .http
        .post(format!("{}/v1/verifications", w.base))
        .bearer_auth(ALPHA_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_request");
    // A repeated key could say one thing to the body hash and another to a reader.
    let r = w
        .http
        .post(format!("{}/v1/verifications", w.base))
        .bearer_auth(ALPHA_KEY)
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(r#"{"reference": "dup", "reference": "dup-2", "subject": {"id": "s", "country": "CL"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("repeats a key"),
        "{problem}"
    );
    assert!(!problem.to_string().contains("dup-2"));
    let r = w
        .http
        .post(format!("{}/v1/verifications", w.base))
        .bearer_auth(ALPHA_KEY)
        .header("content-type", "text/plain")
        .body(person("r", "s", "CL").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "unsupported_media_type");
    assert_eq!(w.betrust.transactions_created(), 0);
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_huge_bodies_get_problems() {
    let w = World::start().await;
    let (status, headers, problem) = w
        .call(Method::GET, "/v2/nothing", Some(ALPHA_KEY), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem["code"], "not_found");
    let (status, _, problem) = w
        .call(Method::DELETE, "/v1/verifications", Some(ALPHA_KEY), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem["code"], "method_not_allowed");
    let mut huge = person("huge", "sub-huge", "CL");
    huge["metadata"] = json!({"blob": "x".repeat(100 * 1024)});
    let (status, _, problem) = w
        .call(
            Method::POST,
            "/v1/verifications",
            Some(ALPHA_KEY),
            Some(huge),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert_eq!(problem["code"], "payload_too_large");
    let mut big = person("big", "sub-big", "CL");
    big["metadata"] = json!({"blob": "x".repeat(5000)});
    let (status, problem) = w.post("/v1/verifications", ALPHA_KEY, big).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "metadata");
    assert_eq!(w.betrust.transactions_created(), 0);
}

#[tokio::test]
async fn cancel_where_the_provider_allows_it() {
    let w = World::start().await;
    let g = w.create(person("cancel-1", "sub-cancel-1", "AR")).await;
    let (status, cancelled) = w.act(&g, "cancel", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, problem) = w.act(&g, "cancel", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "not_cancellable");

    let b = w.create(person("cancel-2", "sub-cancel-2", "CL")).await;
    let (status, problem) = w.act(&b, "cancel", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "not_supported");

    // Didit has no cancel: refused, unless the instance cancels by deleting the session.
    let d = w
        .create(person_on("didit", "cancel-3", "sub-cancel-3"))
        .await;
    let (status, problem) = w.act(&d, "cancel", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "not_supported");
    w.edit_policy(|p| {
        p.replacen(
            "[providers.didit]\n",
            "[providers.didit]\ncancel_deletes = true\n",
            1,
        )
    });
    w.wait_log("policy reloaded", 1, Duration::from_secs(10))
        .await;
    let (status, cancelled) = w.act(&d, "cancel", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let reference = provider_ref(&d);
    assert_eq!(w.didit.session(&reference), None, "deleted at Didit");
}

#[tokio::test]
async fn explicit_provider_choice_is_honoured_where_allowed() {
    let w = World::start().await;
    let mut body = person("choose-1", "sub-choose", "CL");
    body["provider"] = json!("gu1");
    let v = w.create(body).await;
    assert_eq!(v["provider"], "gu1");
    let mut body = person("choose-2", "sub-choose-2", "CL");
    body["provider"] = json!("betrust-cl");
    let (status, problem) = w.post("/v1/verifications", BETA_KEY, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "provider");
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_exactly_one_new_token() {
    let w = World::start().await;
    w.create(person("tok-1", "sub-tok", "CL")).await;
    assert_eq!(w.betrust.token_requests(), 1);
    w.create(person("tok-2", "sub-tok", "CL")).await;
    assert_eq!(w.betrust.token_requests(), 1, "the token is cached");
    w.betrust.revoke_tokens();
    w.create(person("tok-3", "sub-tok", "CL")).await;
    assert_eq!(w.betrust.token_requests(), 2);
}

#[tokio::test]
async fn fifty_concurrent_creates_share_one_token() {
    let w = World::start().await;
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..50 {
        let request = w
            .http
            .post(format!("{}/v1/verifications", w.base))
            .bearer_auth(ALPHA_KEY)
            .json(&person(
                &format!("conc-{i}"),
                &format!("sub-conc-{i}"),
                "CL",
            ));
        creates.spawn(async move { request.send().await.unwrap().status() });
    }
    while let Some(status) = creates.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(w.betrust.token_requests(), 1);
    assert_eq!(w.betrust.transactions_created(), 50);
}

#[tokio::test]
async fn provider_failures_are_clear_problems_in_bounded_time() {
    let w = World::start_with(Options {
        timeout_ms: 1_000,
        ..Default::default()
    })
    .await;
    // Warm the token so the faults hit the transaction calls.
    w.create(person("fault-0", "sub-fault", "CL")).await;
    let cases: [(Fault, StatusCode, &str); 3] = [
        (
            Fault::Status(503),
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
        ),
        (Fault::Malformed, StatusCode::BAD_GATEWAY, "provider_error"),
        (
            Fault::Hang,
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
        ),
    ];
    for (i, (fault, expected, code)) in cases.into_iter().enumerate() {
        w.betrust.clear_faults();
        w.betrust
            .inject(FaultRule::always(fault.clone()).on_path("/transactions"));
        let started = Instant::now();
        let (status, headers, problem) = w
            .call(
                Method::POST,
                "/v1/verifications",
                Some(ALPHA_KEY),
                Some(person(&format!("fault-{}", i + 1), "sub-fault", "CL")),
            )
            .await;
        let took = started.elapsed();
        assert_eq!(status, expected, "{fault:?}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["code"], code);
        assert!(problem["detail"].as_str().unwrap().contains("betrust-cl"));
        assert!(took < Duration::from_secs(10), "{fault:?} took {took:?}");
    }
    w.betrust.clear_faults();
    // Nothing half-made was stored: the same reference works once the provider is back.
    let v = w.create(person("fault-1", "sub-fault", "CL")).await;
    assert_eq!(v["status"], "pending");
}

#[tokio::test]
async fn an_unavailable_provider_falls_back_only_where_the_policy_says_so() {
    let w = World::start().await;
    w.gu1.inject(FaultRule::always(Fault::Status(502)));
    // Tenant beta: gu1, falling back to betrust-cl.
    let (status, v) = w
        .post(
            "/v1/verifications",
            BETA_KEY,
            person("fb-1", "sub-fb-1", "CL"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["provider"], "betrust-cl");
    // Tenant alpha sends AR to gu1 with no fallback: a clear 503, nothing stored.
    let (status, problem) = w
        .post(
            "/v1/verifications",
            ALPHA_KEY,
            person("fb-2", "sub-fb-2", "AR"),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "provider_unavailable");
    let (_, page) = w.get("/v1/verifications?reference=fb-2", ALPHA_KEY).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    // A refusal is not unavailability: no fallback when gu1 refuses the validation.
    w.gu1.clear_faults();
    w.gu1
        .inject(FaultRule::once(Fault::Status(400)).on_path("POST /api/kyc/validations"));
    let (status, problem) = w
        .post(
            "/v1/verifications",
            BETA_KEY,
            person("fb-4", "sub-fb-4", "AR"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "provider_rejected");
    assert_eq!(w.betrust.transactions_created(), 1);
}

#[tokio::test]
async fn the_log_of_a_whole_run_holds_no_personal_data_or_secret() {
    let w = World::start().await;
    let b = w.create(person("log-1", "sub-log-1", "CL")).await;
    let g = w.create(person("log-2", "sub-log-2", "AR")).await;
    w.finish(&b, Outcome::Approved).await;
    w.finish(&g, Outcome::Approved).await;
    for v in [&b, &g] {
        let (status, _) = w.get(&path_of(v, "/identity"), ALPHA_KEY).await;
        assert_eq!(status, StatusCode::OK);
        w.act(v, "refresh", ALPHA_KEY).await;
    }
    w.post("/v1/verifications", ALPHA_KEY, json!({"reference": "bad", "subject": {"id": "s", "country": "CL", "date_of_birth": "1990-13-45"}})).await;
    w.betrust
        .inject(FaultRule::once(Fault::Malformed).on_path("/transactions"));
    let (status, _) = w
        .post(
            "/v1/verifications",
            ALPHA_KEY,
            person("log-3", "sub-log-3", "CL"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = w.log();
    assert!(
        log.contains("verification started"),
        "the log was captured:\n{log}"
    );
    assert!(
        log.contains("source=\"webhook\"") && log.contains("status changed"),
        "{log}"
    );
    for secret in [
        national_id("sub-log-1").as_str(),
        national_id("sub-log-2").as_str(),
        "Valentina",
        "Quispe",
        "1990-05-20",
        "20/05/1990",
        "1990-13-45",
        "valentina@example.com",
        "A1234567",
        ALPHA_KEY,
        BETRUST_SECRET,
        GU1_API_KEY,
        GU1_WEBHOOK_SECRET,
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}

/// Every answer is a problem document, also where the HTTP plumbing says no: a body over the
/// limit on the provider-webhook route, a path that is not UTF-8, a very long URI, huge headers.
#[tokio::test]
async fn oversized_and_unreadable_requests_get_problems() {
    let w = World::start().await;
    let big = "x".repeat(100 * 1024);
    let cases = [
        (
            w.http
                .post(format!("{}/hooks/gu1/some-token", w.base))
                .body(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            w.http
                .get(format!("{}/v1/verifications/%FF%FE", w.base))
                .bearer_auth(ALPHA_KEY),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            w.http
                .get(format!(
                    "{}/v1/verifications/{}",
                    w.base,
                    "v".repeat(10_000)
                ))
                .bearer_auth(ALPHA_KEY),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
        ),
        (
            w.http
                .get(format!("{}/v1/verifications", w.base))
                .bearer_auth(ALPHA_KEY)
                .header("x-padding", "p".repeat(20_000)),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{code}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], code, "{problem}");
        assert!(!problem.to_string().contains("vvvvvvvv"));
    }
}

#[tokio::test]
async fn health_spec_and_docs_are_served() {
    let w = World::start().await;
    let (status, _, body) = w.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, _, body) = w.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    let served = w
        .http
        .get(format!("{}/openapi.json", w.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: Value = serde_json::from_str(&served).unwrap();
    let committed: Value =
        serde_json::from_str(include_str!("../../openapi/openapi.json")).unwrap();
    // The served spec is the committed one with this policy's provider instances filled in, in
    // the policy's (name) order.
    let mut instances = INSTANCES;
    instances.sort();
    assert!(
        served == kyc_gateway::http::openapi::served(&committed, instances),
        "openapi/openapi.json differs from the served spec; regenerate it with:\n\
         cargo run -p kyc-gateway -- openapi > openapi/openapi.json"
    );
    assert_eq!(
        served["components"]["schemas"]["CreateVerification"]["properties"]["provider"]["enum"],
        json!(["betrust-cl", "didit", "gu1", null])
    );
    assert!(served["paths"]["/v1/verifications"]["post"].is_object());
    assert!(served["paths"].get("/hooks/{provider}/{token}").is_none());
    let docs = w
        .http
        .get(format!("{}/docs/", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

#[test]
fn check_config_and_hash_key_commands() {
    let out = std::process::Command::new(binary())
        .args(["hash-key", "test"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
    let (code, stderr) = check_config::check(&[], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    // Each bad edit is named by its key: the policy's own, and the adapters' settings.
    for (from, to, key) in [
        (
            "default = \"betrust-cl\"",
            "default = \"betrust-xx\"",
            "tenants.payments.routing.default",
        ),
        ("kind = \"gu1\"", "kind = \"nope\"", "providers.gu1.kind"),
        (
            "company_id = \"201\"",
            "company_id = \"201\"\ntimeout_ms = \"soon\"",
            "providers.betrust-cl.timeout_ms",
        ),
        (
            "base_url = \"https://api.gu1.ai\"",
            "base_url = \"ftp://api.gu1.ai\"",
            "providers.gu1",
        ),
        // Provider targets outside the public internet, or in clear, unless outbound_allow
        // exempts them (the example exempts 10.20.0.0/16 and kyc-mock.internal).
        (
            "base_url = \"https://api.gu1.ai\"",
            "base_url = \"https://169.254.169.254\"",
            "providers.gu1",
        ),
        (
            "base_url = \"https://api.gu1.ai\"",
            "base_url = \"http://api.gu1.ai\"",
            "providers.gu1",
        ),
        (
            "auth_base_url = \"https://atenea-tst.trust.lat\"",
            "auth_base_url = \"https://10.1.2.3\"",
            "providers.betrust-cl",
        ),
        (
            "api_base_url = \"https://api-tst.trust.lat/transaction-engine/v1\"",
            "api_base_url = \"https://127.0.0.1/transaction-engine/v1\"",
            "providers.betrust-cl",
        ),
    ] {
        let (code, stderr) = check_config::check(&[(from, to)], &[]);
        assert_eq!(code, Some(2), "{to}: {stderr}");
        assert!(stderr.contains(&format!("{key}:")), "{to}: {stderr}");
        for value in ["169.254", "10.1.2.3", "127.0.0.1"] {
            assert!(!stderr.contains(value), "{stderr}");
        }
    }
    for (from, to) in [
        (
            "base_url = \"https://api.gu1.ai\"",
            "base_url = \"http://kyc-mock.internal:8080\"",
        ),
        (
            "auth_base_url = \"https://atenea-tst.trust.lat\"",
            "auth_base_url = \"http://10.20.3.4\"",
        ),
    ] {
        let (code, stderr) = check_config::check(&[(from, to)], &[]);
        assert_eq!(code, Some(0), "{to}: {stderr}");
    }
}

/// Every string in a JSON document (values only, not keys).
fn string_leaves(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(string_leaves).collect(),
        Value::Object(map) => map.values().flat_map(string_leaves).collect(),
        _ => Vec::new(),
    }
}
