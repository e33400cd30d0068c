//! BeTrust's wire format and its conversions to and from the normalized model.
//!
//! Everything that knows the shape of a BeTrust JSON body lives here; the client in `lib.rs` only
//! moves bytes. Unknown fields in BeTrust's answers are ignored on purpose (the provider adds fields
//! without notice); the fields this adapter reads are typed, and a missing or mistyped one is a
//! [`ProviderError::BadResponse`].
//!
//! # Status mapping
//!
//! BeTrust reports state as three booleans plus two codes whose lists are not public: `step`
//! (StepCode) and `issue_description` (IssueCode). The booleans decide the status; `step` only
//! splits the rows the booleans leave open. Steps are compared ignoring ASCII case, and an empty step
//! counts as no step.
//!
//! | `failed` | `complete` | `active` | `step`                  | status        | reason code           |
//! |----------|------------|----------|-------------------------|---------------|-----------------------|
//! | true     | any        | any      | any                     | `rejected`    | `verification_failed` |
//! | false    | true       | any      | any                     | `approved`    | `verification_passed` |
//! | false    | false      | true     | none or `Session_start` | `pending`     | `not_started`         |
//! | false    | false      | true     | `Manual_review`         | `in_review`   | `manual_review`       |
//! | false    | false      | true     | any other               | `in_progress` | `in_progress`         |
//! | false    | false      | false    | `Abandoned`             | `abandoned`   | `abandoned`           |
//! | false    | false      | false    | `Cancelled`             | `cancelled`   | `cancelled`           |
//! | false    | false      | false    | none or any other       | `expired`     | `link_inactive`       |
//!
//! Every row yields a [`Reason`]:
//! - `provider_code` is BeTrust's most specific code, verbatim: `issue_description` when present,
//!   else `step` (`None` when BeTrust gives neither);
//! - `message` is our short text followed by both codes as `step=X;issue=Y` (absent parts left
//!   out), so neither code is lost.
//!
//! # Decision
//!
//! Only final verdicts carry a [`Decision`]:
//! - `approved`: document, liveness and face match pass; AML passes when the transaction's
//!   `metadata.fraud_check` was `true`, else it is unknown (BeTrust did not screen).
//! - `rejected`: face match fails when `issue_description` mentions "face" (any case); every other
//!   check is unknown, since BeTrust names one issue only.
//! - `scores.face_match` is `verification_result.selfie_document_match`, already on a 0-100 scale.
//!
//! `expires_at` is `created_at + expiration` seconds; `verification_url` is `validator_url`.
//!
//! # Create request
//!
//! `metadata` starts from the configured flow rules ([`BetrustConfig::flow`]); the request then sets
//! `country` (ISO alpha-2 turned into BeTrust's country name, see [`betrust_country`]), `nin` (the
//! subject's national id, when given), `document_verification` and `require_document_validation`
//! (both = `checks.document`) and `fraud_check` (= `checks.aml`), overriding the flow's values for
//! those keys. BeTrust has no switch for liveness or face match: its flow always runs both.

use crate::BetrustConfig;
use chrono::{DateTime, NaiveDate, Utc};
use kyc_core::{
    CheckOutcome, CreateRequest, Decision, Identity, Personal, ProviderError, ProviderVerification,
    Reason, Scores, Status,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The OAuth2 `client_credentials` request BeTrust's token endpoint takes as a JSON body.
///
/// Borrowed, so the secret is exposed only for the time it takes to serialize it; no `Debug`, so it
/// cannot be printed.
#[derive(Serialize)]
pub struct TokenRequest<'a> {
    /// The client id BeTrust hands out per environment.
    pub client_id: &'a str,
    /// The matching secret.
    pub client_secret: &'a str,
    /// Always `client_credentials`.
    pub grant_type: &'static str,
}

/// BeTrust's token answer.
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    /// The bearer token; secret, never printed.
    pub access_token: SecretString,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Lifetime in seconds (7200 in the docs): drives how long the adapter caches the token.
    pub expires_in: u64,
    /// Granted scopes (the docs show an empty string).
    #[serde(default)]
    pub scope: Option<String>,
    /// Issue time, unix seconds. Not used: the adapter measures the lifetime on its own clock.
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// The wrapper around every BeTrust API answer, errors included (`data` is then null).
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    /// BeTrust's code: the HTTP status, repeated.
    #[serde(default)]
    pub code: Option<u16>,
    /// What the answer is about (`Transaction`, `User Credential`, `Auth`).
    #[serde(default)]
    pub resource: Option<String>,
    /// The payload; null (or absent) on errors.
    pub data: Option<T>,
    /// BeTrust's short message (`Found`, `Duplicated`, `Not found`). Never passed on to callers.
    #[serde(default)]
    pub message: Option<String>,
}

