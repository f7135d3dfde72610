//! Per-customer state: everything the interpreter needs about one customer,
//! persisted as one record (the daemon stores it in sled; the simulator in memory).
//!
//! **Invariant:** every collection here is bounded, so the cost of one input
//! (and the size of the record the daemon rewrites) does not grow with a
//! customer's history: event history is pruned to the workspace's longest
//! `count`/`seen` window and to the latest [`HISTORY_PER_EVENT_MAX`] times
//! per event name, send history to the longest cap window and the latest
//! [`SENDS_MAX`] sends, seen `messageId`s to [`MESSAGE_ID_RETENTION_MS`] and
//! the latest [`MESSAGE_IDS_MAX`], each kept as a fixed-size digest, sent
//! ids to [`SENT_RETENTION_MS`] and the latest [`SENT_MAX`]; subscriptions
//! hold at most one entry per channel. The other maps are keyed by names the
//! workspace declares: journeys, events, segments and profile attributes as
//! interned [`Name`]s in [`NameMap`]s (`runtime/names.rs`), which compare by
//! identity and iterate in name order; the store writes them as ids of its
//! dictionary (the profile's attribute names as text), JSON as text. The
//! version hash an enrollment, an attribution or a remembered send names
//! is an interned [`Name`] too, written as its text everywhere.

use super::engagement::Engagement;
use super::names::{Name, NameMap};
use super::Millis;
use crate::compile::bytecode::Value;
use crate::syntax::ast::Channel;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// How long a `messageId` is remembered for de-duplication (7 days).
pub const MESSAGE_ID_RETENTION_MS: Millis = 7 * 86_400_000;
/// The most `messageId`s remembered per customer (the latest ones).
pub const MESSAGE_IDS_MAX: usize = 1_000;
/// The most event times kept per customer and event name (the latest):
/// `count(...)` saturates there.
pub const HISTORY_PER_EVENT_MAX: usize = 1_000;
/// The most sends kept per customer for caps (the latest).
pub const SENDS_MAX: usize = 1_000;

/// What is remembered of a `messageId`: the first 16 bytes of its SHA-256,
/// in hex, so every remembered id costs the same whatever its length.
pub fn message_id_digest(id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    hex(&digest[..16])
}

