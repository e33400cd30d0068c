//! The Didit (didit.me) adapter: turns the normalized [`kyc_core::Provider`] calls into Didit's
//! identity verification API v3.
//!
//! Facts are from Didit's public documentation (docs.didit.me, v3), each with its source, in
//! `SOURCES.md` beside this crate; the webhook signature test vectors are Didit's WordPress
//! plugin's published fixtures (`tests/fixtures/webhook-signatures.json`, from
//! didit-protocol/plugin-wordpress). The wire types and the decision mapping are in [`wire`].
//!
//! # Calls
//!
//! | `Provider` call  | Didit request                                                            |
//! |------------------|---------------------------------------------------------------------------|
//! | `create`         | `POST /v3/session/` with `workflow_id`, `vendor_data` = the attempt's idempotency key, `callback` = the caller's `redirect_url`, `metadata` = tenant and reference, `expected_details`, `contact_details` |
//! | `find_created`   | `GET /v3/sessions/?vendor_data=<key>`, then the decision of the session found |
//! | `get`, `refresh` | `GET /v3/session/{id}/decision/`                                          |
//! | `identity`       | the same decision, its latest `id_verifications` item                     |
//! | `decide`         | `PATCH /v3/session/{id}/update-status/` with `new_status` `Approved` or `Declined` and the reviewer's `comment`, then the decision |
//! | `cancel`         | none by default (`Unsupported`: the gateway answers 409); with `cancel_deletes = true`, `DELETE /v3/session/{id}/delete/` |
//! | `verify_webhook` | no request: checks `X-Signature` and the signed `timestamp`, returns `session_id` |
//!
//! Every request carries `x-api-key`, the configured timeouts and the caller's trace, and goes to
//! `base_url` (default `https://verification.didit.me`) with Didit's trailing slash: Didit
//! redirects a path without one, and a redirect is never followed.
//!
//! # Errors
//!
//! | Didit answer                                                | [`ProviderError`]                     |
//! |-------------------------------------------------------------|---------------------------------------|
//! | connect error, 429, 503                                     | `Unavailable`: nothing was started      |
//! | timeout or connection cut after sending, another 5xx, an unreadable 2xx, a 3xx | `Ambiguous` / `BadResponse`: a create may have started a session, so the gateway looks it up before anything else |
//! | 401, 403                                                    | `Unauthorized`                        |
//! | 404 on a session                                            | `NotFound`                            |
//! | 400, 402, 404 on create (unknown workflow), 409, 410, 415, another 4xx | `Rejected { code: Didit's code or HTTP_<status>, message: our text }`: nothing started, no fallback |
//! | a session whose `vendor_data` is not this attempt's key     | `NotOurs`                             |
//!
//! Didit's `detail` text and bodies are never passed on; its `code` only when it is a plain word.
//!
//! # Choices where Didit's documentation leaves room
//!
//! - **One session per attempt.** `vendor_data` is the attempt's idempotency key (a digest of the
//!   tenant, the reference, the request and the instance, opaque), not the subject id: Didit
//!   answers a create repeating `vendor_data` with the unfinished session already holding it, so a
//!   subject id there would hand one request another request's session. So each verification is
//!   its own Didit user entity. A session is adopted only when its `vendor_data` is this key
//!   (else [`ProviderError::NotOurs`]).
//! - **Ambiguous creates.** Didit reuses only an *unfinished* session, and nothing stops two
//!   creates in flight at once from making two, so `create` is not idempotent
//!   ([`Provider::create_is_idempotent`] is false). `find_created` lists the sessions holding the
//!   key: one found is [`Found::Created`], none is [`Found::Absent`] (the gateway waits its
//!   `lookup_grace_seconds` for a late create before routing again).
//! - **Webhooks.** Didit posts to one destination per application, set in its console (or its
//!   management API), not per session: register the instance's URL, printed by
//!   `kyc-gateway hooks --config FILE`, with subscribed events `status.updated` and
//!   `data.updated`. Only `X-Signature` (the raw bytes) is checked, in constant time; the
//!   window is read from the body's `timestamp`, which the signature covers (`X-Timestamp` is
//!   not signed). Without a `webhook_secret` every webhook is refused.
//! - **Cancel.** Didit has no cancel; `update-status` takes only `Approved`, `Declined` and
//!   `Resubmitted`. An instance with `cancel_deletes = true` cancels by deleting the session at
//!   Didit (its data is gone there; the gateway keeps the verification as `cancelled`).
//! - **Manual decisions** go to `update-status`; Didit takes them on a session `In Review` (and on
//!   a finished one, which the gateway never asks).
//! - **Session lifetime.** A session lapses after its workflow's expiry (7 days unless the
//!   workflow says otherwise): `session_lifetime_hours`, so the reconciler ends what never will.
//! - **Decision.** The latest item of each array counts (a resubmitted step appends one). A
//!   registry check (`database_validations`) that failed fails the document check. Scores are
//!   passed on where 0 to 100.
//!
//! # Status
//!
//! Didit's `status` strings are exact and case-sensitive; the match is exhaustive, so a status
//! Didit adds later is refused ([`SessionStatus::parse`] answers `None`) instead of guessed.
//!
//! | Didit `status`  | [`Status`]    | why                                                          |
//! |-----------------|---------------|--------------------------------------------------------------|
//! | `Not Started`   | `pending`     | the link was not opened yet                                  |
//! | `In Progress`   | `in_progress` |                                                              |
//! | `Awaiting User` | `in_progress` | Didit waits for the person (a step to redo, a second device) |
//! | `Resubmitted`   | `in_progress` | a reviewer sent the person back to redo steps                |
//! | `In Review`     | `in_review`   |                                                              |
//! | `Approved`      | `approved`    |                                                              |
//! | `Declined`      | `rejected`    |                                                              |
//! | `Expired`       | `expired`     | the link was never opened in time                            |
//! | `Kyc Expired`   | `expired`     | an approval Didit's own expiry policy ended                  |
//! | `Abandoned`     | `abandoned`   | started, not finished in time                                |
//!
//! `cancelled` is never Didit's: Didit has no cancel call, so it is the gateway's own word for a
//! session it stopped following. A session approved and later `Kyc Expired` at Didit stays
//! `approved` in the gateway (a final status never changes); the gateway's re-verification
//! notices count from the approval.

