//! Journey unit tests (`journeyc test`): a customer's profile, a timeline of
//! events, and the enters, sends, skips, goals and exits expected at given
//! times, run on the simulator's virtual clock; and numbers of the readout
//! (`stats`), computed by [`crate::runtime::stats`] as `journeyc simulate
//! --summary --format json` does. The format is documented in
//! `docs/testing.md`.
//!
//! Pure: test files come in as text; the CLI reads them and the workspace.

use crate::compile::bytecode::Bundle;
use crate::runtime::input::parse_call;
use crate::runtime::trace::{format_time, parse_time};
use crate::runtime::{Engine, Input, Kind, Millis, TraceRecord};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// When a test names no `start`.
pub const DEFAULT_START: &str = "2026-01-05T09:00:00Z";

/// A `.jtest` file (TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The workspace under test, relative to the test file (default `..`).
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(rename = "test", default)]
    pub tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// The customer id (default `customer`).
    #[serde(default)]
    pub customer: Option<String>,
    /// The instant `+DUR` times count from, and of the `profile` identify.
    #[serde(default)]
    pub start: Option<String>,
    /// Traits identified at `start`.
    #[serde(default)]
    pub profile: Option<toml::Table>,
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// Stop the clock here (default: run until nothing is left to do).
    #[serde(default)]
    pub until: Option<String>,
    /// Compare only this journey's records (expectations then omit it).
    #[serde(default)]
    pub journey: Option<String>,
    /// `"+1h send welcome"`, `"+1d skip pro_tips consent"`, … (see docs/testing.md).
    #[serde(default)]
    pub expect: Option<Vec<String>>,
    /// Per journey, a part of its readout that must match (see docs/testing.md).
    #[serde(default)]
    pub stats: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub at: String,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub properties: Option<toml::Table>,
    /// Traits to merge into the profile (an identify call) instead of an event.
    #[serde(default)]
    pub identify: Option<toml::Table>,
    /// A journey with `trigger api` to enter (a trigger call, its
    /// `properties` those of the trigger) instead of an event.
    #[serde(default)]
    pub trigger: Option<String>,
    #[serde(default, rename = "messageId")]
    pub message_id: Option<String>,
    /// Another customer's call (default: the test's customer). `expect`
    /// compares the test's customer; `stats` count everyone.
    #[serde(default)]
    pub customer: Option<String>,
}

/// The result of one test.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    /// `None` when it passed; else what to show.
    pub failure: Option<String>,
}

/// Parses a test file.
pub fn parse(text: &str) -> Result<TestFile, String> {
    toml::from_str(text).map_err(|error| error.to_string())
}

/// Runs every test of a file against a compiled workspace.
pub fn run_file(bundle: &Arc<Bundle>, file: &TestFile) -> Vec<Outcome> {
    file.tests
        .iter()
        .map(|test| Outcome {
            name: test.name.clone(),
            failure: run_test(bundle, test).err(),
        })
        .collect()
}

