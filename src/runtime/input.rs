//! Input to the runtime: Segment-format `identify` and `track` calls (spec §8),
//! validated against the workspace schema, and timer wake-ups.

use super::names::NameMap;
use super::trace::parse_time;
use super::Millis;
use crate::check::{FieldType, Names, Schema, Type};
use crate::compile::bytecode::Value;
use crate::syntax::ast::Channel;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// One input for one customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// Merge traits into the profile (`Value::Absent` removes a trait), and
    /// set channels subscribed (`true`) or unsubscribed (`false`).
    Identify {
        traits: BTreeMap<String, Value>,
        #[serde(default)]
        subscriptions: BTreeMap<Channel, bool>,
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
    /// Enter the journey `journey` (`trigger api { … }`) with these
    /// properties as `event.*`: `POST /v1/journeys/NAME/trigger`, or a
    /// `{"type": "trigger", …}` line of an event file.
    Trigger {
        journey: String,
        properties: BTreeMap<String, Value>,
        at: Millis,
        message_id: Option<String>,
    },
}

impl Input {
    pub fn at(&self) -> Millis {
        match self {
            Input::Identify { at, .. } | Input::Track { at, .. } | Input::Trigger { at, .. } | Input::Wake { at } => {
                *at
            }
        }
    }

    pub fn message_id(&self) -> Option<&str> {
        match self {
            Input::Identify { message_id, .. }
            | Input::Track { message_id, .. }
            | Input::Trigger { message_id, .. } => message_id.as_deref(),
            Input::Wake { .. } => None,
        }
    }
}

/// The identify trait that sets a channel's subscription (`email_subscribe`),
/// unless the workspace declares an attribute of that name.
pub fn subscribe_trait(channel: Channel) -> String {
    format!("{}_subscribe", channel.as_str())
}

/// The channel whose subscription trait `name` is.
pub fn subscribe_trait_channel(name: &str) -> Option<Channel> {
    name.strip_suffix("_subscribe").and_then(Channel::parse)
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
    /// Another id of the same person to merge into `customer` before the
    /// input (the `anonymousId` of a call that also names a `userId`, the
    /// `previousId` of an `alias`): see `runtime::merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<String>,
    /// Attributes from the call's `context` (`timezone`, `locale`) that
    /// fill the profile where it has none: see [`context_fill`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fill: BTreeMap<String, Value>,
    /// A `group` call's group, to store with the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
}

/// A `group` call's `groupId` and its scalar `traits` (nested objects and
/// arrays are not kept), as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub traits: serde_json::Map<String, serde_json::Value>,
}

/// The most traits kept of one `group` call.
pub const GROUP_TRAITS_MAX: usize = 64;

fn group_call(group_id: Option<Scalar>, traits: Option<Fields>) -> Result<Option<Group>, InputError> {
    let id = match group_id {
        Some(Scalar::Str(id)) if !id.is_empty() => id.into_owned(),
        Some(number @ (Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_))) => number.to_string(),
        Some(Scalar::Null) | None => return Ok(None),
        Some(_) => return Err(InputError::new("groupId", "must be a non-empty string")),
    };
    check_id("groupId", &id)?;
    let pairs = match traits {
        None | Some(Fields::Null) => Vec::new(),
        Some(Fields::Object(pairs)) => pairs,
        Some(Fields::Other) => return Err(InputError::new("traits", "must be an object")),
    };
    if pairs.len() > GROUP_TRAITS_MAX {
        return Err(InputError::new(
            "traits",
            format!("{} group traits; at most {GROUP_TRAITS_MAX}", pairs.len()),
        ));
    }
    let mut out = serde_json::Map::new();
    for (name, value) in pairs {
        check_id(&format!("traits.{name}"), &name)?;
        let json = match value {
            Scalar::Str(text) if text.len() > STRING_BYTES_MAX => {
                return Err(InputError::new(
                    format!("traits.{name}"),
                    format!("{} bytes; at most {STRING_BYTES_MAX}", text.len()),
                ))
            }
            Scalar::Str(text) => serde_json::Value::String(text.into_owned()),
            Scalar::Bool(b) => serde_json::Value::Bool(b),
            Scalar::Int(i) => serde_json::Value::from(i),
            Scalar::UInt(u) => serde_json::Value::from(u),
            Scalar::Float(f) => serde_json::Value::from(f),
            Scalar::Null | Scalar::Array | Scalar::Object => continue,
        };
        out.insert(name.into_owned(), json);
    }
    Ok(Some(Group { id, traits: out }))
}

/// The `context` fields that fill an attribute of the same name, when the
/// workspace declares it and the profile has none.
pub const CONTEXT_ATTRIBUTES: [&str; 2] = ["timezone", "locale"];

/// The identify to apply before `input` so that the call's context fills
/// the attributes the profile lacks. Precedence: the call's own traits,
/// then the profile as it is, then the context (`docs/daemon.md`,
/// "Context"). `None` when there is nothing to fill.
pub fn context_fill(profile: &NameMap<Value>, fill: &BTreeMap<String, Value>, input: &Input) -> Option<Input> {
    let explicit = match input {
        Input::Identify { traits, .. } => Some(traits),
        _ => None,
    };
    let traits: BTreeMap<String, Value> = (fill.iter())
        .filter(|(name, _)| !profile.get(*name).is_some_and(|v| *v != Value::Absent))
        .filter(|(name, _)| !explicit.is_some_and(|traits| traits.contains_key(*name)))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    (!traits.is_empty()).then(|| Input::Identify {
        traits,
        subscriptions: BTreeMap::new(),
        at: input.at(),
        message_id: None,
    })
}

/// The attributes a call's `context` can fill: those of
/// [`CONTEXT_ATTRIBUTES`] the workspace declares, with a valid value (an
/// invalid one is ignored: the context is a hint, not the customer's word).
fn context_attributes(given: [(&str, Option<Scalar>); 2], schema: &Schema) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (name, value) in given {
        // Most calls give neither, so the schema is searched only for what a call gives.
        let Some(value) = value else { continue };
        let Some(declared) = schema.customer.get(name) else {
            continue;
        };
        if let Ok(value @ Value::String(_)) = convert(value, declared) {
            out.insert(name.to_string(), value);
        }
    }
    out
}

/// Parses and validates one Segment call (`type` `identify` or `track`).
/// `received_at` is used when the call has no `timestamp`; `None` makes the
/// timestamp required (the simulator has no wall clock to fall back on).
pub fn parse_call(json: &serde_json::Value, schema: &Schema, received_at: Option<Millis>) -> Result<Call, InputError> {
    let raw = RawCall::deserialize(json).map_err(|error| InputError::new("", error.to_string()))?;
    validate(raw, schema, received_at)
}

/// The customer attribute holding an SMS recipient's number, E.164.
pub const PHONE_ATTRIBUTE: &str = "phone";