mod webhook;
pub mod wire;

pub use webhook::{SIGNATURE_WINDOW_SECONDS, WebhookEnvelope, verify_webhook_signature};

use async_trait::async_trait;
use kyc_core::outbound::Outbound;
use kyc_core::{
    AdapterConfig, CreateRequest, Found, Identity, IncomingWebhook, ManualOutcome, Provider,
    ProviderError, ProviderVerification, Status, WebhookError,
};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use wire::{CreateSession, ErrorBody, SessionCreated, SessionDecision, SessionList};

/// One Didit instance's settings, as read from the policy file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiditConfig {
    /// Didit's API host. Default `https://verification.didit.me`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The application's API key, sent as `x-api-key`.
    pub api_key: SecretString,
    /// The secret of the application's webhook destination; without it every webhook is refused.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// The published workflow sessions are created on (a UUID from Didit's console).
    pub workflow_id: String,
    /// The flow's language (`es`, `pt-BR`); Didit follows the person's browser when absent.
    #[serde(default)]
    pub language: Option<String>,
    /// Whole-request timeout for every call, in milliseconds (1 to 600 000). Default 10 000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect timeout for every call, in milliseconds (1 to 600 000). Default 3 000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long a session stays open, in hours (1 to 8 760): the workflow's expiry. Default 168.
    #[serde(default = "default_session_lifetime_hours")]
    pub session_lifetime_hours: u64,
    /// Cancel by deleting the session at Didit (its data with it). Default false: cancel is
    /// refused, as Didit has no cancel.
    #[serde(default)]
    pub cancel_deletes: bool,
}

