//! The create, webhook, reconcile and fallback paths, run for every provider instance of the test
//! policy (one per adapter kind): a provider added to the registry and the harness is held to the
//! same behaviour as the others.

use crate::harness::*;
use crate::path_of;
use kyc_sandbox::{Fault, FaultRule, Outcome};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn each_provider_creates_takes_its_webhooks_and_reads_identity_live() {
    let w = World::start().await;
    for instance in INSTANCES {
        let sim = w.sim(instance);
        let v = w
            .create(person_on(instance, &format!("each-{instance}"), "sub-each"))
            .await;
        assert_eq!(v["provider"], instance);
        assert_eq!(v["status"], "pending");
        let url = v["verification_url"].as_str().unwrap();
        assert!(url.starts_with(&sim.base_url()), "{instance}: {url}");
        assert_eq!(sim.created(), 1, "{instance}");

        w.finish(&v, Outcome::InProgress).await;
        w.wait_status(&v, ALPHA_KEY, "in_progress").await;
        w.finish(&v, Outcome::Approved).await;
        w.wait_status(&v, ALPHA_KEY, "approved").await;
        let (_, history) = w.get(&path_of(&v, "/history"), ALPHA_KEY).await;
        let steps: Vec<(Value, Value)> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["to"].clone(), c["source"].clone()))
            .collect();
        assert_eq!(
            steps,
            [
                (json!("pending"), json!("create")),
                (json!("in_progress"), json!("webhook")),
                (json!("approved"), json!("webhook")),
            ],
            "{instance}"
        );
        let (status, identity) = w.get(&path_of(&v, "/identity"), ALPHA_KEY).await;
        assert_eq!(status, StatusCode::OK, "{instance}: {identity}");
        assert!(identity["last_name"].is_string(), "{instance}: {identity}");
        // A late, out-of-order webhook moves nothing.
        w.finish(&v, Outcome::InProgress).await;
        let (_, stored) = w.get(&path_of(&v, ""), ALPHA_KEY).await;
        assert_eq!(stored["status"], "approved", "{instance}");
    }
}

