//! Didit's published webhook signature vectors (its WordPress plugin's fixtures): every case's
//! `X-Signature` verifies over the raw body, and any change to the body, the signature, the
//! secret or the time makes it fail. The time is the body's signed `timestamp`.

use kyc_adapters_didit::{SIGNATURE_WINDOW_SECONDS, verify_webhook_signature};
use kyc_core::WebhookError;
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("fixtures/webhook-signatures.json")).unwrap()
}

#[test]
fn every_published_vector_verifies_over_the_raw_body() {
    let vectors = vectors();
    let secret = vectors["secret"].as_str().unwrap().as_bytes();
    let at = vectors["timestamp"].as_i64().unwrap();
    let cases = vectors["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 8);
    for (name, case) in cases {
        let body = case["body"].as_str().unwrap().as_bytes();
        let signature = case["signatures"]["raw"].as_str().unwrap();
        let envelope = verify_webhook_signature(secret, body, Some(signature), at)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(envelope.timestamp, at, "{name}");
        assert_eq!(envelope.session_id, vectors["session_id"], "{name}");
        assert_eq!(envelope.webhook_type.as_deref(), Some("status.updated"));
        assert_eq!(envelope.vendor_data.as_deref(), Some("wp-42"));
    }
}

#[test]
fn a_changed_body_signature_secret_or_time_is_refused() {
    let vectors = vectors();
    let secret = vectors["secret"].as_str().unwrap();
    let at = vectors["timestamp"].as_i64().unwrap();
    let case = &vectors["cases"]["basic_approved"];
    let body = case["body"].as_str().unwrap();
    let signature = case["signatures"]["raw"].as_str().unwrap();
    let check = |secret: &str, body: &str, signature: Option<&str>, now| {
        verify_webhook_signature(secret.as_bytes(), body.as_bytes(), signature, now)
    };
    assert!(check(secret, body, Some(signature), at).is_ok());
    let declined = body.replace("\"status\":\"Approved\"", "\"status\":\"Declined\"");
    let wrong = [
        check(secret, &declined, Some(signature), at),
        check("another-secret", body, Some(signature), at),
        check("", body, Some(signature), at),
        check(secret, body, Some(&signature.replace('c', "d")), at),
        check(secret, body, Some("not hex"), at),
        check(secret, body, None, at),
        // A fresh timestamp in the body breaks the signature: a replay cannot renew it.
        check(
            secret,
            &body.replace("\"timestamp\":1774970000", "\"timestamp\":1774970400"),
            Some(signature),
            at + 400,
        ),
        // Replayed after the window, or stamped too far ahead.
        check(
            secret,
            body,
            Some(signature),
            at + SIGNATURE_WINDOW_SECONDS + 1,
        ),
        check(
            secret,
            body,
            Some(signature),
            at - SIGNATURE_WINDOW_SECONDS - 1,
        ),
    ];
    for (i, answer) in wrong.into_iter().enumerate() {
        assert!(
            matches!(answer, Err(WebhookError::BadSignature)),
            "case {i}: {answer:?}"
        );
    }
    // The V2 signature signs another form of the body: it is not taken for X-Signature.
    let unicode = &vectors["cases"]["unicode_names"];
    let v2 = unicode["signatures"]["v2"].as_str().unwrap();
    let raw_body = unicode["body"].as_str().unwrap();
    assert!(check(secret, raw_body, Some(v2), at).is_err());
}

#[test]
fn a_signed_body_that_is_not_a_didit_webhook_is_named_so() {
    use hmac::{Hmac, KeyInit, Mac};
    let sign = |body: &str| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    for body in [
        "[]",
        "{\"status\":\"Approved\",\"timestamp\":10}",
        "{\"session_id\":\" \",\"timestamp\":10}",
    ] {
        let answer = verify_webhook_signature(b"s3cret", body.as_bytes(), Some(&sign(body)), 10);
        assert!(
            matches!(answer, Err(WebhookError::BadBody(_))),
            "{body}: {answer:?}"
        );
    }
}
