//! Property tests over gu1's wire decoding and mapping: recorded answers damaged at random, and
//! arbitrary webhook bodies that carry a valid signature, never panic. They decode or are
//! refused with an error. Cases: `PROPTEST_CASES` (256 by default).

use hmac::{Hmac, KeyInit, Mac};
use kyc_adapters_gu1::transformers::{Gu1EntityKycStatus, Gu1Validation};
use kyc_adapters_gu1::{Gu1Config, Gu1Provider};
use kyc_core::{Identity, IncomingWebhook, Provider, ProviderVerification};
use kyc_sandbox::mutate_json;
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "gu1-props-webhook-secret";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn provider() -> Gu1Provider {
    let mut config = Gu1Config::new(
        "http://127.0.0.1:9",
        SecretString::from("gk_test".to_string()),
    );
    config.webhook_secret = Some(SecretString::from(SECRET.to_string()));
    Gu1Provider::new(
        "gu1-props",
        config,
        &kyc_core::outbound::Outbound::new(kyc_core::outbound::Allowlist::new(&[
            "127.0.0.1".into()
        ])),
    )
    .unwrap()
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

proptest! {
    // A failure is reported in the output, not written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_validation_maps_or_is_refused(choices in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut choices = choices.into_iter();
        for name in ["sync_validation_approved.json", "validation_array_shape.json", "create_validation_201.json"] {
            let answer = mutate_json(&fixture(name), &mut choices);
            if let Ok(validation) = serde_json::from_value::<Gu1Validation>(answer) {
                let _ = Identity::from(&validation);
                let _ = ProviderVerification::try_from(validation);
            }
        }
        let status = mutate_json(&fixture("entity_kyc_status.json"), &mut choices);
        let _ = serde_json::from_value::<Gu1EntityKycStatus>(status);
    }

    #[test]
    fn a_signed_but_damaged_webhook_is_refused_without_panic(choices in proptest::collection::vec(any::<u8>(), 0..400), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let gu1 = provider();
        let damaged = serde_json::to_vec(&mutate_json(&fixture("webhook_approved.json"), &mut choices.into_iter())).unwrap();
        for body in [damaged, raw] {
            let headers = vec![("x-webhook-signature".to_string(), signature(&body))];
            let _ = gu1.verify_webhook(IncomingWebhook { headers: &headers, body: &body });
        }
    }
}
