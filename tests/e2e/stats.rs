//! `GET /v1/stats`: what the product managers see matches what was done.

use crate::harness::{ALPHA_KEY, BETA_KEY, World, person};
use kyc_sandbox::Outcome;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The group of `stats` whose `key` is `value`.
fn group<'a>(stats: &'a Value, key: &str, value: &str) -> &'a Value {
    stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g[key] == value)
        .unwrap_or_else(|| panic!("no {key} {value} in {stats}"))
}

/// Ends each `(index, outcome, status)` of `made` at its provider and waits for the gateway to
/// have the status.
async fn finish_each(w: &World, made: &[Value], ends: [(usize, Outcome, &str); 4]) {
    for (index, outcome, status) in ends {
        w.finish(&made[index], outcome).await;
        w.wait_status(&made[index], ALPHA_KEY, status).await;
    }
}

#[tokio::test]
async fn stats_count_per_provider_and_country_what_was_started_and_how_it_ended() {
    let w = World::start().await;
    // Alpha sends AR to gu1 and everything else to betrust-cl.
    let mut started = Vec::new();
    for (n, country) in ["CL", "CL", "CL", "MX", "AR", "AR"].iter().enumerate() {
        let reference = format!("stats-{n}");
        started.push(w.create(person(&reference, &reference, country)).await);
    }
    let ends = [
        (0, Outcome::Approved, "approved"),
        (1, Outcome::Rejected, "rejected"),
        (3, Outcome::Expired, "expired"),
        (4, Outcome::Approved, "approved"),
    ];
    finish_each(&w, &started, ends).await;

    let (status, stats) = w.get("/v1/stats", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["groups"].as_array().unwrap().len(), 2, "{stats}");
    let betrust = group(&stats, "provider", "betrust-cl");
    assert_eq!(betrust["started"], 4);
    assert_eq!(
        betrust["finished"],
        json!({"approved": 1, "rejected": 1, "expired": 1, "abandoned": 0, "cancelled": 0})
    );
    // Approved of decided (approved or rejected): the expired one was never decided.
    assert_eq!(betrust["approval_rate"], 0.5);
    // Its 95 % interval (Wilson, 1 of 2): about 9.5 % to 90.5 %.
    let ci = &betrust["approval_ci"];
    assert!((ci[0].as_f64().unwrap() - 0.0945).abs() < 1e-3, "{ci}");
    assert!((ci[1].as_f64().unwrap() - 0.9055).abs() < 1e-3, "{ci}");
    // Finished of started, and approved of started.
    assert_eq!(betrust["completion_rate"], 0.75);
    assert_eq!(betrust["conversion"], 0.25);
    assert_eq!(betrust["expiry_rate"], 0.25);
    assert_eq!(betrust["abandonment_rate"], 0.0);
    assert_eq!(betrust["fallbacks"], 0);
    assert!(betrust.get("country").is_none(), "{betrust}");
    // Time to decision, from the verifications' own times: nearest rank, within the 5 % buckets'
    // resolution (and the millisecond the store rounds to).
    let mut took = Vec::new();
    for index in [0, 1, 3] {
        let path = format!(
            "/v1/verifications/{}",
            started[index]["id"].as_str().unwrap()
        );
        let (_, v) = w.get(&path, ALPHA_KEY).await;
        let at = |field: &str| chrono::DateTime::parse_from_rfc3339(v[field].as_str().unwrap());
        took.push((at("completed_at").unwrap() - at("created_at").unwrap()).as_seconds_f64());
    }
    took.sort_by(f64::total_cmp);
    for (quantile, exact) in [("p50", took[1]), ("p90", took[2])] {
        let reported = betrust["time_to_decision_s"][quantile].as_f64().unwrap();
        assert!(
            (reported - exact).abs() <= exact * 0.025 + 0.001,
            "{quantile}: {reported} vs {exact} ({took:?})"
        );
    }
    let gu1 = group(&stats, "provider", "gu1");
    assert_eq!(gu1["started"], 2);
    assert_eq!(gu1["finished"]["approved"], 1);
    assert_eq!(gu1["approval_rate"], 1.0);
    assert_eq!(gu1["conversion"], 0.5);

    let (_, by_country) = w.get("/v1/stats?group_by=country", ALPHA_KEY).await;
    let started_in = |country| group(&by_country, "country", country)["started"].clone();
    assert_eq!(
        [started_in("AR"), started_in("CL"), started_in("MX")],
        [2, 3, 1]
    );
    assert!(
        group(&by_country, "country", "CL")
            .get("provider")
            .is_none()
    );
    // MX's one verification expired: finished, never decided, so no approval rate.
    let mexico = group(&by_country, "country", "MX");
    assert!(mexico.get("approval_rate").is_none(), "{mexico}");
    assert!(mexico.get("approval_ci").is_none(), "{mexico}");
    assert_eq!(mexico["completion_rate"], 1.0);
    assert_eq!(mexico["conversion"], 0.0);

    let (_, both) = w
        .get("/v1/stats?group_by=provider,country", ALPHA_KEY)
        .await;
    let pairs: Vec<(String, String, u64)> = both["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["provider"].as_str().unwrap().to_string(),
                g["country"].as_str().unwrap().to_string(),
                g["started"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("betrust-cl".into(), "CL".into(), 3),
            ("betrust-cl".into(), "MX".into(), 1),
            ("gu1".into(), "AR".into(), 2)
        ]
    );

    // The period is whole UTC days; another period, or another tenant, sees none of it.
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(stats["to"], today.as_str());
    // The first day with a verification started: today's, as all of them were.
    assert_eq!(stats["first_day"], today.as_str(), "{stats}");
    let (_, old) = w
        .get(
            "/v1/stats?from=2020-01-01T00:00:00Z&to=2020-01-31T00:00:00Z",
            ALPHA_KEY,
        )
        .await;
    assert_eq!(old["groups"], json!([]), "{old}");
    assert_eq!(old["from"], "2020-01-01");
    assert!(old.get("first_day").is_none(), "{old}");
    let (_, inverted) = w
        .get(
            &format!("/v1/stats?from={today}T12:00:00Z&to=2020-01-01T00:00:00Z"),
            ALPHA_KEY,
        )
        .await;
    assert_eq!(inverted["groups"], json!([]), "{inverted}");
    let (_, beta) = w.get("/v1/stats", BETA_KEY).await;
    assert_eq!(beta["groups"], json!([]), "{beta}");

    // Bad parameters are 400 problems naming them, without echoing them.
    for (query, field) in [
        ("group_by=subject", "group_by"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
    ] {
        let (status, problem) = w.get(&format!("/v1/stats?{query}"), ALPHA_KEY).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["field"], field, "{problem}");
        let value = query.split('=').nth(1).unwrap();
        assert!(!problem.to_string().contains(value), "{problem}");
    }
}

