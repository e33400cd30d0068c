//! The normalized v1 API. Each handler carries its own OpenAPI entry (utoipa-axum `routes!`), so
//! the published spec cannot drift from the code.

use crate::app::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Tenant, ValidJson};
use crate::input::{CreateVerification, ListParams};
use crate::routing;
use crate::store::{Inserted, ListFilter, StoredVerification};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use kyc_core::{CreateRequest, Identity, Provider, ProviderError, SubjectStanding, Verification};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of the public API, with their OpenAPI entries.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_verification, list_verifications))
        .routes(routes!(get_verification))
        .routes(routes!(refresh_verification))
        .routes(routes!(get_identity))
        .routes(routes!(cancel_verification))
        .routes(routes!(subject_kyc))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// A page of verifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationPage {
    /// Newest first.
    pub items: Vec<Verification>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// SHA-256 of the request with object keys sorted, so that key order does not matter.
fn request_hash(raw: &serde_json::Value) -> String {
    fn canonical(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<_> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(raw, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The provider-side idempotency key of (tenant, reference, provider): the same on every retry, so
/// a create retried after a crash finds the first attempt instead of starting a second one.
fn idempotency_key(tenant: &str, reference: &str, provider: &str) -> String {
    let digest = Sha256::digest(format!("{tenant}\n{reference}\n{provider}").as_bytes());
    format!("kyc_{}", &hex::encode(digest)[..40])
}

/// The answer to a create whose reference already exists: the same body gets the first
/// verification back, another body is a conflict.
fn replay(existing: StoredVerification, hash: &str) -> Result<Response, ApiError> {
    if existing.request_hash == hash {
        Ok((StatusCode::OK, Json(existing.verification)).into_response())
    } else {
        Err(ApiError::Conflict {
            code: "conflict",
            detail: "this reference was already used with a different request body".into(),
        })
    }
}

/// Start a verification; the tenant policy picks the provider.
#[utoipa::path(
    post,
    path = "/v1/verifications",
    tag = "verifications",
    request_body = CreateVerification,
    responses(
        (status = 201, description = "Started", body = Verification),
        (status = 200, description = "This reference was already started with the same body", body = Verification),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Reference used with another body, or subject conflict at the provider", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid, or the provider refused", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider answered something unreadable", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No provider available", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn create_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidJson { body, raw }: ValidJson<CreateVerification>,
) -> Result<Response, ApiError> {
    let runtime = &tenant.runtime;
    body.check(|name| runtime.providers.contains_key(name))?;
    let hash = request_hash(&raw);
    if let Some(existing) = state
        .store
        .find_by_reference(&tenant.name, &body.reference)
        .await?
    {
        return replay(existing, &hash);
    }
    let candidates = routing::candidates(
        &tenant.config().routing,
        &tenant.name,
        &body.subject.id,
        &body.subject.country,
        body.provider.as_deref(),
        |n| runtime.providers.contains_key(n),
    )?;
    let mut last_failure = None;
    for name in candidates {
        let Some(provider) = runtime.providers.get(&name) else {
            continue;
        };
        let subject_ref = match body.subject.provider_refs.get(&name) {
            Some(given) => Some(given.clone()),
            None => {
                state
                    .store
                    .subject_ref(&tenant.name, &name, &body.subject.id)
                    .await?
            }
        };
        let request = CreateRequest {
            idempotency_key: idempotency_key(&tenant.name, &body.reference, &name),
            reference: body.reference.clone(),
            subject: body.subject.clone(),
            checks: body.checks.clone().unwrap_or_default(),
            redirect_url: body.redirect_url.clone(),
            webhook_url: state.hook_url(runtime, &name),
            subject_ref,
        };
        let started = match provider.create(&request).await {
            Ok(started) => started,
            Err(error) if error.is_unavailable() => {
                tracing::warn!(provider = %name, %error, "provider unavailable on create; trying the next");
                last_failure = Some(ApiError::provider(&name, error));
                continue;
            }
            Err(error) => return Err(ApiError::provider(&name, error)),
        };
        if let Some(subject_ref) = &started.subject_ref {
            state
                .store
                .remember_subject_ref(&tenant.name, &name, &body.subject.id, subject_ref)
                .await?;
        }
        let now = crate::store::now();
        let verification = Verification {
            id: format!("ver_{}", ulid::Ulid::generate()),
            reference: body.reference.clone(),
            subject_id: body.subject.id.clone(),
            provider: name.clone(),
            provider_reference: started.provider_reference,
            status: started.status,
            reason: started.reason,
            verification_url: started.verification_url,
            expires_at: started.expires_at,
            decision: started.decision,
            metadata: body.metadata.clone(),
            created_at: now,
            updated_at: now,
            completed_at: started.status.is_final().then_some(now),
        };
        let row = StoredVerification {
            tenant: tenant.name.clone(),
            request_hash: hash.clone(),
            verification,
        };
        return match state.store.insert(&row).await? {
            Inserted::Created => {
                tracing::info!(verification = %row.verification.id, provider = %name, "verification started");
                Ok((StatusCode::CREATED, Json(row.verification)).into_response())
            }
            Inserted::Exists(existing) => replay(*existing, &hash),
        };
    }
    Err(last_failure
        .unwrap_or_else(|| ApiError::Unavailable("no provider could take the request".into())))
}

/// List and look up verifications, newest first.
#[utoipa::path(
    get,
    path = "/v1/verifications",
    tag = "verifications",
    params(ListParams),
    responses(
        (status = 200, description = "A page", body = VerificationPage),
        (status = 400, description = "The query string cannot be read (e.g. a repeated parameter)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn list_verifications(
    State(state): State<AppState>,
    tenant: Tenant,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<VerificationPage>, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::BadRequest {
        field: None,
        detail: "the query string could not be read".into(),
    })?;
    let query = params.check()?;
    let limit = query.limit;
    let filter = ListFilter {
        reference: query.reference,
        subject_id: query.subject_id,
        status: query.status,
        before_id: query.cursor,
        limit: limit + 1,
    };
    let mut items: Vec<Verification> = state
        .store
        .list(&tenant.name, &filter)
        .await?
        .into_iter()
        .map(|s| s.verification)
        .collect();
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|v| v.id.clone())
    } else {
        None
    };
    Ok(Json(VerificationPage { items, next_cursor }))
}

async fn load(state: &AppState, tenant: &Tenant, id: &str) -> Result<StoredVerification, ApiError> {
    state
        .store
        .get(&tenant.name, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such verification for this tenant".into()))
}

/// A tenant's verification and the provider instance that runs it.
async fn load_with_provider(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<(StoredVerification, Arc<dyn Provider>), ApiError> {
    let stored = load(state, tenant, id).await?;
    let name = &stored.verification.provider;
    let provider = tenant.runtime.providers.get(name).cloned().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "provider {name} is no longer in the policy; restore it to reach this verification"
        ))
    })?;
    Ok((stored, provider))
}

