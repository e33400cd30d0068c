//! Starts the real `kyc-gateway` binary on a free port against in-process provider simulators, and
//! captures everything it logs.

use kyc_sandbox::{
    BetrustSim, BetrustSimConfig, DiditSim, DiditSimConfig, FaultRule, Gu1Sim, Gu1SimConfig,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ALPHA_KEY: &str = "alpha-secret-api-key-0001";
pub const BETA_KEY: &str = "beta-secret-api-key-0002";
/// Another key of tenant alpha, named `alpha-ci` in the policy.
pub const ALPHA_CI_KEY: &str = "alpha-ci-api-key-0003";
/// A key of tenant alpha that expired in 2020.
pub const ALPHA_EXPIRED_KEY: &str = "alpha-expired-api-key-0004";
/// Tenant alpha's read-only key (`scope = "read"`).
pub const ALPHA_READ_KEY: &str = "alpha-read-api-key-0005";
pub const BETRUST_SECRET: &str = "betrust-client-secret-e2e";
pub const GU1_API_KEY: &str = "gk_test_e2e_api_key";
pub const GU1_WEBHOOK_SECRET: &str = "gu1-webhook-secret-e2e";
pub const DIDIT_API_KEY: &str = "didit-api-key-e2e";
pub const DIDIT_WEBHOOK_SECRET: &str = "didit-webhook-secret-e2e";
/// The provider instances of the test policy, one per adapter kind.
pub const INSTANCES: [&str; 3] = ["betrust-cl", "gu1", "didit"];
/// Tenant alpha's Standard Webhooks secret, when it has a `webhook_url`.
pub const ALPHA_WEBHOOK_SECRET: &str = "whsec_ZTJlLXRlbmFudC1hbHBoYS1zaWduaW5nLWtleQ==";

/// Knobs for one gateway under test.
pub struct Options {
    /// Provider call timeout, milliseconds.
    pub timeout_ms: u64,
    /// BeTrust token lifetime at the simulator.
    pub token_expires_in: u64,
    /// The webhook base handed to providers; `None` is the gateway's own address. A dead address
    /// makes every provider webhook get lost.
    pub public_url: Option<String>,
    /// Reconciler period, seconds.
    pub reconcile_every: u64,
    /// The store; `None` is a fresh SQLite file.
    pub store_url: Option<String>,
    /// Tenant alpha's `webhook_url`, signed with [`ALPHA_WEBHOOK_SECRET`].
    pub webhook_url: Option<String>,
    /// `[server] outbound_allow`, beside the `127.0.0.1` the simulators need.
    pub outbound_allow: Vec<String>,
    /// `[webhooks] retry_seconds`.
    pub retry_seconds: Vec<u64>,
    /// Other `[server]` lines, as written (`max_connections = 20`).
    pub server_extra: Vec<String>,
    /// Environment variables of the gateway processes, beside the secrets the policy names.
    pub env: Vec<(String, String)>,
    /// `[webhooks] timeout_ms`; `None` leaves the default.
    pub webhook_timeout_ms: Option<u64>,
    /// Both provider instances' `lookup_grace_seconds`; `None` leaves the default.
    pub lookup_grace_seconds: Option<u64>,
    /// `[webhooks] disable_after_seconds`; `None` leaves the default.
    pub disable_after_seconds: Option<u64>,
    /// Other `[store]` lines, as written (`lock_timeout_ms = 300`).
    pub store_extra: Vec<String>,
    /// Other lines of the `betrust-cl` instance (`rate_limit = { per_second = 20, burst = 20 }`).
    pub betrust_extra: Vec<String>,
    /// Other `[reconciler]` lines (`max_interval_seconds = 4`).
    pub reconciler_extra: Vec<String>,
    /// The `kyc-gateway` binary to run; `None` is this build's.
    pub binary: Option<String>,
}

impl Options {
    /// Provider webhooks never reach the gateway.
    pub fn webhooks_lost() -> Options {
        Options {
            public_url: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout_ms: 5_000,
            token_expires_in: 7200,
            public_url: None,
            reconcile_every: 3600,
            store_url: None,
            webhook_url: None,
            outbound_allow: Vec::new(),
            retry_seconds: vec![0, 1, 1],
            server_extra: Vec::new(),
            env: Vec::new(),
            webhook_timeout_ms: None,
            lookup_grace_seconds: None,
            disable_after_seconds: None,
            store_extra: Vec::new(),
            betrust_extra: Vec::new(),
            reconciler_extra: Vec::new(),
            binary: None,
        }
    }
}

/// A running gateway process with its simulators.
pub struct World {
    pub betrust: BetrustSim,
    pub gu1: Gu1Sim,
    pub didit: DiditSim,
    pub base: String,
    pub http: reqwest::Client,
    pub db_url: String,
    log: Arc<Mutex<String>>,
    child: Child,
    config: std::path::PathBuf,
    env: Vec<(String, String)>,
    binary: String,
    _dir: tempfile::TempDir,
    public_url: Option<String>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[server]` and `[webhooks]` of the test policy.
fn server_sections(o: &Options) -> String {
    let public_url = o
        .public_url
        .as_ref()
        .map(|u| format!("public_url = \"{u}\"\n"))
        .unwrap_or_default();
    let extra: String = o
        .server_extra
        .iter()
        .map(|line| format!("{line}\n"))
        .collect();
    // The simulators listen on 127.0.0.1: exempt, as the sandbox's own policy does.
    let allow: Vec<&str> = std::iter::once("127.0.0.1")
        .chain(o.outbound_allow.iter().map(String::as_str))
        .collect();
    let timeout = o
        .webhook_timeout_ms
        .map(|ms| format!("timeout_ms = {ms}\n"))
        .unwrap_or_default()
        + &o.disable_after_seconds
            .map(|s| format!("disable_after_seconds = {s}\n"))
            .unwrap_or_default();
    format!(
        "[server]\n{public_url}{extra}outbound_allow = {allow:?}\n\n[webhooks]\nretry_seconds = {:?}\n{timeout}",
        o.retry_seconds,
    )
}

/// Lines of a policy section, each ended.
fn lines(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The policy the e2e tests run: two tenants, three provider instances (`didit` is reached by
/// naming it in a create, or by a routing edit).
fn policy(
    betrust: &BetrustSim,
    gu1: &Gu1Sim,
    didit: &DiditSim,
    db_url: &str,
    o: &Options,
) -> String {
    format!(
        r#"
{server}
[store]
url = "{db_url}"
{store_extra}
[providers.betrust-cl]
kind = "betrust"
auth_base_url = "{auth}"
api_base_url = "{api}"
client_id = "sandbox-client"
client_secret = "${{BETRUST_CLIENT_SECRET}}"
company_id = "201"
timeout_ms = {timeout}
connect_timeout_ms = 1000
{grace}{betrust_extra}
[providers.gu1]
kind = "gu1"
base_url = "{gu1}"
api_key = "${{GU1_API_KEY}}"
webhook_secret = "${{GU1_WEBHOOK_SECRET}}"
timeout_ms = {timeout}
connect_timeout_ms = 1000
{grace}
[providers.didit]
kind = "didit"
base_url = "{didit}"
api_key = "${{DIDIT_API_KEY}}"
webhook_secret = "${{DIDIT_WEBHOOK_SECRET}}"
workflow_id = "{workflow}"
timeout_ms = {timeout}
connect_timeout_ms = 1000
{grace}
[tenants.alpha]
api_keys = ["{alpha}", {{ name = "alpha-ci", hash = "{alpha_ci}" }},
            {{ name = "old", hash = "{alpha_expired}", expires_at = "2020-01-01T00:00:00Z" }},
            {{ name = "pm", hash = "{alpha_read}", scope = "read" }}]
{alpha_webhook}
[tenants.alpha.routing]
default = "betrust-cl"
rules = [{{ country = "AR", provider = "gu1" }}]
allow_override = true

[tenants.beta]
api_keys = ["{beta}"]

[tenants.beta.routing]
default = "gu1"
fallback = ["betrust-cl"]

[reconciler]
every_seconds = {reconcile}
{reconciler_extra}

[experiments]
every_seconds = 1

[compliance]
every_seconds = 1
"#,
        server = server_sections(o),
        store_extra = lines(&o.store_extra),
        alpha_webhook = o
            .webhook_url
            .as_ref()
            .map(|u| format!(
                "webhook_url = \"{u}\"\nwebhook_secret = \"${{ALPHA_WEBHOOK_SECRET}}\"\n"
            ))
            .unwrap_or_default(),
        reconcile = o.reconcile_every,
        betrust_extra = lines(&o.betrust_extra),
        reconciler_extra = lines(&o.reconciler_extra),
        auth = betrust.auth_base_url(),
        api = betrust.api_base_url(),
        gu1 = gu1.base_url(),
        didit = didit.base_url(),
        workflow = DiditSimConfig::default().workflow_id,
        timeout = o.timeout_ms,
        grace = o
            .lookup_grace_seconds
            .map(|s| format!("lookup_grace_seconds = {s}\n"))
            .unwrap_or_default(),
        alpha = kyc_gateway::config::hash_api_key(ALPHA_KEY),
        beta = kyc_gateway::config::hash_api_key(BETA_KEY),
        alpha_ci = kyc_gateway::config::hash_api_key(ALPHA_CI_KEY),
        alpha_expired = kyc_gateway::config::hash_api_key(ALPHA_EXPIRED_KEY),
        alpha_read = kyc_gateway::config::hash_api_key(ALPHA_READ_KEY),
    )
}

/// Copies a process's output into `log` line by line, and sends the base URL it announces
/// ("listening on http://...") to `listening`.
fn follow(
    stream: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
    listening: std::sync::mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on http://") {
                // Up to a space, or a quote in a JSON log line.
                let url = line[at + "listening on ".len()..]
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next();
                let _ = listening.send(url.unwrap_or_default().to_string());
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// Starts `kyc-gateway serve` on a free port; returns it and its base URL.
fn spawn_gateway(
    binary: &str,
    config: &std::path::Path,
    env: &[(String, String)],
    log: &Arc<Mutex<String>>,
) -> (Child, String) {
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("BETRUST_CLIENT_SECRET", BETRUST_SECRET)
        .env("GU1_API_KEY", GU1_API_KEY)
        .env("GU1_WEBHOOK_SECRET", GU1_WEBHOOK_SECRET)
        .env("DIDIT_API_KEY", DIDIT_API_KEY)
        .env("DIDIT_WEBHOOK_SECRET", DIDIT_WEBHOOK_SECRET)
        .env("ALPHA_WEBHOOK_SECRET", ALPHA_WEBHOOK_SECRET)
        .env("NO_COLOR", "1")
        .env(
            "KYC_GATEWAY_LOG",
            "debug,sqlx=warn,hyper=warn,h2=warn,reqwest=warn,hyper_util=warn",
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        follow(stream, log.clone(), tx.clone());
    }
    let base = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("gateway did not start:\n{}", log.lock().unwrap()));
    (child, base)
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kyc-gateway")
}

impl World {
    pub async fn start() -> World {
        World::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> World {
        let betrust = BetrustSim::start(BetrustSimConfig {
            client_secret: BETRUST_SECRET.into(),
            token_expires_in: options.token_expires_in,
            ..Default::default()
        })
        .await
        .unwrap();
        let gu1 = Gu1Sim::start(Gu1SimConfig {
            api_key: GU1_API_KEY.into(),
            webhook_secret: GU1_WEBHOOK_SECRET.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let didit = DiditSim::start(DiditSimConfig {
            api_key: DIDIT_API_KEY.into(),
            webhook_secret: DIDIT_WEBHOOK_SECRET.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db_url = options
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("kyc.db").display()));
        let config = dir.path().join("policy.toml");
        std::fs::write(&config, policy(&betrust, &gu1, &didit, &db_url, &options)).unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let env = options.env.clone();
        let binary = options.binary.clone().unwrap_or_else(|| binary().into());
        let (child, base) = spawn_gateway(&binary, &config, &env, &log);
        let w = World {
            betrust,
            gu1,
            didit,
            base,
            http: reqwest::Client::new(),
            db_url,
            log,
            child,
            config,
            env,
            binary,
            _dir: dir,
            public_url: options.public_url,
        };
        w.point_didit_here();
        w
    }

    /// Sets Didit's webhook destination (one per application, set in its console) to the `didit`
    /// instance's URL, as printed by `kyc-gateway hooks`: under `public_url`, or this process.
    fn point_didit_here(&self) {
        let base = self.public_url.clone().unwrap_or_else(|| self.base.clone());
        let out = self.command(&[
            "hooks",
            "--config",
            self.config.to_str().unwrap(),
            "--base",
            &base,
        ]);
        assert!(out.status.success(), "{out:?}");
        let printed = String::from_utf8(out.stdout).unwrap();
        let url = printed
            .lines()
            .find_map(|line| line.strip_prefix("didit\tdidit\t"))
            .unwrap_or_else(|| panic!("no didit line in {printed}"));
        self.didit.set_webhook_url(Some(url.to_string()));
    }

    /// Kills the gateway with SIGKILL (no shutdown of any kind) and starts it again on the same
    /// policy and store, on a new port.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.restart();
    }

    /// Sends SIGTERM, as an orchestrator stopping the gateway does, and waits (up to 60 s) for
    /// the process to exit; answers its exit status and how long it took.
    pub async fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let asked = std::time::Instant::now();
        self.signal("-TERM");
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return (exit, asked.elapsed());
            }
            assert!(
                asked.elapsed() < Duration::from_secs(60),
                "the gateway did not exit after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the gateway again (after [`World::terminate`]) on the same policy and store, on a
    /// new port.
    pub fn restart(&mut self) {
        let (child, base) = spawn_gateway(&self.binary, &self.config, &self.env, &self.log);
        self.child = child;
        self.base = base;
        self.point_didit_here();
    }

    /// Rewrites the policy file the way a deployment would: the new text goes to a temporary
    /// file beside it, which then replaces it by rename.
    pub fn edit_policy(&self, edit: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let next = edit(&text);
        assert_ne!(next, text, "the edit changes nothing");
        let staged = self.config.with_extension("toml.new");
        std::fs::write(&staged, next).unwrap();
        std::fs::rename(&staged, &self.config).unwrap();
    }

    /// Prices betrust-cl and gu1 per verification, in USD, by a live policy edit, and waits for
    /// it to apply.
    pub async fn set_prices(&self, betrust: f64, gu1: f64) {
        let price = |amount: f64| {
            format!("price_per_verification = {{ amount = {amount:?}, currency = \"USD\" }}\n")
        };
        self.edit_policy(|p| {
            p.replace(
                "connect_timeout_ms = 1000\n\n[providers.gu1]",
                &format!(
                    "connect_timeout_ms = 1000\n{}\n[providers.gu1]",
                    price(betrust)
                ),
            )
            .replace(
                "webhook_secret = \"${GU1_WEBHOOK_SECRET}\"\n",
                &format!(
                    "webhook_secret = \"${{GU1_WEBHOOK_SECRET}}\"\n{}",
                    price(gu1)
                ),
            )
        });
        self.wait_log("policy reloaded", 1, Duration::from_secs(10))
            .await;
    }

    /// Starts another gateway process on the same policy (and so the same store): a replica.
    pub fn start_replica(&self) -> Replica {
        self.start_replica_with(&[])
    }

    /// A replica with more environment variables (a clock offset, say).
    pub fn start_replica_with(&self, env: &[(&str, &str)]) -> Replica {
        let mut all = self.env.clone();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (child, base) = spawn_gateway(&self.binary, &self.config, &all, &self.log);
        Replica { child, base }
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The policy file the gateway serves.
    pub fn policy_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Runs a `kyc-gateway` command with the environment the policy's `${VAR}`s need.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(args)
            .env("BETRUST_CLIENT_SECRET", BETRUST_SECRET)
            .env("GU1_API_KEY", GU1_API_KEY)
            .env("GU1_WEBHOOK_SECRET", GU1_WEBHOOK_SECRET)
            .env("DIDIT_API_KEY", DIDIT_API_KEY)
            .env("DIDIT_WEBHOOK_SECRET", DIDIT_WEBHOOK_SECRET)
            .env("ALPHA_WEBHOOK_SECRET", ALPHA_WEBHOOK_SECRET)
            .output()
            .unwrap()
    }

    /// Sends SIGHUP to the gateway process.
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// Sends the gateway process a signal (`-HUP`, `-TERM`).
    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to 60 s until each of tenant alpha's verifications `made` is approved or
    /// rejected; answers them as stored then.
    pub async fn wait_decided(&self, made: &[Value]) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut stored = Vec::new();
        for v in made {
            let path = format!("/v1/verifications/{}", v["id"].as_str().unwrap());
            loop {
                let (_, now) = self.get(&path, ALPHA_KEY).await;
                if ["approved", "rejected"].contains(&now["status"].as_str().unwrap()) {
                    stored.push(now);
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "not decided: {now}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stored
    }

    /// Waits up to 10 s for `verification` (of the tenant with `key`) to read `status`.
    pub async fn wait_status(&self, verification: &Value, key: &str, status: &str) {
        let path = format!("/v1/verifications/{}", verification["id"].as_str().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, now) = self.get(&path, key).await;
            if now["status"] == status {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still not {status}: {now}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `within` for the log to hold `needle` at least `times` times.
    pub async fn wait_log(&self, needle: &str, times: usize, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.log().matches(needle).count() < times {
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} not logged {times} times:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything the gateway process has written so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a request with an optional API key and JSON body; returns status, headers and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(Method::GET, path, Some(key), None).await;
        (s, b)
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(Method::DELETE, path, Some(key), None).await;
        (s, b)
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, b) = self.call(Method::POST, path, Some(key), Some(body)).await;
        (s, b)
    }

    /// POSTs an action (`refresh`, `cancel`) on a verification.
    pub async fn act(&self, verification: &Value, action: &str, key: &str) -> (StatusCode, Value) {
        let id = verification["id"].as_str().unwrap();
        self.post(&format!("/v1/verifications/{id}/{action}"), key, json!({}))
            .await
    }

    /// Ends a verification at whichever simulator runs it, as the person would; the simulator
    /// then sends its webhook to the gateway.
    pub async fn finish(&self, verification: &Value, outcome: kyc_sandbox::Outcome) {
        let provider_reference = verification["provider_reference"].as_str().unwrap();
        match verification["provider"].as_str().unwrap() {
            "betrust-cl" => self
                .betrust
                .finish(provider_reference, outcome)
                .await
                .unwrap(),
            "gu1" => self.gu1.finish(provider_reference, outcome).await.unwrap(),
            "didit" => self
                .didit
                .finish(provider_reference, outcome)
                .await
                .unwrap(),
            other => panic!("no simulator for provider {other}"),
        }
    }

    /// The simulator behind provider instance `instance` (one of [`INSTANCES`]).
    pub fn sim(&self, instance: &str) -> Sim<'_> {
        match instance {
            "betrust-cl" => Sim::Betrust(&self.betrust),
            "gu1" => Sim::Gu1(&self.gu1),
            "didit" => Sim::Didit(&self.didit),
            other => panic!("no simulator for provider {other}"),
        }
    }

    /// Creates a verification for tenant alpha and expects 201.
    pub async fn create(&self, body: Value) -> Value {
        let (status, v) = self.post("/v1/verifications", ALPHA_KEY, body).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }
}

/// POSTs a create to the gateway at `base` as `key`; answers the status, `Retry-After` and
/// body.
pub async fn post_at(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Option<u64>, Value) {
    let response = http
        .post(format!("{base}/v1/verifications"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry_after, response.json().await.unwrap())
}

/// Sends the same create until it answers a verification (201 or 200), as a caller told to retry
/// does: a 503 `provider_unavailable` or a 409 `in_progress` is retried after a short pause (each
/// must carry `Retry-After`); anything else fails the test. Answers the verification and every
/// status seen.
pub async fn create_retrying(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
    within: Duration,
) -> (Value, Vec<StatusCode>) {
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let (status, retry_after, answer) = post_at(http, base, key, body).await;
        seen.push(status);
        if status == StatusCode::CREATED || status == StatusCode::OK {
            return (answer, seen);
        }
        let retryable = (status == StatusCode::SERVICE_UNAVAILABLE
            && answer["code"] == "provider_unavailable")
            || (status == StatusCode::CONFLICT && answer["code"] == "in_progress");
        assert!(retryable, "{status}: {answer}");
        assert!(
            retry_after.is_some(),
            "{status} without Retry-After: {answer}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} after {within:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One of a [`World`]'s simulators, seen the same way whichever provider it is: what tests
/// parameterised over providers need.
pub enum Sim<'a> {
    Betrust(&'a BetrustSim),
    Gu1(&'a Gu1Sim),
    Didit(&'a DiditSim),
}

impl Sim<'_> {
    /// The request line of the call that starts a verification there.
    pub fn create_call(&self) -> &'static str {
        match self {
            Sim::Betrust(_) => "POST /transaction-engine",
            Sim::Gu1(_) => "POST /api/kyc/validations",
            Sim::Didit(_) => "POST /v3/session/",
        }
    }

    /// Verifications actually started there.
    pub fn created(&self) -> usize {
        match self {
            Sim::Betrust(s) => s.transactions_created(),
            Sim::Gu1(s) => s.validations_created(),
            Sim::Didit(s) => s.sessions_created(),
        }
    }

    /// The provider's id of the latest verification started there.
    pub fn last_created(&self) -> Option<String> {
        match self {
            Sim::Betrust(s) => s.transaction_uuids().last().cloned(),
            Sim::Gu1(s) => s.validation_ids().last().cloned(),
            Sim::Didit(s) => s.session_ids().last().cloned(),
        }
    }

    /// Adds a fault to its API routes.
    pub fn inject(&self, rule: FaultRule) {
        match self {
            Sim::Betrust(s) => s.inject(rule),
            Sim::Gu1(s) => s.inject(rule),
            Sim::Didit(s) => s.inject(rule),
        }
    }

    /// Where its verification links point.
    pub fn base_url(&self) -> String {
        match self {
            Sim::Betrust(s) => s.base_url(),
            Sim::Gu1(s) => s.base_url(),
            Sim::Didit(s) => s.base_url(),
        }
    }
}

/// A create body for tenant alpha that names the provider instance (alpha may choose).
pub fn person_on(instance: &str, reference: &str, subject: &str) -> Value {
    let mut body = person(reference, subject, "CL");
    body["provider"] = json!(instance);
    body
}

/// A second gateway process of a [`World`], stopped when dropped.
pub struct Replica {
    child: Child,
    /// Its base URL.
    pub base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL the `#[ignore]`d PostgreSQL tests run on (`.ci/run` sets it).
pub fn postgres_url() -> String {
    std::env::var("KYC_TEST_POSTGRES_URL")
        .expect("this test needs PostgreSQL: set KYC_TEST_POSTGRES_URL=postgres://user@host/db")
}

/// A schema of its own in the test PostgreSQL: the gateways of one test share it, and no other
/// test's gateway sees its rows (the tests run at once, on one database).
pub struct PgSchema {
    /// The store URL, with the schema as its search path.
    pub url: String,
    name: String,
}

impl PgSchema {
    pub async fn create() -> PgSchema {
        let name = format!("e2e_{}", ulid::Ulid::generate().to_string().to_lowercase());
        let admin = Self::admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let base = postgres_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        PgSchema {
            url: format!("{base}{sep}options=-c%20search_path%3D{name}"),
            name,
        }
    }

    /// Drops the schema and its tables; call it once the gateways using it are stopped.
    pub async fn drop(self) {
        let admin = Self::admin().await;
        let sql = format!("DROP SCHEMA {} CASCADE", self.name);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    }

    async fn admin() -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&postgres_url()).await.unwrap()
    }
}