fn default_base_url() -> String {
    "https://verification.didit.me".to_string()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_session_lifetime_hours() -> u64 {
    168
}

impl DiditConfig {
    /// A config with every default, for code (tests) that has no policy file.
    pub fn new(
        base_url: impl Into<String>,
        api_key: SecretString,
        workflow_id: impl Into<String>,
    ) -> Self {
        DiditConfig {
            base_url: base_url.into(),
            api_key,
            webhook_secret: None,
            workflow_id: workflow_id.into(),
            language: None,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            session_lifetime_hours: default_session_lifetime_hours(),
            cancel_deletes: false,
        }
    }
}

impl AdapterConfig for DiditConfig {
    const KIND: &'static str = "didit";
    const SECRETS: &'static [&'static str] = &["api_key", "webhook_secret"];

    fn build(self, name: &str, outbound: &Outbound) -> Result<Arc<dyn Provider>, ProviderError> {
        Ok(Arc::new(DiditProvider::new(name, self, outbound)?))
    }
}

/// One configured Didit instance.
pub struct DiditProvider {
    name: String,
    config: DiditConfig,
    base_url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for DiditProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiditProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// What a call is, for log lines and error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    List,
    Decision,
    UpdateStatus,
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create session",
            Op::List => "list sessions",
            Op::Decision => "session decision",
            Op::UpdateStatus => "update status",
            Op::Delete => "delete session",
        }
    }
}

fn config_error(message: &str) -> ProviderError {
    ProviderError::Config(message.to_string())
}

/// Whether `id` is a UUID in its hyphenated form, as Didit writes session and workflow ids: a
/// session id that is not is refused before it reaches a URL.
fn hyphenated_uuid(id: &str) -> bool {
    id.len() == 36 && uuid::Uuid::try_parse(id).is_ok()
}

/// Didit's `code`, when it is a plain word (so nothing else rides along in it).
fn error_code(body: &[u8]) -> Option<String> {
    let code = serde_json::from_slice::<ErrorBody>(body).ok()?.code?;
    let plain = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    plain.then_some(code)
}

fn unreadable(op: Op, error: &serde_json::Error) -> ProviderError {
    // serde's message could quote the body: only its category and place go out.
    ProviderError::BadResponse(format!(
        "Didit answered {} with a body we cannot read ({:?} error at line {}, column {})",
        op.as_str(),
        error.classify(),
        error.line(),
        error.column()
    ))
}

impl DiditProvider {
    /// Builds the adapter for the instance called `name`. Fails on settings that cannot work.
    pub fn new(
        name: &str,
        config: DiditConfig,
        outbound: &Outbound,
    ) -> Result<Self, ProviderError> {
        kyc_core::provider_http::base_url(&config.base_url, "didit base_url", outbound)?;
        if !(1..=600_000).contains(&config.timeout_ms)
            || !(1..=600_000).contains(&config.connect_timeout_ms)
        {
            return Err(config_error(
                "didit timeout_ms and connect_timeout_ms must be from 1 to 600000 (milliseconds)",
            ));
        }
        if !(1..=8_760).contains(&config.session_lifetime_hours) {
            return Err(config_error(
                "didit session_lifetime_hours must be from 1 to 8760",
            ));
        }
        if !hyphenated_uuid(&config.workflow_id) {
            return Err(config_error(
                "didit workflow_id must be the workflow's UUID",
            ));
        }
        let language_ok = config.language.as_deref().is_none_or(|l| {
            (2..=8).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic() || c == '-')
        });
        if !language_ok {
            return Err(config_error(
                "didit language must be a language code such as es or pt-BR",
            ));
        }
        // Never follow a redirect (it would send the person's data wherever it points), and
        // connect only where the outbound rule permits.
        let http = outbound
            .client_builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("kyc-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| config_error("could not build the HTTP client for Didit"))?;
        Ok(DiditProvider {
            name: name.to_string(),
            base_url: config.base_url.trim().trim_end_matches('/').to_string(),
            config,
            http,
        })
    }

    /// A session's route; an id that is not a session id is `NotFound` without a request.
    fn session_url(&self, id: &str, tail: &str) -> Result<String, ProviderError> {
        if !hyphenated_uuid(id) {
            return Err(ProviderError::NotFound);
        }
        Ok(format!("{}/v3/session/{id}/{tail}", self.base_url))
    }

