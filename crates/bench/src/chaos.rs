//! `kyc-bench chaos --seed N --minutes M [--postgres URL] [--gateway PATH]`: the fault campaign
//! (`kyc-chaos`) for as long as asked, one seed after another from `N`, each run about 600
//! operations on SQLite or, with `--postgres`, on two processes sharing that database. Prints each
//! run's figures and stops at the first run with a violation, naming where its plan, history
//! and logs are.

use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The campaign's command line.
#[derive(Parser)]
#[command(name = "kyc-bench chaos")]
struct ChaosArgs {
    /// The first seed; the next runs take the seeds after it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long to keep running campaigns.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Operations per run.
    #[arg(long, default_value_t = 600)]
    operations: usize,
    /// A PostgreSQL database URL: two processes share it. Without it, one process on SQLite.
    #[arg(long)]
    postgres: Option<String>,
    /// The gateway binary; built (release) when not given.
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Where each run's plan, history, logs and report go (a folder per seed).
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
}

/// Runs campaigns until the time is up or one finds a violation.
pub fn main(args: impl Iterator<Item = String>) -> Result<(), crate::Error> {
    let args = ChaosArgs::parse_from(args);
    let binary = match &args.gateway {
        Some(path) => path.clone(),
        None => crate::procs::build_gateway()?,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let until = Instant::now() + Duration::from_secs(args.minutes * 60);
    let (mut runs, mut operations, mut faults, mut checks) = (0, 0, 0, 0);
    let mut seed = args.seed;
    while Instant::now() < until {
        let kind = if args.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        let out = args.out.join(format!("seed-{seed}-{kind}"));
        let config = kyc_chaos::Config {
            seed,
            operations: args.operations,
            gateway: binary.clone(),
            postgres: args.postgres.clone(),
            out: out.clone(),
        };
        let report = rt.block_on(kyc_chaos::run(&config))?;
        runs += 1;
        operations += report.operations;
        faults += report.faults;
        checks += report.checks;
        println!(
            "seed {seed} ({kind}): {} operations, {} faults, {} checks, {} violations, {:.0} s",
            report.operations,
            report.faults,
            report.checks,
            report.violations.len(),
            report.seconds
        );
        if !report.violations.is_empty() {
            for v in &report.violations {
                println!("  {}: {}", v.invariant, v.detail);
            }
            return Err(format!("seed {seed} broke an invariant; see {}", out.display()).into());
        }
        seed += 1;
    }
    println!(
        "{runs} runs: {operations} operations, {faults} faults, {checks} checks, no violation"
    );
    Ok(())
}
