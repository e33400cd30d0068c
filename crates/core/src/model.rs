//! The normalized verification model: what callers see, whatever the provider.

use crate::personal::Personal;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Where a verification stands. The same eight values for every provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created; the person has not started.
    Pending,
    /// The person is going through the flow.
    InProgress,
    /// Finished by the person, waiting for a manual decision at the provider.
    InReview,
    /// Identity confirmed. Final.
    Approved,
    /// Identity not confirmed. Final.
    Rejected,
    /// The link expired before the person finished. Final.
    Expired,
    /// The person started and gave up. Final.
    Abandoned,
    /// Cancelled by the caller or the provider. Final.
    Cancelled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::InProgress,
        Status::InReview,
        Status::Approved,
        Status::Rejected,
        Status::Expired,
        Status::Abandoned,
        Status::Cancelled,
    ];

    /// A final status never changes again, whatever arrives later.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Approved
                | Status::Rejected
                | Status::Expired
                | Status::Abandoned
                | Status::Cancelled
        )
    }

    /// The wire name (`in_progress`), also used as the stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::InReview => "in_review",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Abandoned => "abandoned",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses the wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether moving from `self` to `next` is allowed: never out of a final status, never back
    /// from a later non-final stage to an earlier one (a late `in_progress` after `in_review`).
    pub fn may_become(self, next: Status) -> bool {
        if self.is_final() {
            return false;
        }
        if next.is_final() {
            return true;
        }
        Self::stage(next) >= Self::stage(self)
    }

    fn stage(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::InProgress => 1,
            Status::InReview => 2,
            _ => 3,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verification is where it is, in our words and the provider's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reason {
    /// Our stable code, e.g. `document_rejected`, `link_expired`, `provider_step`.
    pub code: String,
    /// The provider's own code (BeTrust step / issue_description, gu1 status), kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// A short human explanation. Never carries personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The outcome of one check within a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
    /// The check needs a person to look at it.
    Review,
    /// Not run, not reported, or not yet known.
    #[default]
    Unknown,
}

/// Provider scores on a 0-100 scale, where the provider reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Scores {
    /// Document authenticity or identity-verification score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<f64>,
    /// Liveness score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<f64>,
    /// Selfie-to-document face match score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_match: Option<f64>,
}

/// Per-check outcomes and scores: what the provider decided, without any personal data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// Document authenticity.
    pub document: CheckOutcome,
    /// Liveness of the person in front of the camera.
    pub liveness: CheckOutcome,
    /// Face on the document matches the selfie.
    pub face_match: CheckOutcome,
    /// Sanctions / PEP screening.
    pub aml: CheckOutcome,
    /// Scores, 0-100.
    #[serde(default)]
    pub scores: Scores,
}

impl Decision {
    /// The explanation of a rejection in our words: `"{provider} did not confirm the identity"`,
    /// naming the checks that failed, where any did. Holds no personal data.
    pub fn rejection_message(decision: Option<&Decision>, provider: &str) -> String {
        let failed: Vec<&str> = decision
            .map(|d| {
                [
                    ("document", d.document),
                    ("liveness", d.liveness),
                    ("face match", d.face_match),
                    ("AML screening", d.aml),
                ]
                .into_iter()
                .filter(|(_, outcome)| *outcome == CheckOutcome::Fail)
                .map(|(name, _)| name)
                .collect()
            })
            .unwrap_or_default();
        if failed.is_empty() {
            format!("{provider} did not confirm the identity")
        } else {
            format!(
                "{provider} did not confirm the identity; failed: {}",
                failed.join(", ")
            )
        }
    }
}

/// Which checks the caller asks for. Providers that cannot switch a check off ignore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Checks {
    /// Document capture and authenticity.
    pub document: bool,
    /// Liveness.
    pub liveness: bool,
    /// Face match between selfie and document.
    pub face_match: bool,
    /// Sanctions / PEP screening.
    pub aml: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            document: true,
            liveness: true,
            face_match: true,
            aml: false,
        }
    }
}

/// The person to verify, as the caller describes them.
///
/// Only `id` and `country` are kept by the gateway; the personal fields go to the provider and are
/// forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The caller's id for the person. Not personal data by contract: use an opaque id.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
        example = "customer-42"
    )]
    pub id: String,
    /// ISO 3166-1 alpha-2 country code (`CL`, `AR`).
    #[schema(pattern = "^[A-Z]{2}$", example = "CL")]
    pub country: String,
    /// National id (RUT, DNI, CUIT...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$", example = "11111111-1")]
    pub national_id: Option<Personal<String>>,
    /// Given name(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$", example = "Ana")]
    pub first_name: Option<Personal<String>>,
    /// Family name(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$", example = "Rojas")]
    pub last_name: Option<Personal<String>>,
    /// Birth date, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Date, example = "1990-05-20")]
    pub date_of_birth: Option<Personal<NaiveDate>>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = "email", max_length = 254, example = "ana.rojas@example.com")]
    pub email: Option<Personal<String>>,
    /// Phone number, E.164 (`+` and 7 to 15 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^\\+[1-9][0-9]{6,14}$", example = "+56912345678")]
    pub phone: Option<Personal<String>>,
    /// The person's ids at providers, by provider instance name (e.g. an existing gu1 entity id).
    /// Keys must name provider instances of the policy; values are 1 to 128 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = provider_refs_schema)]
    pub provider_refs: BTreeMap<String, String>,
}

/// What a provider instance name looks like (the policy refuses others): it appears in URLs and
/// as a key of `provider_refs`.
pub const PROVIDER_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

/// At most this many `provider_refs`.
pub const MAX_PROVIDER_REFS: usize = 16;

