//! The first run: `kyc-gateway` with no arguments.
//!
//! Starts the three provider simulators in-process on loopback, a fresh SQLite file and a demo
//! tenant,
//! and prints what a person needs to try the API from Swagger UI. The policy is written in the
//! same TOML as a real one and goes through the same parser, so the sandbox exercises the real
//! configuration path.
//!
//! The demo tenant's `webhook_url` is a tiny receiver inside the sandbox, at
//! `POST /_sandbox/events`: it checks each event's Standard Webhooks signature as a tenant's own
//! receiver would, prints a line per event, and lists what it got at `GET /_sandbox/events`.

use crate::config::{Policy, PolicyError};
use crate::http::server::{ServeError, bind, serve_on};
use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use kyc_sandbox::{BetrustSim, BetrustSimConfig, DiditSim, DiditSimConfig, Gu1Sim, Gu1SimConfig};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Verifications in the `--scenario` history.
pub const HISTORY: u64 = 900;

/// The demo tenant's routing additions with `--scenario`: an experiment in Chile, and a fallback
/// for gu1's errors.
const SCENARIO_ROUTING: &str = "fallback = [\"betrust-sandbox\"]\n\
    experiment = { name = \"gu1-in-cl\", champion = \"betrust-sandbox\", challenger = \
    \"gu1-sandbox\", share = 40, countries = [\"CL\"], min_sample = 50, guardrail_pp = 15 }\n";

/// BeTrust in the scenario: approves fewer, decides slowly, rarely fails.
const BETRUST: crate::devtools::scenario::Profile = crate::devtools::scenario::Profile {
    approve_percent: 76,
    decision_minutes: 20,
    spread_minutes: 90,
    error_percent: 1,
};

/// gu1 in the scenario: approves more, decides fast, fails a little more often.
const GU1: crate::devtools::scenario::Profile = crate::devtools::scenario::Profile {
    approve_percent: 94,
    decision_minutes: 3,
    spread_minutes: 25,
    error_percent: 5,
};

/// Didit in the scenario (Mexico): approves fewer than the others, decides in minutes, rarely
/// fails; the dashboard's comparison of the two best approvers stays gu1 against BeTrust.
const DIDIT: crate::devtools::scenario::Profile = crate::devtools::scenario::Profile {
    approve_percent: 70,
    decision_minutes: 6,
    spread_minutes: 40,
    error_percent: 2,
};

/// Each sandbox instance's profile in the scenario.
fn profiles() -> std::collections::BTreeMap<String, crate::devtools::scenario::Profile> {
    [
        ("betrust-sandbox".to_string(), BETRUST),
        ("gu1-sandbox".to_string(), GU1),
        ("didit-sandbox".to_string(), DIDIT),
    ]
    .into()
}

/// The three simulators of a sandbox run.
struct Sims {
    betrust: BetrustSim,
    betrust_config: BetrustSimConfig,
    gu1: Gu1Sim,
    gu1_config: Gu1SimConfig,
    didit: DiditSim,
    didit_config: DiditSimConfig,
}

impl Sims {
    async fn start() -> std::io::Result<Sims> {
        let (betrust_config, gu1_config) = (BetrustSimConfig::default(), Gu1SimConfig::default());
        let didit_config = DiditSimConfig::default();
        Ok(Sims {
            betrust: BetrustSim::start(betrust_config.clone()).await?,
            gu1: Gu1Sim::start(gu1_config.clone()).await?,
            didit: DiditSim::start(didit_config.clone()).await?,
            betrust_config,
            gu1_config,
            didit_config,
        })
    }

    /// The `${VAR}`s of the sandbox's policies.
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "SANDBOX_BETRUST_CLIENT_SECRET" => Some(self.betrust_config.client_secret.clone()),
            "SANDBOX_GU1_API_KEY" => Some(self.gu1_config.api_key.clone()),
            "SANDBOX_GU1_WEBHOOK_SECRET" => Some(self.gu1_config.webhook_secret.clone()),
            "SANDBOX_DIDIT_API_KEY" => Some(self.didit_config.api_key.clone()),
            "SANDBOX_DIDIT_WEBHOOK_SECRET" => Some(self.didit_config.webhook_secret.clone()),
            "SANDBOX_DEMO_WEBHOOK_SECRET" => Some(DEMO_WEBHOOK_SECRET.to_string()),
            _ => None,
        }
    }

    /// Points Didit's webhook destination (one per application, as in its console) at the
    /// policy's first Didit instance.
    fn point_didit_at(&self, policy: &Policy, base: &str) {
        let url = crate::app::hook_urls(policy, base)
            .into_iter()
            .find(|(_, kind, _)| kind == "didit")
            .map(|(_, _, url)| url);
        self.didit.set_webhook_url(url);
    }
}

