//! Property tests over BeTrust's wire decoding and mapping: recorded answers, mutated at random
//! (values replaced by other JSON types, keys dropped), and arbitrary bytes, never panic. They
//! decode or are refused with an error. Cases: `PROPTEST_CASES` (256 by default).

use kyc_adapters_betrust::transformers::{
    CredentialInformation, Transaction, WebhookBody, parse_envelope_data,
};
use kyc_adapters_betrust::{BetrustConfig, BetrustProvider};
use kyc_core::outbound::Outbound;
use kyc_core::{Identity, IncomingWebhook, Provider, ProviderVerification};
use kyc_sandbox::mutate_json;
use proptest::prelude::*;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A provider with default settings, built once: its webhook check needs no network.
fn provider() -> &'static BetrustProvider {
    static PROVIDER: std::sync::LazyLock<BetrustProvider> = std::sync::LazyLock::new(|| {
        let config = BetrustConfig::new("id", "secret".to_string().into(), "201");
        BetrustProvider::new("betrust-props", config, &Outbound::default()).unwrap()
    });
    &PROVIDER
}

proptest! {
    // A failure is reported in the output, not written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_transaction_maps_or_is_refused(choices in proptest::collection::vec(any::<u8>(), 0..400)) {
        let answer = mutate_json(&fixture("transaction_answer.json"), &mut choices.into_iter());
        let bytes = serde_json::to_vec(&answer).unwrap();
        if let Ok(transaction) = parse_envelope_data::<Transaction>(&bytes, "transaction") {
            let _ = ProviderVerification::try_from(transaction);
        }
        if let Ok(data) = serde_json::from_value::<Transaction>(answer["data"].clone()) {
            let _ = ProviderVerification::try_from(data);
        }
    }

    #[test]
    fn mutated_credentials_and_webhooks_decode_or_are_refused(choices in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut choices = choices.into_iter();
        let credentials = mutate_json(&fixture("credential_information.json"), &mut choices);
        if let Ok(info) = parse_envelope_data::<CredentialInformation>(&serde_json::to_vec(&credentials).unwrap(), "credential") {
            let _ = Identity::try_from(info);
        }
        let webhook = mutate_json(&fixture("webhook_compact.json"), &mut choices);
        let body = serde_json::to_vec(&webhook).unwrap();
        // The verifier itself: it names a verification or refuses, never panics, and never
        // names one with spaces around it.
        if let Ok(id) = provider().verify_webhook(IncomingWebhook { headers: &[], body: &body }) {
            prop_assert!(!id.is_empty() && id.trim() == id);
        }
        let _ = serde_json::from_value::<WebhookBody>(webhook);
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_envelope_data::<Transaction>(&bytes, "transaction");
        let _ = parse_envelope_data::<CredentialInformation>(&bytes, "credential");
        let _ = provider().verify_webhook(IncomingWebhook { headers: &[], body: &bytes });
    }
}
