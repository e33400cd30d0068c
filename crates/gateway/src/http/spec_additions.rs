//! What the handlers' entries cannot say by themselves, added to the published spec: a real
//! example of every answer, the events the gateway sends to a tenant's `webhook_url` (OpenAPI
//! 3.1's `webhooks`, with their payloads and signing headers), an example problem for every error
//! answer, and the rule that a routing names a default or a split.

use serde_json::{Value, json};

/// The spec's description: what the API is, and the first steps through it.
pub const DESCRIPTION: &str = "One normalized identity-verification (KYC) API in front of \
several providers.

**Getting started**
1. Authenticate every call with `Authorization: Bearer <tenant api key>` (the sandbox's is \
`kyc_sandbox_demo_key`).
2. `POST /v1/verifications` with your `reference` (the idempotency key: sending it again answers \
the same verification) and the `subject`; the answer's `verification_url` is where the person \
goes.
3. Learn the outcome from the signed events the gateway sends to your `webhook_url` (see \
*Webhooks*: verify the `webhook-signature`, deduplicate on `webhook-id`), or by \
`GET /v1/verifications/{id}`.
4. Ask `GET /v1/subjects/{subject_id}/kyc` whether a person is verified now.

Errors are RFC 9457 problem documents with a stable `code` and, for bad input, the `field` at \
fault. Product managers compare providers, watch experiments and replay draft routings on the \
dashboard at `/dashboard` (a read-only key, `scope = \"read\"`, is enough), or through \
`GET /v1/stats`, `GET /v1/experiments/{name}` and `POST /v1/policy/preview`.";

/// Real answers of the `--scenario` sandbox (its instance names), one per response schema, and
/// the history's.
const RESPONSE_EXAMPLES: &str = include_str!("response_examples.json");

/// Adds the response examples, the webhooks, the problem examples and the routing rule to
/// `spec`.
pub fn add(spec: &mut Value) {
    let examples: Value = serde_json::from_str(RESPONSE_EXAMPLES).expect("the examples are JSON");
    for (schema, example) in examples["schemas"].as_object().into_iter().flatten() {
        spec["components"]["schemas"][schema]["example"] = example.clone();
    }
    spec["paths"]["/v1/verifications/{id}/history"]["get"]["responses"]["200"]["content"]["application/json"]
        ["example"] = examples["history"].clone();
    add_webhooks(spec);
    add_problem_examples(spec);
    // A routing needs a default or a split (with some weight); the schema says so, as the code
    // refuses a draft with neither.
    spec["components"]["schemas"]["Routing"]["anyOf"] = json!([
        {"required": ["default"], "properties": {"default": {"type": "string"}}},
        // Some weight: not every weight 0 (an empty split has none either).
        {"required": ["split"], "properties": {"split": {"not": {"additionalProperties": {"const": 0}}}}}
    ]);
}

/// A problem answer as the gateway words it for `status`.
fn problem_example(status: u16) -> Value {
    let (code, title, detail, field) = match status {
        400 => (
            "invalid_request",
            "Invalid request",
            "the body is not valid JSON (line 1, column 14)",
            None,
        ),
        401 => (
            "unauthorized",
            "Unauthorized",
            "a valid API key is required: send `Authorization: Bearer <key>`",
            None,
        ),
        403 => (
            "forbidden",
            "Forbidden",
            "this API key is read-only (scope = \"read\"): it reads stats, experiments, the policy \
             and previews; this operation needs a full-access key",
            None,
        ),
        404 => (
            "not_found",
            "Not found",
            "no such verification for this tenant",
            None,
        ),
        408 => (
            "request_timeout",
            "Request timeout",
            "the body did not arrive in time; send it whole",
            None,
        ),
        409 => (
            "conflict",
            "Conflict",
            "this reference was already used with a different request body",
            None,
        ),
        413 => (
            "payload_too_large",
            "Payload too large",
            "the body is over the 64 KiB limit",
            None,
        ),
        415 => (
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as JSON with `Content-Type: application/json`",
            None,
        ),
        422 => (
            "invalid_request",
            "Invalid request",
            "must be an ISO 3166-1 alpha-2 code such as \"CL\"",
            Some("subject.country"),
        ),
        429 => (
            "rate_limited",
            "Too many requests",
            "this tenant's request rate limit is spent; retry after the Retry-After seconds (the \
             RateLimit headers show the budget)",
            None,
        ),
        502 => (
            "provider_error",
            "Provider error",
            "provider gu1 answered something the gateway cannot read",
            None,
        ),
        _ => (
            "provider_unavailable",
            "Provider unavailable",
            "provider gu1 is unavailable (connection refused); retry later",
            None,
        ),
    };
    json!({
        "type": format!("https://kyc-gateway.dev/problems/{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "field": field,
        "request_id": "req_01JD5Z8K3W6Q2B7N4R9T0V1X2Y",
    })
}

/// Gives every problem answer of every operation an example of its own status.
fn add_problem_examples(spec: &mut Value) {
    let Some(paths) = spec["paths"].as_object_mut() else {
        return;
    };
    for operations in paths.values_mut() {
        for operation in operations
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let media = response
                    .get_mut("content")
                    .and_then(|c| c.get_mut("application/problem+json"))
                    .and_then(Value::as_object_mut);
                if let Some(media) = media
                    && !media.contains_key("example")
                {
                    let example = problem_example(status.parse().unwrap_or(503));
                    media.insert("example".into(), example);
                }
            }
        }
    }
}

