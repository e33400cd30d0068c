//! gu1's wire format and its mapping to the normalized `kyc_core` model.
//!
//! Everything here is pure data: no HTTP, no configuration. The client in the crate root sends the
//! request structs and hands the answers to the `TryFrom` conversions below.
//!
//! Personal values in these structs (names, birth dates, tax ids, document numbers) are wrapped in
//! [`Personal`], so a `{:?}` of any wire struct prints placeholders, never the values.
//!
//! # Status
//!
//! | gu1 `status`  | [`Status`]    | [`Reason`] `code`     | `provider_code`                     |
//! |---------------|---------------|-----------------------|-------------------------------------|
//! | `pending`     | `pending`     | –                     | –                                   |
//! | `in_progress` | `in_progress` | –                     | –                                   |
//! | `in_review`   | `in_review`   | –                     | –                                   |
//! | `approved`    | `approved`    | –                     | –                                   |
//! | `rejected`    | `rejected`    | `verification_failed` | `rejected`, or `rejected/<decision.status>` |
//! | `expired`     | `expired`     | `link_expired`        | `expired` (same rule)               |
//! | `abandoned`   | `abandoned`   | `abandoned`           | `abandoned` (same rule)             |
//! | `cancelled`   | `cancelled`   | `cancelled`           | `cancelled` (same rule)             |
//! | anything else | –             | –                     | the answer is a `BadResponse`       |
//!
//! The match is exhaustive on purpose: a status gu1 adds later fails loudly instead of being
//! guessed. Matching ignores ASCII case.
//!
//! # Decision
//!
//! gu1 has shown three shapes of `decision`; all are read, the newest first, and the first one that
//! says something about a check wins:
//!
//! | check        | (c) Didit arrays (newest)             | (b) sync page objects          | (a) older page `verification_results` |
//! |--------------|---------------------------------------|--------------------------------|---------------------------------------|
//! | `document`   | `id_verifications[0].status`          | `id_verification.status`       | `documentAuthenticity`                |
//! | `liveness`   | `liveness_checks[0].status`           | `liveness.status`              | `liveness`                            |
//! | `face_match` | `face_matches[0].status`              | `face_match.status`            | `faceMatch`                           |
//! | `aml`        | `aml_screenings[0].status`, or `aml`  | `aml.status`                   | `aml`                                 |
//!
//! Each of the object/array fields is read whether gu1 sends an object or a one-element array.
//!
//! Outcome words (case and `_`/`-`/space ignored):
//!
//! | words                                                                                   | [`CheckOutcome`] |
//! |-----------------------------------------------------------------------------------------|------------------|
//! | `pass`, `passed`, `approved`, `accepted`, `verified`, `valid`, `ok`, `success`, `clear`, `match` | `pass`   |
//! | `fail`, `failed`, `declined`, `rejected`, `invalid`, `no_match`, `mismatch`              | `fail`           |
//! | `review`, `in_review`, `manual_review`, `needs_review`, `pending_review`, `warning`, `suspicious` | `review` |
//! | anything else (`Not Finished`, `Not Started`, missing)                                  | `unknown`        |
//!
//! AML has its own words first: `clear`, `no_hit(s)`, `no_match` → `pass`; `hit`, `hits`, `match`,
//! `potential_match`, `possible_match` → `review` (a list hit needs a person to say whether it is the
//! same person, so it is not reported as a failure); `confirmed_match` → `fail`. With no status word,
//! an AML object's `total_hits` decides: 0 → `pass`, more → `review`.
//!
//! Scores (0-100 in [`Scores`]): `liveness` and `face_match` from the check's `score` (newest shape
//! first), else from the top-level `biometricResult.livenessScore` / `faceMatchScore`, which gu1
//! documents on a 0-1 scale and are multiplied by 100. A decision `score` strictly between 0 and 1 is
//! also taken as a fraction and scaled (on a 0-100 scale such a value would mean "no" anyway); scores
//! outside 0-100 are dropped. `document` takes the id verification's `score` where one is sent.
//!
//! # Identity
//!
//! Each field is taken from the first of: `extractedData` {`firstName`, `lastName`, `dateOfBirth`,
//! `nationality`, `documentNumber`, `documentType`, `personalNumber`/`nationalId`}, then the decision's
//! id verification (`first_name`, `last_name`, `date_of_birth`, `nationality`, `document_number`,
//! `document_type`, `personal_number`), then the older page's `extracted_information` and
//! `document_details` {`type`, `number`}. Birth dates are read as `YYYY-MM-DD` (a longer timestamp is
//! cut to its date; `DD/MM/YYYY` is accepted too); an unreadable date is left out rather than failing
//! the whole answer. The identity `score` is the document score where gu1 sends one, else the face
//! match score (the nearest thing gu1 has to an identity-verification score).
//!
//! # Entity standing
//!
//! `GET /api/kyc/entities/{id}/status` maps to [`ProviderStanding`]: `verified` = `isVerified`,
//! `verified_at` = `lastVerifiedAt` (else `currentValidation.verifiedAt`), `expires_at` =
//! `expiresAt`, `needs_reverification` = `needsReverification`.