/// The body of `POST /transactions`, with every field BeTrust documents.
///
/// Personal values (`user_email`, and `nin` inside `metadata`) are [`Personal`], so a `{:?}` of this
/// struct prints none of them.
#[derive(Debug, Serialize)]
pub struct CreateTransactionRequest {
    /// Our id for the transaction, unique per `company_id`: BeTrust's idempotency key.
    pub transaction_id: String,
    /// The BeTrust company the transaction belongs to.
    pub company_id: String,
    /// Validation method (`kyc_register`, `kyc_register_simple`, `sms`, `email`, `fido2`,
    /// `bioidentity`).
    pub authorization_method: String,
    /// Attempts allowed to the person (BeTrust's default: 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
    /// Link lifetime in seconds (BeTrust's default: 600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u32>,
    /// Where BeTrust posts state changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Scope of the transaction, as BeTrust names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Our id for the person (the caller's opaque subject id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A BeTrust client id the transaction is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Who created the transaction, in BeTrust's user terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator_user_id: Option<String>,
    /// BeTrust clients allowed to act on the transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_clients: Option<Vec<String>>,
    /// Asks BeTrust for a 6-character nanoid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nanoid: Option<bool>,
    /// The person's email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_email: Option<Personal<String>>,
    /// A link template with placeholders, for BeTrust to send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The flow rules (liveness, document checks, anti-fraud, country, nin...).
    pub metadata: Personal<Map<String, Value>>,
}

impl CreateTransactionRequest {
    /// Builds the create body from the gateway's request and this provider instance's config, as
    /// described in the module docs.
    pub fn new(request: &CreateRequest, config: &BetrustConfig) -> Self {
        let mut metadata = config.flow.clone();
        metadata.insert(
            "country".into(),
            Value::String(betrust_country(&request.subject.country)),
        );
        if let Some(nin) = &request.subject.national_id {
            metadata.insert("nin".into(), Value::String(nin.expose().clone()));
        }
        metadata.insert(
            "document_verification".into(),
            Value::Bool(request.checks.document),
        );
        metadata.insert(
            "require_document_validation".into(),
            Value::Bool(request.checks.document),
        );
        metadata.insert("fraud_check".into(), Value::Bool(request.checks.aml));
        Self {
            transaction_id: request.idempotency_key.clone(),
            company_id: config.company_id.clone(),
            authorization_method: config.authorization_method.clone(),
            tries: config.tries,
            expiration: config.expiration_seconds,
            webhook: request.webhook_url.clone(),
            scope: None,
            user_id: Some(request.subject.id.clone()),
            client_id: None,
            creator_user_id: None,
            allowed_clients: None,
            nanoid: None,
            user_email: request.subject.email.clone(),
            link: None,
            metadata: Personal::new(metadata),
        }
    }
}

/// BeTrust's country name for an ISO 3166-1 alpha-2 code (`CL` -> `CHILE`); a code BeTrust's docs do
/// not name is passed through upper-cased, for BeTrust to accept or refuse.
pub fn betrust_country(iso_alpha2: &str) -> String {
    let code = iso_alpha2.trim().to_ascii_uppercase();
    let name = match code.as_str() {
        "CL" => "CHILE",
        "AR" => "ARGENTINA",
        "PE" => "PERU",
        "CO" => "COLOMBIA",
        "MX" => "MEXICO",
        "EC" => "ECUADOR",
        "UY" => "URUGUAY",
        "BO" => "BOLIVIA",
        "PY" => "PARAGUAY",
        "BR" => "BRASIL",
        _ => return code,
    };
    name.to_string()
}

