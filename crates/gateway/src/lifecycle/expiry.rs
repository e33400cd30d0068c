//! Re-verification notices. An approval lapses `verification_valid_days` after it was given (the
//! store's completion time, as [`super::standing`] counts it). The tenant gets
//! `verification.expiring` its `reverification_notice_days` before, and `verification.expired`
//! when it lapses, once each, through the outbox, in the approved verification's own line.
//! An approval whose subject has a newer one gets neither. A tenant's scan starts where the job
//! first met it, a validity ago: approvals still valid then get both notices, those already
//! lapsed get none.

use super::ServiceError;
use crate::app::{App, Runtime};
use crate::store::{LapseCursor, LapseNotice, NewEvent, now};
use chrono::{DateTime, Duration, Utc};
use kyc_core::Verification;
use serde::Serialize;
use utoipa::ToSchema;

/// The event sent before an approval lapses.
pub const VERIFICATION_EXPIRING: &str = "verification.expiring";
/// The event sent when it has lapsed.
pub const VERIFICATION_EXPIRED: &str = "verification.expired";

/// Approvals read and recorded per transaction.
const BATCH: u32 = 500;

/// What a lapse notice says.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovalLapse {
    /// The subject to verify again.
    pub subject_id: String,
    /// The approved verification.
    pub verification_id: String,
    /// The caller's reference of that verification.
    pub reference: String,
    /// The provider instance that approved it.
    pub provider: String,
    /// When it was approved.
    pub verified_at: DateTime<Utc>,
    /// When the approval stops counting (`verified_at` plus the tenant's
    /// `verification_valid_days`).
    pub expires_at: DateTime<Utc>,
}

/// Sends the tenant's due notices of both kinds; how many were queued. Nothing for a tenant
/// with no `webhook_url`: its scan starts when it has one.
pub async fn notify_lapses(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
) -> Result<u64, ServiceError> {
    let config = &runtime.policy.tenants[tenant];
    if config.webhook_url.is_none() {
        return Ok(0);
    }
    let valid = Duration::days(i64::from(config.verification_valid_days));
    let notice = Duration::days(i64::from(config.notice_days()));
    let mut queued = 0;
    if notice > Duration::zero() {
        queued += notify(
            app,
            runtime,
            tenant,
            LapseNotice::Expiring,
            valid,
            valid - notice,
        )
        .await?;
    }
    queued += notify(app, runtime, tenant, LapseNotice::Expired, valid, valid).await?;
    if queued > 0 {
        app.outbox_wake.notify_one();
    }
    Ok(queued)
}

/// Queues `kind` for each approval completed `lead` ago or earlier since the tenant's cursor.
async fn notify(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    kind: LapseNotice,
    valid: Duration,
    lead: Duration,
) -> Result<u64, ServiceError> {
    let at = now();
    let through = at - lead;
    let mut cursor = app.store.lapse_cursor(tenant, kind).await?;
    let start = LapseCursor {
        completed_at: at - valid,
        verification_id: String::new(),
    };
    let mut queued = 0;
    loop {
        let from = cursor.as_ref().unwrap_or(&start);
        let batch = app
            .store
            .approvals_after(tenant, from, through, BATCH)
            .await?;
        let to = match batch.last() {
            Some(last) => LapseCursor {
                completed_at: last.verification.completed_at.unwrap_or(from.completed_at),
                verification_id: last.verification.id.clone(),
            },
            // Nothing new; a tenant met for the first time keeps its start.
            None if cursor.is_none() => start.clone(),
            None => break,
        };
        let events: Vec<NewEvent> = batch
            .iter()
            .filter(|passed| !passed.superseded)
            .map(|passed| event(runtime, tenant, kind, &passed.verification, valid, at))
            .collect();
        if !app
            .store
            .record_lapses(tenant, kind, cursor.as_ref(), &to, &events)
            .await?
        {
            // Another replica moved the cursor first: its run sends these.
            break;
        }
        queued += events.len() as u64;
        cursor = Some(to);
        if batch.len() < BATCH as usize {
            break;
        }
    }
    Ok(queued)
}

fn event(
    runtime: &Runtime,
    tenant: &str,
    kind: LapseNotice,
    approved: &Verification,
    valid: Duration,
    at: DateTime<Utc>,
) -> NewEvent {
    let event_type = match kind {
        LapseNotice::Expiring => VERIFICATION_EXPIRING,
        LapseNotice::Expired => VERIFICATION_EXPIRED,
    };
    let verified_at = approved.completed_at.unwrap_or(approved.updated_at);
    let data = ApprovalLapse {
        subject_id: approved.subject_id.clone(),
        verification_id: approved.id.clone(),
        reference: approved.reference.clone(),
        provider: approved.provider.clone(),
        verified_at,
        expires_at: verified_at + valid,
    };
    super::tenant_event(runtime, tenant, approved.id.clone(), event_type, &data, at)
}
