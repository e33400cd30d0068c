//! BeTrust (trust.lat) behind the normalized [`kyc_core::Provider`] trait.
//!
//! The gateway never sees a BeTrust body: this crate turns its calls into BeTrust's HTTP API and the
//! answers back into the normalized model. [`transformers`] holds the wire structs and the mapping;
//! this file holds the client: URLs, authentication, error mapping.
//!
//! # Calls
//!
//! | `Provider` call       | BeTrust                                                             |
//! |-----------------------|---------------------------------------------------------------------|
//! | `create`              | `POST {api_base_url}/transactions` (on 409: `GET` it by `transaction_id`) |
//! | `get`, `refresh`      | `GET {api_base_url}/transactions/{uuid}`                            |
//! | `identity`            | `GET {api_base_url}/transactions/{uuid}/credential_information`     |
//! | `cancel`              | not offered by BeTrust: [`ProviderError::Unsupported`]              |
//! | `subject_standing`    | BeTrust keeps no per-person view: `Ok(None)`                        |
//! | `verify_webhook`      | reads the unsigned compact body and returns its `uuid`              |
//!
//! # Status mapping (summary)
//!
//! `failed` -> `rejected`; else `complete` -> `approved`; else `active` -> `pending` (no step or
//! `Session_start`), `in_review` (`Manual_review`) or `in_progress` (any other step); else (inactive,
//! not finished) -> `abandoned` (`Abandoned`), `cancelled` (`Cancelled`) or `expired` (anything
//! else, reason `link_inactive`). `step` and `issue_description` are kept in the [`kyc_core::Reason`].
//! The full table, the decision rules and the create body are in [`transformers`].
//!
//! # Idempotency
//!
//! [`kyc_core::CreateRequest::idempotency_key`] is sent as BeTrust's `transaction_id`, which BeTrust
//! keeps unique per `company_id`. A retried create therefore answers 409 `Duplicated`; the adapter
//! then reads the existing transaction by that `transaction_id` and returns it only if it is this
//! request's: its `transaction_id` is the key and its `metadata.nin` is the request's national id
//! (or both have none). Anything else is [`ProviderError::NotOurs`], never adopted. It never
//! creates a second one, so [`Provider::create_is_idempotent`] holds and an ambiguous create is
//! resumed by sending it again. `find_created` reads `GET /transactions/{transaction_id}`: a 404
//! is [`kyc_core::Found::Absent`].
//!
//! # Token cache
//!
//! Each [`BetrustProvider`] holds its OAuth2 `client_credentials` token in its own moka cache:
//! - the entry lives `expires_in - token_margin_seconds`; a token whose lifetime is not longer than
//!   the margin is used by the calls that waited for it and never reused;
//! - concurrent calls that find no token share one token request (`try_get_with`);
//! - a 401 from the API evicts the token the failed call used, but only if the cache still holds that
//!   very token (each token carries a generation number, compared inside `and_compute_with`), so many
//!   calls failing together fetch one new token, not one each; the call is then retried once with the
//!   new token, and a second 401 is [`ProviderError::Unauthorized`].
//!
//! # Errors
//!
//! What a failure means for a create (`timeout_ms` and `connect_timeout_ms` apply to every call):
//!
//! | failure                                                        | class                  |
//! |----------------------------------------------------------------|------------------------|
//! | connect error, HTTP 429 or 503, any failure of the token call  | `Unavailable`: nothing started, a fallback may run |
//! | timeout or connection cut after connecting, another 5xx        | `Ambiguous`: BeTrust may have made the transaction |
//! | the transaction read after a 409 fails to arrive               | `Ambiguous`            |
//! | a 2xx body we cannot read                                      | `BadResponse` (the gateway treats it as ambiguous) |
//! | another 4xx                                                    | `Rejected`: refused, nothing started |
//!
//! An unreadable body is [`ProviderError::BadResponse`]; a 404 on
//! a transaction is [`ProviderError::NotFound`]; other 4xx are [`ProviderError::Rejected`] with
//! BeTrust's code (its HTTP status) and our own message, never BeTrust's body; refused credentials
//! (token endpoint 400/401/403, or a 401 that survives a fresh token) are
//! [`ProviderError::Unauthorized`]. Redirects are not followed (a 3xx is a `BadResponse`), so the
//! bearer token never travels to another host. Logs and spans carry the provider instance name,
//! the transaction uuid and HTTP statuses only.
//!
//! # Where BeTrust's docs are silent
//!
//! - `redirect_url`: BeTrust documents no field that sends the person somewhere after the flow
//!   (`link` is a template for the link BeTrust hands out, and `metadata.web_redirect` is an
//!   undocumented flag without a target). The adapter does not send it: a create with a
//!   `redirect_url` still succeeds, and a warning (provider name only) says it was dropped.
//! - `reference`: not sent; the idempotency key already identifies the transaction as
//!   `transaction_id`, and BeTrust's `metadata` is flow configuration, not free storage.
//! - `checks.liveness` and `checks.face_match`: BeTrust's biometric flow always runs both; there is no
//!   switch to send.
//! - Webhooks are unsigned: the gateway's per-provider URL token is the guard, and the gateway re-reads
//!   the transaction before believing any state.
//! - An invalid configuration (a base URL that is not http(s)) fails [`BetrustProvider::new`] with
//!   [`ProviderError::Config`]. The gateway builds instances through [`AdapterConfig`] on
//!   [`BetrustConfig`], under `kind = "betrust"`.

