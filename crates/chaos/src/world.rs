//! What a campaign runs against: the three provider simulators (BeTrust, gu1, Didit), a tenant
//! receiver, one or two gateway processes on fixed ports (so a process killed and started again
//! keeps its address), and the store they share.
//!
//! BeTrust and gu1 are told where to post each verification's webhooks by the gateway (its
//! `public_url`, process 0). Didit posts to one destination per application, set in its console:
//! the campaign sets the simulator's to the `didit` instance's URL as `kyc-gateway hooks` prints
//! it, under a process that is up, and sets it again when that process is killed (to the other
//! one, with two) and when it is started again.

use crate::plan::{self, OUTCOMES, Op, Plan};
use crate::{Config, DEADLINE};
use kyc_sandbox::{
    BetrustSim, BetrustSimConfig, DiditSim, DiditSimConfig, Fault, FaultRule, Gu1Sim, Gu1SimConfig,
};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_KEY: &str = "kyc_chaos_alpha_key";
const BETRUST_SECRET: &str = "chaos-betrust-secret";
const GU1_KEY: &str = "gk_chaos_key";
const GU1_WEBHOOK_SECRET: &str = "chaos-gu1-webhook-secret";
const DIDIT_KEY: &str = "didit_chaos_key";
const DIDIT_WEBHOOK_SECRET: &str = "chaos-didit-webhook-secret";
/// Each provider's create, as the request line a fault rule matches (by [`plan::PROVIDERS`]).
const CREATES: [&str; 3] = [
    "POST /transaction-engine/v1/transactions",
    "POST /api/kyc/validations",
    "POST /v3/session/",
];
/// Each provider's read of one verification (not Didit's list by `vendor_data`, `/v3/sessions/`).
const READS: [&str; 3] = [
    "GET /transaction-engine/v1/transactions/",
    "GET /api/kyc/validations",
    "GET /v3/session/",
];
/// Tenant alpha's Standard Webhooks secret.
pub(crate) const WEBHOOK_SECRET: &str = "whsec_Y2hhb3MtdGVuYW50LWFscGhhLXNpZ25pbmcta2V5";
/// Provider calls time out after this; a held answer is held longer.
const PROVIDER_TIMEOUT_MS: u64 = 800;
const HELD: Duration = Duration::from_millis(1_500);
/// How far process 1's clock runs ahead (with two processes).
const CLOCK_AHEAD_MS: i64 = 2_000;
/// A request that never reached a gateway (its process was down).
pub(crate) const NOT_SENT: &str = "not sent (no process listening)";

/// One delivery the receiver got.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// `webhook-id`.
    pub id: String,
    /// The verification it is about.
    pub verification: String,
    /// The status it reports.
    pub status: String,
    /// Whether its signature verified.
    pub verified: bool,
    /// Whether the receiver answered 2xx.
    pub accepted: bool,
}

/// What one operation got: an answer per request it made.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The step's place in the plan.
    pub step: usize,
    /// What it was.
    #[serde(flatten)]
    pub op: Op,
    /// When it started, milliseconds from the start of the run.
    pub started_ms: u64,
    /// What each of its requests got.
    pub answers: Vec<Answer>,
}

/// One request's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The HTTP status, if one came.
    pub status: Option<u16>,
    /// The problem's `code`.
    pub code: Option<String>,
    /// The verification's id.
    pub id: Option<String>,
    /// How long it took.
    pub took_ms: u64,
    /// A transport error (the process was killed, say), or what a simulator said.
    pub error: Option<String>,
}

/// A verification the campaign has been answered.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub id: String,
    pub provider: String,
    pub provider_reference: String,
}

