//! A read-only key (`scope = "read"`) reads the figures, the policy and previews, and is refused
//! with 403 on everything else, as the served spec says operation by operation.

use crate::harness::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The operations a read-only key may call.
const READABLE: [(&str, &str); 4] = [
    ("get", "/v1/stats"),
    ("get", "/v1/experiments/{name}"),
    ("get", "/v1/policy"),
    ("post", "/v1/policy/preview"),
];

/// A path of the spec with its parameters filled in.
fn filled(path: &str) -> String {
    path.replace("{id}", "ver_01JD5Z8K3W6Q2B7N4R9T0V1X2Y")
        .replace("{name}", "gu1-in-cl")
        .replace("{subject_id}", "customer-42")
}

#[tokio::test]
async fn a_read_only_key_reads_the_figures_and_is_refused_every_other_operation() {
    let w = World::start().await;
    let (status, spec) = w.get("/openapi.json", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK);
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation.get("security").is_none() {
                continue;
            }
            checked += 1;
            let readable = READABLE.contains(&(method.as_str(), path.as_str()));
            // The spec says which answer 403.
            let says_403 = operation["responses"].get("403").is_some();
            assert_eq!(says_403, !readable, "{method} {path}: 403 in the spec");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method == Method::POST).then(|| json!({}));
            let (status, headers, problem) = w
                .call(
                    method.clone(),
                    &filled(path),
                    Some(ALPHA_READ_KEY),
                    body.clone(),
                )
                .await;
            if readable {
                assert_ne!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
                assert_eq!(problem["code"], "forbidden", "{problem}");
                assert_eq!(
                    headers["content-type"], "application/problem+json",
                    "{method} {path}"
                );
                assert!(problem["detail"].as_str().unwrap().contains("read-only"));
                // The same call with a full-access key is not refused for its key.
                let (status, _, _) = w.call(method, &filled(path), Some(ALPHA_KEY), body).await;
                assert_ne!(status, StatusCode::FORBIDDEN, "{path} with a full key");
            }
        }
    }
    assert!(checked >= 15, "only {checked} operations in the spec");

    // A create with the read-only key makes nothing.
    let (status, _) = w
        .post(
            "/v1/verifications",
            ALPHA_READ_KEY,
            person("ro-1", "ro-1", "CL"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, list) = w.get("/v1/verifications?reference=ro-1", ALPHA_KEY).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");

    // It reads what a full key reads, and the policy says which key it is.
    let v = w.create(person("ro-2", "ro-2", "CL")).await;
    assert!(v["id"].is_string());
    for path in [
        "/v1/stats?group_by=provider",
        "/v1/stats?group_by=provider,country",
    ] {
        let (status, read) = w.get(path, ALPHA_READ_KEY).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read, w.get(path, ALPHA_KEY).await.1, "{path}");
    }
    let (_, policy) = w.get("/v1/policy", ALPHA_READ_KEY).await;
    assert_eq!(
        policy["calling_key"],
        json!({"name": "pm", "expires_at": null, "scope": "read"})
    );
    let (_, policy) = w.get("/v1/policy", ALPHA_KEY).await;
    assert_eq!(policy["calling_key"]["scope"], "full", "{policy}");
    let keys: Vec<&Value> = policy["api_keys"].as_array().unwrap().iter().collect();
    assert!(
        keys.iter()
            .any(|k| k["name"] == "pm" && k["scope"] == "read"),
        "{policy}"
    );
    let preview = json!({"routing": {"default": "gu1"}, "since_days": 7});
    let (status, replay) = w.post("/v1/policy/preview", ALPHA_READ_KEY, preview).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["total"], 1, "{replay}");
}