/// A profile as a live simulator's autopilot: minutes become seconds, so that new verifications
/// end while a person watches.
fn live(profile: crate::devtools::scenario::Profile) -> kyc_sandbox::Autopilot {
    kyc_sandbox::Autopilot {
        approve_percent: profile.approve_percent,
        decision_ms: (profile.decision_minutes as u64 + 2) * 1000,
        approve_ms: None,
        error_percent: profile.error_percent,
    }
}

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
            async move {
                Json(Value::Array(
                    listed
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .clone(),
                ))
            }
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
    let mut kept = received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    kept.insert(0, summary);
    kept.truncate(KEEP_EVENTS);
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// The API key `sandbox --config` gives tenant `tenant` (printed on purpose: sandbox only).
pub fn tenant_key(tenant: &str) -> String {
    format!("kyc_sandbox_{tenant}_key")
}

/// A product manager's own policy, pointed at the simulators: each provider instance keeps its
/// name, kind, `rate_limit`, `circuit_breaker` and `price_per_verification`, and talks to its
/// kind's simulator; each tenant keeps its routing and limits, gets the key [`tenant_key`]
/// instead of its own, and sends its events to the sandbox receiver. The store is the sandbox's;
/// `[server]` is the sandbox's.
fn own_policy(
    text: &str,
    sims: &toml::Table,
    receiver_url: &str,
) -> Result<(toml::Table, Vec<String>), PolicyError> {
    let mut policy: toml::Table =
        toml::from_str(text).map_err(|e| PolicyError::Syntax(e.message().to_string()))?;
    let mut providers = toml::Table::new();
    let theirs = policy
        .remove("providers")
        .and_then(|p| p.try_into::<toml::Table>().ok());
    for (name, section) in theirs.unwrap_or_default() {
        let kind = section
            .get("kind")
            .and_then(toml::Value::as_str)
            .unwrap_or("");
        let mut ours = match sims.get(kind).and_then(toml::Value::as_table) {
            Some(sim) => sim.clone(),
            None => section.as_table().cloned().unwrap_or_default(),
        };
        for kept in [
            "rate_limit",
            "circuit_breaker",
            "price_per_verification",
            "lookup_grace_seconds",
        ] {
            if let Some(value) = section.get(kept) {
                ours.insert(kept.into(), value.clone());
            }
        }
        providers.insert(name, toml::Value::Table(ours));
    }
    policy.insert("providers".into(), toml::Value::Table(providers));
    let mut names = Vec::new();
    if let Some(tenants) = policy
        .get_mut("tenants")
        .and_then(toml::Value::as_table_mut)
    {
        for (name, tenant) in tenants.iter_mut() {
            if let Some(tenant) = tenant.as_table_mut() {
                let hash = crate::config::hash_api_key(&tenant_key(name));
                tenant.insert("api_keys".into(), toml::Value::Array(vec![hash.into()]));
                tenant.insert("webhook_url".into(), receiver_url.into());
                tenant.insert(
                    "webhook_secret".into(),
                    "${SANDBOX_DEMO_WEBHOOK_SECRET}".into(),
                );
            }
            names.push(name.clone());
        }
    }
    policy.remove("server");
    policy.remove("store");
    Ok((policy, names))
}

/// Runs the sandbox until Ctrl-C: with the demo tenant, or with `own` (a policy file's path)
/// pointed at the simulators.
///
/// The store is a fresh SQLite file in a temporary directory, removed on exit: the simulators keep
/// their verifications in memory, so a database that outlived them would list verifications no
/// provider knows any more.
///
/// With `scenario`, the demo tenant runs an experiment in Chile (gu1-sandbox against
/// betrust-sandbox) with a fallback, the store starts with [`HISTORY`] verifications of the past
/// two weeks (see [`crate::devtools::scenario`]), and the simulators end new verifications by themselves as
/// their history does: the two providers differ in approval rate, time to decision and errors.
pub async fn run(listen: &str, own: Option<&str>, scenario: bool) -> Result<(), ServeError> {
    let dir = tempfile::Builder::new()
        .prefix("kyc-gateway-sandbox-")
        .tempdir()?;
    let db = dir.path().join("sandbox.db");
    let listener = bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let sims = Sims::start().await?;
    let text = demo_policy(&db, &base, &sims, scenario);
    let env = |name: &str| sims.env(name);
    if let Some(path) = own {
        return run_own_policy(listener, path, &text, &sims, &base, &db).await;
    }
    let policy = Policy::parse(&text, env)?;
    sims.point_didit_at(&policy, &base);
    let history = if scenario {
        seed_scenario(&policy, &sims).await?
    } else {
        "  Comparing:    `kyc-gateway sandbox --scenario` starts with two weeks of history and an\n                \
         experiment, for the dashboard\n"
            .to_string()
    };
    serve_on(listener, policy, None, receiver(), |base| {
        println!(
            "\nkyc-gateway sandbox is running.\n\
             \n  Swagger UI:   {base}/docs\n  Dashboard:    {base}/dashboard\n  \
             API key:      {DEMO_API_KEY}   (tenant \"demo\")\n  \
             Providers:    betrust-sandbox (default), gu1-sandbox (country AR), didit-sandbox (country MX);\n                \
             or name one: \"provider\": \"gu1-sandbox\"\n  \
             Store:        {db} (new for this run, removed on exit)\n  \
             Events:       signed and sent to {base}/_sandbox/events (GET it to see them)\n\
             {history}\nCreate a verification, open its verification_url, press Approve, then GET it again.\n\
             The simulators' identity data is fake; never send a real person's data.\n",
            db = db.display(),
        );
    })
    .await
}

