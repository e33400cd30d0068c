//! The events a tenant's receiver gets are the ones the spec's `webhooks` describe: each body
//! validates against its schema there, and its signing headers are the ones named there.

use crate::events::{Receiver, world_for};
use crate::harness::*;
use kyc_sandbox::Outcome;
use serde_json::{Value, json};

/// How `body` fails `schema`, a schema of `spec` whose `$ref`s point into it (empty: it passes).
pub fn valid(spec: &Value, schema: &Value, body: &Value) -> Vec<String> {
    let mut root = spec.clone();
    root["$defs"] = json!({ "target": schema });
    root["$ref"] = json!("#/$defs/target");
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .expect("the spec's schemas compile");
    validator
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

#[tokio::test]
async fn a_delivered_event_is_the_one_the_specs_webhooks_describe() {
    let receiver = Receiver::start(vec![], 200).await;
    let w = world_for(&receiver, Options::default()).await;
    let v = w.create(person("hook-spec", "hook-spec", "CL")).await;
    w.finish(&v, Outcome::Approved).await;
    let got = receiver.wait_for(1).await;
    let (status, spec) = w.get("/openapi.json", ALPHA_KEY).await;
    assert_eq!(status, 200);
    let hook = &spec["webhooks"]["verification.updated"]["post"];
    let schema = &hook["requestBody"]["content"]["application/json"]["schema"];
    let errors = valid(&spec, schema, &got[0].body);
    assert!(errors.is_empty(), "{errors:?}\n{}", got[0].body);
    assert_eq!(got[0].body["data"]["id"], v["id"]);
    assert!(got[0].verified, "signed as the spec says");
    let headers: Vec<&str> = hook["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    );
    // The check refuses a body of another shape.
    let mut wrong = got[0].body.clone();
    wrong["type"] = json!("verification.created");
    assert!(!valid(&spec, schema, &wrong).is_empty());
    // Every event type the gateway sends is described.
    let described: Vec<&String> = spec["webhooks"].as_object().unwrap().keys().collect();
    for event in [
        "verification.updated",
        "experiment.stopped",
        "endpoint.disabled",
    ] {
        assert!(
            described.iter().any(|d| *d == event),
            "{event}: {described:?}"
        );
    }
}
