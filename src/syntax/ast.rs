//! The abstract syntax tree of `.journey` files.
//!
//! **Invariant:** every node carries the byte [`Span`] of the source it came
//! from. The AST is what was written, nothing more: names are unresolved and
//! types unknown until the checker runs (`check::Checked`).

pub use crate::runtime::engagement::Engagement;
use crate::source::{FileId, Span};

/// A name as written, with where it was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A parsed file of a workspace.
#[derive(Clone, Debug)]
pub struct File {
    pub id: FileId,
    pub items: Vec<Item>,
}

#[derive(Clone, Debug)]
pub enum Item {
    Customer(CustomerDecl),
    Event(EventDecl),
    Segment(SegmentDecl),
    Message(MessageDecl),
    Settings(SettingsDecl),
    Journey(JourneyDecl),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Customer(d) => d.span,
            Item::Event(d) => d.span,
            Item::Segment(d) => d.span,
            Item::Message(d) => d.span,
            Item::Settings(d) => d.span,
            Item::Journey(d) => d.span,
        }
    }
}

// ------------------------------------------------------------------ schema

/// `customer { … }`; `keyword` is the span of the word `customer`.
#[derive(Clone, Debug)]
pub struct CustomerDecl {
    pub keyword: Span,
    pub fields: Vec<Field>,
    pub span: Span,
}

/// `event NAME { … }` (the braces are optional when there are no properties).
#[derive(Clone, Debug)]
pub struct EventDecl {
    pub name: Ident,
    /// `event order_completed "Order Completed"`: the name on the wire.
    pub wire: Option<StringLit>,
    pub fields: Vec<Field>,
    pub span: Span,
}

/// `name: type` or `name "wireName": type` inside a `customer` or `event` block.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: Ident,
    /// The name on the wire, when it is not the identifier.
    pub wire: Option<StringLit>,
    pub ty: TypeExpr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct TypeExpr {
    pub kind: TypeKind,
    /// `T?`: the value may be absent.
    pub optional: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    String,
    Int,
    Number,
    Bool,
    Time,
    Duration,
    Timezone,
    Locale,
    /// `"free" | "pro"`: one of these string literals.
    Enum(Vec<StringLit>),
    /// A type name that is not one of the built-in types (reported by the checker).
    Unknown(Ident),
}

#[derive(Clone, Debug, PartialEq)]
pub struct StringLit {
    /// The value with escapes resolved.
    pub value: String,
    /// Span of the literal including its quotes.
    pub span: Span,
}

// ---------------------------------------------------------- segments, messages

