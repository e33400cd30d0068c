//! The gu1 (gu1.ai) adapter: turns the normalized [`kyc_core::Provider`] calls into gu1's KYC HTTP API.
//!
//! Build one [`Gu1Provider`] per configured gu1 instance with [`Gu1Provider::new`] and a
//! [`Gu1Config`]. The wire format and the mapping tables (status, decision, identity, standing) live
//! in [`transformers`]; this file is the client: URLs, headers, error mapping and the calls.
//!
//! # Calls
//!
//! | `Provider` call       | gu1 request (paths are config values, defaults shown)                     |
//! |-----------------------|----------------------------------------------------------------------------|
//! | `create`              | without a known entity: `GET /api/entities?type=person&taxId=...` (or `&externalId=...`), then `POST /api/entities` if none; then `POST /api/kyc/validations` |
//! | `get`                 | `GET /api/kyc/validations/{id}`                                            |
//! | `refresh`             | `POST /api/kyc/validations/{id}/sync` with `{"force": true}`               |
//! | `identity`            | `GET /api/kyc/validations/{id}`, read `extractedData` (then the decision)  |
//! | `subject_standing`    | `GET /api/kyc/entities/{entityId}/status`                                  |
//! | `cancel`              | `POST /api/kyc/validations/{id}/cancel` (see below)                        |
//! | `verify_webhook`      | no request: checks `X-Webhook-Signature`, returns `payload.id`             |
//!
//! Every request carries `Authorization: Bearer <api_key>` and, when configured,
//! `X-Organization-ID` (gu1 picks sandbox or production by organisation). Every request has the
//! configured connect timeout and whole-request timeout.
//!
//! # Entities
//!
//! gu1 verifies *entities*: a person entity must exist before a validation. `create` uses, in
//! order: the request's `subject_ref` (the entity id the gateway remembered), the subject's
//! `provider_refs[<instance name>]` (an id the caller gave), and otherwise the subject's entity as
//! gu1 holds it: looked up by `taxId` when a national id is given, else by `externalId`, and
//! created only when the lookup finds none. A 409 on creation (another process won the race, or an
//! earlier attempt's answer was lost to a timeout or a crash) is resolved by the same lookup.
//!
//! The created person entity has `name` = "first last" when given, else the subject id;
//! `countryCode` = subject country; `externalId` = `{tenant}:{subject id}` (tenants sharing one
//! gu1 organisation may use the same subject ids for different people); `taxId` = national id;
//! `entityData.person` = first/last name, birth date, `nationality` = subject country. The entity
//! id comes back as [`ProviderVerification::subject_ref`] for the gateway to remember.
//!
//! One national id is one person: tenants sharing a gu1 instance share its entity, as gu1 scopes
//! entities per organisation. Inside one process, creates for one subject run the lookup-or-create
//! once (a single flight keyed by an HMAC of the national id, or of the external id, under the API
//! key) and remember the result for an hour; across processes the lookup and the 409 keep it to
//! one entity where gu1 enforces `taxId` uniqueness. Without a national id gu1 enforces nothing, so
//! two processes racing on a new subject can still make two entities. Only when gu1 answers 409 and
//! its lookup finds nothing is it a [`ProviderError::SubjectConflict`] naming the fix: pass the
//! entity id in `subject.provider_refs.<instance name>`.
//!
//! # Errors
//!
//! | gu1 answer                                              | [`ProviderError`]                 |
//! |---------------------------------------------------------|-----------------------------------|
//! | connect error, 429, 503; any failure of a create's entity steps | `Unavailable` (short text, no body): nothing started |
//! | timeout or connection cut after connecting, another 5xx | `Ambiguous`: on a validation create, gu1 may have made it |
//! | 401, 403                                                | `Unauthorized`                    |
//! | 404 `NOT_FOUND` (or any 404 without `ENTITY_NOT_FOUND`) | `NotFound`                        |
//! | 409 on entity creation, and the lookup finds nothing   | `SubjectConflict`                 |
//! | `ENTITY_NOT_FOUND`, `INVALID_ENTITY_TYPE`, `KYC_NOT_CONFIGURED`, `NO_SESSION_ID`, `INTEGRATION_NOT_CONFIGURED`, `INVALID_STATUS`, `INVALID_METADATA` | `Rejected { code, message: our text }` |
//! | another 4xx                                             | `Rejected { code: gu1's code or HTTP_<status>, message: our text }` |
//! | a 2xx body we cannot read, an unknown status word       | `BadResponse`                     |
//!
//! gu1's own `message` is never passed on, nor is any body. Log lines and spans carry the instance
//! name, the operation, the validation id and the HTTP status: never personal data or the API key.
//!
//! # Choices where gu1's documentation is silent
//!
//! - **Retries.** gu1 has no idempotency key. The idempotency key is sent as
//!   `metadata.gatewayKey` (with `metadata.reference`). Unless this call just created the entity,
//!   `create` first reads the entity's current validation (`GET {entity_kyc_path}/{id}/current`):
//!   if this key started it, it is returned instead of starting a second one, so a create retried
//!   after a lost answer or a gateway crash finds the first validation. An entity whose answer was
//!   lost is found by the lookup (above). A validation under this key that verifies another
//!   entity is [`ProviderError::NotOurs`], never adopted.
//! - **Looking up an ambiguous create** (`find_created`): the entity as `create` finds it (without
//!   a national id, by `externalId` only), then its current validation and `metadata.gatewayKey`.
//!   No entity is [`Found::Absent`], except for a lookup that holds no national id, which cannot
//!   see an entity another tenant made for the same person ([`Found::Unknown`]). gu1 offers no
//!   list of an entity's validations: a validation of ours that another has since replaced as
//!   current is not found. gu1 enforces no key, so `create` is not idempotent
//!   ([`Provider::create_is_idempotent`] is false): the gateway sends a create again only once a
//!   lookup has proved absence.
//! - **Cancel.** gu1's pages do not document cancelling. `POST {validations_path}/{id}/cancel` is our
//!   pinned assumption, configurable as [`Gu1Config::cancel_path`] (a template with `{id}`). When
//!   the cancel answer is not a validation, the validation is read back with a GET.
//! - **Manual decisions.** `POST {validations_path}/{id}/approve` or `/reject` with `{reason}`
//!   (gu1 wants 5 characters or more, and the validation `in_review`); the answer is read like a
//!   cancel's. gu1 keeps a manual decision through later syncs.
//! - **Webhook signatures.** The encoding is not documented: lowercase hex and base64 (standard or
//!   URL-safe, padded or not) are accepted, with an optional `sha256=` prefix; the comparison is
//!   constant-time. With no `webhook_secret` configured every webhook is refused. gu1 sends no
//!   timestamp, so there is no replay protection here: the gateway re-reads the validation.
//! - **Identity before a result.** `identity` on a validation without extracted data answers an
//!   [`Identity`] with every field empty, not an error.
//! - **Standing of an unknown entity** is `Rejected { code: "ENTITY_NOT_FOUND" }` when gu1 says so.

