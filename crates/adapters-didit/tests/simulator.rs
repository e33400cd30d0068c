//! The Didit adapter against the Didit simulator over real HTTP: create, read, identity, manual
//! decisions, cancel, webhooks, every status of the table, the three classes of a failed create,
//! redirects, and the late answer and killed process that must leave one session.

use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
use chrono::NaiveDate;
use kyc_adapters_didit::{DiditConfig, DiditProvider};
use kyc_core::outbound::{Allowlist, Outbound};
use kyc_core::{
    CheckOutcome, Checks, CreateFailure, CreateRequest, Found, IncomingWebhook, ManualOutcome,
    Personal, Provider, ProviderError, Status, Subject, WebhookError,
};
use kyc_sandbox::{DiditSim, DiditSimConfig, Fault, FaultRule, Outcome};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

const INSTANCE: &str = "didit-test";

async fn sim() -> DiditSim {
    DiditSim::start(DiditSimConfig::default())
        .await
        .expect("sim starts")
}

fn config(sim: &DiditSim) -> DiditConfig {
    let defaults = DiditSimConfig::default();
    let mut config = DiditConfig::new(
        sim.base_url(),
        SecretString::from(defaults.api_key),
        defaults.workflow_id,
    );
    config.webhook_secret = Some(SecretString::from(defaults.webhook_secret));
    config
}

/// The outbound rule of a gateway whose policy exempts the simulator's loopback address.
fn loopback() -> Outbound {
    Outbound::new(Allowlist::new(&["127.0.0.1".into()]))
}

fn provider_with(sim: &DiditSim, edit: impl FnOnce(&mut DiditConfig)) -> DiditProvider {
    let mut config = config(sim);
    edit(&mut config);
    DiditProvider::new(INSTANCE, config, &loopback()).expect("provider builds")
}

fn provider(sim: &DiditSim) -> DiditProvider {
    provider_with(sim, |_| {})
}

fn subject() -> Subject {
    Subject {
        id: "cus_1".to_string(),
        country: "AR".to_string(),
        national_id: Some(Personal::new("20123456".to_string())),
        first_name: Some(Personal::new("Juana".to_string())),
        last_name: Some(Personal::new("Pérez".to_string())),
        date_of_birth: NaiveDate::from_ymd_opt(1991, 3, 14).map(Personal::new),
        email: Some(Personal::new("juana@example.com".to_string())),
        phone: None,
        provider_refs: BTreeMap::new(),
    }
}

fn request(key: &str) -> CreateRequest {
    CreateRequest {
        idempotency_key: key.to_string(),
        tenant: "acme".to_string(),
        reference: format!("ref-{key}"),
        subject: subject(),
        checks: Checks::default(),
        redirect_url: Some("https://app.example/done".to_string()),
        webhook_url: Some("http://127.0.0.1:9/hooks/didit/token".to_string()),
        subject_ref: None,
        subject_partial: false,
    }
}

#[tokio::test]
async fn create_sends_the_key_and_expected_details_and_answers_the_link() {
    let sim = sim().await;
    let didit = provider_with(&sim, |c| c.language = Some("es".into()));
    let created = didit.create(&request("kyc_k1")).await.unwrap();
    assert_eq!(created.status, Status::Pending);
    let url = created.verification_url.clone().unwrap();
    assert!(url.starts_with(&sim.base_url()), "{url}");
    let sent = &sim.create_bodies()[0];
    assert_eq!(sent["workflow_id"], DiditSimConfig::default().workflow_id);
    assert_eq!(sent["vendor_data"], "kyc_k1");
    assert_eq!(sent["callback"], "https://app.example/done");
    assert_eq!(sent["language"], "es");
    assert_eq!(sent["metadata"]["tenant"], "acme");
    assert_eq!(sent["metadata"]["reference"], "ref-kyc_k1");
    assert_eq!(sent["expected_details"]["first_name"], "Juana");
    assert_eq!(sent["expected_details"]["date_of_birth"], "1991-03-14");
    assert_eq!(sent["expected_details"]["id_country"], "ARG");
    assert_eq!(
        sent["expected_details"]["identification_number"],
        "20123456"
    );
    assert_eq!(sent["contact_details"]["email"], "juana@example.com");
    assert_eq!(sent["contact_details"]["send_notification_emails"], false);
    // Didit's sessions lapse with their workflow: the reconciler ends what never finishes.
    assert_eq!(
        didit.session_lifetime(),
        Some(Duration::from_secs(168 * 3600))
    );
}

