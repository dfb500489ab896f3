//! The API's error type: every failure becomes the contract's JSON
//! `{"detail", "code", "errors"?}` with the right status. Internal causes are logged once
//! and never shown, unless the app's configuration says so ([`show_internal_causes`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::state::AppState;

/// Field errors keyed by field path (`messages[3].to`).
pub type FieldErrors = BTreeMap<String, Vec<String>>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Validation { detail: String, errors: FieldErrors },
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("authentication credentials were not provided or are invalid")]
    Unauthorized,
    /// A 401 with a code of its own, for credentials a route needs beyond the usual ones.
    #[error("{1}")]
    UnauthorizedWith(&'static str, String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("daily quota exceeded")]
    QuotaExceeded { retry_after: i64, detail: String },
    /// A 429 with a code of its own (e.g. `LOGIN_THROTTLED`) and `Retry-After`.
    #[error("{detail}")]
    Throttled {
        code: &'static str,
        retry_after: i64,
        detail: String,
    },
    #[error("{0} is unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<mongodb::error::Error> for ApiError {
    fn from(e: mongodb::error::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database operation"))
    }
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"detail": "invalid input", "code": "VALIDATION_ERROR", "errors": {"messages[0].to": ["not a valid phone number"]}}))]
pub struct ErrorBody<'a> {
    /// A human-readable message.
    detail: String,
    /// A machine-readable code, e.g. `VALIDATION_ERROR`, `UNAUTHORIZED`, `NOT_FOUND`.
    #[schema(value_type = String)]
    code: &'a str,
    /// Only on validation errors: the messages for each invalid field, keyed by field path
    /// (`messages[3].to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = BTreeMap<String, Vec<String>>, required = false)]
    errors: Option<&'a FieldErrors>,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.insert(field.into(), vec![message.into()]);
        ApiError::Validation {
            detail: "invalid input".into(),
            errors,
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } | ApiError::BadRequest(..) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::UnauthorizedWith(..) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QuotaExceeded { .. } | ApiError::Throttled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "VALIDATION_ERROR",
            ApiError::BadRequest(code, _)
            | ApiError::Conflict(code, _)
            | ApiError::UnauthorizedWith(code, _)
            | ApiError::Throttled { code, .. } => code,
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            ApiError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }
}

/// The contract's error body for `status`, for responses not made by [`ApiError`].
pub fn error_response(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    let body = ErrorBody {
        detail: detail.into(),
        code,
        errors: None,
    };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed");
                "internal error".to_owned()
            }
            ApiError::QuotaExceeded { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        let errors = match &self {
            ApiError::Validation { errors, .. } => Some(errors),
            _ => None,
        };
        let body = ErrorBody {
            detail,
            code: self.code(),
            errors,
        };
        let mut response = (status, axum::Json(body)).into_response();
        match &self {
            ApiError::QuotaExceeded { retry_after, .. }
            | ApiError::Throttled { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::Unauthorized | ApiError::UnauthorizedWith(..) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Internal(cause) => {
                let cause = InternalCause(format!("{cause:#}").into());
                response.extensions_mut().insert(cause);
            }
            _ => {}
        }
        response
    }
}

/// The cause of an internal error, carried on its response (never sent) for
/// [`show_internal_causes`] to show or not.
#[derive(Clone)]
struct InternalCause(Arc<str>);

/// Middleware: with `DJANGO_DEBUG` on (never in production) an internal error's detail names
/// its cause, as Django's debug pages do; otherwise clients read only "internal error".
pub async fn show_internal_causes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if !state.config.http.debug {
        return response;
    }
    match response.extensions().get::<InternalCause>() {
        Some(InternalCause(cause)) => error_response(
            response.status(),
            "INTERNAL_ERROR",
            format!("internal error: {cause}"),
        ),
        None => response,
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                ApiError::BadRequest("INVALID_JSON", data_error_text(&e.body_text()))
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::BadRequest("INVALID_JSON", format!("malformed JSON: {}", e.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest(
                "UNSUPPORTED_MEDIA_TYPE",
                "expected Content-Type: application/json".into(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            other => ApiError::BadRequest("INVALID_JSON", other.body_text()),
        }
    }
}

/// serde's message without axum's "Failed to deserialize the JSON body into the target type" preamble.
fn data_error_text(text: &str) -> String {
    text.split_once(": ")
        .map_or(text, |(_, rest)| rest)
        .to_owned()
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest("INVALID_QUERY", data_error_text(&rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        ApiError::NotFound
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
