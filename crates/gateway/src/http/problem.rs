//! The HTTP API's one error type, and how it answers: RFC 9457 `application/problem+json` with a
//! stable `code` and the request id.
//!
//! Internal errors are logged with their context and answered without details. Provider errors are
//! mapped to our codes; a provider's body never reaches the caller.

use crate::analytics::AnalyticsError;
use crate::lifecycle::ServiceError;
use crate::providers::routing::RoutingError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kyc_core::ProviderError;
use serde::Serialize;
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being served, for error bodies and logs.
    pub static REQUEST_ID: String;
}

/// The current request's id, if inside a request.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// An RFC 9457 problem document, as answered by every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case. Never holds personal data.
    pub detail: String,
    /// Stable machine code: `invalid_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `rate_limited`, `subject_conflict`, `not_cancellable`, `not_supported`, `not_ready`,
    /// `not_in_review`, `in_progress`,
    /// `provider_rejected`,
    /// `provider_error`, `provider_unavailable`, `payload_too_large`, `unsupported_media_type`,
    /// `uri_too_long`, `headers_too_large`, `method_not_allowed`, `unavailable`, `internal_error`.
    pub code: String,
    /// The request field at fault, as a dotted path, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The provider's own error code, when a provider refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// The id of the request, also in the `x-request-id` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The problems every operation that needs a full-access key can answer before it runs, for its
/// OpenAPI entry.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // it only describes answers for the spec; nothing builds one
pub enum AuthProblems {
    /// No valid API key.
    #[response(
        status = 401,
        description = "No valid API key",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// A read-only key.
    #[response(
        status = 403,
        description = "The API key is read-only (`scope = \"read\"`); this operation needs a full-access key",
        content_type = "application/problem+json"
    )]
    ReadOnlyKey(Problem),
    /// Too many failed authentications, or the tenant's rate limit is spent.
    #[response(
        status = 429,
        description = "Too many failed authentications from this address, or the tenant's rate limit is spent (see `Retry-After`, and the `RateLimit` and `RateLimit-Policy` headers that every answer to a limited tenant carries)",
        content_type = "application/problem+json"
    )]
    RateLimited(Problem),
}

/// The problems an operation any key may call (a read-only one too) can answer before it runs.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // it only describes answers for the spec; nothing builds one
pub enum ReadAuthProblems {
    /// No valid API key.
    #[response(
        status = 401,
        description = "No valid API key",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// Too many failed authentications, or the tenant's rate limit is spent.
    #[response(
        status = 429,
        description = "Too many failed authentications from this address, or the tenant's rate limit is spent (see `Retry-After`, and the `RateLimit` and `RateLimit-Policy` headers that every answer to a limited tenant carries)",
        content_type = "application/problem+json"
    )]
    RateLimited(Problem),
}

/// The problems of an operation that takes a JSON body, before it runs.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // it only describes answers for the spec; nothing builds one
pub enum BodyProblems {
    /// Not JSON.
    #[response(
        status = 400,
        description = "The body is not JSON",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
    /// Too slow.
    #[response(
        status = 408,
        description = "The body did not arrive within `server.request_body_timeout_ms`",
        content_type = "application/problem+json"
    )]
    TooSlow(Problem),
    /// Too large.
    #[response(
        status = 413,
        description = "The body is over 64 KiB",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    /// Not sent as JSON.
    #[response(
        status = 415,
        description = "The body is not sent as `application/json`",
        content_type = "application/problem+json"
    )]
    NotJsonMediaType(Problem),
}

/// The problem of an operation with query parameters.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // it only describes answers for the spec; nothing builds one
pub enum QueryProblems {
    /// A parameter is invalid.
    #[response(
        status = 400,
        description = "A parameter is invalid, or the query string cannot be read (e.g. a repeated parameter); `field` names the parameter",
        content_type = "application/problem+json"
    )]
    BadParameter(Problem),
}

/// The problem of an operation on one verification.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // it only describes answers for the spec; nothing builds one
pub enum VerificationNotFound {
    /// Not this tenant's, or no such id.
    #[response(
        status = 404,
        description = "No such verification for this tenant",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
}