/// Lower-case hex of `bytes`, two digits a byte, in one allocation: the
/// digits are written into bytes of the final length (no capacity check or
/// `char` encoding per digit) and checked as text once.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = vec![0u8; 2 * bytes.len()];
    for (digits, byte) in text.chunks_exact_mut(2).zip(bytes) {
        digits[0] = HEX[usize::from(byte >> 4)];
        digits[1] = HEX[usize::from(byte & 0xf)];
    }
    String::from_utf8(text).expect("hex digits are ASCII")
}
/// How long a send's id is remembered, so that an `Unsubscribed` event
/// naming it finds its channel (30 days).
pub const SENT_RETENTION_MS: Millis = 30 * 86_400_000;
/// The most sends remembered per customer.
pub const SENT_MAX: usize = 100;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    pub id: String,
    /// Attributes by interned name, in name order. Written as text
    /// everywhere, the store too ([`super::names::text_keys`]), so a record
    /// is byte for byte what it was when the profile was a
    /// `BTreeMap<String, Value>`.
    #[serde(with = "super::names::text_keys")]
    pub profile: NameMap<Value>,
    /// When the customer was first seen (any input).
    pub first_seen: Option<Millis>,
    /// The latest input time processed: inputs are applied in time order and
    /// an older one is applied as of this time.
    pub clock: Millis,
    /// Time of the latest event of any kind, and per event name.
    pub last_event: Option<Millis>,
    pub last_event_by_name: NameMap<Millis>,
    /// Timestamps of recent events per name, oldest first, for `count`/`seen`.
    pub history: NameMap<VecDeque<Millis>>,
    /// Times of recent sends (all journeys), for caps: `(at, journey)`.
    pub sends: VecDeque<(Millis, Name)>,
    /// Segment membership as last evaluated.
    pub segments: NameMap<bool>,
    /// Active enrollments by journey name (boxed: a map node holds eleven
    /// slots, and most customers have one or two enrollments).
    pub enrollments: NameMap<Box<Enrollment>>,
    /// Per journey: entry bookkeeping for `entry once / every`.
    pub entries: NameMap<EntryHistory>,
    /// Next time a recurring trigger (`every`, `inactive`) is due, per journey.
    pub schedules: NameMap<Millis>,
    /// The next instant a `count`/`seen` window can change a segment that
    /// triggers, goals or exit rules depend on.
    pub segment_check: Option<Millis>,
    /// Recently seen `messageId`s ([`message_id_digest`]) with their input
    /// time, oldest first.
    pub message_ids: VecDeque<(Millis, String)>,
    /// Index of `message_ids` for lookups; rebuilt after deserializing.
    /// (Fx-hashed: the keys are digests, looked up on every input that
    /// has a `messageId`.)
    #[serde(skip)]
    pub message_id_index: FxHashSet<String>,
    /// Per channel, once it was ever set: subscribed, or suppressed with a
    /// reason. A channel without an entry is subscribed.
    #[serde(default)]
    pub subscriptions: BTreeMap<Channel, Subscription>,
    /// Recent sends, oldest first: which send an id names.
    #[serde(default)]
    pub sent: VecDeque<Sent>,
    /// Per journey, the latest ended enrollment while one of its goal
    /// windows is still open: a goal reached then still counts for it.
    /// At most one per journey; dropped when its windows close or the
    /// customer enters the journey again.
    #[serde(default)]
    pub attributions: NameMap<Attribution>,
    /// Which life of this customer id the profile is: 0 unless the store
    /// that made the profile had erased a customer before (the simulator
    /// never erases). The daemon gives a profile made after an erasure the
    /// outbox sequence of the group that made it, so a customer who comes
    /// back after `DELETE /v1/customers/ID` never repeats a send id of the
    /// erased profile (send ids count enrollments from 1 again). Part of
    /// every send id when non-zero.
    #[serde(default)]
    pub incarnation: u64,
    /// The tracked segments' memberships as the last input left them
    /// ([`SettleMark`]): a cache of the interpreter's, never stored.
    #[serde(skip)]
    pub settled: SettleMark,
    /// Whether the recurring triggers' due times are those a full pass
    /// would compute now ([`ScheduleMark`]): a cache of the interpreter's,
    /// never stored.
    #[serde(skip)]
    pub scheduled: ScheduleMark,
}

/// That the recurring triggers' due times (`schedules`) are, for every
/// journey, what recomputing them all would give, as of the latest input
/// the engine named here applied: nothing they read (the customer's time
/// zone, the event history's latest times, `first_seen`, the entries'
/// inactivity marks) has changed since except through the interpreter,
/// which then recomputes the journeys it changed. While it holds, an
/// `every` or `inactive` occurrence that fires recomputes its own journey
/// only, and an event the `inactive` journeys it moves
/// (`runtime/interpreter.rs`, `Run::schedules_current`).
///
/// A cache, not part of the state's value, like [`SettleMark`]: never
/// serialized (a decoded state has none, and its first pass is a full
/// one), equal whatever it holds, and any change of those inputs outside
/// the interpreter must [`clear`](ScheduleMark::clear) it
/// (`runtime/merge.rs` does).
#[derive(Clone, Copy, Debug, Default)]
pub struct ScheduleMark(pub(super) u64);

impl ScheduleMark {
    /// Forgets that the due times are current.
    pub fn clear(&mut self) {
        self.0 = 0;
    }

    /// Whether it says the due times are current (for some engine).
    pub fn is_set(&self) -> bool {
        self.0 != 0
    }
}

impl PartialEq for ScheduleMark {
    fn eq(&self, _: &ScheduleMark) -> bool {
        true
    }
}

/// What the interpreter's last settle of this customer found, while nothing
/// a segment reads (the profile, the event history) has changed since: the
/// memberships of the tracked segments that do not read `now`, the instant
/// they were evaluated at, and the next instant a `count`/`seen` window can
/// change one of them. Until then a settle looks them up instead of
/// evaluating them again (`runtime/interpreter.rs`, `Memo`).
///
/// A cache, not part of the state's value: it is never serialized (a
/// decoded state has none), it compares equal whatever it holds, and any
/// change of the profile or the history outside the interpreter must
/// [`clear`](SettleMark::clear) it (`runtime/merge.rs` does).
#[derive(Clone, Copy, Debug, Default)]
pub struct SettleMark(pub(super) Option<Settled>);

