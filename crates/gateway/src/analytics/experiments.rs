//! Champion-challenger experiments: a tenant's routing sends a share of the subjects of some
//! countries to a challenger instance (see [`crate::providers::routing`]); this module measures both arms
//! from the store and gives the verdict.
//!
//! An arm counts the verifications the experiment routed to it (a fallback away from its
//! instance is not counted), once they are older than the experiment's `horizon` (48 hours by
//! default), each with its outcome as it stood at the horizon; younger ones are `maturing`.
//! Both arms are so compared at the same age: counting verifications as soon as they end would
//! favour the provider that decides fastest (one that rejects in seconds and approves in hours
//! would look worse for hours). The metric is a proportion: `approval_rate` is those approved by
//! the horizon out of those decided (approved or rejected) by then (one still undecided at the
//! horizon, or expired, abandoned or cancelled, is left out), `conversion` those approved by the horizon out of all. The statistics are in
//! [`crate::analytics::significance`]: each arm's value with its Wilson interval, and the
//! difference (challenger − champion) twice: with the always-valid test the verdict uses (the
//! mSPRT's p-value and 95 % confidence sequence), and, for comparison only, with the
//! fixed-horizon figures (Newcombe's interval and the pooled two-proportion z-test), which are
//! right only at one sample size chosen in advance.
//!
//! Verdict: `collecting` while either arm's sample is below `min_sample`; then
//! `challenger_better` or `champion_better` when the always-valid p-value is below 5 %, else
//! `no_difference`. The experiment is looked at every `every_seconds`, by people and by the
//! guardrail, for as long as it runs: a fixed-horizon test looked at that way would call a
//! difference that is not there in a large share of experiments (see the `monitoring_tests`
//! simulation), the always-valid one in at most 5 %. The guardrail (`guardrail_pp`) trips once
//! each arm has `min_sample` and the whole confidence sequence of the difference lies more than
//! `guardrail_pp` points below zero: the challenger is then, with that confidence, that much
//! worse. [`crate::jobs::experiments`] checks it and records the stop in the store, so that every
//! replica sends the experiment's subjects to the champion from then on.

use crate::analytics::AnalyticsError;
use crate::analytics::significance::{self, Comparison, Proportion, Sequential};
use crate::analytics::stats;
use crate::app::App;
use crate::config::{Experiment, Metric};
use crate::store::ArmCount;
use kyc_core::{Arm, Status};
use serde::Serialize;
use utoipa::ToSchema;

/// The type of the event a tenant receives when a guardrail stops its experiment.
pub const EXPERIMENT_STOPPED: &str = "experiment.stopped";

