//! What the live policy and the telemetry cost a request: the policy snapshot every request takes,
//! one tenant rate-limit check, and `GET /v1/verifications/{id}` through the whole router (in
//! process, no socket) for a tenant without a limit and for one with, each printed beside its
//! floor. Then the same GET with telemetry as `serve` sets it up (`telemetry::init`: info logs,
//! here to /dev/null, and the Prometheus recorder), with the OTLP trace exporter off and on
//! (sending to a receiver in this process that takes and drops), and with no telemetry at all;
//! each runs in a child process of its own, since a subscriber and a recorder are per process.
//!
//! Run: `cargo bench -p kyc-gateway --bench request_overhead`

mod common;

use axum::body::Body;
use axum::http::Request;
use kyc_gateway::app::{App, AppState, Runtime};
use kyc_gateway::config::{Policy, RateLimit, hash_api_key};
use kyc_gateway::providers::limits::Limiter;
use kyc_gateway::store::{SqlStore, Store, VerificationStore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const CALLS: u32 = 20_000;
const REQUESTS: u32 = 5_000;

fn policy(db: &str) -> Policy {
    let text = format!(
        r#"
[server]
outbound_allow = ["127.0.0.1"]
[store]
url = "sqlite://{db}"
[providers.p]
kind = "gu1"
base_url = "http://127.0.0.1:9"
api_key = "${{KEY}}"
[tenants.open]
api_keys = ["{open}"]
[tenants.open.routing]
default = "p"
[tenants.limited]
api_keys = ["{limited}"]
rate_limit = {{ per_second = 1000000, burst = 1000000 }}
[tenants.limited.routing]
default = "p"
"#,
        open = hash_api_key("open-key"),
        limited = hash_api_key("limited-key"),
    );
    Policy::parse(&text, |_| Some("gk_bench".into())).unwrap()
}

/// The telemetry setups compared, as `--telemetry <name>` of a child process.
const SETUPS: [&str; 3] = ["none", "logs+metrics", "logs+metrics+traces"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.iter().position(|a| a == "--telemetry") {
        Some(at) => runtime.block_on(telemetry_child(&args[at + 1])),
        None => runtime.block_on(policy_and_telemetry()),
    }
}

/// A store with one pending verification per tenant, and the router over it.
async fn setup(db: &str) -> (Arc<App>, axum::Router, Vec<String>) {
    let policy = policy(db);
    let store = Arc::new(SqlStore::connect(&policy.store.url).await.unwrap());
    let mut ids = Vec::new();
    for tenant in ["open", "limited"] {
        let id = format!("ver_{}", ulid::Ulid::generate());
        let (row, change) = common::pending(tenant, &id, tenant, "p");
        store
            .insert(&row, &change, chrono::DateTime::<chrono::Utc>::MIN_UTC)
            .await
            .unwrap();
        ids.push(id);
    }
    let app = Arc::new(App::new(
        store as Arc<dyn Store>,
        "http://127.0.0.1:8080".into(),
        Runtime::build(policy).unwrap(),
    ));
    let router = kyc_gateway::http::server::router(AppState(app.clone()));
    (app, router, ids)
}

/// `GET /v1/verifications/{id}` `REQUESTS` times, sorted durations.
async fn gets(router: &axum::Router, tenant: &str, id: &str) -> Vec<Duration> {
    let mut sorted = Vec::new();
    for _ in 0..REQUESTS {
        let request = Request::get(format!("/v1/verifications/{id}"))
            .header("authorization", format!("Bearer {tenant}-key"))
            .body(Body::empty())
            .unwrap();
        let started = Instant::now();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        sorted.push(started.elapsed());
    }
    sorted.sort();
    sorted
}

/// One telemetry setup's GETs (the parent set its environment); prints `p50_ns p99_ns`.
async fn telemetry_child(setup_name: &str) {
    let _telemetry = (setup_name != "none").then(|| {
        kyc_gateway::infra::telemetry::metrics();
        kyc_gateway::infra::telemetry::init()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db").display().to_string();
    let (_app, router, ids) = setup(&db).await;
    let sorted = gets(&router, "open", &ids[0]).await;
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    println!("{} {}", at(0.5).as_nanos(), at(0.99).as_nanos());
}

async fn policy_and_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db").display().to_string();
    let (app, router, ids) = setup(&db).await;

    println!(
        "{:<36} {:>10} {:>10} {:>10}",
        "per call", "p50", "p99", "floor"
    );
    let snapshot = time_sync(|| drop(app.runtime()));
    report("policy snapshot", &snapshot, Duration::from_micros(1));
    let limiter = Limiter::new(&RateLimit {
        per_second: 1_000_000,
        burst: 1_000_000,
    });
    let admit = time_sync(|| {
        std::hint::black_box(limiter.admit());
    });
    report("rate-limit check", &admit, Duration::from_micros(1));

    let mut timed = Vec::new();
    for (tenant, id) in ["open", "limited"].iter().zip(&ids) {
        let sorted = gets(&router, tenant, id).await;
        report(
            &format!("GET by id, tenant {tenant}"),
            &sorted,
            Duration::from_millis(2),
        );
        timed.push(sorted);
    }
    let p50 = |s: &[Duration]| s[s.len() / 2];
    let added = p50(&timed[1]).saturating_sub(p50(&timed[0]));
    println!(
        "\nthe limit's cost on GET (p50 difference): {added:.2?} (floor 20µs) {}",
        if added <= Duration::from_micros(20) {
            "ok"
        } else {
            "OVER"
        }
    );
    telemetry().await;
}

/// The GET under each telemetry setup, each in a child process; the exporter's cost is the p50
/// difference between traces on and off.
async fn telemetry() {
    let receiver = otlp_sink().await;
    println!(
        "\nGET by id, by telemetry setup (child processes, logs to /dev/null; the median of \
         {ROUNDS} runs each, interleaved)"
    );
    println!("{:<36} {:>10} {:>10}", "setup", "p50", "p99");
    let mut runs: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); SETUPS.len()];
    for _ in 0..ROUNDS {
        for (setup_name, runs) in SETUPS.iter().zip(&mut runs) {
            runs.push(telemetry_run(setup_name, &receiver).await);
        }
    }
    let mut p50s = Vec::new();
    for (setup_name, mut runs) in SETUPS.iter().zip(runs) {
        runs.sort();
        let (p50, p99) = runs[runs.len() / 2];
        println!("{setup_name:<36} {p50:>10.2?} {p99:>10.2?}");
        p50s.push(p50);
    }
    let floor = Duration::from_micros(TRACES_FLOOR_MICROS);
    let added = p50s[2].saturating_sub(p50s[1]);
    println!(
        "\nthe trace exporter's cost on GET (p50, on minus off): {added:.2?} (floor {floor:?}) {}",
        if added <= floor { "ok" } else { "OVER" }
    );
    let all = p50s[2].saturating_sub(p50s[0]);
    println!("all telemetry's cost on GET (p50, traces on minus none): {all:.2?}");
    println!(
        "OTLP exports received: {}",
        EXPORTS.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// Runs per telemetry setup: single runs of a few thousand requests move by tens of µs.
const ROUNDS: usize = 5;

/// One child run of `setup_name`: its p50 and p99. The child is awaited, not waited on, so the
/// OTLP sink in this process keeps taking its exports.
async fn telemetry_run(setup_name: &str, receiver: &str) -> (Duration, Duration) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["--telemetry", setup_name])
        .env("KYC_GATEWAY_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stderr(std::process::Stdio::null());
    if setup_name.ends_with("traces") {
        child.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver);
    }
    let out = child.output().await.unwrap();
    assert!(out.status.success(), "the {setup_name} run failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut figures = text
        .split_whitespace()
        .map(|n| Duration::from_nanos(n.parse().unwrap()));
    (figures.next().unwrap(), figures.next().unwrap())
}

/// The most the trace exporter may add to a GET's p50: a quarter of the whole GET's 100 µs.
const TRACES_FLOOR_MICROS: u64 = 25;

/// Exports the sink took (printed, to show the traced runs really exported).
static EXPORTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An OTLP/HTTP receiver that accepts every export and drops it; its base URL.
async fn otlp_sink() -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|_: axum::body::Bytes| async {
            EXPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn time_sync(mut call: impl FnMut()) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let started = Instant::now();
            call();
            started.elapsed()
        })
        .collect();
    out.sort();
    out
}

fn report(name: &str, sorted: &[Duration], floor: Duration) {
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    let p50 = at(0.5);
    println!(
        "{name:<36} {:>10.2?} {:>10.2?} {:>10.2?} {}",
        p50,
        at(0.99),
        floor,
        if p50 <= floor { "ok" } else { "OVER" }
    );
}
