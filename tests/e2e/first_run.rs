//! The first run as a newcomer meets it: `kyc-gateway sandbox` with nothing configured, the
//! README's tour pasted into a shell, a restart, and a port that is already taken.

use crate::harness::{Sandbox, binary};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

const KEY: &str = kyc_gateway::devtools::sandbox::DEMO_API_KEY;

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Nothing to set up: a verification on each provider, finished as a person would (the page's
/// Approve button for BeTrust, one `POST` to the link for gu1 and Didit), is approved in the
/// gateway (Didit's by its signed webhook to the destination the sandbox set). A
/// restart starts from an empty store, and the old one is gone.
#[tokio::test]
async fn the_sandbox_first_run_works_with_no_setup_and_restarts_clean() {
    let sandbox = Sandbox::start();
    let base = sandbox.base.clone();
    assert!(
        sandbox.banner.contains(&format!("{base}/docs")),
        "{}",
        sandbox.banner
    );
    assert!(sandbox.banner.contains(KEY), "{}", sandbox.banner);
    let store_dir = sandbox
        .banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("Store:"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|db| std::path::PathBuf::from(db).parent().unwrap().to_path_buf())
        .expect("the banner names the store");
    assert!(store_dir.exists());

    let http = reqwest::Client::new();
    for provider in ["betrust-sandbox", "gu1-sandbox", "didit-sandbox"] {
        let created: Value = http
            .post(format!("{base}/v1/verifications"))
            .bearer_auth(KEY)
            .json(&json!({
                "reference": format!("first-run-{provider}"),
                "subject": {"id": "demo-person", "country": "CL", "national_id": "11111111-1",
                            "first_name": "Demo", "last_name": "Person", "date_of_birth": "1990-01-31"},
                "provider": provider
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(created["provider"], provider, "{created}");
        let link = created["verification_url"].as_str().unwrap();
        let finished = if provider == "betrust-sandbox" {
            // The page a person opens, and its Approve button.
            let page = http.get(link).send().await.unwrap().text().await.unwrap();
            let action = page
                .split("action=\"")
                .nth(1)
                .map(|rest| rest.split('"').next().unwrap())
                .expect("the page has a finish form");
            let origin = &link[..link.find("/validate/").unwrap()];
            http.post(format!("{origin}{action}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("outcome=approved")
                .send()
                .await
                .unwrap()
        } else {
            // One request to the link itself, as the README shows.
            http.post(link)
                .json(&json!({"outcome": "approved"}))
                .send()
                .await
                .unwrap()
        };
        assert!(finished.status().is_success(), "{provider}: {finished:?}");
        let id = created["id"].as_str().unwrap();
        let got = get(&http, format!("{base}/v1/verifications/{id}")).await;
        assert_eq!(got["status"], "approved", "{provider}: {got}");
    }
    let page = get(&http, format!("{base}/v1/verifications")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");

    let (status, dir) = sandbox.stop();
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    assert!(
        !store_dir.exists(),
        "the run's store is removed on exit: {store_dir:?}"
    );
    let again = Sandbox::start_in(dir);
    let page = get(&http, format!("{}/v1/verifications", again.base)).await;
    assert_eq!(
        page["items"],
        json!([]),
        "a restarted sandbox lists nothing from the last run"
    );
}

/// The README's curl tour, pasted into bash as it stands (with the sandbox's address in `GW`),
/// does what the README says it does.
#[tokio::test]
#[ignore = "needs curl and jq; .ci/run installs them and runs it"]
async fn the_readme_tour_works_as_written() {
    for tool in ["curl", "jq", "bash"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "this test needs {tool} on the PATH");
    }
    let readme = include_str!("../../README.md");
    let tour = readme
        .split("## Five-minute tour")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README has a tour in a sh block");
    let default_gw = "GW=http://127.0.0.1:8080\n";
    assert_eq!(tour.matches(default_gw).count(), 1, "the tour sets GW once");
    let sandbox = Sandbox::start();
    let script = tour.replace(default_gw, &format!("GW={}\n", sandbox.base));
    let run = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the tour failed:\n{stdout}\n{stderr}\n{}",
        sandbox.log()
    );
    // Step 1 prints the new verification; 3 and 6 print its status; 4 the identity; 5 the
    // standing; 7 the history; 8 the event as received and as delivered.
    let created: Value =
        serde_json::from_str(&stdout[..stdout.find("}\n").expect("step 1 printed an object") + 1])
            .unwrap();
    assert_eq!(created["status"], "pending", "{stdout}");
    assert_eq!(created["provider"], "betrust-sandbox", "{stdout}");
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines.iter().filter(|l| **l == "approved").count(),
        2,
        "steps 3 and 6 print approved:\n{stdout}"
    );
    assert!(
        stdout.contains("\"date_of_birth\": \"1990-05-20\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"verified\": true"), "{stdout}");
    assert!(
        lines.contains(&"1"),
        "step 6 lists one verification:\n{stdout}"
    );
    assert!(
        lines.contains(&r#"[null,"pending","create"]"#)
            && lines.contains(&r#"["pending","approved","webhook"]"#),
        "step 7 shows the history:\n{stdout}"
    );
    assert!(
        lines.contains(
            &r#"{"type":"verification.updated","status":"approved","signature_verified":true}"#
        ),
        "step 8 shows the signed event:\n{stdout}"
    );
    assert!(
        lines.contains(&r#"{"state":"delivered","attempts":[204]}"#),
        "and its delivery:\n{stdout}"
    );
}

/// A port that is taken gets a message naming `--listen` (the sandbox and `serve` bind alike).
#[test]
fn a_busy_port_names_the_listen_option() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["sandbox", "--listen", &address])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{address} is already in use")),
        "{stderr}"
    );
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[tokio::test]
async fn the_sandbox_runs_a_product_managers_own_policy_against_the_simulators() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("my-policy.toml");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/policy.example.toml"
        ),
        &mine,
    )
    .unwrap();
    // No ${VAR} is set: the sandbox needs none of the real secrets.
    let sandbox = Sandbox::start_with(dir, &["--config", mine.to_str().unwrap()]);
    assert!(
        sandbox
            .banner
            .contains("payments: kyc_sandbox_payments_key"),
        "{}",
        sandbox.banner
    );
    let http = reqwest::Client::new();
    let create = |reference: &str, country: &str| {
        http.post(format!("{}/v1/verifications", sandbox.base))
            .bearer_auth("kyc_sandbox_payments_key")
            .json(&json!({"reference": reference, "subject": {"id": format!("s-{reference}"), "country": country}}))
            .send()
    };
    // The policy's own routing: AR by its country rule, CL by its experiment, MX by its split.
    let ar: Value = create("pm-ar", "AR").await.unwrap().json().await.unwrap();
    assert_eq!(ar["provider"], "gu1", "{ar}");
    assert_eq!(ar["routing"]["reason"], "rule");
    let cl: Value = create("pm-cl", "CL").await.unwrap().json().await.unwrap();
    assert_eq!(cl["routing"]["reason"], "experiment", "{cl}");
    assert_eq!(cl["routing"]["experiment"], "gu1-in-cl", "{cl}");
    let mx: Value = create("pm-mx", "MX").await.unwrap().json().await.unwrap();
    assert_eq!(mx["routing"]["reason"], "split", "{mx}");
    // Its limits too, and its instance names.
    let policy: Value = http
        .get(format!("{}/v1/policy", sandbox.base))
        .bearer_auth("kyc_sandbox_payments_key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(policy["rate_limit"]["burst"], 100, "{policy}");
    assert_eq!(
        policy["providers"]["betrust-cl"]["rate_limit"]["per_second"],
        20
    );
    assert_eq!(
        policy["providers"]["gu1"]["price_per_verification"],
        json!({"amount": 1.2, "currency": "USD"})
    );
    let (status, _) = sandbox.stop();
    assert!(status.success());
}

#[tokio::test]
async fn the_scenario_starts_with_providers_that_differ_and_an_experiment_with_a_verdict() {
    let sandbox = Sandbox::start_with(tempfile::tempdir().unwrap(), &["--scenario"]);
    assert!(sandbox.banner.contains("History:"), "{}", sandbox.banner);
    let dashboard = format!("Dashboard:    {}/dashboard", sandbox.base);
    assert!(sandbox.banner.contains(&dashboard), "{}", sandbox.banner);
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{}{path}", sandbox.base))
            .bearer_auth("kyc_sandbox_demo_key")
            .send()
    };
    let stats: Value = get("/v1/stats").await.unwrap().json().await.unwrap();
    let group = |name: &str| {
        stats["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["provider"] == name)
            .unwrap_or_else(|| panic!("{stats}"))
            .clone()
    };
    let (betrust, gu1) = (group("betrust-sandbox"), group("gu1-sandbox"));
    let didit = group("didit-sandbox");
    let started: u64 = [&betrust, &gu1, &didit]
        .iter()
        .map(|g| g["started"].as_u64().unwrap())
        .sum();
    assert_eq!(started, 900, "{stats}");
    // Mexico (two subjects in ten) goes to Didit, or on its errors to the fallback.
    let mexico = didit["started"].as_u64().unwrap() + didit["provider_errors"].as_u64().unwrap();
    assert_eq!(mexico, 180, "{didit}");
    let figure = |g: &Value, path: &[&str]| {
        path.iter()
            .fold(g, |v, k| &v[*k])
            .as_f64()
            .unwrap_or_else(|| panic!("{path:?} in {g}"))
    };
    // The two providers differ: gu1 approves more, decides sooner, fails more often, costs less.
    assert!(figure(&gu1, &["approval_rate"]) > figure(&betrust, &["approval_rate"]) + 0.08);
    let p50 = ["time_to_decision_s", "p50"];
    assert!(figure(&gu1, &p50) * 3.0 < figure(&betrust, &p50), "{stats}");
    assert!(
        gu1["provider_errors"].as_u64().unwrap() > betrust["provider_errors"].as_u64().unwrap()
    );
    assert!(betrust["fallbacks"].as_u64().unwrap() > 0, "{betrust}");
    let per_approved = ["cost", "per_approved"];
    assert!(
        figure(&gu1, &per_approved) < figure(&betrust, &per_approved),
        "{stats}"
    );
    // Spread over the past two weeks: yesterday alone has some.
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let day: Value = get(&format!(
        "/v1/stats?from={yesterday}T00:00:00Z&to={yesterday}T00:00:00Z"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let on_day: u64 = day["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["started"].as_u64().unwrap())
        .sum();
    assert!((30..100).contains(&on_day), "{day}");

    // The experiment in Chile already has its verdict.
    let experiment: Value = get("/v1/experiments/gu1-in-cl")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(experiment["verdict"], "challenger_better", "{experiment}");
    assert_eq!(experiment["stopped"], false, "{experiment}");
    // The last two of the fourteen days are younger than the 48-hour horizon: not counted yet.
    for arm in experiment["arms"].as_array().unwrap() {
        let (started, maturing) = (
            arm["started"].as_u64().unwrap(),
            arm["maturing"].as_u64().unwrap(),
        );
        assert!(maturing > 0 && maturing * 4 < started, "{experiment}");
        assert!(
            arm["sample"].as_u64().unwrap() <= started - maturing,
            "{experiment}"
        );
    }

    // A replay of the history gives each destination's rate per country with the observations
    // and the 95 % interval behind it, from the same counts as the stats.
    let preview: Value = http
        .post(format!("{}/v1/policy/preview", sandbox.base))
        .bearer_auth("kyc_sandbox_demo_key")
        .json(&json!({"routing": {"default": "gu1-sandbox"}, "since_days": 30}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stats: Value = get("/v1/stats?group_by=provider,country")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let find = |list: &Value, key: &str, value: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|item| item[key] == value)
            .unwrap_or_else(|| panic!("{key} {value} in {list}"))
            .clone()
    };
    let gu1 = find(&preview["destinations"], "provider", "gu1-sandbox");
    let chile = find(&gu1["countries"], "country", "CL");
    let counted = stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["provider"] == "gu1-sandbox" && g["country"] == "CL")
        .unwrap_or_else(|| panic!("{stats}"))["finished"]
        .clone();
    let approved = counted["approved"].as_f64().unwrap();
    // Decided: approved or rejected (expired and abandoned sessions were never decided).
    let decided = approved + counted["rejected"].as_f64().unwrap();
    assert!(decided >= 30.0, "{counted}");
    assert_eq!(chile["observations"].as_f64().unwrap(), decided, "{chile}");
    assert_eq!(chile["too_few_observations"], false, "{chile}");
    let rate = approved / decided;
    assert!(
        (chile["approval_rate"].as_f64().unwrap() - rate).abs() < 1e-12,
        "{chile}"
    );
    // Wilson's score interval, written out here apart from the gateway's code.
    let (z, n) = (1.959_963_984_540_054_f64, decided);
    let centre = (rate + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (rate * (1.0 - rate) / n + z * z / (4.0 * n * n)).sqrt();
    for (bound, expected) in [(0, centre - half), (1, centre + half)] {
        let got = chile["approval_ci"][bound].as_f64().unwrap();
        assert!((got - expected).abs() < 1e-9, "{chile}");
    }

    // New verifications end by themselves: an Argentine one at gu1 within seconds.
    let created: Value = http
        .post(format!("{}/v1/verifications", sandbox.base))
        .bearer_auth("kyc_sandbox_demo_key")
        .json(
            &json!({"reference": "scenario-ar", "subject": {"id": "scenario-ar", "country": "AR"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("/v1/verifications/{}", created["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now: Value = get(&path).await.unwrap().json().await.unwrap();
        if ["approved", "rejected"].contains(&now["status"].as_str().unwrap_or_default()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ended: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = sandbox.stop();
    assert!(status.success());
}