/// Figures come from the store, not from a process: two gateways sharing PostgreSQL, each having
/// taken part of the creates and of the providers' webhooks, answer the same.
#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn two_replicas_sharing_postgresql_answer_the_same_stats() {
    use crate::harness::{Options, PgSchema};
    let schema = PgSchema::create().await;
    let w = World::start_with(Options {
        store_url: Some(schema.url.clone()),
        ..Default::default()
    })
    .await;
    let replica = w.start_replica();
    let mut made = Vec::new();
    for n in 0..6 {
        let base = if n % 2 == 0 { &w.base } else { &replica.base };
        let reference = format!("replicated-{n}");
        let country = if n < 4 { "CL" } else { "AR" };
        let created = w
            .http
            .post(format!("{base}/v1/verifications"))
            .bearer_auth(ALPHA_KEY)
            .json(&person(&reference, &reference, country))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        made.push(created.json::<Value>().await.unwrap());
    }
    let ends = [
        (0, Outcome::Approved, "approved"),
        (1, Outcome::Approved, "approved"),
        (2, Outcome::Rejected, "rejected"),
        (5, Outcome::Approved, "approved"),
    ];
    finish_each(&w, &made, ends).await;
    let stats_at = |base: String| {
        let http = w.http.clone();
        async move {
            let answer = http
                .get(format!("{base}/v1/stats?group_by=provider,country"))
                .bearer_auth(ALPHA_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            answer.json::<Value>().await.unwrap()
        }
    };
    let here = stats_at(w.base.clone()).await;
    let there = stats_at(replica.base.clone()).await;
    assert_eq!(here, there);
    let chile = group(&here, "country", "CL");
    assert_eq!(
        (
            chile["started"].clone(),
            chile["finished"]["approved"].clone()
        ),
        (json!(4), json!(2))
    );
    assert_eq!(chile["finished"]["rejected"], 1);
    let argentina = group(&here, "country", "AR");
    assert_eq!(
        (
            argentina["started"].clone(),
            argentina["approval_rate"].clone()
        ),
        (json!(2), json!(1.0))
    );
    drop(replica);
    drop(w);
    schema.drop().await;
}