impl SettleMark {
    /// Forgets the memberships (the profile or the history changed).
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// Whether it holds memberships.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl PartialEq for SettleMark {
    fn eq(&self, _: &SettleMark) -> bool {
        true
    }
}

/// The memberships of [`SettleMark`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Settled {
    /// The engine that evaluated them (`Engine`'s generation: another
    /// workspace version may define the segments differently).
    pub engine: u64,
    /// The instant they were evaluated at.
    pub at: Millis,
    /// The first instant after `at` a tracked window changes (an event
    /// leaves it), not cut at the horizon; `None`: never.
    pub until: Option<Millis>,
    /// Bit `i`: segment `i` was a member (of the segments the engine marks
    /// as settled-stable only).
    pub members: u64,
}

impl Settled {
    /// Whether the memberships still hold at `t`.
    pub fn holds_at(&self, engine: u64, t: Millis) -> bool {
        self.engine == engine && self.at <= t && self.until.is_none_or(|until| t < until)
    }
}

/// What is kept of an ended enrollment for its goals: enough to tell
/// whether a goal is still inside its window and not counted yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// Content hash of the program version the enrollment ran (written
    /// as its text: [`super::names::text`]).
    #[serde(with = "super::names::text")]
    pub version: Name,
    pub entered_at: Millis,
    /// The last instant a goal of it can still be reached (the end of its
    /// longest open `within` window).
    pub until: Millis,
    /// Goals already reached (by goal index).
    pub goals_reached: Vec<bool>,
}

/// Why a channel is not sent to. The reason is the `reason` of the `skip`
/// lines of sends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    /// The customer asked (an `Unsubscribed` event, a one-click link).
    Unsubscribed,
    /// The address does not take mail (a hard bounce).
    Bounced,
    /// The customer marked a message as spam.
    Complained,
}

impl Suppression {
    pub fn as_str(self) -> &'static str {
        match self {
            Suppression::Unsubscribed => "unsubscribed",
            Suppression::Bounced => "bounced",
            Suppression::Complained => "complained",
        }
    }
}

/// One channel's subscription state, as last set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// `None`: subscribed; else suppressed, with the reason.
    pub suppressed: Option<Suppression>,
    /// When it was set.
    pub since: Millis,
    /// The send that led to it, when known (the `email_id` of an
    /// `Unsubscribed` event).
    pub send: Option<String>,
}

/// A send the customer was sent: its id and what it was, so that the
/// engagement events naming it are attributed to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub at: Millis,
    pub id: String,
    pub journey: Name,
    pub message: Name,
    pub channel: Channel,
    /// The content hash of the journey version that sent it (written as
    /// its text: [`super::names::text`]; empty in records from before it was kept).
    #[serde(default = "no_version", with = "super::names::text")]
    pub version: Name,
    /// The send instruction.
    #[serde(default)]
    pub pc: u32,
    /// The innermost split arm the send is in: `(split, arm)`.
    #[serde(default)]
    pub arm: Option<(String, String)>,
    /// Engagements already seen for it ([`Engagement::bit`]): each counts once.
    #[serde(default)]
    pub engaged: u8,
}

/// The version of a remembered send read from a record that has none.
pub(crate) fn no_version() -> Name {
    Name::intern("")
}