/// The stored verification; no provider call.
#[utoipa::path(
    get,
    path = "/v1/verifications/{id}",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "The verification", body = Verification),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such verification for this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(load(&state, &tenant, &id).await?.verification))
}

/// Read the provider now, update the store, return the result.
#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/refresh",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "The verification as the provider has it now", body = Verification),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such verification for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The provider refused the request", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider answered something unreadable", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider is unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn refresh_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    let (stored, provider) = load_with_provider(&state, &tenant, &id).await?;
    let name = &stored.verification.provider;
    let now = provider
        .refresh(&stored.verification.provider_reference)
        .await
        .map_err(|e| ApiError::provider(name, e))?;
    Ok(Json(state.store.apply(&stored, &now).await?.verification))
}

/// The document data the provider extracted, read live and not stored.
///
/// Until the person has gone through the document step there is none: that is a 409 with code
/// `not_ready`, whatever the provider.
#[utoipa::path(
    get,
    path = "/v1/verifications/{id}/identity",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "Document data (personal data: handle with care)", body = Identity),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such verification for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No document data yet: the person has not reached that step (code `not_ready`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The provider refused the request", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider answered something unreadable", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider is unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_identity(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (stored, provider) = load_with_provider(&state, &tenant, &id).await?;
    let name = &stored.verification.provider;
    let not_yet = || ApiError::Conflict {
        code: "not_ready",
        detail: format!(
            "provider {name} has no document data for this verification yet (status {})",
            stored.verification.status
        ),
    };
    let identity = provider
        .identity(&stored.verification.provider_reference)
        .await
        .map_err(|e| match e {
            ProviderError::NotFound => not_yet(),
            e => ApiError::provider(name, e),
        })?;
    // Providers differ in how they say "nothing extracted yet"; callers get one answer.
    if identity == Identity::default() {
        return Err(not_yet());
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(identity)).into_response())
}

