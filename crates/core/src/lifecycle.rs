//! The one rule for how a provider's answer changes a stored verification.
//!
//! Every path that learns something from a provider (a refresh, a cancel, a provider webhook, the
//! reconciler) goes through [`merge`], so they cannot disagree about what counts as a change.

use crate::model::{Status, Verification};
use crate::provider::ProviderVerification;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Merges what a provider says now into `current`, at time `now`.
///
/// Returns `None` when nothing changes: `current` is final (a final status never changes again),
/// the answer would move the status back to an earlier stage (a late or out-of-order event), or it
/// says nothing new. Otherwise returns the verification as it should be stored:
/// - the provider's status;
/// - its reason, link, expiry and decision where it gives them, and the stored ones where it
///   does not (a provider that stops repeating a field has not cleared it);
/// - `updated_at` set to `now`, and `completed_at` too when the new status is final.
pub fn merge(
    current: &Verification,
    update: &ProviderVerification,
    now: DateTime<Utc>,
) -> Option<Verification> {
    if current.status.is_final()
        || (update.status != current.status && !current.status.may_become(update.status))
    {
        return None;
    }
    let mut next = current.clone();
    next.status = update.status;
    next.reason = update.reason.clone().or(next.reason);
    next.verification_url = update.verification_url.clone().or(next.verification_url);
    next.expires_at = update.expires_at.or(next.expires_at);
    next.decision = update.decision.clone().or(next.decision);
    if next == *current {
        return None;
    }
    next.updated_at = now;
    if next.status.is_final() {
        next.completed_at = Some(now);
    }
    Some(next)
}

/// Where a status change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The verification was started.
    Create,
    /// A provider webhook, re-read from the provider.
    Webhook,
    /// The caller asked for a refresh.
    Refresh,
    /// The gateway's periodic re-read of unfinished verifications.
    Reconciler,
    /// The caller cancelled it.
    Cancel,
    /// A manual approve or reject through the gateway.
    Decision,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 6] = [
        Source::Create,
        Source::Webhook,
        Source::Refresh,
        Source::Reconciler,
        Source::Cancel,
        Source::Decision,
    ];

    /// The wire name, also the stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Create => "create",
            Source::Webhook => "webhook",
            Source::Refresh => "refresh",
            Source::Reconciler => "reconciler",
            Source::Cancel => "cancel",
            Source::Decision => "decision",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One status change of a verification, as its history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    /// The status before; absent for the change that created the verification.
    pub from: Option<Status>,
    /// The status after.
    pub to: Status,
    /// What caused it.
    pub source: Source,
    /// For a manual decision, the name of the API key that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// For a manual decision, the reviewer's reason as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When the gateway recorded it.
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CheckOutcome, Decision, Reason};
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap()
    }

    fn stored(status: Status) -> Verification {
        Verification {
            id: "ver_01JD5Z8K3W6Q2B7N4R9T0V1X2Y".into(),
            reference: "order-1".into(),
            subject_id: "s-1".into(),
            provider: "p".into(),
            provider_reference: "pref".into(),
            status,
            reason: Some(Reason {
                code: "not_started".into(),
                provider_code: None,
                message: None,
            }),
            verification_url: Some("https://p.example/v".into()),
            expires_at: Some(at(30)),
            decision: None,
            metadata: None,
            routing: None,
            created_at: at(0),
            updated_at: at(0),
            completed_at: status.is_final().then(|| at(0)),
        }
    }

    fn says(status: Status) -> ProviderVerification {
        ProviderVerification {
            provider_reference: "pref".into(),
            status,
            reason: None,
            verification_url: None,
            expires_at: None,
            decision: None,
            subject_ref: None,
        }
    }

    #[test]
    fn source_names_round_trip() {
        for source in Source::ALL {
            assert_eq!(Source::parse(source.as_str()), Some(source));
            assert_eq!(serde_json::to_value(source).unwrap(), source.as_str());
        }
    }

    #[test]
    fn a_forward_move_is_stored_with_the_time() {
        let next = merge(&stored(Status::Pending), &says(Status::InProgress), at(5)).unwrap();
        assert_eq!(next.status, Status::InProgress);
        assert_eq!(next.updated_at, at(5));
        assert_eq!(next.completed_at, None);
        assert_eq!(next.created_at, at(0));
    }

    #[test]
    fn reaching_a_final_status_sets_completed_at() {
        for end in Status::ALL.into_iter().filter(|s| s.is_final()) {
            let next = merge(&stored(Status::InReview), &says(end), at(7)).unwrap();
            assert_eq!(
                (next.status, next.completed_at),
                (end, Some(at(7))),
                "{end}"
            );
        }
    }

    #[test]
    fn a_final_status_never_changes() {
        for end in Status::ALL.into_iter().filter(|s| s.is_final()) {
            for late in Status::ALL {
                let mut update = says(late);
                update.decision = Some(Decision::default());
                assert_eq!(merge(&stored(end), &update, at(9)), None, "{end} -> {late}");
            }
        }
    }

    #[test]
    fn a_late_earlier_stage_changes_nothing() {
        assert_eq!(
            merge(&stored(Status::InReview), &says(Status::InProgress), at(3)),
            None
        );
        assert_eq!(
            merge(&stored(Status::InProgress), &says(Status::Pending), at(3)),
            None
        );
    }

    #[test]
    fn the_same_answer_again_changes_nothing() {
        assert_eq!(
            merge(&stored(Status::Pending), &says(Status::Pending), at(3)),
            None
        );
    }

    #[test]
    fn new_detail_at_the_same_status_is_a_change() {
        let mut update = says(Status::InReview);
        update.decision = Some(Decision {
            document: CheckOutcome::Pass,
            ..Decision::default()
        });
        let next = merge(&stored(Status::InReview), &update, at(4)).unwrap();
        assert_eq!(next.decision, update.decision);
        assert_eq!((next.status, next.updated_at), (Status::InReview, at(4)));
    }

    #[test]
    fn fields_the_provider_leaves_out_are_kept() {
        let current = stored(Status::Pending);
        let next = merge(&current, &says(Status::Approved), at(6)).unwrap();
        assert_eq!(next.reason, current.reason);
        assert_eq!(next.verification_url, current.verification_url);
        assert_eq!(next.expires_at, current.expires_at);
        let mut update = says(Status::Rejected);
        update.reason = Some(Reason {
            code: "document_rejected".into(),
            provider_code: Some("Declined".into()),
            message: None,
        });
        let next = merge(&current, &update, at(6)).unwrap();
        assert_eq!(next.reason, update.reason);
    }
}
