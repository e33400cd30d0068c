//! What callers may send, checked exactly as the OpenAPI schema states it.
//!
//! Every rule here has its twin in the published spec (a `pattern`, a length, a `format`, an
//! `enum`), and a test feeds the same bodies to both and fails where they disagree: a typed client
//! or a fuzzer that trusts the spec never meets a refusal the spec did not announce. Lengths count
//! characters, as JSON Schema does, not bytes. Error texts name the field and the rule, never the
//! value.

use crate::analytics::stats::{StatsGroup, StatsPeriod};
use crate::config::is_country_code;
use crate::http::problem::ApiError;
use crate::lifecycle::ReviewDecision;
use crate::lifecycle::create::NewVerification;
use crate::store::{EventFilter, EventState, ListFilter};
use kyc_core::{Checks, ManualOutcome, Personal, Status, Subject};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

/// Longest id-like text: `reference`, `subject.id`, names, national id, provider refs.
pub const MAX_TEXT: usize = 128;
/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL: usize = 254;
/// Longest `redirect_url`.
pub const MAX_URL: usize = 2048;
/// At most this many `metadata` keys.
pub const MAX_METADATA_KEYS: usize = 20;
/// Longest `metadata` key.
pub const MAX_METADATA_KEY: usize = 40;
/// Longest `metadata` value.
pub const MAX_METADATA_VALUE: usize = 500;
/// Largest page.
pub const MAX_LIMIT: u32 = 200;
/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 50;

/// C0 and C1 control characters and DEL: the class every text pattern of the spec excludes
/// (`[\u0000-\u001F\u007F-\u009F]`).
fn is_control(c: char) -> bool {
    c.is_control()
}

/// 1 to `max` characters, none of them a control character.
fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let count = value.chars().count();
    if count == 0 || count > max || value.chars().any(is_control) {
        return Err(ApiError::invalid(
            field,
            format!("must be 1 to {max} characters with no control characters"),
        ));
    }
    Ok(())
}

fn personal_text(field: &str, value: &Option<Personal<String>>) -> Result<(), ApiError> {
    match value {
        Some(v) => text(field, v.expose(), MAX_TEXT),
        None => Ok(()),
    }
}

/// An addr-spec in its common form: a local part, one `@`, a domain; no spaces or control
/// characters. The spec says `format: email`.
fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    value.chars().count() <= MAX_EMAIL
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !value.chars().any(|c| is_control(c) || c.is_whitespace())
}

/// E.164: `+`, a non-zero digit, then 6 to 14 more digits (`^\+[1-9][0-9]{6,14}$`).
fn is_phone(value: &str) -> bool {
    let Some(digits) = value.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `http://` or `https://` and at least one more character, with no space or control character
/// (`^https?://[^\u0000-\u0020\u007F-\u009F]+$`).
fn is_http_url(value: &str) -> bool {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.chars().any(|c| is_control(c) || c == ' '))
        && value.chars().count() <= MAX_URL
}

/// A verification id as the gateway makes them: `ver_` and a ULID (`^ver_[0-9A-HJKMNP-TV-Z]{26}$`).
pub fn is_verification_id(value: &str) -> bool {
    is_prefixed_ulid("ver_", value)
}

