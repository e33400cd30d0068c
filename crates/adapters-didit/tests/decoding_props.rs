//! Property tests over Didit's wire decoding and mapping: a decision answer damaged at random,
//! and arbitrary webhook bodies that carry a valid signature, never panic. They decode or are
//! refused with an error. Cases: `PROPTEST_CASES` (256 by default).

use hmac::{Hmac, KeyInit, Mac};
use kyc_adapters_didit::wire::SessionDecision;
use kyc_adapters_didit::{DiditConfig, DiditProvider, SessionStatus};
use kyc_core::{IncomingWebhook, Provider};
use kyc_sandbox::mutate_json;
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Value, json};

const SECRET: &str = "didit-props-webhook-secret";

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/decision_declined.json")).unwrap()
}

fn provider() -> DiditProvider {
    let mut config = DiditConfig::new(
        "http://127.0.0.1:9",
        SecretString::from("k".to_string()),
        "5f1c0d2e-8b3a-4c6d-9e7f-0a1b2c3d4e5f",
    );
    config.webhook_secret = Some(SecretString::from(SECRET.to_string()));
    let outbound =
        kyc_core::outbound::Outbound::new(kyc_core::outbound::Allowlist::new(
            &["127.0.0.1".into()],
        ));
    DiditProvider::new("didit-props", config, &outbound).unwrap()
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn the_recorded_decline_maps_to_its_checks_and_reason() {
    let decision: SessionDecision = serde_json::from_value(fixture()).unwrap();
    let status = SessionStatus::parse(&decision.status).unwrap();
    let reason = decision.reason(status).unwrap();
    assert_eq!(reason.code, "verification_failed");
    assert_eq!(
        reason.provider_code.as_deref(),
        Some("Declined/LOW_FACE_MATCH_SIMILARITY")
    );
    let checks = decision.decision().unwrap();
    assert_eq!(checks.face_match, kyc_core::CheckOutcome::Fail);
    assert_eq!(checks.scores.liveness, Some(98.5));
    let identity = decision.identity();
    assert_eq!(identity.national_id.unwrap().into_inner(), "20123456");
    // Personal fields never print.
    let printed = format!("{:?}", decision.identity());
    assert!(!printed.contains("SANDBOX"), "{printed}");
}

proptest! {
    // A failure is reported in the output, not written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_decision_maps_or_is_refused(choices in proptest::collection::vec(any::<u8>(), 0..600)) {
        let answer = mutate_json(&fixture(), &mut choices.into_iter());
        if let Ok(decision) = serde_json::from_value::<SessionDecision>(answer) {
            let _ = decision.decision();
            let _ = decision.identity();
            if let Some(status) = SessionStatus::parse(&decision.status) {
                let _ = decision.reason(status);
            }
        }
    }

    #[test]
    fn a_signed_but_damaged_webhook_is_refused_without_panic(choices in proptest::collection::vec(any::<u8>(), 0..400), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let didit = provider();
        let envelope = json!({
            "session_id": "11111111-2222-4333-8444-555555555555",
            "status": "Declined",
            "webhook_type": "status.updated",
            "timestamp": chrono::Utc::now().timestamp(),
            "decision": fixture(),
        });
        let damaged = serde_json::to_vec(&mutate_json(&envelope, &mut choices.into_iter())).unwrap();
        for body in [damaged, raw] {
            let headers = vec![("x-signature".to_string(), signature(&body))];
            let _ = didit.verify_webhook(IncomingWebhook { headers: &headers, body: &body });
        }
    }
}