pub mod transformers;

use async_trait::async_trait;
use kyc_core::outbound::Outbound;
use kyc_core::provider_http::{Answer, base_url, send};
use kyc_core::{
    AdapterConfig, CreateRequest, Found, Identity, IncomingWebhook, Provider, ProviderError,
    ProviderVerification, WebhookError,
};
use moka::future::Cache;
use moka::ops::compute::Op;
use reqwest::{Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;
use transformers::{
    CreateTransactionRequest, CredentialInformation, Envelope, TokenAnswer, TokenRequest,
    Transaction, WebhookBody,
};
use url::Url;

/// One BeTrust account as the policy file describes it. Every host and path is configurable, so an
/// operator can point at production (hosts handed out at onboarding) without a code change.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BetrustConfig {
    /// Host of the OAuth2 token endpoint.
    #[serde(default = "default_auth_base_url")]
    pub auth_base_url: String,
    /// Path of the token endpoint under `auth_base_url`.
    #[serde(default = "default_token_path")]
    pub token_path: String,
    /// Base of the transaction API (`/transactions` is appended).
    #[serde(default = "default_api_base_url")]
    pub api_base_url: String,
    /// OAuth2 client id, per environment.
    pub client_id: String,
    /// OAuth2 client secret; never printed.
    pub client_secret: SecretString,
    /// The BeTrust company the transactions belong to (part of the idempotency key).
    pub company_id: String,
    /// BeTrust's validation method for every transaction.
    #[serde(default = "default_authorization_method")]
    pub authorization_method: String,
    /// Attempts allowed to the person; BeTrust's default (3) when unset.
    #[serde(default)]
    pub tries: Option<u32>,
    /// Link lifetime in seconds; BeTrust's default (600) when unset.
    #[serde(default)]
    pub expiration_seconds: Option<u32>,
    /// Extra BeTrust flow rules (`challenges_required`, `capture_*_expiration`, ...) merged into the
    /// `metadata` of every create; the request's own values win for the keys it sets.
    #[serde(default)]
    pub flow: Map<String, Value>,
    /// Whole-request timeout, milliseconds, for every call (token included).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect timeout, milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long before BeTrust's `expires_in` a cached token stops being used, seconds.
    #[serde(default = "default_token_margin_seconds")]
    pub token_margin_seconds: u64,
}

fn default_auth_base_url() -> String {
    "https://atenea-tst.trust.lat".into()
}
fn default_token_path() -> String {
    "/oauth/token/".into()
}
fn default_api_base_url() -> String {
    "https://api-tst.trust.lat/transaction-engine/v1".into()
}
fn default_authorization_method() -> String {
    "kyc_register".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_token_margin_seconds() -> u64 {
    60
}

impl BetrustConfig {
    /// A config with the pinned defaults and the three values every account needs, for code that
    /// builds a provider without a policy file (the sandbox first run, tests).
    pub fn new(client_id: &str, client_secret: SecretString, company_id: &str) -> Self {
        Self {
            auth_base_url: default_auth_base_url(),
            token_path: default_token_path(),
            api_base_url: default_api_base_url(),
            client_id: client_id.into(),
            client_secret,
            company_id: company_id.into(),
            authorization_method: default_authorization_method(),
            tries: None,
            expiration_seconds: None,
            flow: Map::new(),
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            token_margin_seconds: default_token_margin_seconds(),
        }
    }
}

/// A cached bearer token. The generation number identifies it without exposing the secret, so a
/// 401 evicts only the token that failed.
struct BearerToken {
    secret: SecretString,
    generation: u64,
    time_to_live: Duration,
}

/// Per-entry expiry: each token lives its own `expires_in - margin`.
struct TokenExpiry;

impl moka::Expiry<(), Arc<BearerToken>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &(),
        token: &Arc<BearerToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(token.time_to_live)
    }
}