/// A BeTrust transaction, as create and get return it (the fields this adapter reads).
#[derive(Debug, Deserialize)]
pub struct Transaction {
    /// BeTrust's id: the provider reference the gateway keeps.
    pub uuid: String,
    /// Our idempotency key, echoed.
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// Our subject id, echoed.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The BeTrust company.
    #[serde(default)]
    pub company_id: Option<String>,
    /// The validation method.
    #[serde(default)]
    pub authorization_method: Option<String>,
    /// The link still works and the flow is not over.
    pub active: bool,
    /// The flow ended with the identity confirmed.
    pub complete: bool,
    /// The flow ended with the identity not confirmed.
    pub failed: bool,
    /// When BeTrust created it.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Last change at BeTrust.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Link lifetime in seconds.
    #[serde(default)]
    pub expiration: Option<u64>,
    /// Attempts allowed.
    #[serde(default)]
    pub tries: Option<u32>,
    /// The link to hand to the person.
    #[serde(default)]
    pub validator_url: Option<String>,
    /// The flow rules, echoed (holds the national id: personal).
    #[serde(default)]
    pub metadata: Option<Personal<Map<String, Value>>>,
    /// The webhook URL, echoed.
    #[serde(default)]
    pub webhook: Option<String>,
    /// The person's email, echoed when it was sent.
    #[serde(default)]
    pub user_email: Option<Personal<String>>,
    /// Biometric results, once there are some.
    #[serde(default)]
    pub verification_result: Option<VerificationResult>,
    /// Why it failed (IssueCode).
    #[serde(default)]
    pub issue_description: Option<String>,
    /// Where the flow is (StepCode).
    #[serde(default)]
    pub step: Option<String>,
}

/// BeTrust's biometric results.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct VerificationResult {
    /// Selfie-to-document similarity, 0-100.
    #[serde(default)]
    pub selfie_document_match: Option<f64>,
}

/// The compact body BeTrust posts to the webhook URL. Unsigned, and only a hint: the gateway
/// re-reads the transaction before trusting any state.
#[derive(Debug, Deserialize)]
pub struct WebhookBody {
    /// The transaction concerned.
    pub uuid: String,
    /// Our idempotency key.
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// The BeTrust company.
    #[serde(default)]
    pub company_id: Option<String>,
    /// The validation method.
    #[serde(default)]
    pub authorization_method: Option<String>,
    /// See [`Transaction::active`].
    #[serde(default)]
    pub active: Option<bool>,
    /// See [`Transaction::complete`].
    #[serde(default)]
    pub complete: Option<bool>,
    /// See [`Transaction::failed`].
    #[serde(default)]
    pub failed: Option<bool>,
    /// When the state changed.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Biometric results, if any.
    #[serde(default)]
    pub verification_result: Option<VerificationResult>,
}

/// The document data of a finished transaction (`GET .../credential_information`). Every value is
/// personal and wrapped as such.
#[derive(Debug, Deserialize)]
pub struct CredentialInformation {
    /// Given name(s).
    #[serde(default)]
    pub name: Option<Personal<String>>,
    /// Family name(s).
    #[serde(default)]
    pub last_name: Option<Personal<String>>,
    /// Birth date as `dd/mm/yyyy`.
    #[serde(default)]
    pub date_birth: Option<Personal<String>>,
    /// National id.
    #[serde(default)]
    pub nin: Option<Personal<String>>,
    /// Document number.
    #[serde(default)]
    pub document_number: Option<Personal<String>>,
    /// BeTrust's identity-verification score, 0-100.
    #[serde(default)]
    pub identity_verification_score: Option<f64>,
}

impl TryFrom<CredentialInformation> for Identity {
    type Error = ProviderError;

    /// Fails only on a birth date that is not `dd/mm/yyyy`; the error never quotes the date.
    fn try_from(c: CredentialInformation) -> Result<Self, Self::Error> {
        let date_of_birth = match c.date_birth.as_ref().map(|d| d.expose().trim()) {
            None | Some("") => None,
            Some(text) => Some(Personal::new(
                NaiveDate::parse_from_str(text, "%d/%m/%Y").map_err(|_| {
                    ProviderError::BadResponse(
                        "credential_information date_birth is not a dd/mm/yyyy date".into(),
                    )
                })?,
            )),
        };
        Ok(Identity {
            first_name: non_empty(c.name),
            last_name: non_empty(c.last_name),
            date_of_birth,
            national_id: non_empty(c.nin),
            document_number: non_empty(c.document_number),
            document_type: None,
            nationality: None,
            score: c.identity_verification_score,
        })
    }
}