pub mod transformers;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use kyc_core::outbound::Outbound;
use kyc_core::{
    AdapterConfig, CreateRequest, Found, Identity, IncomingWebhook, ManualOutcome, Personal,
    Provider, ProviderError, ProviderStanding, ProviderVerification, WebhookError,
};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;
use std::time::Duration;
use transformers::{
    Gu1CreateEntityAnswer, Gu1CreatePersonEntity, Gu1CreateValidation, Gu1EntityData,
    Gu1EntityKycStatus, Gu1EntityList, Gu1ErrorBody, Gu1PersonData, Gu1SyncRequest, Gu1Validation,
    Gu1ValidationMetadata, Gu1WebhookEnvelope,
};

/// The adapter kind as written in the policy (`kind = "gu1"`).
pub const KIND: &str = "gu1";

/// How long this process remembers which entity a subject has, so concurrent and repeated
/// creates for one subject make one entity and skip the lookup.
const ENTITY_MEMORY: Duration = Duration::from_secs(3600);

/// One gu1 instance's settings, as read from the policy file. Every host and path is a value here
/// so an operator can correct it at onboarding without a code change.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gu1Config {
    /// gu1's API host. Default `https://api.gu1.ai`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The API key (`gk_<env>_...`), sent as a bearer token.
    pub api_key: SecretString,
    /// The secret gu1 signs webhooks with; without it every webhook is refused.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// Sent as `X-Organization-ID` when set (gu1 selects sandbox or production with it).
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Sent as `integrationCode` on create when set (e.g. `global_gueno_validation_kyc`).
    #[serde(default)]
    pub integration_code: Option<String>,
    /// Sent as `workflowId` on create when set; gu1 uses its default workflow otherwise.
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// Whole-request timeout for every call, in milliseconds. Default 10 000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect timeout for every call, in milliseconds. Default 3 000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Where person entities are created. Default `/api/entities`.
    #[serde(default = "default_entities_path")]
    pub entities_path: String,
    /// The validations collection: create, get `/{id}`, sync `/{id}/sync`. Default
    /// `/api/kyc/validations`.
    #[serde(default = "default_validations_path")]
    pub validations_path: String,
    /// The per-entity KYC routes: standing at `/{entityId}/status`. Default `/api/kyc/entities`.
    #[serde(default = "default_entity_kyc_path")]
    pub entity_kyc_path: String,
    /// Cancel route template, `{id}` standing for the validation id. Not documented by gu1: our
    /// pinned assumption. Default `/api/kyc/validations/{id}/cancel`.
    #[serde(default = "default_cancel_path")]
    pub cancel_path: String,
}

fn default_base_url() -> String {
    "https://api.gu1.ai".to_string()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_entities_path() -> String {
    "/api/entities".to_string()
}
fn default_validations_path() -> String {
    "/api/kyc/validations".to_string()
}
fn default_entity_kyc_path() -> String {
    "/api/kyc/entities".to_string()
}
fn default_cancel_path() -> String {
    "/api/kyc/validations/{id}/cancel".to_string()
}

impl Gu1Config {
    /// A config with every default, for code (tests, the sandbox first run) that has no policy file.
    pub fn new(base_url: impl Into<String>, api_key: SecretString) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            webhook_secret: None,
            organization_id: None,
            integration_code: None,
            workflow_id: None,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            entities_path: default_entities_path(),
            validations_path: default_validations_path(),
            entity_kyc_path: default_entity_kyc_path(),
            cancel_path: default_cancel_path(),
        }
    }
}

