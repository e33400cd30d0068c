//! Champion-challenger experiments over HTTP: the simulators' autopilots end each verification
//! by themselves, approving the share a test sets, and the experiment's figures, verdict and
//! guardrail follow from what the gateway stored.

use crate::events::{Receiver, world_for};
use crate::harness::*;
use kyc_sandbox::Autopilot;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

const FIGURES: &str = "/v1/experiments/gu1-in-cl";

/// A world whose reconciler re-reads unfinished verifications every 2 s, in case a provider's
/// webhook outran the create it reports on.
async fn world(receiver: Option<&Receiver>) -> World {
    let options = Options {
        reconcile_every: 2,
        ..Options::default()
    };
    match receiver {
        Some(receiver) => world_for(receiver, options).await,
        None => World::start_with(options).await,
    }
}

/// Has each simulator approve the given percent of its verifications, each half a second after
/// it was created.
fn approve(w: &World, betrust: u8, gu1: u8) {
    let pilot = |approve_percent| {
        Some(Autopilot {
            approve_percent,
            decision_ms: 500,
            approve_ms: None,
            error_percent: 0,
        })
    };
    w.betrust.set_autopilot(pilot(betrust));
    w.gu1.set_autopilot(pilot(gu1));
}

/// Puts an experiment in tenant alpha's routing by a live policy edit: half of the Chilean
/// subjects to gu1 (challenger), half to betrust-cl (champion), a verdict from 20 each, each
/// verification counted once it is 3 seconds old unless `more` sets another `horizon`.
async fn start_experiment(w: &World, more: &str) {
    let more = if more.contains("horizon") {
        more.to_string()
    } else {
        format!("{more}, horizon = \"3s\"")
    };
    w.edit_policy(|p| {
        p.replace(
            "allow_override = true\n",
            &format!(
                "allow_override = true\nexperiment = {{ name = \"gu1-in-cl\", champion = \
                 \"betrust-cl\", challenger = \"gu1\", share = 50, countries = [\"CL\"], \
                 min_sample = 20{more} }}\n"
            ),
        )
    });
    w.wait_log("policy reloaded", 1, Duration::from_secs(10))
        .await;
}

/// Creates `n` verifications of Chilean subjects and waits until each is final; answers them as
/// stored.
async fn run_subjects(w: &World, prefix: &str, n: usize) -> Vec<Value> {
    let mut made = Vec::new();
    for i in 0..n {
        let reference = format!("{prefix}-{i}");
        made.push(w.create(person(&reference, &reference, "CL")).await);
    }
    w.wait_decided(&made).await
}

/// (started, approved) of the verifications in `arm`, counted from the verifications themselves.
fn tally(stored: &[Value], arm: &str) -> (u64, u64) {
    let mine: Vec<&Value> = stored
        .iter()
        .filter(|v| v["routing"]["arm"] == arm)
        .collect();
    for v in &mine {
        assert_eq!(v["routing"]["reason"], "experiment", "{v}");
        assert_eq!(v["routing"]["experiment"], "gu1-in-cl", "{v}");
        let provider = if arm == "champion" {
            "betrust-cl"
        } else {
            "gu1"
        };
        assert_eq!(v["provider"], provider, "{v}");
    }
    let approved = mine.iter().filter(|v| v["status"] == "approved").count();
    (mine.len() as u64, approved as u64)
}