    /// Sends one request with the key; answers the status and the bounded body, or the transport
    /// failure classed by [`kyc_core::provider_http::send`].
    async fn send(
        &self,
        op: Op,
        method: Method,
        url: String,
        json: Option<Vec<u8>>,
        session_id: &str,
    ) -> Result<(StatusCode, Vec<u8>), ProviderError> {
        let mut request = self
            .http
            .request(method, url)
            .header("x-api-key", self.config.api_key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = json {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let what = format!("Didit {} call", op.as_str());
        match kyc_core::provider_http::send(request, &what).await {
            Ok(answer) => {
                tracing::debug!(provider = %self.name, op = op.as_str(), session_id, http_status = answer.status.as_u16(), "Didit answered");
                Ok((answer.status, answer.body))
            }
            Err(error) => {
                tracing::warn!(provider = %self.name, op = op.as_str(), session_id, %error, "Didit call failed");
                Err(error)
            }
        }
    }

    /// A 2xx body as `T`, or the error its status stands for.
    fn read<T: DeserializeOwned>(
        &self,
        op: Op,
        (status, body): (StatusCode, Vec<u8>),
    ) -> Result<T, ProviderError> {
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|e| unreadable(op, &e))
        } else {
            Err(self.error_for(op, status, &body))
        }
    }

    fn error_for(&self, op: Op, status: StatusCode, body: &[u8]) -> ProviderError {
        let code = error_code(body);
        let http = status.as_u16();
        let error = match http {
            401 | 403 => ProviderError::Unauthorized,
            429 => ProviderError::Unavailable("Didit is rate limiting us (HTTP 429)".to_string()),
            503 => {
                ProviderError::Unavailable(format!("Didit answered {} with HTTP 503", op.as_str()))
            }
            // Another 5xx may come after the work was done.
            500..=599 => {
                ProviderError::Ambiguous(format!("Didit answered {} with HTTP {http}", op.as_str()))
            }
            404 if op != Op::Create => ProviderError::NotFound,
            400..=499 => ProviderError::Rejected {
                code: code.clone().unwrap_or_else(|| format!("HTTP_{http}")),
                message: self.message_for(op, http),
            },
            // A redirect (never followed) or a status Didit does not document.
            _ => ProviderError::BadResponse(format!(
                "Didit answered {} with unexpected HTTP {http}",
                op.as_str()
            )),
        };
        tracing::info!(provider = %self.name, op = op.as_str(), http_status = http, code = code.as_deref().unwrap_or(""), "Didit refused a call");
        error
    }

    fn message_for(&self, op: Op, http: u16) -> String {
        match (op, http) {
            (Op::Create, 404) => format!(
                "Didit does not know the workflow of instance {}; check its workflow_id is published",
                self.name
            ),
            (Op::Create, 402) => "Didit's balance cannot pay for the session".to_string(),
            (Op::UpdateStatus, 400) => {
                "Didit refused the decision: the session's status does not take one".to_string()
            }
            _ => format!("Didit refused the {} request (HTTP {http})", op.as_str()),
        }
    }

    /// The session as Didit holds it now.
    async fn decision(&self, id: &str) -> Result<SessionDecision, ProviderError> {
        let url = self.session_url(id, "decision/")?;
        let answer = self.send(Op::Decision, Method::GET, url, None, id).await?;
        let decision: SessionDecision = self.read(Op::Decision, answer)?;
        if decision.session_id != id {
            return Err(ProviderError::BadResponse(
                "Didit answered the decision of another session".to_string(),
            ));
        }
        Ok(decision)
    }

    fn verification(decision: &SessionDecision) -> Result<ProviderVerification, ProviderError> {
        let status = parse_status(&decision.status)?;
        Ok(ProviderVerification {
            provider_reference: decision.session_id.clone(),
            status: status.normalized(),
            reason: decision.reason(status),
            verification_url: decision.session_url.clone(),
            expires_at: None,
            decision: decision.decision(),
            subject_ref: None,
        })
    }

    /// Checks that a session holds this attempt's key.
    fn ours(request: &CreateRequest, vendor_data: Option<&str>) -> Result<(), ProviderError> {
        if vendor_data == Some(request.idempotency_key.as_str()) {
            Ok(())
        } else {
            Err(ProviderError::NotOurs(
                "the Didit session answered holds another vendor_data".to_string(),
            ))
        }
    }
}