#[tokio::test]
async fn stats_count_provider_errors_circuit_time_and_cost() {
    let w = World::start().await;
    // Prices for cost figures: a policy edit, applied live.
    w.set_prices(1.25, 0.5).await;
    // Beta goes to gu1, falling back to betrust-cl. gu1 fails its validations: five failures
    // open its circuit (the default), and two more creates find it open.
    w.gu1.inject(
        kyc_sandbox::FaultRule::always(kyc_sandbox::Fault::Status(503))
            .on_path("POST /api/kyc/validations"),
    );
    let mut made = Vec::new();
    for n in 0..7 {
        let reference = format!("errors-{n}");
        let (status, v) = w
            .post(
                "/v1/verifications",
                BETA_KEY,
                person(&reference, &reference, "AR"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        assert_eq!(v["provider"], "betrust-cl");
        made.push(v);
    }
    w.gu1.clear_faults();
    for (v, outcome) in made[..2].iter().zip([Outcome::Approved, Outcome::Rejected]) {
        w.finish(v, outcome).await;
        w.wait_status(v, BETA_KEY, outcome.as_str()).await;
    }
    let (status, stats) = w.get("/v1/stats", BETA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let gu1 = group(&stats, "provider", "gu1");
    // Five failed calls, and two refused at once by the open circuit.
    assert_eq!(gu1["provider_errors"], 7, "{gu1}");
    assert_eq!(gu1["started"], 0, "{gu1}");
    let open = gu1["circuit_open_s"].as_f64().unwrap();
    assert!(open > 0.0 && open <= 30.0, "{gu1}");
    assert!(gu1.get("cost").is_none(), "nothing started there: {gu1}");
    let betrust = group(&stats, "provider", "betrust-cl");
    assert_eq!(betrust["provider_errors"], 0);
    assert_eq!(betrust["fallbacks"], 7);
    assert_eq!(betrust["circuit_open_s"], 0.0);
    assert_eq!(
        betrust["cost"],
        json!({"currency": "USD", "total": 7.0 * 1.25, "per_started": 1.25, "per_approved": 7.0 * 1.25})
    );
    // By country, the errors stay with the subject's country; the circuit is the instance's.
    let (_, by_country) = w.get("/v1/stats?group_by=provider,country", BETA_KEY).await;
    let gu1_ar = &by_country["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["provider"] == "gu1" && g["country"] == "AR")
        .unwrap_or_else(|| panic!("{by_country}"));
    assert_eq!(gu1_ar["provider_errors"], 7);
    assert!(gu1_ar.get("circuit_open_s").is_none());
    // Alpha's figures know nothing of beta's errors.
    let (_, alpha) = w.get("/v1/stats", ALPHA_KEY).await;
    assert_eq!(alpha["groups"], json!([]), "{alpha}");
}
