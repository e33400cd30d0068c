//! Several gateway processes on one PostgreSQL, as replicas behind a load balancer run.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn a_create_sent_to_two_replicas_at_once_makes_one_provider_verification() {
    let url = postgres_url();
    let w = World::start_with(Options {
        store_url: Some(url),
        ..Default::default()
    })
    .await;
    let replica = w.start_replica();
    let run = ulid::Ulid::generate().to_string();
    for n in 0..20 {
        let reference = format!("replica-{run}-{n}");
        let body = person(&reference, &format!("sub-{reference}"), "CL");
        let send = |base: &str| {
            w.http
                .post(format!("{base}/v1/verifications"))
                .bearer_auth(ALPHA_KEY)
                .json(&body)
                .send()
        };
        let (a, b) = tokio::join!(send(&w.base), send(&replica.base));
        let (a, b) = (a.unwrap(), b.unwrap());
        let statuses = [a.status(), b.status()];
        let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
        assert!(
            statuses.contains(&StatusCode::CREATED)
                && statuses
                    .iter()
                    .all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK),
            "{statuses:?} {a} {b}"
        );
        assert_eq!(a["id"], b["id"], "one verification for one reference");
        assert_eq!(a["provider_reference"], b["provider_reference"]);
    }
    assert_eq!(
        w.betrust.transactions_created(),
        20,
        "one provider transaction per reference"
    );
}
