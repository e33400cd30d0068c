//! Each verification keeps why it went where it went, and the list filters by provider and by
//! creation time.

use crate::harness::*;
use kyc_sandbox::{Fault, FaultRule};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["reference"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_routing_reason_is_kept_and_the_list_filters_by_provider_and_time() {
    let w = World::start().await;
    let by_default = w.create(person("rt-default", "sub-rt-1", "CL")).await;
    assert_eq!(
        by_default["routing"],
        json!({"reason": "default", "tried": []})
    );
    let by_rule = w.create(person("rt-rule", "sub-rt-2", "AR")).await;
    assert_eq!(by_rule["routing"], json!({"reason": "rule", "tried": []}));
    let mut chosen = person("rt-override", "sub-rt-3", "CL");
    chosen["provider"] = json!("gu1");
    let by_override = w.create(chosen).await;
    assert_eq!(
        by_override["routing"],
        json!({"reason": "override", "tried": []})
    );

    // Beta's default is gu1, with BeTrust as fallback.
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    w.gu1.inject(FaultRule::always(Fault::Status(503)));
    let (status, by_fallback) = w
        .post(
            "/v1/verifications",
            BETA_KEY,
            person("rt-fallback", "sub-rt-4", "AR"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{by_fallback}");
    assert_eq!(
        by_fallback["routing"],
        json!({"reason": "fallback", "tried": ["gu1"]})
    );
    // Kept as stored: the read agrees with the create's answer.
    let path = format!("/v1/verifications/{}", by_fallback["id"].as_str().unwrap());
    let (_, read) = w.get(&path, BETA_KEY).await;
    assert_eq!(read["routing"], by_fallback["routing"]);

    let (status, on_gu1) = w.get("/v1/verifications?provider=gu1", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{on_gu1}");
    assert_eq!(ids(&on_gu1), ["rt-override", "rt-rule"]);
    let (_, since) = w
        .get(
            &format!(
                "/v1/verifications?created_after={}",
                between.replace('+', "%2B")
            ),
            BETA_KEY,
        )
        .await;
    assert_eq!(ids(&since), ["rt-fallback"]);
    let (_, before) = w
        .get(
            &format!("/v1/verifications?created_before={between}"),
            ALPHA_KEY,
        )
        .await;
    assert_eq!(ids(&before), ["rt-override", "rt-rule", "rt-default"]);
    let (status, problem) = w
        .get("/v1/verifications?created_after=yesterday", ALPHA_KEY)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "created_after");
    assert!(!problem.to_string().contains("yesterday"));
}
