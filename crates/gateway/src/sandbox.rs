//! The first run: `kyc-gateway` with no arguments.
//!
//! Starts both provider simulators in-process on loopback, a fresh SQLite file and a demo tenant,
//! and prints what a person needs to try the API from Swagger UI. The policy is written in the
//! same TOML as a real one and goes through the same parser, so the sandbox exercises the real
//! configuration path.
//!
//! The demo tenant's `webhook_url` is a tiny receiver inside the sandbox, at
//! `POST /_sandbox/events`: it checks each event's Standard Webhooks signature as a tenant's own
//! receiver would, prints a line per event, and lists what it got at `GET /_sandbox/events`.

use crate::policy::Policy;
use crate::server::{ServeError, bind, serve_on};
use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use kyc_sandbox::{BetrustSim, BetrustSimConfig, Gu1Sim, Gu1SimConfig};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The demo tenant's API key. Sandbox only: it is printed on purpose.
pub const DEMO_API_KEY: &str = "kyc_sandbox_demo_key";

/// The demo tenant's webhook signing secret. Sandbox only: printed in the README on purpose.
pub const DEMO_WEBHOOK_SECRET: &str = "whsec_a3ljLWdhdGV3YXktc2FuZGJveC1kZW1vLXNlY3JldA==";

/// How many received events the sandbox receiver keeps.
const KEEP_EVENTS: usize = 100;

/// The events the sandbox receiver got, newest first.
type Received = Arc<Mutex<Vec<Value>>>;

/// The sandbox's own receiver of the demo tenant's events.
fn receiver() -> axum::Router {
    let received: Received = Arc::default();
    let listed = received.clone();
    axum::Router::new().route(
        "/_sandbox/events",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let received = received.clone();
            async move { receive(&received, &headers, &body) }
        })
        .get(move || {
            let listed = listed.clone();
            async move { Json(Value::Array(listed.lock().expect("not poisoned").clone())) }
        }),
    )
}

/// Checks one event's signature and keeps a summary of it.
fn receive(received: &Received, headers: &HeaderMap, body: &[u8]) -> StatusCode {
    let verified = standardwebhooks::Webhook::new(DEMO_WEBHOOK_SECRET)
        .is_ok_and(|w| w.verify(body, headers).is_ok());
    let event: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let summary = json!({
        "id": headers.get("webhook-id").and_then(|v| v.to_str().ok()),
        "type": event["type"],
        "verification_id": event["data"]["id"],
        "status": event["data"]["status"],
        "signature_verified": verified,
        "received_at": crate::store::now(),
    });
    // Not println!: with stdout closed (a pipe whose reader went away) that panics.
    let _ = writeln!(
        std::io::stdout(),
        "sandbox receiver: {} {} is now {} (signature {})",
        summary["type"].as_str().unwrap_or("?"),
        summary["verification_id"].as_str().unwrap_or("?"),
        summary["status"].as_str().unwrap_or("?"),
        if verified { "verified" } else { "NOT verified" },
    );
    let mut kept = received.lock().expect("not poisoned");
    kept.insert(0, summary);
    kept.truncate(KEEP_EVENTS);
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Runs the sandbox until Ctrl-C.
///
/// The store is a fresh SQLite file in a temporary directory, removed on exit: the simulators keep
/// their verifications in memory, so a database that outlived them would list verifications no
/// provider knows any more.
pub async fn run(listen: &str) -> Result<(), ServeError> {
    let dir = tempfile::Builder::new()
        .prefix("kyc-gateway-sandbox-")
        .tempdir()?;
    let db = dir.path().join("sandbox.db");
    let listener = bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let betrust_config = BetrustSimConfig::default();
    let gu1_config = Gu1SimConfig::default();
    let betrust = BetrustSim::start(betrust_config.clone()).await?;
    let gu1 = Gu1Sim::start(gu1_config.clone()).await?;
    let text = format!(
        r#"
[server]
outbound_allow = ["127.0.0.1"]

[store]
url = "sqlite://{db}"

[providers.betrust-sandbox]
kind = "betrust"
auth_base_url = "{betrust_auth}"
api_base_url = "{betrust_api}"
client_id = "{client_id}"
client_secret = "${{SANDBOX_BETRUST_CLIENT_SECRET}}"
company_id = "{company_id}"

[providers.gu1-sandbox]
kind = "gu1"
base_url = "{gu1_base}"
api_key = "${{SANDBOX_GU1_API_KEY}}"
webhook_secret = "${{SANDBOX_GU1_WEBHOOK_SECRET}}"

[tenants.demo]
api_keys = ["{key_hash}"]
webhook_url = "{base}/_sandbox/events"
webhook_secret = "${{SANDBOX_DEMO_WEBHOOK_SECRET}}"

[tenants.demo.routing]
default = "betrust-sandbox"
rules = [{{ country = "AR", provider = "gu1-sandbox" }}]
allow_override = true

[reconciler]
every_seconds = 10
"#,
        betrust_auth = betrust.auth_base_url(),
        betrust_api = betrust.api_base_url(),
        client_id = betrust_config.client_id,
        company_id = betrust_config.company_id,
        gu1_base = gu1.base_url(),
        key_hash = crate::policy::hash_api_key(DEMO_API_KEY),
        db = db.display(),
    );
    let env = |name: &str| match name {
        "SANDBOX_BETRUST_CLIENT_SECRET" => Some(betrust_config.client_secret.clone()),
        "SANDBOX_GU1_API_KEY" => Some(gu1_config.api_key.clone()),
        "SANDBOX_GU1_WEBHOOK_SECRET" => Some(gu1_config.webhook_secret.clone()),
        "SANDBOX_DEMO_WEBHOOK_SECRET" => Some(DEMO_WEBHOOK_SECRET.to_string()),
        _ => None,
    };
    let policy = Policy::parse(&text, env)?;
    serve_on(listener, policy, None, receiver(), |base| {
        println!(
            "\nkyc-gateway sandbox is running.\n\
             \n  Swagger UI:   {base}/docs\n  API key:      {DEMO_API_KEY}   (tenant \"demo\")\n  \
             Providers:    betrust-sandbox (default), gu1-sandbox (country AR, or \"provider\": \"gu1-sandbox\")\n  \
             Store:        {db} (new for this run, removed on exit)\n  \
             Events:       signed and sent to {base}/_sandbox/events (GET it to see them)\n\
             \nCreate a verification, open its verification_url, press Approve, then GET it again.\n\
             The simulators' identity data is fake; never send a real person's data.\n",
            db = db.display(),
        );
    })
    .await
}
