//! Watches each tenant's experiment against its guardrail, keeps this replica's view of which
//! experiments are stopped, and recomputes each tenant's adaptive routing shares (see
//! [`crate::analytics::optimize`]) from the store, so that every replica routes by the same.
//!
//! Every `experiments.every_seconds` (and once at start), it reads the stopped experiments from
//! the store, so that a stop recorded by any replica reaches this one's routing within a period,
//! then judges each running experiment of the policy. When a guardrail trips, the stop is written
//! once (the first replica to write it wins), with an `experiment.stopped` event for tenants that
//! have a `webhook_url`, and logged. Ending an experiment is a policy edit; a stopped one stays
//! stopped under its name.

use crate::analytics::AnalyticsError;
use crate::analytics::experiments::{self, EXPERIMENT_STOPPED};
use crate::analytics::optimize;
use crate::app::App;
use crate::config::Experiment;
use crate::store::now;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A check now, then one every period, until the app is stopping.
pub async fn run(app: Arc<App>) {
    loop {
        if let Err(error) = check(&app).await {
            tracing::warn!(%error, "experiments: check failed; trying again next period");
        }
        if let Err(error) = allocate(&app).await {
            tracing::warn!(
                %error,
                "adaptive routing: shares not recomputed; the last ones stand until next period"
            );
        }
        let every = app.runtime().policy.experiments.every_seconds;
        if !super::waited(&app, Duration::from_secs(every)).await {
            break;
        }
    }
}

/// One check of every tenant's experiment.
async fn check(app: &App) -> Result<(), AnalyticsError> {
    let mut stopped: HashSet<(String, String)> = app
        .store
        .stopped_experiments()
        .await?
        .into_iter()
        .map(|(tenant, name, _)| (tenant, name))
        .collect();
    let runtime = app.runtime();
    for (tenant, config) in &runtime.policy.tenants {
        let Some(experiment) = &config.routing.experiment else {
            continue;
        };
        let key = (tenant.clone(), experiment.name.clone());
        if experiment.guardrail_pp.is_none() || stopped.contains(&key) {
            continue;
        }
        let (figures, judgement) = experiments::measure(app, tenant, experiment).await?;
        if !judgement.guardrail_tripped {
            continue;
        }
        let at = now();
        let event = config.webhook_url.is_some().then(|| {
            let line = format!("experiment:{}", experiment.name);
            crate::lifecycle::tenant_event(&runtime, tenant, line, EXPERIMENT_STOPPED, &figures, at)
        });
        if app
            .store
            .stop_experiment(tenant, &experiment.name, at, event.as_ref())
            .await?
        {
            log_stop(tenant, experiment, &judgement);
            app.outbox_wake.notify_one();
        }
        stopped.insert(key);
    }
    app.set_stopped_experiments(stopped);
    Ok(())
}

/// Recomputes the adaptive routing shares of every tenant whose routing has one; a tenant whose
/// policy no longer has one loses its shares.
async fn allocate(app: &App) -> Result<(), AnalyticsError> {
    let runtime = app.runtime();
    let mut all = HashMap::new();
    for (tenant, config) in &runtime.policy.tenants {
        let Some(optimize) = &config.routing.optimize else {
            continue;
        };
        let allocation =
            optimize::allocate(app.store.as_ref(), &runtime.policy, tenant, optimize, now())
                .await?;
        let shares = allocation.shares.percent();
        tracing::debug!(tenant, ?shares, "adaptive routing: shares recomputed");
        all.insert(tenant.clone(), Arc::new(allocation));
    }
    app.set_allocations(all);
    Ok(())
}

fn log_stop(tenant: &str, experiment: &Experiment, judgement: &experiments::Judgement) {
    let difference = judgement.sequential.map_or(0.0, |s| s.difference);
    tracing::warn!(
        tenant,
        experiment = %experiment.name,
        challenger = %experiment.challenger,
        difference,
        guardrail_pp = experiment.guardrail_pp,
        "experiment stopped by its guardrail: its subjects now go to the champion"
    );
}