/// One configured gu1 instance, ready to serve the gateway's [`Provider`] calls.
pub struct Gu1Provider {
    name: String,
    config: Gu1Config,
    base_url: String,
    http: reqwest::Client,
    /// Entity ids per subject key (see [`Gu1Provider::subject_key`]). Its `try_get_with` is the
    /// single flight: concurrent creates for one subject wait for one lookup-or-create.
    entities: moka::future::Cache<String, String>,
}

impl std::fmt::Debug for Gu1Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gu1Provider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// What a call is, for log lines and error texts.
#[derive(Debug, Clone, Copy)]
enum Op {
    CreateEntity,
    CreateValidation,
    GetValidation,
    SyncValidation,
    CancelValidation,
    DecideValidation,
    EntityStatus,
    CurrentValidation,
    FindEntity,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::CreateEntity => "create entity",
            Op::CreateValidation => "create validation",
            Op::GetValidation => "get validation",
            Op::SyncValidation => "sync validation",
            Op::CancelValidation => "cancel validation",
            Op::DecideValidation => "decide validation",
            Op::EntityStatus => "entity status",
            Op::CurrentValidation => "entity current validation",
            Op::FindEntity => "find entity",
        }
    }
}

fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config(message.into())
}

impl AdapterConfig for Gu1Config {
    const KIND: &'static str = "gu1";
    const SECRETS: &'static [&'static str] = &["api_key", "webhook_secret"];

    fn build(
        self,
        name: &str,
        outbound: &Outbound,
    ) -> Result<std::sync::Arc<dyn Provider>, ProviderError> {
        Ok(std::sync::Arc::new(Gu1Provider::new(name, self, outbound)?))
    }
}

fn normalized_path(field: &str, path: &str) -> Result<String, ProviderError> {
    if !path.starts_with('/') {
        return Err(config_error(format!("gu1 {field} must start with '/'")));
    }
    Ok(path.trim_end_matches('/').to_string())
}

/// Whether a string can be an id gu1 issued: short, URL-safe, not a dot segment. Anything else is
/// refused before it reaches a URL.
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// gu1's error code, if it looks like a code (so nothing else can ride along in it).
fn error_code(body: &[u8]) -> Option<String> {
    let code = serde_json::from_slice::<Gu1ErrorBody>(body).ok()?.error?;
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    ok.then_some(code)
}

fn unreadable(op: Op, err: &serde_json::Error) -> ProviderError {
    // The serde message could quote a value from the body: only its category and position go out.
    ProviderError::BadResponse(format!(
        "gu1 answered {} with a body we cannot read ({:?} error at line {}, column {})",
        op.as_str(),
        err.classify(),
        err.line(),
        err.column()
    ))
}

/// The entity steps of a create start no validation: whatever became of them, none was made.
fn no_validation_started(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::Ambiguous(why) => ProviderError::Unavailable(why),
        other => other,
    }
}

impl Gu1Provider {
    /// Builds the adapter for the instance called `name` in the policy. Fails on a config that
    /// cannot work (bad URL, path without a leading `/`, cancel path without `{id}`).
    pub fn new(name: &str, config: Gu1Config, outbound: &Outbound) -> Result<Self, ProviderError> {
        kyc_core::provider_http::base_url(&config.base_url, "gu1 base_url", outbound)?;
        if !(1..=600_000).contains(&config.timeout_ms)
            || !(1..=600_000).contains(&config.connect_timeout_ms)
        {
            return Err(config_error(
                "gu1 timeout_ms and connect_timeout_ms must be from 1 to 600000 (milliseconds)",
            ));
        }
        if !config.cancel_path.contains("{id}") {
            return Err(config_error("gu1 cancel_path must contain {id}"));
        }
        let mut config = config;
        config.entities_path = normalized_path("entities_path", &config.entities_path)?;
        config.validations_path = normalized_path("validations_path", &config.validations_path)?;
        config.entity_kyc_path = normalized_path("entity_kyc_path", &config.entity_kyc_path)?;
        normalized_path("cancel_path", &config.cancel_path)?;

        // Never follow a redirect (it would re-send the person's data to wherever it points), and
        // connect only to addresses the outbound rule permits.
        let http = outbound
            .client_builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("kyc-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| config_error("could not build the HTTP client for gu1"))?;
        Ok(Self {
            name: name.to_string(),
            base_url: config.base_url.trim_end_matches('/').to_string(),
            config,
            http,
            entities: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ENTITY_MEMORY)
                .build(),
        })
    }