/// One event the gateway `POST`s to a tenant's `webhook_url`.
fn webhook(summary: &str, description: &str, event: &str, data: Value, example: Value) -> Value {
    let header = |name: &str, description: &str, example: &str| {
        json!({
            "name": name, "in": "header", "required": true, "description": description,
            "schema": {"type": "string"}, "example": example,
        })
    };
    json!({"post": {
        "summary": summary,
        "description": format!("{description} Signed as Standard Webhooks: verify \
    `webhook-signature` over `<webhook-id>.<webhook-timestamp>.<body>` with the tenant's \
    `webhook_secret` (`whsec_<base64>`), refuse a timestamp more than 5 minutes away, and \
    deduplicate on `webhook-id`: delivery is at least once, and a retry keeps the id."),
        "parameters": [
            header("webhook-id", "The event's id, the same on every attempt.", "evt_01JD5Z9Q0M3T6B1V8X4C2N7R5K"),
            header("webhook-timestamp", "When this attempt was signed, in Unix seconds.", "1764930000"),
            header(
                "webhook-signature",
                "`v1,<base64 HMAC-SHA256>`; several, separated by spaces, while the secret is rotated.",
                "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
            ),
        ],
        "requestBody": {"required": true, "content": {"application/json": {
            "schema": {
                "type": "object",
                "required": ["type", "timestamp", "data"],
                "properties": {
                    "type": {"const": event},
                    "timestamp": {"type": "string", "format": "date-time", "description": "When the change happened."},
                    "data": data,
                },
            },
            "example": {"type": event, "timestamp": "2026-12-05T10:20:00.123456Z", "data": example},
        }}},
        "responses": {
            "2XX": {"description": "Received: any 2xx ends the delivery."},
            "410": {"description": "Gone: the gateway disables this URL until the policy names another."},
            "429": {"description": "Slow down: every delivery to this URL waits for the `Retry-After` (at most an hour); 502 and 504 too."},
            "default": {"description": "Anything else (or no answer in time) is retried on the tenant's schedule."},
        },
    }})
}