/// The national id `person` gives a subject: unique per subject, and easy to look for in logs.
pub fn national_id(subject: &str) -> String {
    format!("NID{subject}-K")
}

/// A create body with every personal field filled in.
pub fn person(reference: &str, subject: &str, country: &str) -> Value {
    json!({
        "reference": reference,
        "subject": {
            "id": subject,
            "country": country,
            "national_id": national_id(subject),
            "first_name": "Valentina",
            "last_name": "Quispe",
            "date_of_birth": "1990-05-20",
            "email": "valentina@example.com"
        }
    })
}

/// The sandbox first run (`kyc-gateway sandbox`), started in a directory of its own on a free
/// port, as a person would start it.
pub struct Sandbox {
    /// The gateway's base URL.
    pub base: String,
    /// What it printed on stdout up to the end of its banner.
    pub banner: String,
    /// Its working directory.
    pub dir: tempfile::TempDir,
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Sandbox {
    pub fn start() -> Sandbox {
        Sandbox::start_in(tempfile::tempdir().unwrap())
    }

    pub fn start_in(dir: tempfile::TempDir) -> Sandbox {
        Sandbox::start_with(dir, &[])
    }

    /// Starts `kyc-gateway sandbox` in `dir` with `extra` arguments (`--config FILE`).
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Sandbox {
        let mut child = Command::new(binary())
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        follow(child.stderr.take().unwrap(), stderr.clone(), tx);
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the sandbox did not start:\n{}", stderr.lock().unwrap()));
        let mut banner = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = stdout.next() {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("real person's data") {
                break;
            }
        }
        // Keep reading, as a terminal would: the sandbox prints a line per event it receives.
        std::thread::spawn(move || stdout.map_while(Result::ok).for_each(drop));
        Sandbox {
            base,
            banner,
            dir,
            child,
            stderr,
        }
    }

    /// Everything it has written to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stops it as Ctrl-C or a service manager would (SIGTERM), and waits for it to exit.
    pub fn stop(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