#[tokio::test]
async fn the_decision_fills_as_checks_run_and_identity_reads_the_document() {
    let sim = sim().await;
    let didit = provider(&sim);
    let created = didit.create(&request("kyc_k1")).await.unwrap();
    let id = created.provider_reference;
    let read = didit.get(&id).await.unwrap();
    assert_eq!(read.status, Status::Pending);
    assert_eq!(read.decision, None, "no check has run");
    assert_eq!(didit.identity(&id).await.unwrap(), Default::default());

    sim.finish(&id, Outcome::InProgress).await.unwrap();
    let read = didit.refresh(&id).await.unwrap();
    assert_eq!(read.status, Status::InProgress);
    assert_eq!(read.decision.unwrap().face_match, CheckOutcome::Unknown);

    sim.finish(&id, Outcome::Approved).await.unwrap();
    let read = didit.get(&id).await.unwrap();
    assert_eq!(read.status, Status::Approved);
    assert_eq!(read.reason, None);
    let decision = read.decision.unwrap();
    assert_eq!(decision.document, CheckOutcome::Pass);
    assert_eq!(decision.liveness, CheckOutcome::Pass);
    assert_eq!(decision.face_match, CheckOutcome::Pass);
    assert_eq!(decision.scores.face_match, Some(96.15));
    let identity = didit.identity(&id).await.unwrap();
    assert_eq!(identity.first_name.unwrap().into_inner(), "Juana");
    assert_eq!(identity.last_name.unwrap().into_inner(), "Pérez");
    assert_eq!(
        identity.date_of_birth.unwrap().into_inner(),
        NaiveDate::from_ymd_opt(1991, 3, 14).unwrap()
    );
    assert_eq!(identity.document_number.unwrap().into_inner(), "20123456");
    assert_eq!(identity.document_type.as_deref(), Some("Identity Card"));
}

#[tokio::test]
async fn each_didit_status_maps_as_the_table_says() {
    let sim = sim().await;
    let didit = provider(&sim);
    let table = [
        ("Not Started", Status::Pending, None),
        ("In Progress", Status::InProgress, None),
        ("Awaiting User", Status::InProgress, None),
        ("Resubmitted", Status::InProgress, None),
        ("In Review", Status::InReview, None),
        ("Approved", Status::Approved, None),
        ("Declined", Status::Rejected, Some("verification_failed")),
        ("Expired", Status::Expired, Some("link_expired")),
        ("Kyc Expired", Status::Expired, Some("approval_expired")),
        ("Abandoned", Status::Abandoned, Some("abandoned")),
    ];
    for (i, (didit_status, status, reason)) in table.into_iter().enumerate() {
        let id = didit
            .create(&request(&format!("kyc_status_{i}")))
            .await
            .unwrap()
            .provider_reference;
        if didit_status != "Not Started" {
            sim.set_status(&id, didit_status).await.unwrap();
        }
        let read = didit.get(&id).await.unwrap();
        assert_eq!(read.status, status, "{didit_status}");
        assert_eq!(
            read.reason.as_ref().map(|r| r.code.as_str()),
            reason,
            "{didit_status}"
        );
        if let Some(reason) = &read.reason {
            let code = reason.provider_code.as_deref().unwrap();
            assert!(code.starts_with(didit_status), "{code}");
        }
    }
    // A decline names the failed check and Didit's risk code.
    let id = didit
        .create(&request("kyc_declined"))
        .await
        .unwrap()
        .provider_reference;
    sim.finish(&id, Outcome::Rejected).await.unwrap();
    let read = didit.get(&id).await.unwrap();
    let reason = read.reason.unwrap();
    assert_eq!(
        reason.provider_code.as_deref(),
        Some("Declined/LOW_FACE_MATCH_SIMILARITY")
    );
    assert!(reason.message.unwrap().contains("face match"));
    assert_eq!(read.decision.unwrap().face_match, CheckOutcome::Fail);
}

