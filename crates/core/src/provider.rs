//! The contract between the gateway and a provider adapter.
//!
//! An adapter turns these calls into its provider's HTTP API and the answers back into the normalized
//! model. It keeps no per-subject state: whatever the provider needs remembered between calls (a gu1
//! entity id) travels in [`CreateRequest::subject_ref`] and [`ProviderVerification::subject_ref`], and
//! the gateway stores it.

use crate::model::{Checks, Decision, Identity, Reason, Status, Subject};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// What the gateway asks a provider to start.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// A stable id for this attempt, the same on every retry of the same caller request: adapters use
    /// it as the provider-side idempotency key (BeTrust `transaction_id`).
    pub idempotency_key: String,
    /// The tenant asking. Where tenants share one provider account, adapters use it to keep
    /// tenants' subject ids apart (gu1's `externalId` is `{tenant}:{subject id}`).
    pub tenant: String,
    /// The caller's reference, passed along as metadata where the provider keeps some.
    pub reference: String,
    /// The person to verify.
    pub subject: Subject,
    /// The checks asked for.
    pub checks: Checks,
    /// Where the provider sends the person after the flow.
    pub redirect_url: Option<String>,
    /// Where the provider posts status changes (the gateway's `/hooks/...` URL).
    pub webhook_url: Option<String>,
    /// The provider's id for the subject, remembered from an earlier call or given by the caller.
    pub subject_ref: Option<String>,
    /// The subject holds only its id and country, not the person's data: a lookup made by the
    /// reconciler, which keeps no personal data ([`Provider::find_created`]).
    pub subject_partial: bool,
}

/// What [`Provider::find_created`] found for an attempt's idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The provider holds the verification this key started, checked to be this request's.
    Created(Box<ProviderVerification>),
    /// The provider holds nothing under this key now. A request sent before may still be
    /// processed there and create it later: absence is proof only once that cannot happen.
    Absent,
    /// The lookup cannot tell (the provider offers no way to look, or the lookup lacks what it
    /// needs): neither presence nor absence.
    Unknown,
}

/// A provider's view of one verification, already normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderVerification {
    /// The provider's id for the verification.
    pub provider_reference: String,
    /// The normalized status.
    pub status: Status,
    /// Why, in our code and the provider's.
    pub reason: Option<Reason>,
    /// The link to hand to the person.
    pub verification_url: Option<String>,
    /// When the link expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Per-check outcomes and scores.
    pub decision: Option<Decision>,
    /// The provider's id for the subject (gu1 entity id), for the gateway to remember.
    pub subject_ref: Option<String>,
}

/// A provider's own view of a subject's standing, where it keeps one (gu1 does; BeTrust does not).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderStanding {
    /// The provider considers the subject verified.
    pub verified: bool,
    /// When the last approval was given.
    pub verified_at: Option<DateTime<Utc>>,
    /// When the approval stops counting.
    pub expires_at: Option<DateTime<Utc>>,
    /// The provider asks for a new verification.
    pub needs_reverification: bool,
}