/// A line of the delivery log: a verification, an experiment, the endpoint or an erasure.
fn is_event_line(value: &str) -> bool {
    let experiment = value.strip_prefix("experiment:").is_some_and(|name| {
        (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    is_verification_id(value)
        || experiment
        || value == "endpoint"
        || value
            .strip_prefix("erasure:")
            .is_some_and(|erasure| is_prefixed_ulid("ers_", erasure))
}

/// `prefix` and a ULID in Crockford's base 32.
fn is_prefixed_ulid(prefix: &str, value: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|ulid| {
        ulid.len() == 26
            && ulid.bytes().all(|b| {
                b.is_ascii_digit()
                    || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
            })
    })
}

/// The subject of a create request.
fn check_subject(subject: &Subject, is_provider: impl Fn(&str) -> bool) -> Result<(), ApiError> {
    text("subject.id", &subject.id, MAX_TEXT)?;
    if !is_country_code(&subject.country) {
        return Err(ApiError::invalid(
            "subject.country",
            "must be an assigned ISO 3166-1 alpha-2 code in capitals, such as \"CL\"",
        ));
    }
    personal_text("subject.national_id", &subject.national_id)?;
    personal_text("subject.first_name", &subject.first_name)?;
    personal_text("subject.last_name", &subject.last_name)?;
    if let Some(email) = &subject.email
        && !is_email(email.expose())
    {
        return Err(ApiError::invalid(
            "subject.email",
            format!("must be an email address of at most {MAX_EMAIL} characters"),
        ));
    }
    if let Some(phone) = &subject.phone
        && !is_phone(phone.expose())
    {
        return Err(ApiError::invalid(
            "subject.phone",
            "must be an E.164 number: + and 7 to 15 digits, such as \"+56912345678\"",
        ));
    }
    let refs = &subject.provider_refs;
    if refs.len() > kyc_core::model::MAX_PROVIDER_REFS || !refs.keys().all(|k| is_provider(k)) {
        return Err(ApiError::invalid(
            "subject.provider_refs",
            "keys must name provider instances of the policy",
        ));
    }
    for value in refs.values() {
        text("subject.provider_refs", value, MAX_TEXT)?;
    }
    Ok(())
}

/// `redirect_url` of a create request.
fn check_redirect_url(url: Option<&str>) -> Result<(), ApiError> {
    match url {
        Some(url) if !is_http_url(url) => Err(ApiError::invalid(
            "redirect_url",
            format!("must be an http(s) URL of at most {MAX_URL} characters, with no spaces"),
        )),
        _ => Ok(()),
    }
}

/// `metadata` of a create request: a flat object of short strings.
fn check_metadata(
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), ApiError> {
    let Some(metadata) = metadata else {
        return Ok(());
    };
    let ok = metadata.len() <= MAX_METADATA_KEYS
        && metadata.iter().all(|(key, value)| {
            (1..=MAX_METADATA_KEY).contains(&key.chars().count())
                && value
                    .as_str()
                    .is_some_and(|v| v.chars().count() <= MAX_METADATA_VALUE)
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "metadata",
            format!(
                "must be an object of at most {MAX_METADATA_KEYS} keys of 1 to \
                 {MAX_METADATA_KEY} characters, each holding a string of at most \
                 {MAX_METADATA_VALUE} characters"
            ),
        ))
    }
}

/// Start a verification.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "reference": "order-1001",
    "subject": {
        "id": "customer-42",
        "country": "CL",
        "national_id": "11111111-1",
        "first_name": "Ana",
        "last_name": "Rojas",
        "date_of_birth": "1990-05-20",
        "email": "ana.rojas@example.com"
    },
    "checks": {"document": true, "liveness": true, "face_match": true, "aml": false},
    "redirect_url": "https://app.example/kyc/done",
    "metadata": {"order": "1001", "channel": "web"}
}))]
pub struct CreateVerification {
    /// Your id for this verification: unique per tenant, and the idempotency key (the same
    /// reference with the same body returns the first verification).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
        example = "order-1001"
    )]
    pub reference: String,
    /// The person to verify.
    pub subject: Subject,
    /// Checks to run (default: document, liveness, face_match).
    #[serde(default)]
    pub checks: Option<Checks>,
    /// Where the provider sends the person when done, where it supports it (http or https).
    #[serde(default)]
    #[schema(
        max_length = 2048,
        pattern = "^https?://[^\\u0000-\\u0020\\u007F-\\u009F]+$",
        example = "https://app.example/kyc/done"
    )]
    pub redirect_url: Option<String>,
    /// Your own labels, stored and returned as given: at most 20 keys of 1 to 40 characters, each
    /// holding a string of at most 500 characters. No personal data.
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// A provider instance to use, honoured only where the tenant policy sets `allow_override`
    /// (otherwise 422). The spec served at `/openapi.json` lists this deployment's instances.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    pub provider: Option<String>,
}

