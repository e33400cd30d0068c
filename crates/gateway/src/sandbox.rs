//! The first run: `kyc-gateway` with no arguments.
//!
//! Starts both provider simulators in-process on loopback, a SQLite file in the working directory
//! and a demo tenant, and prints what a person needs to try the API from Swagger UI. The policy is
//! written in the same TOML as a real one and goes through the same parser, so the sandbox
//! exercises the real configuration path.

use crate::policy::Policy;
use crate::server::{ServeError, serve};
use kyc_sandbox::{BetrustSim, BetrustSimConfig, Gu1Sim, Gu1SimConfig};

/// The demo tenant's API key. Sandbox only: it is printed on purpose.
pub const DEMO_API_KEY: &str = "kyc_sandbox_demo_key";

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
    let betrust_config = BetrustSimConfig::default();
    let gu1_config = Gu1SimConfig::default();
    let betrust = BetrustSim::start(betrust_config.clone()).await?;
    let gu1 = Gu1Sim::start(gu1_config.clone()).await?;
    let text = format!(
        r#"
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
        _ => None,
    };
    let policy = Policy::parse(&text, env)?;
    serve(policy, listen, |base| {
        println!(
            "\nkyc-gateway sandbox is running.\n\
             \n  Swagger UI:   {base}/docs\n  API key:      {DEMO_API_KEY}   (tenant \"demo\")\n  \
             Providers:    betrust-sandbox (default), gu1-sandbox (country AR, or \"provider\": \"gu1-sandbox\")\n  \
             Store:        {db} (new for this run, removed on exit)\n\
             \nCreate a verification, open its verification_url, press Approve, then GET it again.\n\
             The simulators' identity data is fake; never send a real person's data.\n",
            db = db.display(),
        );
    })
    .await
}
