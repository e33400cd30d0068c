//! What the live policy costs a request: the policy snapshot every request takes, one tenant
//! rate-limit check, and `GET /v1/verifications/{id}` through the whole router (in process, no
//! socket) for a tenant without a limit and for one with, each printed beside its floor.
//!
//! Run: `cargo bench -p kyc-gateway --bench request_overhead`

use axum::body::Body;
use axum::http::Request;
use chrono::Utc;
use kyc_core::{Source, Status, StatusChange, Verification};
use kyc_gateway::app::{App, AppState, Runtime};
use kyc_gateway::limits::Limiter;
use kyc_gateway::policy::{Policy, RateLimit, hash_api_key};
use kyc_gateway::store::{NewChange, SqlStore, Store, StoredVerification};
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

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db").display().to_string();
    let policy = policy(&db);
    let store = Arc::new(SqlStore::connect(&policy.store.url).await.unwrap());
    let mut ids = Vec::new();
    for tenant in ["open", "limited"] {
        let at = Utc::now();
        let id = format!("ver_{}", ulid::Ulid::generate());
        let row = StoredVerification {
            tenant: tenant.into(),
            request_hash: "h".into(),
            verification: Verification {
                id: id.clone(),
                reference: format!("ref-{tenant}"),
                subject_id: "s".into(),
                provider: "p".into(),
                provider_reference: format!("pr-{tenant}"),
                status: Status::Pending,
                reason: None,
                verification_url: None,
                expires_at: None,
                decision: None,
                metadata: None,
                routing: None,
                created_at: at,
                updated_at: at,
                completed_at: None,
            },
        };
        let change = NewChange {
            tenant: tenant.into(),
            verification_id: id.clone(),
            change: StatusChange {
                from: None,
                to: Status::Pending,
                source: Source::Create,
                actor: None,
                at,
            },
        };
        store.insert(&row, &change).await.unwrap();
        ids.push(id);
    }
    let app = Arc::new(App::new(
        store as Arc<dyn Store>,
        "http://127.0.0.1:8080".into(),
        Runtime::build(policy).unwrap(),
    ));
    let router = kyc_gateway::server::router(AppState(app.clone()));

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

    let mut gets = Vec::new();
    for (tenant, id) in ["open", "limited"].iter().zip(&ids) {
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
        report(
            &format!("GET by id, tenant {tenant}"),
            &sorted,
            Duration::from_millis(2),
        );
        gets.push(sorted);
    }
    let p50 = |s: &[Duration]| s[s.len() / 2];
    let added = p50(&gets[1]).saturating_sub(p50(&gets[0]));
    println!(
        "\nthe limit's cost on GET (p50 difference): {added:.2?} (floor 20µs) {}",
        if added <= Duration::from_micros(20) {
            "ok"
        } else {
            "OVER"
        }
    );
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
