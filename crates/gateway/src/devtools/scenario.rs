//! The sandbox's demo history, for `kyc-gateway sandbox --scenario`: a few hundred verifications
//! of one tenant spread over the past two weeks, so that a newcomer's first look at the stats,
//! the dashboard and an experiment shows real figures rather than empty charts.
//!
//! Each verification is routed by the tenant's real routing (its experiment included), then
//! ended by its instance's [`Profile`]: the share approved, how long a decision takes, the share
//! of creates that fail (counted as provider errors, the create going to the fallback). Shares are
//! spread evenly (see [`kyc_sandbox::in_share`]), so every run shows the same figures. The
//! verifications are written to the store only, through the same insert and change as live ones
//! (so the daily rollups hold them); no simulator knows them, and they are all final, so nothing
//! reads them from a provider.

use crate::config::Policy;
use crate::store::{NewChange, Store, StoreError, StoredVerification};
use chrono::{DateTime, Duration, Utc};
use kyc_core::{RoutingReason, RoutingRecord, Source, Status, StatusChange, Verification};
use kyc_sandbox::in_share;
use std::collections::BTreeMap;

/// How a provider instance behaves in the history.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Percent of its verifications approved; most others rejected, a few abandoned or expired.
    pub approve_percent: u8,
    /// Shortest time to a decision, minutes.
    pub decision_minutes: i64,
    /// Spread of the time to a decision above that, minutes.
    pub spread_minutes: i64,
    /// Percent of creates that fail.
    pub error_percent: u8,
}

/// Days of history.
const DAYS: i64 = 14;

/// Countries of the subjects, in turn: six Chileans in ten, two Argentines, two Mexicans.
const COUNTRIES: [&str; 10] = ["CL", "CL", "CL", "CL", "CL", "CL", "AR", "AR", "MX", "MX"];

/// Writes `count` verifications of `tenant` created over the [`DAYS`] before `now`, routed by
/// its routing in `policy` and ended by `profiles` (an instance without one approves half).
pub async fn generate(
    store: &dyn Store,
    policy: &Policy,
    tenant: &str,
    profiles: &BTreeMap<String, Profile>,
    count: u64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(config) = policy.tenants.get(tenant) else {
        return Ok(());
    };
    let average = Profile {
        approve_percent: 50,
        decision_minutes: 10,
        spread_minutes: 10,
        error_percent: 0,
    };
    // Per instance: creates seen, verifications ended.
    let mut turns: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let start = now - Duration::days(DAYS);
    let step = Duration::days(DAYS).num_seconds() / count.max(1) as i64;
    for i in 0..count {
        let created_at = start + Duration::seconds(step * i as i64);
        let country = COUNTRIES[(i % 10) as usize];
        let subject = format!("demo-history-{i}");
        let Ok(route) = crate::providers::routing::candidates(
            &config.routing,
            tenant,
            &subject,
            country,
            None,
            |n| policy.providers.contains_key(n),
            crate::providers::routing::Live::default(),
        ) else {
            continue;
        };
        let chosen = &route.candidates[0];
        let turn = turns.entry(chosen.clone()).or_default();
        let profile = profiles.get(chosen).unwrap_or(&average);
        let fails = in_share(turn.0, profile.error_percent) && route.candidates.len() > 1;
        turn.0 += 1;
        let (provider, routing) = if fails {
            store
                .count_provider_error(tenant, chosen, country, created_at)
                .await?;
            let routing = RoutingRecord {
                reason: RoutingReason::Fallback,
                tried: vec![chosen.clone()],
                experiment: None,
                arm: None,
                shares: None,
            };
            (route.candidates[1].clone(), routing)
        } else {
            let routing = RoutingRecord {
                reason: route.reason,
                tried: Vec::new(),
                experiment: route.experiment.as_ref().map(|(name, _)| name.clone()),
                arm: route.experiment.as_ref().map(|(_, arm)| *arm),
                shares: route.shares.clone(),
            };
            (chosen.clone(), routing)
        };
        let profile = profiles.get(&provider).unwrap_or(&average);
        let turn = turns.entry(provider.clone()).or_default();
        let k = turn.1;
        turn.1 += 1;
        let status = if k % 17 == 16 {
            Status::Abandoned
        } else if k % 23 == 22 {
            Status::Expired
        } else if in_share(k, profile.approve_percent) {
            Status::Approved
        } else {
            Status::Rejected
        };
        // A spread that looks like people: most quick, some slow.
        let extra = (k * 7919 % 101) as i64 * profile.spread_minutes / 100;
        let decided_at =
            (created_at + Duration::minutes(profile.decision_minutes + extra)).min(now);
        write(
            store,
            tenant,
            country,
            Verification {
                id: format!(
                    "ver_{}",
                    ulid::Ulid::from_parts(created_at.timestamp_millis() as u64, u128::from(i))
                ),
                reference: format!("demo-history-{i}"),
                subject_id: subject,
                provider,
                provider_reference: format!("demo-history-{i}"),
                status: Status::Pending,
                reason: None,
                verification_url: None,
                expires_at: None,
                decision: None,
                metadata: None,
                routing: Some(routing),
                created_at,
                updated_at: created_at,
                completed_at: None,
            },
            status,
            decided_at,
        )
        .await?;
    }
    Ok(())
}

/// Writes one verification as created, then as ended with `status` at `decided_at`.
async fn write(
    store: &dyn Store,
    tenant: &str,
    country: &str,
    created: Verification,
    status: Status,
    decided_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let change = |from, to, source, at| NewChange {
        tenant: tenant.to_string(),
        verification_id: created.id.clone(),
        change: StatusChange {
            from,
            to,
            source,
            actor: None,
            note: None,
            at,
        },
    };
    let first = change(None, Status::Pending, Source::Create, created.created_at);
    let ended = change(Some(Status::Pending), status, Source::Webhook, decided_at);
    let mut next = created.clone();
    next.status = status;
    next.updated_at = decided_at;
    next.completed_at = Some(decided_at);
    let row = StoredVerification {
        tenant: tenant.to_string(),
        request_hash: "demo-history".into(),
        country: Some(country.to_string()),
        verification: created,
    };
    // The scenario's subjects are verified once: none is a re-verification.
    store.insert(&row, &first, DateTime::<Utc>::MIN_UTC).await?;
    store
        .save_change(tenant, Status::Pending, &next, Some(&ended), None)
        .await?;
    Ok(())
}
