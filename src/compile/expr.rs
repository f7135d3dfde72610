//! Expressions → postfix [`Code`] for the run-time stack machine, and
//! [`Code`] → readable infix text (for disassembly, graphs and diffs).
//!
//! Operands are pushed left to right and each operator pops its operands:
//! `customer.plan == "pro"` is `Customer(plan) Const("pro") Binary(==)`.
//! `and`/`or` evaluate both sides (expressions have no effects, and an
//! absent optional compares false instead of failing).

use super::bytecode::*;
use super::lower::Context;
use crate::syntax::ast::{BinaryOp, Expr, ExprKind, PathRoot, UnaryOp};
use std::fmt::Write as _;

const MILLIS_PER_SECOND: i64 = 1000;

/// Compiles an expression of a checked workspace.
pub(crate) fn compile(context: &mut Context<'_>, expr: &Expr) -> Code {
    let mut ops = Vec::new();
    emit(context, expr, &mut ops);
    Code(ops)
}

fn emit(context: &mut Context<'_>, expr: &Expr, ops: &mut Vec<Op>) {
    match &expr.kind {
        ExprKind::String(text) => ops.push(Op::Const(Value::String(text.clone()))),
        ExprKind::Int(value) => ops.push(Op::Const(Value::Int(*value))),
        ExprKind::Number(value) => ops.push(Op::Const(Value::Number(*value))),
        ExprKind::Bool(value) => ops.push(Op::Const(Value::Bool(*value))),
        ExprKind::Duration(seconds) => ops.push(Op::Const(Value::Duration(seconds.saturating_mul(MILLIS_PER_SECOND)))),
        ExprKind::Time(seconds) => ops.push(Op::Const(Value::Time(seconds.saturating_mul(MILLIS_PER_SECOND)))),
        ExprKind::Now => ops.push(Op::Now),
        ExprKind::Path { root, field, .. } => {
            let name = context.intern(&field.name);
            ops.push(match root {
                PathRoot::Customer => Op::Customer(name),
                PathRoot::Event => Op::Event(name),
            });
        }
        ExprKind::Segment(segment) => ops.push(Op::InSegment(context.segment(&segment.name))),
        ExprKind::Unary { op, operand } => {
            emit(context, operand, ops);
            ops.push(match op {
                UnaryOp::Not => Op::Not,
                UnaryOp::Negate => Op::Negate,
            });
        }
        ExprKind::Binary { op, lhs, rhs } => {
            emit(context, lhs, ops);
            emit(context, rhs, ops);
            ops.push(Op::Binary(*op));
        }
        ExprKind::In { value, list } => {
            emit(context, value, ops);
            for item in list {
                emit(context, item, ops);
            }
            ops.push(Op::In { len: list.len() as u32 });
        }
        ExprKind::Exists(operand) => match &operand.kind {
            ExprKind::Path { root, field, .. } => {
                let name = context.intern(&field.name);
                ops.push(match root {
                    PathRoot::Customer => Op::ExistsCustomer(name),
                    PathRoot::Event => Op::ExistsEvent(name),
                });
            }
            // The checker only admits paths; anything else (a literal, a
            // computed value) is always there.
            _ => ops.push(Op::Const(Value::Bool(true))),
        },
        ExprKind::Count { event, within } => {
            context.use_history_window(within.seconds);
            ops.push(Op::Count {
                event: context.intern(&event.name),
                within_seconds: within.seconds,
            });
        }
        ExprKind::Seen { event, within } => {
            context.use_history_window(within.seconds);
            ops.push(Op::Seen {
                event: context.intern(&event.name),
                within_seconds: within.seconds,
            });
        }
        ExprKind::Engaged { engagement, message } => ops.push(Op::Engaged {
            engagement: *engagement,
            message: context.intern(&message.name),
        }),
    }
}

// ------------------------------------------------------------------ reading

/// Binding strength, loosest first, as in the grammar.
const PRECEDENCE_OR: u8 = 1;
const PRECEDENCE_AND: u8 = 2;
const PRECEDENCE_NOT: u8 = 3;
const PRECEDENCE_COMPARE: u8 = 4;
const PRECEDENCE_ADD: u8 = 5;
const PRECEDENCE_MULTIPLY: u8 = 6;
const PRECEDENCE_NEGATE: u8 = 7;
const PRECEDENCE_ATOM: u8 = 8;

fn precedence(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Or => PRECEDENCE_OR,
        BinaryOp::And => PRECEDENCE_AND,
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => PRECEDENCE_COMPARE,
        BinaryOp::Add | BinaryOp::Sub => PRECEDENCE_ADD,
        BinaryOp::Mul | BinaryOp::Div => PRECEDENCE_MULTIPLY,
    }
}

fn wrap(text: String, precedence: u8, minimum: u8) -> String {
    if precedence < minimum {
        format!("({text})")
    } else {
        text
    }
}