/// An experiment's figures and verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentFigures {
    /// Its name.
    pub name: String,
    /// What is compared.
    pub metric: Metric,
    /// The instance measured against.
    pub champion: String,
    /// The instance on trial.
    pub challenger: String,
    /// Percent of the experiment's subjects sent to the challenger.
    pub share: u32,
    /// The countries in the experiment (empty: all).
    pub countries: Vec<String>,
    /// Each arm's sample needed before a verdict.
    pub min_sample: u64,
    /// The guardrail, in percentage points, if any.
    pub guardrail_pp: Option<f64>,
    /// The age at which a verification is counted, as the policy writes it.
    #[schema(example = "48h")]
    pub horizon: String,
    /// The champion's arm, then the challenger's.
    pub arms: Vec<ArmFigures>,
    /// challenger − champion; absent while an arm's sample is empty.
    pub difference: Option<f64>,
    /// The always-valid p-value of the difference (the mSPRT): the verdict's test, valid at
    /// every look.
    pub always_valid_p_value: Option<f64>,
    /// The difference's 95 % confidence sequence (the mSPRT), `[low, high]`: it holds at every
    /// look at once; the guardrail reads it.
    pub difference_cs: Option<[f64; 2]>,
    /// The difference's fixed-horizon 95 % interval (Newcombe), `[low, high]`, for comparison:
    /// valid only at a sample size fixed in advance, not for a verdict.
    pub difference_ci: Option<[f64; 2]>,
    /// The fixed-horizon two-sided p-value (pooled two-proportion z-test), for comparison: not
    /// the verdict's.
    pub p_value: Option<f64>,
    /// The test the verdict and the guardrail used.
    pub verdict_test: VerdictTest,
    /// What the figures say.
    pub verdict: Verdict,
    /// Whether the guardrail has stopped the challenger's traffic.
    pub stopped: bool,
    /// When it did.
    pub stopped_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One arm's figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArmFigures {
    /// Which arm.
    pub arm: Arm,
    /// Its instance.
    pub provider: String,
    /// Verifications the experiment routed to it.
    pub started: u64,
    /// Of those, the ones younger than the horizon: not counted yet.
    pub maturing: u64,
    /// Those the metric counts, all older than the horizon: the ones decided (approved or
    /// rejected) by the horizon for `approval_rate`, all for `conversion`.
    pub sample: u64,
    /// Of the sample, the approved by the horizon.
    pub approved: u64,
    /// approved / sample; absent for an empty sample.
    pub value: Option<f64>,
    /// Its 95 % interval (Wilson), `[low, high]`.
    pub ci: Option<[f64; 2]>,
    /// The median time from creation to approval or rejection of the arm's decided
    /// verifications (maturing ones too), in seconds, within the 5 % of the stats' time
    /// buckets; absent when none was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_decision_s_p50: Option<f64>,
    /// The arm's instance's price now, times the verifications older than the horizon, over
    /// those approved by the horizon; absent without approvals or a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_approved: Option<f64>,
    /// The currency of `cost_per_approved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// What an experiment's figures say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// An arm's sample is still below `min_sample`.
    Collecting,
    /// No significant difference.
    NoDifference,
    /// The challenger is significantly higher.
    ChallengerBetter,
    /// The champion is significantly higher.
    ChampionBetter,
}

/// The test behind a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictTest {
    /// The mixture sequential probability ratio test: always valid, however often it is read.
    Msprt,
}

/// The comparison of the two arms, the verdict, and whether the guardrail trips.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// The always-valid comparison; absent while an arm's sample is empty.
    pub sequential: Option<Sequential>,
    /// The fixed-horizon comparison, shown beside it; absent while an arm's sample is empty.
    pub comparison: Option<Comparison>,
    /// The verdict.
    pub verdict: Verdict,
    /// The challenger is significantly more than `guardrail_pp` points below the champion.
    pub guardrail_tripped: bool,
}

/// Judges an experiment on its arms' proportions.
pub fn judge(experiment: &Experiment, champion: Proportion, challenger: Proportion) -> Judgement {
    let sequential = significance::sequential(champion, challenger);
    let collecting = champion.sample.min(challenger.sample) < experiment.min_sample;
    let verdict = match sequential {
        _ if collecting => Verdict::Collecting,
        Some(s) if s.significant() && s.difference > 0.0 => Verdict::ChallengerBetter,
        Some(s) if s.significant() && s.difference < 0.0 => Verdict::ChampionBetter,
        _ => Verdict::NoDifference,
    };
    let guardrail_tripped = match (sequential, experiment.guardrail_pp) {
        (Some(s), Some(pp)) => !collecting && s.interval.high < -pp / 100.0,
        _ => false,
    };
    Judgement {
        sequential,
        comparison: significance::compare(champion, challenger),
        verdict,
        guardrail_tripped,
    }
}

/// One arm's verifications, counted for the metric.
#[derive(Debug, Clone, Copy, Default)]
struct ArmCounts {
    started: u64,
    maturing: u64,
    /// Older than the horizon.
    matured: u64,
    /// Of those, approved or rejected by the horizon.
    decided: u64,
    /// Of those, approved.
    approved: u64,
}

impl ArmCounts {
    fn proportion(self, metric: Metric) -> Proportion {
        Proportion {
            successes: self.approved,
            sample: match metric {
                Metric::ApprovalRate => self.decided,
                Metric::Conversion => self.matured,
            },
        }
    }
}