    /// The instance name given to [`Gu1Provider::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn validation_url(&self, id: &str, suffix: &str) -> String {
        self.url(&format!("{}/{id}{suffix}", self.config.validations_path))
    }

    /// Sends one request with auth headers; answers the HTTP status and the raw body (bounded),
    /// or the transport failure classed (see [`kyc_core::provider_http::send`]).
    async fn send(
        &self,
        op: Op,
        method: Method,
        url: String,
        json: Option<Vec<u8>>,
        validation_id: Option<&str>,
    ) -> Result<(StatusCode, Vec<u8>), ProviderError> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.config.api_key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(org) = &self.config.organization_id {
            request = request.header("X-Organization-ID", org);
        }
        if let Some(body) = json {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let validation_id = validation_id.unwrap_or("");
        let what = format!("gu1 {} call", op.as_str());
        match kyc_core::provider_http::send(request, &what).await {
            Ok(answer) => {
                tracing::debug!(
                    provider = %self.name,
                    op = op.as_str(),
                    validation_id,
                    http_status = answer.status.as_u16(),
                    "gu1 answered"
                );
                Ok((answer.status, answer.body))
            }
            Err(error) => {
                tracing::warn!(
                    provider = %self.name,
                    op = op.as_str(),
                    validation_id,
                    %error,
                    "gu1 call failed"
                );
                Err(error)
            }
        }
    }

    /// A 2xx body as `T`, or the error the status and gu1's error code stand for.
    fn read<T: DeserializeOwned>(
        &self,
        op: Op,
        status: StatusCode,
        body: &[u8],
    ) -> Result<T, ProviderError> {
        if status.is_success() {
            serde_json::from_slice(body).map_err(|e| unreadable(op, &e))
        } else {
            Err(self.error_for(op, status, body))
        }
    }

    fn error_for(&self, op: Op, status: StatusCode, body: &[u8]) -> ProviderError {
        let code = error_code(body);
        let error = match status.as_u16() {
            401 | 403 => ProviderError::Unauthorized,
            429 => ProviderError::Unavailable("gu1 is rate limiting us (HTTP 429)".to_string()),
            503 => {
                ProviderError::Unavailable(format!("gu1 answered {} with HTTP 503", op.as_str()))
            }
            // Another 5xx may come after the work was done.
            500..=599 => ProviderError::Ambiguous(format!(
                "gu1 answered {} with HTTP {}",
                op.as_str(),
                status.as_u16()
            )),
            404 if code.as_deref() != Some("ENTITY_NOT_FOUND") => ProviderError::NotFound,
            _ if code.as_deref() == Some("NOT_FOUND") => ProviderError::NotFound,
            400..=499 => {
                let message = self.message_for(op, code.as_deref(), status);
                ProviderError::Rejected {
                    code: code
                        .clone()
                        .unwrap_or_else(|| format!("HTTP_{}", status.as_u16())),
                    message,
                }
            }
            _ => ProviderError::BadResponse(format!(
                "gu1 answered {} with unexpected HTTP {}",
                op.as_str(),
                status.as_u16()
            )),
        };
        tracing::info!(
            provider = %self.name,
            op = op.as_str(),
            http_status = status.as_u16(),
            code = code.as_deref().unwrap_or(""),
            "gu1 refused a call"
        );
        error
    }

    fn message_for(&self, op: Op, code: Option<&str>, status: StatusCode) -> String {
        match code {
            Some("ENTITY_NOT_FOUND") => format!(
                "gu1 does not know the entity id given for this subject; check the id passed in \
                 subject.provider_refs.{}",
                self.name
            ),
            Some("INVALID_ENTITY_TYPE") => {
                "the gu1 entity given for this subject is not a person entity; KYC validations \
                 need one"
                    .to_string()
            }
            Some("KYC_NOT_CONFIGURED") => {
                "the gu1 organisation has no KYC integration configured".to_string()
            }
            Some("NO_SESSION_ID") => {
                "the gu1 validation has no provider session yet, so it cannot be synced".to_string()
            }
            Some("INTEGRATION_NOT_CONFIGURED") => {
                "the gu1 KYC integration named by integration_code is not configured for the \
                 organisation"
                    .to_string()
            }
            Some("INVALID_STATUS") => {
                "the gu1 validation's status does not allow this (a finished validation cannot be \
                 cancelled)"
                    .to_string()
            }
            Some("INVALID_METADATA") => {
                "gu1 refused the validation metadata (over 10 KB or not an object)".to_string()
            }
            _ => format!(
                "gu1 refused the {} request (HTTP {})",
                op.as_str(),
                status.as_u16()
            ),
        }
    }

    fn check_validation_id(id: &str) -> Result<(), ProviderError> {
        if plausible_id(id) {
            Ok(())
        } else {
            Err(ProviderError::NotFound)
        }
    }

    fn check_entity_id(&self, id: &str) -> Result<(), ProviderError> {
        if plausible_id(id) {
            Ok(())
        } else {
            Err(ProviderError::Rejected {
                code: "ENTITY_NOT_FOUND".to_string(),
                message: self.message_for(
                    Op::CreateValidation,
                    Some("ENTITY_NOT_FOUND"),
                    StatusCode::NOT_FOUND,
                ),
            })
        }
    }

    /// The `externalId` we give a subject's entity: tenants sharing one gu1 organisation may use
    /// the same subject ids for different people.
    fn external_id(request: &CreateRequest) -> String {
        format!("{}:{}", request.tenant, request.subject.id)
    }

    /// What identifies the subject within this gu1 instance: its national id when given (gu1
    /// keeps one entity per `taxId` in an organisation, whichever tenant made it), else its
    /// external id. Keyed with the API key (HMAC-SHA256), so the national id is never held in
    /// clear, even in memory, beyond the request itself.
    fn subject_key(&self, request: &CreateRequest) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.config.api_key.expose_secret().as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        match &request.subject.national_id {
            Some(tax_id) => {
                mac.update(b"taxId\0");
                mac.update(tax_id.expose().as_bytes());
            }
            None => {
                mac.update(b"externalId\0");
                mac.update(Self::external_id(request).as_bytes());
            }
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// The entity for a request's subject, and whether this call created it. Looks up, then
    /// creates; a 409 on create (another process won the race, or an earlier attempt's answer was
    /// lost) is resolved by the same lookup. Concurrent calls for one subject share one run.
    async fn entity_for(&self, request: &CreateRequest) -> Result<(String, bool), ProviderError> {
        let created = std::sync::atomic::AtomicBool::new(false);
        let entity_id = self
            .entities
            .try_get_with(self.subject_key(request), async {
                if let Some(id) = self.find_entity(request).await? {
                    return Ok(id);
                }
                if let Some(id) = self.create_entity(request).await? {
                    created.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(id);
                }
                tracing::info!(provider = %self.name, "gu1 already has a person entity for this subject; looking it up");
                self.find_entity(request).await?.ok_or_else(|| {
                    ProviderError::SubjectConflict(format!(
                        "gu1 has a person entity for this subject that its lookup does not \
                         return; pass its entity id in subject.provider_refs.{}",
                        self.name
                    ))
                })
            })
            .await
            .map_err(|e| (*e).clone())?;
        Ok((entity_id, created.into_inner()))
    }

    /// Looks the subject's person entity up: `GET {entities_path}?type=person&taxId=...` with a
    /// national id, else `&externalId=...`. A 404 means none.
    async fn find_entity(&self, request: &CreateRequest) -> Result<Option<String>, ProviderError> {
        let tax_id = request
            .subject
            .national_id
            .as_ref()
            .map(|t| t.expose().as_str());
        let external_id = Self::external_id(request);
        let mut url = url::Url::parse(&self.url(&self.config.entities_path))
            .map_err(|_| config_error("gu1 base_url and entities_path do not make a URL"))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("type", "person");
            match tax_id {
                Some(tax_id) => query.append_pair("taxId", tax_id),
                None => query.append_pair("externalId", &external_id),
            };
        }
        let (status, body) = self
            .send(Op::FindEntity, Method::GET, url.into(), None, None)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let found: Gu1EntityList = self.read(Op::FindEntity, status, &body)?;
        Ok(found
            .person_matching(tax_id, &external_id)
            .filter(|id| plausible_id(id))
            .map(str::to_owned))
    }

    /// Creates the person entity for a subject gu1 does not know yet; answers its id, or `None`
    /// when gu1 says it exists already (409).
    async fn create_entity(
        &self,
        request: &CreateRequest,
    ) -> Result<Option<String>, ProviderError> {
        let subject = &request.subject;
        let full_name = [subject.first_name.as_ref(), subject.last_name.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| p.expose().trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let name = if full_name.is_empty() {
            subject.id.clone()
        } else {
            full_name
        };
        let country = subject.country.trim().to_ascii_uppercase();
        let body = Gu1CreatePersonEntity {
            entity_type: "person",
            name: Personal::new(name),
            country_code: country.clone(),
            external_id: Self::external_id(request),
            tax_id: subject.national_id.clone(),
            entity_data: Gu1EntityData {
                person: Gu1PersonData {
                    first_name: subject.first_name.clone(),
                    last_name: subject.last_name.clone(),
                    date_of_birth: subject.date_of_birth.clone(),
                    nationality: Some(country).filter(|c| !c.is_empty()),
                },
            },
        };
        let (status, answer) = self
            .send(
                Op::CreateEntity,
                Method::POST,
                self.url(&self.config.entities_path),
                Some(json_body(&body)),
                None,
            )
            .await?;
        if status == StatusCode::CONFLICT {
            return Ok(None);
        }
        let id = self
            .read::<Gu1CreateEntityAnswer>(Op::CreateEntity, status, &answer)?
            .entity_id()?;
        Ok(Some(id))
    }

    /// The entity's current validation when this idempotency key started it: gu1 has no
    /// idempotency key of its own, so a create retried after a lost answer (or a crash before the
    /// gateway stored it) finds the first validation through `GET {entity_kyc_path}/{id}/current`
    /// and its `metadata.gatewayKey`, instead of starting a second one.
    async fn earlier_attempt(
        &self,
        entity_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Gu1Validation>, ProviderError> {
        let url = self.url(&format!(
            "{}/{entity_id}/current",
            self.config.entity_kyc_path
        ));
        let (status, body) = self
            .send(Op::CurrentValidation, Method::GET, url, None, None)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let current: Gu1Validation = self.read(Op::CurrentValidation, status, &body)?;
        let started_by_this_key = current
            .metadata
            .as_ref()
            .and_then(|m| m.get("gatewayKey"))
            .and_then(|k| k.as_str())
            == Some(idempotency_key);
        if !started_by_this_key {
            return Ok(None);
        }
        if current.entity_id.as_deref().is_some_and(|e| e != entity_id) {
            return Err(ProviderError::NotOurs(
                "gu1's validation under this gateway key verifies another entity".to_string(),
            ));
        }
        Ok(Some(current))
    }

    async fn read_validation(
        &self,
        op: Op,
        method: Method,
        url: String,
        json: Option<Vec<u8>>,
        id: &str,
    ) -> Result<Gu1Validation, ProviderError> {
        let (status, body) = self.send(op, method, url, json, Some(id)).await?;
        self.read(op, status, &body)
    }
}

/// A request body as JSON bytes. Our request structs hold strings, options and dates only, so
/// serialization cannot fail.
fn json_body<T: serde::Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_default()
}

