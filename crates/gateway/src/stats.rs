//! The product managers' figures: how each provider (or country) did with the verifications a
//! tenant started in a period.
//!
//! Counted from the store's daily rollup (`stats_daily`, kept in the transaction of each change),
//! not from process memory, so every replica answers the same, and in time that grows with the
//! days asked for, not with the verifications stored. A verification counts on the UTC day it was
//! created, by where it has got to since: the figures of a period say what became of the
//! verifications started in it.
use crate::app::App;
use crate::input::StatsPeriod;
use crate::service::ServiceError;
use crate::store::StatsRow;
use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;

/// Figures per group for a period.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// The period's first UTC day.
    pub from: NaiveDate,
    /// Its last UTC day (included).
    pub to: NaiveDate,
    /// One per provider instance, country, or both, as grouped; ordered by them.
    pub groups: Vec<StatsGroupFigures>,
}

/// The figures of one provider instance, country, or both.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsGroupFigures {
    /// The provider instance (when grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The subject country (when grouped by it); `""` for verifications stored before the
    /// gateway kept countries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Verifications started.
    pub started: u64,
    /// Of those, how many reached each final status.
    pub finished: Finished,
    /// approved / finished; absent while none has finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_rate: Option<f64>,
    /// approved / started; absent when none started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion: Option<f64>,
    /// Of those started, how many went to this instance as a fallback (the one chosen first was
    /// unavailable).
    pub fallbacks: u64,
}

/// Counts per final status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Finished {
    /// Approved.
    pub approved: u64,
    /// Rejected.
    pub rejected: u64,
    /// Expired.
    pub expired: u64,
    /// Abandoned.
    pub abandoned: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// The tenant's figures for `period`.
pub async fn for_period(
    app: &App,
    tenant: &str,
    period: &StatsPeriod,
) -> Result<Stats, ServiceError> {
    let day = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    let rows = app
        .store
        .stats(tenant, &day(period.from), &day(period.to), period.by)
        .await?;
    Ok(Stats {
        from: period.from,
        to: period.to,
        groups: rows.into_iter().map(figures).collect(),
    })
}

fn figures(row: StatsRow) -> StatsGroupFigures {
    let finished = row.approved + row.rejected + row.expired + row.abandoned + row.cancelled;
    let rate = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    StatsGroupFigures {
        approval_rate: rate(row.approved, finished),
        conversion: rate(row.approved, row.started),
        provider: row.provider,
        country: row.country,
        started: row.started,
        fallbacks: row.fallbacks,
        finished: Finished {
            approved: row.approved,
            rejected: row.rejected,
            expired: row.expired,
            abandoned: row.abandoned,
            cancelled: row.cancelled,
        },
    }
}
