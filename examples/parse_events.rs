//! Event parsing, serde_json against sonic-rs, on the same typed borrowing
//! call (`journeyc::runtime::input::parse_call_from`): the figures and the
//! decision are in `docs/performance.md`, "Event parsing: serde_json against
//! sonic-rs".
//!
//! ```text
//! cargo build --release --locked --example parse_events
//! target/release/examples/parse_events MODE EVENTS.jsonl [REPEAT] [WORKSPACE]
//! ```
//!
//! Modes, each over every line of `EVENTS.jsonl` (`REPEAT` times, default 1;
//! the workspace defaults to `journeys/`):
//!
//! - `load`: reads the workspace and the lines, parses nothing (the floor to
//!   subtract from a callgrind count);
//! - `serde_json`: the simulator's path, `parse_call_str` per line;
//! - `sonic-rs`: the same typed call deserialized by `sonic_rs`, re-parsed
//!   with serde_json only when sonic-rs refuses the text, so that a refusal
//!   quotes serde_json's message;
//! - `batch-serde_json`, `batch-sonic-rs`: the daemon's path, lines grouped
//!   into `{"batch":[…]}` bodies of 100 calls, each body read into a
//!   `serde_json::Value` (by serde_json, or by sonic-rs through serde) and
//!   each item validated by `parse_received_call`;
//! - `check`: runs both parsers on every line and every batch and fails
//!   unless they accept the same calls (equal `Call`s) and refuse the same
//!   ones with the same message.
//!
//! Prints lines, accepted calls, and nanoseconds per line (wall clock:
//! noisy on a shared machine; count instructions with callgrind instead).

use journeyc::check::{check_workspace, Schema};
use journeyc::compile::compile;
use journeyc::runtime::input::{parse_call_from, parse_call_str, parse_received_call, Call};
use journeyc::workspace::{load, DiskFiles};
use std::process::ExitCode;
use std::time::Instant;

/// Calls per batch body (the daemon accepts up to its body limit; Segment's
/// own batches are of this order).
const BATCH: usize = 100;
/// A receive time after every generated event, so none is refused as
/// being in the future.
const RECEIVED_AT: i64 = 4_102_444_800_000;
const FUTURE_MAX_MS: i64 = 36 * 3_600_000;

fn serde_json_line(line: &str, schema: &Schema) -> Result<Call, String> {
    parse_call_str(line, schema, None).map_err(|error| error.to_string())
}

fn sonic_line(line: &str, schema: &Schema) -> Result<Call, String> {
    let mut deserializer = sonic_rs::Deserializer::from_str(line);
    let parsed = parse_call_from(&mut deserializer, schema, None);
    match parsed {
        Ok(call) if deserializer.end().is_ok() => call.map_err(|error| error.to_string()),
        // Not JSON for sonic-rs: serde_json's words for why.
        _ => serde_json_line(line, schema),
    }
}

fn batches(lines: &[String]) -> Vec<String> {
    lines
        .chunks(BATCH)
        .map(|chunk| format!("{{\"batch\":[{}]}}", chunk.join(",")))
        .collect()
}

/// One body as the daemon takes it: the JSON value, then each item.
fn batch(body: serde_json::Value, schema: &Schema) -> Vec<Result<Call, String>> {
    let serde_json::Value::Object(mut body) = body else {
        return vec![Err("not an object".into())];
    };
    let Some(serde_json::Value::Array(items)) = body.remove("batch") else {
        return vec![Err("no batch".into())];
    };
    items
        .iter()
        .map(|item| parse_received_call(item, schema, RECEIVED_AT, FUTURE_MAX_MS).map_err(|error| error.to_string()))
        .collect()
}

fn serde_json_batch(body: &str, schema: &Schema) -> Vec<Result<Call, String>> {
    match serde_json::from_str(body) {
        Ok(value) => batch(value, schema),
        Err(error) => vec![Err(error.to_string())],
    }
}

fn sonic_batch(body: &str, schema: &Schema) -> Vec<Result<Call, String>> {
    match sonic_rs::from_str(body) {
        Ok(value) => batch(value, schema),
        Err(_) => serde_json_batch(body, schema),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(events)) = (args.first(), args.get(1)) else {
        eprintln!("usage: parse_events load|serde_json|sonic-rs|batch-serde_json|batch-sonic-rs|check EVENTS.jsonl [REPEAT] [WORKSPACE]");
        return ExitCode::from(2);
    };
    let repeat: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(1);
    let workspace = args.get(3).map_or("journeys", String::as_str);
    let sources = match load(&[workspace.into()]) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let Some(checked) = check_workspace(&sources, &DiskFiles).checked else {
        eprintln!("error: {workspace} does not check");
        return ExitCode::from(1);
    };
    let bundle = compile(&checked);
    let schema = &bundle.schema;
    let text = match std::fs::read_to_string(events) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: {events}: {error}");
            return ExitCode::from(2);
        }
    };
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    let bodies = batches(&lines);

    let started = Instant::now();
    let mut accepted = 0usize;
    for _ in 0..repeat {
        match mode.as_str() {
            "load" => {}
            "serde_json" => accepted += lines.iter().filter(|l| serde_json_line(l, schema).is_ok()).count(),
            "sonic-rs" => accepted += lines.iter().filter(|l| sonic_line(l, schema).is_ok()).count(),
            "batch-serde_json" => {
                accepted += bodies
                    .iter()
                    .flat_map(|b| serde_json_batch(b, schema))
                    .filter(Result::is_ok)
                    .count()
            }
            "batch-sonic-rs" => {
                accepted += bodies
                    .iter()
                    .flat_map(|b| sonic_batch(b, schema))
                    .filter(Result::is_ok)
                    .count()
            }
            "check" => {
                for (number, line) in lines.iter().enumerate() {
                    let (expected, got) = (serde_json_line(line, schema), sonic_line(line, schema));
                    if expected != got {
                        eprintln!("line {}: serde_json {expected:?}\n  sonic-rs {got:?}", number + 1);
                        return ExitCode::from(1);
                    }
                    accepted += usize::from(expected.is_ok());
                }
                for (number, body) in bodies.iter().enumerate() {
                    if serde_json_batch(body, schema) != sonic_batch(body, schema) {
                        eprintln!("batch {}: the parsers disagree", number + 1);
                        return ExitCode::from(1);
                    }
                }
            }
            other => {
                eprintln!("error: unknown mode {other}");
                return ExitCode::from(2);
            }
        }
    }
    let elapsed = started.elapsed();
    let parsed = lines.len() * repeat;
    println!(
        "{mode}: {parsed} lines, {accepted} accepted, {:.0} ns per line",
        elapsed.as_nanos() as f64 / parsed.max(1) as f64
    );
    ExitCode::SUCCESS
}
