//! The adapter against the BeTrust simulator over real HTTP.

use kyc_adapters_betrust::{BetrustConfig, BetrustProvider};
use kyc_core::{
    CheckOutcome, Checks, CreateFailure, CreateRequest, Found, IncomingWebhook, Provider,
    ProviderError, Status, Subject,
};
use kyc_sandbox::{BetrustSim, BetrustSimConfig, Fault, FaultRule, Outcome};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const NIN: &str = "11111111-1";

fn config_for(sim: &BetrustSim, sim_config: &BetrustSimConfig) -> BetrustConfig {
    let mut config = BetrustConfig::new(
        &sim_config.client_id,
        sim_config.client_secret.clone().into(),
        &sim_config.company_id,
    );
    config.auth_base_url = sim.auth_base_url();
    config.api_base_url = sim.api_base_url();
    config
}

async fn start_with(
    sim_config: BetrustSimConfig,
    tweak: impl FnOnce(&mut BetrustConfig),
) -> (BetrustSim, Arc<BetrustProvider>) {
    let sim = BetrustSim::start(sim_config.clone()).await.unwrap();
    let mut config = config_for(&sim, &sim_config);
    tweak(&mut config);
    let provider = BetrustProvider::new(
        "betrust-test",
        config,
        &kyc_core::outbound::Outbound::new(kyc_core::outbound::Allowlist::new(&[
            "127.0.0.1".into()
        ])),
    )
    .unwrap();
    (sim, Arc::new(provider))
}

async fn start() -> (BetrustSim, Arc<BetrustProvider>) {
    start_with(BetrustSimConfig::default(), |_| {}).await
}

fn request(key: &str) -> CreateRequest {
    let subject: Subject = serde_json::from_value(json!({
        "id": "cus_42", "country": "CL", "national_id": NIN, "email": "person@example.com"
    }))
    .unwrap();
    CreateRequest {
        idempotency_key: key.into(),
        tenant: "acme".into(),
        reference: format!("ref-{key}"),
        subject,
        checks: Checks {
            aml: true,
            ..Checks::default()
        },
        redirect_url: None,
        webhook_url: None,
        subject_ref: None,
        subject_partial: false,
    }
}

#[tokio::test]
async fn create_then_get_returns_the_pending_transaction() {
    let (sim, provider) = start().await;
    let created = provider.create(&request("order-1")).await.unwrap();
    assert_eq!(created.status, Status::Pending);
    assert!(created.expires_at.is_some());
    let url = created.verification_url.clone().unwrap();
    assert!(url.contains(&created.provider_reference), "{url}");

    let read = provider.get(&created.provider_reference).await.unwrap();
    assert_eq!(read.provider_reference, created.provider_reference);
    assert_eq!(read.status, Status::Pending);
    assert_eq!(read.verification_url, created.verification_url);
    assert_eq!(
        provider.refresh(&created.provider_reference).await.unwrap(),
        read
    );

    // What BeTrust received.
    let stored = sim.transaction(&created.provider_reference).unwrap();
    assert_eq!(stored["transaction_id"], "order-1");
    assert_eq!(stored["company_id"], "201");
    assert_eq!(stored["authorization_method"], "kyc_register");
    assert_eq!(stored["user_id"], "cus_42");
    assert_eq!(stored["metadata"]["country"], "CHILE");
    assert_eq!(stored["metadata"]["nin"], NIN);
    assert_eq!(stored["metadata"]["fraud_check"], true);
    assert_eq!(stored["metadata"]["document_verification"], true);
    assert_eq!(sim.token_requests(), 1, "the token is reused between calls");
}

