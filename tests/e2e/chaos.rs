//! The fault campaign (`crates/chaos`) at a fixed seed and a small budget: a randomized workload
//! under late answers, failures before and after the work, `kill -9`, stopped processes and a
//! failing receiver, against this build's gateway,
//! checked against the invariants. A long run: `cargo run --release -p kyc-bench -- chaos`.

use crate::harness::*;
use std::path::PathBuf;

/// Where a run keeps its plan, history, logs and report (kept after a failure).
fn out(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("chaos")
        .join(name)
}

async fn campaign(seed: u64, postgres: Option<String>, name: &str) {
    let config = kyc_chaos::Config {
        seed,
        operations: 250,
        gateway: binary().into(),
        postgres,
        out: out(name),
    };
    let report = kyc_chaos::run(&config).await.unwrap();
    eprintln!(
        "seed {seed}: {} operations, {} faults, {} checks in {:.0} s",
        report.operations, report.faults, report.checks, report.seconds
    );
    assert!(report.faults > 10 && report.checks > 500, "{report:?}");
    assert!(
        report.violations.is_empty(),
        "{:#?}\nplan, history and logs: {}",
        report.violations,
        config.out.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_campaign_on_one_process_and_sqlite_holds_every_invariant() {
    campaign(1, None, "seed-1-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn the_campaign_on_two_processes_and_postgresql_holds_every_invariant() {
    campaign(2, Some(postgres_url()), "seed-2-postgres").await;
}