/// The events a tenant receives, under `webhooks`.
fn add_webhooks(spec: &mut Value) {
    let verification = spec["components"]["schemas"]["Verification"]["example"].clone();
    let lapse = <crate::lifecycle::expiry::ApprovalLapse as utoipa::PartialSchema>::schema();
    spec["components"]["schemas"]["ApprovalLapse"] =
        serde_json::to_value(lapse).expect("a schema is JSON");
    let lapse_example = json!({
        "subject_id": "customer-42",
        "verification_id": "ver_01M92WAK5TXR2XB9P1NR502Y28",
        "reference": "order-1001",
        "provider": "betrust-sandbox",
        "verified_at": "2025-12-05T10:34:51.931527Z",
        "expires_at": "2026-12-05T10:34:51.931527Z",
    });
    spec["webhooks"] = json!({
        "verification.updated": webhook(
            "A verification's status changed",
            "Sent for each change of status of one of the tenant's verifications; `data` is the \
    verification as `GET /v1/verifications/{id}` answers it after the change. A verification's \
    events are delivered in the order of its changes.",
            "verification.updated",
            json!({"$ref": "#/components/schemas/Verification"}),
            verification,
        ),
        "experiment.stopped": webhook(
            "An experiment's guardrail stopped it",
            "Sent once when the guardrail of the tenant's experiment stops sending subjects to the \
    challenger; `data` is the experiment's figures as `GET /v1/experiments/{name}` answered them.",
            "experiment.stopped",
            json!({"$ref": "#/components/schemas/ExperimentFigures"}),
            spec["components"]["schemas"]["ExperimentFigures"]["example"].clone(),
        ),
        "verification.expiring": webhook(
            "A subject's approval lapses soon",
            "Sent once per approval, the tenant's `reverification_notice_days` (default 30) before \
    it lapses at `expires_at` (its approval plus `verification_valid_days`), so that the subject can \
    be verified again in time; not sent when the subject has a newer approval. Delivered in the \
    approved verification's line, after its `verification.updated` events.",
            "verification.expiring",
            json!({"$ref": "#/components/schemas/ApprovalLapse"}),
            lapse_example.clone(),
        ),
        "verification.expired": webhook(
            "A subject's approval lapsed",
            "Sent once per approval when it lapses at `expires_at`; from then the subject's \
    standing says `needs_reverification`. Not sent when the subject has a newer approval.",
            "verification.expired",
            json!({"$ref": "#/components/schemas/ApprovalLapse"}),
            lapse_example,
        ),
        "subject.erased": webhook(
            "A subject was erased",
            "Sent once when `DELETE /v1/subjects/{subject_id}` erased what the gateway held on a \
    subject; `data` carries the `erasure_id` that call answered and how many verifications were \
    erased, never the subject id (the gateway no longer holds it).",
            "subject.erased",
            json!({
                "type": "object",
                "required": ["erasure_id", "verifications"],
                "properties": {
                    "erasure_id": {"type": "string", "description": "`ers_` + ULID, as the erasure answered it."},
                    "verifications": {"type": "integer", "minimum": 0},
                },
            }),
            json!({"erasure_id": "ers_01M92WAK5TXR2XB9P1NR502Y28", "verifications": 2}),
        ),
        "endpoint.disabled": webhook(
            "The tenant's webhook URL was disabled",
            "Sent once the URL answers again after the gateway disabled it for failing every \
    attempt for `[webhooks] disable_after_seconds` (`reason` `failing`); `POST /v1/events/recover` \
    enables it and sends the failed events again.",
            "endpoint.disabled",
            json!({
                "type": "object",
                "required": ["url", "reason", "failing_since", "disabled_at"],
                "properties": {
                    "url": {"type": "string", "format": "uri"},
                    "reason": {"type": "string", "enum": ["failing"]},
                    "failing_since": {"type": "string", "format": "date-time"},
                    "disabled_at": {"type": "string", "format": "date-time"},
                },
            }),
            json!({
                "url": "https://payments.internal.example/kyc-events",
                "reason": "failing",
                "failing_since": "2026-11-30T08:00:00Z",
                "disabled_at": "2026-12-05T08:00:00Z",
            }),
        ),
    });
}
