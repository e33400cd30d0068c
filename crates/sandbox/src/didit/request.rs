//! What Didit's API takes and how it refuses: the checks of a create body, field by field as
//! Didit's serializer makes them, and the `{detail, code}` error answers (with the field's
//! messages, Django REST Framework style, for a 400 about one field).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

/// Largest accepted session `metadata`, serialized.
const MAX_METADATA_BYTES: usize = 10 * 1024;

/// Longest accepted `vendor_data`, in characters.
const MAX_VENDOR_DATA_CHARS: usize = 256;

/// Didit's error body, `{detail, code}`.
pub(super) fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({"detail": detail, "code": code}))).into_response()
}

pub(super) fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "Not found.")
}

pub(super) fn parse_error() -> Response {
    error(StatusCode::BAD_REQUEST, "parse_error", "JSON parse error.")
}

/// A 400 about one field, Django REST Framework style: the message in a list under the field's
/// name (nested for a field of an object, e.g. `expected_details.date_of_birth`), beside
/// `detail` and `code`. Messages never repeat the value sent.
pub(super) fn invalid(path: &[&str], message: &str) -> Response {
    let (field, inner) = path.split_first().unwrap_or((&"non_field_errors", &[]));
    let mut errors = json!([message]);
    for key in inner.iter().rev() {
        errors = json!({ *key: errors });
    }
    let mut body = Map::new();
    body.insert(
        "detail".into(),
        format!("{}: {message}", path.join(".")).into(),
    );
    body.insert("code".into(), "invalid_request".into());
    body.insert((*field).to_owned(), errors);
    (StatusCode::BAD_REQUEST, Json(Value::Object(body))).into_response()
}

/// Why a request is refused, kept small until it becomes Didit's answer.
pub(super) enum Refusal {
    /// A 400 about the field at this path, with this message (see [`invalid`]).
    Field(Vec<&'static str>, &'static str),
    /// Another status, with its code and detail (see [`error`]).
    Status(StatusCode, &'static str, &'static str),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Field(path, message) => invalid(&path, message),
            Refusal::Status(status, code, detail) => error(status, code, detail),
        }
    }
}

/// A field that is present and not `null`.
fn given<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    fields.get(key).filter(|v| !v.is_null())
}

