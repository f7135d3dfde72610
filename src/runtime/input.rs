//! Input to the runtime: Segment-format `identify` and `track` calls (spec §8),
//! validated against the workspace schema, and timer wake-ups.

use super::trace::parse_time;
use super::Millis;
use crate::check::{FieldType, Schema, Type};
use crate::compile::bytecode::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One input for one customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// Merge traits into the profile (`Value::Absent` removes a trait).
    Identify {
        traits: BTreeMap<String, Value>,
        at: Millis,
        message_id: Option<String>,
    },
    Track {
        event: String,
        properties: BTreeMap<String, Value>,
        at: Millis,
        message_id: Option<String>,
    },
    /// A timer fired: advance every enrollment due at or before `at`.
    Wake { at: Millis },
}

impl Input {
    pub fn at(&self) -> Millis {
        match self {
            Input::Identify { at, .. } | Input::Track { at, .. } | Input::Wake { at } => *at,
        }
    }

    pub fn message_id(&self) -> Option<&str> {
        match self {
            Input::Identify { message_id, .. } | Input::Track { message_id, .. } => message_id.as_deref(),
            Input::Wake { .. } => None,
        }
    }
}

/// Why an input was refused: the offending field (a JSON path such as
/// `properties.amount`) and a reason a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InputError {
    pub field: String,
    pub reason: String,
}

impl InputError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> InputError {
        InputError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A validated Segment call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub customer: String,
    pub input: Input,
}

/// Parses and validates one Segment call (`type` `identify` or `track`).
/// `received_at` is used when the call has no `timestamp`; `None` makes the
/// timestamp required (the simulator has no wall clock to fall back on).
pub fn parse_call(json: &serde_json::Value, schema: &Schema, received_at: Option<Millis>) -> Result<Call, InputError> {
    let object = json
        .as_object()
        .ok_or_else(|| InputError::new("", "expected a JSON object"))?;
    let kind = object
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| InputError::new("type", "missing; expected \"identify\" or \"track\""))?;
    let customer = match object.get("userId") {
        Some(serde_json::Value::String(id)) if !id.is_empty() => id.clone(),
        Some(serde_json::Value::Number(id)) => id.to_string(),
        Some(_) => return Err(InputError::new("userId", "must be a non-empty string")),
        None => return Err(InputError::new("userId", "missing (anonymous calls are not accepted)")),
    };
    if customer.len() > 256 {
        return Err(InputError::new("userId", "longer than 256 bytes"));
    }
    let at = match object.get("timestamp") {
        Some(serde_json::Value::String(text)) => {
            parse_time(text).ok_or_else(|| InputError::new("timestamp", format!("not an RFC 3339 time: {text:?}")))?
        }
        Some(_) => return Err(InputError::new("timestamp", "must be an RFC 3339 string")),
        None => received_at.ok_or_else(|| InputError::new("timestamp", "missing"))?,
    };
    let message_id = match object.get("messageId") {
        Some(serde_json::Value::String(id)) => Some(id.clone()),
        Some(serde_json::Value::Null) | None => None,
        Some(_) => return Err(InputError::new("messageId", "must be a string")),
    };
    let input = match kind {
        "identify" => {
            let traits = fields(object.get("traits"), "traits", &schema.customer, FieldsMode::Partial)?;
            Input::Identify { traits, at, message_id }
        }
        "track" => {
            let event = object
                .get("event")
                .and_then(|e| e.as_str())
                .ok_or_else(|| InputError::new("event", "missing; a track call names its event"))?;
            let declared = schema.events.get(event).ok_or_else(|| {
                let known: Vec<&str> = schema.events.keys().map(String::as_str).collect();
                let mut reason = format!("event `{event}` is not declared in the workspace");
                if let Some(best) = crate::diagnostic::did_you_mean(event, known) {
                    reason.push_str(&format!(" (did you mean `{best}`?)"));
                }
                InputError::new("event", reason)
            })?;
            let properties = fields(object.get("properties"), "properties", declared, FieldsMode::Complete)?;
            Input::Track {
                event: event.to_string(),
                properties,
                at,
                message_id,
            }
        }
        other => {
            return Err(InputError::new(
                "type",
                format!("`{other}` is not supported; expected \"identify\" or \"track\""),
            ))
        }
    };
    Ok(Call { customer, input })
}

