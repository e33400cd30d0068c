//! The gu1 adapter against the gu1 simulator over real HTTP.

use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
use base64::Engine as _;
use chrono::NaiveDate;
use hmac::{Hmac, KeyInit, Mac};
use kyc_adapters_gu1::{Gu1Config, Gu1Provider};
use kyc_core::outbound::{Allowlist, Outbound};
use kyc_core::{
    CheckOutcome, Checks, CreateFailure, CreateRequest, Found, IncomingWebhook, ManualOutcome,
    Personal, Provider, ProviderError, Status, Subject, WebhookError,
};
use kyc_sandbox::{Fault, FaultRule, Gu1Sim, Gu1SimConfig, Outcome};
use secrecy::SecretString;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const INSTANCE: &str = "gu1-test";

async fn sim() -> Gu1Sim {
    Gu1Sim::start(Gu1SimConfig::default())
        .await
        .expect("sim starts")
}

fn config(sim: &Gu1Sim) -> Gu1Config {
    let defaults = Gu1SimConfig::default();
    let mut config = Gu1Config::new(sim.base_url(), SecretString::from(defaults.api_key));
    config.webhook_secret = Some(SecretString::from(defaults.webhook_secret));
    config.organization_id = Some(defaults.organization_id);
    config
}

/// The outbound rule of a gateway whose policy exempts the simulator's loopback address.
fn loopback() -> Outbound {
    Outbound::new(Allowlist::new(&["127.0.0.1".into()]))
}

fn provider(sim: &Gu1Sim) -> Gu1Provider {
    Gu1Provider::new(INSTANCE, config(sim), &loopback()).expect("provider builds")
}

fn subject(id: &str, national_id: Option<&str>) -> Subject {
    Subject {
        id: id.to_string(),
        country: "AR".to_string(),
        national_id: national_id.map(|n| Personal::new(n.to_string())),
        first_name: Some(Personal::new("Juan".to_string())),
        last_name: Some(Personal::new("Pérez".to_string())),
        date_of_birth: NaiveDate::from_ymd_opt(1990, 5, 20).map(Personal::new),
        email: None,
        phone: None,
        provider_refs: BTreeMap::new(),
    }
}

fn request(key: &str, subject: Subject, subject_ref: Option<String>) -> CreateRequest {
    CreateRequest {
        idempotency_key: key.to_string(),
        tenant: "acme".to_string(),
        reference: format!("ref-{key}"),
        subject,
        checks: Checks::default(),
        redirect_url: None,
        webhook_url: Some("http://127.0.0.1:9/hooks/gu1/token".to_string()),
        subject_ref,
        subject_partial: false,
    }
}

fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[tokio::test]
async fn create_makes_the_person_entity_then_the_validation() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let created = gu1
        .create(&request(
            "k1",
            subject("cus_1", Some("20-12345678-9")),
            None,
        ))
        .await
        .unwrap();

    assert_eq!(sim.entities_created(), 1);
    assert_eq!(sim.validations_created(), 1);
    assert_eq!(created.status, Status::Pending);
    let entity_id = created.subject_ref.clone().expect("entity id returned");
    let url = created.verification_url.clone().unwrap();
    assert!(
        url.starts_with(&format!("{}/session/", sim.base_url())),
        "{url}"
    );

    let stored = sim.validation(&created.provider_reference).unwrap();
    assert_eq!(stored["entityId"], entity_id.as_str());
    assert_eq!(stored["metadata"]["reference"], "ref-k1");
    assert_eq!(stored["metadata"]["gatewayKey"], "k1");
    assert_eq!(stored["webhookUrl"], "http://127.0.0.1:9/hooks/gu1/token");

    let entity = sim.entity(&entity_id).expect("entity stored");
    assert_eq!(entity["type"], "person");
    assert_eq!(entity["name"], "Juan Pérez");
    assert_eq!(entity["countryCode"], "AR");
    assert_eq!(entity["externalId"], "acme:cus_1");
    assert_eq!(entity["taxId"], "20-12345678-9");
    assert_eq!(entity["entityData"]["person"]["firstName"], "Juan");
    assert_eq!(entity["entityData"]["person"]["dateOfBirth"], "1990-05-20");
    assert_eq!(entity["entityData"]["person"]["nationality"], "AR");
}