/// One configured BeTrust account, usable by the gateway as a [`Provider`].
pub struct BetrustProvider {
    name: String,
    config: BetrustConfig,
    http: reqwest::Client,
    token_url: Url,
    transactions_url: Url,
    /// One entry at most (key `()`): this instance's token.
    tokens: Cache<(), Arc<BearerToken>>,
    next_generation: AtomicU64,
}

impl fmt::Debug for BetrustProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BetrustProvider")
            .field("name", &self.name)
            .field("api_base_url", &self.config.api_base_url)
            .finish_non_exhaustive()
    }
}

fn invalid_config(message: String) -> ProviderError {
    ProviderError::Config(message)
}

impl AdapterConfig for BetrustConfig {
    const KIND: &'static str = "betrust";
    const SECRETS: &'static [&'static str] = &["client_secret"];

    fn build(
        self,
        name: &str,
        outbound: &Outbound,
    ) -> Result<std::sync::Arc<dyn Provider>, ProviderError> {
        Ok(std::sync::Arc::new(BetrustProvider::new(
            name, self, outbound,
        )?))
    }
}

/// `base` with `segments` appended as path segments (percent-encoded, so an id cannot climb out of
/// its path).
fn join_segments(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

/// The token call starts no transaction: whatever became of it, nothing was created.
fn not_started(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::Ambiguous(why) => ProviderError::Unavailable(why),
        other => other,
    }
}

/// What a request was for, to choose the words of an error.
#[derive(Clone, Copy)]
enum Call {
    Create,
    Read,
    Identity,
}

impl Call {
    fn what(self) -> &'static str {
        match self {
            Call::Create => "BeTrust's create-transaction answer",
            Call::Read => "BeTrust's transaction answer",
            Call::Identity => "BeTrust's credential_information answer",
        }
    }
}

/// Maps an unsuccessful API status to an error (401 and 409 are handled by the callers first).
fn api_error(status: StatusCode, body: &[u8], call: Call) -> ProviderError {
    // 429 and 503 say the request was not taken; another 5xx may come after the work was done.
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        return ProviderError::Unavailable(format!("BeTrust answered HTTP {}", status.as_u16()));
    }
    if status.is_server_error() {
        return ProviderError::Ambiguous(format!("BeTrust answered HTTP {}", status.as_u16()));
    }
    if status == StatusCode::UNAUTHORIZED {
        return ProviderError::Unauthorized;
    }
    if status == StatusCode::NOT_FOUND && !matches!(call, Call::Create) {
        return ProviderError::NotFound;
    }
    if status.is_client_error() {
        let code = serde_json::from_slice::<Envelope<Value>>(body)
            .ok()
            .and_then(|e| e.code)
            .unwrap_or(status.as_u16())
            .to_string();
        let message = match (status, call) {
            (StatusCode::BAD_REQUEST, Call::Create) => {
                "BeTrust refused the transaction as invalid: check company_id, authorization_method \
                 and the flow settings of this provider"
            }
            (StatusCode::FORBIDDEN, Call::Create) => {
                "BeTrust's client lacks the engine.transaction.w scope needed to create transactions"
            }
            (StatusCode::FORBIDDEN, _) => {
                "BeTrust's client lacks the engine.transaction.r scope needed to read transactions"
            }
            (StatusCode::NOT_FOUND, _) => {
                "BeTrust has no create-transaction endpoint at the configured api_base_url"
            }
            _ => "BeTrust refused the request",
        };
        return ProviderError::Rejected {
            code,
            message: message.into(),
        };
    }
    ProviderError::BadResponse(format!(
        "BeTrust answered an unexpected HTTP {}",
        status.as_u16()
    ))
}