fn run_test(bundle: &Arc<Bundle>, test: &TestCase) -> Result<(), String> {
    let start = parse_time(test.start.as_deref().unwrap_or(DEFAULT_START))
        .ok_or_else(|| format!("start: not an RFC 3339 time: {:?}", test.start))?;
    if test.expect.is_none() && test.stats.is_none() {
        return Err("give `expect`, `stats` or both".to_string());
    }
    let customer = test.customer.clone().unwrap_or_else(|| "customer".to_string());
    // Inputs per customer; the test's customer first.
    let mut inputs_of: Vec<(String, Vec<Input>)> = vec![(customer.clone(), Vec::new())];
    if let Some(profile) = &test.profile {
        inputs_of[0]
            .1
            .push(call(bundle, &customer, "identify", None, profile, start, None)?);
    }
    for (index, spec) in test.events.iter().enumerate() {
        let at = parse_at(&spec.at, start).map_err(|e| format!("events[{index}].at: {e}"))?;
        let customer = spec.customer.as_deref().unwrap_or(&customer);
        let empty = toml::Table::new();
        let input = match (&spec.event, &spec.identify, &spec.trigger) {
            (Some(event), None, None) => call(
                bundle,
                customer,
                "track",
                Some(event),
                spec.properties.as_ref().unwrap_or(&empty),
                at,
                spec.message_id.as_deref(),
            ),
            (None, Some(traits), None) => call(
                bundle,
                customer,
                "identify",
                None,
                traits,
                at,
                spec.message_id.as_deref(),
            ),
            (None, None, Some(journey)) => trigger_call(
                bundle,
                customer,
                journey,
                spec.properties.as_ref().unwrap_or(&empty),
                at,
                spec.message_id.as_deref(),
            ),
            _ => Err("give one of `event`, `identify` or `trigger`".to_string()),
        }
        .map_err(|e| format!("events[{index}]: {e}"))?;
        match inputs_of.iter_mut().find(|(id, _)| id == customer) {
            Some((_, inputs)) => inputs.push(input),
            None => inputs_of.push((customer.to_string(), vec![input])),
        }
    }
    let until = test
        .until
        .as_deref()
        .map(|u| parse_at(u, start).map_err(|e| format!("until: {e}")))
        .transpose()?;
    let last = (inputs_of.iter().flat_map(|(_, inputs)| inputs.iter().map(Input::at)))
        .max()
        .unwrap_or(start);
    let engine = Engine::new(bundle.clone());
    let horizon = until.unwrap_or_else(|| crate::simulate::default_horizon(&engine, last));
    let engine = engine.with_horizon(horizon);
    let mut tally = crate::runtime::stats::Tally::default();
    let mut records = Vec::new();
    for (id, mut inputs) in inputs_of {
        inputs.sort_by_key(Input::at);
        let mut arrivals = Vec::new();
        let (mine, state) = crate::simulate::run_customer_to_end(&engine, &id, &inputs, until, &mut |journey, step| {
            arrivals.push((journey.to_string(), step.clone()))
        });
        mine.iter().for_each(|record| tally.add(record));
        tally.add_arrivals(&arrivals);
        // A customer that failed is not counted as waiting (as in `simulate`).
        if !mine.iter().any(|record| record.kind == Kind::Error) {
            tally.add_waiting(&state);
        }
        if id == customer {
            records = mine;
        }
    }

    let mut failures = Vec::new();
    if let Some(expect) = &test.expect {
        if let Some(failure) = compare_trace(test, expect, &records, start)? {
            failures.push(failure);
        }
    }
    if let Some(stats) = &test.stats {
        if let Some(failure) = compare_stats(bundle, &tally, stats)? {
            failures.push(failure);
        }
    }
    match failures.is_empty() {
        true => Ok(()),
        false => Err(failures.concat()),
    }
}