use chrono::{DateTime, NaiveDate, Utc};
use kyc_core::{
    CheckOutcome, Decision, Identity, Personal, ProviderError, ProviderStanding,
    ProviderVerification, Reason, Scores, Status,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `POST /api/entities`: the person entity gu1 needs before any KYC validation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1CreatePersonEntity {
    /// Always `"person"`: KYC validations exist only for person entities.
    #[serde(rename = "type")]
    pub entity_type: &'static str,
    /// Display name at gu1: "first last" when known, else the caller's subject id.
    pub name: Personal<String>,
    /// ISO 3166-1 alpha-2 country.
    pub country_code: String,
    /// `{tenant}:{subject id}`, so the entity can be found again from our side (see the lookup).
    pub external_id: String,
    /// The national id; gu1 refuses a second entity with the same one (409).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<Personal<String>>,
    /// The typed person data.
    pub entity_data: Gu1EntityData,
}

/// The `entityData` wrapper gu1 puts around the typed data of an entity.
#[derive(Debug, Clone, Serialize)]
pub struct Gu1EntityData {
    /// Person fields.
    pub person: Gu1PersonData,
}

/// `entityData.person`: what the caller told us about the person.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1PersonData {
    /// Given name(s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Personal<String>>,
    /// Family name(s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Personal<String>>,
    /// Birth date, serialized `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<Personal<NaiveDate>>,
    /// Nationality: we send the subject's country, the only one we know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nationality: Option<String>,
}

/// `POST /api/kyc/validations`: starts a validation for an existing person entity.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1CreateValidation {
    /// The gu1 person entity to verify.
    pub entity_id: String,
    /// A custom gu1 workflow, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Where gu1 posts status changes (the gateway's hook URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Our own traces on the validation (max 10 KB at gu1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Gu1ValidationMetadata>,
    /// The KYC integration to use (newer gu1 docs), when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_code: Option<String>,
}

/// The metadata we attach to every validation, so one can be traced back to the gateway.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1ValidationMetadata {
    /// The caller's reference.
    pub reference: String,
    /// The gateway's idempotency key for this attempt (gu1 has no idempotency of its own: this
    /// lets a duplicate left by a retry be recognised at gu1).
    pub gateway_key: String,
}

/// `POST /api/kyc/validations/{id}/sync` body.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Gu1SyncRequest {
    /// Sync even if gu1 synced recently: a refresh is asked for because we want the latest.
    pub force: bool,
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// The answer to `POST /api/entities`: `{success, entity: {id, ...}}` (a bare entity is accepted too).
#[derive(Debug, Clone, Deserialize)]
pub struct Gu1CreateEntityAnswer {
    /// gu1's success flag.
    #[serde(default)]
    pub success: Option<bool>,
    /// The created entity.
    #[serde(default)]
    pub entity: Option<Gu1EntityRef>,
    /// The entity id, when gu1 answers with the bare entity.
    #[serde(default)]
    pub id: Option<String>,
}

/// The part of a gu1 entity we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Gu1EntityRef {
    /// gu1's id for the entity: what validations and the standing endpoint take.
    pub id: String,
}

impl Gu1CreateEntityAnswer {
    /// The created entity's id, wherever gu1 put it.
    pub fn entity_id(&self) -> Result<String, ProviderError> {
        self.entity
            .as_ref()
            .map(|e| e.id.clone())
            .or_else(|| self.id.clone())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ProviderError::BadResponse("gu1 created an entity but sent no entity id".into())
            })
    }
}

/// gu1's answer to an entity lookup (`GET {entities_path}?type=person&taxId=...` or
/// `&externalId=...`).
#[derive(Debug, Clone, Deserialize)]
pub struct Gu1EntityList {
    /// The entities matching the filters, up to 100.
    #[serde(default)]
    pub entities: Vec<Gu1ListedEntity>,
}

/// One entity of a lookup answer: only what we match on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1ListedEntity {
    /// gu1's id for the entity.
    pub id: String,
    /// `person` for the entities KYC validations take.
    #[serde(default, rename = "type")]
    pub entity_type: Option<String>,
    /// What we sent as `externalId` when we created it.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The national id it was created with.
    #[serde(default)]
    pub tax_id: Option<Personal<String>>,
}

impl Gu1EntityList {
    /// The id of the first person entity that really carries the national id, or else the
    /// external id, asked for: a lookup answer is not trusted to have applied its filter.
    pub fn person_matching(&self, tax_id: Option<&str>, external_id: &str) -> Option<&str> {
        self.entities
            .iter()
            .filter(|e| e.entity_type.as_deref().is_none_or(|t| t == "person"))
            .find(|e| match tax_id {
                Some(tax_id) => e.tax_id.as_ref().map(|t| t.expose().as_str()) == Some(tax_id),
                None => e.external_id.as_deref() == Some(external_id),
            })
            .map(|e| e.id.as_str())
    }
}

/// One KYC validation as gu1 holds it (create, get, sync, cancel answers and webhook payloads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1Validation {
    /// gu1's id for the validation: our `provider_reference`.
    pub id: String,
    /// The person entity it verifies.
    #[serde(default)]
    pub entity_id: Option<String>,
    /// The gu1 organisation.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// The session at gu1's KYC provider (create page name).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The same session (sync page name).
    #[serde(default)]
    pub validation_session_id: Option<String>,
    /// The status word; see the table in the module docs.
    pub status: String,
    /// The KYC provider gu1 uses underneath.
    #[serde(default)]
    pub provider: Option<String>,
    /// The link to hand to the person.
    #[serde(default)]
    pub provider_session_url: Option<String>,
    /// Whether this is the entity's current validation.
    #[serde(default)]
    pub is_current: Option<bool>,
    /// Metadata given at creation.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The decision, once one exists; unreadable shapes are dropped, not fatal.
    #[serde(default, deserialize_with = "lenient")]
    pub decision: Option<Gu1Decision>,
    /// Document data gu1 extracted.
    #[serde(default, deserialize_with = "lenient")]
    pub extracted_data: Option<Gu1ExtractedData>,
    /// Biometric scores on a 0-1 scale.
    #[serde(default, deserialize_with = "lenient")]
    pub biometric_result: Option<Gu1BiometricResult>,
    /// When the identity was confirmed.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub verified_at: Option<DateTime<Utc>>,
    /// When the session link expires, if gu1 says (not on the pages we have).
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub created_at: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `extractedData`: the document data gu1 read, camelCase.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1ExtractedData {
    /// Given name(s).
    #[serde(default, deserialize_with = "lenient")]
    pub first_name: Option<Personal<String>>,
    /// Family name(s).
    #[serde(default, deserialize_with = "lenient")]
    pub last_name: Option<Personal<String>>,
    /// Birth date as gu1 writes it (`YYYY-MM-DD`).
    #[serde(default, deserialize_with = "lenient")]
    pub date_of_birth: Option<Personal<String>>,
    /// Nationality.
    #[serde(default, deserialize_with = "lenient")]
    pub nationality: Option<Personal<String>>,
    /// Document number.
    #[serde(default, deserialize_with = "lenient")]
    pub document_number: Option<Personal<String>>,
    /// Document type (`Identity Card`, `passport`).
    #[serde(default, deserialize_with = "lenient")]
    pub document_type: Option<String>,
    /// Personal (national) number, where the document has one.
    #[serde(default, alias = "nationalId", deserialize_with = "lenient")]
    pub personal_number: Option<Personal<String>>,
}