fn parse_status(text: &str) -> Result<SessionStatus, ProviderError> {
    SessionStatus::parse(text).ok_or_else(|| {
        ProviderError::BadResponse("Didit answered a session status it does not document".into())
    })
}

#[async_trait]
impl Provider for DiditProvider {
    fn kind(&self) -> &'static str {
        DiditConfig::KIND
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderVerification, ProviderError> {
        let body = CreateSession::new(
            request,
            &self.config.workflow_id,
            self.config.language.as_deref(),
        );
        let body = serde_json::to_vec(&body)
            .map_err(|_| ProviderError::Unavailable("could not encode the Didit create".into()))?;
        let url = format!("{}/v3/session/", self.base_url);
        let answer = self
            .send(Op::Create, Method::POST, url, Some(body), "")
            .await?;
        let created: SessionCreated = self.read(Op::Create, answer)?;
        Self::ours(request, created.vendor_data.as_deref())?;
        if !hyphenated_uuid(&created.session_id) {
            return Err(ProviderError::BadResponse(
                "Didit answered a session id that is not a UUID".to_string(),
            ));
        }
        let status = parse_status(&created.status)?;
        tracing::info!(provider = %self.name, session_id = %created.session_id, status = %created.status, "Didit session created");
        Ok(ProviderVerification {
            provider_reference: created.session_id,
            status: status.normalized(),
            reason: None,
            verification_url: created.url,
            expires_at: None,
            decision: None,
            subject_ref: None,
        })
    }

    async fn find_created(&self, request: &CreateRequest) -> Result<Found, ProviderError> {
        let mut url = url::Url::parse(&format!("{}/v3/sessions/", self.base_url))
            .map_err(|_| config_error("didit base_url is not a valid URL"))?;
        url.query_pairs_mut()
            .append_pair("vendor_data", &request.idempotency_key)
            .append_pair("limit", "10");
        let answer = self
            .send(Op::List, Method::GET, url.into(), None, "")
            .await?;
        let list: SessionList = self.read(Op::List, answer)?;
        let Some(row) = list
            .results
            .iter()
            .find(|row| row.vendor_data.as_deref() == Some(request.idempotency_key.as_str()))
        else {
            return Ok(Found::Absent);
        };
        let decision = self.decision(&row.session_id).await?;
        Self::ours(request, decision.vendor_data.as_deref())?;
        Ok(Found::Created(Box::new(Self::verification(&decision)?)))
    }

    async fn get(&self, provider_reference: &str) -> Result<ProviderVerification, ProviderError> {
        Self::verification(&self.decision(provider_reference).await?)
    }

    async fn identity(&self, provider_reference: &str) -> Result<Identity, ProviderError> {
        Ok(self.decision(provider_reference).await?.identity())
    }

    fn verify_webhook(&self, webhook: IncomingWebhook<'_>) -> Result<String, WebhookError> {
        let secret = self
            .config
            .webhook_secret
            .as_ref()
            .ok_or(WebhookError::BadSignature)?;
        let now = chrono::Utc::now().timestamp();
        let envelope = verify_webhook_signature(
            secret.expose_secret().as_bytes(),
            webhook.body,
            webhook.header("x-signature"),
            now,
        )?;
        if !hyphenated_uuid(&envelope.session_id) {
            return Err(WebhookError::BadBody(
                "the Didit webhook's session_id is not a UUID".to_string(),
            ));
        }
        Ok(envelope.session_id)
    }

    fn session_lifetime(&self) -> Option<Duration> {
        Some(Duration::from_secs(
            self.config.session_lifetime_hours * 3600,
        ))
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
        let url = self.session_url(provider_reference, "update-status/")?;
        let new_status = match outcome {
            ManualOutcome::Approve => "Approved",
            ManualOutcome::Reject => "Declined",
        };
        let body = serde_json::json!({"new_status": new_status, "comment": reason});
        let answer = self
            .send(
                Op::UpdateStatus,
                Method::PATCH,
                url,
                Some(body.to_string().into_bytes()),
                provider_reference,
            )
            .await?;
        let _: serde_json::Value = self.read(Op::UpdateStatus, answer)?;
        self.get(provider_reference).await
    }