#[tokio::test]
async fn fifty_concurrent_creates_share_one_token_request() {
    let (sim, provider) = start().await;
    let mut calls = JoinSet::new();
    for i in 0..50 {
        let provider = provider.clone();
        calls.spawn(async move { provider.create(&request(&format!("order-{i}"))).await });
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(sim.token_requests(), 1);
    assert_eq!(sim.transactions_created(), 50);
}

#[tokio::test]
async fn revoked_token_is_replaced_once_and_the_call_succeeds() {
    let (sim, provider) = start().await;
    let created = provider.create(&request("order-1")).await.unwrap();
    assert_eq!(sim.token_requests(), 1);

    sim.revoke_tokens();
    let read = provider.get(&created.provider_reference).await.unwrap();
    assert_eq!(read.provider_reference, created.provider_reference);
    assert_eq!(sim.token_requests(), 2);
}

#[tokio::test]
async fn many_calls_failing_on_a_revoked_token_fetch_one_new_token() {
    let (sim, provider) = start().await;
    let created = provider.create(&request("order-1")).await.unwrap();
    sim.revoke_tokens();
    // Half the calls learn of the revocation late, after the first ones have cached a new token:
    // they must not evict that new token.
    sim.inject(
        FaultRule::always(Fault::Latency(Duration::from_millis(400)))
            .on_path("/transactions")
            .times(15),
    );
    let mut calls = JoinSet::new();
    for _ in 0..30 {
        let provider = provider.clone();
        let uuid = created.provider_reference.clone();
        calls.spawn(async move { provider.get(&uuid).await });
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(sim.token_requests(), 2);
}

#[tokio::test]
async fn token_shorter_than_the_margin_is_not_reused() {
    let sim_config = BetrustSimConfig {
        token_expires_in: 30,
        ..BetrustSimConfig::default()
    };
    let (sim, provider) = start_with(sim_config, |c| c.token_margin_seconds = 60).await;
    let created = provider.create(&request("order-1")).await.unwrap();
    provider.get(&created.provider_reference).await.unwrap();
    provider.get(&created.provider_reference).await.unwrap();
    assert_eq!(sim.token_requests(), 3, "one token per call");
}

#[tokio::test]
async fn a_401_that_survives_a_fresh_token_is_unauthorized() {
    let (sim, provider) = start().await;
    sim.inject(FaultRule::always(Fault::Status(401)).on_path("/transactions"));
    let err = provider.get("any-uuid").await.unwrap_err();
    assert_eq!(err, ProviderError::Unauthorized);
    assert_eq!(sim.token_requests(), 2, "one retry with one new token");
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized() {
    let (sim, provider) = start_with(BetrustSimConfig::default(), |c| {
        c.client_secret = "not-the-secret".to_string().into();
    })
    .await;
    let err = provider.create(&request("order-1")).await.unwrap_err();
    assert_eq!(err, ProviderError::Unauthorized);
    assert_eq!(sim.transactions_created(), 0);
}

#[tokio::test]
async fn repeated_idempotency_key_returns_the_same_transaction() {
    let (sim, provider) = start().await;
    let first = provider.create(&request("order-7")).await.unwrap();
    let second = provider.create(&request("order-7")).await.unwrap();
    assert_eq!(first.provider_reference, second.provider_reference);
    assert_eq!(sim.transactions_created(), 1);
}

#[tokio::test]
async fn approved_transaction_has_a_decision_and_an_iso_identity() {
    let (sim, provider) = start().await;
    let created = provider.create(&request("order-1")).await.unwrap();
    sim.finish(&created.provider_reference, Outcome::Approved)
        .await
        .unwrap();

    let read = provider.get(&created.provider_reference).await.unwrap();
    assert_eq!(read.status, Status::Approved);
    let decision = read.decision.unwrap();
    assert_eq!(decision.document, CheckOutcome::Pass);
    assert_eq!(decision.liveness, CheckOutcome::Pass);
    assert_eq!(decision.face_match, CheckOutcome::Pass);
    assert_eq!(
        decision.aml,
        CheckOutcome::Pass,
        "fraud_check was asked for"
    );
    let score = decision.scores.face_match.unwrap();
    assert!((score - 96.05).abs() < 0.01, "{score}");

    let identity = provider
        .identity(&created.provider_reference)
        .await
        .unwrap();
    let wire = serde_json::to_value(&identity).unwrap();
    assert_eq!(wire["date_of_birth"], "1990-05-20");
    assert_eq!(wire["national_id"], NIN);
    assert_eq!(wire["document_number"], "A1234567");
    assert_eq!(identity.score, Some(99.5));
    assert!(identity.first_name.is_some() && identity.last_name.is_some());
}

#[tokio::test]
async fn rejected_transaction_keeps_the_provider_codes() {
    let (sim, provider) = start().await;
    let created = provider.create(&request("order-1")).await.unwrap();
    sim.finish(&created.provider_reference, Outcome::Rejected)
        .await
        .unwrap();

    let read = provider.get(&created.provider_reference).await.unwrap();
    assert_eq!(read.status, Status::Rejected);
    let reason = read.reason.unwrap();
    assert_eq!(reason.code, "verification_failed");
    assert_eq!(reason.provider_code.as_deref(), Some("Face_mismatch"));
    assert!(reason.message.unwrap().contains("step=Finished"));
    assert_eq!(read.decision.unwrap().face_match, CheckOutcome::Fail);

    let err = provider
        .identity(&created.provider_reference)
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::NotFound);
}

#[tokio::test]
async fn every_simulated_outcome_maps_to_its_status() {
    let (sim, provider) = start().await;
    let cases = [
        (Outcome::InProgress, Status::InProgress),
        (Outcome::InReview, Status::InReview),
        (Outcome::Expired, Status::Expired),
        (Outcome::Abandoned, Status::Abandoned),
        (Outcome::Cancelled, Status::Cancelled),
    ];
    for (i, (outcome, status)) in cases.into_iter().enumerate() {
        let created = provider.create(&request(&format!("o-{i}"))).await.unwrap();
        sim.finish(&created.provider_reference, outcome)
            .await
            .unwrap();
        let read = provider.get(&created.provider_reference).await.unwrap();
        assert_eq!(read.status, status, "{outcome:?}");
        assert_eq!(read.decision, None, "{outcome:?}");
    }
}

#[tokio::test]
async fn unknown_transaction_is_not_found() {
    let (_sim, provider) = start().await;
    assert_eq!(
        provider.get("no-such-transaction").await.unwrap_err(),
        ProviderError::NotFound
    );
    assert_eq!(
        provider.identity("no-such-transaction").await.unwrap_err(),
        ProviderError::NotFound
    );
}

#[tokio::test]
async fn server_errors_and_throttling_are_unavailable() {
    let (sim, provider) = start().await;
    let created = provider.create(&request("order-1")).await.unwrap();
    for status in [503, 500, 429] {
        sim.inject(FaultRule::once(Fault::Status(status)).on_path("/transactions"));
        let err = provider.get(&created.provider_reference).await.unwrap_err();
        assert!(err.is_unavailable(), "{status}: {err:?}");
    }
    // The fault was served once: the next call goes through.
    provider.get(&created.provider_reference).await.unwrap();
}

#[tokio::test]
async fn token_endpoint_outage_is_unavailable() {
    let (sim, provider) = start().await;
    sim.inject(FaultRule::always(Fault::Status(503)).on_path("/oauth/token"));
    let err = provider.create(&request("order-1")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(sim.transactions_created(), 0);
}

#[tokio::test]
async fn malformed_answer_is_a_bad_response() {
    let (sim, provider) = start().await;
    let created = provider.create(&request("order-1")).await.unwrap();
    sim.inject(FaultRule::once(Fault::Malformed).on_path("/transactions"));
    let err = provider.get(&created.provider_reference).await.unwrap_err();
    assert!(matches!(err, ProviderError::BadResponse(_)), "{err:?}");
    assert!(!err.to_string().contains("oops"), "{err}");
}

#[tokio::test]
async fn hanging_provider_is_unavailable_within_the_timeout() {
    let (sim, provider) = start_with(BetrustSimConfig::default(), |c| c.timeout_ms = 500).await;
    sim.inject(FaultRule::always(Fault::Hang).on_path("/transactions"));
    let started = Instant::now();
    let err = provider.create(&request("order-1")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn refused_create_is_rejected_with_our_words_and_no_personal_data() {
    let sim_config = BetrustSimConfig::default();
    let (sim, provider) = start_with(sim_config, |c| c.company_id = "999".into()).await;
    let err = provider.create(&request("order-1")).await.unwrap_err();
    match &err {
        ProviderError::Rejected { code, message } => {
            assert_eq!(code, "400");
            assert!(message.contains("company_id"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.to_string().contains(NIN));
    assert_eq!(sim.transactions_created(), 0);
}

#[tokio::test]
async fn cancel_is_unsupported_and_there_is_no_standing() {
    let (_sim, provider) = start().await;
    assert_eq!(
        provider.cancel("x").await.unwrap_err(),
        ProviderError::Unsupported("cancel")
    );
    assert_eq!(provider.subject_standing("cus_42").await.unwrap(), None);
    assert_eq!(provider.kind(), "betrust");
}

/// Accepts one HTTP request on `listener`, answers 200 and returns its body.
async fn receive_one_post(listener: TcpListener) -> Vec<u8> {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the body arrived");
        raw.extend_from_slice(&chunk[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        if raw.len() >= end + 4 + length {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            return raw[end + 4..end + 4 + length].to_vec();
        }
    }
}

#[tokio::test]
async fn the_simulators_webhook_names_the_transaction() {
    let (sim, provider) = start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!(
        "http://{}/hooks/betrust-test/token",
        listener.local_addr().unwrap()
    );
    let received = tokio::spawn(receive_one_post(listener));

    let mut req = request("order-1");
    req.webhook_url = Some(hook_url.clone());
    let created = provider.create(&req).await.unwrap();
    assert_eq!(
        sim.transaction(&created.provider_reference).unwrap()["webhook"],
        hook_url.as_str()
    );
    sim.finish(&created.provider_reference, Outcome::Approved)
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .unwrap()
        .unwrap();
    let uuid = provider
        .verify_webhook(IncomingWebhook {
            headers: &[],
            body: &body,
        })
        .unwrap();
    assert_eq!(uuid, created.provider_reference);

    assert!(
        provider
            .verify_webhook(IncomingWebhook {
                headers: &[],
                body: b"{\"no\":\"uuid\"}",
            })
            .is_err()
    );
}

/// A server on 127.0.0.1 that answers every connection with `answer`; counts the connections.
async fn scripted_server(answer: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = vec![0u8; 16 * 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (base, seen)
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (elsewhere, stolen) = scripted_server(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
    )
    .await;
    let (redirecting, _) = scripted_server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/stolen\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n"
    ))
    .await;
    let (_sim, betrust) = start_with(BetrustSimConfig::default(), |config| {
        config.api_base_url = redirecting;
    })
    .await;
    let error = betrust.create(&request("redirected")).await.unwrap_err();
    assert!(!matches!(error, ProviderError::NotFound), "{error:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stolen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the person's data went to the redirect target"
    );
}

#[tokio::test]
async fn failures_are_classed_by_what_they_may_have_started() {
    let (sim, provider) = start_with(BetrustSimConfig::default(), |c| c.timeout_ms = 500).await;
    provider.create(&request("warm")).await.unwrap();
    let create = "POST /transaction-engine";
    let cases = [
        // Said no before doing anything: another provider may take it.
        (Fault::Status(503), CreateFailure::NotStarted),
        (Fault::Status(429), CreateFailure::NotStarted),
        // Sent, and the answer says nothing about the work: it may exist.
        (Fault::Status(500), CreateFailure::Ambiguous),
        (Fault::Status(502), CreateFailure::Ambiguous),
        (Fault::Hang, CreateFailure::Ambiguous),
        (
            Fault::LateAnswer(Duration::from_secs(2)),
            CreateFailure::Ambiguous,
        ),
        (Fault::Malformed, CreateFailure::Ambiguous),
        // Refused as an answer.
        (Fault::Status(400), CreateFailure::Refused),
    ];
    for (i, (fault, class)) in cases.into_iter().enumerate() {
        sim.inject(FaultRule::once(fault.clone()).on_path(create));
        let err = provider
            .create(&request(&format!("class-{i}")))
            .await
            .unwrap_err();
        assert_eq!(err.on_create(), class, "{fault:?}: {err:?}");
    }
    // The token call starts nothing, whatever becomes of it.
    let (sim, provider) = start_with(BetrustSimConfig::default(), |c| c.timeout_ms = 500).await;
    sim.inject(FaultRule::once(Fault::Hang).on_path("/oauth/token"));
    let err = provider.create(&request("token")).await.unwrap_err();
    assert_eq!(err.on_create(), CreateFailure::NotStarted, "{err:?}");
    // Nothing listening: the connection is refused.
    let dead = BetrustProvider::new(
        "betrust-dead",
        {
            let mut c = config_for(&sim, &BetrustSimConfig::default());
            c.auth_base_url = "http://127.0.0.1:9".into();
            c.api_base_url = "http://127.0.0.1:9/transaction-engine/v1".into();
            c
        },
        &kyc_core::outbound::Outbound::new(kyc_core::outbound::Allowlist::new(&[
            "127.0.0.1".into()
        ])),
    )
    .unwrap();
    let err = dead.create(&request("refused")).await.unwrap_err();
    assert_eq!(err.on_create(), CreateFailure::NotStarted, "{err:?}");
}

#[tokio::test]
async fn an_ambiguous_create_is_found_by_its_key_and_sent_again_safely() {
    let (sim, provider) = start_with(BetrustSimConfig::default(), |c| c.timeout_ms = 500).await;
    assert!(provider.create_is_idempotent());
    assert_eq!(
        provider.find_created(&request("late-1")).await.unwrap(),
        Found::Absent
    );
    sim.inject(
        FaultRule::once(Fault::LateAnswer(Duration::from_secs(2)))
            .on_path("POST /transaction-engine"),
    );
    let err = provider.create(&request("late-1")).await.unwrap_err();
    assert_eq!(err.on_create(), CreateFailure::Ambiguous);
    let Found::Created(found) = provider.find_created(&request("late-1")).await.unwrap() else {
        panic!("the transaction made before the late answer is not found");
    };
    // A lookup holding no national id (the reconciler's) finds it by the key alone.
    let mut partial = request("late-1");
    partial.subject.national_id = None;
    partial.subject_partial = true;
    assert_eq!(
        provider.find_created(&partial).await.unwrap(),
        Found::Created(found.clone())
    );
    let again = provider.create(&request("late-1")).await.unwrap();
    assert_eq!(again.provider_reference, found.provider_reference);
    assert_eq!(sim.transactions_created(), 1);
}

#[tokio::test]
async fn a_duplicate_transaction_id_for_another_person_is_not_adopted() {
    let (sim, provider) = start().await;
    let first = provider.create(&request("shared-key")).await.unwrap();
    let mut other = request("shared-key");
    other.subject = serde_json::from_value(json!({
        "id": "cus_43", "country": "CL", "national_id": "22222222-2"
    }))
    .unwrap();
    for call in [provider.create(&other).await, {
        match provider.find_created(&other).await {
            Ok(found) => panic!("{found:?}"),
            Err(e) => Err(e),
        }
    }] {
        let err = call.unwrap_err();
        assert!(matches!(err, ProviderError::NotOurs(_)), "{err:?}");
        assert!(
            !err.to_string().contains(&first.provider_reference),
            "{err}"
        );
        assert!(!err.to_string().contains("22222222"), "{err}");
    }
    assert_eq!(sim.transactions_created(), 1);
}