/// The OpenAPI schema of `provider_refs`: names of provider instances to ids of 1 to 128 characters.
fn provider_refs_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(PROVIDER_NAME_PATTERN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(128))
                .pattern(Some("^[^\\u0000-\\u001F\\u007F-\\u009F]+$"))
                .into(),
        )))
        .max_properties(Some(MAX_PROVIDER_REFS))
        .description(Some(
            "The person's ids at providers, by provider instance name (e.g. an existing gu1 \
             entity id). Keys must name provider instances of the policy; values are 1 to 128 \
             characters.",
        ))
        .build()
}

/// Document data extracted by the provider. Read live and handed to the caller; never stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    /// Given name(s) as on the document.
    #[schema(value_type = Option<String>)]
    pub first_name: Option<Personal<String>>,
    /// Family name(s) as on the document.
    #[schema(value_type = Option<String>)]
    pub last_name: Option<Personal<String>>,
    /// Birth date, ISO `YYYY-MM-DD`.
    #[schema(value_type = Option<String>, format = Date)]
    pub date_of_birth: Option<Personal<NaiveDate>>,
    /// National id.
    #[schema(value_type = Option<String>)]
    pub national_id: Option<Personal<String>>,
    /// Document number.
    #[schema(value_type = Option<String>)]
    pub document_number: Option<Personal<String>>,
    /// Document type as the provider names it (`Identity Card`, `passport`).
    pub document_type: Option<String>,
    /// Nationality, as the provider reports it.
    #[schema(value_type = Option<String>)]
    pub nationality: Option<Personal<String>>,
    /// The provider's identity-verification score, 0-100.
    pub score: Option<f64>,
}

/// Why a verification went where it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoutingRecord {
    /// What chose the instance that runs it.
    pub reason: RoutingReason,
    /// The instances tried first, in order, that were unavailable.
    pub tried: Vec<String>,
    /// For reason `experiment`, the experiment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// For reason `experiment`, the arm the subject is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<Arm>,
    /// For reason `optimize`, each instance's share of new subjects (percent) when this one was
    /// routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<std::collections::BTreeMap<String, f64>>,
}

/// An arm of a champion-challenger experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The instance measured against.
    Champion,
    /// The instance on trial.
    Challenger,
}

impl Arm {
    /// The snake_case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Champion => "champion",
            Arm::Challenger => "challenger",
        }
    }

    /// The arm named by [`Arm::as_str`].
    pub fn parse(name: &str) -> Option<Arm> {
        [Arm::Champion, Arm::Challenger]
            .into_iter()
            .find(|arm| arm.as_str() == name)
    }
}

/// What chose a verification's provider instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoutingReason {
    /// A country rule of the tenant's routing.
    Rule,
    /// The weighted split (sticky per subject).
    Split,
    /// The tenant's default instance.
    Default,
    /// The request's own `provider`, where the tenant may choose.
    Override,
    /// A fallback instance, after the ones in `tried` were unavailable.
    Fallback,
    /// A champion-challenger experiment of the tenant's routing (see `arm`).
    Experiment,
    /// Adaptive routing by approvals per cost (see `shares`).
    Optimize,
}

/// A verification as callers see it: the gateway's record of one attempt at one provider.
///
/// It holds no name, national id, birth date or document number: those stay at the provider and are
/// read live through the identity endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// The gateway's id, `ver_` + ULID.
    #[schema(example = "ver_01JD5Z8K3W6Q2B7N4R9T0V1X2Y")]
    pub id: String,
    /// The caller's reference: unique per tenant, the idempotency key of create.
    pub reference: String,
    /// The caller's subject id.
    pub subject_id: String,
    /// The provider instance that runs it (a name from the policy, e.g. `betrust-cl`).
    pub provider: String,
    /// The provider's id for it (BeTrust transaction uuid, gu1 validation id).
    pub provider_reference: String,
    /// Where it stands.
    pub status: Status,
    /// Why, when the provider says.
    pub reason: Option<Reason>,
    /// The link to hand to the person.
    pub verification_url: Option<String>,
    /// When the link stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Per-check outcomes and scores, once known.
    pub decision: Option<Decision>,
    /// The caller's own small JSON object, stored and returned as given (keep personal data out).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Why it went to its provider instance (absent on verifications made before this was kept).
    pub routing: Option<RoutingRecord>,
    /// When the gateway accepted it.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
}

/// A subject's KYC standing: is this person verified right now?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubjectStanding {
    /// The caller's subject id.
    pub subject_id: String,
    /// Whether the subject holds an approved, unexpired verification.
    pub verified: bool,
    /// The subject's latest verification, if any.
    pub current: Option<Verification>,
    /// When the approval was given.
    pub verified_at: Option<DateTime<Utc>>,
    /// When the approval stops counting.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the subject must be verified again.
    pub needs_reverification: bool,
    /// How many of the subject's verifications were started after its approval had lapsed.
    pub reverifications: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_never_change() {
        for from in Status::ALL.into_iter().filter(|s| s.is_final()) {
            for to in Status::ALL {
                assert!(!from.may_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn stages_only_move_forward() {
        assert!(Status::Pending.may_become(Status::InProgress));
        assert!(Status::InProgress.may_become(Status::InReview));
        assert!(Status::InReview.may_become(Status::Approved));
        assert!(!Status::InReview.may_become(Status::InProgress));
        assert!(!Status::InProgress.may_become(Status::Pending));
    }

    #[test]
    fn status_names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn subject_debug_hides_personal_fields() {
        let s: Subject = serde_json::from_value(serde_json::json!({
            "id": "cus_1", "country": "CL", "national_id": "11111111-1",
            "first_name": "Juan", "date_of_birth": "1990-05-20"
        }))
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("11111111"));
        assert!(!printed.contains("Juan"));
        assert!(!printed.contains("1990"));
    }
}