#[derive(PartialEq)]
enum FieldsMode {
    /// `identify`: merge what is given.
    Partial,
    /// `track`: every required property must be present.
    Complete,
}

fn fields(
    given: Option<&serde_json::Value>,
    field: &str,
    declared: &BTreeMap<String, FieldType>,
    mode: FieldsMode,
) -> Result<BTreeMap<String, Value>, InputError> {
    let empty = serde_json::Map::new();
    let given = match given {
        None | Some(serde_json::Value::Null) => &empty,
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => return Err(InputError::new(field, "must be an object")),
    };
    let mut out = BTreeMap::new();
    for (name, json) in given {
        let path = format!("{field}.{name}");
        let Some(declared_type) = declared.get(name) else {
            let known: Vec<&str> = declared.keys().map(String::as_str).collect();
            let mut reason = "not declared in the schema".to_string();
            if let Some(best) = crate::diagnostic::did_you_mean(name, known) {
                reason.push_str(&format!(" (did you mean `{best}`?)"));
            }
            return Err(InputError::new(path, reason));
        };
        out.insert(
            name.clone(),
            convert(json, declared_type).map_err(|reason| InputError::new(path, reason))?,
        );
    }
    if mode == FieldsMode::Complete {
        for (name, declared_type) in declared {
            if !declared_type.optional && !out.contains_key(name) {
                return Err(InputError::new(
                    format!("{field}.{name}"),
                    "required property is missing",
                ));
            }
        }
    }
    Ok(out)
}

/// Converts a JSON value to a run-time value of the declared type.
pub fn convert(json: &serde_json::Value, declared: &FieldType) -> Result<Value, String> {
    use serde_json::Value as J;
    if json.is_null() {
        return if declared.optional {
            Ok(Value::Absent)
        } else {
            Err("must not be null (the field is not optional)".into())
        };
    }
    let mismatch = |expected: &str| Err(format!("expected {expected}, got {}", describe_json(json)));
    match (&declared.ty, json) {
        (Type::String, J::String(s)) => Ok(Value::String(s.clone())),
        (Type::Int, J::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Value::Int(i)),
            None => mismatch("a whole number"),
        },
        (Type::Number, J::Number(n)) => Ok(Value::Number(n.as_f64().unwrap_or(f64::NAN))),
        (Type::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (Type::Time, J::String(s)) => parse_time(s)
            .map(Value::Time)
            .ok_or_else(|| format!("expected an RFC 3339 time, got {s:?}")),
        (Type::Duration, J::Number(n)) => match n.as_f64() {
            Some(seconds) if seconds.is_finite() => Ok(Value::Duration((seconds * 1000.0) as i64)),
            _ => mismatch("a duration in seconds"),
        },
        (Type::Duration, J::String(s)) => crate::syntax::parse_duration(s)
            .filter(|_| !s.is_empty() && s.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(|seconds| Value::Duration(seconds * 1000))
            .ok_or_else(|| format!("expected a duration like \"3d\", got {s:?}")),
        (Type::Timezone, J::String(s)) => {
            if s.parse::<chrono_tz::Tz>().is_ok() {
                Ok(Value::String(s.clone()))
            } else {
                Err(format!("{s:?} is not an IANA time zone (e.g. \"Europe/Berlin\")"))
            }
        }
        (Type::Locale, J::String(s)) => {
            if crate::syntax::is_bcp47(s) {
                Ok(Value::String(s.clone()))
            } else {
                Err(format!("{s:?} is not a BCP-47 locale (e.g. \"fa-IR\")"))
            }
        }
        (Type::Enum(options), J::String(s)) => {
            if options.contains(s) {
                Ok(Value::String(s.clone()))
            } else {
                Err(format!(
                    "{s:?} is not one of {}",
                    options.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>().join(", ")
                ))
            }
        }
        (Type::String | Type::Time | Type::Timezone | Type::Locale | Type::Enum(_), _) => mismatch("a string"),
        (Type::Int, _) => mismatch("a whole number"),
        (Type::Number, _) => mismatch("a number"),
        (Type::Bool, _) => mismatch("true or false"),
        (Type::Duration, _) => mismatch("a duration"),
    }
}

fn describe_json(json: &serde_json::Value) -> String {
    match json {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => format!("{s:?}"),
        serde_json::Value::Array(_) => "an array".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}
