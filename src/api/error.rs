//! One error shape for every refusal:
//! `{"error":{"code":"over_quota","message":"…","resource":"ipv4","limit":2,"in_use":2,"reserved":0}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::store::model::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra members of the error object (`field`, `resource`, `limit`, …).
    pub details: Box<Map<String, Value>>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Box::default(),
            retry_after: None,
        }
    }

    /// A 400 naming the field at fault.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        let field = field.into();
        let reason = reason.into();
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{field}: {reason}"),
        );
        e.details.insert("field".into(), Value::String(field));
        e
    }

    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::OverQuota(o) => {
                let mut err = ApiError::new(StatusCode::CONFLICT, "over_quota", o.to_string());
                if let Value::Object(m) = json!({
                    "resource": o.resource.as_str(),
                    "limit": o.limit,
                    "in_use": o.in_use,
                    "reserved": o.reserved,
                    "requested": o.requested,
                }) {
                    err.details = Box::new(m);
                }
                err
            }
            StoreError::NotFound { what, name } => {
                let mut err = ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("{what} {name:?} not found"),
                );
                err.details.insert(what.into(), Value::String(name));
                err
            }
            StoreError::Invalid { field, reason } => ApiError::invalid(field, reason),
            StoreError::Database { what, source } => {
                tracing::error!("quota store database: {what}: {source}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    format!("the quota store's database failed ({what}); try again"),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), Value::String(self.code.into()));
        body.insert("message".into(), Value::String(self.message));
        body.extend(*self.details);
        let mut resp = (self.status, axum::Json(json!({ "error": body }))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