/// `biometricResult`: scores on a 0-1 scale.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1BiometricResult {
    /// Liveness, 0-1.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub liveness_score: Option<f64>,
    /// Face match, 0-1.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub face_match_score: Option<f64>,
    /// gu1's overall verdict.
    #[serde(default, deserialize_with = "lenient")]
    pub passed: Option<bool>,
}

/// The `decision` object, in any of the three shapes gu1 has shown (see the module docs).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gu1Decision {
    /// Overall decision word (`Approved`, `Declined`, `In Review`), sync/Didit shapes.
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<String>,
    /// (a) the older page's per-check words.
    #[serde(default, deserialize_with = "lenient")]
    pub verification_results: Option<Gu1VerificationResults>,
    /// (a) the older page's identity block.
    #[serde(default, deserialize_with = "lenient")]
    pub extracted_information: Option<Gu1ExtractedData>,
    /// (a) the older page's document block.
    #[serde(default, deserialize_with = "lenient")]
    pub document_details: Option<Gu1DocumentDetails>,
    /// (b) identity document check.
    #[serde(default)]
    pub id_verification: OneOrMany<Gu1IdVerification>,
    /// (b) liveness check.
    #[serde(default)]
    pub liveness: OneOrMany<Gu1Check>,
    /// (b) face match check.
    #[serde(default)]
    pub face_match: OneOrMany<Gu1Check>,
    /// (b)/(c) AML screening.
    #[serde(default)]
    pub aml: OneOrMany<Gu1Check>,
    /// (c) identity document checks.
    #[serde(default)]
    pub id_verifications: OneOrMany<Gu1IdVerification>,
    /// (c) liveness checks.
    #[serde(default)]
    pub liveness_checks: OneOrMany<Gu1Check>,
    /// (c) face match checks.
    #[serde(default)]
    pub face_matches: OneOrMany<Gu1Check>,
    /// (c) AML screenings.
    #[serde(default)]
    pub aml_screenings: OneOrMany<Gu1Check>,
}

/// (a) `decision.verification_results`: one word per check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1VerificationResults {
    /// Document authenticity (`pass`/`fail`).
    #[serde(default, deserialize_with = "lenient")]
    pub document_authenticity: Option<String>,
    /// Face match (`pass`/`fail`).
    #[serde(default, deserialize_with = "lenient")]
    pub face_match: Option<String>,
    /// Liveness (`pass`/`fail`).
    #[serde(default, deserialize_with = "lenient")]
    pub liveness: Option<String>,
    /// AML (`clear`/`hit`).
    #[serde(default, deserialize_with = "lenient")]
    pub aml: Option<String>,
}

/// (a) `decision.document_details`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gu1DocumentDetails {
    /// Document type.
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub document_type: Option<String>,
    /// Document number.
    #[serde(default, deserialize_with = "lenient")]
    pub number: Option<Personal<String>>,
    /// Issuing country.
    #[serde(default, deserialize_with = "lenient")]
    pub country: Option<String>,
}

/// (b)/(c) the identity document check, Didit style (snake_case).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gu1IdVerification {
    /// `Approved`, `Declined`, `In Review`, `Not Finished`...
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<String>,
    /// A document score, where sent.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub score: Option<f64>,
    /// Document type.
    #[serde(default, deserialize_with = "lenient")]
    pub document_type: Option<String>,
    /// Document number.
    #[serde(default, deserialize_with = "lenient")]
    pub document_number: Option<Personal<String>>,
    /// Personal (national) number.
    #[serde(default, deserialize_with = "lenient")]
    pub personal_number: Option<Personal<String>>,
    /// Given name(s).
    #[serde(default, deserialize_with = "lenient")]
    pub first_name: Option<Personal<String>>,
    /// Family name(s).
    #[serde(default, deserialize_with = "lenient")]
    pub last_name: Option<Personal<String>>,
    /// Birth date.
    #[serde(default, deserialize_with = "lenient")]
    pub date_of_birth: Option<Personal<String>>,
    /// Nationality.
    #[serde(default, deserialize_with = "lenient")]
    pub nationality: Option<Personal<String>>,
}

/// (b)/(c) a liveness, face match or AML check: a status word and a score.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gu1Check {
    /// `Approved`, `Declined`, `In Review`, `Not Finished`...
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<String>,
    /// 0-100 (a fraction is scaled, see the module docs).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub score: Option<f64>,
    /// AML: how many list hits.
    #[serde(default, deserialize_with = "lenient")]
    pub total_hits: Option<u64>,
}

/// A field gu1 sends as an object in one shape and as a one-element array in another. Anything
/// else is kept as `Other` and ignored, so an unexpected shape never fails the whole answer.
#[derive(Debug, Clone, Default)]
pub enum OneOrMany<T> {
    /// Absent or null.
    #[default]
    Absent,
    /// An object.
    One(T),
    /// An array; the first element counts.
    Many(Vec<T>),
    /// A shape we do not read.
    Other,
}