fn non_empty(value: Option<Personal<String>>) -> Option<Personal<String>> {
    value.filter(|v| !v.expose().trim().is_empty())
}

/// One row of the status table in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    status: Status,
    code: &'static str,
    text: &'static str,
}

/// The status table of the module docs, as one exhaustive match: a new combination cannot slip
/// through a default arm.
fn status_row(failed: bool, complete: bool, active: bool, step: Option<&str>) -> Row {
    let step = step
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase);
    let row = |status, code, text| Row { status, code, text };
    match (failed, complete, active, step.as_deref()) {
        (true, _, _, _) => row(
            Status::Rejected,
            "verification_failed",
            "the person did not pass BeTrust's verification",
        ),
        (false, true, _, _) => row(
            Status::Approved,
            "verification_passed",
            "BeTrust confirmed the identity",
        ),
        (false, false, true, None | Some("session_start")) => row(
            Status::Pending,
            "not_started",
            "the person has not started the flow",
        ),
        (false, false, true, Some("manual_review")) => row(
            Status::InReview,
            "manual_review",
            "BeTrust is reviewing the verification by hand",
        ),
        (false, false, true, Some(_)) => row(
            Status::InProgress,
            "in_progress",
            "the person is going through the flow",
        ),
        (false, false, false, Some("abandoned")) => row(
            Status::Abandoned,
            "abandoned",
            "the person gave up the flow",
        ),
        (false, false, false, Some("cancelled")) => row(
            Status::Cancelled,
            "cancelled",
            "the verification was cancelled at BeTrust",
        ),
        (false, false, false, _) => row(
            Status::Expired,
            "link_inactive",
            "the link is no longer active and the flow did not finish",
        ),
    }
}

/// Both BeTrust codes as `step=X;issue=Y`, absent parts left out; `None` when there is neither.
fn provider_codes(step: Option<&str>, issue: Option<&str>) -> Option<String> {
    let parts: Vec<String> = [("step", step), ("issue", issue)]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(";"))
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Transaction {
    /// The normalized status and reason, per the table in the module docs.
    pub fn status_and_reason(&self) -> (Status, Reason) {
        let step = present(&self.step);
        let issue = present(&self.issue_description);
        let row = status_row(self.failed, self.complete, self.active, step);
        let message = match provider_codes(step, issue) {
            Some(codes) => format!("{} ({codes})", row.text),
            None => row.text.to_string(),
        };
        let reason = Reason {
            code: row.code.to_string(),
            provider_code: issue.or(step).map(str::to_string),
            message: Some(message),
        };
        (row.status, reason)
    }

    /// Whether the create request asked BeTrust for its anti-fraud check.
    fn fraud_checked(&self) -> bool {
        self.metadata
            .as_ref()
            .and_then(|m| m.expose().get("fraud_check"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Per-check outcomes for a final verdict, per the module docs; `None` otherwise.
    pub fn decision(&self, status: Status) -> Option<Decision> {
        let scores = Scores {
            document: None,
            liveness: None,
            face_match: self
                .verification_result
                .and_then(|r| r.selfie_document_match),
        };
        match status {
            Status::Approved => Some(Decision {
                document: CheckOutcome::Pass,
                liveness: CheckOutcome::Pass,
                face_match: CheckOutcome::Pass,
                aml: if self.fraud_checked() {
                    CheckOutcome::Pass
                } else {
                    CheckOutcome::Unknown
                },
                scores,
            }),
            Status::Rejected => {
                let about_face = present(&self.issue_description)
                    .is_some_and(|i| i.to_ascii_lowercase().contains("face"));
                Some(Decision {
                    document: CheckOutcome::Unknown,
                    liveness: CheckOutcome::Unknown,
                    face_match: if about_face {
                        CheckOutcome::Fail
                    } else {
                        CheckOutcome::Unknown
                    },
                    aml: CheckOutcome::Unknown,
                    scores,
                })
            }
            Status::Pending
            | Status::InProgress
            | Status::InReview
            | Status::Expired
            | Status::Abandoned
            | Status::Cancelled => None,
        }
    }
}

impl TryFrom<Transaction> for ProviderVerification {
    type Error = ProviderError;

    /// Fails only when BeTrust gives no uuid (the one thing the gateway cannot do without).
    fn try_from(t: Transaction) -> Result<Self, Self::Error> {
        if t.uuid.trim().is_empty() {
            return Err(ProviderError::BadResponse(
                "the transaction has an empty uuid".into(),
            ));
        }
        let (status, reason) = t.status_and_reason();
        let decision = t.decision(status);
        let expires_at = match (t.created_at, t.expiration) {
            (Some(created), Some(seconds)) => i64::try_from(seconds)
                .ok()
                .and_then(chrono::TimeDelta::try_seconds)
                .and_then(|d| created.checked_add_signed(d)),
            _ => None,
        };
        Ok(ProviderVerification {
            provider_reference: t.uuid,
            status,
            reason: Some(reason),
            verification_url: t.validator_url.filter(|u| !u.trim().is_empty()),
            expires_at,
            decision,
            subject_ref: None,
        })
    }
}

/// Reads a JSON body into `T`, turning a failure into a [`ProviderError::BadResponse`] that names
/// only `what` and the position: serde's own message can quote the offending value, which may be
/// personal.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ProviderError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ProviderError::BadResponse(describe_json_error(&e, what)))
}

/// A description of a JSON error that quotes nothing from the input.
pub fn describe_json_error(e: &serde_json::Error, what: &str) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax | Category::Eof => "is not JSON",
        Category::Data => "does not have the expected fields",
    };
    format!("{what} {kind} (line {}, column {})", e.line(), e.column())
}

