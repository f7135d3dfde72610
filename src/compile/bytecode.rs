//! The step bytecode: what the runtime executes. Documented in
//! `docs/bytecode.md`; bump [`FORMAT_VERSION`] on any change to these types.
//!
//! **Invariant:** a [`Bundle`] is self-contained: the runtime needs nothing
//! else (no AST, no source) to validate input, run journeys and render
//! messages. All names used at run time are interned in [`Bundle::names`];
//! expressions are postfix code for a small stack machine.

use crate::check::Schema;
use crate::syntax::ast::{BinaryOp, Channel};
use serde::{Deserialize, Serialize};

/// Version of the serialized form of [`Bundle`]: 2 added wire names to the
/// schema (`Schema::wire`), 3 API triggers (`Schema::api`, `Trigger::Api`).
/// Stores keep format-1 and format-2 bundles readable
/// ([`super::format::decode_stored`]).
pub const FORMAT_VERSION: u32 = 3;

/// An index into [`Bundle::names`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NameId(pub u32);

/// An index into [`Bundle::segments`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SegmentId(pub u32);

/// An index into [`Bundle::messages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub u32);

/// A program counter: an index into [`Program::code`].
pub type Pc = u32;

/// A whole compiled workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub format_version: u32,
    /// Interned names: events, attributes, properties, splits, arms, labels.
    pub names: Vec<String>,
    pub schema: Schema,
    pub segments: Vec<SegmentDef>,
    pub messages: Vec<MessageDef>,
    pub settings: SettingsDef,
    /// Sorted by name.
    pub journeys: Vec<Program>,
    /// The longest `count`/`seen` window any expression uses, in seconds:
    /// per-customer event history older than this is never read.
    pub history_window_seconds: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentDef {
    pub name: NameId,
    pub condition: Code,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageDef {
    pub name: NameId,
    pub channel: Channel,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// `(BCP-47 tag, body)`, sorted by tag.
    pub body_variants: Vec<(String, String)>,
    pub consent: Option<Code>,
}

/// `quiet hours` as minutes after local midnight; `start > end` wraps past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuietHours {
    pub start_minute: u16,
    pub end_minute: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cap {
    pub sends: u32,
    pub per_seconds: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsDef {
    pub quiet_hours: Option<QuietHours>,
    pub timezone: Option<String>,
    /// The cross-journey cap.
    pub cap: Option<Cap>,
}

/// One journey version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub name: NameId,
    /// Hex SHA-256 of the journey's canonical form (not of its text: comments
    /// and layout do not change it). Identifies the version.
    pub hash: String,
    pub trigger: Trigger,
    pub entry: Entry,
    pub exit_rules: Vec<Condition>,
    pub goals: Vec<Goal>,
    /// Effective values: the journey's own, else the workspace settings.
    pub quiet_hours: Option<QuietHours>,
    pub timezone: Option<String>,
    pub cap: Option<Cap>,
    /// Holdout share in basis points (10% = 1000).
    pub holdout_basis_points: u32,
    pub migrate_on_update: bool,
    pub code: Vec<Instr>,
    /// `(label, pc of the labelled instruction)`.
    pub labels: Vec<(NameId, Pc)>,
    /// 1-based source line of each instruction (same length as `code`).
    pub lines: Vec<u32>,
    /// Number of `repeat` counters the program uses.
    pub loop_counters: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Trigger {
    Event {
        event: NameId,
        filter: Option<Code>,
    },
    Entered {
        segment: SegmentId,
    },
    Left {
        segment: SegmentId,
    },
    /// `days` is a bit set, bit 0 = Monday … bit 6 = Sunday.
    Every {
        days: u8,
        minute_of_day: u16,
        filter: Option<Code>,
    },
    Inactive {
        seconds: i64,
        since: Option<NameId>,
    },
    /// `trigger api { … }`: entered by a trigger call (`Input::Trigger`; last, so
    /// that the other variants keep their encoding);
    /// its properties are in `Schema::api`.
    Api,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    Once,
    Every { seconds: i64 },
    Always,
}

/// An event (with an optional filter over `event.*`) or segment membership.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    Event { event: NameId, filter: Option<Code> },
    InSegment { segment: SegmentId },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    /// The event or segment name, reported in the trace as `goal`.
    pub name: NameId,
    pub condition: Condition,
    pub within_seconds: Option<i64>,
}

/// One step of a journey.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Instr {
    Send {
        message: MessageId,
    },
    /// Suspend for exactly this long.
    Wait {
        seconds: i64,
    },
    /// Suspend until the next local `minute_of_day` on one of `days` (bit set).
    WaitUntilTime {
        minute_of_day: u16,
        days: u8,
    },
    /// Suspend until the time the expression gives (continue at once if past).
    WaitUntil {
        time: Code,
    },
    /// Suspend until `event` (matching `filter`) arrives, then bind it as
    /// `event` and continue at the next instruction; after `within_seconds`
    /// jump to `timeout` instead.
    WaitFor {
        event: NameId,
        filter: Option<Code>,
        within_seconds: i64,
        timeout: Pc,
    },
    /// End the scope of the event bound by the matching `WaitFor`.
    PopEvent,
    Jump {
        target: Pc,
    },
    JumpUnless {
        condition: Code,
        target: Pc,
    },
    /// Choose an arm by the stable hash of (customer, journey, split); arms
    /// hold cumulative upper bounds in basis points (the last is 10 000).
    Split {
        split: NameId,
        arms: Vec<SplitArm>,
    },
    Set {
        attribute: NameId,
        value: Code,
    },
    /// Set loop counter `counter` to `times`.
    LoopStart {
        counter: u16,
        times: u32,
    },
    /// Decrement loop counter `counter`; jump to `target` while it stays above zero.
    LoopNext {
        counter: u16,
        target: Pc,
    },
    /// The `exit` statement.
    Exit,
    /// The end of the journey.
    End,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitArm {
    pub name: NameId,
    pub upper_basis_points: u32,
    pub target: Pc,
}

/// A compiled expression: postfix operations over a value stack.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Code(pub Vec<Op>);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Const(Value),
    Now,
    Customer(NameId),
    Event(NameId),
    /// Pushes whether the customer attribute is present.
    ExistsCustomer(NameId),
    ExistsEvent(NameId),
    InSegment(SegmentId),
    Count {
        event: NameId,
        within_seconds: i64,
    },
    Seen {
        event: NameId,
        within_seconds: i64,
    },
    Not,
    Negate,
    Binary(BinaryOp),
    /// Pops `len` list items, then the value; pushes membership.
    In {
        len: u32,
    },
    /// Pushes whether a send of the message named `message` in this
    /// enrollment has `engagement` (`opened(welcome)`); false outside one.
    Engaged {
        engagement: crate::runtime::engagement::Engagement,
        message: NameId,
    },
}

/// A run-time value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// An optional attribute or property that is not there.
    Absent,
    Bool(bool),
    Int(i64),
    Number(f64),
    String(String),
    /// Milliseconds since the Unix epoch, UTC.
    Time(i64),
    /// Milliseconds.
    Duration(i64),
}

impl Bundle {
    pub fn name(&self, id: NameId) -> &str {
        &self.names[id.0 as usize]
    }

    pub fn journey(&self, name: &str) -> Option<&Program> {
        self.journeys.iter().find(|p| self.name(p.name) == name)
    }

    pub fn name_id(&self, name: &str) -> Option<NameId> {
        self.names.iter().position(|n| n == name).map(|i| NameId(i as u32))
    }
}