    async fn cancel(
        &self,
        provider_reference: &str,
    ) -> Result<ProviderVerification, ProviderError> {
        if !self.config.cancel_deletes {
            return Err(ProviderError::Unsupported("cancel"));
        }
        let url = self.session_url(provider_reference, "delete/")?;
        let (status, body) = self
            .send(Op::Delete, Method::DELETE, url, None, provider_reference)
            .await?;
        if !status.is_success() {
            return Err(self.error_for(Op::Delete, status, &body));
        }
        Ok(ProviderVerification {
            provider_reference: provider_reference.to_string(),
            status: Status::Cancelled,
            reason: Some(kyc_core::Reason {
                code: "cancelled".to_string(),
                provider_code: Some("deleted".to_string()),
                message: Some("the session was deleted at Didit, its data with it".to_string()),
            }),
            verification_url: None,
            expires_at: None,
            decision: None,
            subject_ref: None,
        })
    }
}

/// A Didit session status, as Didit writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// `Not Started`.
    NotStarted,
    /// `In Progress`.
    InProgress,
    /// `Awaiting User`.
    AwaitingUser,
    /// `Resubmitted`.
    Resubmitted,
    /// `In Review`.
    InReview,
    /// `Approved`.
    Approved,
    /// `Declined`.
    Declined,
    /// `Expired`.
    Expired,
    /// `Kyc Expired`.
    KycExpired,
    /// `Abandoned`.
    Abandoned,
}

impl SessionStatus {
    /// Every status, with the string Didit writes for it.
    pub const ALL: [(SessionStatus, &'static str); 10] = [
        (SessionStatus::NotStarted, "Not Started"),
        (SessionStatus::InProgress, "In Progress"),
        (SessionStatus::AwaitingUser, "Awaiting User"),
        (SessionStatus::Resubmitted, "Resubmitted"),
        (SessionStatus::InReview, "In Review"),
        (SessionStatus::Approved, "Approved"),
        (SessionStatus::Declined, "Declined"),
        (SessionStatus::Expired, "Expired"),
        (SessionStatus::KycExpired, "Kyc Expired"),
        (SessionStatus::Abandoned, "Abandoned"),
    ];

    /// The status Didit wrote, exactly (case and spacing count); `None` for one it does not
    /// document.
    pub fn parse(text: &str) -> Option<SessionStatus> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(status, _)| *status)
    }

    /// The string Didit writes.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(status, _)| *status == self)
            .map_or("", |(_, name)| name)
    }

    /// The normalized status (see the table in the crate docs).
    pub fn normalized(self) -> Status {
        match self {
            SessionStatus::NotStarted => Status::Pending,
            SessionStatus::InProgress
            | SessionStatus::AwaitingUser
            | SessionStatus::Resubmitted => Status::InProgress,
            SessionStatus::InReview => Status::InReview,
            SessionStatus::Approved => Status::Approved,
            SessionStatus::Declined => Status::Rejected,
            SessionStatus::Expired | SessionStatus::KycExpired => Status::Expired,
            SessionStatus::Abandoned => Status::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_documented_status_maps_as_the_table_says() {
        let expected = [
            ("Not Started", Status::Pending),
            ("In Progress", Status::InProgress),
            ("Awaiting User", Status::InProgress),
            ("Resubmitted", Status::InProgress),
            ("In Review", Status::InReview),
            ("Approved", Status::Approved),
            ("Declined", Status::Rejected),
            ("Expired", Status::Expired),
            ("Kyc Expired", Status::Expired),
            ("Abandoned", Status::Abandoned),
        ];
        for (text, status) in expected {
            let parsed = SessionStatus::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(parsed.normalized(), status, "{text}");
        }
        assert_eq!(expected.len(), SessionStatus::ALL.len());
    }

    #[test]
    fn an_undocumented_or_miswritten_status_is_refused() {
        for text in ["approved", "KYC Expired", "Cancelled", "", "Not started"] {
            assert_eq!(SessionStatus::parse(text), None, "{text}");
        }
    }
}
