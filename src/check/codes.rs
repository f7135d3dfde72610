//! The table of diagnostic codes reported by the front end.
//!
//! Codes are stable: a code keeps its meaning forever (a retired code is not
//! reused). Numbering: `E00xx` syntax (the parser), `E01xx` names and
//! declarations, `E02xx` types and expressions, `E03xx` journeys, settings and
//! literals, `E04xx` messages and templates, `W0xxx` warnings, `I0xxx`
//! information (the bounds entries of `journeyc check --format json`).
//! Every code has a test case under `tests/err/` named after it.

/// A code and what it means (the titles also head the sections of
/// `docs/language.md`).
pub struct Code {
    pub code: &'static str,
    pub title: &'static str,
}

macro_rules! codes {
    ($($name:ident = $code:literal, $title:literal;)*) => {
        $(pub const $name: &str = $code;)*
        /// Every code the front end can report, in numeric order.
        pub const ALL: &[Code] = &[$(Code { code: $code, title: $title }),*];
    };
}

codes! {
    SYNTAX = "E0001", "syntax error";
    NESTED_TOO_DEEPLY = "E0002", "nested too deeply";
    UNKNOWN_ESCAPE = "E0003", "unknown escape in a string";
    DUPLICATE_MESSAGE_PART = "E0004", "a message part given twice";
    DURATION_TOO_LONG = "E0005", "duration too long";
    NUMBER_INVALID = "E0006", "number too large or invalid";
    TIME_INVALID = "E0007", "invalid time literal";
    NOT_UTF8 = "E0008", "file is not UTF-8";
    TOO_MANY_DIAGNOSTICS = "E0009", "more diagnostics in one file than are shown";

    DUPLICATE_NAME = "E0101", "duplicate name";
    DUPLICATE_CUSTOMER = "E0102", "more than one customer block";
    DUPLICATE_SETTINGS = "E0103", "more than one settings block";
    DUPLICATE_FIELD = "E0104", "duplicate attribute or property";
    UNKNOWN_TYPE = "E0105", "unknown type";
    UNKNOWN_EVENT = "E0106", "unknown event";
    UNKNOWN_SEGMENT = "E0107", "unknown segment";
    UNKNOWN_MESSAGE = "E0108", "unknown message";
    UNKNOWN_ATTRIBUTE = "E0109", "unknown customer attribute";
    UNKNOWN_PROPERTY = "E0110", "unknown event property";
    UNKNOWN_CHANNEL = "E0111", "unknown channel";
    UNKNOWN_CONDITION = "E0112", "`exit when`/`goal` names neither an event nor a segment";
    SEGMENT_FILTER = "E0113", "`where` filter on a segment condition";
    SEGMENT_CYCLE = "E0114", "segment defined in terms of itself";
    DUPLICATE_WIRE_NAME = "E0115", "two declarations with the same name on the wire";
    EMPTY_WIRE_NAME = "E0116", "empty wire name";
    API_WIRE_NAME = "E0117", "wire name on an API trigger property";

    TYPE_MISMATCH = "E0201", "operand types do not fit the operator";
    NOT_BOOL = "E0202", "condition is not a bool";
    IN_LIST_TYPE = "E0203", "`in` list element of the wrong type";
    SET_TYPE = "E0204", "`set` value of the wrong type";
    WAIT_UNTIL_NOT_TIME = "E0205", "`wait until` expression is not a time";
    NOT_AN_ENUM_VALUE = "E0206", "string is not one of the enum's values";
    NO_EVENT_IN_SCOPE = "E0207", "`event.*` where no event is in scope";
    EXISTS_ARGUMENT = "E0208", "`exists(..)` of something that is not an attribute";

    NO_TRIGGER = "E0301", "journey without a trigger";
    SECOND_TRIGGER = "E0302", "journey with more than one trigger";
    SPLIT_PERCENT = "E0303", "split percentages do not sum to 100";
    DUPLICATE_ARM = "E0304", "duplicate split arm";
    WAIT_FOR_WITHOUT_WITHIN = "E0305", "`wait for` without `within`";
    REPEAT_WITHOUT_WAIT = "E0306", "`repeat` body that does not wait";
    DURATION_NOT_POSITIVE = "E0307", "duration that is not positive";
    REPEAT_COUNT = "E0308", "`repeat` count out of range";
    TIME_OF_DAY = "E0309", "invalid time of day";
    DAY_WORD = "E0310", "invalid day";
    TIMEZONE = "E0311", "invalid timezone";
    LOCALE = "E0312", "invalid locale";
    CAP_RANGE = "E0313", "`cap` out of range";
    HOLDOUT_RANGE = "E0314", "`holdout` out of range";
    DUPLICATE_LABEL = "E0315", "duplicate statement label";
    DUPLICATE_SETTING = "E0316", "setting given twice";
    SETTING_NOT_ALLOWED = "E0317", "setting not allowed in the settings block";
    DUPLICATE_SPLIT = "E0318", "two splits with the same name in a journey";
    EMPTY_QUIET_HOURS = "E0319", "quiet hours that start and end at the same time";
    DURATION_OVER_MAX = "E0320", "duration or journey bound longer than 100 years";
    ENGAGEMENT_NOT_SENT = "E0321", "engagement with a message not sent earlier on the path";

    TEMPLATE_SYNTAX = "E0401", "template syntax error";
    TEMPLATE_ATTRIBUTE = "E0402", "template refers to an unknown customer attribute";
    TEMPLATE_PROPERTY = "E0403", "template refers to a property the event in scope lacks";
    TEMPLATE_NO_EVENT = "E0404", "template uses `event.*` where the message is sent with no event";
    BODY_FILE_NOT_FOUND = "E0405", "`body file` not found";
    TEMPLATE_VARIABLE = "E0406", "template refers to an unknown variable";
    MESSAGE_WITHOUT_BODY = "E0407", "message without a body";

    UNREACHABLE = "W0001", "statement after an unconditional exit";
    UNUSED_SEGMENT = "W0002", "unused segment";
    UNUSED_MESSAGE = "W0003", "unused message";
    EMAIL_WITHOUT_SUBJECT = "W0004", "email without a subject";

    BOUNDS = "I0001", "journey bounds (JSON output only)";
    VERSIONS = "I0002", "what a new version does to waiting enrollments (JSON output of `--against`)";
}