#[tokio::test]
async fn the_reconciler_catches_up_on_each_provider_when_webhooks_are_lost() {
    let w = World::start_with(Options {
        reconcile_every: 1,
        ..Options::webhooks_lost()
    })
    .await;
    let mut made = Vec::new();
    for instance in INSTANCES {
        let v = w
            .create(person_on(instance, &format!("lost-{instance}"), "sub-lost"))
            .await;
        w.finish(&v, Outcome::Rejected).await;
        made.push(v);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for v in &made {
        loop {
            let (_, stored) = w.get(&path_of(v, ""), ALPHA_KEY).await;
            if stored["status"] == "rejected" {
                assert!(stored["reason"]["code"].is_string(), "{stored}");
                break;
            }
            assert!(Instant::now() < deadline, "still {stored}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Tenant beta's routing set, by a live edit, to `primary` falling back to `secondary`.
async fn route_beta(w: &World, primary: &str, secondary: &str, edits: &mut usize) {
    w.edit_policy(|p| {
        let start = p.find("[tenants.beta.routing]\n").unwrap();
        let end = start + p[start..].find("\n\n").unwrap();
        format!(
            "{}[tenants.beta.routing]\ndefault = \"{primary}\"\nfallback = [\"{secondary}\"]{}",
            &p[..start],
            &p[end..]
        )
    });
    *edits += 1;
    w.wait_log("policy reloaded", *edits, Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn each_provider_falls_back_when_unavailable_and_never_past_an_ambiguous_create() {
    let w = World::start_with(Options {
        timeout_ms: 1_000,
        ..Default::default()
    })
    .await;
    let pairs = [
        ("gu1", "didit"),
        ("didit", "betrust-cl"),
        ("betrust-cl", "gu1"),
    ];
    let mut edits = 0;
    for (primary, secondary) in pairs {
        route_beta(&w, primary, secondary, &mut edits).await;
        let (first, second) = (w.sim(primary), w.sim(secondary));
        let (made_first, made_second) = (first.created(), second.created());

        // Unavailable before doing anything: the fallback takes it.
        first.inject(FaultRule::once(Fault::Status(503)).on_path(first.create_call()));
        let body = person(&format!("fb-{primary}"), "sub-fb", "CL");
        let (status, _, v) = post_at(&w.http, &w.base, BETA_KEY, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{primary}: {v}");
        assert_eq!(v["provider"], secondary);
        assert_eq!(
            v["routing"],
            json!({"reason": "fallback", "tried": [primary]})
        );
        assert_eq!(second.created(), made_second + 1, "{secondary}");

        // The create reached the primary, which does it after the gateway gave up: no blind
        // fallback; the caller's retry finds the primary's verification.
        first.inject(
            FaultRule::once(Fault::LateWork(Duration::from_secs(2))).on_path(first.create_call()),
        );
        let body = person(&format!("amb-{primary}"), "sub-amb", "CL");
        let (status, retry_after, problem) = post_at(&w.http, &w.base, BETA_KEY, &body).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{primary}: {problem}"
        );
        assert_eq!(problem["code"], "provider_unavailable");
        assert!(retry_after.is_some());
        assert_eq!(
            second.created(),
            made_second + 1,
            "no blind fallback from {primary}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (v, _) =
            create_retrying(&w.http, &w.base, BETA_KEY, &body, Duration::from_secs(15)).await;
        assert_eq!(v["provider"], primary, "{v}");
        assert_eq!(first.created(), made_first + 1, "one object at {primary}");
        assert_eq!(
            v["provider_reference"].as_str(),
            first.last_created().as_deref()
        );
        assert_eq!(second.created(), made_second + 1);
    }
}

/// `kyc-gateway hooks` prints each instance's webhook URL for a provider's console: under
/// `--base`, or the policy's `public_url`, which it asks for when neither is there.
#[tokio::test]
async fn hooks_prints_each_instances_webhook_url() {
    let w = World::start().await;
    let config = w.policy_path().to_str().unwrap().to_string();
    let out = w.command(&["hooks", "--config", &config]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.public_url"), "{stderr}");
    let out = w.command(&["hooks", "--config", &config, "--base", "ftp://kyc.example"]);
    assert_eq!(out.status.code(), Some(2));

    let out = w.command(&[
        "hooks",
        "--config",
        &config,
        "--base",
        "https://kyc.example/",
    ]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = printed.lines().map(|l| l.split('\t').collect()).collect();
    let names: Vec<(&str, &str)> = lines.iter().map(|l| (l[0], l[1])).collect();
    assert_eq!(
        names,
        [
            ("betrust-cl", "betrust"),
            ("didit", "didit"),
            ("gu1", "gu1")
        ]
    );
    for line in &lines {
        let prefix = format!("https://kyc.example/hooks/{}/", line[0]);
        let token = line[2]
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{printed}"));
        assert_eq!(token.len(), 40, "{printed}");
    }
    // The printed URL is the one the gateway answers: a forged Didit webhook to it is refused by
    // its signature, not by its address.
    let didit = lines[1][2].replace("https://kyc.example", &w.base);
    let forged = w
        .http
        .post(&didit)
        .header("x-signature", "00")
        .body(r#"{"session_id":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","timestamp":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let wrong_token = format!("{}/hooks/didit/{}", w.base, "0".repeat(40));
    let unknown = w.http.post(&wrong_token).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// `explain` and `replay` take Didit as any instance: a rule sending Mexico there is explained,
/// and a draft sending Chile there moves what was on BeTrust.
#[tokio::test]
async fn explain_and_replay_route_to_didit_as_to_any_instance() {
    let w = World::start().await;
    for n in 0..2 {
        w.create(person(&format!("cl-{n}"), &format!("sub-cl-{n}"), "CL"))
            .await;
    }
    let routing = "rules = [{ country = \"AR\", provider = \"gu1\" }]";
    w.edit_policy(|p| {
        p.replacen(
            routing,
            "rules = [{ country = \"AR\", provider = \"gu1\" }, { country = \"MX\", provider = \"didit\" }]",
            1,
        )
    });
    let (provider, reason, _) = crate::policy_view::explained(&w, "MX", "sub-mx");
    assert_eq!((provider.as_str(), reason.as_str()), ("didit", "rule"));

    let dir = tempfile::tempdir().unwrap();
    let draft = dir.path().join("draft.toml");
    let text = std::fs::read_to_string(w.policy_path()).unwrap();
    std::fs::write(
        &draft,
        text.replacen("default = \"betrust-cl\"", "default = \"didit\"", 1),
    )
    .unwrap();
    let out = w.command(&[
        "replay",
        "--config",
        draft.to_str().unwrap(),
        "--tenant",
        "alpha",
        "--since",
        "7d",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["betrust-cl", "didit", "CL", "2"]),
        "{table}"
    );
}