/// E.164: `+`, then 8 to 15 digits, the first not 0.
pub fn is_e164(text: &str) -> bool {
    let Some(digits) = text.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// A declared `phone` trait must be an E.164 number: the SMS sink sends
/// to it as it is. (The daemon's intake only; the simulator takes inputs
/// as they were recorded.)
fn check_phone(call: &Call, schema: &Schema) -> Result<(), InputError> {
    let Input::Identify { traits, .. } = &call.input else {
        return Ok(());
    };
    if !schema.customer.contains_key(PHONE_ATTRIBUTE) {
        return Ok(());
    }
    match traits.get(PHONE_ATTRIBUTE) {
        Some(Value::String(number)) if !is_e164(number) => {
            let wire = schema
                .wire
                .customer
                .iter()
                .find(|(_, identifier)| identifier.as_str() == PHONE_ATTRIBUTE)
                .map_or(PHONE_ATTRIBUTE, |(wire, _)| wire.as_str());
            Err(InputError::new(
                format!("traits.{wire}"),
                format!("{number:?} is not an E.164 phone number: `+`, the country code and the number, digits only (e.g. +14155550123)"),
            ))
        }
        _ => Ok(()),
    }
}

/// [`parse_call`] for a call received at `received_at` by the daemon's
/// clock: also refuses an event time (after the skew correction) more
/// than `future_max_ms` ahead of it, which would strand the customer in
/// the future.
pub fn parse_received_call(
    json: &serde_json::Value,
    schema: &Schema,
    received_at: Millis,
    future_max_ms: Millis,
) -> Result<Call, InputError> {
    let call = parse_call(json, schema, Some(received_at))?;
    check_phone(&call, schema)?;
    let ahead = call.input.at().saturating_sub(received_at);
    if ahead > future_max_ms {
        return Err(InputError::new(
            "timestamp",
            format!(
                "{} is {} ahead of the receiver's clock ({}); at most {} is accepted",
                super::trace::format_time(call.input.at()),
                describe_ms(ahead),
                super::trace::format_time(received_at),
                describe_ms(future_max_ms),
            ),
        ));
    }
    Ok(call)
}

/// A span of milliseconds for a message: `36h`, `90s`, `250ms`.
fn describe_ms(ms: Millis) -> String {
    match ms {
        ms if ms >= 3_600_000 && ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms >= 3_600_000 => format!("{:.1}h", ms as f64 / 3_600_000.0),
        ms if ms >= 1000 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Parses and validates one call from its JSON text without building a
/// `serde_json::Value` first (the simulator's event files): the same
/// checks and messages as [`parse_call`].
pub fn parse_call_str(text: &str, schema: &Schema, received_at: Option<Millis>) -> Result<Call, CallError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let call = parse_call_from(&mut deserializer, schema, received_at).map_err(CallError::Json)?;
    deserializer.end().map_err(CallError::Json)?;
    call.map_err(CallError::Input)
}

/// [`parse_call_str`] over any serde deserializer: the outer error is the
/// deserializer's (the text is not JSON), the inner one validation's. The
/// caller checks for trailing text. `benches/parse_events.rs` uses it to
/// measure other JSON parsers against serde_json on the same typed,
/// borrowing call (docs/performance.md, "Event parsing: serde_json against
/// sonic-rs").
pub fn parse_call_from<'de, D: Deserializer<'de>>(
    deserializer: D,
    schema: &Schema,
    received_at: Option<Millis>,
) -> Result<Result<Call, InputError>, D::Error> {
    let raw = RawCall::deserialize(deserializer)?;
    Ok(validate(raw, schema, received_at))
}

/// Why a call's text was refused: not JSON at all, or not a valid call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error(transparent)]
    Input(InputError),
}

fn validate(raw: RawCall, schema: &Schema, received_at: Option<Millis>) -> Result<Call, InputError> {
    let RawCall::Object(raw) = raw else {
        return Err(InputError::new("", "expected a JSON object"));
    };
    let kind = match &raw.kind {
        Some(Scalar::Str(kind)) => kind.as_ref(),
        _ => {
            return Err(InputError::new(
                "type",
                format!("missing; expected one of {CALL_TYPES}"),
            ))
        }
    };
    // The profile is keyed by `userId`, else by `anonymousId`.
    let id = |field: &str, value: Option<Scalar>| match value {
        Some(Scalar::Str(id)) if !id.is_empty() => Ok(Some(id.into_owned())),
        Some(number @ (Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_))) => Ok(Some(number.to_string())),
        Some(Scalar::Null) | None => Ok(None),
        Some(_) => Err(InputError::new(field, "must be a non-empty string")),
    };
    let (field, customer, mut merge) = match (id("userId", raw.user_id)?, id("anonymousId", raw.anonymous_id)?) {
        (Some(user), anonymous) => ("userId", user, anonymous),
        (None, Some(anonymous)) => ("anonymousId", anonymous, None),
        (None, None) if kind == "alias" => {
            return Err(InputError::new(
                "userId",
                "missing: an alias names the userId the previousId merges into",
            ))
        }
        (None, None) => return Err(InputError::new("userId", "missing: a call names userId or anonymousId")),
    };
    check_id(field, &customer)?;
    if let Some(anonymous) = &merge {
        check_id("anonymousId", anonymous)?;
    }
    if kind == "alias" {
        merge = match id("previousId", raw.previous_id)? {
            Some(previous) => Some(previous),
            None => {
                return Err(InputError::new(
                    "previousId",
                    "missing: an alias names the previousId to merge",
                ))
            }
        };
        check_id("previousId", merge.as_deref().unwrap_or_default())?;
    }
    let merge = merge.filter(|other| *other != customer);
    let mut group = None;
    let fill = context_attributes(
        [("timezone", raw.context_timezone), ("locale", raw.context_locale)],
        schema,
    );
    let timestamp = time_field("timestamp", raw.timestamp)?;
    let sent_at = time_field("sentAt", raw.sent_at)?;
    // The daemon's clock is the receive time; a call's own `receivedAt`
    // (an exported Segment event) stands in for it where there is none.
    let received_at = match received_at {
        Some(at) => Some(at),
        None => time_field("receivedAt", raw.received_at)?,
    };
    let at = match (timestamp, sent_at, received_at) {
        (Some(timestamp), Some(sent_at), Some(received_at)) => correct_skew(timestamp, sent_at, received_at),
        (Some(timestamp), _, _) => timestamp,
        (None, _, Some(received_at)) => received_at,
        (None, _, None) => return Err(InputError::new("timestamp", "missing")),
    };
    check_time("timestamp", at)?;
    let message_id = match raw.message_id {
        Some(Scalar::Str(id)) => {
            check_id("messageId", &id)?;
            Some(id.into_owned())
        }
        Some(Scalar::Null) | None => None,
        Some(_) => return Err(InputError::new("messageId", "must be a string")),
    };
    let input = match kind {
        "identify" => {
            let names = schema.field_names(None);
            // RudderStack's SDK sends identify traits only in `context.traits`.
            let given = match raw.traits {
                None | Some(Fields::Null) => raw.context_traits,
                traits => traits,
            };
            let (subscriptions, traits) = subscription_traits(given, &schema.customer, names)?;
            let traits = fields(traits, "traits", &schema.customer, names, FieldsMode::Partial)?;
            Input::Identify {
                traits,
                subscriptions,
                at,
                message_id,
            }
        }
        "track" => {
            let Some(Scalar::Str(event)) = &raw.event else {
                return Err(InputError::new("event", "missing; a track call names its event"));
            };
            let engagement = super::engagement::event_named(event.as_ref());
            if let Some(engagement) = engagement.filter(|e| schema.event_on_wire(e.name).is_none()) {
                return Ok(Call {
                    customer,
                    input: Input::Track {
                        event: engagement.name.to_string(),
                        properties: engagement_properties(raw.properties)?,
                        at,
                        message_id,
                    },
                    merge,
                    fill,
                    group: None,
                });
            }
            let (event, declared) = schema.event_on_wire(event.as_ref()).ok_or_else(|| {
                let known: Vec<&str> = schema.events.keys().map(|e| schema.event_wire_name(e)).collect();
                let mut reason = format!("event `{event}` is not declared in the workspace");
                if let Some(best) = crate::diagnostic::did_you_mean(event, known) {
                    reason.push_str(&format!(" (did you mean `{best}`?)"));
                }
                InputError::new("event", reason)
            })?;
            let names = schema.field_names(Some(event));
            let properties = fields(raw.properties, "properties", declared, names, FieldsMode::Complete)?;
            Input::Track {
                event: event.clone(),
                properties,
                at,
                message_id,
            }
        }
        "page" | "screen" => match schema.event_on_wire(kind) {
            // Declared: an event like any other, with the call's `name` and
            // `category` as properties when the event declares them.
            Some((event, declared)) => {
                let names = schema.field_names(Some(event));
                let mut given = match raw.properties {
                    None | Some(Fields::Null) => Vec::new(),
                    Some(Fields::Object(pairs)) => pairs,
                    Some(Fields::Other) => return Err(InputError::new("properties", "must be an object")),
                };
                for (key, value) in [("name", raw.name), ("category", raw.category)] {
                    let declares = names.identifier(key).is_some_and(|name| declared.contains_key(name));
                    if let (true, Some(value)) = (declares, value) {
                        if !given.iter().any(|(k, _)| k == key) {
                            given.push((Cow::Borrowed(key), value));
                        }
                    }
                }
                let given = Some(Fields::Object(given));
                Input::Track {
                    event: event.clone(),
                    properties: fields(given, "properties", declared, names, FieldsMode::Complete)?,
                    at,
                    message_id,
                }
            }
            None => activity(kind, at, message_id),
        },
        "trigger" => {
            let Some(Scalar::Str(journey)) = &raw.journey else {
                return Err(InputError::new("journey", "missing; a trigger call names its journey"));
            };
            let Some((journey, declared, names)) = schema.api_trigger(journey) else {
                let known: Vec<&str> = schema.api.keys().map(String::as_str).collect();
                let mut reason = format!("no journey `{journey}` with `trigger api` in the workspace");
                if let Some(best) = crate::diagnostic::did_you_mean(journey, known) {
                    reason.push_str(&format!(" (did you mean `{best}`?)"));
                }
                return Err(InputError::new("journey", reason));
            };
            Input::Trigger {
                journey: journey.clone(),
                properties: fields(raw.properties, "properties", declared, names, FieldsMode::Complete)?,
                at,
                message_id,
            }
        }
        "group" => {
            group = group_call(raw.group_id, raw.traits)?;
            activity(kind, at, message_id)
        }
        // The merge is the call; what is applied after it is an
        // identify without traits (activity, as any call).
        "alias" => Input::Identify {
            traits: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            at,
            message_id,
        },
        other => {
            return Err(InputError::new(
                "type",
                format!("`{other}` is not a Segment call type; expected one of {CALL_TYPES}"),
            ))
        }
    };
    Ok(Call {
        customer,
        input,
        merge,
        fill,
        group,
    })
}