/// Why a provider call failed, in terms the gateway can answer with. Messages never hold personal
/// data or a provider's raw body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The request did not reach the provider, or the provider said it did nothing with it
    /// (connect error, circuit open, rate limit spent, HTTP 429 or 503): try later or elsewhere.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The request was sent and no usable answer came back (a timeout after sending, a
    /// connection cut before the answer, a 5xx other than 503): the provider may have done the
    /// work. A create that ends so is resolved at that provider before any other is tried.
    #[error("provider unavailable: {0}")]
    Ambiguous(String),
    /// The provider holds an object under this request's idempotency key that belongs to
    /// another request (another person, another transaction): it is never adopted.
    #[error("provider holds another request's object under this key: {0}")]
    NotOurs(String),
    /// The provider answered something we cannot read.
    #[error("provider answered an unreadable response: {0}")]
    BadResponse(String),
    /// The provider refused the request (a 4xx with a business code).
    #[error("provider rejected the request ({code}): {message}")]
    Rejected {
        /// The provider's error code, verbatim.
        code: String,
        /// Our explanation.
        message: String,
    },
    /// The provider does not know this verification.
    #[error("provider has no such verification")]
    NotFound,
    /// The subject already exists at the provider and we do not know its id there.
    #[error("subject conflict: {0}")]
    SubjectConflict(String),
    /// The gateway's credentials for this provider are not accepted.
    #[error("provider refused our credentials")]
    Unauthorized,
    /// This provider has no such operation.
    #[error("the provider does not support {0}")]
    Unsupported(&'static str),
    /// The instance's configuration is unusable (a base URL that is not http(s), say); the text
    /// names the setting, never a secret.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// How a failed create leaves the provider, which decides what the gateway may do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateFailure {
    /// Nothing was started: another instance may take the request (fallback).
    NotStarted,
    /// A verification may have been started: resolve it at this instance first.
    Ambiguous,
    /// The provider answered with a refusal: nothing was started, and no other instance is
    /// tried.
    Refused,
}

impl ProviderError {
    /// Whether the provider could not serve the call (not reached, or no usable answer): the
    /// circuit breaker counts it, and the caller is told to retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable(_) | ProviderError::Ambiguous(_)
        )
    }

    /// What a create that failed so may have left at the provider. An unreadable answer may
    /// hide a created verification, so it is ambiguous too.
    pub fn on_create(&self) -> CreateFailure {
        match self {
            ProviderError::Unavailable(_) => CreateFailure::NotStarted,
            ProviderError::Ambiguous(_) | ProviderError::BadResponse(_) => CreateFailure::Ambiguous,
            ProviderError::Rejected { .. }
            | ProviderError::NotFound
            | ProviderError::SubjectConflict(_)
            | ProviderError::Unauthorized
            | ProviderError::Unsupported(_)
            | ProviderError::Config(_)
            | ProviderError::NotOurs(_) => CreateFailure::Refused,
        }
    }

    /// Whether the call failed on the provider's side or on the way to it (unavailable, an
    /// unreadable answer, our credentials refused), rather than being answered: what the
    /// product managers' figures count as a provider error.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable(_)
                | ProviderError::Ambiguous(_)
                | ProviderError::BadResponse(_)
                | ProviderError::Unauthorized
        )
    }
}

/// A manual decision on a verification in review.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ManualOutcome {
    /// Identity confirmed by a person.
    Approve,
    /// Identity not confirmed by a person.
    Reject,
}

/// An incoming provider webhook, as received: header names lower-cased, the body untouched (a
/// signature covers the raw bytes).
#[derive(Debug, Clone, Copy)]
pub struct IncomingWebhook<'a> {
    /// Request headers, names lower-cased.
    pub headers: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
}

impl IncomingWebhook<'_> {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why an incoming webhook was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookError {
    /// The signature is missing or does not match.
    #[error("webhook signature missing or invalid")]
    BadSignature,
    /// The body cannot be read as this provider's webhook.
    #[error("webhook body unreadable: {0}")]
    BadBody(String),
}

/// An adapter's configuration section, as written under `[providers.NAME]` with `kind = KIND`.
/// Each adapter crate implements it once for its config type; the gateway registers the type with
/// one line and builds instances through it.
pub trait AdapterConfig: serde::de::DeserializeOwned {
    /// The `kind` that selects this adapter in the policy (`betrust`, `gu1`, `didit`).
    const KIND: &'static str;

