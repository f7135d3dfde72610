//! Property tests of intake validation (`runtime::input`), beyond the JSON
//! parser: calls built from hostile parts (oversize and control-character
//! ids, far-future and pre-1970 times, skewed `sentAt`, unknown events,
//! wrong types) never panic; whatever is accepted is within every limit
//! the runtime documents; the text and the `Value` entry points agree.

use journeyc::runtime::input::{
    parse_call, parse_call_str, parse_received_call, CallError, Input, ID_BYTES_MAX, TIME_MAX, TIME_MIN,
};
use journeyc::runtime::trace::format_time;
use journeyc::runtime::Engine;
use proptest::prelude::*;
use serde_json::{json, Value};

const WORKSPACE: &str = r#"
customer { email: string?  phone: string?  plan: string? }
event login
event purchase { total: number }
message hi push { body "hi" }
journey greet {
  trigger login
  send hi
}
"#;

/// The daemon's clock for these calls: 2026-03-04T00:00:00Z.
const RECEIVED: i64 = 1_772_582_400_000;
const FUTURE_MAX: i64 = 86_400_000;

fn id() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z0-9_-]{1,12}".prop_map(Value::from),
        (250usize..300).prop_map(|n| Value::from("x".repeat(n))),
        "[a-z]{0,4}[\\x00\\n\\x1b][a-z]{0,4}".prop_map(Value::from),
        Just(Value::from("")),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn time() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-86_400_000i64 * 365..86_400_000 * 365).prop_map(|d| Value::from(format_time(RECEIVED + d))),
        (-3_000_000_000_000i64..0).prop_map(|t| Value::from(format_time(t))),
        Just(Value::from("9999-12-31T23:59:59Z")),
        Just(Value::from("+10000-01-01T00:00:00Z")),
        Just(Value::from("1969-12-31T23:59:59.999Z")),
        "[0-9T:Z-]{0,24}".prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::from),
        (4000usize..70_000).prop_map(|n| Value::from("p".repeat(n))),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!({"nested": [1, 2, {"deep": true}]})),
    ]
}

fn call() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["track", "identify", "page", "group", "alias", "trigger", "nope"]),
        prop::option::of(id()),
        prop::option::of(id()),
        prop::option::of(id()),
        prop::option::of(prop::sample::select(vec![
            "login",
            "purchase",
            "Unknown Event",
            "",
            "x\u{0}y",
        ])),
        prop::option::of(time()),
        prop::option::of(time()),
        prop::collection::btree_map(
            prop::sample::select(vec!["total", "email", "phone", "plan", "timezone", "other"]),
            scalar(),
            0..4,
        ),
    )
        .prop_map(|(kind, user, anonymous, message, event, timestamp, sent_at, fields)| {
            let mut call = json!({ "type": kind });
            let map = call.as_object_mut().expect("object");
            let mut put = |key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    map.insert(key.to_string(), value);
                }
            };
            put("userId", user);
            put("anonymousId", anonymous);
            put("messageId", message);
            put("event", event.map(Value::from));
            put("timestamp", timestamp);
            put("sentAt", sent_at);
            let fields: serde_json::Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            put("properties", Some(Value::Object(fields.clone())));
            put("traits", Some(Value::Object(fields)));
            call
        })
}

fn id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= ID_BYTES_MAX && !id.chars().any(char::is_control)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn intake_accepts_only_what_the_runtime_can_hold(call in call()) {
        let engine = engine_cached();
        let schema = &engine.bundle().schema;
        let received = parse_received_call(&call, schema, RECEIVED, FUTURE_MAX);
        if let Err(error) = &received {
            prop_assert!(!error.reason.is_empty(), "{error:?}");
        }
        if let Ok(accepted) = &received {
            prop_assert!(id_ok(&accepted.customer), "customer {:?}", accepted.customer);
            if let Some(merge) = &accepted.merge {
                prop_assert!(id_ok(merge), "merge {merge:?}");
            }
            if let Some(message_id) = accepted.input.message_id() {
                prop_assert!(message_id.len() <= ID_BYTES_MAX && !message_id.chars().any(char::is_control));
            }
            let at = accepted.input.at();
            prop_assert!((TIME_MIN..=TIME_MAX).contains(&at), "time {at}");
            prop_assert!(at <= RECEIVED + FUTURE_MAX, "time {at} too far ahead");
            if let Input::Track { event, .. } = &accepted.input {
                prop_assert!(!event.is_empty() && !event.chars().any(char::is_control), "event {event:?}");
            }
        }
        // The simulator's text entry point applies the same checks, with
        // the same field and reason.
        // (Both read the same text, as the daemon and the simulator do: a
        // float need not survive serde_json's text round trip bit for bit.)
        let text = call.to_string();
        let reread: Value = serde_json::from_str(&text).expect("own output");
        let by_value = parse_call(&reread, schema, Some(RECEIVED));
        let by_text = parse_call_str(&text, schema, Some(RECEIVED));
        match (&by_value, &by_text) {
            (Ok(a), Ok(b)) => prop_assert_eq!(format!("{a:?}"), format!("{b:?}")),
            (Err(a), Err(CallError::Input(b))) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "disagree: {a:?} / {b:?}"),
        }
    }
}

fn engine_cached() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| super::bounds::engine_for(WORKSPACE))
}