/// The longest id (`userId`, `anonymousId`, `messageId`) accepted, in bytes.
pub const ID_BYTES_MAX: usize = 256;
/// The longest string property or trait value accepted, in bytes.
pub const STRING_BYTES_MAX: usize = 8 * 1024;
/// The earliest event time the runtime represents (every customer's clock
/// starts there): 1970-01-01T00:00:00Z.
pub const TIME_MIN: Millis = 0;
/// The latest event time the runtime represents: 9999-12-31T23:59:59.999Z.
pub const TIME_MAX: Millis = 253_402_300_799_999;

/// An id: at most [`ID_BYTES_MAX`] bytes, no control characters (NUL,
/// newlines, escapes), which would corrupt logs and downstream systems.
pub fn check_id(field: &str, id: &str) -> Result<(), InputError> {
    if id.len() > ID_BYTES_MAX {
        return Err(InputError::new(
            field,
            format!("{} bytes; at most {ID_BYTES_MAX}", id.len()),
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(InputError::new(
            field,
            format!("contains the control character {:?}", c),
        ));
    }
    Ok(())
}

/// Whether the runtime can represent `at` as an event time.
pub fn check_time(field: &str, at: Millis) -> Result<(), InputError> {
    if at < TIME_MIN {
        return Err(InputError::new(
            field,
            "before 1970-01-01T00:00:00Z, the earliest time the runtime represents",
        ));
    }
    if at > TIME_MAX {
        return Err(InputError::new(
            field,
            "after 9999-12-31, the latest time the runtime represents",
        ));
    }
    Ok(())
}

/// Segment's clock-skew correction: the device's clock is off by
/// `sent_at - received_at`, so the event happened at
/// `received_at - (sent_at - timestamp)` by the receiver's clock.
pub fn correct_skew(timestamp: Millis, sent_at: Millis, received_at: Millis) -> Millis {
    received_at.saturating_sub(sent_at.saturating_sub(timestamp))
}

/// An optional RFC 3339 time field.
fn time_field(field: &str, value: Option<Scalar>) -> Result<Option<Millis>, InputError> {
    match value {
        Some(Scalar::Str(text)) => parse_time(&text)
            .map(Some)
            .ok_or_else(|| InputError::new(field, format!("not an RFC 3339 time: {text:?}"))),
        Some(Scalar::Null) | None => Ok(None),
        Some(_) => Err(InputError::new(field, "must be an RFC 3339 string")),
    }
}

/// Takes the subscription traits (`email_subscribe: "unsubscribed"`) out of
/// an identify's traits: those of a channel, not declared as attributes.
/// Values: `subscribed` or `opted_in` (subscribed), `unsubscribed`.
#[allow(clippy::type_complexity)]
fn subscription_traits<'a>(
    given: Option<Fields<'a>>,
    declared: &BTreeMap<String, FieldType>,
    names: Names,
) -> Result<(BTreeMap<Channel, bool>, Option<Fields<'a>>), InputError> {
    let Some(Fields::Object(pairs)) = given else {
        return Ok((BTreeMap::new(), given));
    };
    let mut subscriptions = BTreeMap::new();
    let mut rest = Vec::with_capacity(pairs.len());
    for (name, json) in pairs {
        let is_attribute = names.identifier(&name).is_some_and(|id| declared.contains_key(id));
        let channel = subscribe_trait_channel(&name).filter(|_| !is_attribute);
        let Some(channel) = channel else {
            rest.push((name, json));
            continue;
        };
        let subscribed = match &json {
            Scalar::Str(s) if s == "subscribed" || s == "opted_in" => true,
            Scalar::Str(s) if s == "unsubscribed" => false,
            other => {
                return Err(InputError::new(
                    format!("traits.{name}"),
                    format!(
                        "expected \"subscribed\", \"opted_in\" or \"unsubscribed\", got {}",
                        other.describe()
                    ),
                ))
            }
        };
        subscriptions.insert(channel, subscribed);
    }
    Ok((subscriptions, Some(Fields::Object(rest))))
}

/// The properties of an undeclared engagement event (`Unsubscribed`,
/// `Email Opened`, …, [`super::engagement::EVENTS`]) that the runtime
/// reads ([`super::engagement::PROPERTIES`]: the send's `email_id` or
/// `message_id`, a `channel`, a bounce's `type` or `bounce_type`), all
/// strings; the specs' other properties (`email_subject`, `link_url`, …)
/// are accepted and not kept.
fn engagement_properties(given: Option<Fields>) -> Result<BTreeMap<String, Value>, InputError> {
    let given = match given {
        None | Some(Fields::Null) => Vec::new(),
        Some(Fields::Object(pairs)) => pairs,
        Some(Fields::Other) => return Err(InputError::new("properties", "must be an object")),
    };
    let mut out = BTreeMap::new();
    for (name, json) in given {
        let Some(name) = super::engagement::PROPERTIES.into_iter().find(|p| *p == name.as_ref()) else {
            continue;
        };
        match (name, json) {
            (_, Scalar::Null) => {}
            ("channel", Scalar::Str(channel)) if Channel::parse(&channel).is_none() => {
                let channels: Vec<String> = Channel::ALL.iter().map(|c| format!("{:?}", c.as_str())).collect();
                return Err(InputError::new(
                    "properties.channel",
                    format!("expected one of {}, got {:?}", channels.join(", "), channel.as_ref()),
                ));
            }
            (_, Scalar::Str(text)) => {
                out.insert(name.to_string(), Value::String(text.into_owned()));
            }
            ("email_id" | "message_id", other) => {
                return Err(InputError::new(
                    format!("properties.{name}"),
                    format!("expected a send id (a string), got {}", other.describe()),
                ))
            }
            (_, other) => {
                return Err(InputError::new(
                    format!("properties.{name}"),
                    format!("expected a string, got {}", other.describe()),
                ))
            }
        }
    }
    Ok(out)
}

/// The call types intake knows, for messages.
const CALL_TYPES: &str = "\"track\", \"identify\", \"page\", \"screen\", \"group\", \"alias\"";

/// A call that is activity and nothing more (an undeclared `page` or
/// `screen`, a `group`): recorded as an event under its call type, a name
/// no journey or segment can use (undeclared), so it moves the customer's
/// last-seen time (`inactive` triggers without `since`) and enrols no one.
fn activity(kind: &str, at: Millis, message_id: Option<String>) -> Input {
    Input::Track {
        event: kind.to_string(),
        properties: BTreeMap::new(),
        at,
        message_id,
    }
}

#[derive(PartialEq)]
enum FieldsMode {
    /// `identify`: merge what is given.
    Partial,
    /// `track`: every required property must be present.
    Complete,
}

fn fields(
    given: Option<Fields>,
    field: &str,
    declared: &BTreeMap<String, FieldType>,
    names: Names,
    mode: FieldsMode,
) -> Result<BTreeMap<String, Value>, InputError> {
    let given = match given {
        None | Some(Fields::Null) => Vec::new(),
        Some(Fields::Object(pairs)) => pairs,
        Some(Fields::Other) => return Err(InputError::new(field, "must be an object")),
    };
    let mut out = BTreeMap::new();
    for (wire, json) in given {
        let Some((name, declared_type)) = names.identifier(&wire).and_then(|name| declared.get_key_value(name)) else {
            let known: Vec<&str> = declared.keys().map(|name| names.wire(name)).collect();
            let mut reason = "not declared in the schema".to_string();
            if let Some(best) = crate::diagnostic::did_you_mean(&wire, known) {
                reason.push_str(&format!(" (did you mean `{best}`?)"));
            }
            return Err(InputError::new(format!("{field}.{wire}"), reason));
        };
        let value =
            convert(json, declared_type).map_err(|reason| InputError::new(format!("{field}.{wire}"), reason))?;
        out.insert(name.clone(), value);
    }
    if mode == FieldsMode::Complete {
        for (name, declared_type) in declared {
            if !declared_type.optional && !out.contains_key(name) {
                return Err(InputError::new(
                    format!("{field}.{}", names.wire(name)),
                    "required property is missing",
                ));
            }
        }
    }
    Ok(out)
}

/// Converts a JSON value to a run-time value of the declared type.
fn convert(json: Scalar, declared: &FieldType) -> Result<Value, String> {
    use Scalar as J;
    if json == J::Null {
        return if declared.optional {
            Ok(Value::Absent)
        } else {
            Err("must not be null (the field is not optional)".into())
        };
    }
    let mismatch = |expected: &str| Err(format!("expected {expected}, got {}", json.describe()));
    match (&declared.ty, &json) {
        (Type::String, J::Str(s)) if s.len() > STRING_BYTES_MAX => {
            Err(format!("{} bytes; at most {STRING_BYTES_MAX}", s.len()))
        }
        (Type::String, J::Str(s)) => Ok(Value::String(s.to_string())),
        (Type::Int, J::Int(i)) => Ok(Value::Int(*i)),
        (Type::Int, J::UInt(u)) => match i64::try_from(*u) {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => mismatch("a whole number"),
        },
        (Type::Int, J::Float(_)) => mismatch("a whole number"),
        (Type::Number, J::Int(_) | J::UInt(_) | J::Float(_)) => Ok(Value::Number(json.as_f64())),
        (Type::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (Type::Time, J::Str(s)) => parse_time(s)
            .map(Value::Time)
            .ok_or_else(|| format!("expected an RFC 3339 time, got {s:?}")),
        (Type::Duration, J::Int(_) | J::UInt(_) | J::Float(_)) => match json.as_f64() {
            seconds if seconds.is_finite() => Ok(Value::Duration((seconds * 1000.0) as i64)),
            _ => mismatch("a duration in seconds"),
        },
        (Type::Duration, J::Str(s)) => crate::syntax::parse_duration(s)
            .filter(|_| !s.is_empty() && s.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .and_then(|seconds| seconds.checked_mul(1000))
            .map(Value::Duration)
            .ok_or_else(|| format!("expected a duration like \"3d\", got {s:?}")),
        (Type::Timezone, J::Str(s)) => {
            if s.parse::<chrono_tz::Tz>().is_ok() {
                Ok(Value::String(s.to_string()))
            } else {
                Err(format!("{s:?} is not an IANA time zone (e.g. \"Europe/Berlin\")"))
            }
        }
        (Type::Locale, J::Str(s)) => {
            if crate::syntax::is_bcp47(s) {
                Ok(Value::String(s.to_string()))
            } else {
                Err(format!("{s:?} is not a BCP-47 locale (e.g. \"fa-IR\")"))
            }
        }
        (Type::Enum(options), J::Str(s)) => {
            if options.iter().any(|option| option == s) {
                Ok(Value::String(s.to_string()))
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

// ------------------------------------------------------------------ JSON

/// A call as far as validation reads it: the fields it uses, each kept
/// loosely typed so that a wrong type gets this module's message rather
/// than serde's; every other field is skipped unread.
// One short-lived value on the stack per call, never stored: boxing would
// only add an allocation per call.
#[allow(clippy::large_enum_variant)]
enum RawCall<'a> {
    Object(RawFields<'a>),
    /// The call is not a JSON object.
    Other,
}

#[derive(Default)]
struct RawFields<'a> {
    kind: Option<Scalar<'a>>,
    user_id: Option<Scalar<'a>>,
    anonymous_id: Option<Scalar<'a>>,
    /// `alias`: the id merged into `userId`.
    previous_id: Option<Scalar<'a>>,
    /// `group`.
    group_id: Option<Scalar<'a>>,
    /// `page` and `screen`.
    name: Option<Scalar<'a>>,
    category: Option<Scalar<'a>>,
    /// `context.traits`.
    context_traits: Option<Fields<'a>>,
    /// `context.timezone` and `context.locale`.
    context_timezone: Option<Scalar<'a>>,
    context_locale: Option<Scalar<'a>>,
    timestamp: Option<Scalar<'a>>,
    sent_at: Option<Scalar<'a>>,
    received_at: Option<Scalar<'a>>,
    message_id: Option<Scalar<'a>>,
    event: Option<Scalar<'a>>,
    /// `trigger`: the journey entered.
    journey: Option<Scalar<'a>>,
    properties: Option<Fields<'a>>,
    traits: Option<Fields<'a>>,
}

/// `properties` or `traits`.
enum Fields<'a> {
    Null,
    /// In document order.
    Object(Vec<(Cow<'a, str>, Scalar<'a>)>),
    Other,
}

/// One JSON value: scalars in full; arrays and objects only as their
/// kind (their content is skipped).
#[derive(Debug, PartialEq)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    fn as_f64(&self) -> f64 {
        match self {
            Scalar::Int(i) => *i as f64,
            Scalar::UInt(u) => *u as f64,
            Scalar::Float(f) => *f,
            _ => f64::NAN,
        }
    }

    /// The value as an error message shows it.
    fn describe(&self) -> String {
        match self {
            Scalar::Str(s) => format!("{s:?}"),
            Scalar::Array => "an array".into(),
            Scalar::Object => "an object".into(),
            other => other.to_string(),
        }
    }
}

/// Numbers as JSON writes them (`1.0`, not `1`).
impl std::fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::UInt(u) => write!(f, "{u}"),
            Scalar::Float(x) => match serde_json::Number::from_f64(*x) {
                Some(number) => write!(f, "{number}"),
                None => f.write_str("null"),
            },
            Scalar::Str(s) => f.write_str(s),
            Scalar::Array => f.write_str("[…]"),
            Scalar::Object => f.write_str("{…}"),
        }
    }
}

