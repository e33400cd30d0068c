//! Didit's wire format (API v3) and its mapping onto the normalized model: the create body, the
//! session and decision answers, and what the adapter reads of them. Fields the adapter does not
//! use are not declared (serde ignores them), so a field Didit adds never breaks a read.

use crate::SessionStatus;
use chrono::NaiveDate;
use kyc_core::{CheckOutcome, CreateRequest, Decision, Identity, Personal, Reason, Scores};
use serde::{Deserialize, Serialize};

/// `POST /v3/session/`.
#[derive(Serialize)]
pub struct CreateSession<'a> {
    /// The workflow (the instance's `workflow_id`).
    pub workflow_id: &'a str,
    /// This attempt's idempotency key: Didit answers an unfinished session already holding it
    /// instead of starting another.
    pub vendor_data: &'a str,
    /// Where Didit sends the person at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<&'a str>,
    /// Echoed back by Didit; names the tenant and the caller's reference.
    pub metadata: Metadata<'a>,
    /// The flow's language, where the instance sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<&'a str>,
    /// The person's contact details, where the caller gave some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_details: Option<ContactDetails<'a>>,
    /// What Didit compares the document with.
    pub expected_details: ExpectedDetails<'a>,
}

/// The create's `metadata`.
#[derive(Serialize)]
pub struct Metadata<'a> {
    /// The tenant asking.
    pub tenant: &'a str,
    /// The caller's reference.
    pub reference: &'a str,
}

/// The create's `contact_details`; Didit sends no email of its own.
#[derive(Serialize)]
pub struct ContactDetails<'a> {
    /// Email address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    /// Phone, E.164.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<&'a str>,
    /// Always false: the caller hands the link to the person.
    pub send_notification_emails: bool,
}

/// The create's `expected_details`.
#[derive(Serialize)]
pub struct ExpectedDetails<'a> {
    /// Given name(s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<&'a str>,
    /// Family name(s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<&'a str>,
    /// `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// The document's country, ISO 3166-1 alpha-3 as Didit writes countries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_country: Option<&'static str>,
    /// The national id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identification_number: Option<&'a str>,
}

impl<'a> CreateSession<'a> {
    /// The body for `request`.
    pub fn new(
        request: &'a CreateRequest,
        workflow_id: &'a str,
        language: Option<&'a str>,
    ) -> Self {
        let subject = &request.subject;
        let email = subject.email.as_ref().map(|e| e.expose().as_str());
        let phone = subject.phone.as_ref().map(|p| p.expose().as_str());
        CreateSession {
            workflow_id,
            vendor_data: &request.idempotency_key,
            callback: request.redirect_url.as_deref(),
            metadata: Metadata {
                tenant: &request.tenant,
                reference: &request.reference,
            },
            language,
            contact_details: (email.is_some() || phone.is_some()).then_some(ContactDetails {
                email,
                phone,
                send_notification_emails: false,
            }),
            expected_details: ExpectedDetails {
                first_name: subject.first_name.as_ref().map(|n| n.expose().as_str()),
                last_name: subject.last_name.as_ref().map(|n| n.expose().as_str()),
                date_of_birth: subject
                    .date_of_birth
                    .as_ref()
                    .map(|d| d.expose().format("%Y-%m-%d").to_string()),
                id_country: alpha3(&subject.country),
                identification_number: subject.national_id.as_ref().map(|n| n.expose().as_str()),
            },
        }
    }
}

/// ISO 3166-1 alpha-3 for an alpha-2 code; `None` for a code the list does not hold.
fn alpha3(alpha2: &str) -> Option<&'static str> {
    celes::Country::from_alpha2(alpha2)
        .ok()
        .map(|country| country.alpha3)
}

/// The create's answer (a new session, or the unfinished one already holding `vendor_data`).
#[derive(Deserialize)]
pub struct SessionCreated {
    /// Didit's id for the session.
    pub session_id: String,
    /// The hosted flow for the person.
    #[serde(default)]
    pub url: Option<String>,
    /// Didit's status word.
    pub status: String,
    /// The key the session holds.
    #[serde(default)]
    pub vendor_data: Option<String>,
}

