//! Stopping with SIGTERM, as an orchestrator does: open requests are answered, background jobs
//! finish what they started and record it, and the process exits cleanly.

use crate::events::{Receiver, events_of, world_for};
use crate::harness::*;
use kyc_sandbox::{Fault, FaultRule, Outcome};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_answers_the_request_under_way_and_exits_cleanly() {
    let mut w = World::start().await;
    w.betrust.inject(
        FaultRule::once(Fault::Latency(Duration::from_millis(1500))).on_path("/transactions"),
    );
    let (http, url) = (w.http.clone(), format!("{}/v1/verifications", w.base));
    let create = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(ALPHA_KEY)
            .json(&person("term-1", "sub-term-1", "CL"))
            .send()
            .await
    });
    // The signal comes while the create waits on BeTrust.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.betrust.requests_seen("POST /transaction-engine") == 0 {
        assert!(
            Instant::now() < deadline,
            "the create never reached BeTrust"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (exit, _) = w.terminate().await;
    let answer = create
        .await
        .unwrap()
        .expect("an answer, not a dropped connection");
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert!(exit.success(), "{exit:?}\n{}", w.log());
    assert!(w.log().contains("stopped"), "{}", w.log());
}

#[tokio::test]
async fn sigterm_lets_a_webhook_delivery_under_way_finish_and_records_it() {
    let receiver = Receiver::slow(Duration::from_secs(2)).await;
    let mut w = world_for(&receiver, Options::default()).await;
    let v = w.create(person("term-2", "sub-term-2", "CL")).await;
    w.finish(&v, Outcome::Approved).await;
    // The receiver has the request and holds it: the delivery is under way.
    let sent = receiver.wait_for(1).await;
    let (exit, _) = w.terminate().await;
    assert!(exit.success(), "{exit:?}\n{}", w.log());
    // Its attempt was recorded before the exit: after a restart the event reads delivered at
    // once, not pending under a lease left by the old process.
    w.restart();
    let events = events_of(&w, &v).await;
    let event = events
        .iter()
        .find(|e| e["id"] == sent[0].id.as_str())
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(event["state"], "delivered", "{events:?}\n{}", w.log());
    assert_eq!(
        event["attempts"].as_array().map(Vec::len),
        Some(1),
        "{event}"
    );
}
