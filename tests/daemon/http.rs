//! HTTP hardening: one error shape everywhere, JSON bodies for routing
//! errors.

use super::harness::*;

/// Every error body has `success`, `code`, `message` and `error.{field, reason}`.
fn assert_error_shape(response: &Response, status: u16, code: &str, field: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    let json = response.json();
    assert_eq!(json["success"], false, "{}", response.body);
    assert_eq!(json["code"], code, "{}", response.body);
    assert_eq!(json["error"]["field"], field, "{}", response.body);
    let reason = json["error"]["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "{}", response.body);
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains(reason), "{}", response.body);
}

#[test]
fn every_error_is_json_with_code_message_field_and_reason() {
    let env = Env::new(WORKSPACE);
    let daemon = env.start(&[]);
    let response = daemon.post("/v1/track", r#"{"userId":"e1","event":"ping","properties":{"n":"x"}}"#);
    assert_error_shape(&response, 422, "invalid_call", "properties.n");
    assert_eq!(
        response.json()["message"]
            .as_str()
            .map(|m| m.starts_with("properties.n: ")),
        Some(true)
    );
    assert_error_shape(&daemon.post("/v1/track", "{"), 400, "bad_request", "");
    assert_error_shape(
        &daemon.request_with("GET", "/v1/journeys", None, None),
        401,
        "unauthorized",
        "authorization",
    );
    assert_error_shape(&daemon.get("/v1/nothing-here"), 404, "not_found", "path");
    assert_error_shape(&daemon.get("/v1/customers/nobody"), 404, "not_found", "id");
    assert_error_shape(&daemon.get("/v1/track"), 405, "method_not_allowed", "method");
    assert_error_shape(
        &daemon.request("PUT", "/v1/customers/x", Some("{}")),
        405,
        "method_not_allowed",
        "method",
    );
    assert_error_shape(&daemon.get("/v1/customers/%FF"), 400, "bad_request", "id");
    assert_error_shape(
        &daemon.request("DELETE", "/v1/customers/%FF", None),
        400,
        "bad_request",
        "id",
    );
    assert_error_shape(&daemon.get("/v1/journeys/%FF%FE/stats"), 400, "bad_request", "name");
    let long = format!("/v1/customers/{}", "x".repeat(9 * 1024));
    assert_error_shape(&daemon.get(&long), 414, "uri_too_long", "path");
    // The daemon still answers normally afterwards.
    assert_eq!(daemon.post("/v1/track", &ping("e1", "m1", 1)).status, 200);
}
