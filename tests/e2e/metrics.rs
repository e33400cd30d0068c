//! `/metrics` after some traffic: the series an operator and a product manager read, with counts
//! that match what was done, and no id or reference in any label.

use crate::harness::*;
use kyc_sandbox::{Fault, FaultRule, Outcome};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// The value of the series `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_what_was_done_with_bounded_labels() {
    let receiver = crate::events::Receiver::start(vec![], 200).await;
    let w = World::start_with(Options {
        webhook_url: Some(receiver.url.clone()),
        outbound_allow: vec!["127.0.0.0/8".into()],
        reconcile_every: 1,
        server_extra: vec!["auth_failures_per_minute = 2".into()],
        ..Default::default()
    })
    .await;
    let first = w.create(person("met-1", "sub-met-1", "CL")).await;
    w.create(person("met-2", "sub-met-2", "CL")).await;
    w.create(person("met-3", "sub-met-3", "AR")).await;
    // gu1 fails once for beta, whose fallback is BeTrust.
    w.gu1.inject(FaultRule::once(Fault::Status(503)));
    let (status, fell_back) = w
        .post(
            "/v1/verifications",
            BETA_KEY,
            person("met-4", "sub-met-4", "AR"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fell_back}");
    assert_eq!(fell_back["provider"], "betrust-cl");
    // One approval, through the provider's webhook.
    w.finish(&first, Outcome::Approved).await;
    w.wait_status(&first, ALPHA_KEY, "approved").await;

    let response = w
        .http
        .get(format!("{}/metrics", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };

    let created = [("route", "/v1/verifications"), ("status", "201")];
    assert_eq!(
        v(
            "kyc_http_requests_total",
            &[("tenant", "alpha"), created[0], created[1]]
        ),
        3.0
    );
    assert_eq!(
        v(
            "kyc_http_requests_total",
            &[("tenant", "beta"), created[0], created[1]]
        ),
        1.0
    );
    let calls = |provider, outcome| {
        v(
            "kyc_provider_calls_total",
            &[
                ("provider", provider),
                ("operation", "create"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("betrust-cl", "ok"), 3.0);
    assert_eq!(calls("gu1", "ok"), 1.0);
    assert_eq!(calls("gu1", "unavailable"), 1.0);
    assert_eq!(
        v(
            "kyc_provider_call_duration_seconds_count",
            &[("provider", "betrust-cl"), ("operation", "create")]
        ),
        3.0
    );
    let started = |tenant, provider| {
        v(
            "kyc_verifications_started_total",
            &[("tenant", tenant), ("provider", provider)],
        )
    };
    assert_eq!(started("alpha", "betrust-cl"), 2.0);
    assert_eq!(started("alpha", "gu1"), 1.0);
    assert_eq!(started("beta", "betrust-cl"), 1.0);
    let approved = [
        ("tenant", "alpha"),
        ("provider", "betrust-cl"),
        ("status", "approved"),
    ];
    assert_eq!(v("kyc_verifications_finished_total", &approved), 1.0);
    assert_eq!(v("kyc_time_to_decision_seconds_count", &approved), 1.0);
    assert_eq!(v("kyc_circuit_state", &[("provider", "gu1")]), 0.0);

    // The token was fetched once and then served from the cache.
    let tokens = |source| {
        v(
            "kyc_provider_tokens_total",
            &[("provider", "betrust-cl"), ("source", source)],
        )
    };
    assert_eq!(tokens("fetched"), 1.0);
    assert!(tokens("cache") >= 3.0, "{text}");
    // The approval went to alpha's receiver.
    receiver.wait_for(1).await;
    let delivered = "kyc_webhook_attempts_total{tenant=\"alpha\",outcome=\"delivered\"} 1";
    let text = wait_for_series(&w, delivered).await;
    assert_eq!(
        value(
            &text,
            "kyc_webhook_attempts_total",
            &[("tenant", "alpha"), ("outcome", "delivered")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "kyc_webhook_delivery_lag_seconds_count",
            &[("tenant", "alpha")]
        ),
        Some(1.0)
    );
    // The reconciler's last round found met-2 and met-4 on BeTrust, met-3 on gu1, not final.
    // A caller guessing keys: two failures, then the third is refused by the auth budget
    // (last: it blocks the address, valid keys too).
    for expected in [401, 401, 429] {
        let (status, _) = w.get("/v1/verifications", "wrong-key-guess").await;
        assert_eq!(status.as_u16(), expected);
    }
    // Each instance's round sets its own gauge: wait for BeTrust's, not just the first.
    let text = wait_for_series(&w, "kyc_reconciler_backlog{provider=\"betrust-cl\"} 2").await;
    assert_eq!(
        value(
            &text,
            "kyc_reconciler_backlog",
            &[("provider", "betrust-cl")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "kyc_rate_limited_total", &[("limit", "auth")]),
        Some(1.0)
    );

    // Every series the Grafana dashboard (deploy/grafana) queries is exported.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/dashboards/kyc-gateway.json"
    ))
    .unwrap();
    let queried: std::collections::BTreeSet<&str> = dashboard
        .match_indices("kyc_")
        .map(|(at, _)| {
            let name = &dashboard[at..];
            let end = name
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(name.len());
            &name[..end]
        })
        .filter(|name| name.len() > "kyc_".len())
        .collect();
    assert!(queried.len() >= 12, "{queried:?}");
    for series in queried {
        assert!(
            text.contains(&format!("\n{series}{{")),
            "{series} is not exported"
        );
    }

    // Labels come from bounded sets: no id, reference or subject anywhere.
    for unbounded in ["ver_", "met-", "sub-met", "NID"] {
        assert!(!text.contains(unbounded), "{unbounded} in\n{text}");
    }
}

/// `/metrics` once it holds `series`: a name with its opening brace, or a whole labelled series
/// (within 10 s).
pub async fn wait_for_series(w: &World, series: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(w).await;
        if text.contains(series) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {series} in\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/metrics` now.
async fn scrape(w: &World) -> String {
    w.http
        .get(format!("{}/metrics", w.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every series a Grafana panel queries is there from the first scrape, at 0, for each tenant
/// and instance of the policy: a new deployment's panels show 0, not "no data".
#[tokio::test]
async fn every_series_the_grafana_dashboards_read_is_exported_from_the_start() {
    let w = World::start().await;
    // The first scrape, before any request.
    let text = scrape(&w).await;
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/dashboards"
    );
    let mut queried = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let dashboard = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (at, _) in dashboard.match_indices("kyc_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in &queried {
        assert!(
            text.contains(&format!("\n{name}{{")) || text.starts_with(&format!("{name}{{")),
            "{name} is not exported from the start:\n{text}"
        );
    }
    for provider in ["betrust-cl", "gu1"] {
        for series in ["kyc_circuit_state", "kyc_reconciler_backlog"] {
            assert_eq!(
                value(&text, series, &[("provider", provider)]),
                Some(0.0),
                "{series}"
            );
        }
        for tenant in ["alpha", "beta"] {
            let labels = [("tenant", tenant), ("provider", provider)];
            assert_eq!(
                value(&text, "kyc_verifications_started_total", &labels),
                Some(0.0)
            );
        }
    }
}

/// Prometheus's own checker finds nothing to say about `/metrics` after some traffic: every
/// series has its HELP and TYPE, and the names follow its conventions.
#[tokio::test]
#[ignore = "needs promtool (Debian's prometheus package); .ci/run installs it and runs it"]
async fn promtool_finds_nothing_wrong_with_the_metrics() {
    let w = World::start().await;
    let v = w.create(person("prom-1", "prom-1", "CL")).await;
    w.finish(&v, Outcome::Approved).await;
    w.wait_status(&v, ALPHA_KEY, "approved").await;
    let (status, _) = w.get("/v1/verifications/nope", "not-a-key").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let text = wait_for_series(&w, "kyc_verifications_finished_total{tenant=\"alpha\",provider=\"betrust-cl\",status=\"approved\"} 1").await;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("this test needs promtool (Debian's prometheus package; .ci/run installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}
