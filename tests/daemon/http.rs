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
        &daemon.request_with("GET", "/v1/rejected", None, None),
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

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Sends raw bytes on a new connection and reads the whole answer.
fn raw_exchange(addr: &str, head: &str, body: &[u8]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn head(method: &str, path: &str, addr: &str, extra: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{extra}Content-Length: {length}\r\n\r\n"
    )
}

fn status_and_json(answer: &str) -> (u16, serde_json::Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {answer:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}")),
    )
}

#[test]
fn gzip_bodies_are_decompressed_within_a_bound() {
    let env = Env::new(WORKSPACE);
    let daemon = env.start(&[]);
    let batch = format!("{{\"batch\":[{},{}]}}", ping("g1", "m1", 1), ping("g2", "m2", 2));
    let compressed = gzip(batch.as_bytes());
    let addr = &daemon.addr;
    let answer = raw_exchange(
        addr,
        &head(
            "POST",
            "/v1/batch",
            addr,
            "Content-Encoding: gzip\r\n",
            compressed.len(),
        ),
        &compressed,
    )
    .expect("exchange");
    let (status, json) = status_and_json(&answer);
    assert_eq!((status, json["accepted"].as_i64()), (200, Some(2)), "{answer}");
    assert_eq!(daemon.get("/v1/customers/g2").status, 200);
    // A gzip bomb: 64 MiB of spaces in about 64 KiB.
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 512 * 1024);
    let answer = raw_exchange(
        addr,
        &head("POST", "/v1/batch", addr, "Content-Encoding: gzip\r\n", bomb.len()),
        &bomb,
    )
    .expect("exchange");
    let (status, json) = status_and_json(&answer);
    assert_eq!(
        (status, json["error"]["field"].as_str()),
        (413, Some("body")),
        "{answer}"
    );
    // Not gzip at all, and an encoding we do not speak.
    let answer = raw_exchange(
        addr,
        &head("POST", "/v1/track", addr, "Content-Encoding: gzip\r\n", 4),
        b"{}{}",
    )
    .expect("exchange");
    assert_eq!(status_and_json(&answer).0, 400, "{answer}");
    let answer = raw_exchange(
        addr,
        &head("POST", "/v1/track", addr, "Content-Encoding: br\r\n", 2),
        b"{}",
    )
    .expect("exchange");
    let (status, json) = status_and_json(&answer);
    assert_eq!(
        (status, json["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{answer}"
    );
}

#[test]
fn a_client_that_writes_its_whole_body_first_sees_the_413() {
    let env = Env::new(WORKSPACE);
    let daemon = env.start(&[]);
    let addr = &daemon.addr;
    // 4 MiB: far more than the socket buffers hold, so the write finishes
    // only if the daemon keeps reading after it has decided to refuse.
    let body = vec![b' '; 4 * 1024 * 1024];
    for _ in 0..3 {
        let answer = raw_exchange(addr, &head("POST", "/v1/track", addr, "", body.len()), &body)
            .expect("the whole body is written and the answer read, without a reset");
        let (status, json) = status_and_json(&answer);
        assert_eq!(
            (status, json["error"]["field"].as_str()),
            (413, Some("body")),
            "{answer}"
        );
    }
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_bounded() {
    use std::io::{Read, Write};
    let env = Env::new(WORKSPACE);
    let daemon = env.start(&[
        "--header-timeout",
        "1s",
        "--body-timeout",
        "1s",
        "--max-connections",
        "2",
    ]);
    let addr = &daemon.addr;
    // A head that never ends: the daemon closes the connection.
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut rest = Vec::new();
    let closed = stream.read_to_end(&mut rest);
    assert!(
        !matches!(&closed, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a half-sent head kept the connection open: {closed:?}"
    );
    // A body that stops halfway: 408 with a JSON reason.
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(head("POST", "/v1/track", addr, "", 100).as_bytes())
        .expect("write");
    stream.write_all(b"{\"userId\":").expect("write");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let (status, json) = status_and_json(&answer);
    assert_eq!(
        (status, json["code"].as_str()),
        (408, Some("request_timeout")),
        "{answer}"
    );
    // Two connections with heads in progress fill the bound: a third is not
    // served while they are open, and is served once they are closed.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.write_all(b"GET /healthz HTTP/1.1\r\n").expect("write");
            stream
        })
        .collect();
    let mut third = std::net::TcpStream::connect(addr).expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    third
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let early = third.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a third connection was served past the bound of 2: {early:?}"
    );
    drop(held);
    third.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut answer = Vec::new();
    third.read_to_end(&mut answer).expect("answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn event_times_and_ids_are_checked_at_intake() {
    let env = Env::new(WORKSPACE);
    let daemon = env.start(&["--max-future", "1h"]);
    let at = |offset_s: i64| {
        (chrono::Utc::now() + chrono::Duration::seconds(offset_s)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let track = |user: &str, timestamp: &str, sent_at: Option<&str>| {
        let sent = sent_at.map(|s| format!(r#","sentAt":"{s}""#)).unwrap_or_default();
        format!(r#"{{"userId":{user},"event":"ping","properties":{{"n":1}},"timestamp":"{timestamp}"{sent}}}"#)
    };
    for timestamp in ["9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z", &at(2 * 3600)] {
        let response = daemon.post("/v1/track", &track("\"t1\"", timestamp, None));
        assert_error_shape(&response, 422, "invalid_call", "timestamp");
    }
    // Two hours ahead by a fast device clock, sent at once: corrected.
    let response = daemon.post("/v1/track", &track("\"t1\"", &at(2 * 3600), Some(&at(2 * 3600 + 1))));
    assert_eq!(response.status, 200, "{}", response.body);
    let customer = daemon.get("/v1/customers/t1").json();
    let last = customer["last_event"]
        .as_str()
        .and_then(journeyc::runtime::trace::parse_time);
    let now = chrono::Utc::now().timestamp_millis();
    assert!(last.is_some_and(|t| t <= now), "{customer}");
    let long = format!("\"{}\"", "u".repeat(257));
    for user in [long.as_str(), r#""a\u0000b""#, r#""line\nbreak""#] {
        assert_error_shape(
            &daemon.post("/v1/track", &track(user, &at(0), None)),
            422,
            "invalid_call",
            "userId",
        );
    }
    let message = format!(
        r#"{{"userId":"t2","event":"ping","properties":{{"n":1}},"messageId":"{}"}}"#,
        "m".repeat(300)
    );
    assert_error_shape(&daemon.post("/v1/track", &message), 422, "invalid_call", "messageId");
    assert_eq!(daemon.get("/v1/customers/t2").status, 404);
}