#[tokio::test]
async fn config_values_are_sent_on_create() {
    let sim = sim().await;
    let mut config = config(&sim);
    config.workflow_id = Some("wf_custom".into());
    config.integration_code = Some("global_gueno_validation_kyc".into());
    let gu1 = Gu1Provider::new(INSTANCE, config, &loopback()).unwrap();
    let created = gu1
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap();
    let stored = sim.validation(&created.provider_reference).unwrap();
    assert_eq!(stored["workflowId"], "wf_custom");
    assert_eq!(stored["integrationCode"], "global_gueno_validation_kyc");
}

#[tokio::test]
async fn a_known_entity_is_reused_not_created_again() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let first = gu1
        .create(&request("k1", subject("cus_1", Some("111")), None))
        .await
        .unwrap();
    let entity_id = first.subject_ref.clone().unwrap();

    let second = gu1
        .create(&request(
            "k2",
            subject("cus_1", Some("111")),
            Some(entity_id.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(sim.entities_created(), 1);
    assert_eq!(sim.validations_created(), 2);
    assert_eq!(second.subject_ref.as_deref(), Some(entity_id.as_str()));
    assert_ne!(second.provider_reference, first.provider_reference);
    assert_eq!(
        sim.validation(&first.provider_reference).unwrap()["isCurrent"],
        false
    );

    // The caller's provider_refs work the same when the gateway remembers nothing.
    let mut with_ref = subject("cus_1", Some("111"));
    with_ref
        .provider_refs
        .insert(INSTANCE.to_string(), entity_id.clone());
    let third = gu1.create(&request("k3", with_ref, None)).await.unwrap();
    assert_eq!(sim.entities_created(), 1);
    assert_eq!(third.subject_ref.as_deref(), Some(entity_id.as_str()));
}

#[tokio::test]
async fn a_retried_create_for_a_known_entity_returns_the_first_validation() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let first = gu1
        .create(&request("retry-key", subject("cus_r", Some("555")), None))
        .await
        .unwrap();
    let entity_id = first.subject_ref.clone();
    // The same attempt again (its answer was lost): no second validation.
    let again = gu1
        .create(&request(
            "retry-key",
            subject("cus_r", Some("555")),
            entity_id.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(again.provider_reference, first.provider_reference);
    assert_eq!(sim.validations_created(), 1);
    // Another attempt for the same entity does start a new validation.
    let other = gu1
        .create(&request(
            "other-key",
            subject("cus_r", Some("555")),
            entity_id,
        ))
        .await
        .unwrap();
    assert_ne!(other.provider_reference, first.provider_reference);
    assert_eq!(sim.validations_created(), 2);
}

fn tenant_request(tenant: &str, key: &str, subject: Subject) -> CreateRequest {
    CreateRequest {
        tenant: tenant.to_string(),
        ..request(key, subject, None)
    }
}

#[tokio::test]
async fn one_national_id_is_one_entity_whichever_tenant_or_process_asks() {
    let sim = sim().await;
    let first = provider(&sim)
        .create(&tenant_request(
            "acme",
            "k1",
            subject("cus_1", Some("20-111-9")),
        ))
        .await
        .unwrap();
    // Another tenant, another subject id, another gateway process: gu1's 409 is avoided by the
    // lookup, and both verify the one person entity.
    let second = provider(&sim)
        .create(&tenant_request(
            "beta",
            "k2",
            subject("b-77", Some("20-111-9")),
        ))
        .await
        .unwrap();
    assert_eq!(second.subject_ref, first.subject_ref);
    assert_eq!(sim.entities_created(), 1);
    assert_eq!(sim.validations_created(), 2);
    assert_eq!(sim.requests_seen("POST /api/entities"), 1);
    // The entity is found by national id, which went only to gu1.
    assert_eq!(sim.requests_seen("taxId=20-111-9"), 2);
}

#[tokio::test]
async fn without_a_national_id_tenants_subject_ids_are_kept_apart() {
    let sim = sim().await;
    let acme = provider(&sim)
        .create(&tenant_request("acme", "k1", subject("cus_1", None)))
        .await
        .unwrap();
    let beta = provider(&sim)
        .create(&tenant_request("beta", "k2", subject("cus_1", None)))
        .await
        .unwrap();
    assert_ne!(
        acme.subject_ref, beta.subject_ref,
        "two tenants' cus_1 are two people"
    );
    let entity = sim.entity(acme.subject_ref.as_deref().unwrap()).unwrap();
    assert_eq!(entity["externalId"], "acme:cus_1");
    // The same tenant's subject, asked again from a process that remembers nothing, is found.
    let again = provider(&sim)
        .create(&tenant_request("acme", "k3", subject("cus_1", None)))
        .await
        .unwrap();
    assert_eq!(again.subject_ref, acme.subject_ref);
    assert_eq!(sim.entities_created(), 2);
}

#[tokio::test]
async fn a_conflict_the_lookup_cannot_resolve_names_the_fix() {
    let sim = sim().await;
    provider(&sim)
        .create(&request("k1", subject("cus_1", Some("20-111-9")), None))
        .await
        .unwrap();
    // gu1's lookup stops finding it (404), but its create still refuses a second entity.
    sim.inject(FaultRule::always(Fault::Status(404)).on_path("taxId="));
    let err = provider(&sim)
        .create(&request("k2", subject("cus_other", Some("20-111-9")), None))
        .await
        .unwrap_err();
    match err {
        ProviderError::SubjectConflict(message) => {
            assert!(
                message.contains("subject.provider_refs.gu1-test"),
                "{message}"
            );
            assert!(!message.contains("20-111-9"), "personal data in {message}");
        }
        other => panic!("expected SubjectConflict, got {other:?}"),
    }
    assert_eq!(sim.entities_created(), 1);
    assert_eq!(sim.validations_created(), 1);
}

#[tokio::test]
async fn an_entity_whose_answer_was_lost_is_found_when_the_create_is_retried() {
    for national_id in [Some("27-222-3"), None] {
        let sim = sim().await;
        let mut config = config(&sim);
        config.timeout_ms = 300;
        // gu1 creates the entity but answers after our timeout.
        sim.inject(
            FaultRule::once(Fault::LateAnswer(Duration::from_secs(2)))
                .on_path("POST /api/entities"),
        );
        let gu1 = Gu1Provider::new(INSTANCE, config.clone(), &loopback()).unwrap();
        let err = gu1
            .create(&request("k1", subject("cus_1", national_id), None))
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert_eq!(sim.entities_created(), 1);
        assert_eq!(sim.validations_created(), 0);

        // The retry, here from a fresh process that remembers nothing, finds it.
        let retried = Gu1Provider::new(INSTANCE, config, &loopback())
            .unwrap()
            .create(&request("k1", subject("cus_1", national_id), None))
            .await
            .unwrap();
        assert_eq!(sim.entities_created(), 1, "national id {national_id:?}");
        assert_eq!(sim.validations_created(), 1);
        let entity = sim.entity(retried.subject_ref.as_deref().unwrap());
        assert!(entity.is_some());
    }
}

#[tokio::test]
async fn a_validation_whose_answer_was_lost_is_returned_when_the_create_is_retried() {
    let sim = sim().await;
    let mut config = config(&sim);
    config.timeout_ms = 300;
    sim.inject(
        FaultRule::once(Fault::LateAnswer(Duration::from_secs(2)))
            .on_path("POST /api/kyc/validations"),
    );
    let err = Gu1Provider::new(INSTANCE, config.clone(), &loopback())
        .unwrap()
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(sim.validations_created(), 1);

    let retried = Gu1Provider::new(INSTANCE, config, &loopback())
        .unwrap()
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap();
    assert_eq!(sim.entities_created(), 1);
    assert_eq!(
        sim.validations_created(),
        1,
        "the retry found the first validation"
    );
    assert!(sim.validation(&retried.provider_reference).is_some());
}

/// Three creates at once for each of 100 subjects, with different idempotency keys, spread over
/// `processes` adapter instances (gateway processes sharing one gu1).
async fn concurrent_creates(sim: &Gu1Sim, processes: usize, national_ids: bool) {
    let providers: Vec<_> = (0..processes)
        .map(|_| std::sync::Arc::new(provider(sim)))
        .collect();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..100 {
        for attempt in 0..3 {
            let gu1 = providers[attempt % processes].clone();
            let national_id = national_ids.then(|| format!("30-{n:08}-1"));
            let request = request(
                &format!("s{n}-a{attempt}"),
                subject(&format!("cus_{n}"), national_id.as_deref()),
                None,
            );
            calls.spawn(async move { (n, gu1.create(&request).await) });
        }
    }
    let mut entities = std::collections::HashMap::new();
    while let Some(done) = calls.join_next().await {
        let (n, created) = done.unwrap();
        let created = created.unwrap_or_else(|e| panic!("subject {n}: {e:?}"));
        let entity = created.subject_ref.unwrap();
        assert_eq!(entities.entry(n).or_insert_with(|| entity.clone()), &entity);
    }
    assert_eq!(entities.len(), 100);
    assert_eq!(sim.entities_created(), 100);
    assert_eq!(sim.validations_created(), 300);
}

#[tokio::test]
async fn concurrent_creates_for_one_subject_make_one_entity_in_one_process() {
    concurrent_creates(&sim().await, 1, false).await;
    concurrent_creates(&sim().await, 1, true).await;
}

#[tokio::test]
async fn concurrent_creates_with_national_ids_make_one_entity_across_processes() {
    // gu1 refuses a second entity per taxId, and the 409 is resolved by the lookup. (Without a
    // national id gu1 enforces nothing, so across processes that case is not covered.)
    concurrent_creates(&sim().await, 3, true).await;
}

#[tokio::test]
async fn a_retried_create_reuses_the_entity_made_by_the_failed_attempt() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    sim.inject(FaultRule::once(Fault::Status(503)).on_path("/api/kyc/validations"));
    let err = gu1
        .create(&request("k1", subject("cus_1", Some("333")), None))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(sim.entities_created(), 1);
    assert_eq!(sim.validations_created(), 0);

    // Same attempt again: without the remembered entity this would be gu1's 409.
    let created = gu1
        .create(&request("k1", subject("cus_1", Some("333")), None))
        .await
        .unwrap();
    assert_eq!(sim.entities_created(), 1);
    assert_eq!(sim.validations_created(), 1);
    assert!(created.subject_ref.is_some());
}

#[tokio::test]
async fn an_unknown_entity_id_is_rejected_with_our_explanation() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let err = gu1
        .create(&request(
            "k1",
            subject("cus_1", None),
            Some("0b6c7a7e-0000-4000-8000-000000000000".into()),
        ))
        .await
        .unwrap_err();
    match err {
        ProviderError::Rejected { code, message } => {
            assert_eq!(code, "ENTITY_NOT_FOUND");
            assert!(message.contains("entity id"), "{message}");
            assert!(message.contains("provider_refs.gu1-test"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(sim.entities_created(), 0);
}

#[tokio::test]
async fn approval_then_refresh_gives_decision_identity_and_standing() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let created = gu1
        .create(&request(
            "k1",
            subject("cus_1", Some("20-12345678-9")),
            None,
        ))
        .await
        .unwrap();
    let id = created.provider_reference.clone();
    let entity_id = created.subject_ref.clone().unwrap();

    let before = gu1.subject_standing(&entity_id).await.unwrap().unwrap();
    assert!(!before.verified);
    assert_eq!(before.verified_at, None);

    sim.finish(&id, Outcome::Approved).await.unwrap();
    let refreshed = gu1.refresh(&id).await.unwrap();
    assert_eq!(sim.requests_seen("/sync"), 1);
    assert_eq!(refreshed.status, Status::Approved);
    assert_eq!(refreshed.reason, None);
    let decision = refreshed.decision.expect("decision after approval");
    assert_eq!(decision.document, CheckOutcome::Pass);
    assert_eq!(decision.liveness, CheckOutcome::Pass);
    assert_eq!(decision.face_match, CheckOutcome::Pass);
    assert_eq!(decision.scores.liveness, Some(98.0));
    assert_eq!(decision.scores.face_match, Some(95.0));
    assert_eq!(gu1.get(&id).await.unwrap().status, Status::Approved);

    let identity = gu1.identity(&id).await.unwrap();
    assert_eq!(identity.first_name.unwrap().expose(), "Juan");
    assert_eq!(identity.last_name.unwrap().expose(), "Pérez");
    assert_eq!(
        *identity.date_of_birth.unwrap().expose(),
        NaiveDate::from_ymd_opt(1990, 5, 20).unwrap()
    );
    assert_eq!(identity.nationality.unwrap().expose(), "AR");
    assert_eq!(identity.document_type.as_deref(), Some("Identity Card"));
    assert!(identity.document_number.is_some());

    let standing = gu1.subject_standing(&entity_id).await.unwrap().unwrap();
    assert!(standing.verified);
    assert!(!standing.needs_reverification);
    let verified_at = standing.verified_at.expect("verified_at");
    let expires_at = standing.expires_at.expect("expires_at");
    assert_eq!((expires_at - verified_at).num_days(), 365);
}

#[tokio::test]
async fn a_rejection_carries_the_reason_and_the_failed_check() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let created = gu1
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap();
    sim.finish(&created.provider_reference, Outcome::Rejected)
        .await
        .unwrap();
    let v = gu1.refresh(&created.provider_reference).await.unwrap();
    assert_eq!(v.status, Status::Rejected);
    let reason = v.reason.unwrap();
    assert_eq!(reason.code, "verification_failed");
    assert_eq!(reason.provider_code.as_deref(), Some("rejected/Declined"));
    let decision = v.decision.unwrap();
    assert_eq!(decision.face_match, CheckOutcome::Fail);
    assert_eq!(decision.scores.face_match, Some(12.0));
}

#[tokio::test]
async fn other_final_statuses_map_with_their_reasons() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    for (i, (outcome, status, code)) in [
        (Outcome::Expired, Status::Expired, Some("link_expired")),
        (Outcome::Abandoned, Status::Abandoned, Some("abandoned")),
        (Outcome::InReview, Status::InReview, None),
        (Outcome::InProgress, Status::InProgress, None),
    ]
    .into_iter()
    .enumerate()
    {
        let created = gu1
            .create(&request(&format!("k{i}"), subject("cus_1", None), None))
            .await
            .unwrap();
        sim.finish(&created.provider_reference, outcome)
            .await
            .unwrap();
        let v = gu1.get(&created.provider_reference).await.unwrap();
        assert_eq!(v.status, status);
        assert_eq!(v.reason.map(|r| r.code).as_deref(), code);
    }
}

#[tokio::test]
async fn cancel_ends_a_pending_validation_and_refuses_a_final_one() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let created = gu1
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap();
    let cancelled = gu1.cancel(&created.provider_reference).await.unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert_eq!(cancelled.reason.unwrap().code, "cancelled");
    assert_eq!(
        sim.validation(&created.provider_reference).unwrap()["status"],
        "cancelled"
    );

    match gu1.cancel(&created.provider_reference).await.unwrap_err() {
        ProviderError::Rejected { code, message } => {
            assert_eq!(code, "INVALID_STATUS");
            assert!(message.contains("cannot be cancelled"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_validation_in_review_takes_a_manual_decision_and_keeps_it() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let created = gu1
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap();
    let id = &created.provider_reference;
    // Not in review yet: gu1 refuses.
    match gu1
        .decide(id, ManualOutcome::Approve, "documents checked by hand")
        .await
        .unwrap_err()
    {
        ProviderError::Rejected { code, .. } => assert_eq!(code, "INVALID_STATUS"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    sim.finish(id, Outcome::InReview).await.unwrap();
    let decided = gu1
        .decide(id, ManualOutcome::Approve, "documents checked by hand")
        .await
        .unwrap();
    assert_eq!(decided.status, Status::Approved);
    assert_eq!(sim.validation(id).unwrap()["manualDecision"], true);
    assert_eq!(gu1.refresh(id).await.unwrap().status, Status::Approved);
}

#[tokio::test]
async fn unknown_validations_are_not_found() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let unknown = "5f0c1a2b-0000-4000-8000-000000000000";
    assert_eq!(gu1.get(unknown).await.unwrap_err(), ProviderError::NotFound);
    assert_eq!(
        gu1.refresh(unknown).await.unwrap_err(),
        ProviderError::NotFound
    );
    assert_eq!(
        gu1.identity(unknown).await.unwrap_err(),
        ProviderError::NotFound
    );
    assert_eq!(
        gu1.cancel(unknown).await.unwrap_err(),
        ProviderError::NotFound
    );
    assert!(matches!(
        gu1.subject_standing(unknown).await.unwrap_err(),
        ProviderError::Rejected { code, .. } if code == "ENTITY_NOT_FOUND"
    ));
    // An id that would change the URL never leaves the process.
    let sent_before = sim.requests_seen("/api");
    assert_eq!(
        gu1.get("../entities").await.unwrap_err(),
        ProviderError::NotFound
    );
    assert_eq!(sim.requests_seen("/api"), sent_before);
}

#[tokio::test]
async fn a_wrong_api_key_is_unauthorized() {
    let sim = sim().await;
    let mut config = config(&sim);
    config.api_key = SecretString::from("gk_sandbox_wrong");
    let gu1 = Gu1Provider::new(INSTANCE, config, &loopback()).unwrap();
    let err = gu1
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::Unauthorized);
    assert_eq!(sim.entities_created(), 0);
}

/// A gu1 that answers 307 to somewhere else: the person's data is not re-sent there.
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

    let gu1 = Gu1Provider::new(
        INSTANCE,
        Gu1Config::new(base, SecretString::from("gk_test".to_string())),
        &loopback(),
    )
    .unwrap();
    let error = gu1
        .create(&request(
            "k1",
            subject("cus_1", Some("20-12345678-9")),
            None,
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::BadResponse(_)), "{error:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rx.try_recv().is_err(),
        "the body was sent to the redirect target"
    );
}

#[tokio::test]
async fn the_simulators_own_webhook_is_accepted() {
    let (tx, mut rx) = mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
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
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let sim = sim().await;
    let gu1 = provider(&sim);
    let mut req = request("k1", subject("cus_1", None), None);
    req.webhook_url = Some(hook_url);
    let created = gu1.create(&req).await.unwrap();
    sim.finish(&created.provider_reference, Outcome::Approved)
        .await
        .unwrap();

    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("webhook arrives")
        .unwrap();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let id = gu1
        .verify_webhook(IncomingWebhook {
            headers: &headers,
            body: &body,
        })
        .unwrap();
    assert_eq!(id, created.provider_reference);
    server.abort();
}

#[tokio::test]
async fn webhooks_signed_in_hex_or_base64_are_accepted_and_others_refused() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let secret = Gu1SimConfig::default().webhook_secret;
    let body = br#"{"event":"kyc.validation_approved","timestamp":"2025-01-27T10:30:05Z","organizationId":"org_sandbox","payload":{"id":"val_123","status":"approved"}}"#;
    let mac = hmac_sha256(&secret, body);
    let verify = |signature: Option<String>, body: &[u8]| {
        let headers: Vec<(String, String)> = signature
            .map(|s| vec![("x-webhook-signature".to_string(), s)])
            .unwrap_or_default();
        gu1.verify_webhook(IncomingWebhook {
            headers: &headers,
            body,
        })
    };

    assert_eq!(verify(Some(hex::encode(&mac)), body).unwrap(), "val_123");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&mac);
    assert_eq!(verify(Some(b64), body).unwrap(), "val_123");

    let mut tampered = body.to_vec();
    let at = tampered.len() - 5;
    tampered[at] = b'4';
    assert_eq!(
        verify(Some(hex::encode(&mac)), &tampered).unwrap_err(),
        WebhookError::BadSignature
    );
    let wrong_secret = hmac_sha256("not-the-secret", body);
    assert_eq!(
        verify(Some(hex::encode(wrong_secret)), body).unwrap_err(),
        WebhookError::BadSignature
    );
    assert_eq!(
        verify(Some("garbage".into()), body).unwrap_err(),
        WebhookError::BadSignature
    );
    assert_eq!(verify(None, body).unwrap_err(), WebhookError::BadSignature);

    // Signed correctly but not a gu1 envelope.
    let odd = br#"{"hello":"world"}"#;
    assert!(matches!(
        verify(Some(hex::encode(hmac_sha256(&secret, odd))), odd),
        Err(WebhookError::BadBody(_))
    ));

    // Without a configured secret nothing is accepted.
    let mut no_secret = config(&sim);
    no_secret.webhook_secret = None;
    let unsigned = Gu1Provider::new(INSTANCE, no_secret, &loopback()).unwrap();
    let headers = vec![("x-webhook-signature".to_string(), hex::encode(&mac))];
    assert_eq!(
        unsigned
            .verify_webhook(IncomingWebhook {
                headers: &headers,
                body
            })
            .unwrap_err(),
        WebhookError::BadSignature
    );
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_unavailable() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let created = gu1
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap();
    for status in [503, 500, 429] {
        sim.inject(FaultRule::once(Fault::Status(status)));
        let err = gu1.get(&created.provider_reference).await.unwrap_err();
        assert!(err.is_unavailable(), "{status}: {err:?}");
    }
    assert_eq!(
        gu1.get(&created.provider_reference).await.unwrap().status,
        Status::Pending
    );
}

#[tokio::test]
async fn a_malformed_answer_is_a_bad_response() {
    let sim = sim().await;
    let gu1 = provider(&sim);
    let created = gu1
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap();
    sim.inject(FaultRule::once(Fault::Malformed));
    let err = gu1.refresh(&created.provider_reference).await.unwrap_err();
    assert!(matches!(err, ProviderError::BadResponse(_)), "{err:?}");
}

#[tokio::test]
async fn a_hanging_gu1_is_unavailable_within_the_timeout() {
    let sim = sim().await;
    let mut config = config(&sim);
    config.timeout_ms = 500;
    let gu1 = Gu1Provider::new(INSTANCE, config, &loopback()).unwrap();
    sim.inject(FaultRule::always(Fault::Hang));
    let started = Instant::now();
    let err = gu1
        .create(&request("k1", subject("cus_1", None), None))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn nothing_answering_at_the_base_url_is_unavailable() {
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let config = Gu1Config::new("http://127.0.0.1:1", SecretString::from("gk_sandbox_key"));
    let gu1 = Gu1Provider::new(INSTANCE, config, &loopback()).unwrap();
    let err = gu1.get("5f0c1a2b").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

fn quick_provider(sim: &Gu1Sim) -> Gu1Provider {
    let mut config = config(sim);
    config.timeout_ms = 500;
    Gu1Provider::new(INSTANCE, config, &loopback()).expect("provider builds")
}

#[tokio::test]
async fn failures_are_classed_by_what_they_may_have_started() {
    let sim = sim().await;
    let provider = quick_provider(&sim);
    let validation = "POST /api/kyc/validations";
    let cases = [
        // The validation create, said no to before any work: a fallback may take it.
        (validation, Fault::Status(503), CreateFailure::NotStarted),
        (validation, Fault::Status(429), CreateFailure::NotStarted),
        // Sent, and no word on the work: the validation may exist.
        (validation, Fault::Status(500), CreateFailure::Ambiguous),
        (validation, Fault::Hang, CreateFailure::Ambiguous),
        (
            validation,
            Fault::LateAnswer(Duration::from_secs(2)),
            CreateFailure::Ambiguous,
        ),
        (validation, Fault::Malformed, CreateFailure::Ambiguous),
        // Refused as an answer.
        (validation, Fault::Status(400), CreateFailure::Refused),
        // The entity steps start no validation, whatever becomes of them.
        ("POST /api/entities", Fault::Hang, CreateFailure::NotStarted),
        (
            "POST /api/entities",
            Fault::Status(500),
            CreateFailure::NotStarted,
        ),
        ("GET /api/entities", Fault::Hang, CreateFailure::NotStarted),
    ];
    for (i, (path, fault, class)) in cases.into_iter().enumerate() {
        sim.inject(FaultRule::once(fault.clone()).on_path(path));
        // A new subject each time, so the entity steps run.
        let subject = subject(&format!("class-{i}"), None);
        let err = provider
            .create(&request(&format!("class-{i}"), subject, None))
            .await
            .unwrap_err();
        assert_eq!(err.on_create(), class, "{path} {fault:?}: {err:?}");
    }
    let mut dead = config(&sim);
    dead.base_url = "http://127.0.0.1:9".into();
    let dead = Gu1Provider::new(INSTANCE, dead, &loopback()).unwrap();
    let err = dead
        .create(&request("refused", subject("refused", None), None))
        .await
        .unwrap_err();
    assert_eq!(err.on_create(), CreateFailure::NotStarted, "{err:?}");
}

#[tokio::test]
async fn an_ambiguous_validation_is_found_by_its_gateway_key_not_made_again() {
    let sim = sim().await;
    let provider = quick_provider(&sim);
    assert!(!provider.create_is_idempotent(), "gu1 enforces no key");
    let person = subject("cus-late", Some("20-12345678-3"));
    // No entity yet: nothing can have been made.
    assert_eq!(
        provider
            .find_created(&request("late-1", person.clone(), None))
            .await
            .unwrap(),
        Found::Absent
    );
    sim.inject(
        FaultRule::once(Fault::LateAnswer(Duration::from_secs(2)))
            .on_path("POST /api/kyc/validations"),
    );
    let err = provider
        .create(&request("late-1", person.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(err.on_create(), CreateFailure::Ambiguous);
    let Found::Created(found) = provider
        .find_created(&request("late-1", person.clone(), None))
        .await
        .unwrap()
    else {
        panic!("the validation made before the late answer is not found");
    };
    assert_eq!(sim.validations_created(), 1);
    assert_eq!(
        found.subject_ref.as_deref(),
        sim.entity_ids().first().map(String::as_str)
    );
    // Another key finds nothing for the same person.
    assert_eq!(
        provider
            .find_created(&request("late-2", person.clone(), None))
            .await
            .unwrap(),
        Found::Absent
    );

    // The reconciler's lookup holds no national id: a fresh process finds the entity by the
    // tenant's external id when this tenant made it, and cannot tell otherwise.
    let fresh = quick_provider(&sim);
    let mut partial = request("late-1", subject("cus-late", None), None);
    partial.subject_partial = true;
    assert_eq!(
        fresh.find_created(&partial).await.unwrap(),
        Found::Created(found.clone())
    );
    let mut elsewhere = request("late-1", subject("cus-late", None), None);
    elsewhere.tenant = "another-tenant".into();
    elsewhere.subject_partial = true;
    assert_eq!(
        fresh.find_created(&elsewhere).await.unwrap(),
        Found::Unknown
    );
    assert_eq!(sim.validations_created(), 1);
}
