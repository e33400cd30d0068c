//! A Didit session as the simulator stores it, and the decision Didit reports about it: which
//! checks have run (each feature array stays `null` until its check has run, as Didit's does) and
//! what they found, for each of Didit's ten statuses.

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde_json::{Value, json};

/// Didit's ten session statuses, exactly as its API and webhooks write them (only the `K` of
/// `Kyc Expired` is a capital).
pub(super) const STATUSES: [&str; 10] = [
    "Not Started",
    "In Progress",
    "Approved",
    "Declined",
    "In Review",
    "Awaiting User",
    "Resubmitted",
    "Expired",
    "Abandoned",
    "Kyc Expired",
];

/// Statuses in which a create with the same `vendor_data` answers with the existing session
/// instead of a new one (Didit's reuse rule).
pub(super) const REUSABLE: [&str; 4] =
    ["Not Started", "In Progress", "Resubmitted", "Awaiting User"];

/// Statuses that update-status may change; the others answer 400.
pub(super) const UPDATABLE: [&str; 6] = [
    "Approved",
    "Declined",
    "In Review",
    "Kyc Expired",
    "Abandoned",
    "Resubmitted",
];

/// Statuses whose webhook carries the decision.
pub(super) const WITH_DECISION: [&str; 4] = ["Approved", "Declined", "In Review", "Abandoned"];

/// The features of the sandbox workflow, in the order of the decision's `features`.
const FEATURES: [&str; 4] = [
    "ID_VERIFICATION",
    "LIVENESS",
    "FACE_MATCH",
    "DATABASE_VALIDATION",
];

/// Names for the alpha-3 codes the gateway's users are likeliest to send; any other code is its
/// own name (the sandbox has no country table to keep up to date).
const COUNTRY_NAMES: [(&str, &str); 14] = [
    ("ARG", "Argentina"),
    ("BOL", "Bolivia"),
    ("BRA", "Brazil"),
    ("CHL", "Chile"),
    ("COL", "Colombia"),
    ("ECU", "Ecuador"),
    ("ESP", "Spain"),
    ("MEX", "Mexico"),
    ("PER", "Peru"),
    ("PRY", "Paraguay"),
    ("URY", "Uruguay"),
    ("USA", "United States"),
    ("VEN", "Venezuela"),
    ("GBR", "United Kingdom"),
];

/// The session's status as its own `&'static str`, or `None` if `text` is not one of Didit's ten.
pub(super) fn didit_status(text: &str) -> Option<&'static str> {
    STATUSES.into_iter().find(|s| *s == text)
}

/// One session, as created (or reused) by `POST /v3/session/`.
pub(super) struct Session {
    pub(super) id: String,
    pub(super) number: u64,
    pub(super) token: String,
    pub(super) url: String,
    pub(super) status: &'static str,
    pub(super) vendor_data: Option<String>,
    /// Always an object when present (a JSON string holding one is stored parsed).
    pub(super) metadata: Option<Value>,
    pub(super) callback: Option<String>,
    pub(super) contact_details: Option<Value>,
    pub(super) expected_details: Option<Value>,
    pub(super) created_at: DateTime<Utc>,
    /// Deleted sessions stay in the list so `session_ids()` still names them, but no route or
    /// webhook reaches them any more.
    pub(super) deleted: bool,
    checks: Checks,
}

/// The four feature arrays; `None` is `null`, a check that has not run.
#[derive(Default)]
struct Checks {
    id_verifications: Option<Value>,
    liveness_checks: Option<Value>,
    face_matches: Option<Value>,
    database_validations: Option<Value>,
}

/// How the face match came out, the check whose result tells the statuses apart.
#[derive(Clone, Copy)]
enum FaceMatch {
    Approved,
    InReview,
    Declined,
}