impl BetrustProvider {
    /// Builds the provider instance `name` (the policy's name for it, used in logs) from its config.
    /// Makes no network call: the first token is fetched by the first API call.
    pub fn new(
        name: &str,
        config: BetrustConfig,
        outbound: &Outbound,
    ) -> Result<Self, ProviderError> {
        let within = |value: u64, range: std::ops::RangeInclusive<u64>| range.contains(&value);
        if !within(config.timeout_ms, 1..=600_000)
            || !within(config.connect_timeout_ms, 1..=600_000)
        {
            return Err(invalid_config(
                "timeout_ms and connect_timeout_ms must be from 1 to 600000 (milliseconds)".into(),
            ));
        }
        if config.tries.is_some_and(|t| !within(u64::from(t), 1..=100)) {
            return Err(invalid_config("tries must be from 1 to 100".into()));
        }
        if config
            .expiration_seconds
            .is_some_and(|e| !within(u64::from(e), 1..=2_592_000))
        {
            return Err(invalid_config(
                "expiration_seconds must be from 1 to 2592000 (30 days)".into(),
            ));
        }
        if config.token_margin_seconds > 86_400 {
            return Err(invalid_config(
                "token_margin_seconds must be from 0 to 86400 (a day)".into(),
            ));
        }
        let auth_base = base_url(&config.auth_base_url, "auth_base_url", outbound)?;
        let token_url = {
            let mut base = auth_base.as_str().trim_end_matches('/').to_string();
            let path = config.token_path.trim();
            if !path.starts_with('/') {
                base.push('/');
            }
            base.push_str(path);
            base_url(&base, "token_path", outbound)?
        };
        let api_base = base_url(&config.api_base_url, "api_base_url", outbound)?;
        let transactions_url = join_segments(&api_base, &["transactions"]);
        // No redirects, and only addresses the outbound rule permits, at every connection.
        let http = outbound
            .client_builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|_| invalid_config("could not build the HTTP client".into()))?;
        let tokens = Cache::builder()
            .max_capacity(1)
            .expire_after(TokenExpiry)
            .build();
        Ok(Self {
            name: name.into(),
            config,
            http,
            token_url,
            transactions_url,
            tokens,
            next_generation: AtomicU64::new(1),
        })
    }

    fn transaction_url(&self, reference: &str, tail: Option<&str>) -> Url {
        match tail {
            Some(tail) => join_segments(&self.transactions_url, &[reference, tail]),
            None => join_segments(&self.transactions_url, &[reference]),
        }
    }

    /// The cached token, or a fresh one shared by every caller that finds none. Counted as
    /// `kyc_provider_tokens_total{provider, source = "cache" | "fetched"}`.
    async fn token(&self) -> Result<Arc<BearerToken>, ProviderError> {
        let fetched = std::sync::atomic::AtomicBool::new(false);
        let token = self
            .tokens
            .try_get_with((), async {
                fetched.store(true, std::sync::atomic::Ordering::Relaxed);
                self.fetch_token().await.map_err(not_started)
            })
            .await
            .map_err(|e| (*e).clone())?;
        let source = if fetched.into_inner() {
            "fetched"
        } else {
            "cache"
        };
        metrics::counter!(
            "kyc_provider_tokens_total",
            "provider" => self.name.clone(),
            "source" => source
        )
        .increment(1);
        Ok(token)
    }

    async fn fetch_token(&self) -> Result<Arc<BearerToken>, ProviderError> {
        let span = tracing::info_span!("betrust.token", provider = %self.name, http.status = tracing::field::Empty);
        async {
            let body = TokenRequest {
                client_id: &self.config.client_id,
                client_secret: self.config.client_secret.expose_secret(),
                grant_type: "client_credentials",
            };
            let Answer {
                status,
                body: bytes,
            } = send(
                self.http.post(self.token_url.clone()).json(&body),
                "BeTrust",
            )
            .await?;
            tracing::Span::current().record("http.status", status.as_u16());
            match status {
                s if s.is_success() => {}
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    tracing::warn!("BeTrust refused the client credentials");
                    return Err(ProviderError::Unauthorized);
                }
                s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                    return Err(ProviderError::Unavailable(format!(
                        "BeTrust's token endpoint answered HTTP {}",
                        s.as_u16()
                    )));
                }
                StatusCode::NOT_FOUND => {
                    return Err(ProviderError::Rejected {
                        code: "404".into(),
                        message: "BeTrust has no token endpoint at the configured auth_base_url \
                                  and token_path"
                            .into(),
                    });
                }
                s => {
                    return Err(ProviderError::BadResponse(format!(
                        "BeTrust's token endpoint answered an unexpected HTTP {}",
                        s.as_u16()
                    )));
                }
            }
            let answer: TokenAnswer = transformers::parse_json(&bytes, "BeTrust's token answer")?;
            if answer.access_token.expose_secret().is_empty() {
                return Err(ProviderError::BadResponse(
                    "BeTrust's token answer has an empty access_token".into(),
                ));
            }
            let time_to_live = Duration::from_secs(
                answer
                    .expires_in
                    .saturating_sub(self.config.token_margin_seconds),
            );
            let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                expires_in = answer.expires_in,
                cached_for_secs = time_to_live.as_secs(),
                "fetched a BeTrust token"
            );
            Ok(Arc::new(BearerToken {
                secret: answer.access_token,
                generation,
                time_to_live,
            }))
        }
        .instrument(span)
        .await
    }

    /// Drops `token` from the cache unless another call already replaced it.
    async fn evict(&self, token: &BearerToken) {
        let generation = token.generation;
        self.tokens
            .entry(())
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if entry.value().generation == generation => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        token: &BearerToken,
    ) -> Result<(StatusCode, Vec<u8>), ProviderError> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token.secret.expose_secret())
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let answer = send(request, "BeTrust").await?;
        Ok((answer.status, answer.body))
    }

    /// Sends an API request with the cached token; on a 401, evicts that token, fetches one new
    /// token and retries once. A second 401 means our credentials are not accepted.
    async fn send_authorized(
        &self,
        method: Method,
        url: Url,
        body: Option<&[u8]>,
    ) -> Result<(StatusCode, Vec<u8>), ProviderError> {
        let token = self.token().await?;
        let (status, bytes) = self.send_once(&method, &url, body, &token).await?;
        if status != StatusCode::UNAUTHORIZED {
            return Ok((status, bytes));
        }
        tracing::info!("BeTrust refused the cached token; fetching a new one");
        self.evict(&token).await;
        let token = self.token().await?;
        let (status, bytes) = self.send_once(&method, &url, body, &token).await?;
        if status == StatusCode::UNAUTHORIZED {
            tracing::warn!("BeTrust refused a fresh token");
            return Err(ProviderError::Unauthorized);
        }
        Ok((status, bytes))
    }

    /// Reads a transaction by uuid or by our `transaction_id` (BeTrust accepts both).
    async fn read_transaction(&self, reference: &str) -> Result<Transaction, ProviderError> {
        let (status, bytes) = self
            .send_authorized(Method::GET, self.transaction_url(reference, None), None)
            .await?;
        tracing::Span::current().record("http.status", status.as_u16());
        if !status.is_success() {
            return Err(api_error(status, &bytes, Call::Read));
        }
        transformers::parse_envelope_data(&bytes, Call::Read.what())
    }

    /// The transaction `request`'s key started, checked to be that request's: its
    /// `transaction_id` is the key, and the national id it was started for (`metadata.nin`) is
    /// the request's, unless the request is a lookup that holds none.
    fn ours(
        transaction: Transaction,
        request: &CreateRequest,
    ) -> Result<ProviderVerification, ProviderError> {
        if transaction.transaction_id.as_deref() != Some(request.idempotency_key.as_str()) {
            return Err(ProviderError::NotOurs(
                "BeTrust answered a transaction with another transaction_id".into(),
            ));
        }
        if !request.subject_partial {
            let stored = transaction
                .metadata
                .as_ref()
                .and_then(|m| m.expose().get("nin"))
                .and_then(Value::as_str);
            let asked = request
                .subject
                .national_id
                .as_ref()
                .map(|n| n.expose().as_str());
            if stored != asked {
                return Err(ProviderError::NotOurs(
                    "BeTrust's transaction under this transaction_id was started for another \
                     national id"
                        .into(),
                ));
            }
        }
        ProviderVerification::try_from(transaction)
    }
}