    /// The settings that are secrets: the gateway refuses them written in the policy file (they
    /// must be `"${ENV_VAR}"`), and derives the instance's webhook URL token from them, in this
    /// order (so never reorder a released adapter's list).
    const SECRETS: &'static [&'static str];

    /// Builds the provider instance called `name`. Its targets must pass `outbound`'s check, and
    /// its HTTP client must come from `outbound`'s builder (no redirects, checked addresses).
    /// Every request it sends goes through [`crate::trace::propagate`], so the provider sees the
    /// caller's trace.
    fn build(
        self,
        name: &str,
        outbound: &crate::outbound::Outbound,
    ) -> Result<std::sync::Arc<dyn Provider>, ProviderError>;
}

/// One provider instance, as the gateway uses it. Implemented once per adapter crate.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The adapter kind as written in the policy (`betrust`, `gu1`, `didit`).
    fn kind(&self) -> &'static str;

    /// Starts a verification. Retrying with the same [`CreateRequest::idempotency_key`] must not
    /// start a second one where the provider offers a way to prevent it. A verification the
    /// provider already holds under the key is returned only once checked to be this request's
    /// (else [`ProviderError::NotOurs`]). Failures are classed for [`ProviderError::on_create`]:
    /// [`ProviderError::Unavailable`] only when nothing can have been started.
    async fn create(&self, request: &CreateRequest) -> Result<ProviderVerification, ProviderError>;

    /// Whether sending [`Provider::create`] again with the same key can never start a second
    /// verification, even while the first request is still being processed (the provider
    /// enforces the key, as BeTrust's `transaction_id`). Then an ambiguous create is resumed by
    /// sending it again; otherwise only by [`Provider::find_created`].
    fn create_is_idempotent(&self) -> bool {
        false
    }

    /// Looks up the verification an earlier create with `request`'s idempotency key started,
    /// without starting one. Where [`CreateRequest::subject_partial`] is set, only the subject's
    /// id and country are known. The default can never tell.
    async fn find_created(&self, _request: &CreateRequest) -> Result<Found, ProviderError> {
        Ok(Found::Unknown)
    }

    /// Reads a verification as the provider holds it now.
    async fn get(&self, provider_reference: &str) -> Result<ProviderVerification, ProviderError>;

    /// Asks the provider to bring its view up to date, then reads it (gu1 sync). Defaults to `get`.
    async fn refresh(
        &self,
        provider_reference: &str,
    ) -> Result<ProviderVerification, ProviderError> {
        self.get(provider_reference).await
    }

    /// The document data the provider extracted.
    async fn identity(&self, provider_reference: &str) -> Result<Identity, ProviderError>;

    /// The provider's view of a subject, given the provider's id for it. `Ok(None)` where the
    /// provider keeps no such view.
    async fn subject_standing(
        &self,
        _subject_ref: &str,
    ) -> Result<Option<ProviderStanding>, ProviderError> {
        Ok(None)
    }

    /// Checks an incoming webhook (its signature, where the provider signs) and names the
    /// verification it concerns. Its status is not trusted: the gateway re-reads the provider.
    fn verify_webhook(&self, webhook: IncomingWebhook<'_>) -> Result<String, WebhookError>;

    /// How long a person has, by the provider's docs, to finish a verification it started: past
    /// this (counted from the link's `expires_at` where the provider gives one, else from the
    /// creation) one still `pending` or `in_progress` will never finish, and the gateway ends it
    /// as `expired`. `None`: sessions never lapse.
    fn session_lifetime(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether [`Provider::decide`] is supported.
    fn takes_manual_decisions(&self) -> bool {
        false
    }

    /// Records a person's manual decision on a verification in review, where the provider takes
    /// one; `reason` is the reviewer's words, sent to the provider.
    async fn decide(
        &self,
        _provider_reference: &str,
        _outcome: ManualOutcome,
        _reason: &str,
    ) -> Result<ProviderVerification, ProviderError> {
        Err(ProviderError::Unsupported("manual decisions"))
    }

    /// Cancels a verification where the provider allows it.
    async fn cancel(
        &self,
        _provider_reference: &str,
    ) -> Result<ProviderVerification, ProviderError> {
        Err(ProviderError::Unsupported("cancel"))
    }
}
