//! Erasure of a subject on request. What is in flight is cancelled first where the provider
//! allows it (where it does not, the erasure waits: it is refused until that verification has
//! finished). Then, in one transaction, the subject's verifications lose everything that
//! identifies the subject and keep what the figures count (see
//! [`crate::store::RemovalStore::erase_subject`]), each history gets a tombstone, and the tenant
//! gets a `subject.erased` event. The answer names the provider instances that hold data on the
//! subject, with their references, so that the tenant can file its request there: neither
//! BeTrust nor gu1 documents a call to delete it. Erasing again finds nothing and changes
//! nothing.

use super::ServiceError;
use crate::app::{App, Runtime};
use crate::store::now;
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
    let mut cancelled = 0;
    // A create for the subject may land between the read and the erasure: the erasure then
    // writes nothing, and is made again over what the subject holds now.
    for _ in 0..ATTEMPTS {
        let (holdings, subject_refs) = app.store.holdings(tenant, subject_id).await?;
        cancelled += cancel_in_flight(app, runtime, tenant, &holdings).await?;
        let expected: Vec<String> = holdings.iter().map(|h| h.verification_id.clone()).collect();
        let erasure_id = format!("ers_{}", ulid::Ulid::generate());
        let data = serde_json::json!({"erasure_id": erasure_id, "verifications": holdings.len()});
        let wants_events = runtime.policy.tenants[tenant].webhook_url.is_some();
        let event = (wants_events && !holdings.is_empty()).then(|| {
            let line = format!("erasure:{erasure_id}");
            super::tenant_event(runtime, tenant, line, SUBJECT_ERASED, &data, now())
        });
        if !app
            .store
            .erase_subject(tenant, subject_id, &expected, event.as_ref())
            .await?
        {
            continue;
        }
        let erased = holdings.len() as u64;
        if erased > 0 {
            tracing::info!(tenant, erasure = %erasure_id, verifications = erased, "subject erased");
            app.outbox_wake.notify_one();
            if let Err(error) = app.store.compact().await {
                tracing::warn!(%error, "erasure: the write-ahead log was not folded in yet");
            }
        }
        return Ok(Erased {
            erasure_id: (erased > 0).then_some(erasure_id),
            verifications: erased,
            cancelled,
            providers: holders(&holdings, subject_refs),
        });
    }
    Err(ServiceError::SubjectBusy)
}

/// How many times an erasure is tried while the subject's verifications change under it.
const ATTEMPTS: usize = 3;

/// Cancels each of `holdings` in flight at its provider; how many. One at a provider that
/// cannot cancel makes the erasure wait ([`ServiceError::InFlight`]).
async fn cancel_in_flight(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    holdings: &[crate::store::Holding],
) -> Result<u64, ServiceError> {
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
    Ok(cancelled)
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