/// `GET /v3/session/{id}/decision/`: the status and one array per check, each `null` until its
/// check has run.
#[derive(Deserialize)]
pub struct SessionDecision {
    /// Didit's id for the session.
    pub session_id: String,
    /// Didit's status word.
    pub status: String,
    /// The key the session holds.
    #[serde(default)]
    pub vendor_data: Option<String>,
    /// The hosted flow for the person.
    #[serde(default)]
    pub session_url: Option<String>,
    /// Document checks, the extracted fields with them.
    #[serde(default)]
    pub id_verifications: Option<Vec<IdVerification>>,
    /// Liveness checks.
    #[serde(default)]
    pub liveness_checks: Option<Vec<Check>>,
    /// Selfie-to-document matches.
    #[serde(default)]
    pub face_matches: Option<Vec<Check>>,
    /// Government registry checks.
    #[serde(default)]
    pub database_validations: Option<Vec<Check>>,
    /// Sanctions and PEP screenings.
    #[serde(default)]
    pub aml_screenings: Option<Vec<Check>>,
}

/// One document check and what it read. Its personal fields are [`Personal`], so they never
/// print.
#[derive(Deserialize)]
pub struct IdVerification {
    /// `Approved`, `Declined`, `In Review`, `Expired`, `Not Finished`.
    #[serde(default)]
    pub status: Option<String>,
    /// Given name(s).
    #[serde(default)]
    pub first_name: Option<Personal<String>>,
    /// Family name(s).
    #[serde(default)]
    pub last_name: Option<Personal<String>>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub date_of_birth: Option<Personal<String>>,
    /// `Passport`, `Identity Card`, ...
    #[serde(default)]
    pub document_type: Option<String>,
    /// The document's number.
    #[serde(default)]
    pub document_number: Option<Personal<String>>,
    /// The personal (national) number printed on the document.
    #[serde(default)]
    pub personal_number: Option<Personal<String>>,
    /// ISO 3166-1 alpha-3.
    #[serde(default)]
    pub nationality: Option<Personal<String>>,
    /// Why, where the check did not pass.
    #[serde(default)]
    pub warnings: Option<Vec<Warning>>,
}

/// One liveness, face match, registry or AML check.
#[derive(Deserialize)]
pub struct Check {
    /// Its status word.
    #[serde(default)]
    pub status: Option<String>,
    /// 0 to 100, where the check scores.
    #[serde(default)]
    pub score: Option<f64>,
    /// Why, where the check did not pass.
    #[serde(default)]
    pub warnings: Option<Vec<Warning>>,
}

/// A check's warning: `risk` is Didit's stable code.
#[derive(Deserialize)]
pub struct Warning {
    /// e.g. `LOW_FACE_MATCH_SIMILARITY`.
    #[serde(default)]
    pub risk: Option<String>,
    /// `error` (it declined), `warning` (it sent to review), `information`.
    #[serde(default)]
    pub log_type: Option<String>,
}

/// `GET /v3/sessions/?vendor_data=...`: the rows, newest first.
#[derive(Deserialize)]
pub struct SessionList {
    /// The sessions.
    pub results: Vec<SessionRow>,
}

/// One listed session.
#[derive(Deserialize)]
pub struct SessionRow {
    /// Didit's id for the session.
    pub session_id: String,
    /// The key it holds.
    #[serde(default)]
    pub vendor_data: Option<String>,
}

/// Didit's error body: a `detail` text (never passed on) and, where relevant, a stable `code`.
#[derive(Deserialize)]
pub struct ErrorBody {
    /// The stable code.
    #[serde(default)]
    pub code: Option<String>,
}

/// A check's status word as a [`CheckOutcome`].
pub fn check_outcome(word: Option<&str>) -> CheckOutcome {
    match word {
        Some("Approved") => CheckOutcome::Pass,
        Some("Declined") => CheckOutcome::Fail,
        Some("In Review") => CheckOutcome::Review,
        _ => CheckOutcome::Unknown,
    }
}

/// The latest run of a check (a resubmitted step runs again, appending a newer item).
fn latest<T>(items: &Option<Vec<T>>) -> Option<&T> {
    items.as_ref().and_then(|items| items.last())
}

