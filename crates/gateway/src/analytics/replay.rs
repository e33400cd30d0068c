//! What-if replay: a tenant's stored verifications of a period routed again through a draft
//! routing, with no provider called, to show where each would have gone instead.
//!
//! Each verification is routed by what routing reads and the store keeps: the tenant, the subject
//! id (the sticky key of splits and experiments) and the subject's country (verifications stored
//! before countries were kept route as if of no country: by split or default). One the caller sent
//! to a provider of its own choosing (reason `override`) stays there. The draft's first choice is
//! taken as available: a replay says where routing sends, not which provider would have been down.
//! An experiment the store says is stopped sends its subjects to its champion, as it would live.
//!
//! Each destination comes with its observed approval rate and cost per approved verification over
//! the same days (from the stats rollups, all countries): what the period says that provider does.
//! The rate comes with the number of decided (approved or rejected) verifications behind it and its 95 % Wilson
//! interval, and again per country the draft sends it verifications from; a country where the
//! instance decided fewer than [`MIN_OBSERVATIONS`] says so instead of giving a rate.

use crate::analytics::AnalyticsError;
use crate::analytics::projection::{Outlook, Projection, observed};
use crate::analytics::significance::Proportion;
use crate::analytics::stats::{self, StatsGroup, StatsGroupFigures};
use crate::app::App;
use crate::config::{Policy, Routing};
use crate::providers::routing::Live;
use crate::store::{Store, StoreError, now};
use chrono::{DateTime, Utc};
use kyc_core::RoutingReason;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Verifications read from the store at a time.
const PAGE: u32 = 5_000;

/// Finished verifications an instance needs in a country before a replay gives its rate there:
/// below 30, the 95 % interval of a rate near 50 % is wider than ±16 points, and a bare rate
/// would say more than the period knows.
pub const MIN_OBSERVATIONS: u64 = 30;

/// What a draft routing would have done to a period's verifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Verifications of the period replayed.
    pub total: u64,
    /// Of those, how many the draft routes where routing sent them, and that ran there.
    pub unchanged: u64,
    /// Of those, how many the draft routes where routing sent them but that ran at a fallback
    /// instance because that one was unavailable then: not moves, the routing is the same.
    pub fallbacks: u64,
    /// How many the draft routes to another instance than routing chose then, per country;
    /// largest first. `total` = `unchanged` + `fallbacks` + the moves' counts.
    pub moves: Vec<Move>,
    /// Every instance the draft sends verifications to, with what the period shows of it.
    pub destinations: Vec<Destination>,
    /// The replayed verifications as they are: approved ÷ decided and cost per approved.
    pub today: Outlook,
    /// The same under the draft: a moved verification that was decided is counted as approved
    /// at its destination's approval rate in its country (its overall rate where it decided
    /// fewer than [`MIN_OBSERVATIONS`] there); every other keeps its own outcome and cost.
    pub projected: Outlook,
}

/// Verifications of one country that would move from one instance to another.
#[derive(Debug, Serialize, ToSchema)]
pub struct Move {
    /// The instance routing chose for them (for a past fallback, the one tried first).
    pub from: String,
    /// The instance the draft sends them to.
    pub to: String,
    /// The subjects' country (`""` when not stored).
    pub country: String,
    /// How many.
    pub count: u64,
}

/// An instance the draft sends verifications to.
#[derive(Debug, Serialize, ToSchema)]
pub struct Destination {
    /// The instance.
    pub provider: String,
    /// How many of the period's verifications the draft sends to it.
    pub count: u64,
    /// Its observed approval rate over the period (approved ÷ decided); absent when none of
    /// its verifications was decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_rate: Option<f64>,
    /// Its verifications decided (approved or rejected) in the period: the observations behind
    /// the rate.
    pub observations: u64,
    /// The rate's 95 % interval (Wilson), `[low, high]`; absent when none was decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_ci: Option<[f64; 2]>,
    /// The same per country the draft sends it verifications from (`""`: not stored).
    pub countries: Vec<DestinationCountry>,
    /// Its observed cost per approved verification over the period, at its price now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_approved: Option<f64>,
    /// The currency of `cost_per_approved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// A destination's figures in one country.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationCountry {
    /// The subjects' country (`""` when not stored).
    pub country: String,
    /// How many of the period's verifications of this country the draft sends to the instance.
    pub count: u64,
    /// The instance's verifications of this country decided (approved or rejected) in the period.
    pub observations: u64,
    /// Fewer than [`MIN_OBSERVATIONS`]: no rate is given, the period says too little.
    pub too_few_observations: bool,
    /// approved ÷ decided in this country; absent when there are too few observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_rate: Option<f64>,
    /// Its 95 % interval (Wilson), `[low, high]`; absent when there are too few observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_ci: Option<[f64; 2]>,
}

