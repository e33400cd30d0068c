//! Erasure of a subject on request. What is in flight is cancelled first where the provider
//! allows it (where it does not, the erasure waits: it is refused until that verification has
//! finished). Then, in one transaction, the subject's verifications lose everything that
//! identifies the subject and keep what the figures count (see
//! [`crate::store::RemovalStore::erase_subject`]), each history gets a tombstone, and the tenant
//! gets a `subject.erased` event. The answer names the provider instances that hold data on the
//! subject, with their references, so that the tenant can file its request there: neither
//! BeTrust nor gu1 documents a call to delete it. Erasing again finds nothing and changes
//! nothing.

use super::{ServiceError, first_delay};
use crate::app::{App, Runtime};
use crate::store::{NewEvent, now};
use kyc_core::ProviderError;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The event sent when a subject is erased.
pub const SUBJECT_ERASED: &str = "subject.erased";

/// What a provider instance holds on an erased subject.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderHolding {
    /// The provider instance (its kind and account are in the policy).
    pub provider: String,
    /// The provider's references of the subject's verifications there.
    pub verification_references: Vec<String>,
    /// The provider's own id for the subject (gu1's person entity), where it gave one.
    pub subject_reference: Option<String>,
}

/// What an erasure did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"erasure_id": "ers_01M92WAK5TXR2XB9P1NR502Y28", "verifications": 2,
    "cancelled": 1, "providers": [{"provider": "gu1", "verification_references":
    ["0d7a5c1e-5b8e-4f5e-9c1a-2f0e8f1b6a11"], "subject_reference": "ent_5f2c"},
    {"provider": "betrust-cl", "verification_references": ["42a2aada-6a46-4601-a1cc-36356abac9d2"],
    "subject_reference": null}]}))]
pub struct Erased {
    /// `ers_` + ULID, as the `subject.erased` event names it; none when nothing was held.
    pub erasure_id: Option<String>,
    /// How many of the subject's verifications were erased (they still count in the stats,
    /// anonymous).
    pub verifications: u64,
    /// Of those, how many were in flight and cancelled at their provider first.
    pub cancelled: u64,
    /// The provider instances that hold data on the subject, with their references: file the
    /// erasure request there.
    pub providers: Vec<ProviderHolding>,
}

/// Erases what the gateway holds on the tenant's subject.
pub async fn erase(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    subject_id: &str,
) -> Result<Erased, ServiceError> {
    let (holdings, subject_refs) = app.store.holdings(tenant, subject_id).await?;
    let mut cancelled = 0;
    for held in holdings.iter().filter(|h| !h.status.is_final()) {
        match super::cancel(app, runtime, tenant, &held.verification_id).await {
            Ok(_) => cancelled += 1,
            // It finished meanwhile.
            Err(ServiceError::NotCancellable(_)) => {}
            Err(ServiceError::Provider {
                provider,
                error: ProviderError::Unsupported(_),
            }) => {
                return Err(ServiceError::InFlight {
                    verification: held.verification_id.clone(),
                    provider,
                });
            }
            Err(error) => return Err(error),
        }
    }
    let erasure_id = format!("ers_{}", ulid::Ulid::generate());
    let at = now();
    let wants_events = runtime.policy.tenants[tenant].webhook_url.is_some();
    let event = wants_events.then(|| NewEvent {
        id: format!("evt_{}", ulid::Ulid::generate()),
        tenant: tenant.to_owned(),
        verification_id: format!("erasure:{erasure_id}"),
        event_type: SUBJECT_ERASED,
        payload: serde_json::json!({
            "type": SUBJECT_ERASED,
            "timestamp": at,
            "data": {"erasure_id": erasure_id, "verifications": holdings.len()},
        })
        .to_string(),
        created_at: at,
        due_at: at + first_delay(runtime),
    });
    let erased = app
        .store
        .erase_subject(tenant, subject_id, event.as_ref())
        .await?;
    if erased > 0 {
        tracing::info!(tenant, erasure = %erasure_id, verifications = erased, "subject erased");
        app.outbox_wake.notify_one();
        if let Err(error) = app.store.compact().await {
            tracing::warn!(%error, "erasure: the write-ahead log was not folded in yet");
        }
    }
    Ok(Erased {
        erasure_id: (erased > 0).then_some(erasure_id),
        verifications: erased,
        cancelled,
        providers: holders(&holdings, subject_refs),
    })
}

/// The subject's holdings, per provider instance.
fn holders(
    holdings: &[crate::store::Holding],
    subject_refs: Vec<(String, String)>,
) -> Vec<ProviderHolding> {
    let mut providers: BTreeMap<String, ProviderHolding> = BTreeMap::new();
    fn entry<'a>(
        providers: &'a mut BTreeMap<String, ProviderHolding>,
        provider: &str,
    ) -> &'a mut ProviderHolding {
        providers
            .entry(provider.to_owned())
            .or_insert_with(|| ProviderHolding {
                provider: provider.to_owned(),
                verification_references: Vec::new(),
                subject_reference: None,
            })
    }
    for held in holdings {
        entry(&mut providers, &held.provider)
            .verification_references
            .push(held.provider_reference.clone());
    }
    for (provider, subject_ref) in subject_refs {
        entry(&mut providers, &provider).subject_reference = Some(subject_ref);
    }
    providers.into_values().collect()
}