#[tokio::test]
async fn a_session_in_review_takes_a_manual_decision() {
    let sim = sim().await;
    let didit = provider(&sim);
    assert!(didit.takes_manual_decisions());
    let approve = didit
        .create(&request("kyc_a"))
        .await
        .unwrap()
        .provider_reference;
    let reject = didit
        .create(&request("kyc_r"))
        .await
        .unwrap()
        .provider_reference;
    // Not in review yet: Didit refuses, and says so in our words.
    let refused = didit
        .decide(
            &approve,
            ManualOutcome::Approve,
            "documents checked by hand",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ProviderError::Rejected { code, .. } if code == "invalid_status_transition"),
        "{refused:?}"
    );
    for id in [&approve, &reject] {
        sim.finish(id, Outcome::InReview).await.unwrap();
        assert_eq!(didit.get(id).await.unwrap().status, Status::InReview);
    }
    let approved = didit
        .decide(
            &approve,
            ManualOutcome::Approve,
            "documents checked by hand",
        )
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    let rejected = didit
        .decide(
            &reject,
            ManualOutcome::Reject,
            "the selfie is of another person",
        )
        .await
        .unwrap();
    assert_eq!(rejected.status, Status::Rejected);
}

#[tokio::test]
async fn cancel_is_refused_unless_the_instance_deletes() {
    let sim = sim().await;
    let didit = provider(&sim);
    let id = didit
        .create(&request("kyc_c"))
        .await
        .unwrap()
        .provider_reference;
    assert_eq!(
        didit.cancel(&id).await.unwrap_err(),
        ProviderError::Unsupported("cancel")
    );
    assert_eq!(didit.get(&id).await.unwrap().status, Status::Pending);

    let deleting = provider_with(&sim, |c| c.cancel_deletes = true);
    let cancelled = deleting.cancel(&id).await.unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert_eq!(sim.session(&id), None, "the session is gone at Didit");
    assert_eq!(
        deleting.get(&id).await.unwrap_err(),
        ProviderError::NotFound
    );
    assert_eq!(
        deleting.cancel(&id).await.unwrap_err(),
        ProviderError::NotFound
    );
}

#[tokio::test]
async fn unknown_or_malformed_session_ids_are_not_found() {
    let sim = sim().await;
    let didit = provider(&sim);
    for id in [
        "00000000-0000-4000-8000-000000000000",
        "../../v3/sessions",
        "",
        "not-a-uuid",
    ] {
        assert_eq!(
            didit.get(id).await.unwrap_err(),
            ProviderError::NotFound,
            "{id}"
        );
    }
    assert_eq!(
        sim.requests_seen("/v3/session/"),
        1,
        "only the well-formed id reached Didit"
    );
}

/// A receiver for the application's webhook destination.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn the_simulators_webhooks_verify_and_tampered_ones_do_not() {
    let sim = sim().await;
    let (url, mut rx) = receiver().await;
    sim.set_webhook_url(Some(url));
    let didit = provider(&sim);
    let id = didit
        .create(&request("kyc_w"))
        .await
        .unwrap()
        .provider_reference;
    sim.finish(&id, Outcome::Approved).await.unwrap();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("webhook arrives")
        .unwrap();
    let headers = pairs(&headers);
    let webhook = |headers: &[(String, String)], body: &[u8]| {
        didit.verify_webhook(IncomingWebhook { headers, body })
    };
    assert_eq!(webhook(&headers, &body).unwrap(), id);

    let text = String::from_utf8(body.to_vec()).unwrap();
    let tampered = text.replace("\"Approved\"", "\"Declined\"");
    assert_ne!(tampered, text);
    assert_eq!(
        webhook(&headers, tampered.as_bytes()).unwrap_err(),
        WebhookError::BadSignature
    );
    // X-Signature-Simple signs four fields, not the body: it is not taken in place of
    // X-Signature.
    let simple = headers
        .iter()
        .find(|(n, _)| n == "x-signature-simple")
        .unwrap()
        .1
        .clone();
    let swapped: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n != "x-signature")
        .cloned()
        .chain([("x-signature".to_string(), simple)])
        .collect();
    assert_eq!(
        webhook(&swapped, &body).unwrap_err(),
        WebhookError::BadSignature
    );
    let unsigned: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n != "x-signature")
        .cloned()
        .collect();
    assert_eq!(
        webhook(&unsigned, &body).unwrap_err(),
        WebhookError::BadSignature
    );
    // Without a secret configured, nothing is accepted.
    let secretless = provider_with(&sim, |c| c.webhook_secret = None);
    assert_eq!(
        secretless
            .verify_webhook(IncomingWebhook {
                headers: &headers,
                body: &body
            })
            .unwrap_err(),
        WebhookError::BadSignature
    );
}