/// Cancel a verification, where the provider allows it.
#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/cancel",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "Cancelled", body = Verification),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such verification for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already final, or the provider cannot cancel", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The provider refused the request", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider answered something unreadable", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider is unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn cancel_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    let (stored, provider) = load_with_provider(&state, &tenant, &id).await?;
    let v = &stored.verification;
    if v.status.is_final() {
        return Err(ApiError::Conflict {
            code: "not_cancellable",
            detail: format!("the verification is already {}", v.status),
        });
    }
    let now = provider
        .cancel(&v.provider_reference)
        .await
        .map_err(|e| ApiError::provider(&v.provider, e))?;
    Ok(Json(state.store.apply(&stored, &now).await?.verification))
}

/// The subject's standing: verified or not, and its latest verification.
///
/// Computed from the store: `verified` when the subject's newest approval is younger than the
/// tenant's `verification_valid_days`. Where that approval's provider keeps its own view of the
/// subject (gu1), its `isVerified`, `expiresAt` and `needsReverification` are used instead.
#[utoipa::path(
    get,
    path = "/v1/subjects/{subject_id}/kyc",
    tag = "subjects",
    params(("subject_id" = String, Path, description = "Your subject id")),
    responses(
        (status = 200, description = "The subject's standing", body = SubjectStanding),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn subject_kyc(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(subject_id): Path<String>,
) -> Result<Json<SubjectStanding>, ApiError> {
    let (current, approved) = state
        .store
        .subject_history(&tenant.name, &subject_id)
        .await?;
    let valid_for = Duration::days(i64::from(tenant.config().verification_valid_days));
    let verified_at = approved.as_ref().and_then(|a| a.completed_at);
    let expires_at = verified_at.map(|t| t + valid_for);
    let fresh = expires_at.is_some_and(|e| Utc::now() < e);
    let mut standing = SubjectStanding {
        subject_id: subject_id.clone(),
        verified: fresh,
        current,
        verified_at,
        expires_at,
        needs_reverification: approved.is_some() && !fresh,
    };
    if let Some(approved) = approved
        && let Some(provider) = tenant.runtime.providers.get(&approved.provider)
        && let Some(subject_ref) = state
            .store
            .subject_ref(&tenant.name, &approved.provider, &subject_id)
            .await?
    {
        match provider.subject_standing(&subject_ref).await {
            Ok(Some(view)) => {
                standing.verified = view.verified && !view.needs_reverification;
                standing.verified_at = view.verified_at.or(standing.verified_at);
                standing.expires_at = view.expires_at.or(standing.expires_at);
                standing.needs_reverification = view.needs_reverification;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(
                provider = %approved.provider, %error,
                "provider standing unavailable; answering from the store"
            ),
        }
    }
    Ok(Json(standing))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers and a policy is loaded.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: store unavailable");
        ApiError::Unavailable("the store is not reachable".into())
    })?;
    Ok(Json(Health { status: "ready" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_ignores_key_order_but_not_values() {
        let a = serde_json::json!({"reference": "r", "subject": {"id": "s", "country": "CL"}});
        let b = serde_json::json!({"subject": {"country": "CL", "id": "s"}, "reference": "r"});
        let c = serde_json::json!({"subject": {"country": "AR", "id": "s"}, "reference": "r"});
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
    }

    #[test]
    fn idempotency_key_is_stable_and_scoped() {
        assert_eq!(
            idempotency_key("t", "r", "p"),
            idempotency_key("t", "r", "p")
        );
        assert_ne!(
            idempotency_key("t", "r", "p"),
            idempotency_key("u", "r", "p")
        );
        assert_ne!(
            idempotency_key("t", "r", "p"),
            idempotency_key("t", "r", "q")
        );
    }
}