impl Sent {
    /// Whether `engagement` was already seen for this send.
    pub fn has(&self, engagement: Engagement) -> bool {
        self.engaged & engagement.bit() != 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryHistory {
    pub count: u32,
    pub last_entered: Millis,
    /// For `inactive` triggers: the inactivity mark already used to enrol.
    pub last_inactive_mark: Option<Millis>,
}

/// One customer's position in one journey version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Content hash of the program version this enrollment runs (written
    /// as its text: [`super::names::text`]).
    #[serde(with = "super::names::text")]
    pub version: Name,
    pub entered_at: Millis,
    /// Which enrollment of this customer in this journey (1 = first): part
    /// of every send id, so ids are stable and unique.
    pub ordinal: u32,
    pub pc: u32,
    /// Whether the instruction at `pc` has started (a wait is armed, a send
    /// deferred by quiet hours).
    pub suspended: bool,
    /// When the enrollment must be woken, if it is waiting on time.
    pub wake_at: Option<Millis>,
    pub loop_counters: Vec<u32>,
    /// Properties of the events in scope: the trigger's, then one per
    /// enclosing `wait for` body (innermost last).
    pub events: Vec<BTreeMap<String, Value>>,
    /// Goals already reached (by goal index).
    pub goals_reached: Vec<bool>,
    /// In the holdout group: enrolled, never sent to.
    pub holdout: bool,
    /// Instructions executed in this enrollment: part of send ids.
    pub steps: u32,
}

impl CustomerState {
    /// Whether `id` is new: not among the latest [`MESSAGE_IDS_MAX`] seen
    /// within [`MESSAGE_ID_RETENTION_MS`] before `at` (however often the
    /// customer was woken in between).
    /// Remembers it (with `at`) if so.
    pub fn remember_message_id(&mut self, id: &str, at: Millis) -> bool {
        let digest = message_id_digest(id);
        self.forget_message_ids(at - MESSAGE_ID_RETENTION_MS);
        if self.message_id_index.len() != self.message_ids.len() {
            self.message_id_index = self.message_ids.iter().map(|(_, id)| id.clone()).collect();
        }
        if self.message_id_index.contains(digest.as_str()) {
            return false;
        }
        self.message_id_index.insert(digest.clone());
        self.message_ids.push_back((at, digest));
        while self.message_ids.len() > MESSAGE_IDS_MAX {
            self.forget_oldest_message_id();
        }
        true
    }

    /// Forgets message ids seen at or before `before`.
    pub fn forget_message_ids(&mut self, before: Millis) {
        while self.message_ids.front().is_some_and(|(t, _)| *t <= before) {
            self.forget_oldest_message_id();
        }
    }

    fn forget_oldest_message_id(&mut self) {
        if let Some((_, id)) = self.message_ids.pop_front() {
            self.message_id_index.remove(&id);
        }
    }

    /// Why `channel` is suppressed, if it is.
    pub fn suppression(&self, channel: Channel) -> Option<Suppression> {
        self.subscriptions.get(&channel).and_then(|s| s.suppressed)
    }

    /// Sets `channel` subscribed (`None`) or suppressed, as of `at`.
    pub fn set_subscription(
        &mut self,
        channel: Channel,
        suppressed: Option<Suppression>,
        at: Millis,
        send: Option<String>,
    ) {
        self.subscriptions.insert(
            channel,
            Subscription {
                suppressed,
                since: at,
                send,
            },
        );
    }

    /// The remembered send with this id.
    pub fn sent(&self, id: &str) -> Option<&Sent> {
        self.sent.iter().rev().find(|sent| sent.id == id)
    }

    /// The remembered send with this id, to note an engagement.
    pub fn sent_mut(&mut self, id: &str) -> Option<&mut Sent> {
        self.sent.iter_mut().rev().find(|sent| sent.id == id)
    }

    /// Whether a send of `message` by the enrollment in `journey` that
    /// entered at `entered_at` has `engagement` (`opened(welcome)`).
    pub fn engaged(&self, journey: Name, entered_at: Millis, message: Name, engagement: Engagement) -> bool {
        self.sent
            .iter()
            .any(|s| s.at >= entered_at && s.journey == journey && s.message == message && s.has(engagement))
    }

    /// Remembers a send, forgetting the oldest beyond [`SENT_MAX`].
    pub fn remember_sent(&mut self, sent: Sent) {
        self.sent.push_back(sent);
        while self.sent.len() > SENT_MAX {
            self.sent.pop_front();
        }
    }

    /// Forgets the ended enrollments whose goal windows all closed before `now`.
    pub fn forget_attributions(&mut self, now: Millis) {
        self.attributions.retain(|_, attribution| attribution.until >= now);
    }

    /// Forgets sends made at or before `before`.
    pub fn forget_sent(&mut self, before: Millis) {
        while self.sent.front().is_some_and(|sent| sent.at <= before) {
            self.sent.pop_front();
        }
    }

    pub fn new(id: impl Into<String>) -> CustomerState {
        CustomerState {
            id: id.into(),
            ..CustomerState::default()
        }
    }