/// The problems of an operation that calls the verification's provider.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // it only describes answers for the spec; nothing builds one
pub enum ProviderFailures {
    /// An unreadable answer.
    #[response(
        status = 502,
        description = "The provider answered something unreadable",
        content_type = "application/problem+json"
    )]
    Unreadable(Problem),
    /// Not reached, or no answer.
    #[response(
        status = 503,
        description = "The provider is unavailable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// The provider's refusal, for an operation that takes no body of its own to be invalid.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // it only describes answers for the spec; nothing builds one
pub enum ProviderRefused {
    /// Refused.
    #[response(
        status = 422,
        description = "The provider refused the request",
        content_type = "application/problem+json"
    )]
    Refused(Problem),
}

/// Everything a handler can answer instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not of the expected shape.
    #[error("{detail}")]
    BadRequest {
        /// The field at fault, if known.
        field: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// A field has a value the API does not accept.
    #[error("{field}: {detail}")]
    Invalid {
        /// The field at fault (dotted path).
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// No valid API key.
    #[error("unauthorized")]
    Unauthorized,
    /// The key is read-only (`scope = "read"`) and the operation needs full access.
    #[error("forbidden")]
    ReadOnlyKey,
    /// Too many failed authentications from this address; try again after the wait.
    #[error("rate limited")]
    AuthRateLimited(std::time::Duration),
    /// The tenant's request rate limit is spent; try again after the wait.
    #[error("rate limited")]
    TenantRateLimited(std::time::Duration),
    /// A provider instance's webhook budget is spent; try again after the wait.
    #[error("rate limited")]
    HooksRateLimited(std::time::Duration),
    /// The body is over the size limit.
    #[error("payload too large")]
    TooLarge,
    /// The body did not arrive within `server.request_body_timeout_ms`.
    #[error("request timeout")]
    BodyTimeout,
    /// The body is not sent as JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The request target (path and query) is over the limit.
    #[error("uri too long")]
    UriTooLong,
    /// The request's headers are over the limit.
    #[error("headers too large")]
    HeadersTooLarge,
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A handler panicked; answered without details (the panic is logged).
    #[error("internal error")]
    Internal,
    /// No such resource (a hook, a route).
    #[error("{0}")]
    NotFound(String),
    /// The gateway is not ready to serve (no policy, store down).
    #[error("{0}")]
    Unavailable(String),
    /// A lifecycle operation did not happen.
    #[error(transparent)]
    Lifecycle(#[from] ServiceError),
    /// An analytics query failed.
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
}

/// What a problem answer says, but for the request id.
struct Said {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    field: Option<String>,
}

impl Said {
    fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Said {
        Said {
            status,
            code,
            title,
            detail: detail.into(),
            field: None,
        }
    }

    fn field(mut self, field: Option<String>) -> Said {
        self.field = field;
        self
    }
}

impl ApiError {
    /// A field-level validation failure.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The one mapping from an error to its problem: status, code, title, detail and field.
    fn said(&self) -> Said {
        use StatusCode as S;
        match self {
            ApiError::BadRequest { field, detail } => {
                Said::new(S::BAD_REQUEST, "invalid_request", "Invalid request", detail)
                    .field(field.clone())
            }
            ApiError::Invalid { field, detail } => Said::new(
                S::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "Invalid request",
                detail,
            )
            .field(Some(field.clone())),
            ApiError::Unauthorized => Said::new(
                S::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "a valid API key is required: send `Authorization: Bearer <key>`",
            ),
            ApiError::ReadOnlyKey => Said::new(
                S::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "this API key is read-only (scope = \"read\"): it reads stats, experiments, the \
                 policy and previews; this operation needs a full-access key",
            ),
            ApiError::AuthRateLimited(_) => rate_limited(format!(
                "too many failed authentications from this address{RETRY}"
            )),
            ApiError::HooksRateLimited(_) => rate_limited(format!(
                "too many webhooks for this provider instance{RETRY}"
            )),
            ApiError::TenantRateLimited(_) => rate_limited(format!(
                "this tenant's request rate limit is spent{RETRY} (the RateLimit headers show \
                 the budget)"
            )),
            ApiError::TooLarge => Said::new(
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                "the body is over the 64 KiB limit",
            ),
            ApiError::BodyTimeout => Said::new(
                S::REQUEST_TIMEOUT,
                "request_timeout",
                "Request timeout",
                "the body did not arrive in time; send it whole",
            ),
            ApiError::UnsupportedMediaType => Said::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            ApiError::UriTooLong => Said::new(
                S::URI_TOO_LONG,
                "uri_too_long",
                "URI too long",
                "the path and query are over the 8 KiB limit",
            ),
            ApiError::HeadersTooLarge => Said::new(
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "Request header fields too large",
                "the headers are over the 16 KiB limit",
            ),
            ApiError::MethodNotAllowed => Said::new(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "this path does not take that method",
            ),
            ApiError::Internal => internal(),
            ApiError::NotFound(what) => not_found(what.clone()),
            ApiError::Unavailable(why) => unavailable(why.clone()),
            ApiError::Lifecycle(e) => lifecycle_said(e),
            ApiError::Analytics(AnalyticsError::Store(e)) => store_said(e),
        }
    }
}

/// A lifecycle error's problem.
fn lifecycle_said(error: &ServiceError) -> Said {
    use StatusCode as S;
    let conflict = |code, detail: String| Said::new(S::CONFLICT, code, "Conflict", detail);
    match error {
        ServiceError::Interrupted => internal(),
        e @ (ServiceError::NotFound | ServiceError::EventNotFound) => not_found(e.to_string()),
        ServiceError::WebhookRefused(_) => ApiError::Unauthorized.said(),
        e @ ServiceError::ReferenceConflict => conflict("conflict", e.to_string()),
        e @ ServiceError::NotCancellable(_) => conflict("not_cancellable", e.to_string()),
        e @ ServiceError::NotInReview(_) => conflict("not_in_review", e.to_string()),
        e @ ServiceError::NotReady { .. } => conflict("not_ready", e.to_string()),
        e @ ServiceError::InFlight { .. } => conflict("in_flight", e.to_string()),
        e @ ServiceError::SubjectBusy => conflict("subject_busy", e.to_string()),
        ServiceError::InProgress => Said::new(
            S::CONFLICT,
            "in_progress",
            "In progress",
            format!(
                "a create with this reference and the same body is under way{RETRY} to get its \
                 verification"
            ),
        ),
        e @ (ServiceError::ProviderGone(_)
        | ServiceError::NoProviderAvailable
        | ServiceError::Routing(RoutingError::NoDefault)) => unavailable(e.to_string()),
        ServiceError::Routing(e) => Said::new(
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "Invalid request",
            e.to_string(),
        )
        .field(Some("provider".into())),
        ServiceError::Provider { provider, error } => provider_said(provider, error),
        ServiceError::Store(e) => store_said(e),
    }
}

/// A store failure's problem: a timeout or a lost conflict is worth retrying (503); anything
/// else is an internal error, answered without details.
fn store_said(error: &StoreError) -> Said {
    if error.is_timeout() {
        unavailable("the store did not answer in time; retry shortly".into())
    } else if error.is_conflict() {
        unavailable("the store was busy with a conflicting write; retry shortly".into())
    } else {
        internal()
    }
}

/// How a refusal worth retrying ends its detail.
const RETRY: &str = "; retry after the Retry-After seconds";

fn internal() -> Said {
    Said::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal error",
        "internal error; the request id identifies it in our logs",
    )
}

fn unavailable(detail: String) -> Said {
    Said::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Service unavailable",
        detail,
    )
}