/// The experiment's figures once no verification of either arm is younger than the horizon.
async fn matured_figures(w: &World) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, figures) = w.get(FIGURES, ALPHA_KEY).await;
        assert_eq!(status, StatusCode::OK, "{figures}");
        if (0..2).all(|i| figures["arms"][i]["maturing"] == 0) {
            return figures;
        }
        assert!(Instant::now() < deadline, "still maturing: {figures}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The experiment's figures once all have matured, checked against the verifications they
/// count.
async fn figures(w: &World, stored: &[Value]) -> Value {
    let figures = matured_figures(w).await;
    for (index, arm) in ["champion", "challenger"].iter().enumerate() {
        let (started, approved) = tally(stored, arm);
        let figures = &figures["arms"][index];
        assert_eq!(figures["arm"], *arm);
        assert_eq!(figures["started"], started, "{figures}");
        // Every one was decided within the horizon: the approval rate's sample is all of them.
        assert_eq!(figures["sample"], started, "{figures}");
        assert_eq!(figures["approved"], approved, "{figures}");
        let value = figures["value"].as_f64().unwrap();
        assert!((value - approved as f64 / started as f64).abs() < 1e-12);
        let ci = &figures["ci"];
        assert!(ci[0].as_f64().unwrap() <= value && value <= ci[1].as_f64().unwrap());
        // The arm's median time to decision: the nearest-rank median of its verifications'
        // times, within the 5 % of the time buckets.
        let mut took: Vec<f64> = stored
            .iter()
            .filter(|v| v["routing"]["arm"] == *arm)
            .map(|v| {
                let at = |field: &str| {
                    chrono::DateTime::parse_from_rfc3339(v[field].as_str().unwrap()).unwrap()
                };
                (at("completed_at") - at("created_at")).as_seconds_f64()
            })
            .collect();
        took.sort_by(f64::total_cmp);
        let median = took[(took.len() - 1) / 2];
        let shown = figures["time_to_decision_s_p50"].as_f64().unwrap();
        assert!((shown / median - 1.0).abs() < 0.05, "{median} s: {figures}");
        // Its cost per approval at the instance's price (set by the test that checks it).
        if let Some(cost) = figures["cost_per_approved"].as_f64() {
            let price = if *arm == "champion" { 1.25 } else { 0.5 };
            let expected = price * started as f64 / approved as f64;
            assert!((cost - expected).abs() < 1e-9, "{expected}: {figures}");
            assert_eq!(figures["currency"], "USD");
        }
    }
    let difference = figures["difference"].as_f64().unwrap();
    let values: Vec<f64> = (0..2)
        .map(|i| figures["arms"][i]["value"].as_f64().unwrap())
        .collect();
    assert!(
        (difference - (values[1] - values[0])).abs() < 1e-12,
        "{figures}"
    );
    figures
}

#[tokio::test]
async fn an_experiment_finds_the_challenger_better_when_its_provider_approves_more() {
    let w = world(None).await;
    approve(&w, 30, 90);
    w.set_prices(1.25, 0.5).await;
    start_experiment(&w, "").await;
    // The experiment's edit is the second reload.
    w.wait_log("policy reloaded", 2, Duration::from_secs(10))
        .await;
    // Before any verification: nothing to compare.
    let (_, empty) = w.get(FIGURES, ALPHA_KEY).await;
    assert_eq!(empty["verdict"], "collecting", "{empty}");
    assert!(empty["always_valid_p_value"].is_null(), "{empty}");
    assert!(empty["p_value"].is_null(), "{empty}");

    let stored = run_subjects(&w, "better", 80).await;
    let figures = figures(&w, &stored).await;
    assert_eq!(figures["verdict"], "challenger_better", "{figures}");
    assert_eq!(figures["verdict_test"], "msprt", "{figures}");
    assert!(
        figures["always_valid_p_value"].as_f64().unwrap() < 0.05,
        "{figures}"
    );
    // The confidence sequence holds the difference and lies above 0; the fixed-horizon p-value
    // is answered beside it, for comparison.
    let cs = &figures["difference_cs"];
    let difference = figures["difference"].as_f64().unwrap();
    assert!(cs[0].as_f64().unwrap() > 0.0, "{figures}");
    assert!(cs[1].as_f64().unwrap() >= difference, "{figures}");
    assert!(figures["p_value"].as_f64().unwrap() < 0.05, "{figures}");
    assert!(figures["difference"].as_f64().unwrap() > 0.4, "{figures}");
    assert_eq!(figures["stopped"], false);
    for arm in 0..2 {
        assert!(
            figures["arms"][arm]["cost_per_approved"].is_number(),
            "{figures}"
        );
    }
    // Both arms got subjects, about half each (the assignment is a hash of the subject).
    for arm in ["champion", "challenger"] {
        let (started, _) = tally(&stored, arm);
        assert!((20..=60).contains(&started), "{arm}: {started} of 80");
    }
    // An unknown experiment, or another tenant's, is not found.
    let (status, _) = w.get("/v1/experiments/nope", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = w.get(FIGURES, BETA_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_experiment_sees_no_difference_when_the_providers_approve_alike() {
    let w = world(None).await;
    approve(&w, 60, 60);
    start_experiment(&w, "").await;
    let stored = run_subjects(&w, "alike", 80).await;
    let figures = figures(&w, &stored).await;
    assert_eq!(figures["verdict"], "no_difference", "{figures}");
    assert!(
        figures["always_valid_p_value"].as_f64().unwrap() > 0.05,
        "{figures}"
    );
}

#[tokio::test]
async fn a_challenger_that_rejects_fast_and_approves_slowly_is_judged_at_the_horizon() {
    let w = world(None).await;
    // Both approve half. BeTrust decides in 300 ms; gu1 rejects in 300 ms and approves in 5 s.
    let pilot = |approve_ms| Autopilot {
        approve_percent: 50,
        decision_ms: 300,
        approve_ms,
        error_percent: 0,
    };
    w.betrust.set_autopilot(Some(pilot(None)));
    w.gu1.set_autopilot(Some(pilot(Some(5_000))));
    start_experiment(&w, ", guardrail_pp = 10, horizon = \"8s\"").await;
    let began = Instant::now();
    let mut made = Vec::new();
    for i in 0..80 {
        let reference = format!("slow-{i}");
        made.push(w.create(person(&reference, &reference, "CL")).await);
    }
    // Soon after, every rejection has come in and no approval from gu1 yet: counted as they end,
    // gu1 would approve none of some twenty against BeTrust's half, and the guardrail would stop
    // it. Counted at the horizon, none of them counts yet. (Unless the creates took so long on a
    // loaded machine that gu1's first approvals are already in.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut challenger_now = Vec::new();
    for v in made.iter().filter(|v| v["routing"]["arm"] == "challenger") {
        let path = format!("/v1/verifications/{}", v["id"].as_str().unwrap());
        let (_, now) = w.get(&path, ALPHA_KEY).await;
        challenger_now.push(now["status"].as_str().unwrap().to_string());
    }
    let (_, early) = w.get(FIGURES, ALPHA_KEY).await;
    if began.elapsed() < Duration::from_millis(4_500) {
        let challenger_ended = &challenger_now;
        assert!(
            challenger_ended.iter().filter(|s| *s == "rejected").count() >= 15,
            "{challenger_ended:?}"
        );
        assert!(
            !challenger_ended.iter().any(|s| s == "approved"),
            "{challenger_ended:?}"
        );
        assert_eq!(early["arms"][1]["sample"], 0, "{early}");
        assert_eq!(early["verdict"], "collecting", "{early}");
    }

    let figures = matured_figures(&w).await;
    assert_eq!(figures["horizon"], "8s", "{figures}");
    for arm in &figures["arms"].as_array().unwrap()[..] {
        assert_eq!(arm["sample"], arm["started"], "{figures}");
        let value = arm["value"].as_f64().unwrap();
        assert!((value - 0.5).abs() < 0.05, "{figures}");
    }
    assert_eq!(figures["verdict"], "no_difference", "{figures}");
    assert_eq!(figures["stopped"], false, "{figures}");
    assert!(
        !w.log().contains("experiment stopped by its guardrail"),
        "the guardrail stopped a challenger that approves as many"
    );
}

#[tokio::test]
async fn the_guardrail_stops_a_failing_challenger_and_tells_the_tenant() {
    let receiver = Receiver::start(vec![], 200).await;
    let w = world(Some(&receiver)).await;
    approve(&w, 90, 10);
    start_experiment(&w, ", guardrail_pp = 10").await;
    run_subjects(&w, "guard", 60).await;
    w.wait_log(
        "experiment stopped by its guardrail",
        1,
        Duration::from_secs(10),
    )
    .await;
    let (_, figures) = w.get(FIGURES, ALPHA_KEY).await;
    assert_eq!(figures["stopped"], true, "{figures}");
    assert!(figures["stopped_at"].is_string(), "{figures}");
    assert!(
        figures["difference_ci"][1].as_f64().unwrap() < -0.10,
        "{figures}"
    );

    // The tenant gets one signed `experiment.stopped` event with the figures.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stopped = loop {
        let found: Vec<_> = receiver
            .seen()
            .into_iter()
            .filter(|d| d.body["type"] == "experiment.stopped")
            .collect();
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "no experiment.stopped event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert!(stopped[0].verified);
    // It is the event the spec's webhooks describe.
    let (_, spec) = w.get("/openapi.json", ALPHA_KEY).await;
    let schema = &spec["webhooks"]["experiment.stopped"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    let errors = crate::spec_webhooks::valid(&spec, schema, &stopped[0].body);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(stopped[0].body["data"]["name"], "gu1-in-cl");
    assert_eq!(stopped[0].body["data"]["challenger"], "gu1");

    // From now on every Chilean subject goes to the champion, even those the challenger had.
    let after = run_subjects(&w, "guard-after", 12).await;
    for v in &after {
        assert_eq!(v["provider"], "betrust-cl", "{v}");
        assert_eq!(v["routing"]["arm"], "champion", "{v}");
    }

    // Ending the experiment is a policy edit: Chile goes back to the default, and the figures
    // are no longer served.
    w.edit_policy(|p| {
        p.lines()
            .filter(|l| !l.starts_with("experiment = "))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    w.wait_log("policy reloaded", 2, Duration::from_secs(10))
        .await;
    let v = w.create(person("guard-ended", "guard-ended", "CL")).await;
    assert_eq!(v["routing"]["reason"], "default", "{v}");
    let (status, _) = w.get(FIGURES, ALPHA_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Stores `n` finished verifications of each arm of `tenant`'s experiment `name`: the champion's
/// all approved, the challenger's all rejected, three days ago (past the default horizon), so its
/// guardrail trips at the next check.
async fn seed_arms(db_url: &str, tenant: &str, name: &str, n: usize) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(db_url).await.unwrap();
    let at = (chrono::Utc::now() - chrono::Duration::days(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for (arm, provider, status) in [
        ("champion", "betrust-cl", "approved"),
        ("challenger", "gu1", "rejected"),
    ] {
        for i in 0..n {
            let id = format!("ver_{}", ulid::Ulid::generate());
            sqlx::query(
                "INSERT INTO verifications (id, tenant, reference, subject_id, provider, \
                 provider_reference, status, request_hash, created_at, updated_at, \
                 completed_at, country, experiment, arm) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'h', $8, $8, $8, 'CL', $9, $10)",
            )
            .bind(&id)
            .bind(tenant)
            .bind(format!("seed-{tenant}-{arm}-{i}"))
            .bind(format!("seed-{arm}-{i}"))
            .bind(provider)
            .bind(format!("pref-{id}"))
            .bind(status)
            .bind(&at)
            .bind(name)
            .bind(arm)
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    pool.close().await;
}

#[tokio::test]
async fn one_tenants_failing_receiver_never_holds_back_anothers_experiment_event() {
    // Alpha's receiver fails, and alpha's next retry is ten minutes away.
    let failing = Receiver::start(vec![], 500).await;
    let healthy = Receiver::start(vec![], 200).await;
    let w = world_for(
        &failing,
        Options {
            retry_seconds: vec![0, 600],
            ..Default::default()
        },
    )
    .await;
    let experiment = |champion: &str| {
        format!(
            "experiment = {{ name = \"same-name\", champion = \"{champion}\", challenger = \
             \"gu1\", share = 50, countries = [\"CL\"], min_sample = 20, guardrail_pp = 10 }}\n"
        )
    };
    seed_arms(&w.db_url, "alpha", "same-name", 30).await;
    seed_arms(&w.db_url, "beta", "same-name", 30).await;
    w.edit_policy(|p| {
        p.replace(
            "allow_override = true\n",
            &format!("allow_override = true\n{}", experiment("betrust-cl")),
        )
        .replace(
            "\n[tenants.beta.routing]\n",
            &format!(
                "webhook_url = \"{}\"\nwebhook_secret = \"${{ALPHA_WEBHOOK_SECRET}}\"\n\n\
                 [tenants.beta.routing]\n",
                healthy.url
            ),
        )
    });
    w.wait_log(
        "experiment stopped by its guardrail",
        1,
        Duration::from_secs(20),
    )
    .await;
    let tried = failing.wait_for(1).await;
    assert_eq!(tried[0].body["type"], "experiment.stopped");

    // Beta's experiment of the same name stops too: its event reaches beta's receiver at once.
    w.edit_policy(|p| {
        p.replace(
            "fallback = [\"betrust-cl\"]\n",
            &format!("fallback = [\"betrust-cl\"]\n{}", experiment("betrust-cl")),
        )
    });
    let stopped = Instant::now();
    w.wait_log(
        "experiment stopped by its guardrail",
        2,
        Duration::from_secs(20),
    )
    .await;
    let got = healthy.wait_for(1).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "beta's event took {:?}",
        stopped.elapsed()
    );
    assert_eq!(got[0].body["type"], "experiment.stopped");
    assert_eq!(got[0].body["data"]["name"], "same-name");
    assert!(got[0].verified);
    assert_eq!(failing.seen().len(), 1, "alpha's event waits for its retry");
}