/// Decodes `X-Webhook-Signature`: lowercase (or any case) hex, or base64, optional `sha256=`.
fn decode_signature(header: &str) -> Option<Vec<u8>> {
    let value = header.trim();
    let value = value.strip_prefix("sha256=").unwrap_or(value);
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(value).ok();
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(value).ok())
        .filter(|bytes| bytes.len() == 32)
}

#[async_trait]
impl Provider for Gu1Provider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderVerification, ProviderError> {
        let known = request
            .subject_ref
            .clone()
            .or_else(|| request.subject.provider_refs.get(&self.name).cloned())
            .filter(|id| !id.trim().is_empty());
        let (entity_id, entity_is_new) = match known {
            Some(id) => (id.trim().to_string(), false),
            None => self
                .entity_for(request)
                .await
                .map_err(no_validation_started)?,
        };
        self.check_entity_id(&entity_id)?;
        if !entity_is_new
            && let Some(earlier) = self
                .earlier_attempt(&entity_id, &request.idempotency_key)
                .await
                .map_err(no_validation_started)?
        {
            tracing::info!(
                provider = %self.name,
                validation_id = %earlier.id,
                "gu1 validation for this idempotency key already exists; reusing it"
            );
            let mut verification = ProviderVerification::try_from(earlier)?;
            verification.subject_ref = Some(entity_id);
            return Ok(verification);
        }