#[tokio::test]
async fn a_create_failure_is_classed_by_what_it_may_have_left() {
    let sim = sim().await;
    let didit = provider_with(&sim, |c| c.timeout_ms = 500);
    // Not sent, or refused before any work: another instance may take it.
    for status in [429, 503] {
        sim.inject(FaultRule::once(Fault::Status(status)).on_path("POST /v3/session/"));
        let error = didit.create(&request("kyc_n")).await.unwrap_err();
        assert_eq!(
            error.on_create(),
            CreateFailure::NotStarted,
            "{status}: {error:?}"
        );
    }
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let unreachable = DiditProvider::new(
        INSTANCE,
        DiditConfig::new(
            closed,
            SecretString::from("k".to_string()),
            DiditSimConfig::default().workflow_id,
        ),
        &loopback(),
    )
    .unwrap();
    let error = unreachable.create(&request("kyc_n")).await.unwrap_err();
    assert_eq!(error.on_create(), CreateFailure::NotStarted, "{error:?}");
    assert_eq!(sim.sessions_created(), 0);

    // Refused: nothing started, and no other instance is tried.
    let wrong_key = provider_with(&sim, |c| c.api_key = SecretString::from("nope".to_string()));
    let error = wrong_key.create(&request("kyc_r")).await.unwrap_err();
    assert_eq!(error, ProviderError::Unauthorized);
    assert_eq!(error.on_create(), CreateFailure::Refused);
    let wrong_workflow = provider_with(&sim, |c| {
        c.workflow_id = "11111111-2222-4333-8444-555555555555".into()
    });
    let error = wrong_workflow.create(&request("kyc_r")).await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Rejected { code, message } if code == "workflow_not_found" && message.contains("workflow_id")),
        "{error:?}"
    );
    assert_eq!(error.on_create(), CreateFailure::Refused);
    assert_eq!(sim.sessions_created(), 0);

    // Ambiguous: the session may exist.
    for fault in [
        Fault::StatusAfterWork(500),
        Fault::Cut,
        Fault::Malformed,
        Fault::LateAnswer(Duration::from_secs(2)),
    ] {
        sim.inject(FaultRule::once(fault.clone()).on_path("POST /v3/session/"));
        let error = didit.create(&request("kyc_a")).await.unwrap_err();
        assert_eq!(
            error.on_create(),
            CreateFailure::Ambiguous,
            "{fault:?}: {error:?}"
        );
    }
    // Each of them did the work, on one session: the key found it again each time.
    assert_eq!(sim.sessions_created(), 1);
}

#[tokio::test]
async fn a_late_answer_is_found_by_its_key_and_a_retry_adopts_the_same_session() {
    let sim = sim().await;
    let didit = provider_with(&sim, |c| c.timeout_ms = 300);
    let request = request("kyc_late");
    assert_eq!(didit.find_created(&request).await.unwrap(), Found::Absent);
    sim.inject(
        FaultRule::once(Fault::LateAnswer(Duration::from_secs(1))).on_path("POST /v3/session/"),
    );
    let error = didit.create(&request).await.unwrap_err();
    assert_eq!(error.on_create(), CreateFailure::Ambiguous);
    let Found::Created(found) = didit.find_created(&request).await.unwrap() else {
        panic!("the session the late answer made is found");
    };
    let again = didit.create(&request).await.unwrap();
    assert_eq!(again.provider_reference, found.provider_reference);
    assert_eq!(sim.sessions_created(), 1);
    // Another request's key never finds it.
    assert_eq!(
        didit
            .find_created(&self::request("kyc_other"))
            .await
            .unwrap(),
        Found::Absent
    );
}