/// Renders postfix code as source-like infix text with the fewest
/// parentheses. Malformed code (e.g. from a damaged file) renders with
/// `<?>` in place of missing operands instead of failing.
pub fn render(bundle: &Bundle, code: &Code) -> String {
    let mut stack: Vec<(String, u8)> = Vec::new();
    let missing = || ("<?>".to_string(), PRECEDENCE_ATOM);
    for op in &code.0 {
        let item = match op {
            Op::Const(value) => (render_value(value), PRECEDENCE_ATOM),
            Op::Now => ("now".to_string(), PRECEDENCE_ATOM),
            Op::Customer(name) => (format!("customer.{}", name_of(bundle, *name)), PRECEDENCE_ATOM),
            Op::Event(name) => (format!("event.{}", name_of(bundle, *name)), PRECEDENCE_ATOM),
            Op::ExistsCustomer(name) => (format!("exists(customer.{})", name_of(bundle, *name)), PRECEDENCE_ATOM),
            Op::ExistsEvent(name) => (format!("exists(event.{})", name_of(bundle, *name)), PRECEDENCE_ATOM),
            Op::InSegment(segment) => (segment_name(bundle, *segment).to_string(), PRECEDENCE_ATOM),
            Op::Count { event, within_seconds } => (
                format!(
                    "count({} within {})",
                    name_of(bundle, *event),
                    duration(*within_seconds)
                ),
                PRECEDENCE_ATOM,
            ),
            Op::Seen { event, within_seconds } => (
                format!("seen({} within {})", name_of(bundle, *event), duration(*within_seconds)),
                PRECEDENCE_ATOM,
            ),
            Op::Engaged { engagement, message } => (
                format!("{}({})", engagement.as_str(), name_of(bundle, *message)),
                PRECEDENCE_ATOM,
            ),
            Op::Not => {
                let (text, inner) = stack.pop().unwrap_or_else(missing);
                (format!("not {}", wrap(text, inner, PRECEDENCE_NOT)), PRECEDENCE_NOT)
            }
            Op::Negate => {
                let (text, inner) = stack.pop().unwrap_or_else(missing);
                (format!("-{}", wrap(text, inner, PRECEDENCE_NEGATE)), PRECEDENCE_NEGATE)
            }
            Op::Binary(op) => {
                let (right, right_precedence) = stack.pop().unwrap_or_else(missing);
                let (left, left_precedence) = stack.pop().unwrap_or_else(missing);
                let level = precedence(*op);
                // Left-associative; comparisons do not chain at all.
                let left_minimum = if level == PRECEDENCE_COMPARE { level + 1 } else { level };
                (
                    format!(
                        "{} {} {}",
                        wrap(left, left_precedence, left_minimum),
                        op.symbol(),
                        wrap(right, right_precedence, level + 1)
                    ),
                    level,
                )
            }
            Op::In { len } => {
                let at = stack.len().saturating_sub(*len as usize);
                let items: Vec<String> = stack.split_off(at).into_iter().map(|(text, _)| text).collect();
                let (value, value_precedence) = stack.pop().unwrap_or_else(missing);
                (
                    format!(
                        "{} in [{}]",
                        wrap(value, value_precedence, PRECEDENCE_COMPARE + 1),
                        items.join(", ")
                    ),
                    PRECEDENCE_COMPARE,
                )
            }
        };
        stack.push(item);
    }
    match stack.len() {
        1 => stack.pop().map(|(text, _)| text).unwrap_or_default(),
        0 => "<empty>".to_string(),
        _ => stack
            .into_iter()
            .map(|(text, _)| text)
            .collect::<Vec<_>>()
            .join(" <?> "),
    }
}

/// A name of the bundle, or `#N?` for an id out of range.
pub fn name_of(bundle: &Bundle, id: NameId) -> String {
    bundle
        .names
        .get(id.0 as usize)
        .cloned()
        .unwrap_or_else(|| format!("#{}?", id.0))
}

pub fn segment_name(bundle: &Bundle, id: SegmentId) -> String {
    bundle
        .segments
        .get(id.0 as usize)
        .map(|segment| name_of(bundle, segment.name))
        .unwrap_or_else(|| format!("segment#{}?", id.0))
}

pub fn message_name(bundle: &Bundle, id: MessageId) -> String {
    bundle
        .messages
        .get(id.0 as usize)
        .map(|message| name_of(bundle, message.name))
        .unwrap_or_else(|| format!("message#{}?", id.0))
}

/// A literal as it would be written in a `.journey` file.
pub fn render_value(value: &Value) -> String {
    match value {
        Value::Absent => "absent".to_string(),
        Value::Bool(value) => value.to_string(),
        Value::Int(value) => value.to_string(),
        Value::Number(value) => {
            if value.is_finite() && value.fract() == 0.0 {
                format!("{value:.1}")
            } else {
                value.to_string()
            }
        }
        Value::String(text) => format!("{text:?}"),
        Value::Time(millis) => match chrono::DateTime::from_timestamp_millis(*millis) {
            Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            None => format!("time({millis}ms)"),
        },
        Value::Duration(millis) => {
            if millis % MILLIS_PER_SECOND == 0 {
                duration(millis / MILLIS_PER_SECOND)
            } else {
                format!("{millis}ms")
            }
        }
    }
}

/// Seconds as a duration literal: `90s` → `1m30s`, `129600` → `1d12h`.
/// Weeks are used only for whole weeks (`14d` → `2w`, but `90d` stays `90d`).
pub fn duration(seconds: i64) -> String {
    const WEEK: u64 = 604_800;
    if seconds == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = seconds.unsigned_abs();
    if seconds < 0 {
        out.push('-');
    }
    if rest.is_multiple_of(WEEK) {
        let _ = write!(out, "{}w", rest / WEEK);
        return out;
    }
    for (unit, size) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    out
}

/// `HH:MM` from minutes after midnight.
pub fn time_of_day(minute_of_day: u16) -> String {
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

/// Bit 0 = Monday … bit 6 = Sunday.
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
pub const ALL_DAYS: u8 = 0b111_1111;
pub const WEEKDAYS: u8 = 0b001_1111;
pub const WEEKENDS: u8 = 0b110_0000;

/// A day set as it would be written: `weekdays`, `mon, thu`, or `day` for every day.
pub fn days(mask: u8) -> String {
    match mask & ALL_DAYS {
        ALL_DAYS => "day".to_string(),
        WEEKDAYS => "weekdays".to_string(),
        WEEKENDS => "weekends".to_string(),
        mask => DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(", "),
    }
}