/// The Wilson interval of `p`, as answered.
fn interval(p: Proportion) -> Option<[f64; 2]> {
    p.wilson().map(|w| [w.low, w.high])
}

/// Replays `tenant`'s verifications of the past `days` days through `draft`.
pub async fn preview_past_days(
    app: &App,
    policy: &Policy,
    tenant: &str,
    draft: &Routing,
    days: f64,
) -> Result<Preview, AnalyticsError> {
    let until = now();
    let since = until - chrono::Duration::days(days as i64);
    Ok(preview(app.store.as_ref(), policy, tenant, draft, since, until).await?)
}

/// Replays `tenant`'s verifications created from `since` to `until` through `draft`; prices
/// come from `policy`.
pub async fn preview(
    store: &dyn Store,
    policy: &Policy,
    tenant: &str,
    draft: &Routing,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Preview, StoreError> {
    let stopped = match &draft.experiment {
        Some(experiment) => store
            .stopped_experiments()
            .await?
            .iter()
            .any(|(t, name, _)| t == tenant && *name == experiment.name),
        None => false,
    };
    let mut moves: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    // Per destination, per country: how many the draft sends there.
    let mut arriving: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let (mut total, mut unchanged, mut fallbacks) = (0, 0, 0);
    let prices = stats::prices(policy);
    let mut projection = Projection::default();
    let mut after = String::new();
    loop {
        let page = store
            .routed_page(tenant, since, until, &after, PAGE)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id.clone();
        for routed in page {
            total += 1;
            let country = routed.country.clone().unwrap_or_default();
            let to = if routed.reason == Some(RoutingReason::Override) {
                routed.provider.clone()
            } else {
                crate::providers::routing::candidates(
                    draft,
                    tenant,
                    &routed.subject_id,
                    &country,
                    None,
                    |n| policy.providers.contains_key(n),
                    Live {
                        experiment_stopped: stopped,
                        // A draft's adaptive routing at even shares; a subject it routed keeps
                        // its instance.
                        shares: None,
                        optimized_before: (routed.reason == Some(RoutingReason::Optimize))
                            .then_some(routed.provider.as_str()),
                    },
                )
                .map_or_else(|_| routed.provider.clone(), |r| r.candidates[0].clone())
            };
            *arriving
                .entry(to.clone())
                .or_default()
                .entry(country.clone())
                .or_default() += 1;
            projection.add(&routed, &to, &prices);
            // Compared with where routing sent it, not where it ran: a past fallback is not a
            // move when the draft routes as routing did.
            if to != routed.chosen {
                *moves.entry((routed.chosen, to, country)).or_default() += 1;
            } else if to == routed.provider {
                unchanged += 1;
            } else {
                fallbacks += 1;
            }
        }
    }
    let (from_day, to_day) = (since.date_naive(), until.date_naive());
    let rows = store
        .stats(tenant, &from_day.to_string(), &to_day.to_string())
        .await?;
    let by_country = stats::grouped(
        StatsGroup::ProviderCountry,
        rows.clone(),
        Vec::new(),
        &prices,
    );
    let by_provider = stats::grouped(StatsGroup::Provider, rows, Vec::new(), &prices);
    let (today, projected) = projection.outlooks(&by_provider, &by_country, MIN_OBSERVATIONS);
    let destinations = destinations(arriving, &by_provider, &by_country);
    let mut moves: Vec<Move> = moves
        .into_iter()
        .map(|((from, to, country), count)| Move {
            from,
            to,
            country,
            count,
        })
        .collect();
    moves.sort_by_key(|m| std::cmp::Reverse(m.count));
    Ok(Preview {
        total,
        unchanged,
        fallbacks,
        moves,
        destinations,
        today,
        projected,
    })
}

/// Each destination of the draft with what the period's stats show of it, overall
/// (`by_provider`) and in each country it gets verifications from (`by_country`; `arriving`:
/// per destination, per country, how many).
fn destinations(
    arriving: BTreeMap<String, BTreeMap<String, u64>>,
    by_provider: &[StatsGroupFigures],
    by_country: &[StatsGroupFigures],
) -> Vec<Destination> {
    arriving
        .into_iter()
        .map(|(provider, countries)| {
            let seen = by_provider
                .iter()
                .find(|g| g.provider.as_deref() == Some(provider.as_str()));
            let cost = seen.and_then(|g| g.cost.as_ref());
            let all = observed(seen);
            let countries: Vec<DestinationCountry> = countries
                .into_iter()
                .map(|(country, count)| {
                    let seen = by_country.iter().find(|g| {
                        g.provider.as_deref() == Some(provider.as_str())
                            && g.country.as_deref().unwrap_or("") == country
                    });
                    let here = observed(seen);
                    let enough = here.sample >= MIN_OBSERVATIONS;
                    DestinationCountry {
                        country,
                        count,
                        observations: here.sample,
                        too_few_observations: !enough,
                        approval_rate: here.value().filter(|_| enough),
                        approval_ci: interval(here).filter(|_| enough),
                    }
                })
                .collect();
            Destination {
                count: countries.iter().map(|c| c.count).sum(),
                approval_rate: all.value(),
                observations: all.sample,
                approval_ci: interval(all),
                countries,
                cost_per_approved: cost.and_then(|c| c.per_approved),
                currency: cost
                    .filter(|c| c.per_approved.is_some())
                    .map(|c| c.currency.clone()),
                provider,
            }
        })
        .collect()
}

/// The preview as a table for a terminal: the moves, then the destinations.
pub fn table(preview: &Preview) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{} verifications replayed, {} unchanged, {} fell back then (same routing), {} moved\n",
        preview.total,
        preview.unchanged,
        preview.fallbacks,
        preview.total - preview.unchanged - preview.fallbacks
    );
    let _ = writeln!(out, "\n{:<34} {:>32} {:>32}", "", "today", "with the draft");
    for (label, today, projected) in [
        (
            "approval rate (approved ÷ decided)",
            rate_with_interval(&preview.today),
            rate_with_interval(&preview.projected),
        ),
        (
            "cost per approved",
            cost_with_interval(&preview.today),
            cost_with_interval(&preview.projected),
        ),
    ] {
        let _ = writeln!(out, "{label:<34} {today:>32} {projected:>32}");
    }
    if !preview.moves.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<20} {:<20} {:<8} {:>8}",
            "from", "to", "country", "count"
        );
        for m in &preview.moves {
            let country = if m.country.is_empty() {
                "-"
            } else {
                &m.country
            };
            let _ = writeln!(
                out,
                "{:<20} {:<20} {:<8} {:>8}",
                m.from, m.to, country, m.count
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:>8} {:>9} {:>14} {:>18} {:>18}",
        "destination", "count", "decided", "approval rate", "95 % interval", "cost per approved"
    );
    let percent = |r: f64| format!("{:.1} %", r * 100.0);
    let range = |ci: Option<[f64; 2]>| {
        ci.map_or("-".to_string(), |[low, high]| {
            format!("{} to {}", percent(low), percent(high))
        })
    };
    for d in &preview.destinations {
        let rate = d.approval_rate.map_or("-".to_string(), percent);
        let cost = match (d.cost_per_approved, &d.currency) {
            (Some(c), Some(currency)) => format!("{c:.2} {currency}"),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>9} {rate:>14} {:>18} {cost:>18}",
            d.provider,
            d.count,
            d.observations,
            range(d.approval_ci)
        );
        for c in &d.countries {
            let country = if c.country.is_empty() {
                "-"
            } else {
                &c.country
            };
            let rate = match c.approval_rate {
                Some(r) if !c.too_few_observations => percent(r),
                _ => "too few".to_string(),
            };
            let _ = writeln!(
                out,
                "  {country:<18} {:>8} {:>9} {rate:>14} {:>18}",
                c.count,
                c.observations,
                range(c.approval_ci)
            );
        }
    }
    out
}

/// An outlook's approval rate and interval, for the table.
fn rate_with_interval(outlook: &Outlook) -> String {
    let percent = |r: f64| format!("{:.1} %", r * 100.0);
    match (outlook.approval_rate, outlook.approval_ci) {
        (Some(rate), Some([low, high])) => {
            format!("{} ({} to {})", percent(rate), percent(low), percent(high))
        }
        (Some(rate), None) => percent(rate),
        _ => "-".to_string(),
    }
}

/// An outlook's cost per approved and interval, for the table.
fn cost_with_interval(outlook: &Outlook) -> String {
    let currency = outlook.currency.as_deref().unwrap_or_default();
    match (outlook.cost_per_approved, outlook.cost_per_approved_ci) {
        (Some(cost), Some([low, high])) => format!("{cost:.2} {currency} ({low:.2} to {high:.2})"),
        (Some(cost), None) => format!("{cost:.2} {currency}"),
        _ => "-".to_string(),
    }
}
