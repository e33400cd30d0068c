//! What-if replay: a draft routing over the tenant's stored verifications, through
//! `POST /v1/policy/preview` and `kyc-gateway replay`, against a case worked out by hand.

use crate::harness::*;
use kyc_sandbox::{Fault, FaultRule, Outcome};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Alpha's routing in the test policy: betrust-cl by default, AR to gu1.
const ROUTING: &str =
    "default = \"betrust-cl\"\nrules = [{ country = \"AR\", provider = \"gu1\" }]";

#[tokio::test]
async fn a_draft_routing_replayed_moves_what_a_hand_count_says() {
    let w = World::start().await;
    w.set_prices(1.25, 0.5).await;
    // Three Chileans and a Mexican at betrust-cl (the default), two Argentines at gu1 (their
    // rule), and a Chilean sent to gu1 by the caller's own choice.
    let mut made = Vec::new();
    for (n, country) in ["CL", "CL", "CL", "MX", "AR", "AR"].iter().enumerate() {
        let reference = format!("replay-{n}");
        made.push(w.create(person(&reference, &reference, country)).await);
    }
    let mut chosen = person("replay-chosen", "replay-chosen", "CL");
    chosen["provider"] = json!("gu1");
    assert_eq!(w.create(chosen).await["routing"]["reason"], "override");
    for (index, outcome) in [
        (0, Outcome::Approved),
        (1, Outcome::Approved),
        (2, Outcome::Rejected),
        (4, Outcome::Approved),
        (5, Outcome::Rejected),
    ] {
        w.finish(&made[index], outcome).await;
        w.wait_status(&made[index], ALPHA_KEY, outcome.as_str())
            .await;
    }

    // The draft: gu1 by default, Mexico kept at betrust-cl.
    let draft = json!({"default": "gu1", "rules": [{"country": "MX", "provider": "betrust-cl"}]});
    let (status, preview) = w
        .post(
            "/v1/policy/preview",
            ALPHA_KEY,
            json!({"routing": draft, "since_days": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    // By hand: the three Chileans move to gu1; the Argentines stay at gu1 (now by default), the
    // Mexican stays by the new rule, the chosen one stays where the caller sent it.
    assert_eq!(preview["total"], 7, "{preview}");
    assert_eq!(preview["unchanged"], 4, "{preview}");
    assert_eq!(preview["fallbacks"], 0, "{preview}");
    assert_eq!(
        preview["moves"],
        json!([{"from": "betrust-cl", "to": "gu1", "country": "CL", "count": 3}])
    );
    // Each destination's figures as observed: gu1 approved 1 of 2 finished, at 0.5 for each
    // of its 3 started (1.5 per approval); betrust-cl 2 of 3, at 1.25 for each of 4 (2.5). Each
    // rate comes with its observations and Wilson interval (Python's statistics.NormalDist:
    // 2/3 gives 0.20766 to 0.93851, 1/2 gives 0.09453 to 0.90547), and per country, where no
    // instance finished 30 (betrust-cl none in MX; gu1 2 in AR, none in CL), no rate at all.
    let mut destinations = preview["destinations"].clone();
    let intervals: Vec<Value> = destinations
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .map(|d| d.as_object_mut().unwrap().remove("approval_ci").unwrap())
        .collect();
    let too_few = |country: &str, count: u64, observations: u64| {
        json!({"country": country, "count": count, "observations": observations,
               "too_few_observations": true})
    };
    assert_eq!(
        destinations,
        json!([
            {"provider": "betrust-cl", "count": 1, "approval_rate": 2.0 / 3.0,
             "observations": 3, "countries": [too_few("MX", 1, 0)],
             "cost_per_approved": 2.5, "currency": "USD"},
            {"provider": "gu1", "count": 6, "approval_rate": 0.5,
             "observations": 2, "countries": [too_few("AR", 2, 2), too_few("CL", 4, 0)],
             "cost_per_approved": 1.5, "currency": "USD"},
        ])
    );
    for (interval, [low, high]) in intervals.iter().zip([
        [0.207_659_600_802_047_8, 0.938_508_055_279_603_8],
        [0.094_531_205_734_230_74, 0.905_468_794_265_769_3],
    ]) {
        assert!(
            (interval[0].as_f64().unwrap() - low).abs() < 1e-9,
            "{interval}"
        );
        assert!(
            (interval[1].as_f64().unwrap() - high).abs() < 1e-9,
            "{interval}"
        );
    }
    // Today: 3 approved of 5 decided (Wilson 0.23072 to 0.88236), costing 4 × 1.25 + 3 × 0.5 =
    // 6.5, so 6.5 / 3 per approval. Under the draft: the 2 decided Argentines keep their outcome
    // (1 approved); the 3 decided Chileans move to gu1, which decided none in Chile, so they are
    // counted at its overall 1 of 2: 1 + 1.5 = 2.5 expected of 5. Variance 2 × 0.25 (kept) +
    // 3² × 0.25 / 2 (gu1's estimate) = 1.625, so 0.5 ± 1.96 × √1.625 / 5. The cost: the Mexican
    // at 1.25 and six at gu1's 0.5 = 4.25, so 1.7 per approval.
    let close = |v: &Value, expected: f64| (v.as_f64().unwrap() - expected).abs() < 1e-4;
    let today = &preview["today"];
    assert_eq!(today["decided"], 5, "{today}");
    assert!(close(&today["approval_rate"], 0.6), "{today}");
    assert!(close(&today["approval_ci"][0], 0.230_72), "{today}");
    assert!(close(&today["approval_ci"][1], 0.882_38), "{today}");
    assert!(close(&today["cost_per_approved"], 6.5 / 3.0), "{today}");
    assert_eq!(today["currency"], "USD");
    let projected = &preview["projected"];
    let half = 1.959_964 * 1.625_f64.sqrt() / 5.0;
    assert!(close(&projected["approved"], 2.5), "{projected}");
    assert!(close(&projected["approval_rate"], 0.5), "{projected}");
    assert!(
        close(&projected["approval_ci"][0], 0.5 - half),
        "{projected}"
    );
    assert!(
        close(&projected["approval_ci"][1], 0.5 + half),
        "{projected}"
    );
    assert!(close(&projected["cost_per_approved"], 1.7), "{projected}");
    // Its interval: the cost over the approvals at either end of the rate's.
    assert!(
        close(
            &projected["cost_per_approved_ci"][0],
            4.25 / ((0.5 + half) * 5.0)
        ),
        "{projected}"
    );
    // Near no approval the high end is steep: compared within 1 %.
    let high = projected["cost_per_approved_ci"][1].as_f64().unwrap();
    assert!(
        (high / (4.25 / ((0.5 - half) * 5.0)) - 1.0).abs() < 0.01,
        "{projected}"
    );
    assert_eq!(projected["estimated_from_overall"], 3, "{projected}");

    // Nothing was sent to a provider, and nothing changed.
    let (_, list) = w.get("/v1/verifications", ALPHA_KEY).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 7);

    // The command line gives the same from a draft policy file.
    let text = std::fs::read_to_string(w.policy_path()).unwrap();
    assert!(text.contains(ROUTING));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("draft.toml");
    std::fs::write(
        &file,
        text.replace(
            ROUTING,
            "default = \"gu1\"\nrules = [{ country = \"MX\", provider = \"betrust-cl\" }]",
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let args = [
        "replay", "--config", file, "--tenant", "alpha", "--since", "7d",
    ];
    let out = w.command(&[&args[..], &["--json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, preview);
    let out = w.command(&args);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with(
            "7 verifications replayed, 4 unchanged, 0 fell back then (same routing), 3 moved"
        ),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["betrust-cl", "gu1", "CL", "3"]),
        "{table}"
    );
    let out = w.command(&[
        "replay", "--config", file, "--tenant", "alpha", "--since", "forever",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));

    // A draft the policy would refuse is refused, naming the key; so is a bad period.
    for (body, field) in [
        (json!({"routing": {}}), "routing.default"),
        (
            json!({"routing": {"default": "gu1", "rules": [{"country": "CL", "provider": "gu1"}, {"country": "CL", "provider": "betrust-cl"}]}}),
            "routing.rules[1].country",
        ),
        (
            json!({"routing": {"default": "gu1"}, "since_days": 0}),
            "since_days",
        ),
        (json!({"routing": {"default": "nope"}}), "routing.default"),
    ] {
        let (status, problem) = w.post("/v1/policy/preview", ALPHA_KEY, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    // Another tenant's preview sees only its own verifications.
    let (status, beta) = w
        .post(
            "/v1/policy/preview",
            BETA_KEY,
            json!({"routing": {"default": "betrust-cl"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{beta}");
    assert_eq!(beta["total"], 0, "{beta}");

    // Beta's default gu1 is down for one create, which BeTrust takes as its fallback. Its
    // routing replayed unchanged moves nothing: the verification fell back, it was not moved.
    w.gu1.inject(FaultRule::always(Fault::Status(503)));
    let (status, fell_back) = w
        .post(
            "/v1/verifications",
            BETA_KEY,
            person("replay-fb", "replay-fb", "AR"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fell_back}");
    assert_eq!(fell_back["routing"]["reason"], "fallback");
    w.gu1.clear_faults();
    let w = &w;
    let replayed = |routing: Value| async move {
        let (status, answer) = w
            .post("/v1/policy/preview", BETA_KEY, json!({"routing": routing}))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    };
    let same = replayed(json!({"default": "gu1", "fallback": ["betrust-cl"]})).await;
    assert_eq!(
        (
            &same["total"],
            &same["unchanged"],
            &same["fallbacks"],
            &same["moves"]
        ),
        (&json!(1), &json!(0), &json!(1), &json!([])),
        "{same}"
    );
    // Sent to BeTrust first, it moves from gu1, the instance routing chose.
    let moved = replayed(json!({"default": "betrust-cl"})).await;
    assert_eq!(moved["fallbacks"], 0, "{moved}");
    assert_eq!(
        moved["moves"],
        json!([{"from": "gu1", "to": "betrust-cl", "country": "AR", "count": 1}])
    );
}
