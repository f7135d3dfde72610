//! The trace (spec §9): one JSON object per line, in time order.

use super::Millis;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Enter,
    Send,
    Skip,
    Goal,
    Exit,
    Split,
    Set,
    /// An engagement event (`Email Opened`, …) about a send (`engagement`
    /// says which; `reason` is set when it is not counted).
    Engagement,
    /// An input could not be applied to this customer (`error` says why);
    /// the simulator skips the customer from then on.
    Error,
}

/// One line of the trace. Field order is the serialized order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    #[serde(with = "rfc3339")]
    pub at: Millis,
    pub customer: String,
    /// Empty (and left out) only on an `error` record not tied to a journey.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub journey: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// A send's stable idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What an `engagement` record reports: `delivered`, `opened`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// The step that made the record (`send`, `skip`, `split`, `set`, and
    /// `exit` by an `exit` statement), for the statistics' per-step counts.
    /// Not part of the trace line: the trace stays as spec §9 has it.
    #[serde(skip)]
    pub step: Option<Step>,
}

/// A step of one journey version: its content hash and instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The version's content hash, interned (`runtime/names.rs`).
    pub version: super::names::Name,
    pub pc: u32,
}

impl TraceRecord {
    pub fn new(at: Millis, customer: &str, journey: &str, kind: Kind) -> TraceRecord {
        TraceRecord {
            at,
            customer: customer.to_string(),
            journey: journey.to_string(),
            kind,
            version: None,
            message: None,
            channel: None,
            id: None,
            engagement: None,
            subject: None,
            body: None,
            locale: None,
            reason: None,
            error: None,
            goal: None,
            split: None,
            arm: None,
            attribute: None,
            value: None,
            step: None,
        }
    }

    /// The `error` record for an input that failed for `customer` at `at`.
    pub fn error(at: Millis, customer: &str, error: &super::ApplyError) -> TraceRecord {
        let journey = match error {
            super::ApplyError::StepLimit { journey, .. } => journey.as_str(),
            _ => "",
        };
        let mut record = TraceRecord::new(at, customer, journey, Kind::Error);
        record.error = Some(error.to_string());
        record
    }

    /// The record as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(256);
        super::trace_json::write_line(self, &mut out);
        String::from_utf8(out).expect("the trace writer writes UTF-8")
    }
}

/// Formats milliseconds as RFC 3339 UTC with a `Z`, with fractional seconds
/// only when there are any (`2026-01-05T10:00:00Z`).
pub fn format_time(at: Millis) -> String {
    let mut out = Vec::with_capacity(24);
    super::trace_json::write_time(at, &mut out);
    String::from_utf8(out).expect("a time is ASCII")
}

pub fn parse_time(text: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

mod rfc3339 {
    use super::Millis;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Millis, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_time(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_time(&text).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text}")))
    }
}