struct Process {
    port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Drop for Process {
    /// A campaign that ends early (an error, a failed test) leaves no gateway running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything the operations share.
pub(crate) struct Shared {
    pub seed: u64,
    pub betrust: BetrustSim,
    pub gu1: Gu1Sim,
    pub didit: DiditSim,
    pub http: reqwest::Client,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    receiver: Arc<Receiver>,
    /// The policy as it started (variant 0 of [`Op::Reload`]).
    policy: String,
    /// When the run started, for the events' recover.
    started_at: chrono::DateTime<chrono::Utc>,
    processes: Mutex<Vec<Process>>,
    pub known: Mutex<HashMap<usize, Known>>,
    /// One provider outcome at a time per reference.
    finishing: Mutex<HashMap<usize, Arc<tokio::sync::Mutex<()>>>>,
    /// The `didit` instance's webhook path (`/hooks/didit/TOKEN`), as `kyc-gateway hooks`
    /// printed it at the start: the same for every process, only the address differs.
    didit_hook_path: String,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

/// The running world of one campaign.
pub struct World {
    pub(crate) shared: Arc<Shared>,
    pub(crate) store_url: String,
    schema: Option<(String, String)>,
    receiver: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    /// The receiver's server task ends with the campaign (a dropped handle would leave it
    /// running for the rest of the process, one per run of a long campaign).
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn hash_key(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl World {
    /// Starts the simulators, the receiver and the gateway processes.
    pub async fn start(config: &Config) -> Result<World, String> {
        let betrust = BetrustSim::start(BetrustSimConfig {
            client_secret: BETRUST_SECRET.into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        let gu1 = Gu1Sim::start(Gu1SimConfig {
            api_key: GU1_KEY.into(),
            webhook_secret: GU1_WEBHOOK_SECRET.into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        let didit = DiditSim::start(DiditSimConfig {
            api_key: DIDIT_KEY.into(),
            webhook_secret: DIDIT_WEBHOOK_SECRET.into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let control = Arc::new(Receiver::default());
        let (receiver_url, receiver) = receiver(deliveries.clone(), control.clone()).await?;
        let (store_url, schema) = match &config.postgres {
            None => {
                let db = config.out.join("kyc.db");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
                }
                (format!("sqlite://{}", db.display()), None)
            }
            Some(base) => {
                let name = format!(
                    "chaos_{}_{}",
                    config.seed,
                    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
                );
                sqlx::any::install_default_drivers();
                let admin = sqlx::AnyPool::connect(base)
                    .await
                    .map_err(|e| format!("no PostgreSQL at {base}: {e}"))?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
                    .execute(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                (
                    format!("{base}{sep}options=-c%20search_path%3D{name}"),
                    Some((base.clone(), name)),
                )
            }
        };
        let count = if config.postgres.is_some() { 2 } else { 1 };
        let mut processes = Vec::new();
        for i in 0..count {
            let mut env = vec![
                ("BETRUST_CLIENT_SECRET".into(), BETRUST_SECRET.into()),
                ("GU1_API_KEY".into(), GU1_KEY.into()),
                ("GU1_WEBHOOK_SECRET".into(), GU1_WEBHOOK_SECRET.into()),
                ("DIDIT_API_KEY".into(), DIDIT_KEY.into()),
                ("DIDIT_WEBHOOK_SECRET".into(), DIDIT_WEBHOOK_SECRET.into()),
                ("ALPHA_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
                ("NO_COLOR".into(), "1".into()),
                (
                    "KYC_GATEWAY_LOG".into(),
                    "info,sqlx=warn,hyper=warn,reqwest=warn".into(),
                ),
            ];
            if i == 1 {
                // Replicas' clocks differ.
                env.push((
                    "KYC_GATEWAY_CLOCK_OFFSET_MS".into(),
                    CLOCK_AHEAD_MS.to_string(),
                ));
            }
            processes.push(Process {
                port: free_port()?,
                env,
                child: None,
            });
        }
        let policy = format!(
            r#"
[server]
public_url = "http://127.0.0.1:{first}"
outbound_allow = ["127.0.0.1"]
request_timeout_ms = 20000

[store]
url = "{store_url}"

[providers.betrust-cl]
kind = "betrust"
auth_base_url = "{auth}"
api_base_url = "{api}"
client_id = "sandbox-client"
client_secret = "${{BETRUST_CLIENT_SECRET}}"
company_id = "201"
timeout_ms = {PROVIDER_TIMEOUT_MS}
connect_timeout_ms = 500
lookup_grace_seconds = 3

[providers.gu1]
kind = "gu1"
base_url = "{gu1}"
api_key = "${{GU1_API_KEY}}"
webhook_secret = "${{GU1_WEBHOOK_SECRET}}"
timeout_ms = {PROVIDER_TIMEOUT_MS}
connect_timeout_ms = 500
lookup_grace_seconds = 3

[providers.didit]
kind = "didit"
base_url = "{didit}"
api_key = "${{DIDIT_API_KEY}}"
webhook_secret = "${{DIDIT_WEBHOOK_SECRET}}"
workflow_id = "{workflow}"
timeout_ms = {PROVIDER_TIMEOUT_MS}
connect_timeout_ms = 500
lookup_grace_seconds = 3

[tenants.alpha]
api_keys = ["{key}"]
webhook_url = "{receiver_url}"
webhook_secret = "${{ALPHA_WEBHOOK_SECRET}}"

[tenants.alpha.routing]
default = "betrust-cl"
rules = [{{ country = "AR", provider = "gu1" }}, {{ country = "MX", provider = "didit" }}]
fallback = ["gu1", "didit", "betrust-cl"]

[webhooks]
retry_seconds = [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
timeout_ms = 2000

[reconciler]
every_seconds = 1
"#,
            first = processes[0].port,
            auth = betrust.auth_base_url(),
            api = betrust.api_base_url(),
            gu1 = gu1.base_url(),
            didit = didit.base_url(),
            workflow = DiditSimConfig::default().workflow_id,
            key = hash_key(API_KEY),
        );
        let config_path = config.out.join("policy.toml");
        std::fs::write(&config_path, &policy).map_err(|e| e.to_string())?;
        let didit_hook_path = didit_hook_path(&config.gateway, &config_path, &processes[0].env)?;
        let log = config.out.join("gateways.log");
        let _ = std::fs::remove_file(&log);
        let shared = Arc::new(Shared {
            seed: config.seed,
            betrust,
            gu1,
            didit,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(DEADLINE)
                .build()
                .map_err(|e| e.to_string())?,
            deliveries,
            receiver: control,
            policy,
            started_at: chrono::Utc::now(),
            processes: Mutex::new(processes),
            known: Mutex::new(HashMap::new()),
            finishing: Mutex::default(),
            didit_hook_path,
            binary: config.gateway.clone(),
            config: config_path,
            log,
        });
        for i in 0..count {
            shared.start_process(i).await?;
        }
        shared.point_didit();
        Ok(World {
            shared,
            store_url,
            schema,
            receiver,
        })
    }

    /// Runs every step at its offset, each in a task of its own (so they overlap), and answers
    /// what each got.
    pub async fn play(&mut self, plan: &Plan) -> Vec<Record> {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, step) in plan.steps.iter().enumerate() {
            let at = start + Duration::from_millis(step.at_ms);
            tokio::time::sleep_until(at.into()).await;
            let (shared, op) = (self.shared.clone(), step.op);
            tasks.spawn(async move {
                let started_ms = start.elapsed().as_millis() as u64;
                let answers = shared.perform(op).await;
                Record {
                    step: i,
                    op,
                    started_ms,
                    answers,
                }
            });
        }
        let mut history = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(record) = done {
                history.push(record);
            }
        }
        history.sort_by_key(|r| r.step);
        history
    }

    /// Lifts every fault, makes sure every process runs, retries every reference's create until
    /// it is answered (as a caller told to retry would: the one whose body holds the reference),
    /// refreshes every verification, and waits for the outbox and the reservations to drain.
    /// The creates it sends are answered as records after the plan's steps.
    pub async fn quiesce(&mut self, plan: &Plan) -> Vec<Record> {
        let shared = &self.shared;
        let start = Instant::now();
        let mut records = Vec::new();
        shared.betrust.clear_faults();
        shared.gu1.clear_faults();
        shared.didit.clear_faults();
        shared.receiver.fails.store(0, Ordering::SeqCst);
        shared.receiver.gone.store(0, Ordering::SeqCst);
        shared.reload(0);
        let count = shared.processes.lock().unwrap().len();
        for i in 0..count {
            let running = shared.processes.lock().unwrap()[i].child.is_some();
            if !running {
                let _ = shared.start_process(i).await;
            }
        }
        shared.point_didit();
        let _ = shared.recover(0).await;
        for r in 0..plan.references {
            let deadline = Instant::now() + Duration::from_secs(30);
            // The reference's own body first; where the other body holds the reference (it
            // reached a gateway first), that body's caller retries instead.
            let mut other = false;
            while Instant::now() < deadline {
                let started_ms = start.elapsed().as_millis() as u64;
                let answer = shared.create(r, 0, other).await;
                let answered = matches!(answer.status, Some(200 | 201));
                let conflict = answer.code.as_deref() == Some("conflict");
                records.push(Record {
                    step: plan.steps.len() + records.len(),
                    op: if other {
                        Op::Conflict { r, at: 0 }
                    } else {
                        Op::Create { r, at: 0 }
                    },
                    started_ms,
                    answers: vec![answer],
                });
                if answered || (conflict && other) {
                    break;
                }
                if conflict {
                    other = true;
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let known: Vec<usize> = shared.known.lock().unwrap().keys().copied().collect();
        // Until answered: a circuit left open by the run answers 503 until it half-opens.
        for r in known {
            let deadline = Instant::now() + Duration::from_secs(45);
            while Instant::now() < deadline {
                let answer = shared.act(r, 0, "refresh").await;
                if answer.status == Some(200) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        if let Ok(pool) = self.pool().await {
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                let left: i64 = sqlx::query_scalar(
                    "SELECT (SELECT COUNT(*) FROM events WHERE state = 'pending') + \
                     (SELECT COUNT(*) FROM create_attempts)",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(1);
                if left == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            pool.close().await;
        }
        records
    }

    /// A pool on the campaign's store.
    pub(crate) async fn pool(&self) -> Result<sqlx::AnyPool, String> {
        sqlx::any::install_default_drivers();
        sqlx::pool::PoolOptions::<sqlx::Any>::new()
            .max_connections(2)
            .connect(&self.store_url)
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes the history, one record per line.
    pub fn write_history(&self, history: &[Record], path: &std::path::Path) -> Result<(), String> {
        let lines: Vec<String> = history
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect();
        std::fs::write(path, lines.join("\n") + "\n").map_err(|e| e.to_string())
    }

    /// Stops the processes and drops the PostgreSQL schema.
    pub async fn stop(self) {
        for process in self.shared.processes.lock().unwrap().iter_mut() {
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some((base, name)) = &self.schema
            && let Ok(admin) = sqlx::AnyPool::connect(base).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {name} CASCADE")))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }
}

impl Shared {
    /// Writes policy `variant` (see [`Op::Reload`]); the processes pick it up by themselves.
    fn reload(&self, variant: u8) {
        let text = match variant {
            1 => self
                .policy
                .replace("default = \"betrust-cl\"", "default = \"gu1\""),
            2 => self.policy.replacen(
                "lookup_grace_seconds = 3\n",
                "lookup_grace_seconds = 3\ncircuit_breaker = { failures = 1, open_seconds = 1 }\n",
                1,
            ),
            _ => self.policy.clone(),
        };
        let _ = std::fs::write(&self.config, text);
    }

    fn base(&self, process: usize) -> String {
        let processes = self.processes.lock().unwrap();
        let port = processes[process % processes.len()].port;
        format!("http://127.0.0.1:{port}")
    }

    /// Starts process `i` on its port and waits until it answers `/healthz`.
    async fn start_process(&self, i: usize) -> Result<(), String> {
        let port = {
            let mut processes = self.processes.lock().unwrap();
            let process = &mut processes[i];
            // Never two at once on one slot: a process left running would outlive the campaign.
            if let Some(mut running) = process.child.take() {
                let _ = running.kill();
                let _ = running.wait();
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| e.to_string())?;
            let child = Command::new(&self.binary)
                .args(["serve", "--config"])
                .arg(&self.config)
                .args(["--listen", &format!("127.0.0.1:{}", process.port)])
                .envs(process.env.iter().map(|(k, v)| (k, v)))
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
            process.child = Some(child);
            process.port
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let up = self
                .http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "gateway {i} did not start; see {}",
            self.log.display()
        ))
    }

    fn body(&self, r: usize, other: bool) -> Value {
        let (reference, subject, country, nin) = plan::reference(self.seed, r);
        let (subject, nin) = if other {
            (format!("{subject}-other"), format!("{nin}-other"))
        } else {
            (subject, nin)
        };
        json!({
            "reference": reference,
            "subject": {
                "id": subject,
                "country": country,
                "national_id": nin,
                "first_name": "Ana",
                "last_name": "Rojas",
                "date_of_birth": "1990-05-20"
            }
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (Answer, Value) {
        let started = Instant::now();
        match request.bearer_auth(API_KEY).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let answer = Answer {
                    status: Some(status),
                    code: body["code"].as_str().map(str::to_string),
                    id: body["id"].as_str().map(str::to_string),
                    took_ms: started.elapsed().as_millis() as u64,
                    error: None,
                };
                (answer, body)
            }
            Err(error) => (
                Answer {
                    status: None,
                    code: None,
                    id: None,
                    took_ms: started.elapsed().as_millis() as u64,
                    error: Some(if error.is_timeout() {
                        "timed out".into()
                    } else if error.is_connect() {
                        NOT_SENT.into()
                    } else {
                        "no answer (the connection was lost)".into()
                    }),
                },
                Value::Null,
            ),
        }
    }

    /// Sends reference `r`'s create (or, `other`, the same reference with another subject) to
    /// process `at`; remembers the verification it answers.
    pub(crate) async fn create(&self, r: usize, at: usize, other: bool) -> Answer {
        let request = self
            .http
            .post(format!("{}/v1/verifications", self.base(at)))
            .json(&self.body(r, other));
        let (answer, body) = self.send(request).await;
        if matches!(answer.status, Some(200 | 201)) && !other {
            self.known.lock().unwrap().insert(
                r,
                Known {
                    id: body["id"].as_str().unwrap_or_default().to_string(),
                    provider: body["provider"].as_str().unwrap_or_default().to_string(),
                    provider_reference: body["provider_reference"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                },
            );
        }
        answer
    }

    /// `POST /v1/verifications/{id}/{action}` for reference `r`'s verification.
    pub(crate) async fn act(&self, r: usize, at: usize, action: &str) -> Answer {
        let Some(known) = self.known.lock().unwrap().get(&r).cloned() else {
            return not_yet();
        };
        let request = self
            .http
            .post(format!(
                "{}/v1/verifications/{}/{action}",
                self.base(at),
                known.id
            ))
            .json(&json!({}));
        self.send(request).await.0
    }

    async fn perform(&self, op: Op) -> Vec<Answer> {
        match op {
            Op::Create { r, at } => vec![self.create(r, at, false).await],
            Op::Twins { r } => {
                let (a, b) = tokio::join!(self.create(r, 0, false), self.create(r, 1, false));
                vec![a, b]
            }
            Op::Conflict { r, at } => vec![self.create(r, at, true).await],
            Op::Finish { r, outcome } => {
                let Some(known) = self.known.lock().unwrap().get(&r).cloned() else {
                    return vec![not_yet()];
                };
                let outcome = OUTCOMES[usize::from(outcome) % OUTCOMES.len()];
                // A provider moves forward only: the simulators would let a test move a
                // finished verification again, which no provider does. One outcome at a time
                // per verification, so that two cannot both pass this look and land backwards.
                let turn = self.finishing.lock().unwrap().entry(r).or_default().clone();
                let _turn = turn.lock().await;
                let now = self.provider_status(&known.provider, &known.provider_reference);
                let rank = now.as_deref().map_or(0, crate::check::stage);
                if now.is_none() || rank == 3 || crate::check::stage(outcome.as_str()) < rank {
                    return vec![Answer {
                        status: None,
                        code: None,
                        id: None,
                        took_ms: 0,
                        error: Some("skipped: the provider is past that".into()),
                    }];
                }
                let object = known.provider_reference.as_str();
                let done = match known.provider.as_str() {
                    "gu1" => self.gu1.finish(object, outcome).await,
                    "didit" => self.didit.finish(object, outcome).await,
                    _ => self.betrust.finish(object, outcome).await,
                };
                vec![simulator(done)]
            }
            Op::Refresh { r, at } => vec![self.act(r, at, "refresh").await],
            Op::Decide { r, at, approve } => {
                let Some(known) = self.known.lock().unwrap().get(&r).cloned() else {
                    return vec![not_yet()];
                };
                let outcome = if approve { "approve" } else { "reject" };
                // In turn with the provider's outcomes: an outcome drawn while a decision is
                // under way would look at the status before it, and could land a second final
                // one at the provider (gu1 and Didit let a test do that) that no person made.
                let turn = self.finishing.lock().unwrap().entry(r).or_default().clone();
                let _turn = turn.lock().await;
                let request = self
                    .http
                    .post(format!(
                        "{}/v1/verifications/{}/decision",
                        self.base(at),
                        known.id
                    ))
                    .json(&json!({ "outcome": outcome, "reason": "checked by the campaign" }));
                vec![self.send(request).await.0]
            }
            Op::Forge { r, at } => {
                let Some(known) = self.known.lock().unwrap().get(&r).cloned() else {
                    return vec![not_yet()];
                };
                let body = if known.provider == "didit" {
                    json!({
                        "session_id": known.provider_reference,
                        "status": "Approved",
                        "webhook_type": "status.updated",
                        "timestamp": chrono::Utc::now().timestamp(),
                    })
                } else {
                    json!({
                        "event": "kyc.validation_approved",
                        "payload": { "id": known.provider_reference, "status": "approved" },
                        "transaction_id": known.provider_reference,
                        "status": "approved",
                    })
                };
                let request = self
                    .http
                    .post(format!(
                        "{}/hooks/{}/forged0token0guess",
                        self.base(at),
                        known.provider
                    ))
                    .header("x-webhook-signature", "00")
                    .header("x-signature", "00")
                    .json(&body);
                vec![self.send(request).await.0]
            }
            Op::Reload { variant } => {
                self.reload(variant);
                vec![]
            }
            Op::ReceiverGone => {
                self.receiver.gone.fetch_add(1, Ordering::SeqCst);
                // The tenant notices and fixes its endpoint a little after the 410.
                let deadline = Instant::now() + Duration::from_secs(5);
                while self.receiver.gone.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                vec![self.recover(1).await]
            }
            Op::Cancel { r, at } => vec![self.act(r, at, "cancel").await],
            Op::LateCreate { provider } => {
                self.inject(provider, &CREATES, Fault::LateWork(HELD));
                vec![]
            }
            Op::RefuseCreate { provider } => {
                self.inject(provider, &CREATES, Fault::Status(503));
                vec![]
            }
            Op::FailRead { provider } => {
                self.inject(provider, &READS, Fault::Status(500));
                vec![]
            }
            Op::FailCreate {
                provider,
                after_work,
            } => {
                let fault = if after_work {
                    Fault::StatusAfterWork(500)
                } else {
                    Fault::Status(500)
                };
                self.inject(provider, &CREATES, fault);
                vec![]
            }
            Op::CutCreate { provider } => {
                self.inject(provider, &CREATES, Fault::Cut);
                vec![]
            }
            Op::Redeliver { r, back } => {
                let Some(known) = self.known.lock().unwrap().get(&r).cloned() else {
                    return vec![not_yet()];
                };
                let back = usize::from(back);
                let object = known.provider_reference.as_str();
                let sent = match known.provider.as_str() {
                    "gu1" => self.gu1.send_webhook_again(object, back).await,
                    "didit" => self.didit.send_webhook_again(object, back).await,
                    _ => self.betrust.send_webhook_again(object, back).await,
                };
                // None sent that far back yet: nothing to send again.
                vec![simulator(sent.or_else(|e| match e {
                    kyc_sandbox::SandboxError::NotFound => Ok(()),
                    other => Err(other),
                }))]
            }
            Op::Pause { at, ms } => {
                // Where a delivery comes within 3 s, the process that sent it is stopped with it
                // in flight, so that its attempt outlives its lease.
                let (held, in_flight) = tokio::sync::oneshot::channel();
                *self.receiver.hold.lock().unwrap() = Some(held);
                let sender = tokio::time::timeout(Duration::from_secs(3), in_flight).await;
                self.receiver.hold.lock().unwrap().take();
                let (at, what) = match sender {
                    // Whole seconds: the one ahead reads 1 or 2 s ahead, the other -1 or 0.
                    Ok(Ok(ahead_ms)) => (
                        usize::from(ahead_ms >= CLOCK_AHEAD_MS / 2),
                        "with a delivery in flight",
                    ),
                    _ => (at, "with no delivery in flight"),
                };
                let signal = |name: &str| {
                    let processes = self.processes.lock().unwrap();
                    let index = at % processes.len();
                    let child = processes[index].child.as_ref()?;
                    let sent = Command::new("kill")
                        .args([name, &child.id().to_string()])
                        .status()
                        .is_ok_and(|s| s.success());
                    sent.then_some(index)
                };
                let Some(index) = signal("-STOP") else {
                    return vec![];
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                signal("-CONT");
                vec![Answer {
                    status: None,
                    code: None,
                    id: None,
                    took_ms: 0,
                    error: Some(format!("stopped process {index} {what}")),
                }]
            }
            Op::Kill { at, back_ms } => {
                let index = {
                    let mut processes = self.processes.lock().unwrap();
                    let index = at % processes.len();
                    // Down already (on one process, both numbers are it): its killer restarts it.
                    let Some(mut child) = processes[index].child.take() else {
                        return vec![];
                    };
                    let _ = child.kill();
                    let _ = child.wait();
                    index
                };
                // Didit's destination moves to a process still up, if there is one.
                self.point_didit();
                tokio::time::sleep(Duration::from_millis(back_ms)).await;
                let started = self.start_process(index).await;
                // And is set again once this one is back (first up first).
                self.point_didit();
                match started {
                    Ok(()) => vec![],
                    Err(error) => vec![Answer {
                        status: None,
                        code: None,
                        id: None,
                        took_ms: 0,
                        error: Some(error),
                    }],
                }
            }
            Op::ReceiverFails { n } => {
                self.receiver.fails.fetch_add(n, Ordering::SeqCst);
                vec![]
            }
        }
    }
}

impl Shared {
    /// `POST /v1/events/recover` at process `at`: a URL disabled by a 410 is enabled again,
    /// and its failed events sent again, as a tenant would after fixing its endpoint.
    async fn recover(&self, at: usize) -> Answer {
        let since = (self.started_at - chrono::Duration::minutes(1)).to_rfc3339();
        let recover = self
            .http
            .post(format!("{}/v1/events/recover", self.base(at)))
            .json(&json!({ "since": since }));
        self.send(recover).await.0
    }

    /// Injects `fault` into the next request at provider `provider` (by [`plan::PROVIDERS`])
    /// whose request line contains that provider's entry of `paths`.
    fn inject(&self, provider: u8, paths: &[&str; 3], fault: Fault) {
        let index = usize::from(provider) % plan::PROVIDERS.len();
        let rule = FaultRule::once(fault).on_path(paths[index]);
        match index {
            0 => self.betrust.inject(rule),
            1 => self.gu1.inject(rule),
            _ => self.didit.inject(rule),
        }
    }

    /// The status the provider instance `provider` holds for its object `object`, in the
    /// gateway's words by the adapter's documented mapping (see [`crate::check`]); `None` where
    /// it holds no such object.
    pub(crate) fn provider_status(&self, provider: &str, object: &str) -> Option<String> {
        match provider {
            "gu1" => self
                .gu1
                .validation(object)
                .map(|held| held["status"].as_str().unwrap_or_default().to_string()),
            "didit" => self.didit.session(object).map(|held| {
                let theirs = held["status"].as_str().unwrap_or_default();
                crate::check::didit_status(theirs).map_or_else(
                    || format!("unmapped Didit status {theirs:?}"),
                    str::to_string,
                )
            }),
            _ => self
                .betrust
                .transaction(object)
                .map(|held| crate::check::betrust_status(&held).to_string()),
        }
    }

    /// Sets Didit's webhook destination (one per application, set in its console) to the
    /// `didit` instance's URL at the first process that is up; with none up it stays as it is
    /// (Didit's deliveries fail, and it retries). Under the processes' lock, so that an older
    /// look cannot land after a newer one.
    fn point_didit(&self) {
        let processes = self.processes.lock().unwrap();
        if let Some(up) = processes.iter().find(|p| p.child.is_some()) {
            let url = format!("http://127.0.0.1:{}{}", up.port, self.didit_hook_path);
            self.didit.set_webhook_url(Some(url));
        }
    }
}

/// The `didit` instance's webhook path, from `kyc-gateway hooks` run on the campaign's policy
/// with a process's environment (the token comes from the instance's secrets).
fn didit_hook_path(
    binary: &Path,
    config: &Path,
    env: &[(String, String)],
) -> Result<String, String> {
    const BASE: &str = "http://base.invalid";
    let out = Command::new(binary)
        .args(["hooks", "--base", BASE, "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} hooks: {e}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("didit\tdidit\t"))
        .and_then(|url| url.strip_prefix(BASE))
        .filter(|_| out.status.success())
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "kyc-gateway hooks printed no didit line: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn not_yet() -> Answer {
    Answer {
        status: None,
        code: None,
        id: None,
        took_ms: 0,
        error: Some("no verification for this reference yet".into()),
    }
}

fn simulator(done: Result<(), kyc_sandbox::SandboxError>) -> Answer {
    Answer {
        status: None,
        code: None,
        id: None,
        took_ms: 0,
        error: done.err().map(|e| format!("simulator: {e}")),
    }
}

/// What the campaign makes the tenant's receiver do.
#[derive(Default)]
struct Receiver {
    /// Answer the next this many deliveries 500.
    fails: AtomicU32,
    /// Answer the next this many deliveries 410.
    gone: AtomicU32,
    /// Hold the next delivery for [`HOLD`], then answer it 500; told here how far ahead of
    /// ours its sender's clock is (its `webhook-timestamp`), which says which process sent it.
    hold: Mutex<Option<tokio::sync::oneshot::Sender<i64>>>,
}

/// How long a held delivery is held: less than the gateway's webhook timeout.
const HOLD: Duration = Duration::from_millis(1_000);

/// The tenant's receiver: records each delivery, checks its signature, and answers as `control`
/// says (410, 500, or held then 500), else 200.
async fn receiver(
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    control: Arc<Receiver>,
) -> Result<(String, tokio::task::JoinHandle<()>), String> {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}/events",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (deliveries, control) = (deliveries.clone(), control.clone());
            async move {
                let verified = standardwebhooks::Webhook::new(WEBHOOK_SECRET)
                    .is_ok_and(|w| w.verify(&body, &headers).is_ok());
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let take = |counter: &AtomicU32| {
                    counter
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                };
                let held = control.hold.lock().unwrap().take();
                let answer = if let Some(held) = held {
                    let stamp = headers
                        .get("webhook-timestamp")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or_default();
                    let _ = held.send((stamp - chrono::Utc::now().timestamp()) * 1000);
                    tokio::time::sleep(HOLD).await;
                    StatusCode::INTERNAL_SERVER_ERROR
                } else if take(&control.gone) {
                    StatusCode::GONE
                } else if take(&control.fails) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                deliveries.lock().unwrap().push(Delivery {
                    id: headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    verification: json["data"]["id"].as_str().unwrap_or_default().to_string(),
                    status: json["data"]["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    verified,
                    accepted: answer == StatusCode::OK,
                });
                answer
            }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, server))
}