#[async_trait]
impl Provider for BetrustProvider {
    fn kind(&self) -> &'static str {
        "betrust"
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderVerification, ProviderError> {
        let span = tracing::info_span!(
            "betrust.create",
            provider = %self.name,
            transaction = tracing::field::Empty,
            http.status = tracing::field::Empty,
        );
        async {
            if request.redirect_url.is_some() {
                tracing::warn!("BeTrust offers no redirect after the flow; redirect_url not sent");
            }
            let body = CreateTransactionRequest::new(request, &self.config);
            let body = serde_json::to_vec(&body).map_err(|_| {
                ProviderError::BadResponse("could not encode the create-transaction body".into())
            })?;
            let (status, bytes) = self
                .send_authorized(Method::POST, self.transactions_url.clone(), Some(&body))
                .await?;
            tracing::Span::current().record("http.status", status.as_u16());
            let verification = if status == StatusCode::CONFLICT {
                tracing::info!("transaction_id already used at BeTrust; reading the existing one");
                let existing = self
                    .read_transaction(&request.idempotency_key)
                    .await
                    .map_err(|e| match e {
                        ProviderError::NotFound => ProviderError::Rejected {
                            code: "409".into(),
                            message: "BeTrust reports this transaction_id as used but cannot \
                                      find its transaction"
                                .into(),
                        },
                        // The transaction exists: failing to read it leaves it to resolve.
                        ProviderError::Unavailable(why) => ProviderError::Ambiguous(why),
                        other => other,
                    })?;
                Self::ours(existing, request)?
            } else if status.is_success() {
                let transaction: Transaction =
                    transformers::parse_envelope_data(&bytes, Call::Create.what())?;
                ProviderVerification::try_from(transaction)?
            } else {
                return Err(api_error(status, &bytes, Call::Create));
            };
            tracing::Span::current().record(
                "transaction",
                tracing::field::display(&verification.provider_reference),
            );
            // DEBUG: the gateway logs the verification it started from this at INFO.
            tracing::debug!(status = %verification.status, "BeTrust transaction ready");
            Ok(verification)
        }
        .instrument(span)
        .await
    }

