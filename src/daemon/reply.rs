//! The one shape of every HTTP error body (see `docs/daemon.md`, "Errors"):
//!
//! ```json
//! {"success": false, "code": "invalid_call", "message": "properties.n: expected a whole number, got \"x\"",
//!  "error": {"field": "properties.n", "reason": "expected a whole number, got \"x\""}}
//! ```
//!
//! `code` and `message` are what Segment-style client libraries read
//! (RudderStack's reads `code`); `error.field` and `error.reason` are the
//! structured form. Every error response of the daemon is built here, so the
//! shape cannot drift between endpoints.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The stable machine-readable code of an error status.
pub fn code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "invalid_call",
        429 => "too_many_requests",
        503 => "unavailable",
        _ if status.is_server_error() => "internal_error",
        _ => "error",
    }
}

/// The error body as JSON (for answers that embed it, or add keys to it).
pub fn error_json(status: StatusCode, field: &str, reason: &str) -> serde_json::Value {
    let message = if field.is_empty() {
        reason.to_string()
    } else {
        format!("{field}: {reason}")
    };
    json!({
        "success": false,
        "code": code(status),
        "message": message,
        "error": {"field": field, "reason": reason},
    })
}

/// A JSON error response naming the field (empty when the whole request is
/// at fault) and the reason.
pub fn error(status: StatusCode, field: &str, reason: impl Into<String>) -> Response {
    (status, Json(error_json(status, field, &reason.into()))).into_response()
}

/// An error response with extra top-level keys (e.g. `diagnostics`).
pub fn error_with(status: StatusCode, field: &str, reason: &str, extra: serde_json::Value) -> Response {
    let mut body = error_json(status, field, reason);
    if let (Some(object), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        object.extend(extra);
    }
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_code_message_and_field() {
        let body = error_json(StatusCode::UNPROCESSABLE_ENTITY, "properties.n", "expected a number");
        assert_eq!(
            body,
            json!({"success": false, "code": "invalid_call", "message": "properties.n: expected a number",
                   "error": {"field": "properties.n", "reason": "expected a number"}})
        );
        let body = error_json(StatusCode::BAD_REQUEST, "", "invalid JSON");
        assert_eq!(
            (body["code"].as_str(), body["message"].as_str()),
            (Some("bad_request"), Some("invalid JSON"))
        );
        assert_eq!(code(StatusCode::BAD_GATEWAY), "internal_error");
        assert_eq!(code(StatusCode::URI_TOO_LONG), "uri_too_long");
    }
}