/// The OpenAPI schema of `metadata` (see [`check_metadata`]).
fn metadata_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Object,
            Type::Null,
        ]))
        .max_properties(Some(MAX_METADATA_KEYS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_METADATA_KEY)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_METADATA_VALUE))
                .into(),
        )))
        .description(Some(
            "Your own labels, stored and returned as given: at most 20 keys of 1 to 40 \
             characters, each holding a string of at most 500 characters. No personal data.",
        ))
        .build()
}

impl CreateVerification {
    /// Checks every field the schema constrains beyond its type. `is_provider` tells the
    /// policy's provider instance names, the allowed keys of `subject.provider_refs`.
    pub fn check(&self, is_provider: impl Fn(&str) -> bool) -> Result<(), ApiError> {
        text("reference", &self.reference, MAX_TEXT)?;
        if let Some(provider) = &self.provider
            && !is_provider(provider)
        {
            return Err(ApiError::invalid(
                "provider",
                "must name a provider instance of the policy",
            ));
        }
        check_subject(&self.subject, is_provider)?;
        check_redirect_url(self.redirect_url.as_deref())?;
        check_metadata(self.metadata.as_ref())
    }

    /// The lifecycle's command for this request; `raw` is the body as sent, hashed so that a
    /// retry is known by its body without storing the personal fields.
    pub fn into_command(self, raw: &serde_json::Value) -> NewVerification {
        NewVerification {
            reference: self.reference,
            subject: self.subject,
            checks: self.checks,
            redirect_url: self.redirect_url,
            metadata: self.metadata,
            provider: self.provider,
            request_hash: request_hash(raw),
        }
    }
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
    use sha2::Digest;
    let mut text = String::new();
    canonical(raw, &mut text);
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A page size: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
/// An RFC 3339 date-time parameter, as UTC.
fn instant(
    field: &str,
    value: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::invalid(
                        field,
                        "must be an RFC 3339 date-time, e.g. 2026-01-01T00:00:00Z",
                    )
                })
        })
        .transpose()
}

fn page_size(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => Some(l)
            .filter(|l| l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse::<u32>().ok())
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )
            }),
    }
}

/// Filters and paging for listing verifications, as sent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Exact caller reference.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
        example = "order-1001"
    )]
    pub reference: Option<String>,
    /// Exact subject id.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
        example = "customer-42"
    )]
    pub subject_id: Option<String>,
    /// One status.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// One provider instance (a name from the policy).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
        example = "betrust-cl"
    )]
    pub provider: Option<String>,
    /// Only verifications created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-01-01T00:00:00Z")]
    pub created_after: Option<String>,
    /// Only verifications created before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-02-01T00:00:00Z")]
    pub created_before: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200, example = 20)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^ver_[0-9A-HJKMNP-TV-Z]{26}$")]
    pub cursor: Option<String>,
}

impl ListParams {
    /// Checks every parameter. An empty value is refused like any other bad value: the spec
    /// gives each a minimum length, a pattern or an enum.
    pub fn check(self) -> Result<ListFilter, ApiError> {
        if let Some(reference) = &self.reference {
            text("reference", reference, MAX_TEXT)?;
        }
        if let Some(subject_id) = &self.subject_id {
            text("subject_id", subject_id, MAX_TEXT)?;
        }
        if let Some(provider) = &self.provider {
            text("provider", provider, MAX_TEXT)?;
        }
        let created_after = instant("created_after", self.created_after.as_deref())?;
        let created_before = instant("created_before", self.created_before.as_deref())?;
        let limit = page_size(self.limit.as_deref())?;
        let status = self
            .status
            .as_deref()
            .map(|s| {
                Status::parse(s).ok_or_else(|| {
                    ApiError::invalid(
                        "status",
                        "must be one of pending, in_progress, in_review, approved, rejected, \
                         expired, abandoned, cancelled",
                    )
                })
            })
            .transpose()?;
        if let Some(cursor) = &self.cursor
            && !is_verification_id(cursor)
        {
            return Err(ApiError::invalid(
                "cursor",
                "must be a next_cursor from a previous page",
            ));
        }
        Ok(ListFilter {
            reference: self.reference,
            subject_id: self.subject_id,
            provider: self.provider,
            created_after,
            created_before,
            status,
            before_id: self.cursor,
            limit,
        })
    }
}