/// The champion's and the challenger's counts, each verification as it stood at the horizon.
fn counts(rows: &[ArmCount]) -> (ArmCounts, ArmCounts) {
    let (mut champion, mut challenger) = (ArmCounts::default(), ArmCounts::default());
    for row in rows {
        let arm = match row.arm {
            Arm::Champion => &mut champion,
            Arm::Challenger => &mut challenger,
        };
        arm.started += row.count;
        arm.maturing += row.maturing;
        arm.matured += row.count.saturating_sub(row.maturing);
        if matches!(row.status, Status::Approved | Status::Rejected) {
            arm.decided += row.final_by_horizon;
            if row.status == Status::Approved {
                arm.approved += row.final_by_horizon;
            }
        }
    }
    (champion, challenger)
}

/// The arms' proportions and the judgement, from the store.
pub async fn measure(
    app: &App,
    tenant: &str,
    experiment: &Experiment,
) -> Result<(ExperimentFigures, Judgement), AnalyticsError> {
    let rows = app
        .store
        .experiment_counts(
            tenant,
            &experiment.name,
            experiment.horizon(),
            crate::store::now(),
        )
        .await?;
    let (champion, challenger) = counts(&rows);
    let metric = experiment.metric;
    let judgement = judge(
        experiment,
        champion.proportion(metric),
        challenger.proportion(metric),
    );
    let arm = |arm, provider: &str, counts: ArmCounts| {
        let proportion = counts.proportion(metric);
        ArmFigures {
            arm,
            provider: provider.to_string(),
            started: counts.started,
            maturing: counts.maturing,
            sample: proportion.sample,
            approved: counts.approved,
            value: proportion.value(),
            ci: proportion.wilson().map(|w| [w.low, w.high]),
            time_to_decision_s_p50: None,
            cost_per_approved: None,
            currency: None,
        }
    };
    let (comparison, sequential) = (judgement.comparison, judgement.sequential);
    let figures = ExperimentFigures {
        name: experiment.name.clone(),
        metric,
        champion: experiment.champion.clone(),
        challenger: experiment.challenger.clone(),
        share: experiment.share,
        countries: experiment.countries.clone(),
        min_sample: experiment.min_sample,
        guardrail_pp: experiment.guardrail_pp,
        horizon: experiment.horizon.clone(),
        arms: vec![
            arm(Arm::Champion, &experiment.champion, champion),
            arm(Arm::Challenger, &experiment.challenger, challenger),
        ],
        difference: sequential.map(|s| s.difference),
        always_valid_p_value: sequential.map(|s| s.p_value),
        difference_cs: sequential.map(|s| [s.interval.low, s.interval.high]),
        difference_ci: comparison.map(|c| [c.interval.low, c.interval.high]),
        p_value: comparison.map(|c| c.p_value),
        verdict_test: VerdictTest::Msprt,
        verdict: judgement.verdict,
        stopped: false,
        stopped_at: None,
    };
    Ok((figures, judgement))
}

