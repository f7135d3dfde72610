//! Broadcasts: a `trigger api` journey entered by every known customer of a
//! segment (`POST /v1/journeys/NAME/trigger` with `{"segment": …}` in the
//! daemon, a `{"type": "trigger", "segment": …}` line of an event file in
//! the simulator and `journeyc test`). Pure: both drivers decide here what a
//! broadcast asks for, who is in and what each member is given.
//!
//! **Invariant:** a broadcast visits customers in the byte order of their
//! ids ([`visits_before`]), each at most once; whether a customer is in the
//! segment is decided when it is reached, on its state then, at the time of
//! the visit ([`is_member`]); a member is given the same trigger input as a
//! per-customer trigger call, carrying the message id [`message_id`], so a
//! second delivery of the same broadcast to the same customer is dropped by
//! the customer's message-id memory.

use super::eval::Scope;
use super::input::{parse_call, InputError};
use super::{CustomerState, Input, Millis};
use crate::compile::bytecode::{Bundle, SegmentId, Value};
use std::collections::BTreeMap;

/// A validated broadcast request: the journey, the segment, the properties
/// every member enters with (checked against the journey's `trigger api`
/// list like a per-customer trigger's) and the request's time.
#[derive(Clone, Debug, PartialEq)]
pub struct Broadcast {
    pub journey: String,
    pub segment: String,
    pub properties: BTreeMap<String, Value>,
    pub at: Millis,
    /// The request's `messageId`, if it gave one.
    pub message_id: Option<String>,
}

/// Validates a broadcast request: a JSON object with `segment` (a segment of
/// the workspace), `journey` (a journey with `trigger api`), `properties`
/// and optionally `timestamp` and `messageId`, naming no customer.
/// `received_at` is as for [`parse_call`] (the daemon's clock; `None` in
/// the simulator, where `timestamp` is required).
pub fn parse(json: &serde_json::Value, bundle: &Bundle, received_at: Option<Millis>) -> Result<Broadcast, InputError> {
    let Some(object) = json.as_object() else {
        return Err(InputError::new("", "expected a JSON object"));
    };
    let segment = match object.get("segment") {
        Some(serde_json::Value::String(name)) if !name.is_empty() => name.clone(),
        Some(_) => return Err(InputError::new("segment", "must be a non-empty string")),
        None => return Err(InputError::new("segment", "missing; a broadcast names its segment")),
    };
    if segment_id(bundle, &segment).is_none() {
        let known = bundle.segments.iter().map(|s| bundle.name(s.name));
        let mut reason = format!("no segment `{segment}` in the workspace");
        if let Some(best) = crate::diagnostic::did_you_mean(&segment, known) {
            reason.push_str(&format!(" (did you mean `{best}`?)"));
        }
        return Err(InputError::new("segment", reason));
    }
    for field in ["userId", "anonymousId", "customers", "previousId"] {
        if object.contains_key(field) {
            return Err(InputError::new(
                field,
                "a broadcast names a segment, not customers; send customers without `segment`",
            ));
        }
    }
    // The rest is a trigger call's: validated as one, for a stand-in customer.
    let mut call = object.clone();
    call.remove("segment");
    call.insert("type".into(), "trigger".into());
    call.insert("userId".into(), "broadcast".into());
    let call = parse_call(&serde_json::Value::Object(call), &bundle.schema, received_at)?;
    match call.input {
        Input::Trigger {
            journey,
            properties,
            at,
            message_id,
        } => Ok(Broadcast {
            journey,
            segment,
            properties,
            at,
            message_id,
        }),
        _ => unreachable!("a call of type trigger is a trigger input"),
    }
}

/// The segment named `name` in `bundle`.
pub fn segment_id(bundle: &Bundle, name: &str) -> Option<SegmentId> {
    (bundle.segments.iter())
        .position(|segment| bundle.name(segment.name) == name)
        .map(|index| SegmentId(index as u32))
}