/// Whether `text` is an absolute http(s) URL.
fn is_url(text: &str) -> bool {
    reqwest::Url::parse(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

/// What a create asks for, checked field by field as Didit's serializer does. Unknown fields are
/// ignored.
pub(super) struct NewSession {
    pub(super) vendor_data: Option<String>,
    pub(super) callback: Option<String>,
    pub(super) metadata: Option<Value>,
    pub(super) contact_details: Option<Value>,
    pub(super) expected_details: Option<Value>,
}

impl NewSession {
    pub(super) fn read(
        request: &Map<String, Value>,
        workflow_id: &str,
    ) -> Result<NewSession, Refusal> {
        let same_workflow = |sent: &str| {
            sent == workflow_id
                || uuid::Uuid::parse_str(sent).ok() == uuid::Uuid::parse_str(workflow_id).ok()
        };
        match given(request, "workflow_id") {
            None => {
                return Err(Refusal::Field(
                    vec!["workflow_id"],
                    "This field is required.",
                ));
            }
            Some(Value::String(sent)) if uuid::Uuid::parse_str(sent).is_ok() => {
                if !same_workflow(sent) {
                    return Err(Refusal::Status(
                        StatusCode::NOT_FOUND,
                        "workflow_not_found",
                        "Workflow not found, or not published.",
                    ));
                }
            }
            Some(Value::String(sent)) if sent == workflow_id => {}
            Some(_) => return Err(Refusal::Field(vec!["workflow_id"], "Must be a valid UUID.")),
        }
        let vendor_data = match given(request, "vendor_data") {
            None => None,
            Some(Value::String(text)) if text.chars().count() > MAX_VENDOR_DATA_CHARS => {
                return Err(Refusal::Field(
                    vec!["vendor_data"],
                    "Ensure this field has no more than 256 characters.",
                ));
            }
            // A blank one links the session to no one, as an absent one.
            Some(Value::String(text)) => Some(text.clone()).filter(|t| !t.is_empty()),
            Some(_) => return Err(Refusal::Field(vec!["vendor_data"], "Not a valid string.")),
        };
        let callback = match given(request, "callback") {
            None => None,
            Some(Value::String(text)) if text.is_empty() => None,
            Some(Value::String(text)) if is_url(text) => Some(text.clone()),
            Some(_) => return Err(Refusal::Field(vec!["callback"], "Enter a valid URL.")),
        };
        if given(request, "callback_method")
            .is_some_and(|m| !matches!(m.as_str(), Some("initiator" | "completer" | "both")))
        {
            return Err(Refusal::Field(
                vec!["callback_method"],
                "Not a valid choice.",
            ));
        }
        if given(request, "language").is_some_and(|l| !l.is_string()) {
            return Err(Refusal::Field(vec!["language"], "Not a valid string."));
        }
        // The schema says a JSON string, the examples send an object: both are taken, and kept
        // (and echoed) as the object.
        let metadata = match given(request, "metadata") {
            None => None,
            Some(Value::Object(map)) => Some(Value::Object(map.clone())),
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(object @ Value::Object(_)) => Some(object),
                _ => {
                    return Err(Refusal::Field(
                        vec!["metadata"],
                        "Must be a JSON object, or a string holding one.",
                    ));
                }
            },
            Some(_) => {
                return Err(Refusal::Field(
                    vec!["metadata"],
                    "Must be a JSON object, or a string holding one.",
                ));
            }
        };
        let too_big = metadata.as_ref().is_some_and(|m| {
            serde_json::to_vec(m).map_or(usize::MAX, |b| b.len()) > MAX_METADATA_BYTES
        });
        if too_big {
            return Err(Refusal::Field(
                vec!["metadata"],
                "Ensure this field is no larger than 10 KB.",
            ));
        }
        let contact_details = object_field(
            request,
            "contact_details",
            &["email", "email_lang", "phone"],
            &["send_notification_emails"],
        )?;
        let expected_details = object_field(
            request,
            "expected_details",
            &[
                "first_name",
                "last_name",
                "date_of_birth",
                "gender",
                "nationality",
                "id_country",
                "poa_country",
                "country",
                "address",
                "identification_number",
                "ip_address",
            ],
            &[],
        )?;
        let date_of_birth = expected_details
            .as_ref()
            .and_then(|d| d.get("date_of_birth"))
            .and_then(Value::as_str);
        if let Some(date) = date_of_birth {
            let valid =
                date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok();
            if !valid {
                return Err(Refusal::Field(
                    vec!["expected_details", "date_of_birth"],
                    "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
                ));
            }
        }
        Ok(NewSession {
            vendor_data,
            callback,
            metadata,
            contact_details,
            expected_details,
        })
    }
}

/// An optional object field whose own fields, when given, must be text (`texts`) or booleans
/// (`flags`).
fn object_field(
    request: &Map<String, Value>,
    key: &'static str,
    texts: &[&'static str],
    flags: &[&'static str],
) -> Result<Option<Value>, Refusal> {
    let fields = match given(request, key) {
        None => return Ok(None),
        Some(Value::Object(fields)) => fields,
        Some(_) => {
            return Err(Refusal::Field(
                vec![key],
                "Invalid data. Expected a dictionary.",
            ));
        }
    };
    for name in texts {
        if given(fields, name).is_some_and(|v| !v.is_string()) {
            return Err(Refusal::Field(vec![key, *name], "Not a valid string."));
        }
    }
    for name in flags {
        if given(fields, name).is_some_and(|v| !v.is_boolean()) {
            return Err(Refusal::Field(vec![key, *name], "Must be a valid boolean."));
        }
    }
    Ok(Some(Value::Object(fields.clone())))
}