impl SessionDecision {
    /// The per-check outcomes; `None` until any check has run.
    pub fn decision(&self) -> Option<Decision> {
        let document = latest(&self.id_verifications);
        let liveness = latest(&self.liveness_checks);
        let face = latest(&self.face_matches);
        let registry = latest(&self.database_validations);
        let aml = latest(&self.aml_screenings);
        if document.is_none() && liveness.is_none() && face.is_none() && registry.is_none() {
            return None;
        }
        // A registry check that failed fails the document: the document's data does not match
        // the government's.
        let document_outcome = match (
            document.map(|d| check_outcome(d.status.as_deref())),
            registry.map(|r| check_outcome(r.status.as_deref())),
        ) {
            (_, Some(CheckOutcome::Fail)) => CheckOutcome::Fail,
            (Some(outcome), _) => outcome,
            (None, Some(outcome)) => outcome,
            (None, None) => CheckOutcome::Unknown,
        };
        let outcome =
            |check: Option<&Check>| check_outcome(check.and_then(|c| c.status.as_deref()));
        let score = |check: Option<&Check>| {
            check
                .and_then(|c| c.score)
                .filter(|s| (0.0..=100.0).contains(s))
        };
        Some(Decision {
            document: document_outcome,
            liveness: outcome(liveness),
            face_match: outcome(face),
            aml: outcome(aml),
            scores: Scores {
                document: None,
                liveness: score(liveness),
                face_match: score(face),
            },
        })
    }

    /// The reason for a final status other than approved.
    pub fn reason(&self, status: SessionStatus) -> Option<Reason> {
        let (code, message) = match status {
            SessionStatus::Declined => ("verification_failed", self.declined_message()),
            SessionStatus::Expired => (
                "link_expired",
                "the verification link expired before the person opened it".to_string(),
            ),
            SessionStatus::KycExpired => (
                "approval_expired",
                "Didit's expiry policy ended an earlier approval".to_string(),
            ),
            SessionStatus::Abandoned => (
                "abandoned",
                "the person started the verification and did not finish it".to_string(),
            ),
            _ => return None,
        };
        let risk = self.first_risk();
        let word = status.as_str();
        Some(Reason {
            code: code.to_string(),
            provider_code: Some(match risk {
                Some(risk) => format!("{word}/{risk}"),
                None => word.to_string(),
            }),
            message: Some(message),
        })
    }

    fn declined_message(&self) -> String {
        Decision::rejection_message(self.decision().as_ref(), "Didit")
    }

    /// The first warning that declined a check (`log_type` `error`), else the first warning, as
    /// Didit's stable risk code; only a code-shaped word is passed on.
    fn first_risk(&self) -> Option<&str> {
        let warnings = || {
            let checks = [
                &self.liveness_checks,
                &self.face_matches,
                &self.database_validations,
                &self.aml_screenings,
            ];
            latest(&self.id_verifications)
                .and_then(|d| d.warnings.as_ref())
                .into_iter()
                .chain(
                    checks
                        .into_iter()
                        .filter_map(|c| latest(c).and_then(|c| c.warnings.as_ref())),
                )
                .flatten()
        };
        let error = warnings().find(|w| w.log_type.as_deref() == Some("error"));
        error
            .or_else(|| warnings().next())
            .and_then(|w| w.risk.as_deref())
            .filter(|risk| {
                !risk.is_empty()
                    && risk.len() <= 64
                    && risk.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
    }

    /// The document data Didit extracted; every field empty before the document check ran.
    pub fn identity(&self) -> Identity {
        let Some(document) = latest(&self.id_verifications) else {
            return Identity::default();
        };
        let text = |field: &Option<Personal<String>>| {
            field
                .as_ref()
                .map(|v| v.expose().trim())
                .filter(|v| !v.is_empty())
                .map(|v| Personal::from(v.to_string()))
        };
        Identity {
            first_name: text(&document.first_name),
            last_name: text(&document.last_name),
            date_of_birth: document
                .date_of_birth
                .as_ref()
                .and_then(|d| NaiveDate::parse_from_str(d.expose().trim(), "%Y-%m-%d").ok())
                .map(Personal::from),
            national_id: text(&document.personal_number),
            document_number: text(&document.document_number),
            document_type: document
                .document_type
                .as_ref()
                .map(|t| t.trim().chars().take(64).collect::<String>())
                .filter(|t| !t.is_empty()),
            nationality: text(&document.nationality),
            score: None,
        }
    }
}