impl Session {
    /// A new session in `Not Started`, with no check run.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: String,
        number: u64,
        token: String,
        url: String,
        vendor_data: Option<String>,
        metadata: Option<Value>,
        callback: Option<String>,
        contact_details: Option<Value>,
        expected_details: Option<Value>,
    ) -> Session {
        Session {
            id,
            number,
            token,
            url,
            status: "Not Started",
            vendor_data,
            metadata,
            callback,
            contact_details,
            expected_details,
            created_at: Utc::now(),
            deleted: false,
            checks: Checks::default(),
        }
    }

    /// The answer of `POST /v3/session/`.
    pub(super) fn create_answer(&self, workflow_id: &str) -> Value {
        json!({
            "session_id": self.id,
            "session_number": self.number,
            "session_token": self.token,
            "url": self.url,
            "vendor_data": self.vendor_data,
            "metadata": self.metadata,
            "status": self.status,
            "workflow_id": workflow_id,
            "workflow_version": 1,
            "callback": self.callback,
            "session_kind": "user",
        })
    }

    /// Moves the session to `status` and fills the feature arrays as Didit has them then: the
    /// ID check alone while the person is in the flow, all four once it has ended, none before
    /// it starts or when it expired unopened. Image URLs are signed afresh, as Didit's
    /// short-lived links are.
    pub(super) fn set_status(&mut self, base_url: &str, status: &'static str) {
        self.status = status;
        let (id_status, rest) = match status {
            "Not Started" | "Expired" => (None, None),
            "In Progress" | "Awaiting User" | "Resubmitted" => (Some("Approved"), None),
            "Abandoned" => (Some("Not Finished"), None),
            "In Review" => (Some("Approved"), Some(FaceMatch::InReview)),
            "Declined" => (Some("Approved"), Some(FaceMatch::Declined)),
            // Approved, and Kyc Expired (approved once; the approval has lapsed since).
            _ => (Some("Approved"), Some(FaceMatch::Approved)),
        };
        let media = |name: &str| media_url(base_url, &self.id, name);
        self.checks = Checks {
            id_verifications: id_status.map(|s| json!([self.id_verification(s, &media)])),
            liveness_checks: rest.map(|_| {
                json!([{
                    "node_id": "feature_liveness",
                    "status": "Approved",
                    "method": "PASSIVE",
                    "score": 98.5,
                    "reference_image": media("liveness_reference"),
                    "warnings": [],
                }])
            }),
            face_matches: rest.map(|face| json!([face_match(face, &media)])),
            database_validations: rest.map(|_| {
                json!([{
                    "node_id": "feature_database_validation",
                    "status": "Approved",
                    "match_type": "full_match",
                    "validation_type": "1x1",
                    "warnings": [],
                }])
            }),
        };
    }

    /// A field of `expected_details`, if the client sent it as text.
    fn expected(&self, key: &str) -> Option<&str> {
        self.expected_details
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An expected country as an upper-case alpha-3 code, if it is one.
    fn expected_alpha3(&self, key: &str) -> Option<String> {
        self.expected(key)
            .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_ascii_uppercase)
    }

    /// The `id_verifications` item: what the document read gave, which is what the client said
    /// to expect, or sandbox defaults.
    fn id_verification(&self, status: &str, media: &dyn Fn(&str) -> String) -> Value {
        let first_name = self.expected("first_name").unwrap_or("SANDBOX");
        let last_name = self.expected("last_name").unwrap_or("PERSON");
        let date_of_birth = self.expected("date_of_birth").unwrap_or("1990-05-20");
        let today = self.created_at.date_naive();
        let age = NaiveDate::parse_from_str(date_of_birth, "%Y-%m-%d")
            .ok()
            .and_then(|born| today.years_since(born));
        let nationality = self
            .expected_alpha3("nationality")
            .or_else(|| self.expected_alpha3("id_country"))
            .unwrap_or_else(|| "ARG".into());
        let issuing_state = self
            .expected_alpha3("id_country")
            .unwrap_or_else(|| nationality.clone());
        let issuing_state_name = COUNTRY_NAMES
            .iter()
            .find(|(code, _)| *code == issuing_state)
            .map_or(issuing_state.as_str(), |(_, name)| name);
        let issued = today.checked_sub_months(Months::new(24)).unwrap_or(today);
        let expires = issued.checked_add_months(Months::new(120)).unwrap_or(today);
        json!({
            "node_id": "feature_ocr",
            "status": status,
            "document_type": "Identity Card",
            "document_number": self.expected("identification_number").unwrap_or("A1234567"),
            "personal_number": "99999999R",
            "portrait_image": media("portrait"),
            "front_image": media("front"),
            "back_image": media("back"),
            "date_of_birth": date_of_birth,
            "age": age,
            "expiration_date": expires.format("%Y-%m-%d").to_string(),
            "date_of_issue": issued.format("%Y-%m-%d").to_string(),
            "issuing_state": issuing_state,
            "issuing_state_name": issuing_state_name,
            "first_name": first_name,
            "last_name": last_name,
            "full_name": format!("{first_name} {last_name}"),
            "gender": "U",
            "address": null,
            "place_of_birth": "SANDBOX CITY",
            "nationality": nationality,
            "warnings": [],
        })
    }

    /// The decision, as `GET /v3/session/{id}/decision/` returns it and webhooks carry it.
    pub(super) fn decision(&self, workflow_id: &str) -> Value {
        json!({
            "session_id": self.id,
            "session_kind": "user",
            "session_number": self.number,
            "session_url": self.url,
            "status": self.status,
            "environment": "sandbox",
            "workflow_id": workflow_id,
            "features": FEATURES,
            "vendor_data": self.vendor_data,
            "metadata": self.metadata,
            "expected_details": self.expected_details,
            "contact_details": self.contact_details,
            "callback": self.callback,
            "created_at": self.created_at_rfc3339(),
            "reviews": [],
            "id_verifications": self.checks.id_verifications,
            "liveness_checks": self.checks.liveness_checks,
            "face_matches": self.checks.face_matches,
            "database_validations": self.checks.database_validations,
        })
    }

    /// A row of `GET /v3/sessions/`: the session and where each feature stands.
    pub(super) fn list_row(&self) -> Value {
        let arrays = [
            &self.checks.id_verifications,
            &self.checks.liveness_checks,
            &self.checks.face_matches,
            &self.checks.database_validations,
        ];
        let features: Vec<Value> = FEATURES
            .iter()
            .zip(arrays)
            .map(|(feature, items)| {
                let status = items
                    .as_ref()
                    .and_then(|items| items.get(0))
                    .and_then(|item| item.get("status"))
                    .and_then(Value::as_str)
                    .unwrap_or("Not Started");
                json!({"feature": feature, "status": status})
            })
            .collect();
        json!({
            "session_id": self.id,
            "session_kind": "user",
            "session_number": self.number,
            "session_url": self.url,
            "status": self.status,
            "vendor_data": self.vendor_data,
            "created_at": self.created_at_rfc3339(),
            "features": features,
        })
    }

    fn created_at_rfc3339(&self) -> String {
        self.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

/// The `face_matches` item; its score is what tells approved, in review and declined apart.
fn face_match(face: FaceMatch, media: &dyn Fn(&str) -> String) -> Value {
    let warning = |log_type: &str| {
        json!({
            "feature": "FACE_MATCH",
            "risk": "LOW_FACE_MATCH_SIMILARITY",
            "log_type": log_type,
            "short_description": "Low face match similarity",
            "long_description": "The face match between the selfie and the portrait on the \
                                 document scored below the threshold: they may not be the same \
                                 person.",
            "additional_data": null,
            "node_id": "feature_face",
        })
    };
    // 96.15 is not integral, so that clients meet a float score.
    let (status, score, warnings) = match face {
        FaceMatch::Approved => ("Approved", json!(96.15), json!([])),
        FaceMatch::InReview => ("In Review", json!(62), json!([warning("warning")])),
        FaceMatch::Declined => ("Declined", json!(12), json!([warning("error")])),
    };
    json!({
        "node_id": "feature_face",
        "status": status,
        "score": score,
        "source_image_session_id": null,
        "source_image": media("face_source"),
        "target_image": media("face_target"),
        "warnings": warnings,
    })
}

/// A fresh media URL, as Didit's presigned ones (the signature changes each time).
fn media_url(base_url: &str, session_id: &str, name: &str) -> String {
    format!(
        "{base_url}/_sandbox/media/{session_id}/{name}.jpg?sig={}",
        uuid::Uuid::new_v4().simple()
    )
}