/// The period and grouping of `GET /v1/stats`, as sent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Start (RFC 3339): counts from its UTC day on; default 30 days before `to`.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-01T00:00:00Z")]
    pub from: Option<String>,
    /// End (RFC 3339): counts up to its UTC day, included; default now.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-30T00:00:00Z")]
    pub to: Option<String>,
    /// `provider` (default), `country` or `provider,country`.
    #[param(value_type = Option<String>, pattern = "^(provider|country|provider,country)$")]
    pub group_by: Option<String>,
}

/// The period of `GET /v1/audit/export`, as sent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditExportParams {
    /// Start (RFC 3339), included.
    #[param(value_type = String, format = DateTime, example = "2026-11-01T00:00:00Z")]
    pub from: Option<String>,
    /// End (RFC 3339), excluded; default now. A period that ends before it starts is empty.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-12-01T00:00:00Z")]
    pub to: Option<String>,
}

impl AuditExportParams {
    /// Checks both: `from` is required. A period that ends before it starts is empty; one that
    /// starts before 1970 starts then (no history is older).
    pub fn check(
        self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), ApiError> {
        let from = instant("from", self.from.as_deref())?
            .ok_or_else(|| ApiError::invalid("from", "is required: the period's start"))?;
        let to = instant("to", self.to.as_deref())?.unwrap_or(now);
        let from = from.max(chrono::DateTime::UNIX_EPOCH);
        Ok((from, to.max(from)))
    }
}

/// The first day RFC 3339 can write.
const YEAR_ZERO: chrono::NaiveDate = chrono::NaiveDate::from_ymd_opt(0, 1, 1).expect("a date");

impl StatsParams {
    /// Checks every parameter.
    pub fn check(self, now: chrono::DateTime<chrono::Utc>) -> Result<StatsPeriod, ApiError> {
        let by = match self.group_by.as_deref() {
            None | Some("provider") => StatsGroup::Provider,
            Some("country") => StatsGroup::Country,
            Some("provider,country") => StatsGroup::ProviderCountry,
            Some(_) => {
                return Err(ApiError::invalid(
                    "group_by",
                    "must be provider, country or provider,country",
                ));
            }
        };
        let to = instant("to", self.to.as_deref())?
            .unwrap_or(now)
            .date_naive();
        let from = match instant("from", self.from.as_deref())? {
            Some(from) => from.date_naive(),
            // Never before year 0, which RFC 3339 cannot write.
            None => (to - chrono::Duration::days(30)).max(YEAR_ZERO),
        };
        Ok(StatsPeriod { from, to, by })
    }
}

/// Which failed events to send again (`POST /v1/events/recover`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"since": "2026-12-01T00:00:00Z"}))]
pub struct RecoverEvents {
    /// The events created at or after this time (RFC 3339) that failed are sent again; a time
    /// more than 14 days ago counts as 14 days ago.
    #[schema(value_type = String, format = DateTime)]
    pub since: chrono::DateTime<chrono::Utc>,
}

/// A manual decision on a verification in review, as sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"outcome": "approve", "reason": "Document and selfie checked by hand"}))]
pub struct ManualDecision {
    /// Approve or reject.
    pub outcome: ManualOutcome,
    /// Why, in the reviewer's words: 5 to 500 characters, no control characters. Sent to the
    /// provider and kept by it; keep personal data out.
    #[schema(
        min_length = 5,
        max_length = 500,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub reason: String,
}

impl ManualDecision {
    /// The lifecycle's command for this decision, made with the key named `by`.
    pub fn into_command(self, by: &str) -> ReviewDecision {
        ReviewDecision {
            outcome: self.outcome,
            reason: self.reason,
            by: by.to_string(),
        }
    }