/// The trace comparison of `expect`: `None` when it holds, else the side
/// by side failure.
fn compare_trace(
    test: &TestCase,
    expect: &[String],
    records: &[TraceRecord],
    start: Millis,
) -> Result<Option<String>, String> {
    let expected: Vec<Expectation> = expect
        .iter()
        .enumerate()
        .map(|(index, line)| {
            parse_expectation(line, start, test.journey.is_some()).map_err(|e| format!("expect[{index}]: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut kinds = vec![Kind::Enter, Kind::Send, Kind::Skip, Kind::Goal, Kind::Exit, Kind::Error];
    kinds.extend(expected.iter().map(|e| e.kind));
    let actual: Vec<Expectation> = records
        .iter()
        .filter(|r| kinds.contains(&r.kind))
        .filter(|r| test.journey.as_ref().is_none_or(|j| *j == r.journey))
        .map(|r| Expectation::of(r, test.journey.is_none()))
        .collect();
    Ok((actual != expected).then(|| side_by_side(&expected, &actual, start)))
}

/// The `stats` comparison: every journey named must be in the workspace,
/// and its table must be a part of that journey's readout (the JSON of
/// `journeyc simulate --summary --format json`). `None` when it holds,
/// else one line per difference.
fn compare_stats(
    bundle: &Bundle,
    tally: &crate::runtime::stats::Tally,
    stats: &toml::Table,
) -> Result<Option<String>, String> {
    let readouts = tally.readouts(bundle);
    let mut differences = Vec::new();
    for (journey, expected) in stats {
        let Some(readout) = readouts.iter().find(|r| r.journey == *journey) else {
            let names: Vec<&str> = readouts.iter().map(|r| r.journey.as_str()).collect();
            return Err(format!(
                "stats: no journey `{journey}` (journeys: {})",
                names.join(", ")
            ));
        };
        let expected = serde_json::to_value(expected).map_err(|e| format!("stats.{journey}: {e}"))?;
        let actual = serde_json::to_value(readout).expect("a readout serializes");
        subset(&expected, &actual, &format!("stats.{journey}"), &mut differences);
    }
    if differences.is_empty() {
        return Ok(None);
    }
    let mut out = String::new();
    for difference in differences {
        let _ = writeln!(out, "  ! {difference}");
    }
    Ok(Some(out))
}

/// Notes where `expected` is not a part of `actual`: objects by key (keys
/// `expected` leaves out are not compared), arrays as an ordered
/// subsequence (each expected element matches a later actual one), numbers
/// by value (`1` is `1.0`), anything else by equality.
fn subset(expected: &serde_json::Value, actual: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let path = format!("{path}.{key}");
                match actual.get(key) {
                    Some(found) => subset(value, found, &path, out),
                    None => {
                        let keys: Vec<&str> = actual.keys().map(String::as_str).collect();
                        out.push(format!("{path}: not in the readout (there: {})", keys.join(", ")));
                    }
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            let mut rest = actual.iter().enumerate();
            for (index, value) in expected.iter().enumerate() {
                let matched = rest.by_ref().any(|(_, candidate)| {
                    let mut differences = Vec::new();
                    subset(value, candidate, path, &mut differences);
                    differences.is_empty()
                });
                if !matched {
                    out.push(format!(
                        "{path}[{index}]: expected an element like {value}, in order; actual {}",
                        Value::Array(actual.clone())
                    ));
                    return;
                }
            }
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => {}
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: expected {e}, actual {a}")),
    }
}

fn call(
    bundle: &Bundle,
    customer: &str,
    kind: &str,
    event: Option<&str>,
    fields: &toml::Table,
    at: Millis,
    message_id: Option<&str>,
) -> Result<Input, String> {
    // A test may name events, attributes and properties by identifier or
    // by wire name; the call goes in as a source would send it.
    let schema = &bundle.schema;
    let event = event.map(|event| match schema.events.contains_key(event) {
        true => schema.event_wire_name(event),
        false => event,
    });
    let declared = match event.and_then(|event| schema.event_on_wire(event)) {
        Some((identifier, properties)) => Some((schema.field_names(Some(identifier)), properties)),
        None if event.is_some() => None,
        None => Some((schema.field_names(None), &schema.customer)),
    };
    let fields: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(name, value)| {
            let name = match declared {
                Some((names, declared)) if declared.contains_key(name) => names.wire(name).to_string(),
                _ => name.clone(),
            };
            Ok((name, serde_json::to_value(value).map_err(|e| e.to_string())?))
        })
        .collect::<Result<_, String>>()?;
    let fields = serde_json::Value::Object(fields);
    let mut json = envelope(kind, customer, at, message_id);
    match event {
        Some(event) => {
            json["event"] = serde_json::Value::from(event);
            json["properties"] = fields;
        }
        None => json["traits"] = fields,
    }
    parse_call(&json, &bundle.schema, None)
        .map(|call| call.input)
        .map_err(|e| e.to_string())
}

/// A trigger call entering `journey` (its properties by identifier).
fn trigger_call(
    bundle: &Bundle,
    customer: &str,
    journey: &str,
    properties: &toml::Table,
    at: Millis,
    message_id: Option<&str>,
) -> Result<Input, String> {
    let mut json = envelope("trigger", customer, at, message_id);
    json["journey"] = serde_json::Value::from(journey);
    json["properties"] = serde_json::to_value(properties).map_err(|e| e.to_string())?;
    parse_call(&json, &bundle.schema, None)
        .map(|call| call.input)
        .map_err(|e| e.to_string())
}

/// The fields every call of a test has.
fn envelope(kind: &str, customer: &str, at: Millis, message_id: Option<&str>) -> serde_json::Value {
    let mut json = serde_json::json!({
        "type": kind,
        "userId": customer,
        "timestamp": format_time(at),
    });
    if let Some(id) = message_id {
        json["messageId"] = serde_json::Value::from(id);
    }
    json
}

/// `+1d2h` (after `start`) or an RFC 3339 time.
fn parse_at(text: &str, start: Millis) -> Result<Millis, String> {
    if let Some(offset) = text.strip_prefix('+') {
        if offset == "0" {
            return Ok(start);
        }
        return crate::syntax::parse_duration(offset)
            .filter(|_| offset.starts_with(|c: char| c.is_ascii_digit()))
            .map(|seconds| start.saturating_add(seconds.saturating_mul(1000)))
            .ok_or_else(|| format!("not a duration like +1d2h: {text:?}"));
    }
    parse_time(text).ok_or_else(|| format!("not `+DURATION` or an RFC 3339 time: {text:?}"))
}

/// One expected (or actual) trace line, reduced to what tests compare.
#[derive(Debug, PartialEq)]
struct Expectation {
    at: Millis,
    journey: Option<String>,
    kind: Kind,
    /// Message, goal, exit reason, split/arm, attribute: by kind.
    details: Vec<String>,
}

impl Expectation {
    fn of(record: &TraceRecord, with_journey: bool) -> Expectation {
        let details: Vec<Option<&String>> = match record.kind {
            Kind::Enter => vec![],
            Kind::Send => vec![record.message.as_ref()],
            Kind::Skip => vec![record.message.as_ref(), record.reason.as_ref()],
            Kind::Goal => vec![record.goal.as_ref()],
            Kind::Exit => vec![record.reason.as_ref()],
            Kind::Split => vec![record.split.as_ref(), record.arm.as_ref()],
            Kind::Set => vec![record.attribute.as_ref()],
            Kind::Engagement => vec![
                record.message.as_ref(),
                record.engagement.as_ref(),
                record.reason.as_ref(),
            ],
            Kind::Error => vec![record.error.as_ref()],
        };
        Expectation {
            at: record.at,
            journey: with_journey.then(|| record.journey.clone()),
            kind: record.kind,
            details: details.into_iter().flatten().cloned().collect(),
        }
    }

    fn show(&self, start: Millis) -> String {
        let mut text = format!("{:<10}", relative(self.at, start));
        if let Some(journey) = &self.journey {
            let _ = write!(text, " {journey}");
        }
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = write!(text, " {kind}");
        for detail in &self.details {
            let _ = write!(text, " {detail}");
        }
        text
    }
}

fn parse_expectation(line: &str, start: Millis, journey_given: bool) -> Result<Expectation, String> {
    let mut words = line.split_whitespace();
    let at = parse_at(words.next().ok_or("empty expectation")?, start)?;
    let journey = if journey_given {
        None
    } else {
        Some(
            words
                .next()
                .ok_or("expected `TIME JOURNEY KIND …` (or set `journey` on the test)")?
                .to_string(),
        )
    };
    let kind_word = words
        .next()
        .ok_or("missing the kind (enter, send, skip, goal, exit, split, set, engagement, error)")?;
    let kind: Kind = serde_json::from_value(serde_json::Value::from(kind_word)).map_err(|_| {
        format!("unknown kind `{kind_word}` (enter, send, skip, goal, exit, split, set, engagement, error)")
    })?;
    Ok(Expectation {
        at,
        journey,
        kind,
        details: words.map(str::to_string).collect(),
    })
}

/// `+1d2h` relative to `start`, or the absolute time before it.
fn relative(at: Millis, start: Millis) -> String {
    if at < start {
        return format_time(at);
    }
    let mut seconds = (at - start) / 1000;
    if seconds == 0 {
        return "+0".to_string();
    }
    let mut text = "+".to_string();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            let _ = write!(text, "{}{unit}", seconds / size);
            seconds %= size;
        }
    }
    text
}

fn side_by_side(expected: &[Expectation], actual: &[Expectation], start: Millis) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "    {:<44} actual", "expected");
    for index in 0..expected.len().max(actual.len()) {
        let left = expected.get(index).map(|e| e.show(start)).unwrap_or_default();
        let right = actual.get(index).map(|e| e.show(start)).unwrap_or_default();
        let marker = if expected.get(index) == actual.get(index) {
            ' '
        } else {
            '!'
        };
        let _ = writeln!(out, "  {marker} {left:<44} {right}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_round_trip() {
        let start = parse_time(DEFAULT_START).expect("valid");
        for text in ["+0", "+1d", "+1d2h", "+30m", "+2d3h4m5s"] {
            assert_eq!(relative(parse_at(text, start).expect("parses"), start), text);
        }
    }
}