        let body = Gu1CreateValidation {
            entity_id: entity_id.clone(),
            workflow_id: self.config.workflow_id.clone(),
            webhook_url: request.webhook_url.clone(),
            metadata: Some(Gu1ValidationMetadata {
                reference: request.reference.clone(),
                gateway_key: request.idempotency_key.clone(),
            }),
            integration_code: self.config.integration_code.clone(),
        };
        let (status, answer) = self
            .send(
                Op::CreateValidation,
                Method::POST,
                self.url(&self.config.validations_path),
                Some(json_body(&body)),
                None,
            )
            .await?;
        let validation: Gu1Validation = self.read(Op::CreateValidation, status, &answer)?;
        tracing::info!(
            provider = %self.name,
            validation_id = %validation.id,
            "gu1 validation created"
        );
        let mut verification = ProviderVerification::try_from(validation)?;
        verification.subject_ref = Some(entity_id);
        Ok(verification)
    }

    async fn find_created(&self, request: &CreateRequest) -> Result<Found, ProviderError> {
        let known = request
            .subject_ref
            .clone()
            .or_else(|| request.subject.provider_refs.get(&self.name).cloned())
            .filter(|id| !id.trim().is_empty())
            .map(|id| id.trim().to_string());
        let entity_id = match known {
            Some(id) => Some(id),
            None => match self.entities.get(&self.subject_key(request)).await {
                Some(id) => Some(id),
                None => self.find_entity(request).await?,
            },
        };
        let Some(entity_id) = entity_id.filter(|id| plausible_id(id)) else {
            // No entity, no validation; but a lookup without the national id cannot see an
            // entity another tenant made for the same person.
            return Ok(if request.subject_partial {
                Found::Unknown
            } else {
                Found::Absent
            });
        };
        match self
            .earlier_attempt(&entity_id, &request.idempotency_key)
            .await?
        {
            Some(validation) => {
                let mut verification = ProviderVerification::try_from(validation)?;
                verification.subject_ref = Some(entity_id);
                Ok(Found::Created(Box::new(verification)))
            }
            None => Ok(Found::Absent),
        }
    }

    async fn get(&self, provider_reference: &str) -> Result<ProviderVerification, ProviderError> {
        Self::check_validation_id(provider_reference)?;
        let url = self.validation_url(provider_reference, "");
        self.read_validation(
            Op::GetValidation,
            Method::GET,
            url,
            None,
            provider_reference,
        )
        .await?
        .try_into()
    }

    async fn refresh(
        &self,
        provider_reference: &str,
    ) -> Result<ProviderVerification, ProviderError> {
        Self::check_validation_id(provider_reference)?;
        let url = self.validation_url(provider_reference, "/sync");
        self.read_validation(
            Op::SyncValidation,
            Method::POST,
            url,
            Some(json_body(&Gu1SyncRequest { force: true })),
            provider_reference,
        )
        .await?
        .try_into()
    }

    async fn identity(&self, provider_reference: &str) -> Result<Identity, ProviderError> {
        Self::check_validation_id(provider_reference)?;
        let url = self.validation_url(provider_reference, "");
        let validation = self
            .read_validation(
                Op::GetValidation,
                Method::GET,
                url,
                None,
                provider_reference,
            )
            .await?;
        Ok(Identity::from(&validation))
    }

    async fn subject_standing(
        &self,
        subject_ref: &str,
    ) -> Result<Option<ProviderStanding>, ProviderError> {
        self.check_entity_id(subject_ref)?;
        let url = self.url(&format!(
            "{}/{subject_ref}/status",
            self.config.entity_kyc_path
        ));
        let (status, body) = self
            .send(Op::EntityStatus, Method::GET, url, None, None)
            .await?;
        let standing: Gu1EntityKycStatus = self.read(Op::EntityStatus, status, &body)?;
        Ok(Some(standing.into()))
    }

    fn verify_webhook(&self, webhook: IncomingWebhook<'_>) -> Result<String, WebhookError> {
        let Some(secret) = self
            .config
            .webhook_secret
            .as_ref()
            .filter(|s| !s.expose_secret().is_empty())
        else {
            tracing::warn!(provider = %self.name, "gu1 webhook refused: no webhook_secret configured");
            return Err(WebhookError::BadSignature);
        };
        let signature = webhook
            .header("x-webhook-signature")
            .and_then(decode_signature)
            .ok_or(WebhookError::BadSignature)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .map_err(|_| WebhookError::BadSignature)?;
        mac.update(webhook.body);
        mac.verify_slice(&signature)
            .map_err(|_| WebhookError::BadSignature)?;
        let envelope: Gu1WebhookEnvelope = serde_json::from_slice(webhook.body).map_err(|e| {
            WebhookError::BadBody(format!(
                "not a gu1 webhook envelope ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if envelope.payload.id.trim().is_empty() {
            return Err(WebhookError::BadBody(
                "the gu1 webhook payload has no validation id".to_string(),
            ));
        }
        tracing::debug!(
            provider = %self.name,
            validation_id = %envelope.payload.id,
            "gu1 webhook signature verified"
        );
        Ok(envelope.payload.id)
    }

    async fn cancel(
        &self,
        provider_reference: &str,
    ) -> Result<ProviderVerification, ProviderError> {
        Self::check_validation_id(provider_reference)?;
        let url = self.url(&self.config.cancel_path.replace("{id}", provider_reference));
        let (status, body) = self
            .send(
                Op::CancelValidation,
                Method::POST,
                url,
                None,
                Some(provider_reference),
            )
            .await?;
        self.validation_answer(Op::CancelValidation, provider_reference, status, &body)
            .await
    }

    /// gu1's docs: a verification session expires, typically after 7 days.
    fn session_lifetime(&self) -> Option<Duration> {
        Some(Duration::from_secs(7 * 24 * 3600))
    }

    fn takes_manual_decisions(&self) -> bool {
        true
    }

    async fn decide(
        &self,
        provider_reference: &str,
        outcome: ManualOutcome,
        reason: &str,
    ) -> Result<ProviderVerification, ProviderError> {
        Self::check_validation_id(provider_reference)?;
        let action = match outcome {
            ManualOutcome::Approve => "/approve",
            ManualOutcome::Reject => "/reject",
        };
        let url = self.validation_url(provider_reference, action);
        let body = serde_json::to_vec(&serde_json::json!({ "reason": reason }))
            .expect("a JSON object serializes");
        let (status, body) = self
            .send(
                Op::DecideValidation,
                Method::POST,
                url,
                Some(body),
                Some(provider_reference),
            )
            .await?;
        self.validation_answer(Op::DecideValidation, provider_reference, status, &body)
            .await
    }
}

impl Gu1Provider {
    /// The validation an action answered with; when the answer is not the validation (e.g.
    /// `{success: true}`), it is read back.
    async fn validation_answer(
        &self,
        op: Op,
        provider_reference: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Result<ProviderVerification, ProviderError> {
        let answer: serde_json::Value = self.read(op, status, body)?;
        let candidate = match answer.get("validation") {
            Some(inner) if inner.is_object() => inner.clone(),
            _ => answer,
        };
        match serde_json::from_value::<Gu1Validation>(candidate) {
            Ok(validation) if validation.id == provider_reference => validation.try_into(),
            _ => self.get(provider_reference).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: serde_json::Value) -> Result<Gu1Config, serde_json::Error> {
        let mut base = json!({"api_key": "gk_test_secret_value"});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base)
    }

    #[test]
    fn config_defaults_are_the_pinned_ones() {
        let c = config(json!({})).unwrap();
        assert_eq!(c.base_url, "https://api.gu1.ai");
        assert_eq!(c.timeout_ms, 10_000);
        assert_eq!(c.connect_timeout_ms, 3_000);
        assert_eq!(c.entities_path, "/api/entities");
        assert_eq!(c.validations_path, "/api/kyc/validations");
        assert_eq!(c.entity_kyc_path, "/api/kyc/entities");
        assert_eq!(c.cancel_path, "/api/kyc/validations/{id}/cancel");
        assert!(c.webhook_secret.is_none() && c.organization_id.is_none());
    }

    #[test]
    fn config_refuses_unknown_keys_and_hides_the_key() {
        assert!(config(json!({"api_kye": "x"})).is_err());
        let c = config(json!({"webhook_secret": "whsec_value"})).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("gk_test_secret_value"));
        assert!(!printed.contains("whsec_value"));
    }

    #[test]
    fn new_refuses_configs_that_cannot_work() {
        let bad = [
            json!({"base_url": "not a url"}),
            json!({"base_url": "ftp://example.com"}),
            json!({"validations_path": "api/kyc"}),
            json!({"cancel_path": "/api/kyc/validations/cancel"}),
            json!({"timeout_ms": 0}),
            // Targets the outbound rule refuses without an exemption.
            json!({"base_url": "http://127.0.0.1:9"}),
            json!({"base_url": "https://169.254.169.254"}),
            json!({"base_url": "https://[fd00::1]"}),
        ];
        let strict = Outbound::default();
        for extra in bad {
            let err = Gu1Provider::new("gu1", config(extra.clone()).unwrap(), &strict).unwrap_err();
            assert!(matches!(&err, ProviderError::Config(_)), "{extra}: {err:?}");
            assert!(!err.to_string().contains("169.254"), "{err}");
        }
        assert!(Gu1Provider::new("gu1", config(json!({})).unwrap(), &strict).is_ok());
        let exempt = Outbound::new(kyc_core::outbound::Allowlist::new(&["127.0.0.1".into()]));
        let local = config(json!({"base_url": "http://127.0.0.1:9"})).unwrap();
        assert!(Gu1Provider::new("gu1", local, &exempt).is_ok());
    }

    #[test]
    fn error_bodies_map_to_our_errors_with_our_words() {
        let provider =
            Gu1Provider::new("gu1-ar", config(json!({})).unwrap(), &Outbound::default()).unwrap();
        let bodies: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../tests/fixtures/errors.json")).unwrap();
        let status_of = |code: &str| match code {
            "ENTITY_NOT_FOUND" | "NOT_FOUND" => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        for body in bodies {
            let code = body["error"].as_str().unwrap().to_string();
            let gu1_text = body["message"].as_str().unwrap().to_string();
            let raw = serde_json::to_vec(&body).unwrap();
            let err = provider.error_for(Op::GetValidation, status_of(&code), &raw);
            if code == "NOT_FOUND" {
                assert_eq!(err, ProviderError::NotFound);
                continue;
            }
            match err {
                ProviderError::Rejected { code: got, message } => {
                    assert_eq!(got, code);
                    assert_ne!(message, gu1_text, "{code}: gu1's text passed through");
                    if code == "ENTITY_NOT_FOUND" {
                        assert!(
                            message.contains("subject.provider_refs.gu1-ar"),
                            "{message}"
                        );
                    }
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        let err = |status: u16, body: &[u8]| {
            provider.error_for(
                Op::CreateValidation,
                StatusCode::from_u16(status).unwrap(),
                body,
            )
        };
        assert_eq!(err(401, b"{}"), ProviderError::Unauthorized);
        assert!(err(429, b"").is_unavailable());
        assert!(err(503, b"<html>").is_unavailable());
        assert_eq!(err(404, b"<html>"), ProviderError::NotFound);
        assert!(matches!(
            err(400, b"<html>"),
            ProviderError::Rejected { code, .. } if code == "HTTP_400"
        ));
        assert!(matches!(
            err(400, br#"{"error":"<script>alert(1)</script>"}"#),
            ProviderError::Rejected { code, .. } if code == "HTTP_400"
        ));
        assert!(matches!(err(302, b""), ProviderError::BadResponse(_)));
    }

    #[test]
    fn signatures_decode_from_hex_and_base64() {
        let raw = [0xabu8; 32];
        let hex = hex::encode(raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(decode_signature(&hex).unwrap(), raw);
        assert_eq!(decode_signature(&format!("sha256={hex}")).unwrap(), raw);
        assert_eq!(decode_signature(&b64).unwrap(), raw);
        assert_eq!(decode_signature("abc"), None);
        assert_eq!(decode_signature(""), None);
    }

    #[test]
    fn ids_that_could_change_the_url_are_refused() {
        for id in ["", ".", "..", "a/b", "a?b", "a b", "a%2F"] {
            assert!(!plausible_id(id), "{id:?}");
        }
        assert!(plausible_id("550e8400-e29b-41d4-a716-446655440000"));
    }
}