/// Unwraps the envelope of a successful answer; a null `data` is a [`ProviderError::BadResponse`].
pub fn parse_envelope_data<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ProviderError> {
    let envelope: Envelope<T> = parse_json(bytes, what)?;
    envelope
        .data
        .ok_or_else(|| ProviderError::BadResponse(format!("{what} has no data")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyc_core::{Checks, Subject};
    use serde_json::json;

    const TOKEN_REQUEST: &str = include_str!("../tests/fixtures/token_request.json");
    const TOKEN_ANSWER: &str = include_str!("../tests/fixtures/token_answer.json");
    const CREATE_REQUEST: &str = include_str!("../tests/fixtures/create_transaction_request.json");
    const TRANSACTION: &str = include_str!("../tests/fixtures/transaction_answer.json");
    const WEBHOOK: &str = include_str!("../tests/fixtures/webhook_compact.json");
    const CREDENTIAL: &str = include_str!("../tests/fixtures/credential_information.json");

    /// The documented transaction answer, with some of its `data` fields replaced.
    fn transaction_with(changes: Value) -> Transaction {
        let mut answer: Value = serde_json::from_str(TRANSACTION).unwrap();
        let data = answer["data"].as_object_mut().unwrap();
        for (key, value) in changes.as_object().unwrap() {
            data.insert(key.clone(), value.clone());
        }
        parse_envelope_data(answer.to_string().as_bytes(), "transaction").unwrap()
    }

    fn verification_with(changes: Value) -> ProviderVerification {
        ProviderVerification::try_from(transaction_with(changes)).unwrap()
    }

    fn state(active: bool, complete: bool, failed: bool, step: Value, issue: Value) -> Value {
        json!({"active": active, "complete": complete, "failed": failed, "step": step,
               "issue_description": issue})
    }

    #[test]
    fn documented_answer_converts() {
        // The page's example has active, complete and failed all true: failed wins.
        let v = verification_with(json!({}));
        assert_eq!(v.provider_reference, "095be615-a8ad-4c33-8e9c-c7612fbf6c9f");
        assert_eq!(v.status, Status::Rejected);
        assert_eq!(v.verification_url.as_deref(), Some("string"));
        // expiration 0: the link expires as it is created.
        assert_eq!(
            v.expires_at.unwrap().to_rfc3339(),
            "2019-08-24T14:15:22+00:00"
        );
        assert_eq!(v.decision.unwrap().scores.face_match, Some(96.052));
    }

    #[test]
    fn expires_at_is_created_at_plus_expiration() {
        let v = verification_with(json!({"expiration": 600}));
        assert_eq!(
            v.expires_at.unwrap().to_rfc3339(),
            "2019-08-24T14:25:22+00:00"
        );
        let v = verification_with(json!({"created_at": null}));
        assert_eq!(v.expires_at, None);
    }

    #[test]
    fn row_failed_is_rejected_with_issue_as_provider_code() {
        let v = verification_with(state(
            false,
            false,
            true,
            json!("Finished"),
            json!("Face_mismatch"),
        ));
        assert_eq!(v.status, Status::Rejected);
        let reason = v.reason.unwrap();
        assert_eq!(reason.code, "verification_failed");
        assert_eq!(reason.provider_code.as_deref(), Some("Face_mismatch"));
        assert!(
            reason
                .message
                .unwrap()
                .contains("step=Finished;issue=Face_mismatch")
        );
        let d = v.decision.unwrap();
        assert_eq!(d.face_match, CheckOutcome::Fail);
        assert_eq!(d.document, CheckOutcome::Unknown);
        assert_eq!(d.liveness, CheckOutcome::Unknown);
        assert_eq!(d.aml, CheckOutcome::Unknown);
    }

    #[test]
    fn row_failed_without_issue_uses_step_and_leaves_face_match_unknown() {
        for (active, complete) in [(true, false), (false, true), (true, true)] {
            let v = verification_with(state(
                active,
                complete,
                true,
                json!("Document_capture"),
                Value::Null,
            ));
            assert_eq!(v.status, Status::Rejected);
            let reason = v.reason.unwrap();
            assert_eq!(reason.provider_code.as_deref(), Some("Document_capture"));
            assert_eq!(v.decision.unwrap().face_match, CheckOutcome::Unknown);
        }
    }

    #[test]
    fn row_complete_is_approved_and_aml_follows_fraud_check() {
        let mut changes = state(false, true, false, json!("Finished"), Value::Null);
        changes["metadata"] = json!({"fraud_check": true});
        let v = verification_with(changes);
        assert_eq!(v.status, Status::Approved);
        assert_eq!(v.reason.as_ref().unwrap().code, "verification_passed");
        assert_eq!(v.reason.unwrap().provider_code.as_deref(), Some("Finished"));
        let d = v.decision.unwrap();
        assert_eq!(
            (d.document, d.liveness, d.face_match, d.aml),
            (
                CheckOutcome::Pass,
                CheckOutcome::Pass,
                CheckOutcome::Pass,
                CheckOutcome::Pass
            )
        );
        assert_eq!(d.scores.face_match, Some(96.052));

        // The documented answer's metadata has fraud_check false: BeTrust did not screen.
        let v = verification_with(state(true, true, false, json!("Finished"), Value::Null));
        assert_eq!(v.status, Status::Approved);
        assert_eq!(v.decision.unwrap().aml, CheckOutcome::Unknown);
    }

    #[test]
    fn row_active_at_session_start_or_no_step_is_pending() {
        for step in [
            json!("Session_start"),
            json!("session_start"),
            Value::Null,
            json!(""),
        ] {
            let v = verification_with(state(true, false, false, step, Value::Null));
            assert_eq!(v.status, Status::Pending);
            assert_eq!(v.reason.unwrap().code, "not_started");
            assert_eq!(v.decision, None);
        }
    }

    #[test]
    fn row_active_in_manual_review_is_in_review() {
        let v = verification_with(state(
            true,
            false,
            false,
            json!("Manual_review"),
            Value::Null,
        ));
        assert_eq!(v.status, Status::InReview);
        let reason = v.reason.unwrap();
        assert_eq!(reason.code, "manual_review");
        assert_eq!(reason.provider_code.as_deref(), Some("Manual_review"));
    }

    #[test]
    fn row_active_at_any_other_step_is_in_progress() {
        let v = verification_with(state(
            true,
            false,
            false,
            json!("Document_capture"),
            Value::Null,
        ));
        assert_eq!(v.status, Status::InProgress);
        assert_eq!(
            v.reason.unwrap().provider_code.as_deref(),
            Some("Document_capture")
        );
        assert_eq!(v.decision, None);
    }

    #[test]
    fn row_inactive_abandoned_is_abandoned() {
        let v = verification_with(state(false, false, false, json!("Abandoned"), Value::Null));
        assert_eq!(v.status, Status::Abandoned);
        assert_eq!(v.reason.unwrap().code, "abandoned");
    }

    #[test]
    fn row_inactive_cancelled_is_cancelled() {
        let v = verification_with(state(false, false, false, json!("Cancelled"), Value::Null));
        assert_eq!(v.status, Status::Cancelled);
        assert_eq!(v.reason.unwrap().code, "cancelled");
    }

    #[test]
    fn row_inactive_otherwise_is_expired_link_inactive() {
        for step in [json!("Expired"), json!("Session_start"), Value::Null] {
            let v = verification_with(state(false, false, false, step.clone(), Value::Null));
            assert_eq!(v.status, Status::Expired, "step {step}");
            let reason = v.reason.unwrap();
            assert_eq!(reason.code, "link_inactive");
            assert_eq!(reason.provider_code, step.as_str().map(str::to_string));
        }
    }

    #[test]
    fn missing_state_boolean_is_a_bad_response() {
        let mut answer: Value = serde_json::from_str(TRANSACTION).unwrap();
        answer["data"].as_object_mut().unwrap().remove("active");
        let err = parse_envelope_data::<Transaction>(answer.to_string().as_bytes(), "transaction")
            .unwrap_err();
        assert!(matches!(err, ProviderError::BadResponse(_)), "{err:?}");
    }

    #[test]
    fn null_data_is_a_bad_response() {
        let body = br#"{"code":404,"resource":"Transaction","data":null,"message":"Not found"}"#;
        let err = parse_envelope_data::<Transaction>(body, "transaction").unwrap_err();
        assert!(matches!(err, ProviderError::BadResponse(_)));
    }

    #[test]
    fn json_errors_quote_nothing_from_the_body() {
        let body = br#"{"code":200,"data":{"uuid":"x","active":"Juan Perez","complete":true,"failed":false}}"#;
        let err = parse_envelope_data::<Transaction>(body, "transaction").unwrap_err();
        assert!(!err.to_string().contains("Juan"), "{err}");
        let err = parse_json::<Transaction>(b"<html>oops", "transaction").unwrap_err();
        assert!(!err.to_string().contains("oops"), "{err}");
    }

    #[test]
    fn token_fixtures_match_the_wire_structs() {
        let request = TokenRequest {
            client_id: "<tu_client_id>",
            client_secret: "<tu_client_secret>",
            grant_type: "client_credentials",
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::from_str::<Value>(TOKEN_REQUEST).unwrap()
        );
        let answer: TokenAnswer = parse_json(TOKEN_ANSWER.as_bytes(), "token").unwrap();
        assert_eq!(answer.expires_in, 7200);
        assert_eq!(answer.token_type.as_deref(), Some("Bearer"));
        assert!(!format!("{answer:?}").contains("<access_token>"));
    }

    fn config_with_documented_flow() -> BetrustConfig {
        let mut config = BetrustConfig::new("id", "secret".into(), "201");
        config.tries = Some(3);
        config.expiration_seconds = Some(600);
        let flow = json!({
            "challenges_required": 1,
            "capture_document_expiration": 120,
            "capture_facial_expiration": 120,
            "capture_challenge_expiration": 120,
            "verify_image_authenticity": true,
            "enrolment": false,
            "fraud_check": false,
            "internal_credential_check": false
        });
        config.flow = flow.as_object().unwrap().clone();
        config
    }

    fn create_request(checks: Checks) -> CreateRequest {
        let subject: Subject = serde_json::from_value(json!({
            "id": "cus_1", "country": "cl", "national_id": "11111111-1", "email": "p@example.com"
        }))
        .unwrap();
        CreateRequest {
            idempotency_key: "order-12345".into(),
            tenant: "acme".into(),
            reference: "ref-1".into(),
            subject,
            checks,
            redirect_url: None,
            webhook_url: Some("https://gw.example/hooks/betrust-cl/tok".into()),
            subject_ref: None,
            subject_partial: false,
        }
    }

    #[test]
    fn create_request_reproduces_the_documented_example() {
        let checks = Checks {
            aml: true,
            ..Checks::default()
        };
        let body =
            CreateTransactionRequest::new(&create_request(checks), &config_with_documented_flow());
        let mut sent = serde_json::to_value(&body).unwrap();
        let mut documented: Value = serde_json::from_str(CREATE_REQUEST).unwrap();
        // Fields the page's example leaves out, which we send.
        assert_eq!(sent["user_id"], "cus_1");
        assert_eq!(sent["user_email"], "p@example.com");
        assert_eq!(sent["webhook"], "https://gw.example/hooks/betrust-cl/tok");
        for key in ["user_id", "user_email", "webhook"] {
            sent.as_object_mut().unwrap().remove(key);
        }
        // The page's example mixes the two document switches; we set both from checks.document.
        assert_eq!(sent["metadata"]["document_verification"], true);
        documented["metadata"]["document_verification"] = json!(true);
        assert_eq!(sent, documented);
    }

    #[test]
    fn create_request_checks_override_the_flow() {
        let checks = Checks {
            document: false,
            aml: false,
            ..Checks::default()
        };
        let mut config = config_with_documented_flow();
        config.flow.insert("fraud_check".into(), json!(true));
        config.tries = None;
        config.expiration_seconds = None;
        let sent = serde_json::to_value(CreateTransactionRequest::new(
            &create_request(checks),
            &config,
        ))
        .unwrap();
        assert_eq!(sent["metadata"]["fraud_check"], false);
        assert_eq!(sent["metadata"]["document_verification"], false);
        assert_eq!(sent["metadata"]["require_document_validation"], false);
        assert_eq!(sent["metadata"]["challenges_required"], 1);
        assert!(sent.get("tries").is_none() && sent.get("expiration").is_none());
    }

    #[test]
    fn create_request_debug_hides_personal_data() {
        let body = CreateTransactionRequest::new(
            &create_request(Checks::default()),
            &config_with_documented_flow(),
        );
        let printed = format!("{body:?}");
        assert!(!printed.contains("11111111"), "{printed}");
        assert!(!printed.contains("p@example.com"), "{printed}");
    }

    #[test]
    fn countries_map_to_betrust_names() {
        let pairs = [
            ("CL", "CHILE"),
            ("AR", "ARGENTINA"),
            ("PE", "PERU"),
            ("CO", "COLOMBIA"),
            ("MX", "MEXICO"),
            ("EC", "ECUADOR"),
            ("UY", "URUGUAY"),
            ("BO", "BOLIVIA"),
            ("PY", "PARAGUAY"),
            ("BR", "BRASIL"),
            ("us", "US"),
        ];
        for (code, name) in pairs {
            assert_eq!(betrust_country(code), name);
        }
    }

    #[test]
    fn webhook_fixture_names_the_transaction() {
        let body: WebhookBody = parse_json(WEBHOOK.as_bytes(), "webhook").unwrap();
        assert_eq!(body.uuid, "095be615-a8ad-4c33-8e9c-c7612fbf6c9f");
        assert_eq!(body.failed, Some(true));
    }

    #[test]
    fn credential_information_becomes_identity_with_iso_date() {
        let mut answer: Value = serde_json::from_str(CREDENTIAL).unwrap();
        answer["data"]["date_birth"] = json!("20/05/1990");
        let credential: CredentialInformation =
            parse_envelope_data(answer.to_string().as_bytes(), "credential_information").unwrap();
        let identity = Identity::try_from(credential).unwrap();
        assert_eq!(
            identity.date_of_birth.as_ref().unwrap().expose(),
            &NaiveDate::from_ymd_opt(1990, 5, 20).unwrap()
        );
        assert_eq!(identity.score, Some(99.997));
        let wire = serde_json::to_value(&identity).unwrap();
        assert_eq!(wire["date_of_birth"], "1990-05-20");
        assert_eq!(wire["first_name"], "string");
        assert_eq!(wire["last_name"], "string");
        assert_eq!(wire["national_id"], "string");
        assert_eq!(wire["document_number"], "string");
    }

    #[test]
    fn unparseable_birth_date_is_a_bad_response_that_hides_the_date() {
        // The page's own example holds the placeholder "dd/mm/yyyy".
        let credential: CredentialInformation =
            parse_envelope_data(CREDENTIAL.as_bytes(), "credential_information").unwrap();
        let err = Identity::try_from(credential).unwrap_err();
        assert!(matches!(err, ProviderError::BadResponse(_)));

        let mut answer: Value = serde_json::from_str(CREDENTIAL).unwrap();
        answer["data"]["date_birth"] = json!("1990-05-20");
        let credential: CredentialInformation =
            parse_envelope_data(answer.to_string().as_bytes(), "credential_information").unwrap();
        let err = Identity::try_from(credential).unwrap_err();
        assert!(matches!(err, ProviderError::BadResponse(_)));
        assert!(!err.to_string().contains("1990"), "{err}");
        assert!(!format!("{err:?}").contains("05-20"), "{err:?}");
    }
}