/// The figures of the tenant's experiment named `name`, if its policy has it.
pub async fn figures(
    app: &App,
    tenant: &str,
    experiment: &Experiment,
) -> Result<ExperimentFigures, AnalyticsError> {
    let (mut figures, _) = measure(app, tenant, experiment).await?;
    figures.stopped_at = app
        .store
        .stopped_experiments()
        .await?
        .into_iter()
        .find(|(t, n, _)| t == tenant && *n == experiment.name)
        .map(|(_, _, at)| at);
    figures.stopped = figures.stopped_at.is_some();
    let runtime = app.runtime();
    for arm in &mut figures.arms {
        let times = app
            .store
            .arm_decision_times(tenant, &experiment.name, arm.arm)
            .await?;
        arm.time_to_decision_s_p50 = stats::percentile(&times, 0.5);
        let price = runtime
            .policy
            .providers
            .get(&arm.provider)
            .and_then(|p| p.price_per_verification.as_ref());
        if let Some(price) = price.filter(|_| arm.approved > 0) {
            let matured = arm.started.saturating_sub(arm.maturing);
            arm.cost_per_approved = Some(price.amount * matured as f64 / arm.approved as f64);
            arm.currency = Some(price.currency.clone());
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(min_sample: u64, guardrail_pp: Option<f64>) -> Experiment {
        Experiment {
            name: "e".into(),
            champion: "a".into(),
            challenger: "b".into(),
            share: 50,
            countries: Vec::new(),
            metric: Metric::ApprovalRate,
            min_sample,
            guardrail_pp,
            horizon: "48h".into(),
        }
    }

    fn arm(successes: u64, sample: u64) -> Proportion {
        Proportion { successes, sample }
    }

    #[test]
    fn the_verdict_waits_for_the_sample_then_follows_the_always_valid_test() {
        let e = experiment(600, None);
        let j = judge(&e, arm(300, 599), arm(390, 599));
        assert_eq!(j.verdict, Verdict::Collecting);
        assert_eq!(
            judge(&e, arm(300, 600), arm(390, 600)).verdict,
            Verdict::ChallengerBetter
        );
        assert_eq!(
            judge(&e, arm(390, 600), arm(300, 600)).verdict,
            Verdict::ChampionBetter
        );
        // Significant for the fixed-horizon test (p = 0.036), not for the always-valid one.
        let j = judge(&experiment(200, None), arm(120, 200), arm(140, 200));
        assert!(j.comparison.unwrap().significant());
        assert_eq!(j.verdict, Verdict::NoDifference);
    }

    #[test]
    fn the_guardrail_waits_for_the_sample_and_needs_the_whole_sequence_below_it() {
        // 80 % against 50 % on 100 each: the confidence sequence is about -0.50 to -0.10.
        let j = judge(&experiment(100, Some(5.0)), arm(80, 100), arm(50, 100));
        assert!(j.guardrail_tripped);
        assert_eq!(j.verdict, Verdict::ChampionBetter);
        // The same before each arm has `min_sample`: not yet.
        assert!(!judge(&experiment(101, Some(5.0)), arm(80, 100), arm(50, 100)).guardrail_tripped);
        // A 10-point guardrail: the sequence reaches above -0.10.
        assert!(!judge(&experiment(100, Some(10.0)), arm(80, 100), arm(50, 100)).guardrail_tripped);
        // No guardrail, or the challenger better: never.
        assert!(!judge(&experiment(1, None), arm(80, 100), arm(50, 100)).guardrail_tripped);
        assert!(!judge(&experiment(1, Some(5.0)), arm(50, 100), arm(80, 100)).guardrail_tripped);
    }

    #[test]
    fn arms_count_their_own_verifications_as_they_stood_at_the_horizon() {
        let row = |arm, status, count, maturing, final_by_horizon| ArmCount {
            arm,
            status,
            count,
            maturing,
            final_by_horizon,
        };
        let rows = [
            // 3 approved by the horizon, 2 after it (undecided then), 5 too young to count.
            row(Arm::Champion, Status::Approved, 10, 5, 3),
            row(Arm::Champion, Status::Rejected, 1, 0, 1),
            row(Arm::Champion, Status::Pending, 1, 0, 0),
            row(Arm::Challenger, Status::Approved, 1, 0, 1),
            row(Arm::Challenger, Status::Expired, 1, 0, 1),
            row(Arm::Challenger, Status::Rejected, 4, 4, 0),
        ];
        let (champion, challenger) = counts(&rows);
        assert_eq!((champion.started, champion.maturing), (12, 5));
        assert_eq!(champion.proportion(Metric::ApprovalRate), arm(3, 4));
        assert_eq!(champion.proportion(Metric::Conversion), arm(3, 7));
        assert_eq!((challenger.started, challenger.maturing), (6, 4));
        // An expired one was never decided: not in the approval rate, in the conversion.
        assert_eq!(challenger.proportion(Metric::ApprovalRate), arm(1, 1));
        assert_eq!(challenger.proportion(Metric::Conversion), arm(1, 2));
    }
}
