//! Every error the API answers, as JSON. The only place where errors become status codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jitsi_scaler_core::engine::admin::AdminError;
use jitsi_scaler_core::group::ValidationErrors;
use jitsi_scaler_core::sidecar::WireError;
use jitsi_scaler_core::store::StoreError;
use serde_json::{Value, json};

/// An API error: a status and a JSON body.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with field errors or plain messages (express-validator shape).
    Invalid(ValidationErrors),
    /// 400: the request itself is unusable (malformed JSON, missing id).
    BadRequest(String),
    /// 401 (with `WWW-Authenticate: Bearer`).
    Unauthorized(String),
    /// 403.
    Forbidden(String),
    /// 404 for a group.
    GroupNotFound(String),
    /// 404 for a path.
    NoRoute,
    /// 405.
    MethodNotAllowed,
    /// 413.
    TooLarge(usize),
    /// 415.
    UnsupportedMediaType,
    /// 501 (routes of the reference that are out of scope).
    NotImplemented(&'static str),
    /// 503 with `Retry-After`.
    Unavailable(String),
    /// 500.
    Internal(String),
    /// A body of the reference's own shape, with its status.
    Raw(StatusCode, Value),
}

fn errors(kind: &str, msg: &str) -> Value {
    json!({"errors": [{"type": kind, "msg": msg}]})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Invalid(e) if e.fields.is_empty() => {
                (StatusCode::BAD_REQUEST, json!({"errors": e.messages}))
            }
            ApiError::Invalid(e) => (StatusCode::BAD_REQUEST, json!({"errors": e.fields})),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, errors("request", m)),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, errors("unauthorized", m)),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, errors("forbidden", m)),
            ApiError::GroupNotFound(g) => (
                StatusCode::NOT_FOUND,
                errors("not_found", &format!("Group {g} not found")),
            ),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, errors("not_found", "Not Found")),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                errors("request", "Method Not Allowed"),
            ),
            ApiError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                errors(
                    "request",
                    &format!("request body is larger than {limit} bytes"),
                ),
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                errors(
                    "request",
                    "request bodies must be JSON (Content-Type: application/json)",
                ),
            ),
            ApiError::NotImplemented(what) => {
                (StatusCode::NOT_IMPLEMENTED, errors("not_implemented", what))
            }
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, errors("unavailable", m)),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, errors("internal", m)),
            ApiError::Raw(status, body) => (*status, body.clone()),
        };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(g) => ApiError::GroupNotFound(g),
            AdminError::Invalid(v) => ApiError::Invalid(v),
            AdminError::ReconfigurationDisabled => ApiError::Raw(
                StatusCode::FORBIDDEN,
                json!({"save": false, "error": "Reconfiguration disabled for group"}),
            ),
            AdminError::Busy(g) => {
                ApiError::Unavailable(format!("group {g} is being changed concurrently; retry"))
            }
            AdminError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ApiError::Unavailable(format!("store unavailable: {m}")),
            StoreError::Conflict { group } => {
                ApiError::Unavailable(format!("group {group} changed concurrently; retry"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}
