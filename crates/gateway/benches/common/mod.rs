//! What the benches share: a pending verification to store.

use chrono::Utc;
use kyc_core::{Source, Status, StatusChange, Verification};
use kyc_gateway::store::{NewChange, StoredVerification};

/// A new pending verification `id` of `tenant`, with `key` in its reference, subject and
/// provider reference, and its first history row.
pub fn pending(
    tenant: &str,
    id: &str,
    key: &str,
    provider: &str,
) -> (StoredVerification, NewChange) {
    let at = Utc::now();
    let row = StoredVerification {
        tenant: tenant.into(),
        request_hash: "h".into(),
        country: None,
        verification: Verification {
            id: id.into(),
            reference: format!("ref-{key}"),
            subject_id: format!("s-{key}"),
            provider: provider.into(),
            provider_reference: format!("pr-{key}"),
            status: Status::Pending,
            reason: None,
            verification_url: None,
            expires_at: None,
            decision: None,
            metadata: None,
            routing: None,
            created_at: at,
            updated_at: at,
            completed_at: None,
        },
    };
    let change = NewChange {
        tenant: tenant.into(),
        verification_id: id.into(),
        change: StatusChange {
            from: None,
            to: Status::Pending,
            source: Source::Create,
            actor: None,
            note: None,
            at,
        },
    };
    (row, change)
}
