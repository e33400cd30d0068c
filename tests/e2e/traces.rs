//! OpenTelemetry traces, sent over OTLP/HTTP to a receiver on a free port.

use crate::harness::*;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/HTTP receiver: what `POST /v1/traces` brings, decoded.
struct Receiver {
    url: String,
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let exports = Arc::new(Mutex::new(Vec::new()));
        let kept = exports.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                kept.lock().unwrap().push(export);
                // An empty ExportTraceServiceResponse.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, exports }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        let exports = self.exports.lock().unwrap();
        exports
            .iter()
            .flat_map(|e| &e.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    /// Waits (up to 20 s: a batch goes out within its schedule delay, on a slow machine later)
    /// until `find` finds what it looks for among the spans received.
    async fn wait_for<T>(&self, what: &str, find: impl Fn(&[Span]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if let Some(found) = find(&spans) {
                return found;
            }
            let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            assert!(
                Instant::now() < deadline,
                "{what} never arrived; got {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every attribute received so far: the resources', the spans' and their events'.
    fn attributes(&self) -> Vec<KeyValue> {
        let exports = self.exports.lock().unwrap();
        let mut all = Vec::new();
        for resource_spans in exports.iter().flat_map(|e| &e.resource_spans) {
            if let Some(resource) = &resource_spans.resource {
                all.extend(resource.attributes.clone());
            }
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                all.extend(span.attributes.clone());
                for event in &span.events {
                    all.extend(event.attributes.clone());
                }
            }
        }
        all
    }
}

/// A gateway exporting its spans to `receiver` (batches every 100 ms), with `env` besides.
async fn traced_world(receiver: &Receiver, env: &[(&str, &str)]) -> World {
    let mut vars = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            receiver.url.clone(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    World::start_with(Options {
        env: vars,
        ..Default::default()
    })
    .await
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| text(&a.value))
}

#[tokio::test]
async fn a_create_is_traced_from_the_callers_traceparent_to_the_provider_without_personal_data() {
    let receiver = Receiver::start().await;
    let w = traced_world(&receiver, &[]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let body = person("trace-1", "sub-trace-1", "CL");
    let created = w
        .http
        .post(format!("{}/v1/verifications", w.base))
        .bearer_auth(ALPHA_KEY)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let (server, client) = receiver
        .wait_for("the create's spans", |spans| {
            let ours = |s: &&Span| hex::encode(&s.trace_id) == trace_id;
            let server = spans
                .iter()
                .filter(ours)
                .find(|s| s.name == "POST /v1/verifications")?;
            let client = spans
                .iter()
                .filter(ours)
                .find(|s| attribute(s, "operation").as_deref() == Some("create"))?;
            Some((server.clone(), client.clone()))
        })
        .await;

    // The request span continues the caller's trace, as a server span.
    assert_eq!(hex::encode(&server.parent_span_id), caller_span);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        attribute(&server, "http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(attribute(&server, "tenant").as_deref(), Some("alpha"));
    // The provider call is a client span inside it, naming instance, operation and outcome.
    assert_eq!(client.name, "betrust-cl create");
    assert_eq!(client.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(
        attribute(&client, "provider").as_deref(),
        Some("betrust-cl")
    );
    assert_eq!(attribute(&client, "outcome").as_deref(), Some("ok"));
    assert!(client.end_time_unix_nano > client.start_time_unix_nano);
    let spans = receiver.spans();
    let mut parent = client.parent_span_id.clone();
    while parent != server.span_id {
        parent = spans
            .iter()
            .find(|s| s.span_id == parent)
            .unwrap_or_else(|| panic!("the provider call is not inside the request span"))
            .parent_span_id
            .clone();
    }

    // BeTrust got the trace: its create request carried our client span as parent.
    let sent = w
        .betrust
        .traceparents("POST /transaction-engine/v1/transactions");
    assert_eq!(
        sent,
        vec![format!("00-{trace_id}-{}-01", hex::encode(&client.span_id))]
    );

    // gu1 gets it too, on every request of its create (lookup, entity, validation).
    let ar_trace = "0af7651916cd43dd8448eb211c80319c";
    let ar_body = person("trace-2", "sub-trace-2", "AR");
    let created = w
        .http
        .post(format!("{}/v1/verifications", w.base))
        .bearer_auth(ALPHA_KEY)
        .header("traceparent", format!("00-{ar_trace}-b7ad6b7169203331-01"))
        .json(&ar_body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let sent = w.gu1.traceparents("/");
    assert!(sent.len() >= 2, "{sent:?}");
    assert!(
        sent.iter()
            .all(|t| t.starts_with(&format!("00-{ar_trace}-"))),
        "{sent:?}"
    );
    receiver
        .wait_for("the second create's spans", |spans| {
            spans
                .iter()
                .any(|s| hex::encode(&s.trace_id) == ar_trace && s.name == "POST /v1/verifications")
                .then_some(())
        })
        .await;

    // The service is named, and no attribute anywhere holds personal data or a secret.
    let attributes = receiver.attributes();
    assert!(
        attributes
            .iter()
            .any(|a| a.key == "service.name" && text(&a.value) == "kyc-gateway")
    );
    let subject = &body["subject"];
    let personal = [
        subject["national_id"].as_str().unwrap(),
        // gu1 looks the person up by national id: its spans must not carry it either.
        ar_body["subject"]["national_id"].as_str().unwrap(),
        subject["first_name"].as_str().unwrap(),
        subject["last_name"].as_str().unwrap(),
        subject["date_of_birth"].as_str().unwrap(),
        subject["email"].as_str().unwrap(),
        ALPHA_KEY,
        BETRUST_SECRET,
    ];
    for a in &attributes {
        let value = text(&a.value);
        for datum in personal {
            assert!(
                !value.contains(datum),
                "attribute {} carries {datum:?}",
                a.key
            );
        }
    }
    // The request's log lines carry the trace id.
    assert!(
        w.log().contains(&format!("trace_id={trace_id}")),
        "{}",
        w.log()
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_the_trace_id() {
    let receiver = Receiver::start().await;
    let w = traced_world(&receiver, &[("KYC_GATEWAY_LOG_FORMAT", "json")]).await;
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let answer = w
        .http
        .get(format!("{}/v1/verifications/ver_unknown", w.base))
        .bearer_auth(ALPHA_KEY)
        .header("x-request-id", "json-log-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = w.log();
    let served: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .filter(|line: &serde_json::Value| line["fields"]["message"] == "request served")
        .filter(|line| line["span"]["request_id"] == "json-log-1")
        .collect();
    assert_eq!(served.len(), 1, "{log}");
    assert_eq!(served[0]["span"]["trace_id"], trace_id);
    assert_eq!(served[0]["fields"]["status"], 404);
}