    /// The earliest time anything of this customer is due.
    pub fn next_wake(&self) -> Option<Millis> {
        // Plain loops: half the instructions of chained iterators here.
        let mut next = self.segment_check;
        let mut earlier = |due: Millis| next = Some(next.map_or(due, |next| next.min(due)));
        for enrollment in self.enrollments.values() {
            if let Some(due) = enrollment.wake_at {
                earlier(due);
            }
        }
        for due in self.schedules.values() {
            earlier(*due);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::names::Dictionary;
    use std::sync::Arc;

    /// `hex` gives what formatting each byte as two lower-case digits
    /// gives, for every byte value, high digit first.
    #[test]
    fn hex_is_two_lower_case_digits_a_byte() {
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        let expected: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(hex(&bytes), expected);
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
        assert_eq!(hex(&[]), "");
    }

    /// The version hashes are interned names, but a record holds their
    /// text, in the store too: under the store's dictionary an enrollment,
    /// an attribution and a remembered send encode to the bytes they had
    /// while the version was a `String` (`STORE_FORMAT` 7 unchanged), and
    /// read back to the same interned name.
    #[test]
    fn version_hashes_are_written_as_text_inside_the_store() {
        let hash = "0123456789abcdef".repeat(4);
        let version = Name::intern(&hash);
        let dictionary = Arc::new(Dictionary::default());
        let encode = |value: &dyn erased::Encode| dictionary.encode(|| value.bytes()).0;

        let enrollment = Enrollment {
            version,
            entered_at: 5,
            ordinal: 2,
            pc: 3,
            suspended: true,
            wake_at: Some(9),
            loop_counters: vec![1],
            events: vec![BTreeMap::new()],
            goals_reached: vec![false, true],
            holdout: false,
            steps: 7,
        };
        let as_string = (
            hash.clone(),
            5i64,
            2u32,
            3u32,
            true,
            Some(9i64),
            vec![1u32],
            vec![BTreeMap::<String, Value>::new()],
            vec![false, true],
            false,
            7u32,
        );
        let bytes = encode(&enrollment);
        assert_eq!(bytes, postcard::to_allocvec(&as_string).expect("encode"));
        let back: Enrollment = dictionary.decode(|| postcard::from_bytes(&bytes).expect("decode"));
        assert_eq!(back, enrollment);
        assert!(
            std::ptr::eq(back.version.as_str(), version.as_str()),
            "the interned copy"
        );

        let attribution = Attribution {
            version,
            entered_at: 5,
            until: 11,
            goals_reached: vec![true],
        };
        let bytes = encode(&attribution);
        assert_eq!(
            bytes,
            postcard::to_allocvec(&(hash.clone(), 5i64, 11i64, vec![true])).expect("encode")
        );
        let back: Attribution = dictionary.decode(|| postcard::from_bytes(&bytes).expect("decode"));
        assert_eq!(back, attribution);

        let sent = Sent {
            at: 4,
            id: "s1".into(),
            journey: Name::intern("onboard"),
            message: Name::intern("hello"),
            channel: Channel::Email,
            version,
            pc: 6,
            arm: None,
            engaged: 1,
        };
        let bytes = encode(&sent);
        // The journey and the message are dictionary ids (0 and 1, the
        // first given), the version its text.
        let as_string = (
            4i64,
            "s1",
            0u32,
            1u32,
            Channel::Email,
            hash.as_str(),
            6u32,
            None::<(String, String)>,
            1u8,
        );
        assert_eq!(bytes, postcard::to_allocvec(&as_string).expect("encode"));
        let back: Sent = dictionary.decode(|| postcard::from_bytes(&bytes).expect("decode"));
        assert_eq!(back, sent);

        // JSON (export, HTTP) as before: the text.
        let json = serde_json::to_value(&sent).expect("json");
        assert_eq!(json["version"], serde_json::Value::String(hash.clone()));
        let mut old = json.clone();
        old.as_object_mut().expect("an object").remove("version");
        let read: Sent = serde_json::from_value(old).expect("a send written before versions were kept");
        assert_eq!(read.version, no_version());
    }

    /// Postcard bytes of a value, behind one type for the test's closure.
    mod erased {
        pub trait Encode {
            fn bytes(&self) -> Vec<u8>;
        }

        impl<T: serde::Serialize> Encode for T {
            fn bytes(&self) -> Vec<u8> {
                postcard::to_allocvec(self).expect("encode")
            }
        }
    }
}