    /// Checks the reason as the spec states it.
    pub fn check(&self) -> Result<(), ApiError> {
        let count = self.reason.chars().count();
        if !(5..=500).contains(&count) || self.reason.chars().any(is_control) {
            return Err(ApiError::invalid(
                "reason",
                "must be 5 to 500 characters with no control characters",
            ));
        }
        Ok(())
    }
}

/// Filters and paging of the delivery log, as sent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only the events of this line, as the log names it: a verification (`ver_...`), an
    /// experiment (`experiment:<name>`), the endpoint (`endpoint`) or an erasure
    /// (`erasure:ers_...`).
    #[param(
        pattern = "^(ver_[0-9A-HJKMNP-TV-Z]{26}|erasure:ers_[0-9A-HJKMNP-TV-Z]{26}|experiment:[A-Za-z0-9_-]{1,64}|endpoint)$"
    )]
    pub verification_id: Option<String>,
    /// Only events in this state.
    #[param(value_type = Option<EventState>)]
    pub state: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200, example = 20)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^evt_[0-9A-HJKMNP-TV-Z]{26}$")]
    pub cursor: Option<String>,
}

impl EventParams {
    /// Checks every parameter as the spec states it.
    pub fn check(self) -> Result<EventFilter, ApiError> {
        if let Some(v) = &self.verification_id
            && !is_event_line(v)
        {
            return Err(ApiError::invalid(
                "verification_id",
                "must be a verification id (ver_...), experiment:<name>, endpoint or \
                 erasure:ers_...",
            ));
        }
        let state = self
            .state
            .as_deref()
            .map(|s| {
                EventState::parse(s).ok_or_else(|| {
                    ApiError::invalid("state", "must be one of pending, delivered, failed")
                })
            })
            .transpose()?;
        if let Some(cursor) = &self.cursor
            && !is_prefixed_ulid("evt_", cursor)
        {
            return Err(ApiError::invalid(
                "cursor",
                "must be a next_cursor from a previous page",
            ));
        }
        Ok(EventFilter {
            verification_id: self.verification_id,
            state,
            before_id: self.cursor,
            limit: page_size(self.limit.as_deref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The code and the published schema give the same verdict on the same body.

    use super::*;

    #[test]
    fn request_hash_ignores_key_order_but_not_values() {
        let a = serde_json::json!({"reference": "r", "subject": {"id": "s", "country": "CL"}});
        let b = serde_json::json!({"subject": {"country": "CL", "id": "s"}, "reference": "r"});
        let c = serde_json::json!({"subject": {"country": "AR", "id": "s"}, "reference": "r"});
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
    }
    use serde_json::{Value, json};

    const PROVIDERS: [&str; 2] = ["betrust-sandbox", "gu1-sandbox"];

    fn code_accepts(body: &Value) -> bool {
        crate::http::extract::read_body::<CreateVerification>(body)
            .is_ok_and(|b| b.check(|name| PROVIDERS.contains(&name)).is_ok())
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut body = json!({"reference": "order-1", "subject": {"id": "s-1", "country": "CL"}});
        let mut at = &mut body;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        body
    }

    #[test]
    fn the_create_schema_and_the_code_agree() {
        let spec = crate::http::openapi::served(&crate::http::openapi::document(), PROVIDERS);
        let schema = &spec["components"]["schemas"]["CreateVerification"];
        let validator = crate::http::openapi::checks::validator(&spec, schema);
        let long = |n: usize, c: char| Value::String(std::iter::repeat_n(c, n).collect());
        let cases = [
            with(&["reference"], json!("order-1")),
            with(&["reference"], json!("")),
            with(&["reference"], long(128, 'é')),
            with(&["reference"], long(129, 'a')),
            with(&["reference"], json!("a\u{7f}")),
            with(&["reference"], json!("a\u{85}")),
            with(&["reference"], json!("a\u{a0}b")),
            with(&["reference"], json!(12)),
            with(&["subject", "id"], json!("\t")),
            with(&["subject", "country"], json!("cl")),
            with(&["subject", "country"], json!("CHL")),
            with(&["subject", "country"], json!("XX")),
            with(&["subject", "country"], json!("AR")),
            with(&["subject", "national_id"], json!("")),
            with(&["subject", "national_id"], json!(null)),
            with(&["subject", "first_name"], long(128, '名')),
            with(&["subject", "last_name"], long(129, 'x')),
            with(&["subject", "date_of_birth"], json!("1990-05-20")),
            with(&["subject", "date_of_birth"], json!("1990-02-30")),
            with(&["subject", "date_of_birth"], json!("20/05/1990")),
            with(&["subject", "email"], json!("ana@example.com")),
            with(&["subject", "email"], json!("ana.example.com")),
            with(&["subject", "email"], json!("ana@b@example.com")),
            with(&["subject", "phone"], json!("+56912345678")),
            with(&["subject", "phone"], json!("+0123456789")),
            with(&["subject", "phone"], json!("+123456")),
            with(&["subject", "phone"], json!("+1234567")),
            with(&["subject", "phone"], json!("+1234567890123456")),
            with(&["subject", "phone"], json!("56912345678")),
            with(
                &["subject", "provider_refs"],
                json!({"gu1-sandbox": "ent-1"}),
            ),
            with(&["subject", "provider_refs"], json!({"gu1-sandbox": ""})),
            with(&["subject", "provider_refs"], json!({"": ""})),
            with(&["subject", "provider_refs"], json!({"nope": "ent-1"})),
            with(&["subject", "provider_refs"], json!(null)),
            with(&["subject", "nickname"], json!("x")),
            with(&["checks"], json!({"aml": true})),
            with(&["checks"], json!({"selfie": true})),
            with(&["checks"], json!(null)),
            with(&["checks"], json!([])),
            with(&["checks"], json!([true, true, true, false])),
            with(&["subject"], json!(["s-1", "CL"])),
            with(&["metadata"], json!({"k": []})),
            with(&["redirect_url"], json!("https://app.example/done?x=1")),
            with(&["redirect_url"], json!("http://")),
            with(&["redirect_url"], json!("ftp://app.example")),
            with(&["redirect_url"], json!("https://app.example/a b")),
            with(&["metadata"], json!({"order": "1001"})),
            with(&["metadata"], json!({"order": 1001})),
            with(&["metadata"], json!({"": "x"})),
            with(&["metadata"], json!({"k": long(500, 'ü')})),
            with(&["metadata"], json!({"k": long(501, 'u')})),
            with(
                &["metadata"],
                json!(
                    (0..21)
                        .map(|i| (format!("k{i}"), json!("v")))
                        .collect::<serde_json::Map<_, _>>()
                ),
            ),
            with(&["metadata"], json!([1])),
            with(&["provider"], json!("gu1-sandbox")),
            with(&["provider"], json!("gu1")),
            with(&["provider"], json!(null)),
            with(&["extra"], json!(1)),
        ];
        let mut accepted = 0;
        for body in &cases {
            let by_schema = validator.is_valid(body);
            assert_eq!(
                by_schema,
                code_accepts(body),
                "schema says {by_schema} for {body}"
            );
            accepted += usize::from(by_schema);
        }
        assert!(accepted > 10 && accepted < cases.len() - 10, "{accepted}");
    }

    #[test]
    fn list_parameters_follow_their_schema() {
        let parse = |query: &str| {
            let params: ListParams = serde_urlencoded_query(query);
            params.check().map(|q| q.limit)
        };
        assert_eq!(parse("").unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse("limit=200").unwrap(), 200);
        for bad in [
            "limit=0",
            "limit=201",
            "limit=",
            "limit=%2B5",
            "limit=1.5",
            "status=",
            "status=done",
            "cursor=",
            "cursor=ver_01ILOU0000000000000000000A",
            "reference=",
            "subject_id=%7F",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("cursor=ver_01JD5Z8K3W6Q2B7N4R9T0V1X2Y&status=in_review").is_ok());
    }

    fn serde_urlencoded_query(query: &str) -> ListParams {
        let uri: axum::http::Uri = format!("/v1/verifications?{query}").parse().unwrap();
        axum::extract::Query::<ListParams>::try_from_uri(&uri)
            .unwrap()
            .0
    }
}