    async fn get(&self, provider_reference: &str) -> Result<ProviderVerification, ProviderError> {
        let span = tracing::info_span!(
            "betrust.get",
            provider = %self.name,
            transaction = %provider_reference,
            http.status = tracing::field::Empty,
        );
        async { ProviderVerification::try_from(self.read_transaction(provider_reference).await?) }
            .instrument(span)
            .await
    }

    fn create_is_idempotent(&self) -> bool {
        true
    }

    /// The link's lifetime (`expiration`, BeTrust's default 600 s): a transaction whose link
    /// lapsed without a result never gets one.
    fn session_lifetime(&self) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(
            self.config.expiration_seconds.unwrap_or(600),
        )))
    }

    async fn find_created(&self, request: &CreateRequest) -> Result<Found, ProviderError> {
        let span = tracing::info_span!(
            "betrust.find_created",
            provider = %self.name,
            http.status = tracing::field::Empty,
        );
        async {
            match self.read_transaction(&request.idempotency_key).await {
                Ok(transaction) => Ok(Found::Created(Box::new(Self::ours(transaction, request)?))),
                Err(ProviderError::NotFound) => Ok(Found::Absent),
                Err(other) => Err(other),
            }
        }
        .instrument(span)
        .await
    }

    async fn identity(&self, provider_reference: &str) -> Result<Identity, ProviderError> {
        let span = tracing::info_span!(
            "betrust.identity",
            provider = %self.name,
            transaction = %provider_reference,
            http.status = tracing::field::Empty,
        );
        async {
            let url = self.transaction_url(provider_reference, Some("credential_information"));
            let (status, bytes) = self.send_authorized(Method::GET, url, None).await?;
            tracing::Span::current().record("http.status", status.as_u16());
            if !status.is_success() {
                return Err(api_error(status, &bytes, Call::Identity));
            }
            let credential: CredentialInformation =
                transformers::parse_envelope_data(&bytes, Call::Identity.what())?;
            Identity::try_from(credential)
        }
        .instrument(span)
        .await
    }

    fn verify_webhook(&self, webhook: IncomingWebhook<'_>) -> Result<String, WebhookError> {
        let body: WebhookBody = serde_json::from_slice(webhook.body).map_err(|e| {
            WebhookError::BadBody(transformers::describe_json_error(
                &e,
                "BeTrust's webhook body",
            ))
        })?;
        let uuid = body.uuid.trim();
        if uuid.is_empty() {
            return Err(WebhookError::BadBody(
                "BeTrust's webhook body has an empty uuid".into(),
            ));
        }
        Ok(uuid.to_string())
    }
}
