//! The fault campaign: a seeded, randomized workload of creates (new references, retries with the
//! same body, the same reference with another body, concurrent twins at two processes), provider
//! outcomes, duplicated and reordered provider webhooks, refreshes, cancels and decisions, under
//! randomized faults (provider answers held past the timeout after doing the work, 500s and 503s
//! before doing it, 500s and cut connections after doing it, failed reads, `kill -9` of a gateway
//! process and its restart, a process stopped longer than an outbox lease, a receiver answering
//! 500 or 410), run against real gateway processes, the simulators of all three providers
//! (BeTrust, gu1 and Didit: each takes a third of the references by its country, and each is in
//! the others' fallback chain) and a tenant receiver; the store is sampled during the run, and the
//! invariants are checked after it from the simulators' own records, the store and the receiver's
//! log ([`check`]).
//!
//! The seed decides the plan, every operation and fault and when it starts ([`plan`]), before
//! anything runs, and the plan is written out beside the history of what each operation got. Re-
//! running a seed replays the same plan at the same offsets; what real processes make of it
//! (which request wins a race, where a `kill -9` lands inside a request) can differ from run to
//! run, so a failure found by a seed is usually, not always, found again by it.

pub mod check;
pub mod plan;
mod world;

pub use check::Violation;
pub use plan::{Op, Plan, Step};
pub use world::World;

use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What one campaign runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Decides the plan.
    pub seed: u64,
    /// How many operations the plan holds.
    pub operations: usize,
    /// The `kyc-gateway` binary to run.
    pub gateway: PathBuf,
    /// `None`: one process on a SQLite file; `Some(url)`: two processes sharing this PostgreSQL
    /// database (the campaign makes a schema of its own in it), the second one's clock 2 s ahead.
    pub postgres: Option<String>,
    /// Where the plan, the history, the gateways' logs and the report go.
    pub out: PathBuf,
}

/// What a campaign did and found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Operations run (faults included).
    pub operations: usize,
    /// Faults injected.
    pub faults: usize,
    /// Individual invariant checks made.
    pub checks: usize,
    /// What did not hold.
    pub violations: Vec<Violation>,
    /// How long it took.
    pub seconds: f64,
}

/// Runs one campaign: the plan of `config.seed`, then the quiet period in which every fault is
/// lifted and every unfinished create retried, then the checks. Writes `plan.jsonl`,
/// `history.jsonl`, `report.json` and the gateways' logs to `config.out`.
pub async fn run(config: &Config) -> Result<Report, String> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.out).map_err(|e| e.to_string())?;
    let plan = Plan::new(config.seed, config.operations);
    plan.write(&config.out.join("plan.jsonl"))?;
    let mut world = World::start(config).await?;
    let (stop_watching, stop) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(check::watch(world.pool().await?, stop));
    let mut history = world.play(&plan).await;
    let retries = world.quiesce(&plan).await;
    history.extend(retries);
    let _ = stop_watching.send(true);
    let (watched, seen) = watcher.await.map_err(|e| e.to_string())?;
    let (checks, mut violations) = check::all(&world, &plan, &history).await;
    let checks = checks + watched;
    violations.extend(seen);
    world.write_history(&history, &config.out.join("history.jsonl"))?;
    violations.sort_by(|a, b| a.invariant.cmp(b.invariant));
    let report = Report {
        seed: config.seed,
        operations: plan.steps.len(),
        faults: plan.steps.iter().filter(|s| s.op.is_fault()).count(),
        checks,
        violations,
        seconds: started.elapsed().as_secs_f64(),
    };
    world.stop().await;
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(config.out.join("report.json"), text).map_err(|e| e.to_string())?;
    Ok(report)
}

/// The longest any request may take before it counts as unanswered: the gateway's own request
/// limit (its policy here says 20 s) and a margin.
pub const DEADLINE: Duration = Duration::from_secs(25);