impl<T> OneOrMany<T> {
    /// The object, or the array's first element.
    pub fn first(&self) -> Option<&T> {
        match self {
            OneOrMany::One(v) => Some(v),
            OneOrMany::Many(v) => v.first(),
            OneOrMany::Absent | OneOrMany::Other => None,
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(match value {
            Value::Null => OneOrMany::Absent,
            Value::Array(items) => match serde_json::from_value::<Vec<T>>(Value::Array(items)) {
                Ok(v) => OneOrMany::Many(v),
                Err(_) => OneOrMany::Other,
            },
            v @ Value::Object(_) => match serde_json::from_value::<T>(v) {
                Ok(v) => OneOrMany::One(v),
                Err(_) => OneOrMany::Other,
            },
            _ => OneOrMany::Other,
        })
    }
}

/// `GET /api/kyc/entities/{entityId}/status`: gu1's own view of a person's KYC standing.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1EntityKycStatus {
    /// The entity.
    #[serde(default)]
    pub entity_id: Option<String>,
    /// Whether the entity has any validation.
    #[serde(default)]
    pub has_kyc: bool,
    /// Whether the entity counts as verified now.
    #[serde(default)]
    pub is_verified: bool,
    /// The current validation, if any.
    #[serde(default, deserialize_with = "lenient")]
    pub current_validation: Option<Gu1CurrentValidation>,
    /// Last approval.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub last_verified_at: Option<DateTime<Utc>>,
    /// When the approval stops counting.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub expires_at: Option<DateTime<Utc>>,
    /// gu1 asks for a new verification.
    #[serde(default)]
    pub needs_reverification: bool,
}

/// `currentValidation` inside the entity status answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1CurrentValidation {
    /// The validation id.
    #[serde(default)]
    pub id: Option<String>,
    /// Its status word.
    #[serde(default)]
    pub status: Option<String>,
    /// When it was approved.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub verified_at: Option<DateTime<Utc>>,
}

/// gu1's error body `{error: CODE, message}`. The message is never passed on (it is gu1's text and
/// could echo input); only the code is used.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gu1ErrorBody {
    /// gu1's error code (`ENTITY_NOT_FOUND`, ...).
    #[serde(default, deserialize_with = "lenient")]
    pub error: Option<String>,
    /// gu1's text; read for completeness, never forwarded.
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<String>,
}

/// A gu1 webhook: `{event, timestamp, organizationId, payload: <the validation>}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gu1WebhookEnvelope {
    /// `kyc.validation_<status>`.
    pub event: String,
    /// When gu1 sent it.
    #[serde(default)]
    pub timestamp: Option<Value>,
    /// The gu1 organisation.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// The validation; only its id is trusted (the gateway re-reads the rest).
    pub payload: Gu1WebhookPayload,
}

/// The part of a webhook payload we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Gu1WebhookPayload {
    /// The validation id.
    pub id: String,
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

/// The eight gu1 validation statuses; parsing anything else is an error by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gu1Status {
    /// `pending`
    Pending,
    /// `in_progress`
    InProgress,
    /// `in_review`
    InReview,
    /// `approved`
    Approved,
    /// `rejected`
    Rejected,
    /// `expired`
    Expired,
    /// `abandoned`
    Abandoned,
    /// `cancelled`
    Cancelled,
}

impl Gu1Status {
    /// Every gu1 status.
    pub const ALL: [Gu1Status; 8] = [
        Gu1Status::Pending,
        Gu1Status::InProgress,
        Gu1Status::InReview,
        Gu1Status::Approved,
        Gu1Status::Rejected,
        Gu1Status::Expired,
        Gu1Status::Abandoned,
        Gu1Status::Cancelled,
    ];

    /// gu1's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Gu1Status::Pending => "pending",
            Gu1Status::InProgress => "in_progress",
            Gu1Status::InReview => "in_review",
            Gu1Status::Approved => "approved",
            Gu1Status::Rejected => "rejected",
            Gu1Status::Expired => "expired",
            Gu1Status::Abandoned => "abandoned",
            Gu1Status::Cancelled => "cancelled",
        }
    }

    /// Parses gu1's word (ASCII case ignored); `None` for a status we do not know.
    pub fn parse(word: &str) -> Option<Gu1Status> {
        let word = word.trim();
        Gu1Status::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(word))
    }
}

impl From<Gu1Status> for Status {
    fn from(status: Gu1Status) -> Status {
        match status {
            Gu1Status::Pending => Status::Pending,
            Gu1Status::InProgress => Status::InProgress,
            Gu1Status::InReview => Status::InReview,
            Gu1Status::Approved => Status::Approved,
            Gu1Status::Rejected => Status::Rejected,
            Gu1Status::Expired => Status::Expired,
            Gu1Status::Abandoned => Status::Abandoned,
            Gu1Status::Cancelled => Status::Cancelled,
        }
    }
}

/// A provider word made safe to carry as a code: short, no control characters.
fn code_word(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty()
        || trimmed.len() > 48
        || !trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'))
    {
        return None;
    }
    Some(trimmed.to_string())
}

/// The reason for a final, non-approved status (see the table in the module docs).
pub fn reason_for(status: Gu1Status, decision: Option<&Gu1Decision>) -> Option<Reason> {
    let (code, message) = match status {
        Gu1Status::Pending | Gu1Status::InProgress | Gu1Status::InReview | Gu1Status::Approved => {
            return None;
        }
        Gu1Status::Rejected => ("verification_failed", rejected_message(decision)),
        Gu1Status::Expired => (
            "link_expired",
            "the verification link expired before the person finished".to_string(),
        ),
        Gu1Status::Abandoned => (
            "abandoned",
            "the person started the verification and did not finish it".to_string(),
        ),
        Gu1Status::Cancelled => ("cancelled", "the verification was cancelled".to_string()),
    };
    let provider_code = match decision
        .and_then(|d| d.status.as_deref())
        .and_then(code_word)
    {
        Some(word) => format!("{}/{word}", status.as_str()),
        None => status.as_str().to_string(),
    };
    Some(Reason {
        code: code.to_string(),
        provider_code: Some(provider_code),
        message: Some(message),
    })
}