/// Whether the customer is in `segment` at `at`, as its state is now.
pub fn is_member(bundle: &Bundle, state: &CustomerState, segment: SegmentId, at: Millis) -> bool {
    Scope {
        bundle,
        now: at,
        profile: &state.profile,
        event: None,
        history: &state.history,
        names: None,
        enrollment: None,
    }
    .in_segment(segment)
}

/// Whether a customer a broadcast knows has been seen: it has had an input.
pub fn is_known(state: &CustomerState) -> bool {
    state.first_seen.is_some()
}

/// The visiting order: whether the customer `first` is visited before
/// `second` (the byte order of ids, which is also the daemon's key order).
pub fn visits_before(first: &str, second: &str) -> bool {
    first.as_bytes() < second.as_bytes()
}

/// The message id of broadcast `broadcast`'s trigger input. A customer's
/// message-id memory is its own, so this names one (broadcast, customer).
pub fn message_id(broadcast: &str) -> String {
    format!("broadcast:{broadcast}")
}

/// The trigger input a member of broadcast `broadcast` is given at `at`.
pub fn input(broadcast: &str, journey: &str, properties: &BTreeMap<String, Value>, at: Millis) -> Input {
    Input::Trigger {
        journey: journey.to_string(),
        properties: properties.clone(),
        at,
        message_id: Some(message_id(broadcast)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Bundle {
        let source = r#"
customer { plan: string? }
segment paying = customer.plan == "pro"
message hello push { body "hi" }
journey coupon {
  trigger api { code: string }
  send hello
}
"#;
        let mut sources = crate::source::SourceMap::new();
        sources.add("w.journey", source);
        let outcome = crate::check::check_workspace(&sources, &crate::workspace::MemoryFiles::default());
        crate::compile::compile(&outcome.checked.expect("the workspace checks"))
    }

    #[test]
    fn a_broadcast_names_a_segment_and_a_trigger_journey() {
        let bundle = bundle();
        let ok = serde_json::json!({"journey": "coupon", "segment": "paying", "properties": {"code": "X"}, "timestamp": "2026-01-05T10:00:00Z"});
        let broadcast = parse(&ok, &bundle, None).expect("valid");
        assert_eq!(broadcast.segment, "paying");
        assert_eq!(broadcast.journey, "coupon");
        assert_eq!(broadcast.properties.get("code"), Some(&Value::String("X".into())));
        let refused = |json: serde_json::Value| parse(&json, &bundle, None).expect_err("refused").to_string();
        assert_eq!(
            refused(
                serde_json::json!({"journey": "coupon", "segment": "payin", "properties": {"code": "X"}, "timestamp": "2026-01-05T10:00:00Z"})
            ),
            "segment: no segment `payin` in the workspace (did you mean `paying`?)"
        );
        assert!(refused(serde_json::json!({"journey": "coupon", "segment": "paying", "properties": {}, "timestamp": "2026-01-05T10:00:00Z"})).starts_with("properties.code"));
        assert!(refused(
            serde_json::json!({"journey": "coupon", "segment": "paying", "userId": "c1", "properties": {"code": "X"}})
        )
        .starts_with("userId:"));
        assert!(refused(serde_json::json!({"journey": "coupn", "segment": "paying", "properties": {"code": "X"}, "timestamp": "2026-01-05T10:00:00Z"})).starts_with("journey:"));
    }

    #[test]
    fn membership_is_read_from_the_state_when_visited() {
        let bundle = bundle();
        let segment = segment_id(&bundle, "paying").expect("declared");
        let mut state = CustomerState::new("c1");
        assert!(!is_member(&bundle, &state, segment, 0));
        state.profile.insert("plan".into(), Value::String("pro".into()));
        assert!(is_member(&bundle, &state, segment, 0));
        assert!(visits_before("a", "b") && visits_before("B", "a") && !visits_before("b", "b"));
        assert_eq!(
            input("7", "coupon", &BTreeMap::new(), 5).message_id(),
            Some("broadcast:7")
        );
    }
}