fn rate_limited(detail: String) -> Said {
    Said::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests",
        detail,
    )
}

fn not_found(detail: String) -> Said {
    Said::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
}

/// A provider's failure, in our words (its body never reaches the caller).
fn provider_said(provider: &str, error: &ProviderError) -> Said {
    use StatusCode as S;
    let unavailable = |detail: String| {
        Said::new(
            S::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            "Provider unavailable",
            detail,
        )
    };
    let bad_gateway =
        |detail: String| Said::new(S::BAD_GATEWAY, "provider_error", "Provider error", detail);
    match error {
        ProviderError::Unavailable(why) => unavailable(format!(
            "provider {provider} is unavailable ({why}); retry later"
        )),
        ProviderError::Ambiguous(why) => unavailable(format!(
            "provider {provider} may have taken the request but gave no usable answer ({why}); \
             retry the same request later: it resumes at {provider} and never starts a second \
             verification"
        )),
        ProviderError::Config(_) => unavailable(format!(
            "provider {provider} is misconfigured; the operators are told in the log"
        )),
        ProviderError::BadResponse(_) => bad_gateway(format!(
            "provider {provider} answered something the gateway cannot read"
        )),
        ProviderError::Unauthorized => bad_gateway(format!(
            "provider {provider} refused the gateway's credentials"
        )),
        ProviderError::Rejected { message, .. } => Said::new(
            S::UNPROCESSABLE_ENTITY,
            "provider_rejected",
            "Provider rejected the request",
            format!("provider {provider} refused the request: {message}"),
        ),
        ProviderError::NotFound => not_found(format!(
            "provider {provider} has no data for this verification"
        )),
        ProviderError::SubjectConflict(message) => Said::new(
            S::CONFLICT,
            "subject_conflict",
            "Subject conflict",
            message.clone(),
        ),
        ProviderError::NotOurs(_) => Said::new(
            S::CONFLICT,
            "conflict",
            "Conflict",
            format!(
                "provider {provider} holds a verification under this request's key that was \
                 started for another request; it was not bound to this one"
            ),
        ),
        ProviderError::Unsupported(op) => Said::new(
            S::CONFLICT,
            "not_supported",
            "Not supported by the provider",
            format!("provider {provider} does not support {op}"),
        ),
    }
}