#[tokio::test]
async fn a_process_killed_mid_create_leaves_one_session_that_the_next_one_adopts() {
    let sim = sim().await;
    // The first process sends the create and dies before the answer: its future is dropped
    // while Didit still works on it.
    sim.inject(
        FaultRule::once(Fault::LateWork(Duration::from_millis(600))).on_path("POST /v3/session/"),
    );
    let first = provider(&sim);
    let request = request("kyc_killed");
    let killed = tokio::time::timeout(Duration::from_millis(150), first.create(&request)).await;
    assert!(killed.is_err(), "the first process never learnt the answer");
    // The next process looks before Didit has done the work: absent for now...
    let second = provider(&sim);
    assert_eq!(second.find_created(&request).await.unwrap(), Found::Absent);
    // ...and once it is done, the lookup and a retried create both land on the one session.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(sim.sessions_created(), 1);
    let Found::Created(found) = second.find_created(&request).await.unwrap() else {
        panic!("the killed process's session is found");
    };
    let retried = second.create(&request).await.unwrap();
    assert_eq!(retried.provider_reference, found.provider_reference);
    assert_eq!(sim.sessions_created(), 1);
}

#[tokio::test]
async fn a_finished_session_under_the_key_is_not_reused_but_still_found() {
    let sim = sim().await;
    let didit = provider(&sim);
    let request = request("kyc_done");
    let first = didit.create(&request).await.unwrap();
    sim.finish(&first.provider_reference, Outcome::Approved)
        .await
        .unwrap();
    // The gateway never sends a create again once one is recorded; the lookup it does use finds
    // the approved session.
    let Found::Created(found) = didit.find_created(&request).await.unwrap() else {
        panic!("found");
    };
    assert_eq!(found.provider_reference, first.provider_reference);
    assert_eq!(found.status, Status::Approved);
    // Which is why a create is not sent again to resolve one: Didit would start a second session.
    assert!(!didit.create_is_idempotent());
    let second = didit.create(&request).await.unwrap();
    assert_ne!(second.provider_reference, first.provider_reference);
    assert_eq!(sim.sessions_created(), 2);
}

#[tokio::test]
async fn reads_fail_in_the_class_their_answer_says() {
    let sim = sim().await;
    let didit = provider(&sim);
    let id = didit
        .create(&request("kyc_r"))
        .await
        .unwrap()
        .provider_reference;
    for status in [503, 500, 429] {
        sim.inject(FaultRule::once(Fault::Status(status)));
        let error = didit.get(&id).await.unwrap_err();
        assert!(error.is_unavailable(), "{status}: {error:?}");
    }
    sim.inject(FaultRule::once(Fault::Malformed));
    assert!(matches!(
        didit.get(&id).await.unwrap_err(),
        ProviderError::BadResponse(_)
    ));
    sim.inject(FaultRule::once(Fault::Status(401)));
    assert_eq!(
        didit.get(&id).await.unwrap_err(),
        ProviderError::Unauthorized
    );
    assert_eq!(didit.get(&id).await.unwrap().status, Status::Pending);
}

/// A Didit that answers 307 to somewhere else: the person's data is not sent there.
#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let elsewhere = Router::new().fallback(move |body: Bytes| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(body);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/stolen", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, elsewhere).await });
    let redirecting = Router::new().fallback(move || {
        let target = target.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, target)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirecting).await });
    let didit = DiditProvider::new(
        INSTANCE,
        DiditConfig::new(
            base,
            SecretString::from("k".to_string()),
            DiditSimConfig::default().workflow_id,
        ),
        &loopback(),
    )
    .unwrap();
    let error = didit.create(&request("kyc_redirect")).await.unwrap_err();
    assert!(matches!(error, ProviderError::BadResponse(_)), "{error:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rx.try_recv().is_err(),
        "the body was sent to the redirect target"
    );
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_by_name() {
    let sim = sim().await;
    type Edit = fn(&mut DiditConfig);
    let cases: [(&str, Edit); 5] = [
        ("workflow_id", |c| c.workflow_id = "my-workflow".into()),
        ("timeout_ms", |c| c.timeout_ms = 0),
        ("session_lifetime_hours", |c| {
            c.session_lifetime_hours = 100_000
        }),
        ("language", |c| c.language = Some("es\"; x".into())),
        ("base_url", |c| c.base_url = "ftp://example.com".into()),
    ];
    for (key, edit) in cases {
        let mut config = config(&sim);
        edit(&mut config);
        let error = DiditProvider::new(INSTANCE, config, &loopback()).unwrap_err();
        assert!(
            matches!(&error, ProviderError::Config(text) if text.contains(key)),
            "{key}: {error:?}"
        );
    }
}