/// A string, borrowed from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// Visits any JSON value; what each kind becomes is up to `T`.
struct AnyVisitor<T>(std::marker::PhantomData<T>);

trait FromJson<'de>: Sized {
    fn scalar(scalar: Scalar<'de>) -> Self;
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

impl<'de, T: FromJson<'de>> Visitor<'de> for AnyVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::scalar(Scalar::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::scalar(Scalar::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Ok(T::scalar(Scalar::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Ok(T::scalar(Scalar::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::scalar(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::UInt(v),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Ok(T::scalar(Scalar::Float(v)))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<T, E> {
        Ok(T::scalar(Scalar::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::scalar(Scalar::Str(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
        Ok(T::scalar(Scalar::Str(Cow::Owned(v))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::scalar(Scalar::Array))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de> FromJson<'de> for Scalar<'de> {
    fn scalar(scalar: Scalar<'de>) -> Self {
        scalar
    }
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        skip_map(map)?;
        Ok(Scalar::Object)
    }
}

impl<'de> FromJson<'de> for Fields<'de> {
    fn scalar(scalar: Scalar<'de>) -> Self {
        match scalar {
            Scalar::Null => Fields::Null,
            _ => Fields::Other,
        }
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut pairs = Vec::new();
        while let Some(Text(name)) = map.next_key::<Text>()? {
            pairs.push((name, map.next_value::<Scalar>()?));
        }
        Ok(Fields::Object(pairs))
    }
}

impl<'de> FromJson<'de> for RawCall<'de> {
    fn scalar(_: Scalar<'de>) -> Self {
        RawCall::Other
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut raw = RawFields::default();
        // A repeated key: the last one counts, as in `serde_json::Value`.
        while let Some(Text(key)) = map.next_key::<Text>()? {
            match key.as_ref() {
                "type" => raw.kind = Some(map.next_value()?),
                "userId" => raw.user_id = Some(map.next_value()?),
                "anonymousId" => raw.anonymous_id = Some(map.next_value()?),
                "previousId" => raw.previous_id = Some(map.next_value()?),
                "groupId" => raw.group_id = Some(map.next_value()?),
                "name" => raw.name = Some(map.next_value()?),
                "category" => raw.category = Some(map.next_value()?),
                "context" => {
                    let context = map.next_value::<Context>()?;
                    raw.context_traits = context.traits;
                    raw.context_timezone = context.timezone;
                    raw.context_locale = context.locale;
                }
                "timestamp" => raw.timestamp = Some(map.next_value()?),
                "sentAt" => raw.sent_at = Some(map.next_value()?),
                "receivedAt" => raw.received_at = Some(map.next_value()?),
                "messageId" => raw.message_id = Some(map.next_value()?),
                "event" => raw.event = Some(map.next_value()?),
                "journey" => raw.journey = Some(map.next_value()?),
                "properties" => raw.properties = Some(map.next_value()?),
                "traits" => raw.traits = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RawCall::Object(raw))
    }
}

/// `context`, as far as intake reads it.
#[derive(Default)]
struct Context<'a> {
    traits: Option<Fields<'a>>,
    timezone: Option<Scalar<'a>>,
    locale: Option<Scalar<'a>>,
}

impl<'de> FromJson<'de> for Context<'de> {
    fn scalar(_: Scalar<'de>) -> Self {
        Context::default()
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut context = Context::default();
        while let Some(Text(key)) = map.next_key::<Text>()? {
            match key.as_ref() {
                "traits" => context.traits = Some(map.next_value()?),
                "timezone" => context.timezone = Some(map.next_value()?),
                "locale" => context.locale = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(context)
    }
}

macro_rules! deserialize_any {
    ($($ty:ident),*) => {$(
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(AnyVisitor(std::marker::PhantomData))
            }
        }
    )*};
}
deserialize_any!(Scalar, Fields, RawCall, Context);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::names::Name;

    fn schema() -> Schema {
        let field = |ty: Type, optional: bool| FieldType { ty, optional };
        let mut schema = Schema::default();
        schema.customer.insert(
            "plan".into(),
            field(Type::Enum(vec!["free".into(), "pro".into()]), false),
        );
        schema.customer.insert("zone".into(), field(Type::Timezone, true));
        schema.customer.insert("seen_at".into(), field(Type::Time, true));
        let mut order = BTreeMap::new();
        order.insert("items".into(), field(Type::Int, false));
        order.insert("total".into(), field(Type::Number, false));
        order.insert("wait".into(), field(Type::Duration, true));
        schema.events.insert("order".into(), order);
        schema
    }

    #[test]
    fn a_declared_phone_must_be_e164_at_intake() {
        let identify = |phone: &str| serde_json::json!({"type": "identify", "userId": "u1", "traits": {"phone": phone}, "timestamp": "2026-01-05T10:00:00Z"});
        let now = parse_time("2026-01-05T10:00:00Z").expect("time");
        let received = |schema: &Schema, phone: &str| parse_received_call(&identify(phone), schema, now, 0);
        let mut declared = schema();
        declared.customer.insert(
            "phone".into(),
            FieldType {
                ty: Type::String,
                optional: true,
            },
        );
        assert!(received(&declared, "+989121234567").is_ok());
        let refusal = received(&declared, "0912 123 4567").expect_err("refused");
        assert_eq!(refusal.field, "traits.phone");
        assert!(refusal.reason.contains("E.164"), "{}", refusal.reason);
        for bad in [
            "14155550123",
            "+0123456789",
            "+1 415 555",
            "+1234567",
            "+1234567890123456",
            "+",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    /// The text path and the `serde_json::Value` path accept and refuse
    /// the same calls with the same messages.
    #[test]
    fn text_and_value_parsing_agree() {
        let schema = schema();
        let cases = [
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":2,"total":9.5},"timestamp":"2026-01-05T10:00:00Z","messageId":"m1"}"#,
            r#"{"type":"track","userId":42,"event":"order","properties":{"items":2,"total":9,"wait":"3d"},"timestamp":"2026-01-05T10:00:00Z","context":{"ip":"1.2.3.4","nested":[1,{"a":2}]}}"#,
            r#"{"type":"identify","userId":"c\u0031","traits":{"plan":"pro","zone":"Europe/Berlin","seen_at":null},"timestamp":"2026-01-05T10:00:00Z","messageId":null}"#,
            r#"{"type":"identify","userId":"c1","traits":{"plan":"gold"},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"identify","userId":"c1","traits":{"plna":"pro"},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"identify","userId":"c1","traits":["plan"],"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":2.5,"total":1},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":18446744073709551615,"total":1},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":{"n":1},"total":1},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":1,"total":[1.5]},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":1},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"track","userId":"c1","event":"ordr","properties":{},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"track","userId":1.5,"event":"order","properties":{"items":1,"total":1},"timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"type":"track","userId":"","event":"order"}"#,
            r#"{"type":"track","event":"order"}"#,
            r#"{"type":"page","userId":"c1","timestamp":"2026-01-05T10:00:00Z"}"#,
            r#"{"userId":"c1"}"#,
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":1,"total":1},"timestamp":5}"#,
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":1,"total":1},"timestamp":"yesterday"}"#,
            r#"{"type":"track","userId":"c1","event":"order","properties":{"items":1,"total":1},"timestamp":"2026-01-05T10:00:00Z","messageId":7}"#,
            r#"[1,2]"#,
            r#""text""#,
        ];
        for text in cases {
            let value: serde_json::Value = serde_json::from_str(text).expect("test case is JSON");
            let from_value = parse_call(&value, &schema, None);
            let from_text = parse_call_str(text, &schema, None).map_err(|error| match error {
                CallError::Input(error) => error,
                CallError::Json(error) => panic!("{text}: {error}"),
            });
            assert_eq!(from_text, from_value, "{text}");
        }
        assert!(matches!(
            parse_call_str("{\"type\":", &schema, None),
            Err(CallError::Json(_))
        ));
    }

    #[test]
    fn messages_name_the_field() {
        let text = r#"{"type":"track","userId":"c1","event":"order","properties":{"items":2.5,"total":1},"timestamp":"2026-01-05T10:00:00Z"}"#;
        let Err(CallError::Input(error)) = parse_call_str(text, &schema(), None) else {
            panic!("a float for an int is refused");
        };
        assert_eq!(error.to_string(), "properties.items: expected a whole number, got 2.5");
        let call = parse_call_str(
            r#"{"type":"track","userId":7,"event":"order","properties":{"items":2,"total":3},"timestamp":"2026-01-05T10:00:00Z"}"#,
            &schema(),
            None,
        )
        .expect("valid");
        assert_eq!(call.customer, "7");
        let Input::Track { properties, .. } = call.input else {
            panic!("a track call");
        };
        assert_eq!(properties["items"], Value::Int(2));
        assert_eq!(properties["total"], Value::Number(3.0));
    }

    /// A trigger call names a journey with `trigger api`; its properties are
    /// checked against the trigger's list like an event's.
    #[test]
    fn trigger_calls_name_an_api_journey() {
        let mut schema = schema();
        let mut coupon = BTreeMap::new();
        coupon.insert(
            "code".into(),
            FieldType {
                ty: Type::String,
                optional: false,
            },
        );
        coupon.insert(
            "amount".into(),
            FieldType {
                ty: Type::Number,
                optional: true,
            },
        );
        schema.api.insert("coupon_drop".into(), coupon);
        let parse = |text: &str| parse_call_str(text, &schema, None).map_err(|e| e.to_string());
        let call = parse(r#"{"type":"trigger","journey":"coupon_drop","userId":"c1","properties":{"code":"X","amount":2},"timestamp":"2026-01-05T10:00:00Z","messageId":"t1"}"#)
            .expect("valid");
        let Input::Trigger {
            journey,
            properties,
            message_id,
            ..
        } = call.input
        else {
            panic!("a trigger call");
        };
        assert_eq!((journey.as_str(), message_id.as_deref()), ("coupon_drop", Some("t1")));
        assert_eq!(properties["code"], Value::String("X".into()));
        assert_eq!(properties["amount"], Value::Number(2.0));
        let refused = [
            (
                r#"{"type":"trigger","userId":"c1","properties":{"code":"X"},"timestamp":"2026-01-05T10:00:00Z"}"#,
                "journey: missing; a trigger call names its journey",
            ),
            (
                r#"{"type":"trigger","journey":"coupon_dorp","userId":"c1","properties":{"code":"X"},"timestamp":"2026-01-05T10:00:00Z"}"#,
                "journey: no journey `coupon_dorp` with `trigger api` in the workspace (did you mean `coupon_drop`?)",
            ),
            (
                r#"{"type":"trigger","journey":"order","userId":"c1","properties":{},"timestamp":"2026-01-05T10:00:00Z"}"#,
                "journey: no journey `order` with `trigger api` in the workspace",
            ),
            (
                r#"{"type":"trigger","journey":"coupon_drop","userId":"c1","properties":{"amount":1},"timestamp":"2026-01-05T10:00:00Z"}"#,
                "properties.code: required property is missing",
            ),
            (
                r#"{"type":"trigger","journey":"coupon_drop","userId":"c1","properties":{"code":"X","cde":1},"timestamp":"2026-01-05T10:00:00Z"}"#,
                "properties.cde: not declared in the schema (did you mean `code`?)",
            ),
        ];
        for (text, reason) in refused {
            assert_eq!(parse(text).err().as_deref(), Some(reason), "{text}");
        }
    }

    fn wire_schema() -> Schema {
        let mut schema = schema();
        schema.customer.insert(
            "first_name".into(),
            FieldType {
                ty: Type::String,
                optional: true,
            },
        );
        schema.wire.customer.insert("firstName".into(), "first_name".into());
        schema
            .events
            .insert("order_completed".into(), schema.events["order"].clone());
        schema
            .wire
            .events
            .insert("Order Completed".into(), "order_completed".into());
        let mut properties = BTreeMap::new();
        properties.insert("itemCount".into(), "items".into());
        schema.wire.properties.insert("order_completed".into(), properties);
        schema
    }

    /// Names on the wire map to identifiers; an identifier that has a
    /// wire name is not accepted on the wire; messages name what was sent.
    #[test]
    fn wire_names_map_to_identifiers() {
        let schema = wire_schema();
        let call = |text: &str| parse_call_str(text, &schema, None);
        let ok = call(r#"{"type":"track","userId":"c1","event":"Order Completed","properties":{"itemCount":2,"total":9.5},"timestamp":"2026-01-05T10:00:00Z"}"#)
            .expect("valid");
        let Input::Track { event, properties, .. } = ok.input else {
            panic!("a track call")
        };
        assert_eq!(event, "order_completed");
        assert_eq!(properties["items"], Value::Int(2));
        let ok = call(
            r#"{"type":"identify","userId":"c1","traits":{"firstName":"Ada"},"timestamp":"2026-01-05T10:00:00Z"}"#,
        )
        .expect("valid");
        let Input::Identify { traits, .. } = ok.input else {
            panic!("an identify call")
        };
        assert_eq!(traits["first_name"], Value::String("Ada".into()));
        // Events without a wire name keep their identifier on the wire.
        assert!(call(r#"{"type":"track","userId":"c1","event":"order","properties":{"items":2,"total":9.5},"timestamp":"2026-01-05T10:00:00Z"}"#).is_ok());
        let refused = |text: &str| match call(text) {
            Err(CallError::Input(error)) => error.to_string(),
            other => panic!("refused: {other:?}"),
        };
        assert_eq!(
            refused(
                r#"{"type":"track","userId":"c1","event":"order_completed","properties":{},"timestamp":"2026-01-05T10:00:00Z"}"#
            ),
            "event: event `order_completed` is not declared in the workspace (did you mean `Order Completed`?)"
        );
        assert_eq!(
            refused(
                r#"{"type":"track","userId":"c1","event":"Order Completed","properties":{"items":2,"total":1},"timestamp":"2026-01-05T10:00:00Z"}"#
            ),
            "properties.items: not declared in the schema"
        );
        assert_eq!(
            refused(
                r#"{"type":"track","userId":"c1","event":"Order Completed","properties":{"itemcount":2,"total":1},"timestamp":"2026-01-05T10:00:00Z"}"#
            ),
            "properties.itemcount: not declared in the schema (did you mean `itemCount`?)"
        );
        assert_eq!(
            refused(
                r#"{"type":"track","userId":"c1","event":"Order Completed","properties":{"total":1},"timestamp":"2026-01-05T10:00:00Z"}"#
            ),
            "properties.itemCount: required property is missing"
        );
        assert_eq!(
            refused(
                r#"{"type":"identify","userId":"c1","traits":{"first_name":"Ada"},"timestamp":"2026-01-05T10:00:00Z"}"#
            ),
            "traits.first_name: not declared in the schema (did you mean `firstName`?)"
        );
    }

    #[test]
    fn subscription_traits_and_the_unsubscribed_event_need_no_declaration() {
        let mut schema = schema();
        let call = parse_call_str(
            r#"{"type":"identify","userId":"c1","traits":{"plan":"pro","sms_subscribe":"unsubscribed","email_subscribe":"opted_in"},"timestamp":"2026-01-05T10:00:00Z"}"#,
            &schema,
            None,
        )
        .expect("valid");
        let Input::Identify {
            traits, subscriptions, ..
        } = call.input
        else {
            panic!("an identify");
        };
        assert_eq!(traits.keys().collect::<Vec<_>>(), ["plan"]);
        assert_eq!(
            subscriptions,
            BTreeMap::from([(Channel::Email, true), (Channel::Sms, false)])
        );
        let call = parse_call_str(
            r#"{"type":"track","userId":"c1","event":"Unsubscribed","properties":{"email_id":"abc","email_subject":"Hi","list_id":7},"timestamp":"2026-01-05T10:00:00Z"}"#,
            &schema,
            None,
        )
        .expect("valid");
        let Input::Track { event, properties, .. } = call.input else {
            panic!("a track");
        };
        assert_eq!(event, "Unsubscribed");
        assert_eq!(
            properties,
            BTreeMap::from([("email_id".to_string(), Value::String("abc".into()))])
        );
        let refused = |text: &str, schema: &Schema| match parse_call_str(text, schema, None) {
            Err(CallError::Input(error)) => error.to_string(),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            refused(
                r#"{"type":"track","userId":"c1","event":"Unsubscribed","properties":{"channel":"fax"},"timestamp":"2026-01-05T10:00:00Z"}"#,
                &schema
            ),
            r#"properties.channel: expected one of "email", "sms", "push", "in_app", "webhook", got "fax""#
        );
        assert_eq!(
            refused(
                r#"{"type":"identify","userId":"c1","traits":{"push_subscribe":true},"timestamp":"2026-01-05T10:00:00Z"}"#,
                &schema
            ),
            r#"traits.push_subscribe: expected "subscribed", "opted_in" or "unsubscribed", got true"#
        );
        // A workspace's own attribute of that name is its own.
        schema.customer.insert(
            "email_subscribe".into(),
            FieldType {
                ty: Type::Bool,
                optional: true,
            },
        );
        let call = parse_call_str(
            r#"{"type":"identify","userId":"c1","traits":{"email_subscribe":true},"timestamp":"2026-01-05T10:00:00Z"}"#,
            &schema,
            None,
        )
        .expect("valid");
        let Input::Identify {
            traits, subscriptions, ..
        } = call.input
        else {
            panic!("an identify");
        };
        assert!(subscriptions.is_empty());
        assert_eq!(traits["email_subscribe"], Value::Bool(true));
    }

    /// `anonymousId` keys the profile when there is no `userId`;
    /// `context.traits` stand in for missing top-level traits.
    #[test]
    fn anonymous_calls_and_context_traits() {
        let schema = schema();
        let call = |text: &str| parse_call_str(text, &schema, None).expect("valid");
        let anonymous = call(
            r#"{"type":"track","anonymousId":"anon-1","event":"order","properties":{"items":1,"total":2},"timestamp":"2026-01-05T10:00:00Z"}"#,
        );
        assert_eq!(anonymous.customer, "anon-1");
        let both = call(
            r#"{"type":"track","userId":"u1","anonymousId":"anon-1","event":"order","properties":{"items":1,"total":2},"timestamp":"2026-01-05T10:00:00Z"}"#,
        );
        assert_eq!((both.customer.as_str(), both.merge.as_deref()), ("u1", Some("anon-1")));
        assert_eq!(anonymous.merge, None);
        let rudder = call(
            r#"{"type":"identify","userId":"u1","context":{"traits":{"plan":"pro"},"library":{"name":"rudder"}},"timestamp":"2026-01-05T10:00:00Z"}"#,
        );
        let Input::Identify { traits, .. } = rudder.input else {
            panic!("identify")
        };
        assert_eq!(traits["plan"], Value::String("pro".into()));
        // Top-level traits win over context.traits.
        let both = call(
            r#"{"type":"identify","userId":"u1","traits":{"plan":"free"},"context":{"traits":{"plan":"pro"}},"timestamp":"2026-01-05T10:00:00Z"}"#,
        );
        let Input::Identify { traits, .. } = both.input else {
            panic!("identify")
        };
        assert_eq!(traits["plan"], Value::String("free".into()));
        let Err(CallError::Input(error)) = parse_call_str(
            r#"{"type":"track","event":"order","timestamp":"2026-01-05T10:00:00Z"}"#,
            &schema,
            None,
        ) else {
            panic!("refused")
        };
        assert_eq!(error.field, "userId");
    }

    /// `page` and `screen` are events when declared (with `name` and
    /// `category`), activity otherwise; `group` is activity; `alias` names
    /// the id to merge.
    #[test]
    fn every_call_type() {
        let mut schema = schema();
        let text = || FieldType {
            ty: Type::String,
            optional: true,
        };
        let mut page = BTreeMap::new();
        page.insert("name".into(), text());
        page.insert("url".into(), text());
        schema.events.insert("page".into(), page);
        let call = |text: &str| parse_call_str(text, &schema, None);
        let page = call(r#"{"type":"page","userId":"u1","name":"Pricing","category":"Docs","properties":{"url":"/pricing"},"timestamp":"2026-01-05T10:00:00Z"}"#).expect("valid");
        let Input::Track { event, properties, .. } = page.input else {
            panic!("track")
        };
        assert_eq!(event, "page");
        assert_eq!(properties["name"], Value::String("Pricing".into()));
        assert_eq!(properties["url"], Value::String("/pricing".into()));
        assert!(!properties.contains_key("category"), "not declared, so not taken");
        for kind in ["screen", "group"] {
            let activity = call(&format!(r#"{{"type":"{kind}","userId":"u1","name":"Home","groupId":"g1","traits":{{"x":1}},"timestamp":"2026-01-05T10:00:00Z"}}"#)).expect("valid");
            assert_eq!(activity.input, activity_input(kind));
        }
        let alias = call(r#"{"type":"alias","userId":"u1","previousId":"anon-1","timestamp":"2026-01-05T10:00:00Z"}"#)
            .expect("valid");
        assert_eq!(
            (alias.customer.as_str(), alias.merge.as_deref()),
            ("u1", Some("anon-1"))
        );
        assert!(matches!(&alias.input, Input::Identify { traits, .. } if traits.is_empty()));
        for (text, field) in [
            (
                r#"{"type":"alias","userId":"u1","timestamp":"2026-01-05T10:00:00Z"}"#,
                "previousId",
            ),
            (
                r#"{"type":"alias","previousId":"a","timestamp":"2026-01-05T10:00:00Z"}"#,
                "userId",
            ),
            (
                r#"{"type":"alias","userId":"u1","previousId":["a"],"timestamp":"2026-01-05T10:00:00Z"}"#,
                "previousId",
            ),
        ] {
            match call(text) {
                Err(CallError::Input(error)) => assert_eq!(error.field, field, "{text}"),
                Err(CallError::Json(_)) => assert_eq!(field, "", "{text}"),
                Ok(call) => panic!("{text}: accepted as {call:?}"),
            }
        }
        // The same id twice is no merge.
        let same = call(r#"{"type":"alias","userId":"u1","previousId":"u1","timestamp":"2026-01-05T10:00:00Z"}"#)
            .expect("valid");
        assert_eq!(same.merge, None);
        let Err(CallError::Input(error)) = call(r#"{"type":"flush","userId":"u1","timestamp":"2026-01-05T10:00:00Z"}"#)
        else {
            panic!("refused")
        };
        assert!(error.reason.contains("\"screen\""), "{}", error.reason);
    }

    /// `context.timezone` and `context.locale` fill declared attributes
    /// the profile lacks; the call's traits and the profile win.
    #[test]
    fn context_fills_what_the_profile_lacks() {
        let mut schema = schema();
        let optional = |ty| FieldType { ty, optional: true };
        schema.customer.insert("timezone".into(), optional(Type::Timezone));
        schema.customer.insert("locale".into(), optional(Type::Locale));
        let call = |text: &str| parse_call_str(text, &schema, None).expect("valid");
        let track = call(
            r#"{"type":"track","userId":"u1","event":"order","properties":{"items":1,"total":2},"context":{"timezone":"Asia/Tehran","locale":"fa-IR"},"timestamp":"2026-01-05T10:00:00Z"}"#,
        );
        let expected = BTreeMap::from([
            ("locale".to_string(), Value::String("fa-IR".into())),
            ("timezone".to_string(), Value::String("Asia/Tehran".into())),
        ]);
        assert_eq!(track.fill, expected);
        let mut profile = NameMap::new();
        let Some(Input::Identify { traits, at, .. }) = context_fill(&profile, &track.fill, &track.input) else {
            panic!("an identify first")
        };
        assert_eq!((traits, at), (expected.clone(), track.input.at()));
        // The profile wins over the context.
        profile.insert(Name::intern("timezone"), Value::String("Europe/Berlin".into()));
        let Some(Input::Identify { traits, .. }) = context_fill(&profile, &track.fill, &track.input) else {
            panic!("the locale is still filled")
        };
        assert_eq!(traits.keys().collect::<Vec<_>>(), ["locale"]);
        // The call's own traits win over both.
        let identify = call(
            r#"{"type":"identify","userId":"u1","traits":{"locale":"en-GB"},"context":{"locale":"fa-IR"},"timestamp":"2026-01-05T10:00:00Z"}"#,
        );
        assert_eq!(context_fill(&NameMap::new(), &identify.fill, &identify.input), None);
        // Invalid values and undeclared attributes are not taken, and the
        // call is not refused for them.
        let odd = call(
            r#"{"type":"identify","userId":"u1","context":{"timezone":"Mars/Olympus","locale":7},"timestamp":"2026-01-05T10:00:00Z"}"#,
        );
        assert!(odd.fill.is_empty());
        let plain = parse_call_str(
            r#"{"type":"identify","userId":"u1","context":{"timezone":"Asia/Tehran"},"timestamp":"2026-01-05T10:00:00Z"}"#,
            &self::schema(),
            None,
        )
        .expect("valid");
        assert!(plain.fill.is_empty(), "the workspace declares no timezone");
    }

    /// A `group` call names its group: scalar traits kept, bounds refused.
    #[test]
    fn group_calls_carry_their_group() {
        let schema = schema();
        let call = |text: &str| parse_call_str(text, &schema, None);
        let group = call(r#"{"type":"group","userId":"u1","groupId":"acme","traits":{"name":"Acme","seats":4,"paid":true,"address":{"city":"x"},"tags":["a"],"gone":null},"timestamp":"2026-01-05T10:00:00Z"}"#)
            .expect("valid");
        let expected = serde_json::json!({"name": "Acme", "seats": 4, "paid": true});
        assert_eq!(group.group.as_ref().map(|g| g.id.as_str()), Some("acme"));
        assert_eq!(group.group.map(|g| serde_json::Value::Object(g.traits)), Some(expected));
        let numeric =
            call(r#"{"type":"group","userId":"u1","groupId":42,"timestamp":"2026-01-05T10:00:00Z"}"#).expect("valid");
        assert_eq!(numeric.group.map(|g| g.id), Some("42".to_string()));
        let none = call(r#"{"type":"group","userId":"u1","timestamp":"2026-01-05T10:00:00Z"}"#).expect("valid");
        assert_eq!(none.group, None, "no groupId: activity only");
        let traits: Vec<String> = (0..=GROUP_TRAITS_MAX).map(|n| format!(r#""t{n}":1"#)).collect();
        let refused = |text: &str| match call(text) {
            Err(CallError::Input(error)) => error.field,
            other => panic!("{text}: {other:?}"),
        };
        let many = format!(
            r#"{{"type":"group","userId":"u1","groupId":"g","traits":{{{}}},"timestamp":"2026-01-05T10:00:00Z"}}"#,
            traits.join(",")
        );
        assert_eq!(refused(&many), "traits");
        assert_eq!(
            refused(r#"{"type":"group","userId":"u1","groupId":{"a":1},"timestamp":"2026-01-05T10:00:00Z"}"#),
            "groupId"
        );
        assert_eq!(
            refused(r#"{"type":"group","userId":"u1","groupId":"g\u0000","timestamp":"2026-01-05T10:00:00Z"}"#),
            "groupId"
        );
    }

    fn activity_input(kind: &str) -> Input {
        activity(
            kind,
            crate::runtime::trace::parse_time("2026-01-05T10:00:00Z").expect("time"),
            None,
        )
    }
}