impl ApiError {
    /// The same refusal as a 400 naming the parameter: query parameters are part of the request
    /// line, so a bad one is a malformed request rather than a body that cannot be processed.
    pub fn in_query(self) -> ApiError {
        match self {
            ApiError::Invalid { field, detail } => ApiError::BadRequest {
                field: Some(field),
                detail,
            },
            other => other,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let said = self.said();
        match &self {
            ApiError::Lifecycle(ServiceError::Store(e))
            | ApiError::Analytics(AnalyticsError::Store(e)) => {
                tracing::error!(error = %e, "store failure")
            }
            ApiError::Lifecycle(ServiceError::Provider { provider, error }) => {
                tracing::warn!(provider = %provider, error = %error, "provider call failed")
            }
            _ => {}
        }
        let problem = Problem {
            problem_type: format!("https://kyc-gateway.dev/problems/{}", said.code),
            title: said.title.to_string(),
            status: said.status.as_u16(),
            detail: said.detail,
            code: said.code.to_string(),
            field: said.field,
            provider_code: match &self {
                ApiError::Lifecycle(ServiceError::Provider {
                    error: ProviderError::Rejected { code, .. },
                    ..
                }) => Some(code.clone()),
                _ => None,
            },
            request_id: current_request_id(),
        };
        let mut response = (said.status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry_after = match &self {
            ApiError::Unauthorized | ApiError::Lifecycle(ServiceError::WebhookRefused(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                None
            }
            // The provider's own wait is not known: a short one, as for a create in progress.
            ApiError::Lifecycle(ServiceError::Provider { error, .. }) if error.is_unavailable() => {
                Some(1)
            }
            ApiError::Lifecycle(ServiceError::InProgress) => Some(1),
            ApiError::AuthRateLimited(wait)
            | ApiError::TenantRateLimited(wait)
            | ApiError::HooksRateLimited(wait) => {
                Some(crate::providers::limits::ceil_seconds(*wait))
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