/// The demo policy: both simulators as instances, the demo tenant, and with `scenario` an
/// experiment; secrets as `${VAR}`, as a real policy has them.
fn demo_policy(db: &std::path::Path, base: &str, sims: &Sims, scenario: bool) -> String {
    format!(
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

price_per_verification = {{ amount = 1.10, currency = "USD" }}

[providers.gu1-sandbox]
kind = "gu1"
base_url = "{gu1_base}"
api_key = "${{SANDBOX_GU1_API_KEY}}"
webhook_secret = "${{SANDBOX_GU1_WEBHOOK_SECRET}}"
price_per_verification = {{ amount = 0.85, currency = "USD" }}

[providers.didit-sandbox]
kind = "didit"
base_url = "{didit_base}"
api_key = "${{SANDBOX_DIDIT_API_KEY}}"
webhook_secret = "${{SANDBOX_DIDIT_WEBHOOK_SECRET}}"
workflow_id = "{didit_workflow}"
price_per_verification = {{ amount = 0.95, currency = "USD" }}

[tenants.demo]
api_keys = ["{key_hash}"]
webhook_url = "{base}/_sandbox/events"
webhook_secret = "${{SANDBOX_DEMO_WEBHOOK_SECRET}}"

[tenants.demo.routing]
default = "betrust-sandbox"
rules = [{{ country = "AR", provider = "gu1-sandbox" }}, {{ country = "MX", provider = "didit-sandbox" }}]
allow_override = true
{experiment}
[reconciler]
every_seconds = 10
"#,
        betrust_auth = sims.betrust.auth_base_url(),
        betrust_api = sims.betrust.api_base_url(),
        client_id = sims.betrust_config.client_id,
        company_id = sims.betrust_config.company_id,
        gu1_base = sims.gu1.base_url(),
        didit_base = sims.didit.base_url(),
        didit_workflow = sims.didit_config.workflow_id,
        key_hash = crate::config::hash_api_key(DEMO_API_KEY),
        db = db.display(),
        experiment = if scenario { SCENARIO_ROUTING } else { "" },
    )
}

/// Serves the caller's own policy (`--config`) against the simulators: each of its instances
/// of a simulated kind is pointed at that simulator.
async fn run_own_policy(
    listener: tokio::net::TcpListener,
    path: &str,
    text: &str,
    sims: &Sims,
    base: &str,
    db: &std::path::Path,
) -> Result<(), ServeError> {
    let mine = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_string(),
        source,
    })?;
    // The demo policy's pieces, as the simulators' settings for each kind.
    let demo: toml::Table =
        toml::from_str(text).map_err(|e| PolicyError::Syntax(e.message().to_string()))?;
    let section = |name: &str| demo["providers"][name].clone();
    let simulated: toml::Table = [
        ("betrust".to_string(), section("betrust-sandbox")),
        ("gu1".to_string(), section("gu1-sandbox")),
        ("didit".to_string(), section("didit-sandbox")),
    ]
    .into_iter()
    .collect();
    let (mut table, tenants) = own_policy(&mine, &simulated, &format!("{base}/_sandbox/events"))?;
    for kept in ["server", "store"] {
        table.insert(kept.into(), demo[kept].clone());
    }
    let text = toml::to_string(&table).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    let policy = Policy::parse(&text, |name| sims.env(name))?;
    sims.point_didit_at(&policy, base);
    serve_on(listener, policy, None, receiver(), |base| {
        let keys: String = tenants
            .iter()
            .map(|t| format!("\n    {t}: {}", tenant_key(t)))
            .collect();
        println!(
            "\nkyc-gateway sandbox is running your policy ({path}) against the simulators.\n\
             \n  Swagger UI:   {base}/docs\n  API keys:{keys}\n  \
             Store:        {db} (new for this run, removed on exit)\n  \
             Events:       signed and sent to {base}/_sandbox/events (GET it to see them)\n\
             \nThe simulators' identity data is fake; never send a real person's data.\n",
            db = db.display(),
        );
    })
    .await
}

/// Writes two weeks of generated history into the sandbox's store, and lets the simulators
/// finish new verifications by themselves; what to print about it.
async fn seed_scenario(policy: &Policy, sims: &Sims) -> Result<String, ServeError> {
    let store = crate::store::SqlStore::connect_with(&policy.store).await?;
    crate::devtools::scenario::generate(
        &store,
        policy,
        "demo",
        &profiles(),
        HISTORY,
        crate::store::now(),
    )
    .await?;
    sims.betrust.set_autopilot(Some(live(BETRUST)));
    sims.gu1.set_autopilot(Some(live(GU1)));
    sims.didit.set_autopilot(Some(live(DIDIT)));
    Ok(format!(
        "  History:      {HISTORY} verifications of the past two weeks (generated), and an\n                \
         experiment in Chile: GET /v1/experiments/gu1-in-cl, or see the dashboard\n                \
         (new verifications end by themselves within half a minute)\n"
    ))
}
