//! The HTTP API's one error type, and how it answers: RFC 9457 `application/problem+json` with a
//! stable `code` and the request id.
//!
//! Internal errors are logged with their context and answered without details. Provider errors are
//! mapped to our codes; a provider's body never reaches the caller.

use crate::analytics::AnalyticsError;
use crate::lifecycle::ServiceError;
use crate::providers::routing::RoutingError;
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
    /// Stable machine code: `invalid_request`, `unauthorized`, `not_found`, `conflict`,
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

/// The problems every authenticated operation can answer before it runs, for its OpenAPI entry.
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
    /// No such resource for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what exists.
    #[error("{detail}")]
    Conflict {
        /// Stable code (`conflict`, `not_cancellable`).
        code: &'static str,
        /// What clashes.
        detail: String,
    },
    /// A provider failed; `provider` is the instance name.
    #[error("provider {provider}: {error}")]
    Provider {
        /// The provider instance.
        provider: String,
        /// What it did.
        error: ProviderError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// No provider instance could be chosen for a create.
    #[error(transparent)]
    Routing(#[from] crate::providers::routing::RoutingError),
    /// The gateway is not ready to serve (no policy, store down).
    #[error("{0}")]
    Unavailable(String),
    /// A create of the same reference and body is under way elsewhere.
    #[error("in progress")]
    InProgress(std::time::Duration),
}

impl ApiError {
    /// A field-level validation failure.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// A provider failure, tagged with the instance name.
    pub fn provider(provider: &str, error: ProviderError) -> Self {
        ApiError::Provider {
            provider: provider.to_string(),
            error,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::BadRequest { .. } => (S::BAD_REQUEST, "invalid_request", "Invalid request"),
            ApiError::Invalid { .. } => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "Invalid request",
            ),
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::AuthRateLimited(_)
            | ApiError::TenantRateLimited(_)
            | ApiError::HooksRateLimited(_) => {
                (S::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
            }
            ApiError::TooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            ApiError::BodyTimeout => (S::REQUEST_TIMEOUT, "request_timeout", "Request timeout"),
            ApiError::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            ApiError::UriTooLong => (S::URI_TOO_LONG, "uri_too_long", "URI too long"),
            ApiError::HeadersTooLarge => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "Request header fields too large",
            ),
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            ApiError::Internal => (S::INTERNAL_SERVER_ERROR, "internal_error", "Internal error"),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not_found", "Not found"),
            ApiError::Conflict { code, .. } => (S::CONFLICT, code, "Conflict"),
            ApiError::Provider { error, .. } => match error {
                ProviderError::Unavailable(_)
                | ProviderError::Ambiguous(_)
                | ProviderError::Config(_) => (
                    S::SERVICE_UNAVAILABLE,
                    "provider_unavailable",
                    "Provider unavailable",
                ),
                ProviderError::BadResponse(_) | ProviderError::Unauthorized => {
                    (S::BAD_GATEWAY, "provider_error", "Provider error")
                }
                ProviderError::Rejected { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "provider_rejected",
                    "Provider rejected the request",
                ),
                ProviderError::NotFound => (S::NOT_FOUND, "not_found", "Not found"),
                ProviderError::SubjectConflict(_) => {
                    (S::CONFLICT, "subject_conflict", "Subject conflict")
                }
                ProviderError::NotOurs(_) => (S::CONFLICT, "conflict", "Conflict"),
                ProviderError::Unsupported(_) => (
                    S::CONFLICT,
                    "not_supported",
                    "Not supported by the provider",
                ),
            },
            ApiError::Store(e) if e.is_transient() => {
                (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            }
            ApiError::Store(_) => (S::INTERNAL_SERVER_ERROR, "internal_error", "Internal error"),
            ApiError::Routing(RoutingError::NoDefault) => {
                (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            }
            ApiError::Routing(_) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "Invalid request",
            ),
            ApiError::Unavailable(_) => {
                (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            }
            ApiError::InProgress(_) => (S::CONFLICT, "in_progress", "In progress"),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::BadRequest { detail, .. } | ApiError::Invalid { detail, .. } => {
                detail.clone()
            }
            ApiError::Unauthorized => {
                "a valid API key is required: send `Authorization: Bearer <key>`".into()
            }
            ApiError::AuthRateLimited(_) => {
                "too many failed authentications from this address; retry after the Retry-After seconds".into()
            }
            ApiError::HooksRateLimited(_) => {
                "too many webhooks for this provider instance; retry after the Retry-After seconds".into()
            }
            ApiError::TenantRateLimited(_) => {
                "this tenant's request rate limit is spent; retry after the Retry-After seconds (the RateLimit headers show the budget)".into()
            }
            ApiError::TooLarge => "the body is over the 64 KiB limit".into(),
            ApiError::BodyTimeout => "the body did not arrive in time; send it whole".into(),
            ApiError::UnsupportedMediaType => {
                "send the body as JSON with `Content-Type: application/json`".into()
            }
            ApiError::UriTooLong => "the path and query are over the 8 KiB limit".into(),
            ApiError::HeadersTooLarge => "the headers are over the 16 KiB limit".into(),
            ApiError::MethodNotAllowed => "this path does not take that method".into(),
            ApiError::Internal => "internal error; the request id identifies it in our logs".into(),
            ApiError::NotFound(what) => what.clone(),
            ApiError::Conflict { detail, .. } => detail.clone(),
            ApiError::Provider { provider, error } => match error {
                ProviderError::Unavailable(why) => {
                    format!("provider {provider} is unavailable ({why}); retry later")
                }
                ProviderError::Ambiguous(why) => format!(
                    "provider {provider} may have taken the request but gave no usable answer \
                     ({why}); retry the same request later: it resumes at {provider} and never \
                     starts a second verification"
                ),
                ProviderError::NotOurs(_) => format!(
                    "provider {provider} holds a verification under this request's key that \
                     was started for another request; it was not bound to this one"
                ),
                ProviderError::Config(_) => {
                    format!(
                        "provider {provider} is misconfigured; the operators are told in the log"
                    )
                }
                ProviderError::BadResponse(_) => {
                    format!("provider {provider} answered something the gateway cannot read")
                }
                ProviderError::Unauthorized => {
                    format!("provider {provider} refused the gateway's credentials")
                }
                ProviderError::Rejected { message, .. } => {
                    format!("provider {provider} refused the request: {message}")
                }
                ProviderError::NotFound => {
                    format!("provider {provider} has no data for this verification")
                }
                ProviderError::SubjectConflict(message) => message.clone(),
                ProviderError::Unsupported(op) => {
                    format!("provider {provider} does not support {op}")
                }
            },
            ApiError::Store(e) if e.is_timeout() => {
                "the store did not answer in time; retry shortly".into()
            }
            ApiError::Store(e) if e.is_conflict() => {
                "the store was busy with a conflicting write; retry shortly".into()
            }
            ApiError::Store(_) => "internal error; the request id identifies it in our logs".into(),
            ApiError::Routing(error) => error.to_string(),
            ApiError::Unavailable(why) => why.clone(),
            ApiError::InProgress(_) => "a create with this reference and the same body is under \
                 way; retry after the Retry-After seconds to get its verification"
                .into(),
        }
    }
}

impl From<AnalyticsError> for ApiError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound => {
                ApiError::NotFound("no such verification for this tenant".into())
            }
            e @ ServiceError::ReferenceConflict => ApiError::Conflict {
                code: "conflict",
                detail: e.to_string(),
            },
            e @ ServiceError::NotCancellable(_) => ApiError::Conflict {
                code: "not_cancellable",
                detail: e.to_string(),
            },
            e @ ServiceError::NotInReview(_) => ApiError::Conflict {
                code: "not_in_review",
                detail: e.to_string(),
            },
            e @ ServiceError::NotReady { .. } => ApiError::Conflict {
                code: "not_ready",
                detail: e.to_string(),
            },
            e @ (ServiceError::ProviderGone(_) | ServiceError::NoProviderAvailable) => {
                ApiError::Unavailable(e.to_string())
            }
            ServiceError::InProgress => ApiError::InProgress(std::time::Duration::from_secs(1)),
            ServiceError::Interrupted => ApiError::Internal,
            ServiceError::Provider { provider, error } => ApiError::Provider { provider, error },
            ServiceError::Routing(e) => ApiError::Routing(e),
            ServiceError::Store(e) => ApiError::Store(e),
        }
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
        let (status, code, title) = self.parts();
        match &self {
            ApiError::Store(e) => tracing::error!(error = %e, "store failure"),
            ApiError::Provider { provider, error } => {
                tracing::warn!(provider = %provider, error = %error, "provider call failed")
            }
            _ => {}
        }
        let problem = Problem {
            problem_type: format!("https://kyc-gateway.dev/problems/{code}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: self.detail(),
            code: code.to_string(),
            field: match &self {
                ApiError::Invalid { field, .. } => Some(field.clone()),
                ApiError::Routing(
                    RoutingError::OverrideNotAllowed | RoutingError::UnknownProvider,
                ) => Some("provider".into()),
                ApiError::BadRequest { field, .. } => field.clone(),
                _ => None,
            },
            provider_code: match &self {
                ApiError::Provider {
                    error: ProviderError::Rejected { code, .. },
                    ..
                } => Some(code.clone()),
                _ => None,
            },
            request_id: current_request_id(),
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Provider { error, .. } if error.is_unavailable() => {
                // The provider's own wait is not known: a short one, as for a create in
                // progress.
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            ApiError::AuthRateLimited(wait)
            | ApiError::TenantRateLimited(wait)
            | ApiError::HooksRateLimited(wait)
            | ApiError::InProgress(wait) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::providers::limits::ceil_seconds(wait)),
                );
            }
            _ => {}
        }
        response
    }
}