/// `segment NAME = EXPR`
#[derive(Clone, Debug)]
pub struct SegmentDecl {
    pub name: Ident,
    pub condition: Expr,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    InApp,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::InApp,
        Channel::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::InApp => "in_app",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// `message NAME CHANNEL { subject … body … consent … }`
#[derive(Clone, Debug)]
pub struct MessageDecl {
    pub name: Ident,
    /// The channel as written; `Channel::parse` of its name (the checker
    /// reports unknown channels).
    pub channel: Ident,
    pub subject: Option<StringLit>,
    pub body: Option<Body>,
    pub consent: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Body {
    /// `body "template"`
    Inline(StringLit),
    /// `body file "path"`, relative to the declaring file.
    File(StringLit),
}

// ------------------------------------------------------- settings, journeys

/// `settings { … }`: workspace defaults.
#[derive(Clone, Debug)]
pub struct SettingsDecl {
    pub keyword: Span,
    pub settings: Vec<Setting>,
    pub span: Span,
}

/// `journey NAME { settings… statements… }`
#[derive(Clone, Debug)]
pub struct JourneyDecl {
    pub name: Ident,
    /// Settings in source order (the trigger is one of them; the checker
    /// requires exactly one).
    pub settings: Vec<Setting>,
    pub body: Block,
    pub span: Span,
}

impl JourneyDecl {
    pub fn triggers(&self) -> impl Iterator<Item = &Trigger> {
        self.settings.iter().filter_map(|s| match &s.kind {
            SettingKind::Trigger(t) => Some(t),
            _ => None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Setting {
    pub kind: SettingKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum SettingKind {
    Trigger(Trigger),
    Entry(EntryRule),
    /// `exit when NAME [where EXPR]`: NAME is an event (exit when it happens,
    /// optionally filtered) or a segment (exit when the customer is in it).
    ExitWhen(Condition),
    /// `goal NAME [where EXPR] [within DUR]`
    Goal {
        condition: Condition,
        within: Option<DurationLit>,
    },
    /// `quiet hours 21:00 - 08:00`
    QuietHours {
        start: TimeOfDay,
        end: TimeOfDay,
    },
    /// `timezone "Europe/Berlin"`
    Timezone(StringLit),
    /// `cap N sends per DUR`
    Cap {
        sends: IntLit,
        per: DurationLit,
    },
    /// `holdout 10%`
    Holdout(Percent),
    /// `on update migrate`
    OnUpdateMigrate,
}

/// The target of `exit when` and `goal`: an event (with an optional filter
/// over `event.*`) or a segment, resolved by the checker.
#[derive(Clone, Debug)]
pub struct Condition {
    pub name: Ident,
    pub filter: Option<Expr>,
}

#[derive(Clone, Debug)]
pub enum EntryRule {
    Once,
    Every(DurationLit),
    Always,
}

#[derive(Clone, Debug)]
pub struct Trigger {
    pub kind: TriggerKind,
    pub span: Span,
}

impl Trigger {
    /// The properties of an API trigger: `trigger api { … }`, or a bare
    /// `trigger api` (no properties) when no event `api` is declared (a
    /// workspace that declares one keeps its event trigger).
    pub fn api_properties(&self, is_event: impl Fn(&str) -> bool) -> Option<&[Field]> {
        match &self.kind {
            TriggerKind::Api { properties } => Some(properties),
            TriggerKind::Event { event, filter: None } if event.name == API_TRIGGER && !is_event(API_TRIGGER) => {
                Some(&[])
            }
            _ => None,
        }
    }
}

/// The word of the API trigger, `trigger api`.
pub const API_TRIGGER: &str = "api";

#[derive(Clone, Debug)]
pub enum TriggerKind {
    /// `trigger EVENT [where EXPR]`
    Event { event: Ident, filter: Option<Expr> },
    /// `trigger api { NAME: TYPE, … }`: entered through the HTTP API, the
    /// listed properties in scope as `event.*`. A bare `trigger api` parses
    /// as an event trigger; see [`Trigger::api_properties`].
    Api { properties: Vec<Field> },
    /// `trigger entered SEGMENT`
    Entered { segment: Ident },
    /// `trigger left SEGMENT`
    Left { segment: Ident },
    /// `trigger every DAYS at HH:MM [where EXPR]`
    Every {
        days: Days,
        at: TimeOfDay,
        filter: Option<Expr>,
    },
    /// `trigger inactive DUR [since EVENT]`
    Inactive {
        duration: DurationLit,
        since: Option<Ident>,
    },
}

/// A set of weekdays as written: `mon`, `mon, thu`, `weekdays`, `weekends`,
/// `day` (every day). Each word is validated by the checker.
#[derive(Clone, Debug)]
pub struct Days {
    pub words: Vec<Ident>,
    pub span: Span,
}

/// `HH:MM` as written; the checker validates the ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u32,
    pub minute: u32,
    pub span: Span,
}

impl TimeOfDay {
    pub fn is_valid(&self) -> bool {
        self.hour < 24 && self.minute < 60
    }

    /// Minutes since local midnight.
    pub fn minutes(&self) -> u32 {
        self.hour * 60 + self.minute
    }
}

/// A duration literal such as `90s`, `1d12h`, in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationLit {
    pub seconds: i64,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntLit {
    pub value: i64,
    pub span: Span,
}

/// `50%`; `value` is as written (the checker checks the range).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percent {
    pub value: f64,
    pub span: Span,
}

// --------------------------------------------------------------- statements

#[derive(Clone, Debug, Default)]
pub struct Block {
    pub statements: Vec<Statement>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Statement {
    /// `nudge: wait 3d`
    pub label: Option<Ident>,
    pub kind: StatementKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum StatementKind {
    /// `send MESSAGE`
    Send { message: Ident },
    /// `wait DUR`
    Wait { duration: DurationLit },
    /// `wait until HH:MM [on DAYS]`
    WaitUntilTime { at: TimeOfDay, days: Option<Days> },
    /// `wait until EXPR` (a time expression)
    WaitUntilExpr { time: Expr },
    /// `wait for EVENT [where EXPR] [within DUR] { … } [timeout { … }]`,
    /// or `wait for ENGAGEMENT MESSAGE [within DUR] { … } [timeout { … }]`
    /// (then `event` names the message); `within` is required by the
    /// checker.
    WaitFor {
        engagement: Option<(Engagement, Span)>,
        event: Ident,
        filter: Option<Expr>,
        within: Option<DurationLit>,
        body: Block,
        timeout: Option<Block>,
    },
    /// `if C { … } else if C { … } else { … }`
    If {
        branches: Vec<(Expr, Block)>,
        otherwise: Option<Block>,
    },
    /// `split NAME { ARM PCT% { … } … }`
    Split { name: Ident, arms: Vec<SplitArm> },
    /// `set customer.ATTR = EXPR`
    Set { attribute: Ident, value: Expr },
    /// `repeat N { … }`
    Repeat { times: IntLit, body: Block },
    /// `exit`
    Exit,
}

#[derive(Clone, Debug)]
pub struct SplitArm {
    pub name: Ident,
    pub percent: Percent,
    pub body: Block,
    pub span: Span,
}

// -------------------------------------------------------------- expressions

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    String(String),
    Int(i64),
    Number(f64),
    Bool(bool),
    /// Seconds.
    Duration(i64),
    /// Seconds since the Unix epoch (UTC).
    Time(i64),
    Now,
    /// `customer.ATTR` or `event.PROP`.
    Path {
        root: PathRoot,
        root_span: Span,
        field: Ident,
    },
    /// A bare identifier: a segment, "the customer is in it".
    Segment(Ident),
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `x in ["a", "b"]`
    In {
        value: Box<Expr>,
        list: Vec<Expr>,
    },
    /// `exists(customer.ATTR)`
    Exists(Box<Expr>),
    /// `count(EVENT within DUR)`
    Count {
        event: Ident,
        within: DurationLit,
    },
    /// `seen(EVENT within DUR)`
    Seen {
        event: Ident,
        within: DurationLit,
    },
    /// `opened(MESSAGE)`, `clicked(MESSAGE)`, …: whether a send of the
    /// message in this enrollment has that engagement.
    Engaged {
        engagement: Engagement,
        message: Ident,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRoot {
    Customer,
    Event,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    Not,
    Negate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
        }
    }
}