fn rejected_message(decision: Option<&Gu1Decision>) -> String {
    Decision::rejection_message(decision.map(Gu1Decision::to_decision).as_ref(), "gu1")
}

// ---------------------------------------------------------------------------------------------
// Decision
// ---------------------------------------------------------------------------------------------

fn normalized(word: &str) -> String {
    word.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

/// Maps a check's status word to a [`CheckOutcome`] (table in the module docs).
pub fn check_outcome(word: &str) -> CheckOutcome {
    match normalized(word).as_str() {
        "pass" | "passed" | "approved" | "accepted" | "verified" | "valid" | "ok" | "success"
        | "clear" | "match" | "matched" => CheckOutcome::Pass,
        "fail" | "failed" | "declined" | "rejected" | "invalid" | "no_match" | "mismatch" => {
            CheckOutcome::Fail
        }
        "review" | "in_review" | "manual_review" | "needs_review" | "pending_review"
        | "warning" | "suspicious" => CheckOutcome::Review,
        _ => CheckOutcome::Unknown,
    }
}

/// Maps an AML status word to a [`CheckOutcome`]: list hits are `review`, see the module docs.
pub fn aml_outcome(word: &str) -> CheckOutcome {
    match normalized(word).as_str() {
        "clear" | "no_hit" | "no_hits" | "no_match" => CheckOutcome::Pass,
        "hit" | "hits" | "match" | "potential_match" | "possible_match" => CheckOutcome::Review,
        "confirmed_match" => CheckOutcome::Fail,
        other => check_outcome(other),
    }
}

fn aml_check_outcome(check: &Gu1Check) -> CheckOutcome {
    match check.status.as_deref().map(aml_outcome) {
        Some(outcome) if outcome != CheckOutcome::Unknown => outcome,
        _ => match check.total_hits {
            Some(0) => CheckOutcome::Pass,
            Some(_) => CheckOutcome::Review,
            None => CheckOutcome::Unknown,
        },
    }
}

/// The first outcome that is not `Unknown`.
fn first_known(candidates: impl IntoIterator<Item = Option<CheckOutcome>>) -> CheckOutcome {
    candidates
        .into_iter()
        .flatten()
        .find(|o| *o != CheckOutcome::Unknown)
        .unwrap_or(CheckOutcome::Unknown)
}

fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// A decision score on 0-100; a value strictly between 0 and 1 is a fraction and is scaled.
pub fn decision_score(score: f64) -> Option<f64> {
    if !score.is_finite() || !(0.0..=100.0).contains(&score) {
        return None;
    }
    if score > 0.0 && score < 1.0 {
        Some(round(score * 100.0))
    } else {
        Some(score)
    }
}

/// A `biometricResult` score (0-1) on 0-100; a value already above 1 is taken as 0-100.
pub fn fraction_score(score: f64) -> Option<f64> {
    if !score.is_finite() || !(0.0..=100.0).contains(&score) {
        return None;
    }
    if score <= 1.0 {
        Some(round(score * 100.0))
    } else {
        Some(score)
    }
}

impl Gu1Decision {
    fn id_verification(&self) -> Option<&Gu1IdVerification> {
        self.id_verifications
            .first()
            .or_else(|| self.id_verification.first())
    }

    fn liveness_check(&self) -> Option<&Gu1Check> {
        self.liveness_checks
            .first()
            .or_else(|| self.liveness.first())
    }

    fn face_match_check(&self) -> Option<&Gu1Check> {
        self.face_matches
            .first()
            .or_else(|| self.face_match.first())
    }

    /// The normalized decision, without biometric fallbacks (see [`decision_for`]).
    pub fn to_decision(&self) -> Decision {
        let results = self.verification_results.as_ref();
        let word = |w: Option<&String>, f: fn(&str) -> CheckOutcome| w.map(|w| f(w));
        let status_of =
            |c: Option<&Gu1Check>| c.and_then(|c| c.status.as_deref()).map(check_outcome);

        let document = first_known([
            self.id_verifications
                .first()
                .and_then(|v| v.status.as_deref())
                .map(check_outcome),
            self.id_verification
                .first()
                .and_then(|v| v.status.as_deref())
                .map(check_outcome),
            word(
                results.and_then(|r| r.document_authenticity.as_ref()),
                check_outcome,
            ),
        ]);
        let liveness = first_known([
            status_of(self.liveness_checks.first()),
            status_of(self.liveness.first()),
            word(results.and_then(|r| r.liveness.as_ref()), check_outcome),
        ]);
        let face_match = first_known([
            status_of(self.face_matches.first()),
            status_of(self.face_match.first()),
            word(results.and_then(|r| r.face_match.as_ref()), check_outcome),
        ]);
        let aml = first_known([
            self.aml_screenings.first().map(aml_check_outcome),
            self.aml.first().map(aml_check_outcome),
            word(results.and_then(|r| r.aml.as_ref()), aml_outcome),
        ]);

        let score = |c: Option<&Gu1Check>| c.and_then(|c| c.score).and_then(decision_score);
        Decision {
            document,
            liveness,
            face_match,
            aml,
            scores: Scores {
                document: self
                    .id_verification()
                    .and_then(|v| v.score)
                    .and_then(decision_score),
                liveness: score(self.liveness_check()),
                face_match: score(self.face_match_check()),
            },
        }
    }
}

/// The normalized decision of a validation: the `decision` object plus the `biometricResult`
/// scores as a fallback. `None` when gu1 says nothing about any check.
pub fn decision_for(validation: &Gu1Validation) -> Option<Decision> {
    let mut decision = validation
        .decision
        .as_ref()
        .map(Gu1Decision::to_decision)
        .unwrap_or_default();
    if let Some(bio) = &validation.biometric_result {
        if decision.scores.liveness.is_none() {
            decision.scores.liveness = bio.liveness_score.and_then(fraction_score);
        }
        if decision.scores.face_match.is_none() {
            decision.scores.face_match = bio.face_match_score.and_then(fraction_score);
        }
    }
    (decision != Decision::default()).then_some(decision)
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

impl TryFrom<Gu1Validation> for ProviderVerification {
    type Error = ProviderError;

    fn try_from(validation: Gu1Validation) -> Result<Self, Self::Error> {
        let status = Gu1Status::parse(&validation.status).ok_or_else(|| {
            ProviderError::BadResponse(match code_word(&validation.status) {
                Some(word) => format!("gu1 sent an unknown validation status `{word}`"),
                None => "gu1 sent an unknown validation status".to_string(),
            })
        })?;
        let decision = decision_for(&validation);
        Ok(ProviderVerification {
            reason: reason_for(status, validation.decision.as_ref()),
            status: status.into(),
            verification_url: validation.provider_session_url.filter(|u| !u.is_empty()),
            expires_at: validation.expires_at,
            decision,
            subject_ref: validation.entity_id.filter(|id| !id.is_empty()),
            provider_reference: validation.id,
        })
    }
}

impl From<Gu1EntityKycStatus> for ProviderStanding {
    fn from(status: Gu1EntityKycStatus) -> Self {
        ProviderStanding {
            verified: status.is_verified,
            verified_at: status
                .last_verified_at
                .or_else(|| status.current_validation.and_then(|c| c.verified_at)),
            expires_at: status.expires_at,
            needs_reverification: status.needs_reverification,
        }
    }
}

/// A birth date as gu1 writes it: `YYYY-MM-DD` (a longer timestamp is cut), or `DD/MM/YYYY`.
pub fn parse_birth_date(raw: &str) -> Option<NaiveDate> {
    let raw = raw.trim();
    raw.get(..10)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .or_else(|| NaiveDate::parse_from_str(raw, "%d/%m/%Y").ok())
}

fn non_empty(v: &Option<Personal<String>>) -> Option<Personal<String>> {
    v.as_ref()
        .filter(|p| !p.expose().trim().is_empty())
        .cloned()
}

impl From<&Gu1Validation> for Identity {
    fn from(validation: &Gu1Validation) -> Self {
        let empty = Gu1ExtractedData::default();
        let extracted = validation.extracted_data.as_ref().unwrap_or(&empty);
        let decision = validation.decision.as_ref();
        let idv_default = Gu1IdVerification::default();
        let idv = decision
            .and_then(Gu1Decision::id_verification)
            .unwrap_or(&idv_default);
        let older = decision
            .and_then(|d| d.extracted_information.as_ref())
            .unwrap_or(&empty);
        let details_default = Gu1DocumentDetails::default();
        let details = decision
            .and_then(|d| d.document_details.as_ref())
            .unwrap_or(&details_default);

        let pick = |fields: [&Option<Personal<String>>; 3]| fields.into_iter().find_map(non_empty);

        let date_of_birth = [
            &extracted.date_of_birth,
            &idv.date_of_birth,
            &older.date_of_birth,
        ]
        .into_iter()
        .find_map(non_empty)
        .and_then(|raw| {
            let parsed = parse_birth_date(raw.expose());
            if parsed.is_none() {
                tracing::warn!(
                    validation_id = %validation.id,
                    "gu1 sent a birth date we cannot read; leaving it out"
                );
            }
            parsed
        })
        .map(Personal::new);

        let document_number = pick([
            &extracted.document_number,
            &idv.document_number,
            &details.number,
        ]);
        let document_type = [
            extracted.document_type.as_ref(),
            idv.document_type.as_ref(),
            details.document_type.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find(|t| !t.trim().is_empty())
        .cloned();

        let decision_scores = decision_for(validation)
            .map(|d| d.scores)
            .unwrap_or_default();
        Identity {
            first_name: pick([&extracted.first_name, &idv.first_name, &older.first_name]),
            last_name: pick([&extracted.last_name, &idv.last_name, &older.last_name]),
            date_of_birth,
            national_id: pick([
                &extracted.personal_number,
                &idv.personal_number,
                &older.personal_number,
            ]),
            document_number,
            document_type,
            nationality: pick([&extracted.nationality, &idv.nationality, &older.nationality]),
            score: decision_scores.document.or(decision_scores.face_match),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lenient field readers: an odd value in a field we only report must not fail a whole answer.
// ---------------------------------------------------------------------------------------------

fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(d)?;
    if value.is_null() {
        return Ok(None);
    }
    Ok(serde_json::from_value(value).ok())
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
        _ => None,
    })
}

fn lenient_datetime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CREATE_201: &str = include_str!("../tests/fixtures/create_validation_201.json");
    const SYNC_APPROVED: &str = include_str!("../tests/fixtures/sync_validation_approved.json");
    const ENTITY_STATUS: &str = include_str!("../tests/fixtures/entity_kyc_status.json");
    const OLDER_DECISION: &str =
        include_str!("../tests/fixtures/decision_verification_results.json");
    const ARRAY_SHAPE: &str = include_str!("../tests/fixtures/validation_array_shape.json");
    const ERRORS: &str = include_str!("../tests/fixtures/errors.json");
    const WEBHOOK: &str = include_str!("../tests/fixtures/webhook_approved.json");

    fn validation(text: &str) -> Gu1Validation {
        serde_json::from_str(text).expect("fixture parses")
    }

    #[test]
    fn create_answer_is_a_pending_verification_with_link_and_entity() {
        let v = ProviderVerification::try_from(validation(CREATE_201)).unwrap();
        assert_eq!(v.provider_reference, "550e8400-e29b-41d4-a716-446655440000");
        assert_eq!(v.status, Status::Pending);
        assert_eq!(
            v.verification_url.as_deref(),
            Some("https://verify.example.com/session_xyz789")
        );
        assert_eq!(
            v.subject_ref.as_deref(),
            Some("123e4567-e89b-12d3-a456-426614174000")
        );
        assert_eq!(v.reason, None);
        assert_eq!(v.decision, None);
    }

    #[test]
    fn sync_page_example_maps_to_approved_with_all_checks_passed() {
        let v = ProviderVerification::try_from(validation(SYNC_APPROVED)).unwrap();
        assert_eq!(v.status, Status::Approved);
        assert_eq!(v.reason, None);
        let d = v.decision.expect("decision");
        assert_eq!(d.document, CheckOutcome::Pass);
        assert_eq!(d.liveness, CheckOutcome::Pass);
        assert_eq!(d.face_match, CheckOutcome::Pass);
        assert_eq!(d.aml, CheckOutcome::Unknown);
        assert_eq!(d.scores.liveness, Some(98.0));
        assert_eq!(d.scores.face_match, Some(95.0));
        assert_eq!(d.scores.document, None);
    }

    #[test]
    fn sync_page_example_gives_identity_from_extracted_data() {
        let id = Identity::from(&validation(SYNC_APPROVED));
        assert_eq!(id.first_name.unwrap().expose(), "Juan");
        assert_eq!(id.last_name.unwrap().expose(), "Pérez");
        assert_eq!(
            *id.date_of_birth.unwrap().expose(),
            NaiveDate::from_ymd_opt(1990, 5, 15).unwrap()
        );
        assert_eq!(id.document_number.unwrap().expose(), "AB123456");
        assert_eq!(id.document_type.as_deref(), Some("Identity Card"));
        assert_eq!(id.nationality.unwrap().expose(), "ES");
        assert_eq!(id.score, Some(95.0), "face match score stands in");
    }

    #[test]
    fn identity_falls_back_to_the_decision_when_extracted_data_is_missing() {
        let mut json: Value = serde_json::from_str(SYNC_APPROVED).unwrap();
        json.as_object_mut().unwrap().remove("extractedData");
        let id = Identity::from(&serde_json::from_value::<Gu1Validation>(json).unwrap());
        assert_eq!(id.first_name.unwrap().expose(), "Juan");
        assert_eq!(
            *id.date_of_birth.unwrap().expose(),
            NaiveDate::from_ymd_opt(1990, 5, 15).unwrap()
        );
        assert_eq!(id.document_type.as_deref(), Some("Identity Card"));
        assert_eq!(id.document_number, None, "the decision has no number");
    }

    #[test]
    fn older_page_decision_shape_is_read() {
        let mut json: Value = serde_json::from_str(OLDER_DECISION).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.insert("id".into(), json!("val_1"));
        obj.insert("status".into(), json!("approved"));
        let v = serde_json::from_value::<Gu1Validation>(json).unwrap();
        let id = Identity::from(&v);
        let d = ProviderVerification::try_from(v).unwrap().decision.unwrap();
        assert_eq!(d.document, CheckOutcome::Pass);
        assert_eq!(d.face_match, CheckOutcome::Pass);
        assert_eq!(d.liveness, CheckOutcome::Pass);
        assert_eq!(d.aml, CheckOutcome::Pass, "clear");
        assert_eq!(d.scores, Scores::default());
        assert_eq!(id.document_number.unwrap().expose(), "AB123456");
        assert_eq!(id.document_type.as_deref(), Some("passport"));
        assert_eq!(id.first_name.unwrap().expose(), "Juan");
        assert_eq!(
            *id.date_of_birth.unwrap().expose(),
            NaiveDate::from_ymd_opt(1990, 5, 20).unwrap()
        );
    }

    #[test]
    fn array_shape_is_read_and_fractions_are_scaled() {
        let v = validation(ARRAY_SHAPE);
        let id = Identity::from(&v);
        let pv = ProviderVerification::try_from(v).unwrap();
        assert_eq!(pv.status, Status::Rejected);
        let d = pv.decision.clone().unwrap();
        assert_eq!(d.document, CheckOutcome::Pass);
        assert_eq!(d.liveness, CheckOutcome::Review);
        assert_eq!(d.face_match, CheckOutcome::Fail);
        assert_eq!(d.aml, CheckOutcome::Review, "two hits");
        assert_eq!(d.scores.liveness, Some(61.5));
        assert_eq!(d.scores.face_match, Some(12.0));
        assert_eq!(d.scores.document, Some(88.0));
        let reason = pv.reason.unwrap();
        assert_eq!(reason.code, "verification_failed");
        assert_eq!(reason.provider_code.as_deref(), Some("rejected/Declined"));
        assert!(reason.message.unwrap().contains("face match"));
        assert_eq!(id.first_name.unwrap().expose(), "Ana");
        assert_eq!(id.national_id.unwrap().expose(), "20123456");
        assert_eq!(
            *id.date_of_birth.unwrap().expose(),
            NaiveDate::from_ymd_opt(1985, 11, 2).unwrap()
        );
        assert_eq!(id.score, Some(88.0));
    }

    #[test]
    fn biometric_result_fills_missing_scores_scaled_to_100() {
        let v: Gu1Validation = serde_json::from_value(json!({
            "id": "v", "status": "approved",
            "biometricResult": {"livenessScore": 0.98, "faceMatchScore": 0.95, "passed": true}
        }))
        .unwrap();
        let d = decision_for(&v).unwrap();
        assert_eq!(d.scores.liveness, Some(98.0));
        assert_eq!(d.scores.face_match, Some(95.0));
        assert_eq!(d.liveness, CheckOutcome::Unknown);
    }

    #[test]
    fn every_gu1_status_maps_to_the_same_named_core_status() {
        for s in Gu1Status::ALL {
            assert_eq!(Status::from(s).as_str(), s.as_str());
            assert_eq!(Gu1Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Gu1Status::parse("APPROVED"), Some(Gu1Status::Approved));
    }

    #[test]
    fn an_unknown_status_is_a_bad_response_not_a_default() {
        let v: Gu1Validation =
            serde_json::from_value(json!({"id": "v", "status": "on_hold"})).unwrap();
        match ProviderVerification::try_from(v) {
            Err(ProviderError::BadResponse(msg)) => assert!(msg.contains("on_hold")),
            other => panic!("expected BadResponse, got {other:?}"),
        }
    }

    #[test]
    fn final_statuses_carry_our_reason_codes() {
        let cases = [
            ("expired", "link_expired"),
            ("abandoned", "abandoned"),
            ("cancelled", "cancelled"),
            ("rejected", "verification_failed"),
        ];
        for (word, code) in cases {
            let v: Gu1Validation =
                serde_json::from_value(json!({"id": "v", "status": word})).unwrap();
            let reason = ProviderVerification::try_from(v).unwrap().reason.unwrap();
            assert_eq!(reason.code, code);
            assert_eq!(reason.provider_code.as_deref(), Some(word));
        }
        for word in ["pending", "in_progress", "in_review", "approved"] {
            let v: Gu1Validation =
                serde_json::from_value(json!({"id": "v", "status": word})).unwrap();
            assert_eq!(ProviderVerification::try_from(v).unwrap().reason, None);
        }
    }

    #[test]
    fn outcome_words() {
        assert_eq!(check_outcome("Approved"), CheckOutcome::Pass);
        assert_eq!(check_outcome("Declined"), CheckOutcome::Fail);
        assert_eq!(check_outcome("In Review"), CheckOutcome::Review);
        assert_eq!(check_outcome("Not Finished"), CheckOutcome::Unknown);
        assert_eq!(aml_outcome("clear"), CheckOutcome::Pass);
        assert_eq!(aml_outcome("hit"), CheckOutcome::Review);
        assert_eq!(aml_outcome("Declined"), CheckOutcome::Fail);
    }

    #[test]
    fn an_unexpected_decision_shape_does_not_fail_the_answer() {
        let v: Gu1Validation = serde_json::from_value(json!({
            "id": "v", "status": "approved",
            "decision": {"liveness": "pass", "face_match": 42, "id_verification": [1, 2]},
            "extractedData": {"firstName": 7, "dateOfBirth": "not a date"}
        }))
        .unwrap();
        let id = Identity::from(&v);
        assert_eq!(id.first_name, None);
        assert_eq!(id.date_of_birth, None);
        let pv = ProviderVerification::try_from(v).unwrap();
        assert_eq!(pv.status, Status::Approved);
        assert_eq!(pv.decision, None);
    }

    #[test]
    fn entity_status_page_example_maps_to_standing() {
        let status: Gu1EntityKycStatus = serde_json::from_str(ENTITY_STATUS).unwrap();
        let standing = ProviderStanding::from(status);
        assert!(standing.verified);
        assert!(!standing.needs_reverification);
        assert_eq!(
            standing.verified_at.unwrap().to_rfc3339(),
            "2025-01-15T11:00:00+00:00"
        );
        assert_eq!(
            standing.expires_at.unwrap().to_rfc3339(),
            "2026-01-15T11:00:00+00:00"
        );
    }

    #[test]
    fn error_page_examples_parse_to_their_codes() {
        let bodies: Vec<Gu1ErrorBody> = serde_json::from_str(ERRORS).unwrap();
        let codes: Vec<_> = bodies.iter().filter_map(|b| b.error.as_deref()).collect();
        assert_eq!(
            codes,
            [
                "ENTITY_NOT_FOUND",
                "INVALID_ENTITY_TYPE",
                "KYC_NOT_CONFIGURED",
                "NOT_FOUND",
                "NO_SESSION_ID",
                "INTEGRATION_NOT_CONFIGURED"
            ]
        );
    }

    #[test]
    fn webhook_envelope_names_the_validation() {
        let hook: Gu1WebhookEnvelope = serde_json::from_str(WEBHOOK).unwrap();
        assert_eq!(hook.event, "kyc.validation_approved");
        assert_eq!(hook.payload.id, "550e8400-e29b-41d4-a716-446655440000");
    }

    #[test]
    fn entity_request_is_gu1s_shape_and_debug_hides_personal_data() {
        let req = Gu1CreatePersonEntity {
            entity_type: "person",
            name: Personal::new("Juan Pérez".into()),
            country_code: "AR".into(),
            external_id: "cus_1".into(),
            tax_id: Some(Personal::new("20-12345678-9".into())),
            entity_data: Gu1EntityData {
                person: Gu1PersonData {
                    first_name: Some(Personal::new("Juan".into())),
                    last_name: None,
                    date_of_birth: NaiveDate::from_ymd_opt(1990, 5, 20).map(Personal::new),
                    nationality: Some("AR".into()),
                },
            },
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({
                "type": "person", "name": "Juan Pérez", "countryCode": "AR", "externalId": "cus_1",
                "taxId": "20-12345678-9",
                "entityData": {"person": {"firstName": "Juan", "dateOfBirth": "1990-05-20",
                                          "nationality": "AR"}}
            })
        );
        let printed = format!("{req:?}");
        assert!(!printed.contains("Juan") && !printed.contains("12345678"));
        assert!(!printed.contains("1990"));
    }
}
